//! The two cipher suites a vault can be made with, and the hashing and MAC
//! helpers that follow the suite.
//!
//! | what                         | `intl`            | `gm` (国密)                 |
//! |------------------------------|-------------------|-----------------------------|
//! | envelopes (data, keys)       | AES-256-GCM, 32-byte keys | SM4-GCM (RFC 8998), 16-byte keys |
//! | digests (code hashes, chain) | SHA-256           | SM3 (GB/T 32905)            |
//! | MACs (blind index, requests) | HMAC-SHA256       | HMAC-SM3                    |
//! | receipts                     | Ed25519           | SM2 over SM3 (GB/T 32918, GB/T 35276) |
//!
//! Both digests and both MACs are 32 bytes long, so a stored hash or index
//! has the same width in either suite; what tells them apart where both can
//! be met (code hashes) is the caller's business (see `dzl_types::code`).
//! SHA-256 and HMAC-SHA256 are ring's; SM3 is RustCrypto's `sm3`, HMAC-SM3
//! its `hmac` over it.

use std::fmt;
use std::str::FromStr;

use hmac::{KeyInit as _, Mac as _};
use ring::{digest as ring_digest, hmac as ring_hmac};
use serde::{Deserialize, Serialize};
use sm3::{Digest as _, Sm3};
use zeroize::Zeroize as _;

use crate::aad::push_field;
use crate::envelope::Algorithm;

/// Length of every digest and MAC of either suite.
pub const DIGEST_LEN: usize = 32;

/// A vault's cipher suite. Serialised as its lowercase name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Suite {
    /// AES-256-GCM, SHA-256, HMAC-SHA256, Ed25519: the default.
    Intl,
    /// SM4-GCM, SM3, HMAC-SM3, SM2: the commercial cryptography a Chinese
    /// regulator accepts (GB/T 39786-2021).
    Gm,
}

/// A suite name that is neither `intl` nor `gm`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown cipher suite (expected `intl` or `gm`)")]
pub struct UnknownSuite;

impl Suite {
    /// Every suite.
    pub const ALL: [Suite; 2] = [Suite::Intl, Suite::Gm];

    /// The wire and configuration name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Suite::Intl => "intl",
            Suite::Gm => "gm",
        }
    }

    /// Parses `intl` or `gm` (exactly; no other spelling).
    pub fn parse(s: &str) -> Result<Suite, UnknownSuite> {
        match s {
            "intl" => Ok(Suite::Intl),
            "gm" => Ok(Suite::Gm),
            _ => Err(UnknownSuite),
        }
    }

    /// The AEAD that seals this suite's envelopes.
    pub const fn aead(self) -> Algorithm {
        match self {
            Suite::Intl => Algorithm::Aes256Gcm,
            Suite::Gm => Algorithm::Sm4Gcm,
        }
    }

    /// Length in bytes of this suite's symmetric keys (data keys, KEKs).
    pub const fn key_len(self) -> usize {
        self.aead().key_len()
    }
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Suite {
    type Err = UnknownSuite;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Suite::parse(s)
    }
}

/// The suite's digest (SHA-256 or SM3) of `data`.
pub fn digest(suite: Suite, data: &[u8]) -> [u8; DIGEST_LEN] {
    digest_parts(suite, &[data])
}

/// The suite's digest of the concatenation of `parts` (no separator: the
/// caller makes the encoding unambiguous).
pub fn digest_parts(suite: Suite, parts: &[&[u8]]) -> [u8; DIGEST_LEN] {
    let mut out = [0u8; DIGEST_LEN];
    match suite {
        Suite::Intl => {
            let mut ctx = ring_digest::Context::new(&ring_digest::SHA256);
            for p in parts {
                ctx.update(p);
            }
            out.copy_from_slice(ctx.finish().as_ref());
        }
        Suite::Gm => {
            let mut h = Sm3::new();
            for p in parts {
                h.update(p);
            }
            out.copy_from_slice(&h.finalize());
        }
    }
    out
}

/// The suite's digest of `data`, lowercase hex (64 chars).
pub fn digest_hex(suite: Suite, data: &[u8]) -> String {
    hex::encode(digest(suite, data))
}

