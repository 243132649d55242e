//! Key types: raw [`SecretKey`] material and the roles built on it — the
//! [`RootKey`] that only wraps KEKs, versioned [`Kek`]s, per-deposit
//! [`DataKey`]s — plus the stored form of a wrapped key, [`WrappedKey`],
//! and [`RootKeyHolder`], whatever holds the root key: the key itself, or a
//! hardware module it never leaves.
//!
//! Key sizes follow the suite: an `intl` key is 32 bytes (AES-256), a `gm`
//! key 16 bytes (SM4). A data key's suite is its length, so one unwrapped
//! under a KEK of the other suite (a vault in the middle of moving between
//! suites) keeps its own. A KEK's suite is stated by whoever unwraps it
//! (the store keeps it beside the wrapped bytes) and checked against the
//! unwrapped length.
//!
//! Invariants: key bytes live in one heap allocation that is zeroized on
//! drop; no key type implements `Clone`, `PartialEq` or a `Debug` that shows
//! bytes. The root key is never stored in the database; its only job is
//! [`RootKeyHolder::wrap_kek`] / [`RootKeyHolder::unwrap_kek`].

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::{Zeroize, Zeroizing};

use crate::aad::kek_aad;
use crate::envelope::{
    aead_open_raw, aead_seal_raw, assemble, envelope_aad, split, Algorithm, FORMAT_V1, NONCE_LEN,
};
use crate::error::CryptoError;
use crate::ids::random_bytes;
use crate::suite::Suite;

/// Length of an `intl` (AES-256) key in bytes, the longest key.
pub const KEY_LEN: usize = 32;
/// Length of a `gm` (SM4) key in bytes.
pub const SM4_KEY_LEN: usize = 16;

/// Symmetric key material of one suite: 32 bytes for `intl`, 16 for `gm`;
/// zeroized on drop; `Debug` prints nothing secret.
pub struct SecretKey {
    bytes: Box<[u8; KEY_LEN]>,
    suite: Suite,
}

impl SecretKey {
    /// Fresh `intl` key bytes from `rng`.
    pub fn generate(rng: &dyn SecureRandom) -> Result<Self, CryptoError> {
        Self::generate_for(Suite::Intl, rng)
    }

    /// Fresh key bytes of `suite`'s length from `rng`.
    pub fn generate_for(suite: Suite, rng: &dyn SecureRandom) -> Result<Self, CryptoError> {
        let mut bytes = Box::new([0u8; KEY_LEN]);
        if rng.fill(&mut bytes[..suite.key_len()]).is_err() {
            bytes.zeroize();
            return Err(CryptoError::Rng);
        }
        Ok(SecretKey { bytes, suite })
    }

    /// An `intl` key from exactly 32 bytes; any other length is
    /// `BadKeyMaterial`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        Self::from_bytes_for(Suite::Intl, bytes)
    }

    /// A key of `suite` from exactly its length of bytes; any other length
    /// is `BadKeyMaterial`.
    pub fn from_bytes_for(suite: Suite, bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() != suite.key_len() {
            return Err(CryptoError::BadKeyMaterial);
        }
        let mut key = Box::new([0u8; KEY_LEN]);
        key[..bytes.len()].copy_from_slice(bytes);
        Ok(SecretKey { bytes: key, suite })
    }

    /// A key whose suite is its length (32 bytes `intl`, 16 `gm`).
    pub(crate) fn from_either(bytes: &[u8]) -> Result<Self, CryptoError> {
        match bytes.len() {
            KEY_LEN => Self::from_bytes_for(Suite::Intl, bytes),
            SM4_KEY_LEN => Self::from_bytes_for(Suite::Gm, bytes),
            _ => Err(CryptoError::BadKeyMaterial),
        }
    }

    /// The suite whose AEAD this key is for.
    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// The raw bytes (32 or 16). Callers must not copy them anywhere
    /// long-lived.
    pub fn expose(&self) -> &[u8] {
        &self.bytes[..self.suite.key_len()]
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        let bytes: &mut [u8; KEY_LEN] = &mut self.bytes;
        bytes.zeroize();
    }
}

