//! `dzl-crypto`: all cryptography of the dzl authorization-code vault, and
//! nothing else.
//!
//! - [`suite`]: the two cipher suites, `intl` (AES-256-GCM, SHA-256,
//!   HMAC-SHA256, Ed25519) and `gm` (SM4-GCM, SM3, HMAC-SM3, SM2), and the
//!   digest, MAC and blind-index helpers that follow the suite.
//! - [`envelope`]: the versioned byte format every ciphertext uses
//!   (AES-256-GCM or SM4-GCM), with algorithm dispatch in one enum
//!   ([`Algorithm`]).
//! - [`keys`] and [`keyring`]: the key hierarchy — a root key (never in the
//!   database; in memory or in a hardware module, [`RootKeyHolder`]) wraps
//!   versioned KEKs; the active KEK wraps per-deposit data keys and seals
//!   small stored secrets.
//! - [`record`]: sealing a deposit's record groups under its data key, bound
//!   to deposit id and group.
//! - [`receipt`]: Ed25519 or SM2 redemption receipts.
//! - [`ids`]: random ids, the `intl` subject blind index, SHA-256.
//!
//! Architecture invariant: this crate is pure. It does no IO, reads no
//! clock, logs nothing and has no global state; randomness comes only from
//! a `ring::rand::SecureRandom` the caller passes (production:
//! `SystemRandom`), except for key wraps, which use `SystemRandom` directly.
//! Key material is zeroized on drop and never shown by `Debug`; no error
//! message carries key bytes or plaintext.

mod aad;
pub mod cert;
pub mod envelope;
pub mod error;
pub mod ids;
pub mod keyring;
pub mod keys;
pub mod receipt;
pub mod record;
pub mod suite;

pub use cert::{CertIdentity, CertPin};
pub use envelope::{open, seal, seal_with_nonce, Algorithm, ENVELOPE_OVERHEAD};
pub use error::CryptoError;
pub use ids::{blind_index, new_id, new_ordered_id, random_bytes, sha256_hex};
pub use keyring::{Keyring, StoredKek};
pub use keys::{DataKey, Kek, RootKey, RootKeyHolder, SecretKey, WrappedKey, KEY_LEN, SM4_KEY_LEN};
pub use receipt::{
    receipt_key_id, verify_receipt_signature, verify_receipt_signature_with, ReceiptAlgorithm,
    ReceiptSigner, SM2_DEFAULT_USER_ID,
};
pub use record::{open_record, seal_record};
pub use suite::{
    blind_index_for, digest, digest_hex, digest_parts, hmac, hmac_verify, Suite, UnknownSuite,
};

/// Re-exported so callers need no direct `ring` dependency to get an RNG.
pub use ring::rand::{SecureRandom, SystemRandom};
/// Re-exported for the return type of `open`, `open_record`, `open_secret`.
pub use zeroize::Zeroizing;
