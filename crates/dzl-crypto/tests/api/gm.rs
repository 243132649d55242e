//! The `gm` suite through the public API: SM4-GCM envelopes, SM4 keys in
//! the keyring beside AES ones, SM3 and HMAC-SM3. The known answers not
//! taken from a standard were computed independently (Python `hashlib` /
//! `hmac` with OpenSSL's SM3, `cryptography`'s SM4 in GCM mode) over the
//! documented layouts.

use dzl_crypto::{
    blind_index, blind_index_for, digest, digest_hex, hmac, hmac_verify, open, open_record, seal,
    seal_record, seal_with_nonce, CryptoError, DataKey, Kek, Keyring, RootKey, RootKeyHolder,
    SecretKey, StoredKek, Suite, ENVELOPE_OVERHEAD, SM4_KEY_LEN,
};

use crate::helpers::{assert_every_flip_fails, assert_every_truncation_fails, rng};

fn sm4(byte: u8) -> SecretKey {
    SecretKey::from_bytes_for(Suite::Gm, &[byte; SM4_KEY_LEN]).unwrap()
}

#[test]
fn sm4_envelope_known_answer() {
    let env = seal_with_nonce(&sm4(0x11), b"dzl-test-aad", [0x22; 12], b"hello, vault").unwrap();
    assert_eq!(
        hex::encode(&env),
        "0201222222222222222222222222\
         5fa72814b731cc194fc5b6f61cf85db93a1e3ec48e1f87a5e0afa0b7"
    );
    assert_eq!(
        open(&sm4(0x11), b"dzl-test-aad", &env).unwrap().as_slice(),
        b"hello, vault"
    );
}

#[test]
fn sm4_keys_are_16_bytes_and_seal_with_tag_02() {
    let k = SecretKey::generate_for(Suite::Gm, &rng()).unwrap();
    assert_eq!(k.expose().len(), 16);
    assert_eq!(k.suite(), Suite::Gm);
    for len in [0usize, 1, 16, 17, 4096] {
        let pt = vec![0x5a; len];
        let env = seal(&k, b"aad", &pt, &rng()).unwrap();
        assert_eq!(env.len(), len + ENVELOPE_OVERHEAD);
        assert_eq!(&env[..2], &[0x02, 0x01]);
        assert_eq!(open(&k, b"aad", &env).unwrap().as_slice(), pt.as_slice());
    }
    for bad in [0usize, 15, 17, 32] {
        assert_eq!(
            SecretKey::from_bytes_for(Suite::Gm, &vec![1; bad]).unwrap_err(),
            CryptoError::BadKeyMaterial,
            "{bad} bytes"
        );
    }
}

#[test]
fn sm4_wrong_key_flipped_byte_truncation_and_swapped_aad_are_refused() {
    let env = seal(&sm4(1), b"aad", b"tiny", &rng()).unwrap();
    assert_eq!(
        open(&sm4(2), b"aad", &env).unwrap_err(),
        CryptoError::Integrity
    );
    for other in [&b"aae"[..], b"", b"aad\0"] {
        assert_eq!(
            open(&sm4(1), other, &env).unwrap_err(),
            CryptoError::Integrity
        );
    }
    let tried = assert_every_flip_fails(&env, |e| open(&sm4(1), b"aad", e));
    assert_eq!(tried, 3 * (4 + ENVELOPE_OVERHEAD));
    assert_every_truncation_fails(&env, |e| open(&sm4(1), b"aad", e));
}

#[test]
fn sm4_records_are_bound_to_deposit_and_group() {
    let dk = DataKey::generate_for(Suite::Gm, &rng()).unwrap();
    assert_eq!(dk.suite(), Suite::Gm);
    let rec = seal_record(&dk, "dep_a", "device", b"{\"imei\":\"1\"}", &rng()).unwrap();
    assert_eq!(rec[0], 0x02);
    assert!(open_record(&dk, "dep_a", "device", &rec).is_ok());
    // Swapped AAD: another deposit or group.
    assert_eq!(
        open_record(&dk, "dep_b", "device", &rec).unwrap_err(),
        CryptoError::Integrity
    );
    assert_eq!(
        open_record(&dk, "dep_a", "risk", &rec).unwrap_err(),
        CryptoError::Integrity
    );
}

