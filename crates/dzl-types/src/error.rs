//! The stable, machine-readable problem codes of HTTP API v1 and their HTTP
//! statuses. Integrations `match` on these; they only ever grow.

use serde::{Deserialize, Serialize};

macro_rules! codes {
    ($($variant:ident = ($code:literal, $status:literal, $title:literal),)*) => {
        /// A problem code (the `code` member of every problem+json body).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum ErrorCode {
            $(
                #[doc = $title]
                $variant,
            )*
        }

        impl ErrorCode {
            /// Every code.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The wire string.
            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code,)* }
            }

            /// The HTTP status that carries it.
            pub fn status(self) -> u16 {
                match self { $(ErrorCode::$variant => $status,)* }
            }

            /// A short, fixed, human title.
            pub fn title(self) -> &'static str {
                match self { $(ErrorCode::$variant => $title,)* }
            }

            /// Parses the wire string.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($code => Some(ErrorCode::$variant),)* _ => None }
            }
        }
    };
}

codes! {
    MalformedJson = ("malformed_json", 400, "The body is not well-formed JSON"),
    InvalidHeader = ("invalid_header", 400, "A request header is malformed"),
    MalformedRequest = ("malformed_request", 400, "The request is not well-formed HTTP/1.1"),
    MissingSignature = ("missing_signature", 401, "The request is not signed"),
    InvalidSignature = ("invalid_signature", 401, "The signature or key id is not valid"),
    StaleTimestamp = ("stale_timestamp", 401, "The request timestamp is too far from the server clock"),
    NonceReplayed = ("nonce_replayed", 401, "The nonce has been used before"),
    CertificateMismatch = ("certificate_mismatch", 401, "The client certificate is not the one this tenant is pinned to"),
    UnsupportedSignatureAlgorithm = ("unsupported_signature_algorithm", 401, "The request is signed with an algorithm this vault does not accept"),
    TenantSuspended = ("tenant_suspended", 403, "The tenant is suspended"),
    Forbidden = ("forbidden", 403, "This kind of tenant may not call this route"),
    PurposeMismatch = ("purpose_mismatch", 403, "The purpose differs from the code's purpose"),
    NotFound = ("not_found", 404, "No such route"),
    CodeNotFound = ("code_not_found", 404, "No such code"),
    DepositNotFound = ("deposit_not_found", 404, "No such deposit"),
    RedemptionNotFound = ("redemption_not_found", 404, "No such redemption"),
    MethodNotAllowed = ("method_not_allowed", 405, "Method not allowed on this route"),
    DuplicateExternalRef = ("duplicate_external_ref", 409, "A deposit with this external_ref exists"),
    CodeAlreadyRedeemed = ("code_already_redeemed", 409, "The code has already been redeemed"),
    OutcomeAlreadyReported = ("outcome_already_reported", 409, "An outcome has already been reported"),
    CodeExpired = ("code_expired", 410, "The code has expired"),
    CodeRevoked = ("code_revoked", 410, "The code has been revoked"),
    DepositErased = ("deposit_erased", 410, "The deposit has been erased"),
    RequestTimeout = ("request_timeout", 408, "The request was not received in time"),
    PayloadTooLarge = ("payload_too_large", 413, "The body is larger than 64 KiB"),
    RequestHeadTooLarge = ("request_head_too_large", 431, "The request line and headers are too large"),
    UnsupportedMediaType = ("unsupported_media_type", 415, "The body must be application/json"),
    ValidationFailed = ("validation_failed", 422, "The request does not satisfy the schema"),
    ConsentInsufficient = ("consent_insufficient", 422, "The consent does not cover the deposited groups"),
    ConsentExpired = ("consent_expired", 422, "The consent has expired"),
    GrantExceedsConsent = ("grant_exceeds_consent", 422, "A grant names a group not consented to or not deposited"),
    FunderNotEntitled = ("funder_not_entitled", 422, "The funder is not entitled to these groups or this purpose"),
    UnknownFunder = ("unknown_funder", 422, "No such funder"),
    InvalidTtl = ("invalid_ttl", 422, "ttl_seconds is out of range"),
    RateLimited = ("rate_limited", 429, "Too many requests"),
    InternalError = ("internal_error", 500, "Internal error"),
    NotReady = ("not_ready", 503, "The vault is not ready"),
    StorageUnavailable = ("storage_unavailable", 503, "The store is unavailable"),
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The problem+json body (RFC 9457) with dzl-vault's `code` member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// `urn:dzl-vault:problem:<code>`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Fixed per code.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong, never with personal data or secrets.
    pub detail: String,
    /// The stable code.
    pub code: String,
    /// JSON pointer of the offending input, when one is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// With `duplicate_external_ref`: the deposit the platform already made
    /// under this `external_ref`, so that it can issue codes for it or erase
    /// it when the first deposit's answer was lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deposit_id: Option<String>,
}

impl Problem {
    /// A problem of `code` with `detail`.
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Problem {
            type_: format!("urn:dzl-vault:problem:{}", code.as_str()),
            title: code.title().to_owned(),
            status: code.status(),
            detail: detail.into(),
            code: code.as_str().to_owned(),
            field: None,
            deposit_id: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            assert!(seen.insert(c.as_str()), "{c} twice");
            assert_eq!(ErrorCode::parse(c.as_str()), Some(*c));
            assert!((400..600).contains(&c.status()));
        }
    }
}
