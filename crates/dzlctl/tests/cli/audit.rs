//! `audit verify` and `audit export` through the binary: verification names
//! the first bad entry of an altered, a deleted, a swapped entry and a
//! truncated tail; exports are JSON lines bounded by time.

use chrono::{Duration, Utc};
use serde_json::Value;

use crate::helpers::*;

/// A vault with five audit entries: init, three tenants, a rotation.
fn vault_with_history() -> Vault {
    let v = Vault::initialised();
    v.tenant("platform", "P");
    v.tenant("funder", "F");
    v.tenant("operator", "O");
    v.ok(&["keys", "rotate"]);
    v
}

/// Edits the audit table as an attacker with write access to the file would.
fn tamper(v: &Vault, sql: &str) {
    let conn = rusqlite::Connection::open(v.data().join("vault.db")).unwrap();
    conn.execute_batch("DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;")
        .unwrap();
    conn.execute_batch(sql).unwrap();
}

fn assert_broken_at(v: &Vault, seq: i64) {
    let text = v.run(&["audit", "verify"]);
    let (code, doc) = v.json(&["audit", "verify"]);
    assert_eq!(super::helpers::code(&text), 1, "{}", stderr(&text));
    let prefix = format!("error: the audit chain is broken at entry {seq}: ");
    assert!(stderr(&text).starts_with(&prefix), "{}", stderr(&text));
    assert_eq!(code, 1);
    assert_eq!(doc["code"], "audit_chain_broken");
}

#[test]
fn an_intact_chain_verifies_with_its_count() {
    let v = vault_with_history();

    let first = v.ok(&["audit", "verify"]);
    let text = stdout(&v.run(&["audit", "verify"]));

    assert_eq!(first, serde_json::json!({"intact": true, "entries": 5}));
    // Each verification is itself recorded.
    assert!(text.contains("intact: 6 entries verified"), "{text}");
}

#[test]
fn an_altered_entry_is_named() {
    let v = vault_with_history();
    tamper(&v, "UPDATE audit SET actor = 'cli:mallory' WHERE seq = 3;");
    assert_broken_at(&v, 3);
}

#[test]
fn a_deleted_entry_is_found_where_the_gap_is() {
    let v = vault_with_history();
    tamper(&v, "DELETE FROM audit WHERE seq = 3;");
    assert_broken_at(&v, 4);
}

#[test]
fn swapped_entries_are_found_at_the_first_one_out_of_place() {
    let v = vault_with_history();
    tamper(
        &v,
        "UPDATE audit SET seq = -1 WHERE seq = 3;
         UPDATE audit SET seq = 3 WHERE seq = 4;
         UPDATE audit SET seq = 4 WHERE seq = -1;",
    );
    assert_broken_at(&v, 3);
}

#[test]
fn a_truncated_tail_is_found() {
    let v = vault_with_history();
    tamper(&v, "DELETE FROM audit WHERE seq >= 4;");
    assert_broken_at(&v, 4);
}

fn lines(out: &std::process::Output) -> Vec<Value> {
    stdout(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn export_writes_json_lines_bounded_by_time() {
    let start = Utc::now() - Duration::seconds(5);
    let v = vault_with_history();
    // One entry far in the future, through the tests-only clock.
    let future = "2040-01-01T00:00:00Z";
    v.ok(&["--now", future, "audit", "verify"]);

    let all = v.run(&["audit", "export"]);
    let recent = v.run(&[
        "audit",
        "export",
        "--since",
        &rfc3339(start),
        "--until",
        "2039-01-01T00:00:00Z",
    ]);
    let later = v.run(&["audit", "export", "--since", "2039-12-31T00:00:00+08:00"]);
    let before = v.run(&["audit", "export", "--until", &rfc3339(start)]);
    let doc = v.ok(&["audit", "export", "--since", "2039-12-31T00:00:00Z"]);
    let bad = v.run(&["audit", "export", "--since", "yesterday"]);
    let reversed = v.run(&[
        "audit",
        "export",
        "--since",
        future,
        "--until",
        "2030-01-01T00:00:00Z",
    ]);

    assert_eq!(code(&all), 0, "{}", stderr(&all));
    let all = lines(&all);
    assert_eq!(all.len(), 6);
    let fields = [
        "actor",
        "at",
        "chain",
        "code_id",
        "deposit_id",
        "detail",
        "groups",
        "hash",
        "operation",
        "prev_hash",
        "purpose",
        "redemption_id",
        "result",
        "seq",
        "subject_tenant",
    ];
    for (i, e) in all.iter().enumerate() {
        assert_eq!(keys(e), fields);
        assert_eq!(e["chain"], 1, "the embedded store has one chain");
        assert_eq!(e["seq"], i as u64 + 1);
    }
    assert_eq!(all[5]["operation"], "audit.verify");
    assert_eq!(all[5]["at"], "2040-01-01T00:00:00.000Z");
    assert!(all[0]["actor"].as_str().unwrap().starts_with("cli:"));
    // Entries 1-5, and the record of the first export (the 2040 one is out).
    let recent: Vec<Value> = lines(&recent).iter().map(|e| e["seq"].clone()).collect();
    assert_eq!(
        recent,
        serde_json::json!([1, 2, 3, 4, 5, 7])
            .as_array()
            .unwrap()
            .clone()
    );
    let later = lines(&later);
    assert_eq!(later.len(), 1);
    assert_eq!(later[0]["seq"], 6);
    assert!(lines(&before).is_empty());
    assert_eq!(doc["count"], 1);
    assert_eq!(doc["entries"][0]["seq"], 6);
    assert_eq!(code(&bad), 2);
    assert_eq!(code(&reversed), 2);
    // Exports are recorded too (the four above that ran).
    let last = lines(&v.run(&["audit", "export"]));
    assert_eq!(
        last.iter()
            .filter(|e| e["operation"] == "audit.export")
            .count(),
        5
    );
}
