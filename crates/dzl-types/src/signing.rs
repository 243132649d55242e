//! Request signing (docs/api.md, "Signed requests"). A request carries four
//! headers (key id, timestamp, nonce, signature); the signature is an HMAC
//! of the vault's suite over a canonical string, the body hashed with the
//! same suite's digest:
//!
//! ```text
//! canonical = METHOD "\n" PATH_AND_QUERY "\n" TIMESTAMP "\n" NONCE "\n" lowercase_hex(H(body))
//!
//! intl:  H = SHA-256  X-DZL-Signature: base64(HMAC-SHA256(secret, canonical))
//!                     (or the same after "HMAC-SHA256 ")
//! gm:    H = SM3      X-DZL-Signature: "HMAC-SM3 " base64(HMAC-SM3(secret, canonical))
//! ```
//!
//! The key is the secret's UTF-8 bytes; base64 is the standard, padded
//! alphabet. The algorithm is named in the signature header itself, so it
//! is covered by the same check as the signature: a vault accepts only its
//! own suite's algorithm ([`verify_request`]), and a request signed with
//! the other one is refused as such (`unsupported_signature_algorithm`),
//! never silently verified with a weaker or different function. A bare
//! base64 value is HMAC-SHA256, so clients of an `intl` vault sign as they
//! always have.
//!
//! Pure functions shared by the server (verifying) and the SDK (signing).

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use dzl_crypto::Suite;

use crate::error::ErrorCode;

/// Header carrying the tenant's key id.
pub const HEADER_KEY_ID: &str = "X-DZL-Key-Id";
/// Header carrying unix seconds.
pub const HEADER_TIMESTAMP: &str = "X-DZL-Timestamp";
/// Header carrying the nonce.
pub const HEADER_NONCE: &str = "X-DZL-Nonce";
/// Header carrying the signature (and, for HMAC-SM3, its algorithm).
pub const HEADER_SIGNATURE: &str = "X-DZL-Signature";
/// The largest accepted distance between a request's timestamp and the clock.
pub const MAX_SKEW_SECS: i64 = 300;

/// The MAC a request is signed with, one per suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignatureAlgorithm {
    /// HMAC-SHA256 over a canonical string with a SHA-256 body hash (`intl`).
    HmacSha256,
    /// HMAC-SM3 over a canonical string with an SM3 body hash (`gm`).
    HmacSm3,
}

impl SignatureAlgorithm {
    /// The name that prefixes the signature header: `HMAC-SHA256` or
    /// `HMAC-SM3`.
    pub const fn as_str(self) -> &'static str {
        match self {
            SignatureAlgorithm::HmacSha256 => "HMAC-SHA256",
            SignatureAlgorithm::HmacSm3 => "HMAC-SM3",
        }
    }

    /// The algorithm of `suite`.
    pub const fn for_suite(suite: Suite) -> Self {
        match suite {
            Suite::Intl => SignatureAlgorithm::HmacSha256,
            Suite::Gm => SignatureAlgorithm::HmacSm3,
        }
    }

    /// The suite whose digest and HMAC this algorithm uses.
    pub const fn suite(self) -> Suite {
        match self {
            SignatureAlgorithm::HmacSha256 => Suite::Intl,
            SignatureAlgorithm::HmacSm3 => Suite::Gm,
        }
    }
}

impl fmt::Display for SignatureAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a signature header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The header names an algorithm this vault does not accept: the other
    /// suite's, or a name nobody knows (`unsupported_signature_algorithm`).
    #[error("this vault accepts only {expected} request signatures")]
    AlgorithmRefused {
        /// The vault's own algorithm.
        expected: SignatureAlgorithm,
    },
    /// The value after the algorithm is not standard padded base64
    /// (`invalid_header`).
    #[error("X-DZL-Signature must be standard base64, after the algorithm name if any")]
    Malformed,
    /// The signature does not verify (`invalid_signature`).
    #[error("the request signature could not be verified")]
    Invalid,
}

