//! Fault injection (issue 6, item 3): the store on a small tmpfs that the
//! test fills up. Every answer while the disk is full is either a real
//! success or 503 problem+json — never a 500 or another 2xx —, nothing
//! half-written survives, and the vault
//! recovers when space returns: every acknowledged deposit redeems exactly
//! once, both databases pass `integrity_check`, the audit chain verifies.
//! Needs root (mount); skipped, loudly, otherwise.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::path::Path;
use std::process::Command;

use dzl_crypto::RootKey;
use dzl_sdk::RawClient;

use dzl_vault_server::settings::Settings;
use dzl_vault_server::startup::Application;
use serde_json::json;

mod common;
use common::{deposit_body, provision};

fn sh(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .status()
        .is_ok_and(|s| s.success())
}

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = sh(&["umount", "-l", self.0.to_str().unwrap()]);
    }
}

/// Fills the file system at `dir` until a write fails.
fn fill(dir: &Path) {
    let mut f = std::fs::File::create(dir.join("filler")).unwrap();
    let block = vec![0u8; 16 * 1024];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
}

#[actix_web::test]
async fn a_full_disk_answers_503_loses_nothing_and_recovers() {
    let base = tempfile::tempdir().unwrap();
    let mnt = base.path().join("store");
    std::fs::create_dir_all(&mnt).unwrap();
    if !sh(&[
        "mount",
        "-t",
        "tmpfs",
        "-o",
        "size=3m",
        "tmpfs",
        mnt.to_str().unwrap(),
    ]) {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: fault injection needs to mount a tmpfs (root)"
        );
        return;
    }
    let _mount = Mount(mnt.clone());
    let root = RootKey::generate(&dzl_crypto::SystemRandom::new()).unwrap();
    let (platform, funder) = provision(&mnt, &root);
    let mut settings = Settings::default();
    settings.store.data_dir = mnt.clone();
    settings.server.bind = "127.0.0.1:0".into();
    settings.server.workers = 2;
    let app =
        Application::build(settings, RootKey::from_base64(&root.to_base64()).unwrap()).unwrap();
    let url = format!("http://127.0.0.1:{}", app.port());
    let state = app.state();
    actix_web::rt::spawn(app.run());
    let p = RawClient::new(url.clone(), Some(platform.signer.clone()));
    let f = RawClient::new(url.clone(), Some(funder.signer.clone()));

    let mut acknowledged = Vec::new();
    let mut refused = 0;
    let deposit =
        |i: usize| serde_json::to_vec(&deposit_body(&format!("F-{i}"), &funder.id)).unwrap();

    // Full disk: deposits until the store refuses; every answer is 201 or 503.
    fill(&mnt);
    for i in 0..400 {
        let r = p.send("POST", "/v1/deposits", &deposit(i)).await.unwrap();
        match r.status {
            201 => acknowledged.push(r.json()["codes"][0]["code"].as_str().unwrap().to_owned()),
            503 => {
                assert_eq!(
                    r.json()["code"],
                    "storage_unavailable",
                    "{}",
                    String::from_utf8_lossy(&r.body)
                );
                refused += 1;
                if refused >= 5 {
                    break;
                }
            }
            other => panic!(
                "a full disk answered {other}: {}",
                String::from_utf8_lossy(&r.body)
            ),
        }
    }
    assert!(
        refused >= 5,
        "the disk never filled up ({} deposits accepted)",
        acknowledged.len()
    );
    // Redeeming while full: a success is a real one, else 503 and the code stays issued.
    let mut redeemed = Vec::new();
    if let Some(code) = acknowledged.first() {
        let body =
            serde_json::to_vec(&json!({"code": code, "purpose": "credit_application"})).unwrap();
        let r = f.send("POST", "/v1/redemptions", &body).await.unwrap();
        assert!(r.status == 200 || r.status == 503, "{}", r.status);
        if r.status == 200 {
            redeemed.push(code.clone());
        }
    }

    assert_eq!(
        RawClient::new(url.clone(), None)
            .send("GET", "/healthz", b"")
            .await
            .unwrap()
            .status,
        200
    );

    // Space returns: the vault recovers by itself.
    std::fs::remove_file(mnt.join("filler")).unwrap();
    let mut recovered = false;
    for i in 2000..2050 {
        let r = p.send("POST", "/v1/deposits", &deposit(i)).await.unwrap();
        if r.status == 201 {
            acknowledged.push(r.json()["codes"][0]["code"].as_str().unwrap().to_owned());
            recovered = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(recovered, "the vault did not recover when space returned");

    // Nothing acknowledged was lost; nothing redeems twice.
    for code in &acknowledged {
        let body =
            serde_json::to_vec(&json!({"code": code, "purpose": "credit_application"})).unwrap();
        let r = f.send("POST", "/v1/redemptions", &body).await.unwrap();
        if redeemed.contains(code) {
            assert_eq!(r.status, 409);
        } else {
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        }
    }
    let store = state.store.clone();
    let verified = std::thread::spawn(move || store.verify_audit(&mut |_| {}))
        .join()
        .unwrap()
        .unwrap();
    assert!(verified.is_ok(), "{verified:?}");
    for db in [
        dzl_store::sqlite::vault_db(&mnt),
        dzl_store::sqlite::identity_db(&mnt),
    ] {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let ok: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok", "{}", db.display());
    }
}
