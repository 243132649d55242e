//! Key types: raw [`SecretKey`] material and the roles built on it — the
//! [`RootKey`] that only wraps KEKs, versioned [`Kek`]s, per-deposit
//! [`DataKey`]s — plus the stored form of a wrapped key, [`WrappedKey`].
//!
//! Invariants: key bytes live in one heap allocation that is zeroized on
//! drop; no key type implements `Clone`, `PartialEq` or a `Debug` that shows
//! bytes. The root key is never stored in the database; its only job is
//! [`RootKey::wrap_kek`] / [`RootKey::unwrap_kek`].

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::{Zeroize, Zeroizing};

use crate::aad::kek_aad;
use crate::envelope::{open, seal};
use crate::error::CryptoError;

/// Length of every symmetric key in bytes (AES-256).
pub const KEY_LEN: usize = 32;

/// 32 bytes of AES-256 key material; zeroized on drop; `Debug` prints
/// nothing secret.
pub struct SecretKey(Box<[u8; KEY_LEN]>);

impl SecretKey {
    /// Fresh key bytes from `rng`.
    pub fn generate(rng: &dyn SecureRandom) -> Result<Self, CryptoError> {
        let mut bytes = Box::new([0u8; KEY_LEN]);
        if rng.fill(bytes.as_mut_slice()).is_err() {
            bytes.zeroize();
            return Err(CryptoError::Rng);
        }
        Ok(SecretKey(bytes))
    }

    /// Key from exactly 32 bytes; any other length is `BadKeyMaterial`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() != KEY_LEN {
            return Err(CryptoError::BadKeyMaterial);
        }
        let mut key = Box::new([0u8; KEY_LEN]);
        key.copy_from_slice(bytes);
        Ok(SecretKey(key))
    }

    /// The raw bytes. Callers must not copy them anywhere long-lived.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        let bytes: &mut [u8; KEY_LEN] = &mut self.0;
        bytes.zeroize();
    }
}

impl zeroize::ZeroizeOnDrop for SecretKey {}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// The root key: only wraps KEKs. Given to the server and CLI as standard
/// (padded) base64 of 32 bytes, by file or environment variable.
pub struct RootKey(SecretKey);

impl RootKey {
    /// A fresh root key (for `init`).
    pub fn generate(rng: &dyn SecureRandom) -> Result<Self, CryptoError> {
        SecretKey::generate(rng).map(RootKey)
    }

    /// Parse standard padded base64 of 32 bytes. Surrounding whitespace (a
    /// key file's trailing newline) is trimmed; anything else that is not
    /// canonical base64 of exactly 32 bytes is `BadKeyMaterial`.
    pub fn from_base64(text: &str) -> Result<Self, CryptoError> {
        let decoded = Zeroizing::new(
            STANDARD
                .decode(text.trim())
                .map_err(|_| CryptoError::BadKeyMaterial)?,
        );
        SecretKey::from_bytes(&decoded).map(RootKey)
    }

    /// Standard padded base64 of the key, for writing the key file once at
    /// `init`. The caller should drop the string as soon as it is written.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0.expose())
    }

    /// Wrap a KEK for storage. AAD binds the KEK's version.
    pub fn wrap_kek(&self, kek: &Kek) -> Result<Vec<u8>, CryptoError> {
        seal(
            &self.0,
            &kek_aad(kek.version),
            kek.key.expose(),
            &SystemRandom::new(),
        )
    }

    /// Unwrap a stored KEK. `version` must be the one it was wrapped as;
    /// a wrong version, wrong root key or changed byte is `Integrity`.
    pub fn unwrap_kek(&self, version: u32, wrapped: &[u8]) -> Result<Kek, CryptoError> {
        let plain = open(&self.0, &kek_aad(version), wrapped)?;
        let key = SecretKey::from_bytes(&plain)?;
        Ok(Kek { version, key })
    }

    /// A short, non-secret fingerprint: the first 8 bytes, in lowercase hex,
    /// of SHA-256 over `dzl/root-key-fingerprint/v1\0 || key`. Lets operators
    /// and logs tell root keys apart without revealing them.
    pub fn fingerprint(&self) -> String {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(b"dzl/root-key-fingerprint/v1\0");
        ctx.update(self.0.expose());
        let digest = ctx.finish();
        hex::encode(&digest.as_ref()[..8])
    }
}

impl fmt::Debug for RootKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RootKey(..)")
    }
}

/// A key-encryption key of one keyring version. Wraps data keys and sealed
/// secrets; itself stored wrapped by the root key.
pub struct Kek {
    version: u32,
    key: SecretKey,
}

impl Kek {
    /// A fresh KEK for `version` (for `init` and `keys rotate`).
    pub fn generate(version: u32, rng: &dyn SecureRandom) -> Result<Self, CryptoError> {
        Ok(Kek {
            version,
            key: SecretKey::generate(rng)?,
        })
    }

