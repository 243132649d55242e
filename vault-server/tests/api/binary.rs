//! The real `dzl-vault` binary: acknowledged deposits survive `kill -9`, and
//! no deposited name, id number or phone appears in any file of the data
//! directory or in the logs.

use std::io::Read as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dzl_sdk::RawClient;
use serde_json::json;

use crate::helpers::*;

struct Server {
    child: Child,
    base: String,
}

#[allow(clippy::zombie_processes)] // the caller kills and waits
fn start(dir: &Path, root: &dzl_crypto::RootKey, log: &Path) -> Server {
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
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
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
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn wait_ready(base: &str) {
    let c = RawClient::new(base, None);
    for _ in 0..100 {
        if let Ok(r) = c.send("GET", "/readyz", b"").await {
            if r.status == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not ready");
}

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

    let server = start(dir.path(), &root, &log);
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

    let server = start(dir.path(), &root, &log);
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