/// A vault moving from `intl` to `gm`: version 1 is AES, version 2 SM4 and
/// active. Both kinds of envelope open; new wraps and new data keys are SM4;
/// an AES data key rewrapped under the SM4 KEK stays an AES key.
#[test]
fn a_keyring_holding_both_suites_opens_both() {
    let root = RootKey::generate(&rng()).unwrap();
    let v1 = root.wrap_kek(&Kek::generate(1, &rng()).unwrap()).unwrap();
    let v2 = root
        .wrap_kek(&Kek::generate_for(2, Suite::Gm, &rng()).unwrap())
        .unwrap();
    let old_ring = Keyring::open(
        &root,
        &[StoredKek {
            version: 1,
            suite: Suite::Intl,
            wrapped: &v1,
        }],
        1,
    )
    .unwrap();
    let aes_dk = DataKey::generate(&rng()).unwrap();
    let aes_rec = seal_record(&aes_dk, "dep_a", "risk", b"{}", &rng()).unwrap();
    let aes_wrapped = old_ring.wrap_data_key(&aes_dk, "dep_a", "records").unwrap();
    let aes_secret = old_ring.seal_secret("vault-secret", "x", b"s1").unwrap();

    let ring = Keyring::open(
        &root,
        &[
            StoredKek {
                version: 1,
                suite: Suite::Intl,
                wrapped: &v1,
            },
            StoredKek {
                version: 2,
                suite: Suite::Gm,
                wrapped: &v2,
            },
        ],
        2,
    )
    .unwrap();
    assert_eq!(ring.active_suite(), Suite::Gm);
    assert_eq!(ring.suite_of(1), Ok(Suite::Intl));
    assert_eq!(ring.suite_of(2), Ok(Suite::Gm));

    // The old AES data key and secret still open.
    let back = ring
        .unwrap_data_key(&aes_wrapped, "dep_a", "records")
        .unwrap();
    assert_eq!(back.suite(), Suite::Intl);
    assert!(open_record(&back, "dep_a", "risk", &aes_rec).is_ok());
    assert_eq!(
        ring.open_secret("vault-secret", "x", &aes_secret)
            .unwrap()
            .as_slice(),
        b"s1"
    );

    // Rewrapped under the SM4 KEK, the AES data key stays AES.
    let moved = ring
        .rewrap_data_key(&aes_wrapped, "dep_a", "records")
        .unwrap();
    assert_eq!(moved.kek_version, 2);
    assert_eq!(moved.bytes[0], 0x02);
    assert_eq!(moved.bytes.len(), 32 + ENVELOPE_OVERHEAD);
    let back = ring.unwrap_data_key(&moved, "dep_a", "records").unwrap();
    assert_eq!(back.suite(), Suite::Intl);
    assert!(open_record(&back, "dep_a", "risk", &aes_rec).is_ok());

    // New data keys follow the active suite; their wraps are SM4 envelopes.
    let dk = ring.generate_data_key(&rng()).unwrap();
    assert_eq!(dk.suite(), Suite::Gm);
    let w = ring.wrap_data_key(&dk, "dep_b", "records").unwrap();
    assert_eq!(w.bytes.len(), SM4_KEY_LEN + ENVELOPE_OVERHEAD);
    let secret = ring.seal_secret("vault-secret", "y", b"s2").unwrap();
    assert_eq!((secret.kek_version, secret.bytes[0]), (2, 0x02));
}

#[test]
fn a_kek_unwrapped_as_the_other_suite_is_refused() {
    let root = RootKey::generate(&rng()).unwrap();
    let gm = root
        .wrap_kek(&Kek::generate_for(3, Suite::Gm, &rng()).unwrap())
        .unwrap();
    let intl = root.wrap_kek(&Kek::generate(4, &rng()).unwrap()).unwrap();
    assert_eq!(
        root.unwrap_kek(3, Suite::Gm, &gm).unwrap().suite(),
        Suite::Gm
    );
    assert_eq!(
        root.unwrap_kek(3, Suite::Intl, &gm).unwrap_err(),
        CryptoError::Integrity
    );
    assert_eq!(
        root.unwrap_kek(4, Suite::Gm, &intl).unwrap_err(),
        CryptoError::Integrity
    );
    assert_eq!(
        Keyring::open(
            &root,
            &[StoredKek {
                version: 3,
                suite: Suite::Intl,
                wrapped: &gm
            }],
            3
        )
        .unwrap_err(),
        CryptoError::Integrity
    );
}

