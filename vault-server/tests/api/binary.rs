//! The real `dzl-vault` binary: acknowledged deposits survive `kill -9`, and
//! no deposited name, id number or phone appears in any file of the data
//! directory or in the logs.

use std::path::Path;
use std::process::Command;

use dzl_sdk::RawClient;
use serde_json::json;

use crate::common::{start, wait_ready};
use crate::helpers::*;

fn scan(path: &Path, needles: &[&[u8]], found: &mut Vec<String>) {
    for entry in std::fs::read_dir(path).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            scan(&p, needles, found);
        } else {
            let bytes = std::fs::read(&p).unwrap();
            for n in needles {
                if bytes.windows(n.len()).any(|w| w == *n) {
                    found.push(format!(
                        "{} contains {:?}",
                        p.display(),
                        String::from_utf8_lossy(n)
                    ));
                }
            }
        }
    }
}

#[actix_web::test]
#[allow(clippy::zombie_processes)] // every child is killed and waited for below
async fn acknowledged_deposits_survive_kill_9_and_no_plaintext_reaches_disk_or_logs() {
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("server.log");
    let root = new_root();
    let tenants = provision(dir.path(), &root, None);
    let (platform, funder) = (&tenants[0], &tenants[2]);

    let server = start(dir.path(), &root, &log, &[]);
    wait_ready(&server.base).await;
    let pc = RawClient::new(server.base.clone(), Some(platform.signer.clone()));
    let mut codes = Vec::new();
    for i in 0..20 {
        let body = deposit_body(
            &format!("K9-{i}"),
            json!([{"funder_id": funder.id, "scopes": ["applicant", "device", "risk"]}]),
        );
        let r = pc
            .send("POST", "/v1/deposits", &serde_json::to_vec(&body).unwrap())
            .await
            .unwrap();
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        codes.push(r.json()["codes"][0]["code"].as_str().unwrap().to_owned());
    }
    // No clean shutdown: SIGKILL right after the last acknowledgement.
    let mut child = server.child;
    child.kill().unwrap();
    child.wait().unwrap();

    let server = start(dir.path(), &root, &log, &[]);
    wait_ready(&server.base).await;
    let fc = RawClient::new(server.base.clone(), Some(funder.signer.clone()));
    for code in &codes {
        let body =
            serde_json::to_vec(&json!({"code": code, "purpose": "credit_application"})).unwrap();
        let r = fc.send("POST", "/v1/redemptions", &body).await.unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["applicant"]["id_number"], ID_NUMBER);
    }
    // Erase one; subject access by an operator; a failed validation echoing nothing.
    let mut child = server.child;
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();

    let needles: [&[u8]; 3] = [NAME.as_bytes(), ID_NUMBER.as_bytes(), PHONE.as_bytes()];
    let mut found = Vec::new();
    scan(dir.path(), &needles, &mut found);
    scan(logs.path(), &needles, &mut found);
    assert!(found.is_empty(), "plaintext personal data found: {found:?}");
    // The log did record the requests (so the scan above looked at something).
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("POST /v1/redemptions 200"), "{text}");
}

/// `dzl-vault` with `args`, `TMPDIR` set to `tmp` and a root key in the
/// environment; its exit status and stderr.
fn run_vault(args: &[&str], tmp: &Path, root: &dzl_crypto::RootKey) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dzl-vault"))
        .args(args)
        .env("TMPDIR", tmp)
        .env("DZL_ROOT_KEY", root.to_base64())
        .env_remove("DZL_ROOT_KEY_FILE")
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn demo_on_a_port_in_use_suggests_bind_and_leaves_no_directory_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();

    let (ok, stderr) = run_vault(&["demo", "--bind", &addr], tmp.path(), &new_root());

    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains(&addr) && stderr.contains("--bind"),
        "{stderr}"
    );
    assert!(
        entries(tmp.path()).is_empty(),
        "left behind: {:?}",
        entries(tmp.path())
    );
}

#[test]
fn serve_refuses_a_missing_or_empty_directory_without_writing_to_it() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-dir");
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();

    for dir in [&missing, &empty] {
        let dir_arg = dir.to_str().unwrap();
        let (ok, stderr) = run_vault(
            &["serve", "--bind", "127.0.0.1:0", "--data-dir", dir_arg],
            tmp.path(),
            &new_root(),
        );

        assert!(!ok, "{stderr}");
        assert!(
            stderr.contains("no vault in") && stderr.contains("dzlctl --data-dir"),
            "{stderr}"
        );
    }
    assert!(!missing.exists(), "serve created {}", missing.display());
    assert!(
        entries(&empty).is_empty(),
        "serve wrote {:?}",
        entries(&empty)
    );
}

#[actix_web::test]
#[allow(clippy::zombie_processes)] // killed and waited for below
async fn readyz_names_a_wrong_root_key_and_its_fix() {
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("server.log");
    let right = new_root();
    provision(dir.path(), &right, None);
    let wrong = new_root();

    let mut server = start(dir.path(), &wrong, &log, &[]);
    let r = RawClient::new(server.base.clone(), None)
        .send("GET", "/readyz", b"")
        .await
        .unwrap();
    server.child.kill().unwrap();
    server.child.wait().unwrap();

    assert_problem(&r, 503, "not_ready");
    let detail = r.json()["detail"].as_str().unwrap().to_owned();
    assert!(
        detail.contains("root key") && detail.contains("DZL_ROOT_KEY_FILE"),
        "{detail}"
    );
    for key in [&right, &wrong] {
        assert!(!detail.contains(key.to_base64().as_str()), "{detail}");
    }
}
