//! The envelope: the one byte format of every ciphertext in the vault,
//! wrapped keys included, and the generic `seal`/`open` built on it.
//!
//! ```text
//! byte 0       algorithm tag   (0x01 = AES-256-GCM)
//! byte 1       format version  (0x01)
//! bytes 2..14  96-bit nonce, random per seal
//! bytes 14..   ciphertext || 16-byte tag
//! ```
//!
//! The two header bytes are prepended to the caller's AAD before it reaches
//! the AEAD, so flipping the algorithm or format byte can never make a
//! ciphertext open (the tag no longer verifies even if the new value is
//! known). The header has a fixed length, so `header || aad` stays injective.
//!
//! Algorithm agility lives in exactly one place: the [`Algorithm`] enum. To
//! add a suite (say SM4-GCM for a deployment that must use national
//! algorithms) add a variant, give it a fresh tag in [`Algorithm::tag`] /
//! [`Algorithm::from_tag`], and add its arm to the private `aead_seal_raw` /
//! `aead_open_raw`; envelopes already written keep opening because the tag
//! byte says which suite sealed them. A suite whose key is not 32 bytes will
//! also need a key-derivation step from [`SecretKey`].
//!
//! Nonces are random (96 bits from the injected RNG). Each data key seals
//! only the few groups of one deposit, and each KEK wraps at most one key per
//! stored row, far below the 2^32 random-nonce limit for AES-GCM.

use ring::aead;
use ring::rand::SecureRandom;
use zeroize::{Zeroize, Zeroizing};

use crate::error::CryptoError;
use crate::ids::random_bytes;
use crate::keys::SecretKey;

/// Envelope format version written by this build.
pub const FORMAT_V1: u8 = 0x01;
/// Length of the nonce in bytes.
pub const NONCE_LEN: usize = 12;
/// Length of the authentication tag in bytes.
pub const TAG_LEN: usize = 16;
/// Length of the header (algorithm tag, format version, nonce).
pub const HEADER_LEN: usize = 2 + NONCE_LEN;
/// How many bytes an envelope adds to its plaintext.
pub const ENVELOPE_OVERHEAD: usize = HEADER_LEN + TAG_LEN;

/// The AEAD suites an envelope can name. The single dispatch point for
/// algorithm agility (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// AES-256-GCM (`ring::aead::AES_256_GCM`), tag `0x01`.
    Aes256Gcm,
}

impl Algorithm {
    /// The suite new envelopes are sealed with.
    pub const DEFAULT: Algorithm = Algorithm::Aes256Gcm;

    /// The envelope's byte 0 for this suite.
    pub const fn tag(self) -> u8 {
        match self {
            Algorithm::Aes256Gcm => 0x01,
        }
    }

    /// The suite named by an envelope's byte 0.
    pub fn from_tag(tag: u8) -> Result<Self, CryptoError> {
        match tag {
            0x01 => Ok(Algorithm::Aes256Gcm),
            other => Err(CryptoError::UnknownAlgorithm(other)),
        }
    }

    fn ring_key(self, key: &SecretKey) -> Result<aead::LessSafeKey, CryptoError> {
        let alg = match self {
            Algorithm::Aes256Gcm => &aead::AES_256_GCM,
        };
        let unbound =
            aead::UnboundKey::new(alg, key.expose()).map_err(|_| CryptoError::BadKeyMaterial)?;
        Ok(aead::LessSafeKey::new(unbound))
    }
}

