//! Several `dzl-vault` replicas over one PostgreSQL database (issue 7):
//! concurrent redemptions of one code spread across them succeed once,
//! deposits on one redeem on another, a nonce used on one is refused on
//! another, rate limits and key rotation hold across them. Skipped (loudly)
//! unless the suite runs on PostgreSQL.

use dzl_vault_server::startup::Application;
use serde_json::json;

use crate::helpers::*;

/// Another replica over the same database as `app`.
async fn replica(app: &TestApp) -> String {
    // Replicas run one configuration.
    let mut settings = app.state.settings.clone();
    settings.server.bind = "127.0.0.1:0".into();
    settings.server.workers = 2;
    let replica = Application::build(settings, app.root.clone()).expect("replica");
    let base = format!("http://127.0.0.1:{}", replica.port());
    actix_web::rt::spawn(replica.run());
    base
}

fn skip() -> bool {
    if postgres_url().is_none() {
        // Straight to stderr, past the test harness's capture, so it shows.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: replicas need DZL_TEST_BACKEND=postgres and DZL_TEST_PG_URL"
        );
        return true;
    }
    false
}

#[actix_web::test]
async fn replicas_share_codes_nonces_limits_and_keys() {
    if skip() {
        return;
    }
    let app = spawn_app().await;
    let bases = [app.base.clone(), replica(&app).await, replica(&app).await];

    // Deposit on replica 0; 30 concurrent redemptions spread over all three.
    let dep = app.deposit("REP-1", &["applicant", "risk"], 3600).await;
    let code = dep["codes"][0]["code"].as_str().unwrap().to_owned();
    let mut tasks = Vec::new();
    for i in 0..30 {
        let client = dzl_sdk::RawClient::new(bases[i % 3].clone(), Some(app.funder.signer.clone()));
        let body =
            serde_json::to_vec(&json!({"code": code, "purpose": "credit_application"})).unwrap();
        tasks.push(tokio::spawn(async move {
            client
                .send("POST", "/v1/redemptions", &body)
                .await
                .unwrap()
                .status
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        29,
        "{statuses:?}"
    );

    // Deposit on replica 1, redeem on replica 2.
    let p1 = dzl_sdk::RawClient::new(bases[1].clone(), Some(app.platform.signer.clone()));
    let body = deposit_body(
        "REP-2",
        json!([{"funder_id": app.funder.id, "scopes": ["risk"]}]),
    );
    let r = p1
        .send("POST", "/v1/deposits", &serde_json::to_vec(&body).unwrap())
        .await
        .unwrap();
    assert_eq!(r.status, 201);
    let code = r.json()["codes"][0]["code"].as_str().unwrap().to_owned();
    let f2 = dzl_sdk::RawClient::new(bases[2].clone(), Some(app.funder.signer.clone()));
    let body = serde_json::to_vec(&json!({"code": code, "purpose": "credit_application"})).unwrap();
    let r = f2.send("POST", "/v1/redemptions", &body).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["risk"]["score"], 712);

    // A request accepted by replica 0 is a replay on replica 1.
    let status_path = format!("/v1/codes/{}", dep["codes"][0]["code_id"].as_str().unwrap());
    let h = app.platform.signer.sign("GET", &status_path, b"");
    let r0 = dzl_sdk::RawClient::new(bases[0].clone(), None)
        .send_with("GET", &status_path, b"", Some(h.clone()))
        .await
        .unwrap();
    assert_eq!(r0.status, 200);
    let r1 = dzl_sdk::RawClient::new(bases[1].clone(), None)
        .send_with("GET", &status_path, b"", Some(h))
        .await
        .unwrap();
    assert_problem(&r1, 401, "nonce_replayed");

    // A key rotation is seen by every replica: new deposits on each redeem.
    off_rt(|| dzl_store::admin::rotate_keys(&*app.state.store, &app.root, "cli:test")).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    for (i, base) in bases.iter().enumerate() {
        let p = dzl_sdk::RawClient::new(base.clone(), Some(app.platform.signer.clone()));
        let body = deposit_body(
            &format!("REP-K{i}"),
            json!([{"funder_id": app.funder.id, "scopes": ["applicant"]}]),
        );
        let r = p
            .send("POST", "/v1/deposits", &serde_json::to_vec(&body).unwrap())
            .await
            .unwrap();
        assert_eq!(r.status, 201);
        let code = r.json()["codes"][0]["code"].as_str().unwrap().to_owned();
        let f =
            dzl_sdk::RawClient::new(bases[(i + 1) % 3].clone(), Some(app.funder.signer.clone()));
        let body =
            serde_json::to_vec(&json!({"code": code, "purpose": "credit_application"})).unwrap();
        assert_eq!(
            f.send("POST", "/v1/redemptions", &body)
                .await
                .unwrap()
                .status,
            200
        );
    }
    let keks = off_rt(|| app.state.store.keks()).unwrap();
    assert_eq!(
        keks.iter().find(|k| k.version == 2).map(|k| k.data_keys),
        Some(6),
        "3 deposits × 2 keys under v2"
    );
}

#[actix_web::test]
async fn rate_limits_and_guessing_suspension_hold_across_replicas() {
    if skip() {
        return;
    }
    let mut opts = Options::default();
    opts.settings.limits.failed_redemptions_per_minute = 100;
    opts.settings.limits.failed_redemptions_per_hour = 6;
    let app = spawn_app_with(opts).await;
    let other = replica(&app).await;
    // Guessing on two replicas adds up: 3 + 3 failures suspend the funder.
    let guess = |i: usize| format!("ac_{}", format!("{i:0>32}").replace('0', "A"));
    for (i, base) in [app.base.clone(), other.clone()]
        .iter()
        .cycle()
        .take(6)
        .enumerate()
    {
        let f = dzl_sdk::RawClient::new(base.clone(), Some(app.funder.signer.clone()));
        let body = serde_json::to_vec(&json!({"code": guess(i), "purpose": "credit_application"}))
            .unwrap();
        assert_eq!(
            f.send("POST", "/v1/redemptions", &body)
                .await
                .unwrap()
                .status,
            404
        );
    }
    let mut suspended = false;
    for _ in 0..30 {
        let f = dzl_sdk::RawClient::new(other.clone(), Some(app.funder.signer.clone()));
        let body = serde_json::to_vec(&json!({"code": guess(99), "purpose": "credit_application"}))
            .unwrap();
        if f.send("POST", "/v1/redemptions", &body)
            .await
            .unwrap()
            .status
            == 403
        {
            suspended = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        suspended,
        "the suspension decided on one replica holds on the other"
    );
}
