//! Redemption receipts: signatures over receipt bytes, with keys and
//! signatures carried as unpadded base64url and key ids derived from the
//! public key, so anyone holding the public key can verify a receipt
//! without talking to the vault. Two algorithms, one per suite
//! ([`ReceiptAlgorithm`]):
//!
//! **Ed25519** (`intl`). Keys are generated and signatures verified with
//! `ring::signature`. The signing itself is AWS-LC's (`aws_lc_rs`): its
//! fixed-base scalar multiplication is assembly, and it signs in well under
//! half of ring's time (docs/performance.md) — one signature per
//! redemption, the largest single cost of answering one. Ed25519 signatures
//! are deterministic (RFC 8032 §5.1.6), so the bytes are the same whichever
//! library makes them. ring parses a key's PKCS#8 document; AWS-LC is given
//! its seed and ring's public key, and refuses them unless the public key
//! is the seed's.
//!
//! **SM2** (`gm`): SM2DSA of GB/T 32918.2 over SM3 on the curve of GB/T
//! 32918.5, with the default user id of GB/T 35276 §7.1
//! (`1234567812345678`) in Z_A, by RustCrypto's `sm2`. The nonce k is
//! hedged: RFC 6979's HMAC-DRBG (HMAC-SM3) seeded with the key, the message
//! digest and 32 fresh bytes from the OS, so it is random as GB/T 32918
//! asks and stays safe if the RNG were ever weak. Encodings:
//! - private key: a PKCS#8 document (RFC 5915 EC key, curve OID
//!   1.2.156.10197.1.301), sealed under the keyring like Ed25519's;
//! - public key: the uncompressed SEC1 point `04 || x || y` (65 bytes, the
//!   encoding of GB/T 35276 §6), base64url;
//! - signature: raw `r || s`, each 32 bytes big-endian (64 bytes, like
//!   Ed25519's), base64url. GB/T 35276 §7.3's DER `SEQUENCE { r INTEGER,
//!   s INTEGER }` carries the same two integers; a verifier that wants DER
//!   re-encodes them.

use std::fmt;

use aws_lc_rs::signature::Ed25519KeyPair as SigningPair;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{self, Ed25519KeyPair, KeyPair as _};
use sm2::dsa::signature::rand_core::{TryCryptoRng, TryRng};
use sm2::dsa::signature::{RandomizedSigner as _, Signer as _, Verifier as _};
use sm2::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use zeroize::Zeroizing;

use crate::error::CryptoError;
use crate::ids::sha256_hex;
use crate::suite::Suite;

/// Length of an Ed25519 public key in bytes.
pub const ED25519_PUBLIC_KEY_LEN: usize = 32;
/// Length of an SM2 public key in bytes (uncompressed SEC1 point).
pub const SM2_PUBLIC_KEY_LEN: usize = 65;
/// Length of a receipt signature in bytes, either algorithm.
pub const SIGNATURE_LEN: usize = 64;
/// The signer's distinguishing identifier in SM2's Z_A: the default user id
/// of GB/T 35276-2017 §7.1.
pub const SM2_DEFAULT_USER_ID: &str = "1234567812345678";

/// The algorithm of a receipt key, as `GET /v1/receipt-keys` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReceiptAlgorithm {
    /// Ed25519 (RFC 8032): the `intl` suite's.
    Ed25519,
    /// SM2 over SM3 with the GB/T 35276 default user id: the `gm` suite's.
    Sm2,
}

impl ReceiptAlgorithm {
    /// The published name: `Ed25519` or `SM2`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ReceiptAlgorithm::Ed25519 => "Ed25519",
            ReceiptAlgorithm::Sm2 => "SM2",
        }
    }

    /// Parses a published name (exactly `Ed25519` or `SM2`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Ed25519" => Some(ReceiptAlgorithm::Ed25519),
            "SM2" => Some(ReceiptAlgorithm::Sm2),
            _ => None,
        }
    }

    /// The receipt algorithm of `suite`.
    pub const fn for_suite(suite: Suite) -> Self {
        match suite {
            Suite::Intl => ReceiptAlgorithm::Ed25519,
            Suite::Gm => ReceiptAlgorithm::Sm2,
        }
    }

    /// The suite this algorithm belongs to.
    pub const fn suite(self) -> Suite {
        match self {
            ReceiptAlgorithm::Ed25519 => Suite::Intl,
            ReceiptAlgorithm::Sm2 => Suite::Gm,
        }
    }

    /// Length of this algorithm's public keys in bytes.
    pub const fn public_key_len(self) -> usize {
        match self {
            ReceiptAlgorithm::Ed25519 => ED25519_PUBLIC_KEY_LEN,
            ReceiptAlgorithm::Sm2 => SM2_PUBLIC_KEY_LEN,
        }
    }
}

