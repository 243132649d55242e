//! Fault injection (issue 6, item 3): the store on a small tmpfs that the
//! test fills up. Every answer while the disk is full is either a real
//! success or 503 problem+json — never a 500 or another 2xx —, nothing
//! half-written survives, and the vault
//! recovers when space returns: every acknowledged deposit redeems exactly
//! once, both databases pass `integrity_check`, the audit chain verifies.
//! Needs root (mount); skipped, loudly, otherwise. And the audit write
//! failing alone (a trigger refusing every audit insert): every write fails
//! closed, nothing is released or changed, and all of it succeeds once the
//! fault clears.
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

/// A vault served in-process over a freshly provisioned store in `dir`.
struct InProcess {
    url: String,
    state: actix_web::web::Data<dzl_vault_server::state::AppState>,
    funder: common::Tenant,
    /// The platform's client.
    p: RawClient,
    /// The funder's client.
    f: RawClient,
}

fn in_process(dir: &Path) -> InProcess {
    let root = RootKey::generate(&dzl_crypto::SystemRandom::new()).unwrap();
    let (platform, funder) = provision(dir, &root);
    let mut settings = Settings::default();
    settings.store.data_dir = dir.to_owned();
    settings.server.bind = "127.0.0.1:0".into();
    settings.server.workers = 2;
    let app =
        Application::build(settings, RootKey::from_base64(&root.to_base64()).unwrap()).unwrap();
    let url = format!("http://127.0.0.1:{}", app.port());
    let state = app.state();
    actix_web::rt::spawn(app.run());
    InProcess {
        p: RawClient::new(url.clone(), Some(platform.signer.clone())),
        f: RawClient::new(url.clone(), Some(funder.signer.clone())),
        url,
        state,
        funder,
    }
}

/// `PRAGMA integrity_check` is ok on both database files in `dir`.
fn assert_integrity(dir: &Path) {
    for db in [
        dzl_store::sqlite::vault_db(dir),
        dzl_store::sqlite::identity_db(dir),
    ] {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let ok: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok", "{}", db.display());
    }
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
    let InProcess {
        url,
        state,
        funder,
        p,
        f,
    } = in_process(&mnt);

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
    assert_integrity(&mnt);
}

/// Issue 6, item 3: when the audit entry cannot be written, the request
/// fails and nothing leaves: no redemption answers with data, no deposit is
/// stored, no code changes state — the audit write is in the request's
/// transaction. The fault is a trigger that makes every audit insert fail,
/// installed and removed while the server runs.
#[actix_web::test]
async fn an_audit_write_that_fails_fails_the_request_and_releases_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let InProcess {
        state,
        funder,
        p,
        f,
        ..
    } = in_process(dir.path());
    let deposit = |r: &str| serde_json::to_vec(&deposit_body(r, &funder.id)).unwrap();
    let redeem = |code: &str| {
        serde_json::to_vec(&json!({"code": code, "purpose": "credit_application"})).unwrap()
    };

    let first = p
        .send("POST", "/v1/deposits", &deposit("A-1"))
        .await
        .unwrap();
    assert_eq!(first.status, 201);
    let code = first.json()["codes"][0]["code"]
        .as_str()
        .unwrap()
        .to_owned();
    let code_id = first.json()["codes"][0]["code_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let sql = rusqlite::Connection::open(dzl_store::sqlite::vault_db(dir.path())).unwrap();
    sql.busy_timeout(std::time::Duration::from_secs(10))
        .unwrap();
    let audited = |sql: &rusqlite::Connection| -> i64 {
        sql.query_row("SELECT count(*) FROM audit", [], |r| r.get(0))
            .unwrap()
    };
    sql.execute_batch(
        "CREATE TRIGGER injected_audit_failure BEFORE INSERT ON audit
         BEGIN SELECT RAISE(ABORT, 'injected: the audit write failed'); END;",
    )
    .unwrap();
    let entries_before = audited(&sql);

    // Every kind of write fails closed: an error, never 2xx, never data.
    let canaries = ["张三", "11010519491231002X", "13912345678"];
    let attempts = [
        (
            "funder",
            "POST",
            "/v1/redemptions".to_owned(),
            redeem(&code),
        ),
        (
            "funder",
            "POST",
            "/v1/redemptions".to_owned(),
            redeem(&code),
        ),
        (
            "platform",
            "POST",
            "/v1/deposits".to_owned(),
            deposit("A-2"),
        ),
        (
            "platform",
            "POST",
            format!("/v1/codes/{code_id}/revoke"),
            vec![],
        ),
    ];
    for (who, method, path, body) in &attempts {
        let client = if *who == "funder" { &f } else { &p };
        let r = client.send(method, path, body).await.unwrap();
        let text = String::from_utf8_lossy(&r.body).into_owned();
        assert!(
            r.status >= 500,
            "{method} {path} answered {} while audit writes fail: {text}",
            r.status
        );
        assert_eq!(
            r.headers.get("content-type").unwrap(),
            "application/problem+json"
        );
        let code = r.json()["code"].as_str().unwrap_or_default().to_owned();
        assert!(
            code == "internal_error" || code == "storage_unavailable",
            "{text}"
        );
        for canary in canaries {
            assert!(!text.contains(canary), "{method} {path} leaked: {text}");
        }
    }
    assert_eq!(audited(&sql), entries_before, "no entry was written");

    // The fault clears: the code was never spent, the refused deposit never
    // stored; both now succeed exactly once.
    sql.execute_batch("DROP TRIGGER injected_audit_failure")
        .unwrap();
    let r = f
        .send("POST", "/v1/redemptions", &redeem(&code))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["applicant"]["name"], "张三");
    let again = f
        .send("POST", "/v1/redemptions", &redeem(&code))
        .await
        .unwrap();
    assert_eq!(again.status, 409);
    let second = p
        .send("POST", "/v1/deposits", &deposit("A-2"))
        .await
        .unwrap();
    assert_eq!(
        second.status,
        201,
        "{}",
        String::from_utf8_lossy(&second.body)
    );

    let store = state.store.clone();
    let verified = std::thread::spawn(move || store.verify_audit(&mut |_| {}))
        .join()
        .unwrap()
        .unwrap();
    assert!(verified.is_ok(), "{verified:?}");
}