impl SignatureError {
    /// The problem code the refusal is answered with.
    pub fn code(&self) -> ErrorCode {
        match self {
            SignatureError::AlgorithmRefused { .. } => ErrorCode::UnsupportedSignatureAlgorithm,
            SignatureError::Malformed => ErrorCode::InvalidHeader,
            SignatureError::Invalid => ErrorCode::InvalidSignature,
        }
    }
}

/// The canonical string an `intl` (HMAC-SHA256) request signs.
pub fn canonical(
    method: &str,
    path_and_query: &str,
    timestamp: i64,
    nonce: &str,
    body: &[u8],
) -> String {
    canonical_for(
        SignatureAlgorithm::HmacSha256,
        method,
        path_and_query,
        timestamp,
        nonce,
        body,
    )
}

/// The canonical string a request signed with `alg` signs: the body hashed
/// with the algorithm's suite digest.
pub fn canonical_for(
    alg: SignatureAlgorithm,
    method: &str,
    path_and_query: &str,
    timestamp: i64,
    nonce: &str,
    body: &[u8],
) -> String {
    let digest = dzl_crypto::digest_hex(alg.suite(), body);
    format!("{method}\n{path_and_query}\n{timestamp}\n{nonce}\n{digest}")
}

/// The HMAC-SHA256 signature of `canonical` under `secret`: standard,
/// padded base64, with no algorithm name (what an `intl` vault expects).
pub fn sign(secret: &[u8], canonical: &str) -> String {
    STANDARD.encode(dzl_crypto::hmac(
        Suite::Intl,
        secret,
        &[canonical.as_bytes()],
    ))
}

/// The `X-DZL-Signature` value for `canonical` (made by [`canonical_for`]
/// with the same `alg`) under `secret`: bare base64 for HMAC-SHA256,
/// `HMAC-SM3 ` and base64 for HMAC-SM3.
pub fn sign_with(alg: SignatureAlgorithm, secret: &[u8], canonical: &str) -> String {
    let tag = STANDARD.encode(dzl_crypto::hmac(
        alg.suite(),
        secret,
        &[canonical.as_bytes()],
    ));
    match alg {
        SignatureAlgorithm::HmacSha256 => tag,
        SignatureAlgorithm::HmacSm3 => format!("{} {tag}", alg.as_str()),
    }
}

/// Whether `signature_b64` is the HMAC-SHA256 signature of `canonical`
/// under `secret`; the comparison is constant-time.
pub fn verify(secret: &[u8], canonical: &str, signature_b64: &str) -> bool {
    verify_with(
        SignatureAlgorithm::HmacSha256,
        secret,
        canonical,
        signature_b64,
    )
}

/// Whether `signature_b64` (base64 alone, the algorithm name already taken
/// off by [`parse_signature`] or [`check_algorithm`]) is the `alg` signature of `canonical` under
/// `secret`; the comparison is constant-time.
pub fn verify_with(
    alg: SignatureAlgorithm,
    secret: &[u8],
    canonical: &str,
    signature_b64: &str,
) -> bool {
    let Ok(tag) = STANDARD.decode(signature_b64) else {
        return false;
    };
    dzl_crypto::hmac_verify(alg.suite(), secret, &[canonical.as_bytes()], &tag)
}

/// Splits an `X-DZL-Signature` value into its algorithm and the rest:
/// `HMAC-SM3 <b64>`, `HMAC-SHA256 <b64>`, or a bare `<b64>` (HMAC-SHA256).
/// `None` for any other name before a space.
pub fn parse_signature(header: &str) -> Option<(SignatureAlgorithm, &str)> {
    match header.split_once(' ') {
        None => Some((SignatureAlgorithm::HmacSha256, header)),
        Some(("HMAC-SHA256", b64)) => Some((SignatureAlgorithm::HmacSha256, b64)),
        Some(("HMAC-SM3", b64)) => Some((SignatureAlgorithm::HmacSm3, b64)),
        Some(_) => None,
    }
}

