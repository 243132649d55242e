//! Ids, random bytes and hashing helpers: random row ids, the HMAC blind
//! index used to find subjects without storing their identifiers in the
//! clear, and plain SHA-256 in hex.

use ring::rand::SecureRandom;
use ring::{digest, hmac};

use crate::aad::push_field;
use crate::error::CryptoError;
use crate::keys::SecretKey;

/// `N` random bytes from `rng` (`Rng` if it fails).
pub fn random_bytes<const N: usize>(rng: &dyn SecureRandom) -> Result<[u8; N], CryptoError> {
    let mut bytes = [0u8; N];
    rng.fill(&mut bytes).map_err(|_| CryptoError::Rng)?;
    Ok(bytes)
}

/// `prefix + "_" + 32 lowercase hex chars` of 16 random bytes, e.g.
/// `new_id("dep", rng)` → `"dep_3f…"`.
pub fn new_id(prefix: &str, rng: &dyn SecureRandom) -> Result<String, CryptoError> {
    let bytes = random_bytes::<16>(rng)?;
    Ok(format!("{prefix}_{}", hex::encode(bytes)))
}

/// HMAC-SHA256 blind index, lowercase hex (64 chars). The MAC input is
/// `dzl/blind-index/v1\0 || lp(label) || value`, `lp` being an 8-byte
/// big-endian length prefix, so different labels never share an index space.
pub fn blind_index(key: &SecretKey, label: &str, value: &[u8]) -> String {
    let mac_key = hmac::Key::new(hmac::HMAC_SHA256, key.expose());
    let mut ctx = hmac::Context::with_key(&mac_key);
    ctx.update(b"dzl/blind-index/v1\0");
    let mut label_field = Vec::with_capacity(8 + label.len());
    push_field(&mut label_field, label.as_bytes());
    ctx.update(&label_field);
    ctx.update(value);
    hex::encode(ctx.sign().as_ref())
}

/// SHA-256 of `bytes`, lowercase hex (64 chars).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, bytes).as_ref())
}
