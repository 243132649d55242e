//! Ids, random bytes and hashing helpers: random row ids, the `intl` HMAC
//! blind index used to find subjects without storing their identifiers in
//! the clear, and plain SHA-256 in hex (the suite-aware versions are in
//! [`crate::suite`]).

use ring::digest;
use ring::rand::SecureRandom;

use crate::error::CryptoError;
use crate::keys::SecretKey;
use crate::suite::{blind_index_for, Suite};

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

/// A time-ordered id: `prefix + "_" + 32 lowercase hex chars` of a 48-bit
/// big-endian millisecond timestamp (`unix_ms`, given by the caller: this
/// crate reads no clock) followed by 80 random bits, as in UUIDv7. Ids made
/// later sort later, so rows keyed by them are appended to their B-trees
/// instead of scattered over random pages; 80 random bits keep them
/// unguessable. They reveal the creation time to the millisecond, which the
/// parties that see them know anyway.
pub fn new_ordered_id(
    prefix: &str,
    unix_ms: u64,
    rng: &dyn SecureRandom,
) -> Result<String, CryptoError> {
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&unix_ms.to_be_bytes()[2..]);
    rng.fill(&mut bytes[6..]).map_err(|_| CryptoError::Rng)?;
    Ok(format!("{prefix}_{}", hex::encode(bytes)))
}

/// The `intl` (HMAC-SHA256) blind index, lowercase hex (64 chars):
/// [`crate::suite::blind_index_for`] with [`Suite::Intl`].
pub fn blind_index(key: &SecretKey, label: &str, value: &[u8]) -> String {
    blind_index_for(Suite::Intl, key.expose(), label, value)
}

/// SHA-256 of `bytes`, lowercase hex (64 chars).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, bytes).as_ref())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod ordered_tests {
    use super::new_ordered_id;

    #[test]
    fn ordered_ids_sort_by_time_and_differ_within_a_millisecond() {
        let rng = ring::rand::SystemRandom::new();
        let a = new_ordered_id("dep", 1_795_334_400_000, &rng).unwrap();
        let b = new_ordered_id("dep", 1_795_334_400_001, &rng).unwrap();
        let c = new_ordered_id("dep", 1_795_334_400_001, &rng).unwrap();
        assert!(a < b && a < c);
        assert_ne!(b, c);
        assert_eq!(a.len(), 36);
        assert!(a.starts_with("dep_01a20244e800"), "{a}");
    }
}
