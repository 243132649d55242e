//! Ed25519 receipts: signing, verification, key ids.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use dzl_crypto::{
    receipt_key_id, sha256_hex, verify_receipt_signature, CryptoError, ReceiptSigner,
};

use crate::helpers::rng;

/// PKCS#8 v2 document for an Ed25519 seed and public key (RFC 8410 layout,
/// as `ring` writes it).
fn pkcs8_v2(seed: &[u8], public: &[u8]) -> Vec<u8> {
    let mut doc = hex::decode("3053020101300506032b657004220420").unwrap();
    doc.extend_from_slice(seed);
    doc.extend_from_slice(&hex::decode("a123032100").unwrap());
    doc.extend_from_slice(public);
    doc
}

fn signer() -> ReceiptSigner {
    let pkcs8 = ReceiptSigner::generate_pkcs8(&rng()).unwrap();
    ReceiptSigner::from_pkcs8("rk_test", &pkcs8).unwrap()
}

/// RFC 8032 section 7.1, tests 1 and 2: Ed25519 is deterministic, so the
/// signature is a known answer.
#[test]
fn rfc8032_known_answers() {
    let cases = [
        (
            "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
            "",
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155\
             5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
        ),
        (
            "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
            "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
            "72",
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da\
             085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
        ),
    ];
    for (seed, public, msg, sig) in cases {
        let public = hex::decode(public).unwrap();
        let msg = hex::decode(msg).unwrap();
        let s = ReceiptSigner::from_pkcs8("rk_x", &pkcs8_v2(&hex::decode(seed).unwrap(), &public))
            .unwrap();
        assert_eq!(s.public_key_b64url(), URL_SAFE_NO_PAD.encode(&public));
        let signed = s.sign_b64url(&msg);
        assert_eq!(hex::encode(URL_SAFE_NO_PAD.decode(&signed).unwrap()), sig);
        verify_receipt_signature(&s.public_key_b64url(), &msg, &signed).unwrap();
    }
}

#[test]
fn sign_then_verify() {
    let s = signer();
    let sig = s.sign_b64url(b"receipt bytes");
    assert_eq!(URL_SAFE_NO_PAD.decode(&sig).unwrap().len(), 64);
    assert!(!sig.contains('='));
    verify_receipt_signature(&s.public_key_b64url(), b"receipt bytes", &sig).unwrap();
}

#[test]
fn tampered_message_is_refused() {
    let s = signer();
    let sig = s.sign_b64url(b"receipt bytes");
    for msg in [
        &b"receipt bytez"[..],
        b"receipt bytes ",
        b"",
        b"Receipt bytes",
    ] {
        assert_eq!(
            verify_receipt_signature(&s.public_key_b64url(), msg, &sig).unwrap_err(),
            CryptoError::Integrity
        );
    }
}

#[test]
fn tampered_signature_is_refused() {
    let s = signer();
    let raw = URL_SAFE_NO_PAD.decode(s.sign_b64url(b"m")).unwrap();
    for i in 0..raw.len() {
        let mut bad = raw.clone();
        bad[i] ^= 0x01;
        assert_eq!(
            verify_receipt_signature(&s.public_key_b64url(), b"m", &URL_SAFE_NO_PAD.encode(&bad))
                .unwrap_err(),
            CryptoError::Integrity,
            "byte {i}"
        );
    }
    // Truncated, extended, padded, not base64: all just fail to verify.
    let good = URL_SAFE_NO_PAD.encode(&raw);
    for bad in [
        URL_SAFE_NO_PAD.encode(&raw[..63]),
        URL_SAFE_NO_PAD.encode([&raw[..], &[0]].concat()),
        format!("{good}=="),
        "***".to_owned(),
        String::new(),
    ] {
        assert_eq!(
            verify_receipt_signature(&s.public_key_b64url(), b"m", &bad).unwrap_err(),
            CryptoError::Integrity,
            "{bad:?}"
        );
    }
}

#[test]
fn signature_from_another_key_is_refused() {
    let a = signer();
    let b = signer();
    let sig = a.sign_b64url(b"m");
    assert_eq!(
        verify_receipt_signature(&b.public_key_b64url(), b"m", &sig).unwrap_err(),
        CryptoError::Integrity
    );
}