impl fmt::Display for ReceiptAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Signs receipts with one key. `Debug` prints the key id and algorithm
/// only.
pub struct ReceiptSigner {
    key_id: String,
    key: SigningKey,
}

enum SigningKey {
    Ed25519 {
        /// The public key, as ring derives it.
        public_key: [u8; ED25519_PUBLIC_KEY_LEN],
        /// The private key, as AWS-LC holds it; it makes every signature.
        signing: SigningPair,
    },
    Sm2 {
        /// The uncompressed SEC1 public key.
        public_key: [u8; SM2_PUBLIC_KEY_LEN],
        /// The private scalar (zeroized on drop by `elliptic-curve`) and
        /// the verifying key with its Z_A.
        signing: Box<sm2::dsa::SigningKey>,
    },
}

impl ReceiptSigner {
    /// A fresh Ed25519 private key as a PKCS#8 v2 document, to be sealed
    /// under the keyring and stored.
    pub fn generate_pkcs8(rng: &dyn SecureRandom) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        Self::generate_pkcs8_for(Suite::Intl, rng)
    }

    /// A fresh private key of `suite`'s receipt algorithm as a PKCS#8
    /// document, to be sealed under the keyring and stored.
    pub fn generate_pkcs8_for(
        suite: Suite,
        rng: &dyn SecureRandom,
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        match suite {
            Suite::Intl => {
                let doc = Ed25519KeyPair::generate_pkcs8(rng).map_err(|_| CryptoError::Rng)?;
                Ok(Zeroizing::new(doc.as_ref().to_vec()))
            }
            Suite::Gm => {
                let secret = generate_sm2_secret(rng)?;
                let doc = secret
                    .to_pkcs8_der()
                    .map_err(|_| CryptoError::BadKeyMaterial)?;
                Ok(Zeroizing::new(doc.as_bytes().to_vec()))
            }
        }
    }

    /// Load a signer from a PKCS#8 document of either algorithm
    /// (`BadKeyMaterial` if rejected).
    pub fn from_pkcs8(key_id: &str, pkcs8: &[u8]) -> Result<Self, CryptoError> {
        Ok(ReceiptSigner {
            key_id: key_id.to_owned(),
            key: load_key(pkcs8)?,
        })
    }

    /// Load a signer whose key id is [`receipt_key_id`] of its public key.
    pub fn from_pkcs8_derived_id(pkcs8: &[u8]) -> Result<Self, CryptoError> {
        let key = load_key(pkcs8)?;
        Ok(ReceiptSigner {
            key_id: receipt_key_id(key.public_key()),
            key,
        })
    }

    /// The id receipts name this key by.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The signature algorithm.
    pub fn algorithm(&self) -> ReceiptAlgorithm {
        match self.key {
            SigningKey::Ed25519 { .. } => ReceiptAlgorithm::Ed25519,
            SigningKey::Sm2 { .. } => ReceiptAlgorithm::Sm2,
        }
    }

    /// The public key (32 bytes Ed25519, 65 bytes SM2), base64url without
    /// padding.
    pub fn public_key_b64url(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.key.public_key())
    }

    /// Sign `message`; the 64-byte signature as base64url without padding.
    ///
    /// Ed25519 cannot fail. SM2 fails only if the OS random number
    /// generator does and the deterministic RFC 6979 nonce then hits a
    /// degenerate `r` or `s` (probability about 2^-256); the answer is then
    /// empty, a signature that verifies against nothing. Callers that can
    /// report an error use [`ReceiptSigner::try_sign_b64url`].
    pub fn sign_b64url(&self, message: &[u8]) -> String {
        self.try_sign_b64url(message).unwrap_or_default()
    }

    /// Sign `message`; the 64-byte signature as base64url without padding,
    /// or `Rng` in the case [`ReceiptSigner::sign_b64url`] describes.
    pub fn try_sign_b64url(&self, message: &[u8]) -> Result<String, CryptoError> {
        match &self.key {
            SigningKey::Ed25519 { signing, .. } => {
                Ok(URL_SAFE_NO_PAD.encode(signing.sign(message).as_ref()))
            }
            SigningKey::Sm2 { signing, .. } => {
                let mut rng = OsRandom(SystemRandom::new());
                let sig = signing
                    .try_sign_with_rng(&mut rng, message)
                    .or_else(|_| signing.try_sign(message))
                    .map_err(|_| CryptoError::Rng)?;
                Ok(URL_SAFE_NO_PAD.encode(sig.to_bytes()))
            }
        }
    }
}

impl SigningKey {
    fn public_key(&self) -> &[u8] {
        match self {
            SigningKey::Ed25519 { public_key, .. } => public_key,
            SigningKey::Sm2 { public_key, .. } => public_key,
        }
    }
}

