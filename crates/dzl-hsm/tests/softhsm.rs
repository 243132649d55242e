//! The root key in SoftHSM2: created in the token, found again, wrapping and
//! unwrapping KEKs inside the module, refusing a wrong PIN, label or token,
//! and never giving its value out. Skipped, loudly, without SoftHSM2.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use cryptoki::object::{Attribute, AttributeInfo, AttributeType, KeyType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use dzl_crypto::{
    open_record, seal_record, CryptoError, DataKey, Kek, Keyring, RootKeyHolder, Suite,
    SystemRandom,
};
use dzl_hsm::softhsm::{SoftHsm, TEST_PIN};
use dzl_hsm::{HsmError, Pkcs11Root, Pkcs11Uri};

const TOKEN: &str = "dzl-test";

/// One SoftHSM2 for the whole test binary: the module reads SOFTHSM2_CONF
/// once, when it is initialised.
fn hsm(test: &str) -> Option<&'static SoftHsm> {
    dzl_hsm::softhsm::shared(&[TOKEN, "dzl-other", REFUSALS], test)
}

/// A session with the user logged in on the token labelled `label`.
fn user_session(hsm: &SoftHsm, label: &str) -> cryptoki::session::Session {
    let ctx = dzl_hsm::module(&hsm.module).unwrap();
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label().trim_end() == label)
        .unwrap();
    let session = ctx.open_rw_session(slot).unwrap();
    match session.login(UserType::User, Some(&AuthPin::from(TEST_PIN))) {
        Ok(())
        | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {
            session
        }
        Err(e) => panic!("login: {e}"),
    }
}

fn uri(hsm: &SoftHsm, object: &str) -> Pkcs11Uri {
    Pkcs11Uri::parse(&hsm.uri(TOKEN, object)).unwrap()
}

/// The token only the refusals test logs in to: PKCS#11 keeps one login
/// per token for the whole process, so a PIN is checked only while the
/// process has not logged in to that token already.
const REFUSALS: &str = "dzl-refusals";

#[test]
fn the_key_is_created_once_and_found_again() {
    let Some(hsm) = hsm("the_key_is_created_once_and_found_again") else {
        return;
    };
    let u = uri(hsm, "created-once");
    assert!(matches!(
        Pkcs11Root::open(&u).unwrap_err(),
        HsmError::KeyNotFound { .. }
    ));
    let (first, created) = Pkcs11Root::open_or_create(&u).unwrap();
    assert!(created);
    let (again, created) = Pkcs11Root::open_or_create(&u).unwrap();
    assert!(!created);
    let opened = Pkcs11Root::open(&u).unwrap();
    assert_eq!(first.fingerprint(), again.fingerprint());
    assert_eq!(first.fingerprint(), opened.fingerprint());
    assert_eq!(first.fingerprint().len(), 16);
    // Another key has another fingerprint.
    let (other, _) = Pkcs11Root::open_or_create(&uri(hsm, "created-once-2")).unwrap();
    assert_ne!(other.fingerprint(), first.fingerprint());
}

/// What the module wraps, it unwraps, into the same KEK; the stored form is
/// the vault's AES-256-GCM envelope (tag 0x01); any changed byte, other
/// version or other key is refused.
#[test]
fn keks_are_wrapped_and_unwrapped_inside_the_module() {
    let Some(hsm) = hsm("keks_are_wrapped_and_unwrapped_inside_the_module") else {
        return;
    };
    let rng = SystemRandom::new();
    let (root, _) = Pkcs11Root::open_or_create(&uri(hsm, "wraps")).unwrap();
    for suite in Suite::ALL {
        let dk = DataKey::generate_for(suite, &rng).unwrap();
        let rec = seal_record(&dk, "dep_1", "risk", b"{}", &rng).unwrap();
        let original = Kek::generate_for(7, suite, &rng).unwrap();
        let stored = root.wrap_kek(&original).unwrap();
        assert_eq!(&stored[..2], &[0x01, 0x01], "an AES-256-GCM envelope");
        let back = root.unwrap_kek(7, suite, &stored).unwrap();
        assert_eq!((back.version(), back.suite()), (7, suite));
        // The unwrapped KEK is the same key: it opens what the original wrapped.
        let ring_a = Keyring::new(vec![original], 7).unwrap();
        let w = ring_a.wrap_data_key(&dk, "dep_1", "records").unwrap();
        let ring_b = Keyring::new(vec![back], 7).unwrap();
        let dk_back = ring_b.unwrap_data_key(&w, "dep_1", "records").unwrap();
        assert!(open_record(&dk_back, "dep_1", "risk", &rec).is_ok());

        assert_eq!(
            root.unwrap_kek(8, suite, &stored).unwrap_err(),
            CryptoError::Integrity
        );
        for i in [0usize, 1, 2, 13, 14, stored.len() - 1] {
            let mut bad = stored.clone();
            bad[i] ^= 0x01;
            let err = root.unwrap_kek(7, suite, &bad).unwrap_err();
            assert!(
                matches!(
                    err,
                    CryptoError::Integrity
                        | CryptoError::UnknownAlgorithm(_)
                        | CryptoError::UnsupportedFormat(_)
                ),
                "byte {i}: {err:?}"
            );
        }
        let (other, _) = Pkcs11Root::open_or_create(&uri(hsm, "wraps-other")).unwrap();
        assert_eq!(
            other.unwrap_kek(7, suite, &stored).unwrap_err(),
            CryptoError::Integrity
        );
    }
    // A keyring opened through the module, as the server opens it.
    let kek = Kek::generate_for(1, Suite::Gm, &rng).unwrap();
    let stored = root.wrap_kek(&kek).unwrap();
    let holder: Box<dyn RootKeyHolder> = Box::new(root);
    let ring = Keyring::open(
        &holder,
        &[dzl_crypto::StoredKek {
            version: 1,
            suite: Suite::Gm,
            wrapped: &stored,
        }],
        1,
    )
    .unwrap();
    assert_eq!(ring.active_suite(), Suite::Gm);
}