#[test]
fn public_key_is_32_bytes_base64url_unpadded() {
    let s = signer();
    let pk = s.public_key_b64url();
    assert_eq!(pk.len(), 43);
    assert!(pk
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    assert_eq!(URL_SAFE_NO_PAD.decode(&pk).unwrap().len(), 32);
}

#[test]
fn undecodable_public_key_is_bad_key_material() {
    let s = signer();
    let sig = s.sign_b64url(b"m");
    let raw_pk = URL_SAFE_NO_PAD.decode(s.public_key_b64url()).unwrap();
    for pk in [
        "not*base64".to_owned(),
        STANDARD.encode(&raw_pk), // padded, standard alphabet
        URL_SAFE_NO_PAD.encode(&raw_pk[..31]),
        URL_SAFE_NO_PAD.encode([&raw_pk[..], &[0]].concat()),
        String::new(),
    ] {
        assert_eq!(
            verify_receipt_signature(&pk, b"m", &sig).unwrap_err(),
            CryptoError::BadKeyMaterial,
            "{pk:?}"
        );
    }
}

#[test]
fn bad_pkcs8_is_bad_key_material() {
    let good = ReceiptSigner::generate_pkcs8(&rng()).unwrap();
    let mut flipped = good.to_vec();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x01; // public key no longer matches the seed
    for doc in [&b""[..], b"garbage", &good[..good.len() - 1], &flipped] {
        assert_eq!(
            ReceiptSigner::from_pkcs8("rk_x", doc).unwrap_err(),
            CryptoError::BadKeyMaterial
        );
    }
}

#[test]
fn key_ids() {
    assert_eq!(receipt_key_id(&[0u8; 32]), "rk_66687aadf862bd77");
    let s = signer();
    assert_eq!(s.key_id(), "rk_test");
    let pk = URL_SAFE_NO_PAD.decode(s.public_key_b64url()).unwrap();
    let id = receipt_key_id(&pk);
    assert_eq!(id.len(), 3 + 16);
    assert_eq!(&id[3..], &sha256_hex(&pk)[..16]);

    let pkcs8 = ReceiptSigner::generate_pkcs8(&rng()).unwrap();
    let derived = ReceiptSigner::from_pkcs8_derived_id(&pkcs8).unwrap();
    let pk = URL_SAFE_NO_PAD.decode(derived.public_key_b64url()).unwrap();
    assert_eq!(derived.key_id(), receipt_key_id(&pk));
}

#[test]
fn signer_debug_shows_key_id_and_algorithm_only() {
    let pkcs8 = ReceiptSigner::generate_pkcs8(&rng()).unwrap();
    let s = ReceiptSigner::from_pkcs8("rk_abc", &pkcs8).unwrap();
    let dbg = format!("{s:?} {s:#?}");
    assert!(
        dbg.starts_with("ReceiptSigner { key_id: \"rk_abc\", algorithm: \"Ed25519\", .. }"),
        "{dbg}"
    );
    let seed = &pkcs8[16..48];
    for needle in [
        hex::encode(seed),
        hex::encode(&pkcs8[..]),
        URL_SAFE_NO_PAD.encode(seed)[..40].to_owned(),
        STANDARD.encode(seed)[..40].to_owned(),
        format!("{:?}", &seed[..4])
            .trim_matches(|c| c == '[' || c == ']')
            .to_owned(),
    ] {
        assert!(!dbg.contains(&needle), "debug leaks {needle}");
    }
}

/// The signer (AWS-LC) and ring make the same bytes for the same key and
/// message, so receipts signed before and after the signer changed libraries
/// cannot be told apart, and every one verifies.
#[test]
fn signatures_are_ring_s_byte_for_byte() {
    let message = br#"{"code_id":"cod_1","deposit_id":"dep_1","funder_id":"ten_f","groups_sha256":"00","redeemed_at":"2026-11-22T08:00:00.000Z","redemption_id":"red_1","scopes":["applicant","risk"],"v":1}"#;
    for _ in 0..16 {
        let pkcs8 = ReceiptSigner::generate_pkcs8(&rng()).unwrap();
        let s = ReceiptSigner::from_pkcs8_derived_id(&pkcs8).unwrap();
        let ring_pair = ring::signature::Ed25519KeyPair::from_pkcs8(&pkcs8).unwrap();
        for len in [0, 1, 64, message.len()] {
            let m = &message[..len];
            let ours = s.sign_b64url(m);
            assert_eq!(ours, URL_SAFE_NO_PAD.encode(ring_pair.sign(m).as_ref()));
            verify_receipt_signature(&s.public_key_b64url(), m, &ours).unwrap();
        }
    }
}