/// The suite's HMAC (HMAC-SHA256 or HMAC-SM3) under `key` of the
/// concatenation of `parts`. Any key length is accepted (RFC 2104).
pub fn hmac(suite: Suite, key: &[u8], parts: &[&[u8]]) -> [u8; DIGEST_LEN] {
    let mut out = [0u8; DIGEST_LEN];
    match suite {
        Suite::Intl => {
            let k = ring_hmac::Key::new(ring_hmac::HMAC_SHA256, key);
            let mut ctx = ring_hmac::Context::with_key(&k);
            for p in parts {
                ctx.update(p);
            }
            out.copy_from_slice(ctx.sign().as_ref());
        }
        Suite::Gm => {
            let mut mac = hmac_sm3(key);
            for p in parts {
                mac.update(p);
            }
            out.copy_from_slice(&mac.finalize().into_bytes());
        }
    }
    out
}

/// Whether `tag` is the suite's HMAC under `key` of `parts`, compared in
/// constant time. A tag of another length is refused.
pub fn hmac_verify(suite: Suite, key: &[u8], parts: &[&[u8]], tag: &[u8]) -> bool {
    match suite {
        Suite::Intl => {
            let k = ring_hmac::Key::new(ring_hmac::HMAC_SHA256, key);
            ring_hmac::verify(&k, &parts.concat(), tag).is_ok()
        }
        Suite::Gm => {
            let mut mac = hmac_sm3(key);
            for p in parts {
                mac.update(p);
            }
            mac.verify_slice(tag).is_ok()
        }
    }
}

fn hmac_sm3(key: &[u8]) -> hmac::Hmac<Sm3> {
    // RFC 2104 §2: a key longer than the 64-byte block is hashed first,
    // a shorter one padded with zeros. Done here so that the constructor
    // used cannot fail.
    let mut block = hmac::digest::Key::<hmac::Hmac<Sm3>>::default();
    if key.len() > block.len() {
        block[..DIGEST_LEN].copy_from_slice(&Sm3::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mac = hmac::Hmac::<Sm3>::new(&block);
    block.as_mut_slice().zeroize();
    mac
}

/// The subject blind index of `suite`, lowercase hex (64 chars): the MAC
/// under `key` of `dzl/blind-index/v1\0 || lp(label) || value`, `lp` being
/// an 8-byte big-endian length prefix, so different labels never share an
/// index space.
pub fn blind_index_for(suite: Suite, key: &[u8], label: &str, value: &[u8]) -> String {
    let mut label_field = Vec::with_capacity(8 + label.len());
    push_field(&mut label_field, label.as_bytes());
    hex::encode(hmac(
        suite,
        key,
        &[b"dzl/blind-index/v1\0", &label_field, value],
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_serialise_lowercase() {
        for s in Suite::ALL {
            assert_eq!(Suite::parse(s.as_str()), Ok(s));
            assert_eq!(s.to_string().parse::<Suite>(), Ok(s));
        }
        for bad in ["", "GM", "Intl", "sm", "intl ", "aes"] {
            assert_eq!(Suite::parse(bad), Err(UnknownSuite), "{bad:?}");
        }
    }

    #[test]
    fn key_lengths_follow_the_aead() {
        assert_eq!(Suite::Intl.key_len(), 32);
        assert_eq!(Suite::Gm.key_len(), 16);
        assert_eq!(Suite::Intl.aead(), Algorithm::Aes256Gcm);
        assert_eq!(Suite::Gm.aead(), Algorithm::Sm4Gcm);
    }

    #[test]
    fn parts_hash_as_their_concatenation() {
        for s in Suite::ALL {
            assert_eq!(digest_parts(s, &[b"ab", b"c"]), digest(s, b"abc"));
            assert_eq!(
                hmac(s, b"k", &[b"a", b"bc"]),
                hmac(s, b"k", &[b"abc"]),
                "{s}"
            );
        }
        assert_ne!(digest(Suite::Intl, b"abc"), digest(Suite::Gm, b"abc"));
    }

    #[test]
    fn hmac_verify_refuses_other_tags() {
        for s in Suite::ALL {
            let tag = hmac(s, b"key", &[b"msg"]);
            assert!(hmac_verify(s, b"key", &[b"msg"], &tag));
            assert!(!hmac_verify(s, b"key", &[b"msh"], &tag));
            assert!(!hmac_verify(s, b"kez", &[b"msg"], &tag));
            assert!(!hmac_verify(s, b"key", &[b"msg"], &tag[..31]));
            let other = Suite::ALL.into_iter().find(|o| *o != s).unwrap();
            assert!(!hmac_verify(other, b"key", &[b"msg"], &tag));
        }
    }
}
