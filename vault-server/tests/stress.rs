//! Exactly-once under load: 1,000 concurrent redemptions of one code against a
//! real server on port 0, repeated over several codes → exactly one 200 and
//! 999 × 409 `code_already_redeemed` each, and every attempt audited.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use dzl_crypto::RootKey;
use dzl_sdk::RawClient;
use dzl_vault_server::settings::Settings;
use dzl_vault_server::startup::Application;
use serde_json::json;

mod common;
use common::{deposit_body, provision};

/// Codes redeemed 1,000 ways each: 2 in the default (CI) run; the published
/// run sets `DZL_STRESS_CODES=5` (or more).
fn codes() -> usize {
    std::env::var("DZL_STRESS_CODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
}
const CONCURRENT: usize = 1_000;

#[actix_web::test]
async fn a_thousand_concurrent_redemptions_of_each_code_succeed_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = RootKey::generate(&dzl_crypto::SystemRandom::new()).expect("rng");
    let (platform, funder) = provision(dir.path(), &root);
    let mut settings = Settings::default();
    settings.store.data_dir = dir.path().to_owned();
    settings.server.bind = "127.0.0.1:0".into();
    settings.server.workers = 2;
    let app = Application::build(settings, root).expect("build");
    let base = format!("http://127.0.0.1:{}", app.port());
    let state = app.state();
    actix_web::rt::spawn(app.run());

    let platform_client = RawClient::new(base.clone(), Some(platform.signer.clone()));
    let started = std::time::Instant::now();
    let codes = codes();
    for round in 0..codes {
        let body =
            serde_json::to_vec(&deposit_body(&format!("STRESS-{round}"), &funder.id)).unwrap();
        let r = platform_client
            .send("POST", "/v1/deposits", &body)
            .await
            .expect("transport");
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        let dep = r.json();
        let code = dep["codes"][0]["code"].as_str().unwrap().to_owned();

        let body =
            serde_json::to_vec(&json!({"code": code, "purpose": "credit_application"})).unwrap();
        let mut tasks = Vec::with_capacity(CONCURRENT);
        for _ in 0..CONCURRENT {
            let client = RawClient::new(base.clone(), Some(funder.signer.clone()));
            let body = body.clone();
            tasks.push(tokio::spawn(async move {
                let r = client
                    .send("POST", "/v1/redemptions", &body)
                    .await
                    .expect("transport");
                let code = if r.status == 200 {
                    String::new()
                } else {
                    r.json()["code"].as_str().unwrap_or("?").to_owned()
                };
                (r.status, code)
            }));
        }
        let mut ok = 0;
        let mut conflicts = 0;
        let mut other = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                (200, _) => ok += 1,
                (409, c) if c == "code_already_redeemed" => conflicts += 1,
                x => other.push(x),
            }
        }
        assert_eq!(ok, 1, "round {round}: other answers {other:?}");
        assert_eq!(
            conflicts,
            CONCURRENT - 1,
            "round {round}: other answers {other:?}"
        );
    }
    eprintln!(
        "{codes} codes x {CONCURRENT} concurrent redemptions in {:?}",
        started.elapsed()
    );

    // Every attempt audited, exactly one per code ok.
    let store = state.store.clone();
    let entries = std::thread::spawn(move || store.audit_after(&[]).unwrap())
        .join()
        .unwrap();
    let redemptions: Vec<_> = entries
        .iter()
        .filter(|e| e.record.operation == "redemption.create")
        .collect();
    assert_eq!(redemptions.len(), codes * CONCURRENT);
    assert_eq!(
        redemptions
            .iter()
            .filter(|e| e.record.result == "ok")
            .count(),
        codes
    );
}
