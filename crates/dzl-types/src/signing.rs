//! Request signing (docs/api.md, "Signed requests"):
//!
//! ```text
//! canonical = METHOD "\n" PATH_AND_QUERY "\n" TIMESTAMP "\n" NONCE "\n" lowercase_hex(SHA-256(body))
//! signature = base64(HMAC-SHA256(key = secret's UTF-8 bytes, canonical))
//! ```
//!
//! Pure functions shared by the server (verifying) and the SDK (signing).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ring::hmac;

/// Header carrying the tenant's key id.
pub const HEADER_KEY_ID: &str = "X-DZL-Key-Id";
/// Header carrying unix seconds.
pub const HEADER_TIMESTAMP: &str = "X-DZL-Timestamp";
/// Header carrying the nonce.
pub const HEADER_NONCE: &str = "X-DZL-Nonce";
/// Header carrying the signature.
pub const HEADER_SIGNATURE: &str = "X-DZL-Signature";
/// The largest accepted distance between a request's timestamp and the clock.
pub const MAX_SKEW_SECS: i64 = 300;

/// The canonical string that is signed.
pub fn canonical(
    method: &str,
    path_and_query: &str,
    timestamp: i64,
    nonce: &str,
    body: &[u8],
) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, body);
    format!(
        "{method}\n{path_and_query}\n{timestamp}\n{nonce}\n{}",
        hex::encode(digest.as_ref())
    )
}

/// The signature of `canonical` under `secret`: standard, padded base64.
pub fn sign(secret: &[u8], canonical: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    STANDARD.encode(hmac::sign(&key, canonical.as_bytes()).as_ref())
}

/// Whether `signature_b64` is the signature of `canonical` under `secret`;
/// the comparison is constant-time.
pub fn verify(secret: &[u8], canonical: &str, signature_b64: &str) -> bool {
    let Ok(tag) = STANDARD.decode(signature_b64) else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    hmac::verify(&key, canonical.as_bytes(), &tag).is_ok()
}

/// Whether a nonce is 16–64 characters of `[A-Za-z0-9_-]`.
pub fn valid_nonce(nonce: &str) -> bool {
    (16..=64).contains(&nonce.len())
        && nonce
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
}
