//! What must survive a restart of the real `dzl-vault` binary, beyond the
//! data: a request signed ahead of the server's clock cannot be replayed
//! after the restart, and a funder's redemptions of unknown codes keep
//! counting towards its suspension.

use std::process::Command;

use dzl_sdk::RawClient;
use serde_json::json;

use crate::common::{start, wait_ready, Server};
use crate::helpers::*;

/// Stops the server as an operator would.
fn stop(server: Server) {
    let mut child = server.child;
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    child.wait().unwrap();
}

#[actix_web::test]
#[allow(clippy::zombie_processes)] // every child is stopped and waited for
async fn a_request_signed_ahead_of_the_clock_is_not_replayed_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("server.log");
    let root = new_root();
    let tenants = provision(dir.path(), &root, None);
    let (platform, funder) = (&tenants[0], &tenants[2]);

    let server = start(dir.path(), &root, &log, &[]);
    wait_ready(&server.base).await;
    let pc = RawClient::new(server.base.clone(), Some(platform.signer.clone()));
    let body = serde_json::to_vec(&deposit_body("AHEAD-1", json!([]))).unwrap();
    let r = pc.send("POST", "/v1/deposits", &body).await.unwrap();
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let deposit = r.json()["deposit_id"].as_str().unwrap().to_owned();

    // Signed 200 s ahead: inside the accepted skew.
    let path = format!("/v1/deposits/{deposit}/codes");
    let body = serde_json::to_vec(&json!({"funder_id": funder.id, "scopes": ["risk"]})).unwrap();
    let ahead = chrono::Utc::now().timestamp() + 200;
    let headers = platform
        .signer
        .sign_with("POST", &path, &body, ahead, &dzl_sdk::fresh_nonce());
    let r = pc
        .send_with("POST", &path, &body, Some(headers.clone()))
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let r = pc
        .send_with("POST", &path, &body, Some(headers.clone()))
        .await
        .unwrap();
    assert_problem(&r, 401, "nonce_replayed");

    stop(server);
    let server = start(dir.path(), &root, &log, &[]);
    wait_ready(&server.base).await;
    let pc = RawClient::new(server.base.clone(), Some(platform.signer.clone()));
    let r = pc
        .send_with("POST", &path, &body, Some(headers))
        .await
        .unwrap();
    assert_problem(&r, 401, "nonce_replayed");
    stop(server);
}

#[actix_web::test]
#[allow(clippy::zombie_processes)] // every child is stopped and waited for
async fn redemptions_of_unknown_codes_count_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("server.log");
    let root = new_root();
    let tenants = provision(dir.path(), &root, None);
    let funder = &tenants[2];
    let limits: [(&str, &std::ffi::OsStr); 2] = [
        (
            "DZL__LIMITS__FAILED_REDEMPTIONS_PER_MINUTE",
            std::ffi::OsStr::new("45"),
        ),
        (
            "DZL__LIMITS__FAILED_REDEMPTIONS_PER_HOUR",
            std::ffi::OsStr::new("45"),
        ),
    ];
    let guess = |i: usize| {
        let code = format!("ac_{}", format!("{i:0>32}").replace('0', "B"));
        serde_json::to_vec(&json!({"code": code, "purpose": "credit_application"})).unwrap()
    };

    let server = start(dir.path(), &root, &log, &limits);
    wait_ready(&server.base).await;
    let fc = RawClient::new(server.base.clone(), Some(funder.signer.clone()));
    for i in 0..40 {
        let r = fc.send("POST", "/v1/redemptions", &guess(i)).await.unwrap();
        assert_problem(&r, 404, "code_not_found");
    }
    stop(server);

    let server = start(dir.path(), &root, &log, &limits);
    wait_ready(&server.base).await;
    let fc = RawClient::new(server.base.clone(), Some(funder.signer.clone()));
    for i in 40..45 {
        let r = fc.send("POST", "/v1/redemptions", &guess(i)).await.unwrap();
        assert_problem(&r, 404, "code_not_found");
    }
    // The 45th in the hour suspended the funder.
    let r = fc
        .send("POST", "/v1/redemptions", &guess(45))
        .await
        .unwrap();
    assert_problem(&r, 403, "tenant_suspended");
    stop(server);
}
