//! SM2 receipts: the GB/T 32918.5 example, the GB/T 35276 user id,
//! tampering, key encodings.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use dzl_crypto::{
    receipt_key_id, verify_receipt_signature, verify_receipt_signature_with, CryptoError,
    ReceiptAlgorithm, ReceiptSigner, Suite, SM2_DEFAULT_USER_ID,
};
use sm2::dsa::signature::hazmat::PrehashVerifier as _;
use sm2::dsa::signature::Signer as _;
use sm2::pkcs8::EncodePrivateKey as _;

use crate::helpers::{assert_every_flip_fails, rng};

/// GB/T 32918.5-2017 appendix A (GM/T 0003.5-2012 A.2): a signature over
/// "message digest" by user id 1234567812345678 on the recommended curve.
const STD_D: &str = "3945208f7b2144b13f36e38ac6d39f95889393692860b51a42fb81ef4df7c5b8";
const STD_X: &str = "09f9df311e5421a150dd7d161e4bc5c672179fad1833fc076bb08ff356f35020";
const STD_Y: &str = "ccea490ce26775a52dc6ea718cc1aa600aed05fbf35e084a6632f6072da9ad13";
const STD_MSG: &[u8] = b"message digest";
/// e = SM3(Z_A || M), as the standard prints it.
const STD_E: &str = "f0b43e94ba45accaace692ed534382eb17e6ab5a19ce7b31f4486fdfc0d28640";
const STD_R: &str = "f5a03b0648d2c4630eeac513e1bb81a15944da3827d5b74143ac7eaceee720b3";
const STD_S: &str = "b1b6aa29df212fd8763182bc0d421ca1bb9038fd1f7f42d4840b69c485bbc1aa";

fn b64(hex_str: &str) -> String {
    URL_SAFE_NO_PAD.encode(hex::decode(hex_str).unwrap())
}

fn std_public() -> String {
    b64(&format!("04{STD_X}{STD_Y}"))
}

fn std_signature() -> String {
    b64(&format!("{STD_R}{STD_S}"))
}

/// The standard's private key as the PKCS#8 document the vault stores.
fn std_pkcs8() -> Vec<u8> {
    let secret = sm2::SecretKey::from_slice(&hex::decode(STD_D).unwrap()).unwrap();
    secret.to_pkcs8_der().unwrap().as_bytes().to_vec()
}

fn sm2_signer() -> ReceiptSigner {
    let doc = ReceiptSigner::generate_pkcs8_for(Suite::Gm, &rng()).unwrap();
    ReceiptSigner::from_pkcs8_derived_id(&doc).unwrap()
}

#[test]
fn the_standards_signature_verifies() {
    assert_eq!(SM2_DEFAULT_USER_ID, "1234567812345678");
    verify_receipt_signature_with(
        ReceiptAlgorithm::Sm2,
        &std_public(),
        STD_MSG,
        &std_signature(),
    )
    .unwrap();
    // The digest e of the standard, over Z_A of the default user id.
    let vk = sm2::dsa::VerifyingKey::from_sec1_bytes(
        SM2_DEFAULT_USER_ID,
        &hex::decode(format!("04{STD_X}{STD_Y}")).unwrap(),
    )
    .unwrap();
    let sig =
        sm2::dsa::Signature::from_slice(&hex::decode(format!("{STD_R}{STD_S}")).unwrap()).unwrap();
    vk.verify_prehash(&hex::decode(STD_E).unwrap(), &sig)
        .unwrap();
    // Any other message, or the signature's halves swapped, does not.
    for (msg, sig) in [
        (&b"message digesT"[..], std_signature()),
        (STD_MSG, b64(&format!("{STD_S}{STD_R}"))),
    ] {
        assert_eq!(
            verify_receipt_signature_with(ReceiptAlgorithm::Sm2, &std_public(), msg, &sig)
                .unwrap_err(),
            CryptoError::Integrity
        );
    }
}