/// Raw AEAD seal: returns `ciphertext || tag`, no header, `aad` used as is.
///
/// Sealing can only fail for plaintexts past the AEAD's length limit
/// (about 64 GiB for AES-GCM); that is reported as `Integrity`.
pub(crate) fn aead_seal_raw(
    alg: Algorithm,
    key: &SecretKey,
    nonce: [u8; NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let key = alg.ring_key(key)?;
    let mut in_out = Vec::with_capacity(plaintext.len() + TAG_LEN);
    in_out.extend_from_slice(plaintext);
    let sealed = key.seal_in_place_append_tag(
        aead::Nonce::assume_unique_for_key(nonce),
        aead::Aad::from(aad),
        &mut in_out,
    );
    match sealed {
        Ok(()) => Ok(in_out),
        Err(_) => {
            in_out.zeroize();
            Err(CryptoError::Integrity)
        }
    }
}

/// Raw AEAD open of `ciphertext || tag`, no header, `aad` used as is.
pub(crate) fn aead_open_raw(
    alg: Algorithm,
    key: &SecretKey,
    nonce: [u8; NONCE_LEN],
    aad: &[u8],
    ciphertext_and_tag: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    if ciphertext_and_tag.len() < TAG_LEN {
        return Err(CryptoError::Integrity);
    }
    let key = alg.ring_key(key)?;
    let mut buf = Zeroizing::new(ciphertext_and_tag.to_vec());
    let plain_len = key
        .open_in_place(
            aead::Nonce::assume_unique_for_key(nonce),
            aead::Aad::from(aad),
            buf.as_mut_slice(),
        )
        .map_err(|_| CryptoError::Integrity)?
        .len();
    buf.truncate(plain_len);
    Ok(buf)
}

/// The AAD the AEAD actually sees: the envelope header bytes, then the caller's AAD.
fn envelope_aad(alg_tag: u8, format: u8, aad: &[u8]) -> Vec<u8> {
    let mut full = Vec::with_capacity(2 + aad.len());
    full.push(alg_tag);
    full.push(format);
    full.extend_from_slice(aad);
    full
}

fn seal_envelope(
    alg: Algorithm,
    key: &SecretKey,
    aad: &[u8],
    nonce: [u8; NONCE_LEN],
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let full_aad = envelope_aad(alg.tag(), FORMAT_V1, aad);
    let body = aead_seal_raw(alg, key, nonce, &full_aad, plaintext)?;
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.push(alg.tag());
    out.push(FORMAT_V1);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&body);
    Ok(out)
}

/// Seal `plaintext` under `key` with a caller-chosen nonce.
///
/// Only for known-answer tests: a nonce must never repeat under one key.
#[doc(hidden)]
pub fn seal_with_nonce(
    key: &SecretKey,
    aad: &[u8],
    nonce: [u8; NONCE_LEN],
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    seal_envelope(Algorithm::DEFAULT, key, aad, nonce, plaintext)
}

/// Seal `plaintext` under `key`, binding `aad`, with a fresh random nonce.
pub fn seal(
    key: &SecretKey,
    aad: &[u8],
    plaintext: &[u8],
    rng: &dyn SecureRandom,
) -> Result<Vec<u8>, CryptoError> {
    let nonce = random_bytes::<NONCE_LEN>(rng)?;
    seal_envelope(Algorithm::DEFAULT, key, aad, nonce, plaintext)
}

