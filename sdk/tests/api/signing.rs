//! The contract's signing vectors (`crates/dzl-types/tests/vectors/`),
//! through the SDK's signer.

use std::path::PathBuf;

use dzl_sdk::Signer;

#[test]
fn contract_signing_vectors() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/dzl-types/tests/vectors/signing-vectors.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} must be readable: {e}", path.display()));
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let vectors = doc["vectors"].as_array().unwrap();
    assert!(!vectors.is_empty());
    for t in vectors {
        let s = |k: &str| t[k].as_str().unwrap().to_owned();
        let signer = Signer::new(s("key_id"), s("secret"));
        let h = signer.sign_with(
            &s("method"),
            &s("path_and_query"),
            s("body_utf8").as_bytes(),
            t["timestamp"].as_i64().unwrap(),
            &s("nonce"),
        );
        assert_eq!(h.signature, s("signature"), "{}", s("canonical"));
        assert_eq!(h.key_id, s("key_id"));
        assert_eq!(h.nonce, s("nonce"));
        assert_eq!(h.timestamp, t["timestamp"].as_i64().unwrap());
    }
}

#[test]
fn fresh_nonces_are_valid_and_never_repeat() {
    let mut seen = std::collections::HashSet::new();
    for _ in 0..1000 {
        let n = dzl_sdk::fresh_nonce();
        assert!(dzl_sdk::dzl_types::signing::valid_nonce(&n), "{n}");
        assert!(seen.insert(n));
    }
}

#[test]
fn signing_now_uses_the_system_clock() {
    let h = Signer::new("k", "s").sign("GET", "/v1/codes/x", b"");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((h.timestamp - now).abs() <= 2);
    assert!(!format!("{:?}", Signer::new("k", "top-secret")).contains("top-secret"));
}
