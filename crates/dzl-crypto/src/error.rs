//! The one error type of this crate.
//!
//! Every variant is deliberately coarse: no message ever carries key
//! material, plaintext, or a hint about *which* part of an authenticated
//! decryption failed (wrong key, tampered bytes and wrong AAD all look the
//! same from the outside).

/// What can go wrong in `dzl-crypto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// Authentication failed: wrong key, tampered or truncated bytes, or a
    /// ciphertext presented with a different AAD (owner, deposit, group,
    /// version) than it was sealed with. Also a signature that does not verify.
    #[error("integrity check failed")]
    Integrity,
    /// The envelope's first byte names an algorithm this build does not know.
    #[error("unknown algorithm tag {0:#04x}")]
    UnknownAlgorithm(u8),
    /// The envelope's second byte names a format version this build does not know.
    #[error("unsupported envelope format {0:#04x}")]
    UnsupportedFormat(u8),
    /// A key version was asked for that the keyring does not hold.
    #[error("unknown key version {0}")]
    UnknownKeyVersion(u32),
    /// Key material of the wrong length, undecodable base64, a rejected
    /// PKCS#8 document, or a keyring built with a duplicated version.
    #[error("bad key material")]
    BadKeyMaterial,
    /// The system random number generator failed.
    #[error("random number generator failed")]
    Rng,
    /// The hardware module holding the root key failed or refused to work
    /// (not logged in, session lost, mechanism refused).
    #[error("the key module failed")]
    KeyModule,
}