/// Open an envelope sealed under `key` with the same `aad`.
///
/// Errors: an unknown byte 0 is `UnknownAlgorithm`, an unknown byte 1 is
/// `UnsupportedFormat`; anything too short, any wrong key, wrong AAD or
/// changed byte is `Integrity`.
pub fn open(
    key: &SecretKey,
    aad: &[u8],
    envelope: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let (&alg_tag, rest) = envelope.split_first().ok_or(CryptoError::Integrity)?;
    let alg = Algorithm::from_tag(alg_tag)?;
    let (&format, _) = rest.split_first().ok_or(CryptoError::Integrity)?;
    if format != FORMAT_V1 {
        return Err(CryptoError::UnsupportedFormat(format));
    }
    if envelope.len() < ENVELOPE_OVERHEAD {
        return Err(CryptoError::Integrity);
    }
    let (header, body) = envelope.split_at(HEADER_LEN);
    let nonce: [u8; NONCE_LEN] = header[2..].try_into().map_err(|_| CryptoError::Integrity)?;
    let full_aad = envelope_aad(alg_tag, format, aad);
    aead_open_raw(alg, key, nonce, &full_aad, body)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn key(hex_key: &str) -> SecretKey {
        SecretKey::from_bytes(&hex::decode(hex_key).unwrap()).unwrap()
    }

    fn nonce(hex_nonce: &str) -> [u8; NONCE_LEN] {
        hex::decode(hex_nonce).unwrap().try_into().unwrap()
    }

    /// One McGrew–Viega GCM test case (256-bit key, 96-bit IV).
    struct Vector {
        name: &'static str,
        key: &'static str,
        iv: &'static str,
        aad: &'static str,
        plaintext: &'static str,
        ciphertext: &'static str,
        tag: &'static str,
    }

    const K0: &str = "0000000000000000000000000000000000000000000000000000000000000000";
    const K1: &str = "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308";
    const IV0: &str = "000000000000000000000000";
    const IV1: &str = "cafebabefacedbaddecaf888";
    const P64: &str = "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
                       1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255";
    const C64: &str = "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa\
                       8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad";

    const VECTORS: &[Vector] = &[
        Vector {
            name: "GCM test case 13",
            key: K0,
            iv: IV0,
            aad: "",
            plaintext: "",
            ciphertext: "",
            tag: "530f8afbc74536b9a963b4f1c4cb738b",
        },
        Vector {
            name: "GCM test case 14",
            key: K0,
            iv: IV0,
            aad: "",
            plaintext: "00000000000000000000000000000000",
            ciphertext: "cea7403d4d606b6e074ec5d3baf39d18",
            tag: "d0d1c8a799996bf0265b98b5d48ab919",
        },
        Vector {
            name: "GCM test case 15",
            key: K1,
            iv: IV1,
            aad: "",
            plaintext: P64,
            ciphertext: C64,
            tag: "b094dac5d93471bdec1a502270e3cc6c",
        },
        Vector {
            name: "GCM test case 16",
            key: K1,
            iv: IV1,
            aad: "feedfacedeadbeeffeedfacedeadbeefabaddad2",
            // the first 60 bytes of P64 / C64
            plaintext: "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
                        1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
            ciphertext: "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa\
                         8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
            tag: "76fc6ece0f4e1768cddf8853bb2d551b",
        },
    ];

    #[test]
    fn raw_aead_matches_gcm_spec_vectors() {
        for v in VECTORS {
            let k = key(v.key);
            let aad = hex::decode(v.aad).unwrap();
            let pt = hex::decode(v.plaintext).unwrap();
            let expected = format!("{}{}", v.ciphertext, v.tag);

            let sealed = aead_seal_raw(Algorithm::Aes256Gcm, &k, nonce(v.iv), &aad, &pt).unwrap();
            assert_eq!(hex::encode(&sealed), expected, "{} seal", v.name);

            let opened =
                aead_open_raw(Algorithm::Aes256Gcm, &k, nonce(v.iv), &aad, &sealed).unwrap();
            assert_eq!(opened.as_slice(), pt.as_slice(), "{} open", v.name);
        }
    }

    #[test]
    fn raw_aead_refuses_vector_with_flipped_tag() {
        let v = &VECTORS[3];
        let mut ct = hex::decode(format!("{}{}", v.ciphertext, v.tag)).unwrap();
        let last = ct.len() - 1;
        ct[last] ^= 0x01;
        let aad = hex::decode(v.aad).unwrap();
        let err = aead_open_raw(Algorithm::Aes256Gcm, &key(v.key), nonce(v.iv), &aad, &ct);
        assert_eq!(err.unwrap_err(), CryptoError::Integrity);
    }

    /// Through the envelope the AEAD sees `[0x01, 0x01] || aad`, so the body of
    /// `seal_with_nonce` equals the raw vector run with that AAD, and the raw
    /// vector's ciphertext (CTR part) is unchanged: GCM's AAD only moves the tag.
    #[test]
    fn seal_with_nonce_body_is_raw_aead_over_header_and_aad() {
        for v in VECTORS {
            let k = key(v.key);
            let aad = hex::decode(v.aad).unwrap();
            let pt = hex::decode(v.plaintext).unwrap();

            let env = seal_with_nonce(&k, &aad, nonce(v.iv), &pt).unwrap();
            assert_eq!(env[0], 0x01, "{} alg tag", v.name);
            assert_eq!(env[1], FORMAT_V1, "{} format", v.name);
            assert_eq!(
                &env[2..HEADER_LEN],
                nonce(v.iv).as_slice(),
                "{} nonce",
                v.name
            );

            let body = &env[HEADER_LEN..];
            assert_eq!(
                hex::encode(&body[..pt.len()]),
                v.ciphertext,
                "{} ct",
                v.name
            );

            let mut full_aad = vec![0x01, 0x01];
            full_aad.extend_from_slice(&aad);
            let raw = aead_seal_raw(Algorithm::Aes256Gcm, &k, nonce(v.iv), &full_aad, &pt).unwrap();
            assert_eq!(body, raw.as_slice(), "{} body", v.name);
            assert_ne!(
                hex::encode(&body[pt.len()..]),
                v.tag,
                "{} header must be in AAD",
                v.name
            );
        }
    }

    #[test]
    fn envelope_aad_prepends_header() {
        assert_eq!(
            envelope_aad(0x01, 0x01, b"ab"),
            vec![0x01, 0x01, b'a', b'b']
        );
        assert_eq!(envelope_aad(0x07, 0x02, b""), vec![0x07, 0x02]);
    }

    #[test]
    fn algorithm_tags_round_trip() {
        let alg = Algorithm::Aes256Gcm;
        assert_eq!(alg.tag(), 0x01);
        assert_eq!(Algorithm::from_tag(alg.tag()).unwrap(), alg);
        assert_eq!(
            Algorithm::from_tag(0x00),
            Err(CryptoError::UnknownAlgorithm(0x00))
        );
        assert_eq!(
            Algorithm::from_tag(0x02),
            Err(CryptoError::UnknownAlgorithm(0x02))
        );
    }
}