fn refusals(hsm: &SoftHsm, object: &str) -> Pkcs11Uri {
    Pkcs11Uri::parse(&hsm.uri(REFUSALS, object)).unwrap()
}

#[test]
fn a_wrong_pin_label_or_token_is_refused_with_a_clear_message() {
    let Some(hsm) = hsm("a_wrong_pin_label_or_token_is_refused_with_a_clear_message") else {
        return;
    };
    Pkcs11Root::open_or_create(&refusals(hsm, "refusals")).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let wrong_pin = dir.path().join("wrong.pin");
    std::fs::write(&wrong_pin, "11112222\n").unwrap();
    let mut u = refusals(hsm, "refusals");
    u.pin = dzl_hsm::PinSource::File(wrong_pin);
    let err = Pkcs11Root::open(&u).unwrap_err();
    assert!(matches!(err, HsmError::WrongPin(_)), "{err:?}");
    let msg = err.to_string();
    assert_eq!(msg, "the PKCS#11 token \"dzl-refusals\" refused the PIN");
    assert!(!msg.contains("11112222") && !msg.contains(TEST_PIN));

    let err = Pkcs11Root::open(&refusals(hsm, "no-such-key")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no secret key labelled \"no-such-key\" in the PKCS#11 token \"dzl-refusals\""
    );

    let other_token = Pkcs11Uri::parse(&hsm.uri("no-such-token", "refusals")).unwrap();
    assert_eq!(
        Pkcs11Root::open(&other_token).unwrap_err().to_string(),
        "no PKCS#11 token \"no-such-token\" in the module (is the token initialised?)"
    );

    let mut u = refusals(hsm, "refusals");
    u.module_path = dir.path().join("libnothing.so");
    let err = Pkcs11Root::open(&u).unwrap_err().to_string();
    assert!(
        err.starts_with("PKCS#11 module ") && err.contains("loading"),
        "{err}"
    );
}

/// The root key's value cannot be read: C_GetAttributeValue of CKA_VALUE
/// is refused as sensitive, and the key says it is not extractable.
#[test]
fn the_key_object_is_sensitive_and_not_extractable() {
    let Some(hsm) = hsm("the_key_object_is_sensitive_and_not_extractable") else {
        return;
    };
    let u = uri(hsm, "never-leaves");
    Pkcs11Root::open_or_create(&u).unwrap();

    let session = user_session(hsm, TOKEN);
    let keys = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(b"never-leaves".to_vec()),
        ])
        .unwrap();
    assert_eq!(keys.len(), 1);
    let info = session
        .get_attribute_info(keys[0], &[AttributeType::Value])
        .unwrap();
    assert!(matches!(info[0], AttributeInfo::Sensitive), "{info:?}");
    let attrs = session
        .get_attributes(
            keys[0],
            &[
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::NeverExtractable,
                AttributeType::Token,
            ],
        )
        .unwrap();
    for a in attrs {
        match a {
            Attribute::Sensitive(v) | Attribute::NeverExtractable(v) | Attribute::Token(v) => {
                assert!(v, "{a:?}")
            }
            Attribute::Extractable(v) => assert!(!v),
            other => panic!("{other:?}"),
        }
    }
}

/// A key someone made extractable is no root key.
#[test]
fn an_extractable_key_is_refused() {
    let Some(hsm) = hsm("an_extractable_key_is_refused") else {
        return;
    };
    let session = user_session(hsm, "dzl-other");
    session
        .generate_key(
            &cryptoki::mechanism::Mechanism::AesKeyGen,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::ValueLen(32.into()),
                Attribute::Label(b"leaky".to_vec()),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(false),
                Attribute::Extractable(true),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
            ],
        )
        .unwrap();
    let u = Pkcs11Uri::parse(&hsm.uri("dzl-other", "leaky")).unwrap();
    let err = Pkcs11Root::open(&u).unwrap_err();
    assert!(matches!(err, HsmError::UnfitKey { .. }), "{err:?}");
    assert!(err.to_string().contains("not sensitive"), "{err}");
}

#[test]
fn debug_names_the_key_and_nothing_secret() {
    let Some(hsm) = hsm("debug_names_the_key_and_nothing_secret") else {
        return;
    };
    let (root, _) = Pkcs11Root::open_or_create(&uri(hsm, "debug")).unwrap();
    let dbg = format!("{root:?}");
    assert!(
        dbg.contains("debug") && dbg.contains(&root.fingerprint()),
        "{dbg}"
    );
    assert!(!dbg.contains(TEST_PIN));
}