/// An SM4 root key (16 bytes of base64) wraps KEKs with SM4-GCM.
#[test]
fn an_sm4_root_key_wraps_with_sm4_gcm() {
    let root = RootKey::generate_for(Suite::Gm, &rng()).unwrap();
    assert_eq!(root.suite(), Suite::Gm);
    let b64 = root.to_base64();
    assert_eq!(b64.len(), 24);
    let again = RootKey::from_base64(&format!("{b64}\n")).unwrap();
    assert_eq!(again.fingerprint(), root.fingerprint());
    let wrapped = root
        .wrap_kek(&Kek::generate_for(1, Suite::Gm, &rng()).unwrap())
        .unwrap();
    assert_eq!(wrapped[0], 0x02);
    assert_eq!(wrapped.len(), SM4_KEY_LEN + ENVELOPE_OVERHEAD);
    assert_eq!(
        again.unwrap_kek(1, Suite::Gm, &wrapped).unwrap().version(),
        1
    );
    assert_every_flip_fails(&wrapped, |w| again.unwrap_kek(1, Suite::Gm, w));
    let aes_root = RootKey::generate(&rng()).unwrap();
    assert_eq!(
        aes_root.unwrap_kek(1, Suite::Gm, &wrapped).unwrap_err(),
        CryptoError::Integrity
    );
    // Through the trait object, as the server holds it.
    let holder: &dyn RootKeyHolder = &again;
    assert_eq!(
        holder.unwrap_kek(1, Suite::Gm, &wrapped).unwrap().version(),
        1
    );
}

/// GB/T 32905-2016 appendix A: "abc" and "abcd" × 16 (512 bits).
#[test]
fn sm3_matches_gbt32905_examples() {
    assert_eq!(
        digest_hex(Suite::Gm, b"abc"),
        "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
    );
    assert_eq!(
        hex::encode(digest(Suite::Gm, "abcd".repeat(16).as_bytes())),
        "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"
    );
    assert_eq!(
        digest_hex(Suite::Intl, b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[test]
fn hmac_sm3_known_answers() {
    assert_eq!(
        hex::encode(hmac(Suite::Gm, b"key", &[b"msg"])),
        "aaef27f7826f0b502a7e3d787a7ac6ee15a4ce44e2631200df14c54bc4f57fa7"
    );
    // A key longer than SM3's 64-byte block is hashed first (RFC 2104).
    let long_key: Vec<u8> = (0..100).collect();
    let tag = hmac(Suite::Gm, &long_key, &[b"long key"]);
    assert_eq!(
        hex::encode(tag),
        "80e2e45a2f42292ce33b20004a0c9bdfcdcd98d7b21bba7e9f66b775a8a261d1"
    );
    assert!(hmac_verify(Suite::Gm, &long_key, &[b"long ", b"key"], &tag));
    assert!(!hmac_verify(
        Suite::Gm,
        &long_key[..99],
        &[b"long key"],
        &tag
    ));
}

#[test]
fn blind_indexes_follow_the_suite() {
    let key: Vec<u8> = (0..32).collect();
    let value = b"resident_id:11010519491231002X";
    assert_eq!(
        blind_index_for(Suite::Gm, &key, "subject", value),
        "9c141c6792846c90e6110a2d3dcc13e138edc26195d5410b121e0c793ed3971c"
    );
    let intl = blind_index_for(Suite::Intl, &key, "subject", value);
    assert_eq!(
        intl,
        "2776af28f0b2add57062a0247f76d6fadd4561044c92b19394f634a9d556eec6"
    );
    // The `intl` index is the one every stored subject row already has.
    assert_eq!(
        blind_index(&SecretKey::from_bytes(&key).unwrap(), "subject", value),
        intl
    );
}

#[test]
fn suites_serialise_as_their_lowercase_names() {
    assert_eq!(serde_json::to_string(&Suite::Gm).unwrap(), "\"gm\"");
    assert_eq!(serde_json::to_string(&Suite::Intl).unwrap(), "\"intl\"");
    assert_eq!(serde_json::from_str::<Suite>("\"gm\"").unwrap(), Suite::Gm);
    assert!(serde_json::from_str::<Suite>("\"GM\"").is_err());
    assert!(serde_json::from_str::<Suite>("\"sm4\"").is_err());
}
