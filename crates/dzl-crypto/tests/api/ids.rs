//! Ids, random bytes, blind index, SHA-256.

use dzl_crypto::{blind_index, new_id, random_bytes, sha256_hex, SecretKey};

use crate::helpers::{key, rng};

#[test]
fn new_id_has_prefix_and_32_lowercase_hex() {
    let id = new_id("dep", &rng()).unwrap();
    let (prefix, hex_part) = id.split_once('_').unwrap();
    assert_eq!(prefix, "dep");
    assert_eq!(hex_part.len(), 32);
    assert!(hex_part
        .chars()
        .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
    assert_ne!(new_id("dep", &rng()).unwrap(), id);
}

#[test]
#[allow(deprecated)]
fn new_id_uses_the_given_rng() {
    let fixed = ring::test::rand::FixedByteRandom { byte: 0xab };
    assert_eq!(
        new_id("ten", &fixed).unwrap(),
        format!("ten_{}", "ab".repeat(16))
    );
    assert_eq!(random_bytes::<3>(&fixed).unwrap(), [0xab; 3]);
}

#[test]
fn random_bytes_have_the_asked_length_and_vary() {
    let a = random_bytes::<32>(&rng()).unwrap();
    let b = random_bytes::<32>(&rng()).unwrap();
    assert_ne!(a, b);
    assert_eq!(random_bytes::<0>(&rng()).unwrap(), [0u8; 0]);
}

#[test]
fn sha256_hex_known_answers() {
    // FIPS 180-2 examples.
    assert_eq!(
        sha256_hex(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(
        sha256_hex(b""),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

#[test]
fn blind_index_known_answer() {
    // HMAC-SHA256(0x11 * 32, "dzl/blind-index/v1\0" || be64(10) || "subject-id" || value),
    // computed independently with Python's hmac module.
    assert_eq!(
        blind_index(&key(0x11), "subject-id", b"110101199003074514"),
        "ea86d2232b01457e97445d3d8b4cf095ef8d209f42df4b2786204e3c4641ca29"
    );
}

#[test]
fn blind_index_depends_on_key_label_and_value() {
    let k = key(1);
    let base = blind_index(&k, "phone", b"13800000000");
    assert_eq!(base.len(), 64);
    assert_eq!(base, base.to_lowercase());
    assert_eq!(
        base,
        blind_index(
            &SecretKey::from_bytes(&[1; 32]).unwrap(),
            "phone",
            b"13800000000"
        )
    );
    assert_ne!(base, blind_index(&key(2), "phone", b"13800000000"));
    assert_ne!(base, blind_index(&k, "id-number", b"13800000000"));
    assert_ne!(base, blind_index(&k, "phone", b"13800000001"));
    // The label is length-prefixed, so bytes cannot move between label and value.
    assert_ne!(blind_index(&k, "ab", b"c"), blind_index(&k, "a", b"bc"));
    // Not a plain hash of the value.
    assert_ne!(base, sha256_hex(b"13800000000"));
}