impl zeroize::ZeroizeOnDrop for SecretKey {}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// Whatever holds the root key and runs its AEAD: the key in memory
/// ([`RootKey`], from a file or the environment) or a hardware security
/// module (crate `dzl-hsm`), which seals and opens inside the module.
///
/// An implementation provides the raw AEAD ([`RootKeyHolder::seal_raw`],
/// [`RootKeyHolder::open_raw`]); the envelope around it — algorithm tag,
/// format, nonce, the KEK's version bound in the AAD — is this crate's,
/// written once in the provided [`RootKeyHolder::wrap_kek`] and
/// [`RootKeyHolder::unwrap_kek`], so a KEK wrapped by a module has the
/// same stored form as one wrapped by a key file.
pub trait RootKeyHolder: Send + Sync {
    /// The AEAD the root key runs.
    fn algorithm(&self) -> Algorithm;

    /// Seals `plaintext` under the root key: `ciphertext || 16-byte tag`.
    /// A module that fails is `KeyModule`.
    fn seal_raw(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CryptoError>;

    /// Opens `ciphertext || tag` under the root key. Any tampering, wrong
    /// AAD or other key is `Integrity`; a module that fails otherwise is
    /// `KeyModule`.
    fn open_raw(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        ciphertext_and_tag: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError>;

    /// A short, non-secret fingerprint that tells root keys apart (16
    /// lowercase hex characters).
    fn fingerprint(&self) -> String;

    /// Wraps a KEK for storage. The AAD binds the KEK's version.
    fn wrap_kek(&self, kek: &Kek) -> Result<Vec<u8>, CryptoError> {
        let alg = self.algorithm();
        let nonce = random_bytes::<NONCE_LEN>(&SystemRandom::new())?;
        let full_aad = envelope_aad(alg.tag(), FORMAT_V1, &kek_aad(kek.version));
        let body = self.seal_raw(nonce, &full_aad, kek.key.expose())?;
        Ok(assemble(alg, nonce, &body))
    }

    /// Unwraps a stored KEK of `suite`. `version` must be the one it was
    /// wrapped as; a wrong version, wrong root key, changed byte or a key
    /// that is not of `suite` is `Integrity`.
    fn unwrap_kek(&self, version: u32, suite: Suite, wrapped: &[u8]) -> Result<Kek, CryptoError> {
        let (alg, nonce, full_aad, body) = split(&kek_aad(version), wrapped)?;
        if alg != self.algorithm() {
            return Err(CryptoError::Integrity);
        }
        let plain = self.open_raw(nonce, &full_aad, body)?;
        let key = SecretKey::from_bytes_for(suite, &plain).map_err(|_| CryptoError::Integrity)?;
        Ok(Kek { version, key })
    }
}

/// A shared or boxed holder is a holder.
macro_rules! forward_holder {
    ($($ptr:ident)::+) => {
        impl<T: RootKeyHolder + ?Sized> RootKeyHolder for $($ptr)::+<T> {
            fn algorithm(&self) -> Algorithm {
                (**self).algorithm()
            }
            fn seal_raw(
                &self,
                nonce: [u8; NONCE_LEN],
                aad: &[u8],
                plaintext: &[u8],
            ) -> Result<Vec<u8>, CryptoError> {
                (**self).seal_raw(nonce, aad, plaintext)
            }
            fn open_raw(
                &self,
                nonce: [u8; NONCE_LEN],
                aad: &[u8],
                ciphertext_and_tag: &[u8],
            ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
                (**self).open_raw(nonce, aad, ciphertext_and_tag)
            }
            fn fingerprint(&self) -> String {
                (**self).fingerprint()
            }
        }
    };
}

forward_holder!(std::sync::Arc);
forward_holder!(Box);

/// The root key in memory: only wraps KEKs. Given to the server and CLI as
/// standard (padded) base64 of 32 bytes (an AES-256 key) or 16 bytes (an
/// SM4 key), by file or environment variable.
pub struct RootKey(SecretKey);

impl RootKey {
    /// A fresh AES-256 root key (for `init`).
    pub fn generate(rng: &dyn SecureRandom) -> Result<Self, CryptoError> {
        SecretKey::generate(rng).map(RootKey)
    }

    /// A fresh root key of `suite`'s AEAD.
    pub fn generate_for(suite: Suite, rng: &dyn SecureRandom) -> Result<Self, CryptoError> {
        SecretKey::generate_for(suite, rng).map(RootKey)
    }

    /// Parse standard padded base64 of 32 bytes (AES-256) or 16 bytes (SM4).
    /// Surrounding whitespace (a key file's trailing newline) is trimmed;
    /// anything else that is not canonical base64 of one of those lengths
    /// is `BadKeyMaterial`.
    pub fn from_base64(text: &str) -> Result<Self, CryptoError> {
        let decoded = Zeroizing::new(
            STANDARD
                .decode(text.trim())
                .map_err(|_| CryptoError::BadKeyMaterial)?,
        );
        SecretKey::from_either(&decoded).map(RootKey)
    }

    /// Standard padded base64 of the key, for writing the key file once at
    /// `init`. The caller should drop the string as soon as it is written.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0.expose())
    }

    /// The suite of the root key's AEAD.
    pub fn suite(&self) -> Suite {
        self.0.suite()
    }

    /// [`RootKeyHolder::wrap_kek`], callable without the trait in scope.
    pub fn wrap_kek(&self, kek: &Kek) -> Result<Vec<u8>, CryptoError> {
        RootKeyHolder::wrap_kek(self, kek)
    }

    /// [`RootKeyHolder::unwrap_kek`], callable without the trait in scope.
    pub fn unwrap_kek(
        &self,
        version: u32,
        suite: Suite,
        wrapped: &[u8],
    ) -> Result<Kek, CryptoError> {
        RootKeyHolder::unwrap_kek(self, version, suite, wrapped)
    }

    /// [`RootKeyHolder::fingerprint`], callable without the trait in scope.
    pub fn fingerprint(&self) -> String {
        RootKeyHolder::fingerprint(self)
    }
}

impl RootKeyHolder for RootKey {
    fn algorithm(&self) -> Algorithm {
        self.0.suite().aead()
    }

