//! Deposit receipts: Ed25519 signatures over receipt bytes, with keys and
//! signatures carried as unpadded base64url and key ids derived from the
//! public key, so anyone holding the public key can verify a receipt
//! without talking to the vault.
//!
//! Keys are generated and signatures verified with `ring::signature`. The
//! signing itself is AWS-LC's (`aws_lc_rs`, already linked for rustls): its
//! fixed-base scalar multiplication is assembly, and it signs in about two
//! fifths of ring's time on the reference machine (11.0 against 28.4 µs,
//! docs/performance.md) — one signature per redemption, the largest single
//! cost of answering one. Ed25519 signatures are deterministic (RFC 8032
//! §5.1.6), so the bytes are the same whichever library makes them. ring
//! parses a key's PKCS#8 document; AWS-LC is given its seed and ring's
//! public key, and refuses them unless the public key is the seed's.

use std::fmt;

use aws_lc_rs::signature::Ed25519KeyPair as SigningPair;
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
    /// The public key, as ring derives it.
    public_key: [u8; ED25519_PUBLIC_KEY_LEN],
    /// The private key, as AWS-LC holds it; it makes every signature.
    signing: SigningPair,
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
        let (public_key, signing) = load_pair(pkcs8)?;
        Ok(ReceiptSigner {
            key_id: key_id.to_owned(),
            public_key,
            signing,
        })
    }

    /// Load a signer whose key id is [`receipt_key_id`] of its public key.
    pub fn from_pkcs8_derived_id(pkcs8: &[u8]) -> Result<Self, CryptoError> {
        let (public_key, signing) = load_pair(pkcs8)?;
        Ok(ReceiptSigner {
            key_id: receipt_key_id(&public_key),
            public_key,
            signing,
        })
    }

    /// The id receipts name this key by.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The 32-byte public key, base64url without padding.
    pub fn public_key_b64url(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.public_key)
    }

    /// Sign `message`; the 64-byte signature as base64url without padding.
    pub fn sign_b64url(&self, message: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(self.signing.sign(message).as_ref())
    }
}

/// The start of every Ed25519 PKCS#8 v2 document ring reads, up to the
/// 32-byte seed (RFC 8410 §7; byte 1, the outer length, left out): version
/// 1, the Ed25519 algorithm identifier, and the private key's octet strings.
const PKCS8_V2_BEFORE_SEED: [u8; 14] = [
    0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Parses `pkcs8` with ring (which generated it and holds the public key
/// receipts are verified with), then gives its seed and public key to
/// AWS-LC (which signs), which refuses them unless the public key is the
/// seed's. The seed is taken from the document ring accepted rather than
/// parsed again by AWS-LC, which reads only one of the two encodings of the
/// public key that ring accepts.
fn load_pair(pkcs8: &[u8]) -> Result<([u8; ED25519_PUBLIC_KEY_LEN], SigningPair), CryptoError> {
    let ring_pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| CryptoError::BadKeyMaterial)?;
    let public_key: [u8; ED25519_PUBLIC_KEY_LEN] = ring_pair
        .public_key()
        .as_ref()
        .try_into()
        .map_err(|_| CryptoError::BadKeyMaterial)?;
    let seed = match (pkcs8.first(), pkcs8.get(2..16), pkcs8.get(16..48)) {
        (Some(0x30), Some(before), Some(seed)) if before == PKCS8_V2_BEFORE_SEED => seed,
        _ => return Err(CryptoError::BadKeyMaterial),
    };
    let signing = SigningPair::from_seed_and_public_key(seed, &public_key)
        .map_err(|_| CryptoError::BadKeyMaterial)?;
    Ok((public_key, signing))
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
