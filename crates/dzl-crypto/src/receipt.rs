//! Deposit receipts: Ed25519 signatures (`ring::signature`) over receipt
//! bytes, with keys and signatures carried as unpadded base64url and key
//! ids derived from the public key, so anyone holding the public key can
//! verify a receipt without talking to the vault.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::SecureRandom;
use ring::signature::{self, Ed25519KeyPair, KeyPair as _};
use zeroize::Zeroizing;

use crate::error::CryptoError;
use crate::ids::sha256_hex;

/// Length of an Ed25519 public key in bytes.
pub const ED25519_PUBLIC_KEY_LEN: usize = 32;

/// Signs receipts with one Ed25519 key. `Debug` prints the key id only.
pub struct ReceiptSigner {
    key_id: String,
    pair: Ed25519KeyPair,
}

impl ReceiptSigner {
    /// A fresh Ed25519 private key as a PKCS#8 v2 document, to be sealed
    /// under the keyring and stored.
    pub fn generate_pkcs8(rng: &dyn SecureRandom) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let doc = Ed25519KeyPair::generate_pkcs8(rng).map_err(|_| CryptoError::Rng)?;
        Ok(Zeroizing::new(doc.as_ref().to_vec()))
    }

    /// Load a signer from a PKCS#8 v2 document (`BadKeyMaterial` if rejected).
    pub fn from_pkcs8(key_id: &str, pkcs8: &[u8]) -> Result<Self, CryptoError> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| CryptoError::BadKeyMaterial)?;
        Ok(ReceiptSigner {
            key_id: key_id.to_owned(),
            pair,
        })
    }

    /// Load a signer whose key id is [`receipt_key_id`] of its public key.
    pub fn from_pkcs8_derived_id(pkcs8: &[u8]) -> Result<Self, CryptoError> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| CryptoError::BadKeyMaterial)?;
        Ok(ReceiptSigner {
            key_id: receipt_key_id(pair.public_key().as_ref()),
            pair,
        })
    }

    /// The id receipts name this key by.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The 32-byte public key, base64url without padding.
    pub fn public_key_b64url(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.pair.public_key().as_ref())
    }

    /// Sign `message`; the 64-byte signature as base64url without padding.
    pub fn sign_b64url(&self, message: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(self.pair.sign(message).as_ref())
    }
}

impl fmt::Debug for ReceiptSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReceiptSigner")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// Verify a receipt signature.
///
/// A public key that is not unpadded base64url of 32 bytes is
/// `BadKeyMaterial` (a configuration problem). A signature that does not
/// verify — including one that is not valid base64url or not 64 bytes,
/// since the signature is untrusted input — is `Integrity`.
pub fn verify_receipt_signature(
    public_key_b64url: &str,
    message: &[u8],
    signature_b64url: &str,
) -> Result<(), CryptoError> {
    let public_key = URL_SAFE_NO_PAD
        .decode(public_key_b64url)
        .map_err(|_| CryptoError::BadKeyMaterial)?;
    if public_key.len() != ED25519_PUBLIC_KEY_LEN {
        return Err(CryptoError::BadKeyMaterial);
    }
    let sig = URL_SAFE_NO_PAD
        .decode(signature_b64url)
        .map_err(|_| CryptoError::Integrity)?;
    signature::UnparsedPublicKey::new(&signature::ED25519, &public_key)
        .verify(message, &sig)
        .map_err(|_| CryptoError::Integrity)
}

/// Key id derived from a public key: `"rk_"` + the first 16 hex chars of
/// SHA-256(public key).
pub fn receipt_key_id(public_key: &[u8]) -> String {
    let mut id = String::from("rk_");
    id.push_str(&sha256_hex(public_key)[..16]);
    id
}
