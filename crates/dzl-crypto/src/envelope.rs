//! The envelope: the one byte format of every ciphertext in the vault,
//! wrapped keys included, and the generic `seal`/`open` built on it.
//!
//! ```text
//! byte 0       algorithm tag   (0x01 = AES-256-GCM, 0x02 = SM4-GCM)
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
//! Algorithm agility lives in exactly one place: the [`Algorithm`] enum.
//! A key knows its suite ([`SecretKey::suite`]), and `seal` uses that
//! suite's AEAD; `open` dispatches on byte 0, so envelopes of both suites
//! open side by side and a vault can move from one suite to the other by
//! rotating keys. A key presented to an envelope of the other suite (its
//! length is the other AEAD's) opens nothing: `Integrity`, as any wrong key.
//!
//! SM4-GCM is GCM over the SM4 block cipher (RFC 8998 §3.1, the same
//! construction as AES-GCM: 96-bit nonce, 128-bit tag), taken from
//! RustCrypto's generic `AesGcm<Sm4, U12>` (crates `aes-gcm`, `sm4`).
//! AES-256-GCM is ring's.
//!
//! Nonces are random (96 bits from the injected RNG). Each data key seals
//! only the few groups of one deposit, and each KEK wraps at most one key per
//! stored row, far below the 2^32 random-nonce limit of GCM.

use aes_gcm::aead::consts::U12;
use aes_gcm::aead::{AeadInOut as _, KeyInit as _};
use aes_gcm::AesGcm;
use ring::aead;
use ring::rand::SecureRandom;
use sm4::Sm4;
use zeroize::{Zeroize, Zeroizing};

use crate::error::CryptoError;
use crate::ids::random_bytes;
use crate::keys::SecretKey;
use crate::suite::Suite;

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
    /// AES-256-GCM (`ring::aead::AES_256_GCM`), tag `0x01`, 32-byte keys.
    Aes256Gcm,
    /// SM4-GCM (RFC 8998), tag `0x02`, 16-byte keys.
    Sm4Gcm,
}

/// SM4 in GCM mode with a 96-bit nonce and a 128-bit tag.
type Sm4Gcm = AesGcm<Sm4, U12>;

impl Algorithm {
    /// The suite new envelopes are sealed with.
    pub const DEFAULT: Algorithm = Algorithm::Aes256Gcm;

    /// The envelope's byte 0 for this suite.
    pub const fn tag(self) -> u8 {
        match self {
            Algorithm::Aes256Gcm => 0x01,
            Algorithm::Sm4Gcm => 0x02,
        }
    }

    /// Length in bytes of this AEAD's keys.
    pub const fn key_len(self) -> usize {
        match self {
            Algorithm::Aes256Gcm => 32,
            Algorithm::Sm4Gcm => 16,
        }
    }

    /// The suite this AEAD belongs to.
    pub const fn suite(self) -> Suite {
        match self {
            Algorithm::Aes256Gcm => Suite::Intl,
            Algorithm::Sm4Gcm => Suite::Gm,
        }
    }

    /// The suite named by an envelope's byte 0.
    pub fn from_tag(tag: u8) -> Result<Self, CryptoError> {
        match tag {
            0x01 => Ok(Algorithm::Aes256Gcm),
            0x02 => Ok(Algorithm::Sm4Gcm),
            other => Err(CryptoError::UnknownAlgorithm(other)),
        }
    }

    /// The key bytes, if `key` is a key of this AEAD. A key of the other
    /// suite is a wrong key: `Integrity`.
    fn key_bytes(self, key: &SecretKey) -> Result<&[u8], CryptoError> {
        let bytes = key.expose();
        if bytes.len() == self.key_len() {
            Ok(bytes)
        } else {
            Err(CryptoError::Integrity)
        }
    }
}

fn ring_aes_key(key: &[u8]) -> Result<aead::LessSafeKey, CryptoError> {
    let unbound =
        aead::UnboundKey::new(&aead::AES_256_GCM, key).map_err(|_| CryptoError::BadKeyMaterial)?;
    Ok(aead::LessSafeKey::new(unbound))
}

