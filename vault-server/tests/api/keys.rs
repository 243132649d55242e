//! Keys while serving: a rotation is picked up without a restart and old
//! and new deposits both redeem; the wrong root key never becomes ready.

use dzl_vault_server::settings::Settings;
use dzl_vault_server::startup::Application;

use crate::helpers::*;

#[actix_web::test]
async fn rotation_while_serving_keeps_old_and_new_deposits_redeemable() {
    let app = spawn_app().await;
    let old = app.deposit("ROT-1", &["applicant", "device"], 3600).await;
    let v =
        off_rt(|| dzl_store::admin::rotate_keys(&*app.state.store, &app.root, "cli:test")).unwrap();
    assert_eq!(v, 2);
    // The running server picks the new version up by itself.
    let mut active = 0;
    for _ in 0..40 {
        if let Ok(l) = app.state.loaded() {
            active = l.keys.keyring.active_version();
            if active == 2 {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(active, 2, "rotation not picked up");
    let metrics = app.anonymous().send("GET", "/metrics", b"").await.unwrap();
    assert!(String::from_utf8_lossy(&metrics.body).contains("dzl_keyring_active_version 2"));
    let new = app.deposit("ROT-2", &["applicant", "device"], 3600).await;
    // The new deposit's keys are wrapped under version 2.
    let keks = off_rt(|| app.state.store.keks()).unwrap();
    assert_eq!(
        keks[1].data_keys, 2,
        "identity and records keys of ROT-2 under v2"
    );
    assert_eq!(keks[0].data_keys, 2, "ROT-1 still under v1");
    for dep in [old, new] {
        let code = dep["codes"][0]["code"].as_str().unwrap();
        let r = app.redeem(&app.funder, code, "credit_application").await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["applicant"]["name"], NAME);
    }
}

#[actix_web::test]
async fn the_wrong_root_key_never_becomes_ready() {
    let dir = tempfile::tempdir().unwrap();
    provision(dir.path(), &new_root(), None);
    let mut settings = Settings::default();
    settings.store.data_dir = dir.path().to_owned();
    settings.server.bind = "127.0.0.1:0".into();
    settings.server.workers = 1;
    let app = Application::build(settings, new_root()).unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    actix_web::rt::spawn(app.run());
    let client = dzl_sdk::RawClient::new(base, None);
    let r = client.send("GET", "/readyz", b"").await.unwrap();
    assert_problem(&r, 503, "not_ready");
    assert_eq!(
        client.send("GET", "/healthz", b"").await.unwrap().status,
        200
    );
    let r = client.send("GET", "/v1/receipt-keys", b"").await.unwrap();
    assert_problem(&r, 503, "not_ready");
    let m = client.send("GET", "/metrics", b"").await.unwrap();
    assert!(String::from_utf8_lossy(&m.body).contains("dzl_ready 0"));
}

/// A vault moved to the other suite while it serves: the rotation takes
/// effect at once (requests signed for the old suite are refused as such,
/// receipts come in the new suite's algorithm, new deposits are sealed in
/// it), `keys reseal` seals the old deposits anew while funders keep
/// redeeming their codes, and the old suite's version then retires.
#[actix_web::test]
async fn a_vault_moves_to_the_other_suite_and_reseals_while_serving() {
    use dzl_crypto::{ReceiptAlgorithm, Suite};
    use dzl_store::admin::{self, ResealOptions};
    use serde_json::json;

    let app = spawn_app().await;
    let other = match suite() {
        Suite::Intl => Suite::Gm,
        Suite::Gm => Suite::Intl,
    };
    let grants = json!([
        {"funder_id": app.funder.id, "scopes": ["applicant", "risk"]},
        {"funder_id": app.funder.id, "scopes": ["device"]},
    ]);
    let mut codes = Vec::new();
    for i in 0..12 {
        let r = app
            .post(
                &app.platform,
                "/v1/deposits",
                &deposit_body(&format!("MV-{i}"), grants.clone()),
            )
            .await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        let v = r.json();
        codes.push([0, 1].map(|c| v["codes"][c]["code"].as_str().unwrap().to_owned()));
    }
    let store = app.state.store.clone();
    let root = app.root.clone();
    assert_eq!(
        off_rt(|| admin::rotate_keys_to(&*store, &*root, "cli:test", other)).unwrap(),
        2
    );
    for _ in 0..40 {
        if app.state.loaded().is_ok_and(|l| l.keys.suite() == other) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(app.state.loaded().unwrap().keys.suite(), other);

    // Signed as before: refused as such. Signed for the new suite: served.
    let old_deposit = deposit_body("MV-old", json!([]));
    let r = app.post(&app.platform, "/v1/deposits", &old_deposit).await;
    assert_problem(&r, 401, "unsupported_signature_algorithm");
    let moved = |t: &Tenant| Tenant {
        id: t.id.clone(),
        signer: t.signer.clone().for_suite(other),
    };
    let (platform, funder, operator) = (
        moved(&app.platform),
        moved(&app.funder),
        moved(&app.operator),
    );
    let r = app
        .post(&platform, "/v1/deposits", &deposit_body("MV-new", grants))
        .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    codes.push([0, 1].map(|c| v["codes"][c]["code"].as_str().unwrap().to_owned()));
    let keys = app
        .anonymous()
        .send("GET", "/v1/receipt-keys", b"")
        .await
        .unwrap()
        .json();
    assert_eq!(keys["suite"], other.as_str());
    let published: Vec<(String, String, String)> = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            let s = |f: &str| k[f].as_str().unwrap().to_owned();
            (s("key_id"), s("algorithm"), s("public_key"))
        })
        .collect();
    assert_eq!(published.len(), 2, "the rotation added the new suite's key");
    let redeem = async |code: &str| {
        let r = app.redeem(&funder, code, "credit_application").await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let v = r.json();
        let receipt = &v["receipt"];
        let (_, algorithm, public_key) = published
            .iter()
            .find(|(id, _, _)| receipt["key_id"] == id.as_str())
            .unwrap();
        assert_eq!(algorithm, ReceiptAlgorithm::for_suite(other).as_str());
        dzl_crypto::verify_receipt_signature_with(
            ReceiptAlgorithm::parse(algorithm).unwrap(),
            public_key,
            receipt["signed"].as_str().unwrap().as_bytes(),
            receipt["signature"].as_str().unwrap(),
        )
        .expect("the receipt verifies");
        v
    };
    // Before the reseal, an old deposit and the new one redeem.
    assert_eq!(redeem(&codes[0][0]).await["applicant"]["name"], NAME);
    assert_eq!(redeem(&codes[12][0]).await["applicant"]["name"], NAME);

    // During: every batch of one deposit takes at least 30 ms, and the
    // funder redeems meanwhile.
    let resealer = std::thread::spawn(move || {
        let keys = admin::load_keys(&*store, &*root)?;
        admin::reseal(
            &*store,
            &keys,
            &dzl_store::Call {
                actor: "cli:test".into(),
                operation: "keys.reseal",
                now: chrono::Utc::now(),
            },
            ResealOptions {
                batch_size: 1,
                wait_for_servers: true,
            },
            &mut |_, _| std::thread::sleep(std::time::Duration::from_millis(30)),
        )
    });
    let mut during = 0;
    for c in &codes[1..12] {
        let racing = !resealer.is_finished();
        assert_eq!(redeem(&c[0]).await["risk"]["score"], 712);
        during += usize::from(racing);
    }
    let report = resealer.join().unwrap().unwrap();
    assert!(during > 0, "no redemption ran during the reseal");
    assert_eq!((report.deposits_found, report.deposits_resealed), (12, 12));
    assert_eq!((report.deposits_remaining, report.failed), (0, 0));

    // After: the old suite's version retires; every second code redeems.
    let store = app.state.store.clone();
    let retired = off_rt(|| {
        store.retire_kek(
            &dzl_store::Call {
                actor: "cli:test".into(),
                operation: "keys.retire",
                now: chrono::Utc::now(),
            },
            1,
        )
    })
    .unwrap();
    assert_eq!(retired, Ok(true));
    for c in &codes {
        assert_eq!(redeem(&c[1]).await["device"]["os"], "android");
    }
    let r = app
        .post(
            &operator,
            "/v1/subject-access",
            &json!({"id_type": "resident_id", "id_number": ID_NUMBER}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["deposits"].as_array().unwrap().len(), 13);
    let store = app.state.store.clone();
    assert!(off_rt(|| store.verify_audit(&mut |_| {})).unwrap().is_ok());
}