    /// The keyring version of this KEK.
    pub fn version(&self) -> u32 {
        self.version
    }

    pub(crate) fn key(&self) -> &SecretKey {
        &self.key
    }
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kek")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// A per-deposit data key: seals record groups; stored only wrapped by a
/// KEK. Destroying its wrapped form erases the deposit (crypto-shredding).
pub struct DataKey(SecretKey);

impl DataKey {
    /// A fresh data key.
    pub fn generate(rng: &dyn SecureRandom) -> Result<Self, CryptoError> {
        SecretKey::generate(rng).map(DataKey)
    }

    pub(crate) fn from_secret(key: SecretKey) -> Self {
        DataKey(key)
    }

    pub(crate) fn secret(&self) -> &SecretKey {
        &self.0
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(..)")
    }
}

/// A key or secret as stored: which KEK version wraps it, and the envelope.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedKey {
    /// The keyring version whose KEK sealed `bytes`.
    pub kek_version: u32,
    /// The envelope (see [`crate::envelope`]).
    pub bytes: Vec<u8>,
}

impl fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrappedKey")
            .field("kek_version", &self.kek_version)
            .field("len", &self.bytes.len())
            .finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// Every way the key bytes could leak through `{:?}` / `{:#?}`.
    fn assert_no_leak(debug: &str, key: &[u8]) {
        let hex_lower = hex::encode(key);
        let hex_upper = hex::encode_upper(key);
        let b64 = STANDARD.encode(key);
        let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key);
        let b64_body = &b64[..40];
        let array = format!("{key:?}");
        for needle in [&hex_lower[..], &hex_upper, b64_body, &b64url[..40], &array] {
            assert!(!debug.contains(needle), "debug output {debug:?} leaks key");
        }
        // Also no run of 4 key bytes in decimal (catches `[12, 200, ...]` fragments).
        let decimal = format!("{}, {}, {}, {}", key[0], key[1], key[2], key[3]);
        assert!(
            !debug.contains(&decimal),
            "debug output {debug:?} leaks key bytes"
        );
    }

    fn rng() -> SystemRandom {
        SystemRandom::new()
    }

    #[test]
    fn secret_key_debug_hides_bytes() {
        let k = SecretKey::generate(&rng()).unwrap();
        for s in [format!("{k:?}"), format!("{k:#?}")] {
            assert_eq!(s, "SecretKey(..)");
            assert_no_leak(&s, k.expose());
        }
    }

    #[test]
    fn root_key_debug_hides_bytes() {
        let root = RootKey::generate(&rng()).unwrap();
        let s = format!("{root:?} {root:#?}");
        assert_no_leak(&s, root.0.expose());
        assert!(!s.contains(&root.to_base64()));
        assert!(s.starts_with("RootKey(..)"));
    }

    #[test]
    fn kek_debug_shows_version_only() {
        let kek = Kek::generate(3, &rng()).unwrap();
        let s = format!("{kek:?}");
        assert_eq!(s, "Kek { version: 3, .. }");
        assert_no_leak(&format!("{s} {kek:#?}"), kek.key().expose());
    }

    #[test]
    fn data_key_debug_hides_bytes() {
        let dk = DataKey::generate(&rng()).unwrap();
        let s = format!("{dk:?} {dk:#?}");
        assert_no_leak(&s, dk.secret().expose());
        assert!(s.starts_with("DataKey(..)"));
    }

    #[test]
    fn wrapped_key_debug_is_short() {
        let w = WrappedKey {
            kek_version: 2,
            bytes: vec![0xab; 62],
        };
        assert_eq!(format!("{w:?}"), "WrappedKey { kek_version: 2, len: 62 }");
    }

    #[test]
    fn secret_key_from_bytes_needs_exactly_32() {
        assert!(SecretKey::from_bytes(&[7u8; 32]).is_ok());
        assert_eq!(
            SecretKey::from_bytes(&[7u8; 31]).unwrap_err(),
            CryptoError::BadKeyMaterial
        );
        assert_eq!(
            SecretKey::from_bytes(&[7u8; 33]).unwrap_err(),
            CryptoError::BadKeyMaterial
        );
        assert_eq!(
            SecretKey::from_bytes(&[]).unwrap_err(),
            CryptoError::BadKeyMaterial
        );
        assert_eq!(
            SecretKey::from_bytes(&[7u8; 32]).unwrap().expose(),
            &[7u8; 32]
        );
    }

    #[test]
    fn generated_keys_differ() {
        let a = SecretKey::generate(&rng()).unwrap();
        let b = SecretKey::generate(&rng()).unwrap();
        assert_ne!(a.expose(), b.expose());
        assert_ne!(a.expose(), &[0u8; 32]);
    }
}
