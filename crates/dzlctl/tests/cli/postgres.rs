//! Every verb selects PostgreSQL with `DZL__STORE__URL` (issue 7): init,
//! tenants, key rotation, rewrap, retire and audit verification against a
//! fresh database. Skipped, loudly, without `DZL_TEST_PG_URL`.

use std::io::Write as _;
use std::process::{Command, Output};

use serde_json::Value;

fn dzlctl(url: &str, key: &std::path::Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dzlctl"));
    for (k, _) in std::env::vars() {
        if k.starts_with("DZL") {
            cmd.env_remove(k);
        }
    }
    cmd.env("DZL__STORE__URL", url)
        .env("DZL_ROOT_KEY_FILE", key)
        .args(args)
        .output()
        .unwrap()
}

fn json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn every_verb_runs_against_postgresql() {
    let Ok(admin_url) = std::env::var(dzl_store_pg::testing::TEST_URL_VAR) else {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: dzlctl on PostgreSQL needs DZL_TEST_PG_URL"
        );
        return;
    };
    let db = dzl_store_pg::testing::fresh_database(&admin_url).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("root.key");
    let url = db.url();

    json(&dzlctl(url, &key, &["--json", "init"]));
    let funder = json(&dzlctl(
        url,
        &key,
        &[
            "--json", "tenant", "add", "--kind", "funder", "--name", "PG Bank",
        ],
    ));
    assert!(funder["secret"].is_string());
    let list = json(&dzlctl(url, &key, &["--json", "tenant", "list"]));
    assert_eq!(list["tenants"].as_array().unwrap().len(), 1);
    json(&dzlctl(url, &key, &["--json", "keys", "rotate"]));
    json(&dzlctl(url, &key, &["--json", "keys", "rewrap"]));
    json(&dzlctl(url, &key, &["--json", "keys", "retire", "1"]));
    let keys = json(&dzlctl(url, &key, &["--json", "keys", "list"]));
    assert_eq!(keys["keys"][0]["state"], "retired");
    assert_eq!(keys["keys"][1]["state"], "active");
    let verify = json(&dzlctl(url, &key, &["--json", "audit", "verify"]));
    assert_eq!(verify["intact"], true);
    // A second init against the same database is refused.
    assert!(!dzlctl(url, &key, &["init"]).status.success());
}