/// Builds the LD_PRELOAD shim of `tests/faults/unwritable.c` into `dir`;
/// `None` when no C compiler is at hand.
fn build_unwritable_shim(dir: &Path) -> Option<std::path::PathBuf> {
    let out = dir.join("libunwritable.so");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/faults/unwritable.c");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let built = Command::new(cc)
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&out)
        .arg(&source)
        .arg("-ldl")
        .status()
        .is_ok_and(|s| s.success());
    built.then_some(out)
}

/// The real binary over a fresh store with the fault shim preloaded: the
/// fault is on while `flag` exists.
struct Shimmed {
    _base: tempfile::TempDir,
    data: std::path::PathBuf,
    flag: std::path::PathBuf,
    log: std::path::PathBuf,
    root: RootKey,
    platform: common::Tenant,
    funder: common::Tenant,
    env: Vec<(&'static str, std::ffi::OsString)>,
}

impl Shimmed {
    /// `None` (after a loud SKIPPED) when there is no C compiler. With
    /// `only_sync`, writes succeed and only flushes fail.
    fn new(test: &str, only_sync: bool) -> Option<Shimmed> {
        let base = tempfile::tempdir().unwrap();
        let Some(shim) = build_unwritable_shim(base.path()) else {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: {test} needs a C compiler (cc) for its LD_PRELOAD shim"
            );
            return None;
        };
        // Canonical, as the shim sees the store's files under /proc/self/fd.
        std::fs::create_dir_all(base.path().join("data")).unwrap();
        let data = base.path().join("data").canonicalize().unwrap();
        let flag = base.path().join("fault");
        let root = RootKey::generate(&dzl_crypto::SystemRandom::new()).unwrap();
        let (platform, funder) = provision(&data, &root);
        let mut env = vec![
            ("LD_PRELOAD", shim.into_os_string()),
            ("DZL_FAULT_DIR", data.clone().into_os_string()),
            ("DZL_FAULT_FLAG", flag.clone().into_os_string()),
        ];
        if only_sync {
            env.push(("DZL_FAULT_ONLY_SYNC", "1".into()));
        }
        Some(Shimmed {
            log: base.path().join("server.log"),
            _base: base,
            data,
            flag,
            root,
            platform,
            funder,
            env,
        })
    }

    /// Starts the binary; returns it once ready.
    async fn start(&self) -> common::Server {
        let env: Vec<(&str, &std::ffi::OsStr)> =
            self.env.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
        let server = common::start(&self.data, &self.root, &self.log, &env);
        common::wait_ready(&server.base).await;
        server
    }

    /// Clients of the platform and the funder.
    fn clients(&self, server: &common::Server) -> (RawClient, RawClient) {
        (
            RawClient::new(server.base.clone(), Some(self.platform.signer.clone())),
            RawClient::new(server.base.clone(), Some(self.funder.signer.clone())),
        )
    }
}