    fn seal_raw(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        aead_seal_raw(self.algorithm(), &self.0, nonce, aad, plaintext)
    }

    fn open_raw(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        ciphertext_and_tag: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        aead_open_raw(self.algorithm(), &self.0, nonce, aad, ciphertext_and_tag)
    }

    /// The first 8 bytes, in lowercase hex, of SHA-256 over
    /// `dzl/root-key-fingerprint/v1\0 || key`. Lets operators and logs tell
    /// root keys apart without revealing them.
    fn fingerprint(&self) -> String {
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

/// A key-encryption key of one keyring version and one suite. Wraps data
/// keys and sealed secrets with its suite's AEAD; itself stored wrapped by
/// the root key.
pub struct Kek {
    version: u32,
    key: SecretKey,
}

impl Kek {
    /// A fresh `intl` KEK for `version` (for `init` and `keys rotate`).
    pub fn generate(version: u32, rng: &dyn SecureRandom) -> Result<Self, CryptoError> {
        Self::generate_for(version, Suite::Intl, rng)
    }

    /// A fresh KEK of `suite` for `version`.
    pub fn generate_for(
        version: u32,
        suite: Suite,
        rng: &dyn SecureRandom,
    ) -> Result<Self, CryptoError> {
        Ok(Kek {
            version,
            key: SecretKey::generate_for(suite, rng)?,
        })
    }

    /// The keyring version of this KEK.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The suite of this KEK (the AEAD of what it wraps).
    pub fn suite(&self) -> Suite {
        self.key.suite()
    }

    pub(crate) fn key(&self) -> &SecretKey {
        &self.key
    }
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kek")
            .field("version", &self.version)
            .field("suite", &self.suite().as_str())
            .finish_non_exhaustive()
    }
}

/// A per-deposit data key: seals record groups with its suite's AEAD;
/// stored only wrapped by a KEK. Destroying its wrapped form erases the
/// deposit (crypto-shredding).
pub struct DataKey(SecretKey);

impl DataKey {
    /// A fresh `intl` data key.
    pub fn generate(rng: &dyn SecureRandom) -> Result<Self, CryptoError> {
        SecretKey::generate(rng).map(DataKey)
    }

    /// A fresh data key of `suite`.
    pub fn generate_for(suite: Suite, rng: &dyn SecureRandom) -> Result<Self, CryptoError> {
        SecretKey::generate_for(suite, rng).map(DataKey)
    }

    /// The suite of the records this key seals.
    pub fn suite(&self) -> Suite {
        self.0.suite()
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
        let b64_body = &b64[..b64.len() - 4];
        let array = format!("{key:?}");
        for needle in [
            &hex_lower[..],
            &hex_upper,
            b64_body,
            &b64url[..b64url.len() - 2],
            &array,
        ] {
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
        assert_eq!(s, "Kek { version: 3, suite: \"intl\", .. }");
        let gm = Kek::generate_for(4, Suite::Gm, &rng()).unwrap();
        assert_eq!(format!("{gm:?}"), "Kek { version: 4, suite: \"gm\", .. }");
        assert_no_leak(&format!("{gm:?} {gm:#?}"), gm.key().expose());
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
