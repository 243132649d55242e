//! Runs both example programs as a newcomer would: `end_to_end` on its own,
//! `platform_and_funder` against a running vault with the variables
//! `dzl-vault demo` prints; each against an `intl` and a `gm` vault.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use dzl_examples::Sandbox;
use dzl_sdk::Suite;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("the program starts");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn end_to_end_exits_zero() {
    let stdout = run(&mut Command::new(env!("CARGO_BIN_EXE_end_to_end")));
    assert!(stdout.contains("vault: cipher suite intl"), "{stdout}");
    assert!(stdout.contains("receipt verified"), "{stdout}");
}

/// HMAC-SM3 requests, SM4-GCM storage and an SM2 receipt the SDK verifies.
#[test]
fn end_to_end_exits_zero_with_a_gm_vault() {
    let stdout = run(Command::new(env!("CARGO_BIN_EXE_end_to_end")).args(["--suite", "gm"]));
    assert!(stdout.contains("vault: cipher suite gm"), "{stdout}");
    assert!(stdout.contains("receipt verified"), "{stdout}");
}

#[test]
fn end_to_end_refuses_an_unknown_suite() {
    let out = Command::new(env!("CARGO_BIN_EXE_end_to_end"))
        .args(["--suite", "sm"])
        .output()
        .expect("the program starts");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected intl or gm"));
}

#[test]
fn platform_and_funder_runs_against_a_running_vault() {
    platform_and_funder_against(Sandbox::start().expect("sandbox"), "intl");
}

#[test]
fn platform_and_funder_runs_against_a_gm_vault() {
    platform_and_funder_against(Sandbox::start_as(Suite::Gm).expect("sandbox"), "gm");
}

fn platform_and_funder_against(vault: Sandbox, suite: &str) {
    let (p, f) = (&vault.platform, &vault.funder);
    let secret = |c: &dzl_examples::Credentials| c.secret().to_owned();
    let stdout = run(Command::new(env!("CARGO_BIN_EXE_platform_and_funder"))
        .env("DZL_URL", vault.url())
        .env("DZL_PLATFORM_KEY_ID", &p.key_id)
        .env("DZL_PLATFORM_SECRET", secret(p))
        .env("DZL_FUNDER_ID", &f.tenant_id)
        .env("DZL_FUNDER_KEY_ID", &f.key_id)
        .env("DZL_FUNDER_SECRET", secret(f)));
    assert!(
        stdout.contains(&format!("vault: cipher suite {suite}")),
        "{stdout}"
    );
    assert!(stdout.trim_end().ends_with("ok"), "{stdout}");
}

#[test]
fn platform_and_funder_explains_a_missing_variable() {
    let out = Command::new(env!("CARGO_BIN_EXE_platform_and_funder"))
        .env_remove("DZL_URL")
        .output()
        .expect("the program starts");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("dzl-vault demo"));
}