/// A fresh SM2 private key: 32 bytes from `rng`, drawn again while they are
/// not a scalar in [1, n-1] (the chance of a redraw is about 2^-32).
fn generate_sm2_secret(rng: &dyn SecureRandom) -> Result<sm2::SecretKey, CryptoError> {
    for _ in 0..64 {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rng.fill(bytes.as_mut_slice())
            .map_err(|_| CryptoError::Rng)?;
        if let Ok(secret) = sm2::SecretKey::from_slice(bytes.as_slice()) {
            return Ok(secret);
        }
    }
    Err(CryptoError::Rng)
}

/// The OS random number generator (ring's `SystemRandom`) as the `rand_core`
/// generator the `sm2` crate's hedged signing takes.
struct OsRandom(SystemRandom);

#[derive(Debug, thiserror::Error)]
#[error("the system random number generator failed")]
struct OsRandomFailed;

impl TryRng for OsRandom {
    type Error = OsRandomFailed;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        self.0.fill(dst).map_err(|_| OsRandomFailed)
    }
}

impl TryCryptoRng for OsRandom {}

/// The start of every Ed25519 PKCS#8 v2 document ring reads, up to the
/// 32-byte seed (RFC 8410 §7; byte 1, the outer length, left out): version
/// 1, the Ed25519 algorithm identifier, and the private key's octet strings.
const PKCS8_V2_BEFORE_SEED: [u8; 14] = [
    0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// An Ed25519 document if ring accepts it, else an SM2 one.
fn load_key(pkcs8: &[u8]) -> Result<SigningKey, CryptoError> {
    if let Ok((public_key, signing)) = load_pair(pkcs8) {
        return Ok(SigningKey::Ed25519 {
            public_key,
            signing,
        });
    }
    let secret = sm2::SecretKey::from_pkcs8_der(pkcs8).map_err(|_| CryptoError::BadKeyMaterial)?;
    let signing = sm2::dsa::SigningKey::new(SM2_DEFAULT_USER_ID, &secret)
        .map_err(|_| CryptoError::BadKeyMaterial)?;
    let public_key: [u8; SM2_PUBLIC_KEY_LEN] = signing
        .verifying_key()
        .to_sec1_bytes()
        .as_ref()
        .try_into()
        .map_err(|_| CryptoError::BadKeyMaterial)?;
    Ok(SigningKey::Sm2 {
        public_key,
        signing: Box::new(signing),
    })
}

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
            .field("algorithm", &self.algorithm().as_str())
            .finish_non_exhaustive()
    }
}

/// Verify an Ed25519 receipt signature
/// ([`verify_receipt_signature_with`] and [`ReceiptAlgorithm::Ed25519`]).
pub fn verify_receipt_signature(
    public_key_b64url: &str,
    message: &[u8],
    signature_b64url: &str,
) -> Result<(), CryptoError> {
    verify_receipt_signature_with(
        ReceiptAlgorithm::Ed25519,
        public_key_b64url,
        message,
        signature_b64url,
    )
}

/// Verify a receipt signature of `algorithm`.
///
/// A public key that is not unpadded base64url of the algorithm's public key
/// (32 bytes Ed25519; 65 bytes SM2, a point on the curve) is
/// `BadKeyMaterial` (a configuration problem). A signature that does not
/// verify — including one that is not valid base64url or not 64 bytes,
/// since the signature is untrusted input — is `Integrity`.
pub fn verify_receipt_signature_with(
    algorithm: ReceiptAlgorithm,
    public_key_b64url: &str,
    message: &[u8],
    signature_b64url: &str,
) -> Result<(), CryptoError> {
    let public_key = URL_SAFE_NO_PAD
        .decode(public_key_b64url)
        .map_err(|_| CryptoError::BadKeyMaterial)?;
    if public_key.len() != algorithm.public_key_len() {
        return Err(CryptoError::BadKeyMaterial);
    }
    let sig = URL_SAFE_NO_PAD
        .decode(signature_b64url)
        .map_err(|_| CryptoError::Integrity)?;
    match algorithm {
        ReceiptAlgorithm::Ed25519 => {
            signature::UnparsedPublicKey::new(&signature::ED25519, &public_key)
                .verify(message, &sig)
                .map_err(|_| CryptoError::Integrity)
        }
        ReceiptAlgorithm::Sm2 => {
            let key = sm2::dsa::VerifyingKey::from_sec1_bytes(SM2_DEFAULT_USER_ID, &public_key)
                .map_err(|_| CryptoError::BadKeyMaterial)?;
            let sig = sm2::dsa::Signature::from_slice(&sig).map_err(|_| CryptoError::Integrity)?;
            key.verify(message, &sig)
                .map_err(|_| CryptoError::Integrity)
        }
    }
}

/// Key id derived from a public key: `"rk_"` + the first 16 hex chars of
/// SHA-256(public key).
pub fn receipt_key_id(public_key: &[u8]) -> String {
    let mut id = String::from("rk_");
    id.push_str(&sha256_hex(public_key)[..16]);
    id
}