fn sm4_gcm(key: &[u8]) -> Result<Sm4Gcm, CryptoError> {
    Sm4Gcm::new_from_slice(key).map_err(|_| CryptoError::BadKeyMaterial)
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
    let key = alg.key_bytes(key)?;
    let mut in_out = Vec::with_capacity(plaintext.len() + TAG_LEN);
    in_out.extend_from_slice(plaintext);
    let sealed = match alg {
        Algorithm::Aes256Gcm => ring_aes_key(key)?
            .seal_in_place_append_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(aad),
                &mut in_out,
            )
            .map_err(|_| ()),
        Algorithm::Sm4Gcm => sm4_gcm(key)?
            .encrypt_in_place(&nonce.into(), aad, &mut in_out)
            .map_err(|_| ()),
    };
    match sealed {
        Ok(()) => Ok(in_out),
        Err(()) => {
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
    let key = alg.key_bytes(key)?;
    let mut buf = Zeroizing::new(ciphertext_and_tag.to_vec());
    match alg {
        Algorithm::Aes256Gcm => {
            let plain_len = ring_aes_key(key)?
                .open_in_place(
                    aead::Nonce::assume_unique_for_key(nonce),
                    aead::Aad::from(aad),
                    buf.as_mut_slice(),
                )
                .map_err(|_| CryptoError::Integrity)?
                .len();
            buf.truncate(plain_len);
        }
        Algorithm::Sm4Gcm => {
            sm4_gcm(key)?
                .decrypt_in_place(&nonce.into(), aad, &mut *buf)
                .map_err(|_| CryptoError::Integrity)?;
        }
    }
    Ok(buf)
}

/// The AAD the AEAD actually sees: the envelope header bytes, then the caller's AAD.
pub(crate) fn envelope_aad(alg_tag: u8, format: u8, aad: &[u8]) -> Vec<u8> {
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
    Ok(assemble(alg, nonce, &body))
}

/// The envelope of `alg` whose AEAD output under `nonce` is `body`
/// (`ciphertext || tag`, made with the AAD [`envelope_aad`] gives).
pub(crate) fn assemble(alg: Algorithm, nonce: [u8; NONCE_LEN], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.push(alg.tag());
    out.push(FORMAT_V1);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(body);
    out
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
    seal_envelope(key.suite().aead(), key, aad, nonce, plaintext)
}

/// Seal `plaintext` under `key` with its suite's AEAD, binding `aad`, with a
/// fresh random nonce.
pub fn seal(
    key: &SecretKey,
    aad: &[u8],
    plaintext: &[u8],
    rng: &dyn SecureRandom,
) -> Result<Vec<u8>, CryptoError> {
    let nonce = random_bytes::<NONCE_LEN>(rng)?;
    seal_envelope(key.suite().aead(), key, aad, nonce, plaintext)
}

/// An envelope taken apart: its AEAD, nonce, the AAD the AEAD sees and
/// `ciphertext || tag`.
pub(crate) type Split<'a> = (Algorithm, [u8; NONCE_LEN], Vec<u8>, &'a [u8]);

