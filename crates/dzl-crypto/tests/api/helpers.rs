//! Shared fixtures.

use dzl_crypto::{CryptoError, SecretKey, SystemRandom};

pub fn rng() -> SystemRandom {
    SystemRandom::new()
}

pub fn key(byte: u8) -> SecretKey {
    SecretKey::from_bytes(&[byte; 32]).unwrap()
}

/// Flip each byte of `bytes` (with several masks) and hand every variant to
/// `open`; none may succeed. Returns how many variants were tried.
pub fn assert_every_flip_fails<T>(
    bytes: &[u8],
    open: impl Fn(&[u8]) -> Result<T, CryptoError>,
) -> usize {
    let mut tried = 0;
    for i in 0..bytes.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut tampered = bytes.to_vec();
            tampered[i] ^= mask;
            assert!(
                open(&tampered).is_err(),
                "flip {mask:#04x} at byte {i} opened"
            );
            tried += 1;
        }
    }
    tried
}

/// Every strict prefix of `bytes` must fail with `Integrity`.
pub fn assert_every_truncation_fails<T: std::fmt::Debug>(
    bytes: &[u8],
    open: impl Fn(&[u8]) -> Result<T, CryptoError>,
) {
    for len in 0..bytes.len() {
        assert_eq!(
            open(&bytes[..len]).unwrap_err(),
            CryptoError::Integrity,
            "truncated to {len}"
        );
    }
}
