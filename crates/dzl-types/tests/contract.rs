//! The contract's test vectors (`tests/vectors/`, described in docs/api.md):
//! request signatures and resident id check digits. Integrations check
//! their own implementations against the same files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use dzl_types::signing;

fn contract(name: &str) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("contract file {} must be readable: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

#[test]
fn signing_vectors() {
    let v = contract("signing-vectors.json");
    let vectors = v["vectors"].as_array().unwrap();
    assert!(!vectors.is_empty());
    for t in vectors {
        let s = |k: &str| t[k].as_str().unwrap().to_owned();
        let canonical = signing::canonical(
            &s("method"),
            &s("path_and_query"),
            t["timestamp"].as_i64().unwrap(),
            &s("nonce"),
            s("body_utf8").as_bytes(),
        );
        assert_eq!(canonical, s("canonical"));
        assert_eq!(
            signing::sign(s("secret").as_bytes(), &canonical),
            s("signature")
        );
        assert!(signing::verify(
            s("secret").as_bytes(),
            &canonical,
            &s("signature")
        ));
        assert!(!signing::verify(
            b"other secret",
            &canonical,
            &s("signature")
        ));
        assert!(signing::valid_nonce(&s("nonce")));
    }
}

#[test]
fn resident_id_vectors() {
    let v = contract("resident-id-vectors.json");
    let today = chrono::NaiveDate::from_ymd_opt(2026, 11, 22).unwrap();
    for id in v["ids"]["valid"].as_array().unwrap() {
        let id = id.as_str().unwrap();
        assert!(
            dzl_types::domain::check_resident_id(id, today).is_ok(),
            "{id} should be valid"
        );
    }
    for id in v["ids"]["invalid"].as_array().unwrap() {
        let id = id.as_str().unwrap();
        assert!(
            dzl_types::domain::check_resident_id(id, today).is_err(),
            "{id} should be invalid"
        );
    }
}

#[test]
fn nonces_outside_the_alphabet_or_length_are_refused() {
    for bad in [
        "short",
        "has space 0123456789",
        "ünïcode-0123456789",
        &"a".repeat(65),
    ] {
        assert!(!signing::valid_nonce(bad), "{bad}");
    }
    assert!(signing::valid_nonce(&"a".repeat(64)));
}
