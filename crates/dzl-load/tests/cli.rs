//! The `dzl-load` binary end to end: a short, small run against a vault it
//! spawns (with the echo baseline), and refusals that must send nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn dzl_load() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dzl-load"));
    for v in [
        "DZL_URL",
        "DZL_PLATFORM_KEY_ID",
        "DZL_PLATFORM_SECRET",
        "DZL_FUNDER_ID",
        "DZL_FUNDER_KEY_ID",
        "DZL_FUNDER_SECRET",
    ] {
        c.env_remove(v);
    }
    c
}

#[test]
fn spawned_run_deposits_and_redeems_everything_it_deposited() {
    let out = dzl_load()
        .args([
            "--spawn",
            "--baseline",
            "--json",
            "--connections",
            "4",
            "--duration",
            "1s",
            "--workers",
            "2",
            "--client-threads",
            "1",
            "--preload",
            "20",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "dzl-load failed: {stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    let preload = &v["preload"];
    assert_eq!(preload["ok"], 20, "{v:#}");
    assert_eq!(preload["requests"], 20, "{v:#}");
    assert_eq!(preload["exhausted"], true);

    let echo = &v["echo"];
    assert!(echo["ok"].as_u64().unwrap() > 0, "{v:#}");
    assert_eq!(echo["requests"], echo["ok"]);

    let dep = &v["deposit"];
    let deposits = dep["ok"].as_u64().unwrap();
    assert!(deposits > 0, "{v:#}");
    assert_eq!(
        dep["requests"], dep["ok"],
        "every deposit answered 201: {v:#}"
    );
    assert_eq!(dep["statuses"]["201"], deposits);
    for q in ["p50", "p90", "p99", "max"] {
        assert!(dep["latency_ms"][q].as_f64().unwrap() > 0.0, "{q}");
    }

    // One grant each: exactly as many codes to redeem, each redeemed once (200).
    let red = &v["redemption"];
    assert!(red["elapsed_s"].as_f64().unwrap() < 1.0 + 10.0);
    assert_eq!(red["requests"], red["ok"], "{v:#}");
    assert_eq!(
        red["statuses"]["200"].as_u64().unwrap_or(0),
        red["ok"].as_u64().unwrap()
    );
    assert!(red["ok"].as_u64().unwrap() <= deposits);
    if red["exhausted"] == true {
        assert_eq!(red["ok"].as_u64().unwrap(), deposits, "{v:#}");
    }

    assert!(v["ratios"]["deposit"].as_f64().unwrap() > 0.0);
    assert!(v["ratios"]["redemption"].as_f64().unwrap() > 0.0);
    assert_eq!(
        v["config"]["deposit_body_bytes"].as_u64().map(|n| n > 1400),
        Some(true)
    );
    assert!(v["targets"].as_array().unwrap().len() >= 6);
}

/// `--suite gm` spawns a gm vault and signs for it: every deposit and
/// redemption is answered as it would be by an intl one.
#[test]
fn a_spawned_gm_vault_deposits_and_redeems() {
    let out = dzl_load()
        .args([
            "--spawn",
            "--suite",
            "gm",
            "--json",
            "--connections",
            "2",
            "--duration",
            "1s",
            "--workers",
            "1",
            "--client-threads",
            "1",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "dzl-load failed: {stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["config"]["suite"], "gm");
    let dep = &v["deposit"];
    assert!(dep["ok"].as_u64().unwrap() > 0, "{v:#}");
    assert_eq!(dep["requests"], dep["ok"], "{v:#}");
    let red = &v["redemption"];
    assert!(red["ok"].as_u64().unwrap() > 0, "{v:#}");
    assert_eq!(red["requests"], red["ok"], "{v:#}");

    let bad = dzl_load()
        .args(["--spawn", "--suite", "sm"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("expected intl or gm"));
}

#[test]
fn refuses_targets_off_loopback_before_sending() {
    for url in [
        "http://10.0.0.1:8080",
        "http://192.168.0.1:8080",
        "http://example.com",
        "https://127.0.0.1:8443",
    ] {
        let out = dzl_load()
            .args(["--url", url, "--duration", "1s"])
            .args(["--platform-key-id", "k", "--platform-secret", "s"])
            .args([
                "--funder-id",
                "ten_x",
                "--funder-key-id",
                "k",
                "--funder-secret",
                "s",
            ])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{url} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--url"), "{url}: {err}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn refuses_unbounded_or_oversized_runs() {
    for args in [
        &["--spawn", "--duration", "601s"][..],
        &["--spawn", "--duration", "1h"],
        &["--spawn", "--connections", "0"],
        &["--spawn", "--connections", "5000"],
        &["--spawn", "--preload", "100000001"],
    ] {
        let out = dzl_load().args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?} accepted");
    }
}

#[test]
fn needs_credentials_without_spawn() {
    let out = dzl_load()
        .args(["--url", "http://127.0.0.1:9", "--duration", "1s"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("DZL_PLATFORM_KEY_ID"));
}