/// The parts of a request that are signed.
#[derive(Debug, Clone, Copy)]
pub struct SignedParts<'a> {
    /// The upper-case HTTP method.
    pub method: &'a str,
    /// The request target as sent.
    pub path_and_query: &'a str,
    /// `X-DZL-Timestamp`, parsed.
    pub timestamp: i64,
    /// `X-DZL-Nonce`.
    pub nonce: &'a str,
    /// The body bytes.
    pub body: &'a [u8],
}

/// The check a vault of `suite` makes of a request's `X-DZL-Signature`
/// before it looks for the tenant: the algorithm must be the suite's
/// (`AlgorithmRefused` otherwise, also for a bare value at a `gm` vault)
/// and the base64 must decode. Returns the algorithm and the base64.
pub fn check_algorithm(
    suite: Suite,
    signature_header: &str,
) -> Result<(SignatureAlgorithm, &str), SignatureError> {
    let expected = SignatureAlgorithm::for_suite(suite);
    match parse_signature(signature_header) {
        Some((alg, b64)) if alg == expected => {
            if STANDARD.decode(b64).is_err() {
                return Err(SignatureError::Malformed);
            }
            Ok((alg, b64))
        }
        _ => Err(SignatureError::AlgorithmRefused { expected }),
    }
}

/// Verifies a request's `X-DZL-Signature` at a vault of `suite` against one
/// of the tenant's `secrets` (the current one, and the previous one during
/// the overlap after a rotation): [`check_algorithm`], then the HMAC over
/// the canonical string of the suite, in constant time per secret.
pub fn verify_request(
    suite: Suite,
    secrets: &[&[u8]],
    parts: &SignedParts<'_>,
    signature_header: &str,
) -> Result<(), SignatureError> {
    let (alg, b64) = check_algorithm(suite, signature_header)?;
    let canonical = canonical_for(
        alg,
        parts.method,
        parts.path_and_query,
        parts.timestamp,
        parts.nonce,
        parts.body,
    );
    if secrets
        .iter()
        .any(|secret| verify_with(alg, secret, &canonical, b64))
    {
        Ok(())
    } else {
        Err(SignatureError::Invalid)
    }
}

