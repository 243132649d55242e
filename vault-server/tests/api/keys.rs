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
