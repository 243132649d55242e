//! Client certificate pins: a tenant can be pinned to the certificate it
//! presents over mutual TLS — by the SHA-256 fingerprint of the leaf
//! certificate's DER, or by its subject distinguished name — so that its
//! signing secret alone, if stolen, is not enough to call the vault.
//!
//! The TLS layer has already checked the chain against the client CA; this
//! module only says which verified certificate it was.

use std::fmt;

use ring::digest;

/// What identifies a verified client certificate: its fingerprint and its
/// subject as text (RFC 4514 order and spelling of `x509-parser`, e.g.
/// `CN=platform-a, O=Lending App Ltd`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertIdentity {
    /// SHA-256 of the certificate's DER encoding.
    pub sha256: [u8; 32],
    /// The subject distinguished name; `None` when the DER does not parse
    /// as an X.509 certificate (such a certificate matches no subject pin).
    pub subject: Option<String>,
}

impl CertIdentity {
    /// The identity of the DER-encoded certificate `der`.
    pub fn from_der(der: &[u8]) -> CertIdentity {
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(digest::digest(&digest::SHA256, der).as_ref());
        let subject = x509_parser::parse_x509_certificate(der)
            .ok()
            .map(|(_, cert)| cert.subject().to_string());
        CertIdentity { sha256, subject }
    }

    /// The fingerprint as lower-case hex.
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }
}

/// The certificate a tenant is pinned to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertPin {
    /// Exactly this certificate (SHA-256 of its DER).
    Sha256([u8; 32]),
    /// Any certificate from the client CA with exactly this subject, so a
    /// renewed certificate keeps working.
    Subject(String),
}

/// A pin that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidPin(pub &'static str);

/// Longest subject accepted in a pin.
pub const MAX_SUBJECT_LEN: usize = 1024;

impl CertPin {
    /// A fingerprint pin from 64 hex digits, optionally separated by `:` (as
    /// `openssl x509 -fingerprint -sha256` prints them), either case.
    pub fn sha256_from_hex(text: &str) -> Result<CertPin, InvalidPin> {
        let digits: String = text.chars().filter(|c| *c != ':').collect();
        let bytes = hex::decode(digits.to_ascii_lowercase())
            .map_err(|_| InvalidPin("a SHA-256 fingerprint is 64 hexadecimal digits"))?;
        let sha256: [u8; 32] = bytes
            .try_into()
            .map_err(|_| InvalidPin("a SHA-256 fingerprint is 64 hexadecimal digits"))?;
        Ok(CertPin::Sha256(sha256))
    }

    /// A subject pin; the text must be non-empty, at most
    /// [`MAX_SUBJECT_LEN`] characters, without control characters.
    pub fn subject(text: &str) -> Result<CertPin, InvalidPin> {
        if text.trim().is_empty()
            || text.chars().count() > MAX_SUBJECT_LEN
            || text.chars().any(char::is_control)
        {
            return Err(InvalidPin(
                "a subject is 1-1024 characters without control characters, e.g. CN=platform-a, O=Lending App Ltd",
            ));
        }
        Ok(CertPin::Subject(text.to_owned()))
    }

    /// Parses the stored form: `sha256:<64 hex>` or `subject:<DN>`.
    pub fn parse(stored: &str) -> Result<CertPin, InvalidPin> {
        if let Some(hex) = stored.strip_prefix("sha256:") {
            CertPin::sha256_from_hex(hex)
        } else if let Some(dn) = stored.strip_prefix("subject:") {
            CertPin::subject(dn)
        } else {
            Err(InvalidPin("a pin is sha256:<fingerprint> or subject:<DN>"))
        }
    }

    /// Whether the verified certificate `id` is the pinned one.
    pub fn matches(&self, id: &CertIdentity) -> bool {
        match self {
            // A certificate's fingerprint is public: no need for constant time.
            CertPin::Sha256(want) => *want == id.sha256,
            CertPin::Subject(want) => id.subject.as_deref() == Some(want.as_str()),
        }
    }
}

/// The stored form, also what `dzlctl tenant list` shows.
impl fmt::Display for CertPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertPin::Sha256(h) => write!(f, "sha256:{}", hex::encode(h)),
            CertPin::Subject(s) => write!(f, "subject:{s}"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn stored_form_round_trips_and_bad_pins_are_refused() {
        let short = (0..31).map(|_| "AB").collect::<Vec<_>>().join(":");
        assert!(CertPin::sha256_from_hex(&short).is_err(), "31 bytes");
        let colons = (0..32).map(|_| "AB").collect::<Vec<_>>().join(":");
        let pin = CertPin::sha256_from_hex(&colons).unwrap();
        assert_eq!(pin.to_string(), format!("sha256:{}", "ab".repeat(32)));
        assert_eq!(CertPin::parse(&pin.to_string()).unwrap(), pin);
        let subject = CertPin::subject("CN=platform-a, O=Lending App Ltd").unwrap();
        assert_eq!(CertPin::parse(&subject.to_string()).unwrap(), subject);
        for bad in [
            "",
            "sha256:",
            "sha256:zz",
            "subject:",
            "subject: ",
            "subject:CN=a\nCN=b",
            "md5:00",
        ] {
            assert!(CertPin::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_pin_matches_only_its_certificate() {
        let id = CertIdentity {
            sha256: [7; 32],
            subject: Some("CN=platform-a".into()),
        };
        assert!(CertPin::Sha256([7; 32]).matches(&id));
        assert!(!CertPin::Sha256([8; 32]).matches(&id));
        assert!(CertPin::Subject("CN=platform-a".into()).matches(&id));
        assert!(!CertPin::Subject("CN=platform-b".into()).matches(&id));
        assert!(!CertPin::Subject("CN=platform-a, O=x".into()).matches(&id));
        let unparsed = CertIdentity {
            subject: None,
            ..id
        };
        assert!(!CertPin::Subject("CN=platform-a".into()).matches(&unparsed));
    }

    #[test]
    fn garbage_der_has_a_fingerprint_and_no_subject() {
        let id = CertIdentity::from_der(b"not a certificate");
        assert_eq!(id.subject, None);
        assert_eq!(id.sha256_hex().len(), 64);
    }
}