/// Whether a nonce is 16–64 characters of `[A-Za-z0-9_-]`.
pub fn valid_nonce(nonce: &str) -> bool {
    (16..=64).contains(&nonce.len())
        && nonce
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"s3cr3t";

    fn parts(body: &[u8]) -> SignedParts<'_> {
        SignedParts {
            method: "POST",
            path_and_query: "/v1/redemptions",
            timestamp: 1_795_334_400,
            nonce: "AbCdEfGhIjKlMnOpQr",
            body,
        }
    }

    fn signed(alg: SignatureAlgorithm, secret: &[u8], p: &SignedParts<'_>) -> String {
        let c = canonical_for(
            alg,
            p.method,
            p.path_and_query,
            p.timestamp,
            p.nonce,
            p.body,
        );
        sign_with(alg, secret, &c)
    }

    /// Computed independently: Python `hashlib.new("sm3")` for the body
    /// hash, `hmac.new(secret, canonical, "sm3")` for the tag.
    #[test]
    fn hmac_sm3_known_answer() {
        let p = parts(br#"{"code":"ac_x"}"#);
        let c = canonical_for(
            SignatureAlgorithm::HmacSm3,
            p.method,
            p.path_and_query,
            p.timestamp,
            p.nonce,
            p.body,
        );
        assert_eq!(
            c,
            "POST\n/v1/redemptions\n1795334400\nAbCdEfGhIjKlMnOpQr\n\
             86d13c0d978b624c3246e304f2466f15681c76ebb47253efbfd54d422b8aaa24"
        );
        assert_eq!(
            sign_with(SignatureAlgorithm::HmacSm3, SECRET, &c),
            "HMAC-SM3 FYa522K/TGDjfMStYUrIZaRIJV95FUusoRJFonue2yM="
        );
    }

    #[test]
    fn each_suite_accepts_its_own_algorithm() {
        let p = parts(b"{}");
        for suite in Suite::ALL {
            let alg = SignatureAlgorithm::for_suite(suite);
            let header = signed(alg, SECRET, &p);
            assert_eq!(verify_request(suite, &[SECRET], &p, &header), Ok(()));
            // The previous secret, during an overlap.
            assert_eq!(
                verify_request(suite, &[b"new".as_slice(), SECRET], &p, &header),
                Ok(())
            );
            assert_eq!(
                verify_request(suite, &[b"other".as_slice()], &p, &header),
                Err(SignatureError::Invalid)
            );
            let tampered = parts(b"{ }");
            assert_eq!(
                verify_request(suite, &[SECRET], &tampered, &header),
                Err(SignatureError::Invalid)
            );
        }
    }

    /// No downgrade and no sideways move: each vault refuses the other
    /// suite's algorithm, whatever the signature's own validity.
    #[test]
    fn a_vault_refuses_the_other_suites_algorithm() {
        let p = parts(b"{}");
        let sha = signed(SignatureAlgorithm::HmacSha256, SECRET, &p);
        let sm3 = signed(SignatureAlgorithm::HmacSm3, SECRET, &p);
        let explicit_sha = format!("HMAC-SHA256 {sha}");
        assert_eq!(
            verify_request(Suite::Intl, &[SECRET], &p, &explicit_sha),
            Ok(())
        );
        for header in [&sha, &explicit_sha] {
            let err = verify_request(Suite::Gm, &[SECRET], &p, header).unwrap_err();
            assert_eq!(
                err,
                SignatureError::AlgorithmRefused {
                    expected: SignatureAlgorithm::HmacSm3
                }
            );
            assert_eq!(err.code(), ErrorCode::UnsupportedSignatureAlgorithm);
            assert_eq!(
                err.to_string(),
                "this vault accepts only HMAC-SM3 request signatures"
            );
        }
        let err = verify_request(Suite::Intl, &[SECRET], &p, &sm3).unwrap_err();
        assert_eq!(err.code(), ErrorCode::UnsupportedSignatureAlgorithm);
        // The SM3 tag presented as a bare (SHA-256) value does not verify.
        let bare_sm3 = sm3.trim_start_matches("HMAC-SM3 ");
        assert_eq!(
            verify_request(Suite::Intl, &[SECRET], &p, bare_sm3),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn unknown_names_and_bad_base64_are_refused_with_their_codes() {
        let p = parts(b"");
        let good = signed(SignatureAlgorithm::HmacSm3, SECRET, &p);
        let b64 = good.trim_start_matches("HMAC-SM3 ");
        for header in [
            format!("HMAC-MD5 {b64}"),
            format!("hmac-sm3 {b64}"),
            format!("SM3 {b64}"),
        ] {
            let err = check_algorithm(Suite::Gm, &header).unwrap_err();
            assert_eq!(
                err.code(),
                ErrorCode::UnsupportedSignatureAlgorithm,
                "{header}"
            );
        }
        let doubled = format!("HMAC-SM3  {b64}");
        for header in ["HMAC-SM3 not base64!", &doubled, "%%%"] {
            assert_eq!(
                check_algorithm(Suite::Gm, header).unwrap_err().code(),
                if header == "%%%" {
                    ErrorCode::UnsupportedSignatureAlgorithm
                } else {
                    ErrorCode::InvalidHeader
                },
                "{header}"
            );
        }
        assert_eq!(
            check_algorithm(Suite::Intl, "%%%").unwrap_err(),
            SignatureError::Malformed
        );
    }

    #[test]
    fn the_intl_functions_are_the_historic_ones() {
        let c = canonical("GET", "/v1/x", 1, "n", b"");
        assert!(c.ends_with("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
        assert_eq!(
            canonical_for(SignatureAlgorithm::HmacSha256, "GET", "/v1/x", 1, "n", b""),
            c
        );
        assert_eq!(
            sign(SECRET, &c),
            sign_with(SignatureAlgorithm::HmacSha256, SECRET, &c)
        );
        assert!(verify(SECRET, &c, &sign(SECRET, &c)));
        assert!(!verify(SECRET, &c, "not base64"));
    }
}