/// The standard's key loaded as the vault loads a receipt key: its public
/// key is the standard's, and what it signs verifies. The `sm2` crate's
/// nonce cannot be set from outside, so the standard's own k is not
/// replayed; its signature is checked above instead.
#[test]
fn the_standards_key_signs_as_a_receipt_key() {
    let signer = ReceiptSigner::from_pkcs8_derived_id(&std_pkcs8()).unwrap();
    assert_eq!(signer.algorithm(), ReceiptAlgorithm::Sm2);
    assert_eq!(signer.public_key_b64url(), std_public());
    assert_eq!(
        signer.key_id(),
        receipt_key_id(&hex::decode(format!("04{STD_X}{STD_Y}")).unwrap())
    );
    let a = signer.sign_b64url(STD_MSG);
    let b = signer.sign_b64url(STD_MSG);
    assert_eq!(URL_SAFE_NO_PAD.decode(&a).unwrap().len(), 64);
    // The nonce is fresh each time (hedged with OS randomness).
    assert_ne!(a, b);
    for sig in [&a, &b] {
        verify_receipt_signature_with(ReceiptAlgorithm::Sm2, &std_public(), STD_MSG, sig).unwrap();
    }
}

/// Z_A binds the user id: a signature made under another id (the
/// `ALICE123@YAHOO.COM` of GB/T 32918.2's examples) does not verify as a
/// receipt.
#[test]
fn a_signature_under_another_user_id_is_refused() {
    let secret = sm2::SecretKey::from_slice(&hex::decode(STD_D).unwrap()).unwrap();
    let other = sm2::dsa::SigningKey::new("ALICE123@YAHOO.COM", &secret).unwrap();
    let sig: sm2::dsa::Signature = other.sign(STD_MSG);
    assert_eq!(
        verify_receipt_signature_with(
            ReceiptAlgorithm::Sm2,
            &std_public(),
            STD_MSG,
            &URL_SAFE_NO_PAD.encode(sig.to_bytes())
        )
        .unwrap_err(),
        CryptoError::Integrity
    );
}

#[test]
fn generated_sm2_keys_sign_and_verify() {
    let s = sm2_signer();
    assert_eq!(s.algorithm(), ReceiptAlgorithm::Sm2);
    let pk = URL_SAFE_NO_PAD.decode(s.public_key_b64url()).unwrap();
    assert_eq!((pk.len(), pk[0]), (65, 0x04));
    assert!(s.key_id().starts_with("rk_") && s.key_id().len() == 19);
    let msg = br#"{"redemption_id":"red_1"}"#;
    let sig = s.try_sign_b64url(msg).unwrap();
    verify_receipt_signature_with(ReceiptAlgorithm::Sm2, &s.public_key_b64url(), msg, &sig)
        .unwrap();
    // Another key does not verify it.
    assert_eq!(
        verify_receipt_signature_with(
            ReceiptAlgorithm::Sm2,
            &sm2_signer().public_key_b64url(),
            msg,
            &sig
        )
        .unwrap_err(),
        CryptoError::Integrity
    );
}

#[test]
fn every_flipped_signature_byte_is_refused() {
    let s = sm2_signer();
    let msg = b"receipt";
    let sig = URL_SAFE_NO_PAD.decode(s.sign_b64url(msg)).unwrap();
    let pk = s.public_key_b64url();
    let tried = assert_every_flip_fails(&sig, |bad| {
        verify_receipt_signature_with(
            ReceiptAlgorithm::Sm2,
            &pk,
            msg,
            &URL_SAFE_NO_PAD.encode(bad),
        )
    });
    assert_eq!(tried, 3 * 64);
}

