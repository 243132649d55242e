//! The short form of the crash harness that CI runs: five SIGKILL cycles of
//! the real `dzl-vault` binary under mixed load, every acknowledged write
//! checked after each restart, integrity and audit chain checked with the
//! server down. The published figure (200+ cycles) comes from
//! `dzl-crash --cycles 200` (docs/reliability.md).
//!
//! The binary is found by `dzl_testkit::process::vault_binary`: the
//! `DZL_VAULT_BIN` variable, else `cargo build -p dzl-vault-server --bin
//! dzl-vault` (cargo sets `CARGO` for tests; a fresh build is a no-op), else
//! `target/<profile>/dzl-vault` beside this test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

#[test]
fn five_kill_cycles_lose_no_acknowledged_write() {
    let bin = dzl_testkit::process::vault_binary().expect("the dzl-vault binary");
    let mut cfg = dzl_testkit::crash::Config::new(bin, 5);
    cfg.workers = 4;
    cfg.max_load = Duration::from_millis(400);
    cfg.verbose = true;
    let report = dzl_testkit::crash::run(&cfg).expect("the harness runs");
    eprintln!("{}", serde_json::to_string_pretty(&report).unwrap());
    assert!(report.violations.is_empty(), "{:#?}", report.violations);
    assert_eq!(report.cycles, 5);
    assert_eq!(report.lost, 0);
    assert_eq!(report.double_redemptions, 0);
    assert!(report.deposits_acknowledged > 0 && report.redemptions_acknowledged > 0);
    assert!(report.audit_entries > 0);
}
