//! The envelope format through `seal` / `open` / `seal_with_nonce`.

use dzl_crypto::{open, seal, seal_with_nonce, CryptoError, ENVELOPE_OVERHEAD};

use crate::helpers::{assert_every_flip_fails, assert_every_truncation_fails, key, rng};

/// Full-envelope known answer, computed independently (Python `cryptography`
/// AESGCM with AAD = `01 01 || aad`). Catches any drift in the format.
#[test]
fn envelope_known_answer() {
    let env = seal_with_nonce(&key(0x11), b"dzl-test-aad", [0x22; 12], b"hello, vault").unwrap();
    assert_eq!(
        hex::encode(&env),
        "0101222222222222222222222222\
         7f926b25afe3bf29844ab248a4e1902f3ba0fd88e1e1cd834631cae0"
    );
    let plain = open(&key(0x11), b"dzl-test-aad", &env).unwrap();
    assert_eq!(plain.as_slice(), b"hello, vault");
}

#[test]
#[allow(deprecated)]
fn seal_takes_its_nonce_from_the_rng() {
    let nonce = [0x5a; 12];
    let fixed = ring::test::rand::FixedSliceRandom { bytes: &nonce };
    let env = seal(&key(1), b"aad", b"pt", &fixed).unwrap();
    assert_eq!(&env[2..14], &nonce);
    assert_eq!(env, seal_with_nonce(&key(1), b"aad", nonce, b"pt").unwrap());
}

#[test]
fn round_trips_for_many_sizes() {
    for len in [0usize, 1, 15, 16, 17, 255, 4096] {
        let pt: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
        let env = seal(&key(1), b"aad", &pt, &rng()).unwrap();
        assert_eq!(env.len(), len + ENVELOPE_OVERHEAD);
        assert_eq!(env[0], 0x01);
        assert_eq!(env[1], 0x01);
        assert_eq!(
            open(&key(1), b"aad", &env).unwrap().as_slice(),
            pt.as_slice()
        );
    }
}

#[test]
fn each_seal_uses_a_fresh_nonce() {
    let a = seal(&key(1), b"aad", b"same", &rng()).unwrap();
    let b = seal(&key(1), b"aad", b"same", &rng()).unwrap();
    assert_ne!(a[2..14], b[2..14]);
    assert_ne!(a, b);
}

#[test]
fn wrong_key_is_integrity() {
    let env = seal(&key(1), b"aad", b"secret", &rng()).unwrap();
    assert_eq!(
        open(&key(2), b"aad", &env).unwrap_err(),
        CryptoError::Integrity
    );
}

#[test]
fn wrong_aad_is_integrity() {
    let env = seal(&key(1), b"aad", b"secret", &rng()).unwrap();
    assert_eq!(
        open(&key(1), b"aae", &env).unwrap_err(),
        CryptoError::Integrity
    );
    assert_eq!(
        open(&key(1), b"", &env).unwrap_err(),
        CryptoError::Integrity
    );
    assert_eq!(
        open(&key(1), b"aad\0", &env).unwrap_err(),
        CryptoError::Integrity
    );
}

#[test]
fn every_flipped_byte_is_refused() {
    let env = seal(&key(1), b"aad", b"tiny", &rng()).unwrap();
    let tried = assert_every_flip_fails(&env, |e| open(&key(1), b"aad", e));
    assert_eq!(tried, 3 * (4 + ENVELOPE_OVERHEAD));
}

#[test]
fn flipped_body_bytes_are_integrity_errors() {
    let env = seal(&key(1), b"aad", b"tiny", &rng()).unwrap();
    for i in 2..env.len() {
        let mut tampered = env.clone();
        tampered[i] ^= 0x01;
        assert_eq!(
            open(&key(1), b"aad", &tampered).unwrap_err(),
            CryptoError::Integrity,
            "byte {i}"
        );
    }
}

#[test]
fn every_truncation_is_integrity() {
    let env = seal(&key(1), b"aad", b"tiny", &rng()).unwrap();
    assert_every_truncation_fails(&env, |e| open(&key(1), b"aad", e));
}

#[test]
fn appended_byte_is_integrity() {
    let mut env = seal(&key(1), b"aad", b"tiny", &rng()).unwrap();
    env.push(0);
    assert_eq!(
        open(&key(1), b"aad", &env).unwrap_err(),
        CryptoError::Integrity
    );
}

#[test]
fn unknown_algorithm_tag_is_reported() {
    let mut env = seal(&key(1), b"aad", b"tiny", &rng()).unwrap();
    env[0] = 0x03;
    assert_eq!(
        open(&key(1), b"aad", &env).unwrap_err(),
        CryptoError::UnknownAlgorithm(0x03)
    );
    assert_eq!(
        open(&key(1), b"aad", &[0x00]).unwrap_err(),
        CryptoError::UnknownAlgorithm(0x00)
    );
}

#[test]
fn unsupported_format_is_reported() {
    let mut env = seal(&key(1), b"aad", b"tiny", &rng()).unwrap();
    env[1] = 0x02;
    assert_eq!(
        open(&key(1), b"aad", &env).unwrap_err(),
        CryptoError::UnsupportedFormat(0x02)
    );
}

#[test]
fn error_messages_carry_no_secrets() {
    let env = seal(&key(0x7e), b"aad", b"PLAINTEXT-MARKER", &rng()).unwrap();
    let err = open(&key(0x7f), b"aad", &env).unwrap_err();
    let msg = format!("{err} {err:?}");
    assert!(!msg.contains("PLAINTEXT-MARKER"));
    assert!(!msg.contains("7e7e7e7e"));
    assert_eq!(err.to_string(), "integrity check failed");
}