/// Issue 6, item 3: the store's file system turns read-only under a running
/// server (every write and fsync under the data directory fails with EROFS,
/// injected by an LD_PRELOAD shim into the real binary). Every answer is 503
/// problem+json — never 2xx —, nothing half-written survives, and when the
/// store is writable again the same server recovers by itself: every
/// acknowledged deposit redeems exactly once, integrity_check passes, the
/// audit chain verifies.
#[actix_web::test]
#[allow(clippy::zombie_processes)] // the child is killed and waited for below
async fn an_unwritable_store_answers_503_loses_nothing_and_recovers() {
    let Some(v) = Shimmed::new("the unwritable-store test", false) else {
        return;
    };
    let server = v.start().await;
    let (p, f) = v.clients(&server);
    let (data, flag, funder) = (&v.data, &v.flag, &v.funder);
    let deposit =
        |i: usize| serde_json::to_vec(&deposit_body(&format!("RO-{i}"), &funder.id)).unwrap();
    let redeem = |code: &str| {
        serde_json::to_vec(&json!({"code": code, "purpose": "credit_application"})).unwrap()
    };

    let mut acknowledged = Vec::new();
    for i in 0..5 {
        let r = p.send("POST", "/v1/deposits", &deposit(i)).await.unwrap();
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        acknowledged.push(r.json()["codes"][0]["code"].as_str().unwrap().to_owned());
    }

    // Read-only: deposits and redemptions are refused with 503.
    std::fs::write(flag, b"").unwrap();
    for i in 100..110 {
        let r = p.send("POST", "/v1/deposits", &deposit(i)).await.unwrap();
        assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["code"], "storage_unavailable");
    }
    let r = f
        .send("POST", "/v1/redemptions", &redeem(&acknowledged[0]))
        .await
        .unwrap();
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert!(!String::from_utf8_lossy(&r.body).contains("张三"));

    // Writable again: the same process recovers without a restart.
    std::fs::remove_file(flag).unwrap();
    let mut recovered = false;
    for i in 200..250 {
        let r = p.send("POST", "/v1/deposits", &deposit(i)).await.unwrap();
        if r.status == 201 {
            acknowledged.push(r.json()["codes"][0]["code"].as_str().unwrap().to_owned());
            recovered = true;
            break;
        }
        assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        recovered,
        "the vault did not recover when the store became writable"
    );
    // A deposit refused while read-only was never stored: its external_ref is free.
    let r = p.send("POST", "/v1/deposits", &deposit(100)).await.unwrap();
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    for code in &acknowledged {
        let r = f
            .send("POST", "/v1/redemptions", &redeem(code))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let again = f
            .send("POST", "/v1/redemptions", &redeem(code))
            .await
            .unwrap();
        assert_eq!(again.status, 409);
    }

    let mut child = server.child;
    child.kill().unwrap();
    child.wait().unwrap();
    use dzl_store::Store as _;
    let store = dzl_store::SqliteStore::open(data).unwrap();
    let verified = store.verify_audit(&mut |_| {}).unwrap();
    assert!(verified.is_ok(), "{verified:?}");
    store.close();
    assert_integrity(data);
}

/// A flush the disk loses (`fdatasync` fails with EIO, writes succeed):
/// the batch it covered is answered 503, and the store then refuses every
/// write — it cannot know what the kernel dropped — until the vault is
/// restarted, instead of acknowledging writes that build on a hole. After a
/// restart it serves again and its files and audit chain are intact.
#[actix_web::test]
#[allow(clippy::zombie_processes)] // every child is killed and waited for below
async fn a_lost_flush_stops_writes_until_a_restart() {
    let Some(v) = Shimmed::new("the lost-flush test", true) else {
        return;
    };
    let server = v.start().await;
    let (p, _) = v.clients(&server);
    let (data, flag, log, funder) = (&v.data, &v.flag, &v.log, &v.funder);
    let deposit =
        |i: usize| serde_json::to_vec(&deposit_body(&format!("LF-{i}"), &funder.id)).unwrap();
    let r = p.send("POST", "/v1/deposits", &deposit(0)).await.unwrap();
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let kept = r.json()["codes"][0]["code"].as_str().unwrap().to_owned();

    std::fs::write(flag, b"").unwrap();
    let r = p.send("POST", "/v1/deposits", &deposit(1)).await.unwrap();
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["code"], "storage_unavailable");
    // The disk is fine again, but this process no longer trusts it.
    std::fs::remove_file(flag).unwrap();
    for i in 2..5 {
        let r = p.send("POST", "/v1/deposits", &deposit(i)).await.unwrap();
        assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    }
    let text = std::fs::read_to_string(log).unwrap();
    assert!(text.contains("fdatasync of the WAL failed"), "{text}");

    let mut child = server.child;
    child.kill().unwrap();
    child.wait().unwrap();
    let server = v.start().await;
    let (p, f) = v.clients(&server);
    let r = p.send("POST", "/v1/deposits", &deposit(5)).await.unwrap();
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let body = serde_json::to_vec(&json!({"code": kept, "purpose": "credit_application"})).unwrap();
    let r = f.send("POST", "/v1/redemptions", &body).await.unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let mut child = server.child;
    child.kill().unwrap();
    child.wait().unwrap();

    use dzl_store::Store as _;
    let store = dzl_store::SqliteStore::open(data).unwrap();
    let verified = store.verify_audit(&mut |_| {}).unwrap();
    assert!(verified.is_ok(), "{verified:?}");
    store.close();
}
