//! What the single-server integration tests share: a store provisioned with
//! a platform and a funder (rate limits high enough never to interfere) and
//! a deposit body.
#![allow(dead_code)]

use std::io::Read as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use chrono::{Duration, Utc};
use dzl_crypto::RootKey;
use dzl_sdk::RawClient;
use dzl_sdk::Signer;
use dzl_store::admin::{self, NewTenant};
use dzl_store::{SqliteStore, TenantKind};
use serde_json::json;

pub struct Tenant {
    pub id: String,
    pub signer: Signer,
}

pub fn provision(dir: &std::path::Path, root: &RootKey) -> (Tenant, Tenant) {
    let store = SqliteStore::open(dir).expect("open store");
    admin::init(&store, root, "test").expect("init");
    let keys = admin::load_keys(&store, root).expect("keys");
    let add = |kind, name: &str| {
        let c = admin::add_tenant(
            &store,
            &keys.keyring,
            "test",
            NewTenant {
                // High enough that the token bucket never answers 429 here.
                rate_limit: Some(1_000_000),
                ..NewTenant::new(kind, name)
            },
        )
        .expect("tenant");
        Tenant {
            id: c.tenant_id.to_string(),
            signer: Signer::new(c.key_id.clone(), c.secret.as_str()),
        }
    };
    let t = (
        add(TenantKind::Platform, "Platform"),
        add(TenantKind::Funder, "Bank"),
    );
    store.close();
    t
}

pub fn deposit_body(external_ref: &str, funder: &str) -> serde_json::Value {
    let now = Utc::now();
    json!({
        "external_ref": external_ref,
        "purpose": "credit_application",
        "consent": {
            "consent_id": "CNS-1",
            "granted_at": (now - Duration::hours(1)).to_rfc3339(),
            "expires_at": (now + Duration::days(365)).to_rfc3339(),
            "scopes": ["applicant", "device", "risk"],
            "evidence_sha256": "a".repeat(64),
        },
        "applicant": {"name": "张三", "id_type": "resident_id", "id_number": "11010519491231002X",
                      "phone": "13912345678", "residence_address": "北京市朝阳区1号"},
        "device": {"device_id": "d-1", "os": "android", "ip": "203.0.113.7"},
        "risk": {"score": 712, "grade": "B+", "tags": ["thin_file"], "features": {"income_ratio": 0.42}},
        "grants": [{"funder_id": funder, "scopes": ["applicant", "risk"], "ttl_seconds": 3600}],
    })
}

/// A `dzl-vault serve` child process.
pub struct Server {
    pub child: Child,
    pub base: String,
}

/// Starts the real binary on `dir` (port 0, `extra_env` added), its log
/// appended to `log`; returns once it printed its port.
#[allow(clippy::zombie_processes)] // the caller kills and waits
pub fn start(
    dir: &Path,
    root: &dzl_crypto::RootKey,
    log: &Path,
    extra_env: &[(&str, &std::ffi::OsStr)],
) -> Server {
    let already = std::fs::metadata(log)
        .map(|m| m.len() as usize)
        .unwrap_or(0);
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_dzl-vault"))
        .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("DZL_ROOT_KEY", root.to_base64())
        .env_remove("DZL_ROOT_KEY_FILE")
        .env("RUST_LOG", "debug")
        .envs(extra_env.iter().copied())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let mut bytes = Vec::new();
        std::fs::File::open(log)
            .unwrap()
            .read_to_end(&mut bytes)
            .unwrap();
        // Only what this process wrote.
        let text = String::from_utf8_lossy(&bytes[already.min(bytes.len())..]).into_owned();
        if let Some(port) = text
            .lines()
            .find_map(|l| l.split("dzl-vault listening on port ").nth(1))
            .and_then(|p| p.trim().parse::<u16>().ok())
        {
            return Server {
                child,
                base: format!("http://127.0.0.1:{port}"),
            };
        }
        assert!(Instant::now() < deadline, "server did not start: {text}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Waits until `/readyz` answers 200.
pub async fn wait_ready(base: &str) {
    let c = RawClient::new(base, None);
    for _ in 0..100 {
        if let Ok(r) = c.send("GET", "/readyz", b"").await {
            if r.status == 200 {
                return;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("not ready");
}