#[test]
fn malformed_signatures_are_integrity_and_malformed_keys_bad_key_material() {
    let s = sm2_signer();
    let pk = s.public_key_b64url();
    let sig = URL_SAFE_NO_PAD.decode(s.sign_b64url(b"m")).unwrap();
    for bad_sig in [
        String::new(),
        "not base64url!".to_owned(),
        URL_SAFE_NO_PAD.encode(&sig[..63]),
        URL_SAFE_NO_PAD.encode([&sig[..], &[0]].concat()),
        URL_SAFE_NO_PAD.encode([0u8; 64]),
    ] {
        assert_eq!(
            verify_receipt_signature_with(ReceiptAlgorithm::Sm2, &pk, b"m", &bad_sig).unwrap_err(),
            CryptoError::Integrity,
            "{bad_sig:?}"
        );
    }
    let pk_bytes = URL_SAFE_NO_PAD.decode(&pk).unwrap();
    let mut off_curve = pk_bytes.clone();
    off_curve[64] ^= 0x01;
    for bad_key in [
        URL_SAFE_NO_PAD.encode(&pk_bytes[..33]),
        URL_SAFE_NO_PAD.encode(&off_curve),
        URL_SAFE_NO_PAD.encode([0u8; 65]),
        "!".to_owned(),
    ] {
        assert_eq!(
            verify_receipt_signature_with(
                ReceiptAlgorithm::Sm2,
                &bad_key,
                b"m",
                &URL_SAFE_NO_PAD.encode(&sig)
            )
            .unwrap_err(),
            CryptoError::BadKeyMaterial
        );
    }
}

/// The algorithm is part of the key: an SM2 key is not an Ed25519 key and
/// an Ed25519 signature is not an SM2 one.
#[test]
fn algorithms_do_not_cross() {
    let sm2 = sm2_signer();
    let ed = ReceiptSigner::from_pkcs8_derived_id(&ReceiptSigner::generate_pkcs8(&rng()).unwrap())
        .unwrap();
    assert_eq!(ed.algorithm(), ReceiptAlgorithm::Ed25519);
    let sig = sm2.sign_b64url(b"m");
    assert_eq!(
        verify_receipt_signature(&sm2.public_key_b64url(), b"m", &sig).unwrap_err(),
        CryptoError::BadKeyMaterial
    );
    assert_eq!(
        verify_receipt_signature_with(
            ReceiptAlgorithm::Sm2,
            &ed.public_key_b64url(),
            b"m",
            &ed.sign_b64url(b"m")
        )
        .unwrap_err(),
        CryptoError::BadKeyMaterial
    );
    for (alg, name, suite) in [
        (ReceiptAlgorithm::Ed25519, "Ed25519", Suite::Intl),
        (ReceiptAlgorithm::Sm2, "SM2", Suite::Gm),
    ] {
        assert_eq!(alg.as_str(), name);
        assert_eq!(ReceiptAlgorithm::parse(name), Some(alg));
        assert_eq!(ReceiptAlgorithm::for_suite(suite), alg);
        assert_eq!(alg.suite(), suite);
    }
    assert_eq!(ReceiptAlgorithm::parse("sm2"), None);
}

#[test]
fn sm2_signer_debug_shows_no_key() {
    let doc = std_pkcs8();
    let s = ReceiptSigner::from_pkcs8("rk_std", &doc).unwrap();
    let dbg = format!("{s:?} {s:#?}");
    assert!(dbg.contains("rk_std") && dbg.contains("SM2"), "{dbg}");
    assert!(!dbg.to_lowercase().contains(&STD_D[..16]), "{dbg}");
    assert!(!dbg.contains(&hex::encode(&doc[doc.len() - 40..])), "{dbg}");
}

#[test]
fn garbage_is_no_receipt_key() {
    for doc in [&b""[..], b"\x30\x03\x02\x01\x00", &[0u8; 138]] {
        assert_eq!(
            ReceiptSigner::from_pkcs8_derived_id(doc).unwrap_err(),
            CryptoError::BadKeyMaterial
        );
    }
}
