//! The keyring: the versioned KEKs the vault holds in memory. One version
//! is active and takes every new wrap; the others only unwrap, until
//! `keys rewrap` has moved everything off them and `keys retire` drops them.
//!
//! Wraps here take no RNG parameter: their nonces come from
//! `ring::rand::SystemRandom`, since a wrapped key has no known answer worth
//! pinning (the envelope itself is pinned in `envelope` and `record` tests).

use std::collections::BTreeMap;
use std::fmt;

use ring::rand::SystemRandom;
use zeroize::Zeroizing;

use crate::aad::{data_key_aad, secret_aad};
use crate::envelope::{open, seal};
use crate::error::CryptoError;
use crate::keys::{DataKey, Kek, RootKeyHolder, SecretKey, WrappedKey};
use crate::suite::Suite;

/// A KEK as the store keeps it: its version, its suite, and its envelope
/// under the root key.
#[derive(Debug, Clone, Copy)]
pub struct StoredKek<'a> {
    /// The keyring version.
    pub version: u32,
    /// The suite of the KEK inside.
    pub suite: Suite,
    /// The envelope [`RootKeyHolder::wrap_kek`] made.
    pub wrapped: &'a [u8],
}

/// The versioned KEKs, one of them active.
pub struct Keyring {
    keks: BTreeMap<u32, Kek>,
    active: u32,
}

impl Keyring {
    /// Build a keyring from unwrapped KEKs. `UnknownKeyVersion` if
    /// `active_version` is not among them; `BadKeyMaterial` if two KEKs
    /// share a version.
    pub fn new(keks: Vec<Kek>, active_version: u32) -> Result<Self, CryptoError> {
        let mut map = BTreeMap::new();
        for kek in keks {
            let version = kek.version();
            if map.insert(version, kek).is_some() {
                return Err(CryptoError::BadKeyMaterial);
            }
        }
        if !map.contains_key(&active_version) {
            return Err(CryptoError::UnknownKeyVersion(active_version));
        }
        Ok(Keyring {
            keks: map,
            active: active_version,
        })
    }

    /// Unwraps every stored KEK with `root`, each as the suite stored
    /// beside it, and builds the keyring. Any KEK the root key does not
    /// open, or that is not of its stated suite, is `Integrity`.
    pub fn open(
        root: &dyn RootKeyHolder,
        stored: &[StoredKek<'_>],
        active_version: u32,
    ) -> Result<Self, CryptoError> {
        let keks = stored
            .iter()
            .map(|s| root.unwrap_kek(s.version, s.suite, s.wrapped))
            .collect::<Result<Vec<_>, _>>()?;
        Keyring::new(keks, active_version)
    }

    /// The version new wraps go under.
    pub fn active_version(&self) -> u32 {
        self.active
    }

    /// The suite of the active version: the suite new deposits are sealed
    /// with.
    pub fn active_suite(&self) -> Suite {
        self.keks
            .get(&self.active)
            .map(Kek::suite)
            .unwrap_or(Suite::Intl)
    }

    /// The suite of `version` (`UnknownKeyVersion` if not held).
    pub fn suite_of(&self, version: u32) -> Result<Suite, CryptoError> {
        self.kek(version).map(Kek::suite)
    }

    /// A fresh data key of the active suite.
    pub fn generate_data_key(
        &self,
        rng: &dyn ring::rand::SecureRandom,
    ) -> Result<DataKey, CryptoError> {
        DataKey::generate_for(self.active_suite(), rng)
    }

    /// Every version held, ascending.
    pub fn versions(&self) -> Vec<u32> {
        self.keks.keys().copied().collect()
    }

    fn active_kek(&self) -> Result<&Kek, CryptoError> {
        self.kek(self.active)
    }

    fn kek(&self, version: u32) -> Result<&Kek, CryptoError> {
        self.keks
            .get(&version)
            .ok_or(CryptoError::UnknownKeyVersion(version))
    }

    /// Wrap a data key under the active KEK. The AAD binds `owner_id`
    /// (e.g. the deposit id), `kind` (what the key is for) and the version.
    pub fn wrap_data_key(
        &self,
        dk: &DataKey,
        owner_id: &str,
        kind: &str,
    ) -> Result<WrappedKey, CryptoError> {
        let kek = self.active_kek()?;
        let bytes = seal(
            kek.key(),
            &data_key_aad(owner_id, kind, kek.version()),
            dk.secret().expose(),
            &SystemRandom::new(),
        )?;
        Ok(WrappedKey {
            kek_version: kek.version(),
            bytes,
        })
    }

    /// Unwrap a data key with the KEK of `wrapped.kek_version`
    /// (`UnknownKeyVersion` if this keyring does not hold it). Any other
    /// owner, kind or version than it was wrapped for is `Integrity`.
    pub fn unwrap_data_key(
        &self,
        wrapped: &WrappedKey,
        owner_id: &str,
        kind: &str,
    ) -> Result<DataKey, CryptoError> {
        let kek = self.kek(wrapped.kek_version)?;
        let plain = open(
            kek.key(),
            &data_key_aad(owner_id, kind, kek.version()),
            &wrapped.bytes,
        )?;
        SecretKey::from_either(&plain).map(DataKey::from_secret)
    }

    /// Unwrap, then wrap again under the active version (for `keys rewrap`).
    /// Always produces a fresh envelope, also when `wrapped` is already on
    /// the active version; callers that want to skip those compare
    /// `wrapped.kek_version` with [`Keyring::active_version`] first.
    pub fn rewrap_data_key(
        &self,
        wrapped: &WrappedKey,
        owner_id: &str,
        kind: &str,
    ) -> Result<WrappedKey, CryptoError> {
        let dk = self.unwrap_data_key(wrapped, owner_id, kind)?;
        self.wrap_data_key(&dk, owner_id, kind)
    }

    /// Seal a small secret held in the store (a tenant signing secret, the
    /// receipt signing key, the subject-index key) under the active KEK.
    /// `label` separates uses (e.g. `"tenant-secret"`), `id` is the owning
    /// row's id; both, and the version, are bound in the AAD.
    pub fn seal_secret(
        &self,
        label: &str,
        id: &str,
        plaintext: &[u8],
    ) -> Result<WrappedKey, CryptoError> {
        let kek = self.active_kek()?;
        let bytes = seal(
            kek.key(),
            &secret_aad(label, id, kek.version()),
            plaintext,
            &SystemRandom::new(),
        )?;
        Ok(WrappedKey {
            kek_version: kek.version(),
            bytes,
        })
    }

    /// Open a secret sealed by [`Keyring::seal_secret`] with the same
    /// `label` and `id`.
    pub fn open_secret(
        &self,
        label: &str,
        id: &str,
        sealed: &WrappedKey,
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let kek = self.kek(sealed.kek_version)?;
        open(
            kek.key(),
            &secret_aad(label, id, kek.version()),
            &sealed.bytes,
        )
    }

    /// Open, then seal again under the active version (so `keys rewrap`
    /// can move sealed secrets off a version before it is retired).
    pub fn rewrap_secret(
        &self,
        label: &str,
        id: &str,
        sealed: &WrappedKey,
    ) -> Result<WrappedKey, CryptoError> {
        let plain = self.open_secret(label, id, sealed)?;
        self.seal_secret(label, id, &plain)
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("active_version", &self.active)
            .field("versions", &self.versions())
            .finish()
    }
}