/// Takes an envelope apart, with every check of [`open`] but the AEAD's.
pub(crate) fn split<'a>(aad: &[u8], envelope: &'a [u8]) -> Result<Split<'a>, CryptoError> {
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
    Ok((alg, nonce, envelope_aad(alg_tag, format, aad), body))
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
    let (alg, nonce, full_aad, body) = split(aad, envelope)?;
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
        for (alg, tag, key_len, suite) in [
            (Algorithm::Aes256Gcm, 0x01, 32, Suite::Intl),
            (Algorithm::Sm4Gcm, 0x02, 16, Suite::Gm),
        ] {
            assert_eq!(alg.tag(), tag);
            assert_eq!(Algorithm::from_tag(tag).unwrap(), alg);
            assert_eq!(alg.key_len(), key_len);
            assert_eq!(alg.suite(), suite);
            assert_eq!(suite.aead(), alg);
        }
        for unknown in [0x00, 0x03, 0xff] {
            assert_eq!(
                Algorithm::from_tag(unknown),
                Err(CryptoError::UnknownAlgorithm(unknown))
            );
        }
    }

    fn sm4_key(hex_key: &str) -> SecretKey {
        SecretKey::from_bytes_for(Suite::Gm, &hex::decode(hex_key).unwrap()).unwrap()
    }

    /// RFC 8998 appendix A.1, the SM4-GCM example.
    const RFC8998_KEY: &str = "0123456789abcdeffedcba9876543210";
    const RFC8998_IV: &str = "00001234567800000000abcd";
    const RFC8998_AAD: &str = "feedfacedeadbeeffeedfacedeadbeefabaddad2";
    const RFC8998_PT: &str = "aaaaaaaaaaaaaaaabbbbbbbbbbbbbbbbccccccccccccccccdddddddddddddddd\
                              eeeeeeeeeeeeeeeeffffffffffffffffeeeeeeeeeeeeeeeeaaaaaaaaaaaaaaaa";
    const RFC8998_CT: &str = "17f399f08c67d5ee19d0dc9969c4bb7d5fd46fd3756489069157b282bb200735\
                              d82710ca5c22f0ccfa7cbf93d496ac15a56834cbcf98c397b4024a2691233b8d";
    const RFC8998_TAG: &str = "83de3541e4c2b58177e065a9bf7b62ec";

    #[test]
    fn raw_sm4_gcm_matches_rfc8998_a1() {
        let k = sm4_key(RFC8998_KEY);
        let aad = hex::decode(RFC8998_AAD).unwrap();
        let pt = hex::decode(RFC8998_PT).unwrap();
        let sealed = aead_seal_raw(Algorithm::Sm4Gcm, &k, nonce(RFC8998_IV), &aad, &pt).unwrap();
        assert_eq!(hex::encode(&sealed), format!("{RFC8998_CT}{RFC8998_TAG}"));
        let opened =
            aead_open_raw(Algorithm::Sm4Gcm, &k, nonce(RFC8998_IV), &aad, &sealed).unwrap();
        assert_eq!(opened.as_slice(), pt.as_slice());
    }

    #[test]
    fn raw_sm4_gcm_refuses_the_vector_tampered_or_with_other_aad() {
        let k = sm4_key(RFC8998_KEY);
        let aad = hex::decode(RFC8998_AAD).unwrap();
        let good = hex::decode(format!("{RFC8998_CT}{RFC8998_TAG}")).unwrap();
        for i in [0, 31, 63, 64, 79] {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            assert_eq!(
                aead_open_raw(Algorithm::Sm4Gcm, &k, nonce(RFC8998_IV), &aad, &bad).unwrap_err(),
                CryptoError::Integrity,
                "byte {i}"
            );
        }
        let mut other_aad = aad.clone();
        other_aad.push(0);
        assert_eq!(
            aead_open_raw(Algorithm::Sm4Gcm, &k, nonce(RFC8998_IV), &other_aad, &good).unwrap_err(),
            CryptoError::Integrity
        );
        let other_key = sm4_key("fedcba98765432100123456789abcdef");
        assert_eq!(
            aead_open_raw(
                Algorithm::Sm4Gcm,
                &other_key,
                nonce(RFC8998_IV),
                &aad,
                &good
            )
            .unwrap_err(),
            CryptoError::Integrity
        );
    }

    /// The GB/T 32907-2016 appendix A examples: one block, and the same
    /// block encrypted 1,000,000 times.
    #[test]
    fn sm4_block_matches_gbt32907_examples() {
        use sm4::cipher::{BlockCipherEncrypt as _, KeyInit as _};
        let key = hex::decode("0123456789abcdeffedcba9876543210").unwrap();
        let cipher = Sm4::new_from_slice(&key).unwrap();
        let mut block = sm4::cipher::Block::<Sm4>::try_from(key.as_slice()).unwrap();
        cipher.encrypt_block(&mut block);
        assert_eq!(hex::encode(block), "681edf34d206965e86b3e94f536e4246");
        for _ in 1..1_000_000 {
            cipher.encrypt_block(&mut block);
        }
        assert_eq!(hex::encode(block), "595298c7c6fd271f0402f804c33d3f66");
    }

    #[test]
    fn a_key_of_the_other_suite_opens_nothing() {
        let aes = key(K1);
        let sm4 = sm4_key(RFC8998_KEY);
        let aes_env = seal_with_nonce(&aes, b"aad", [7; NONCE_LEN], b"pt").unwrap();
        let sm4_env = seal_with_nonce(&sm4, b"aad", [7; NONCE_LEN], b"pt").unwrap();
        assert_eq!(aes_env[0], 0x01);
        assert_eq!(sm4_env[0], 0x02);
        assert_eq!(
            open(&sm4, b"aad", &aes_env).unwrap_err(),
            CryptoError::Integrity
        );
        assert_eq!(
            open(&aes, b"aad", &sm4_env).unwrap_err(),
            CryptoError::Integrity
        );
        // Byte 0 is in the AAD: relabelling an envelope opens nothing either.
        let mut relabelled = sm4_env.clone();
        relabelled[0] = 0x01;
        assert_eq!(
            open(&sm4, b"aad", &relabelled).unwrap_err(),
            CryptoError::Integrity
        );
    }

    /// As for AES-GCM: the SM4-GCM envelope's body is the raw AEAD run with
    /// AAD `02 01 || aad`, so the RFC 8998 ciphertext appears unchanged and
    /// only the tag moves.
    #[test]
    fn sm4_envelope_body_is_raw_aead_over_header_and_aad() {
        let k = sm4_key(RFC8998_KEY);
        let aad = hex::decode(RFC8998_AAD).unwrap();
        let pt = hex::decode(RFC8998_PT).unwrap();
        let env = seal_with_nonce(&k, &aad, nonce(RFC8998_IV), &pt).unwrap();
        assert_eq!(&env[..2], &[0x02, FORMAT_V1]);
        assert_eq!(&env[2..HEADER_LEN], nonce(RFC8998_IV).as_slice());
        let body = &env[HEADER_LEN..];
        assert_eq!(hex::encode(&body[..pt.len()]), RFC8998_CT);
        assert_ne!(hex::encode(&body[pt.len()..]), RFC8998_TAG);
        let mut full_aad = vec![0x02, 0x01];
        full_aad.extend_from_slice(&aad);
        let raw = aead_seal_raw(Algorithm::Sm4Gcm, &k, nonce(RFC8998_IV), &full_aad, &pt).unwrap();
        assert_eq!(body, raw.as_slice());
        assert_eq!(open(&k, &aad, &env).unwrap().as_slice(), pt.as_slice());
    }
}
