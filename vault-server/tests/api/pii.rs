//! The PII leak scan of the whole black-box suite (issue 6, item 8). Every
//! test deposits the canary identity of `helpers` (valid check digits), and:
//!
//! * every log record any test's server emits (a process-wide logger at
//!   `trace`) is searched for the canaries;
//! * every answer the helpers receive is searched, except the one answer
//!   whose job is to carry them (a 200 redemption);
//! * when a test's app is dropped, every file of its data directory (both
//!   databases, their WAL and shared-memory files) is searched byte for
//!   byte: only ciphertext may hold the identity.
//!
//! A leak fails the test in which it is seen (a log leak: the next test that
//! drops its app, with the leaking line in the message).

use std::path::Path;
use std::sync::{Mutex, OnceLock};

use dzl_sdk::RawResponse;

use crate::helpers::{ID_NUMBER, NAME, PHONE};

/// The canaries in every form a leak could take: UTF-8, JSON `\u` escapes
/// of the name, a lower-case check digit.
pub fn needles() -> Vec<Vec<u8>> {
    let escaped: String = NAME
        .chars()
        .map(|c| format!("\\u{:04x}", c as u32))
        .collect();
    vec![
        NAME.as_bytes().to_vec(),
        escaped.as_bytes().to_vec(),
        escaped.to_uppercase().replace("\\U", "\\u").into_bytes(),
        ID_NUMBER.as_bytes().to_vec(),
        ID_NUMBER.to_lowercase().into_bytes(),
        PHONE.as_bytes().to_vec(),
    ]
}

fn find(haystack: &[u8], needles: &[Vec<u8>]) -> Option<String> {
    needles
        .iter()
        .find(|n| haystack.windows(n.len()).any(|w| w == n.as_slice()))
        .map(|n| String::from_utf8_lossy(n).into_owned())
}

struct Scanner {
    needles: Vec<Vec<u8>>,
    /// Texts a test watches for in the log (`watch`), with their sightings.
    watched: Mutex<Vec<(Vec<u8>, u64)>>,
    leaks: Mutex<Vec<String>>,
    records: std::sync::atomic::AtomicU64,
}

impl log::Log for Scanner {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        // The tests' own HTTP client logs what it sends; only the vault's
        // side counts.
        let client = [
            "reqwest",
            "hyper",
            "hyper_util",
            "h2",
            "want",
            "rustls",
            "tower",
        ];
        if client
            .iter()
            .any(|c| record.target() == *c || record.target().starts_with(&format!("{c}::")))
        {
            return;
        }
        self.records
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let line = format!("{} {}: {}", record.level(), record.target(), record.args());
        if let Ok(mut w) = self.watched.lock() {
            for (needle, seen) in w.iter_mut() {
                if line
                    .as_bytes()
                    .windows(needle.len())
                    .any(|x| x == needle.as_slice())
                {
                    *seen += 1;
                }
            }
        }
        if let Some(n) = find(line.as_bytes(), &self.needles) {
            if let Ok(mut l) = self.leaks.lock() {
                l.push(format!("log record contains {n:?}: {line}"));
            }
        }
    }

    fn flush(&self) {}
}

fn scanner() -> &'static Scanner {
    static S: OnceLock<&'static Scanner> = OnceLock::new();
    S.get_or_init(|| {
        let s: &'static Scanner = Box::leak(Box::new(Scanner {
            needles: needles(),
            watched: Mutex::new(Vec::new()),
            leaks: Mutex::new(Vec::new()),
            records: Default::default(),
        }));
        if log::set_logger(s).is_ok() {
            log::set_max_level(log::LevelFilter::Trace);
        }
        s
    })
}

/// Installs the logger (once per test process).
pub fn install() {
    scanner();
}

/// Log records seen so far (so a test can show the scan looked at something).
pub fn records_seen() -> u64 {
    scanner().records.load(std::sync::atomic::Ordering::Relaxed)
}

/// Starts counting the log records (of any test) that contain `needle`.
pub fn watch(needle: &[u8]) {
    if let Ok(mut w) = scanner().watched.lock() {
        w.push((needle.to_vec(), 0));
    }
}

/// Log records seen so far that contain a watched `needle`.
pub fn sightings(needle: &[u8]) -> u64 {
    scanner()
        .watched
        .lock()
        .ok()
        .and_then(|w| w.iter().find(|(n, _)| n == needle).map(|(_, s)| *s))
        .unwrap_or(0)
}

/// Panics with every log leak seen so far.
pub fn check_logs() {
    let leaks = scanner()
        .leaks
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    assert!(leaks.is_empty(), "personal data in logs: {leaks:#?}");
}

/// Panics when an answer carries a canary, unless it is a 200 redemption.
pub fn check_response(method: &str, path: &str, r: &RawResponse) {
    if method == "POST" && path == "/v1/redemptions" && r.status == 200 {
        return;
    }
    if let Some(n) = find(&r.body, &needles()) {
        panic!(
            "{method} {path} answered {} with personal data ({n:?}): {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
    }
    for (name, value) in &r.headers {
        if let Some(n) = find(value.as_bytes(), &needles()) {
            panic!("{method} {path}: header {name} carries {n:?}");
        }
    }
}

/// Every file under `dir` that holds a canary.
pub fn scan_dir(dir: &Path) -> Vec<String> {
    let needles = needles();
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                if let Some(n) = find(&bytes, &needles) {
                    found.push(format!("{} contains {n:?}", p.display()));
                }
            }
        }
    }
    found
}

/// The end-of-test check of a data directory and the logs.
pub fn check_dir(dir: &Path) {
    let found = scan_dir(dir);
    assert!(
        found.is_empty(),
        "plaintext personal data on disk: {found:?}"
    );
    check_logs();
}

#[actix_web::test]
async fn canaries_through_every_route_leak_nowhere_and_the_scan_would_see_them() {
    use serde_json::json;

    use crate::helpers::*;

    let app = spawn_app().await;
    // The canary through every route.
    let dep = app
        .deposit("PII-1", &["applicant", "device", "risk"], 3600)
        .await;
    let deposit_id = dep["deposit_id"].as_str().unwrap();
    let code_id = dep["codes"][0]["code_id"].as_str().unwrap();
    let code = dep["codes"][0]["code"].as_str().unwrap();
    let r = app
        .post(
            &app.platform,
            &format!("/v1/deposits/{deposit_id}/codes"),
            &json!({"funder_id": app.funder.id, "scopes": ["applicant"]}),
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(
        app.get(&app.platform, &format!("/v1/codes/{code_id}"))
            .await
            .status,
        200
    );
    let r = app.redeem(&app.funder, code, "credit_application").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["applicant"]["id_number"], ID_NUMBER);
    let rid = r.json()["redemption_id"].as_str().unwrap().to_owned();
    let r = app
        .post(
            &app.funder,
            &format!("/v1/redemptions/{rid}/outcome"),
            &json!({"decision": "approved", "amount_fen": 1}),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = app
        .post(
            &app.operator,
            "/v1/subject-access",
            &json!({"id_type": "resident_id", "id_number": ID_NUMBER}),
        )
        .await;
    assert_eq!(r.status, 200);
    // The canary where it does not belong: refused, never echoed.
    let mut body = deposit_body("PII-2", json!([]));
    body["applicant"]["nickname"] = json!(NAME);
    assert_eq!(
        app.post(&app.platform, "/v1/deposits", &body).await.status,
        422
    );
    let mut body = deposit_body("PII-3", json!([]));
    body["applicant"]["phone"] = json!(format!("{PHONE}{PHONE}"));
    assert_eq!(
        app.post(&app.platform, "/v1/deposits", &body).await.status,
        422
    );
    let mut body = deposit_body("PII-4", json!([]));
    body["applicant"]["id_type"] = json!(ID_NUMBER);
    assert_eq!(
        app.post(&app.platform, "/v1/deposits", &body).await.status,
        422
    );
    let mut body = deposit_body("PII-5", json!([]));
    body["applicant"]["id_number"] = json!(ID_NUMBER.replace('X', "1"));
    assert_eq!(
        app.post(&app.platform, "/v1/deposits", &body).await.status,
        422
    );
    let r = app
        .redeem(
            &app.funder,
            &format!("ac_{ID_NUMBER}{PHONE}"),
            "credit_application",
        )
        .await;
    assert!(r.status == 422 || r.status == 404, "{}", r.status);
    assert_eq!(
        app.get(&app.platform, &format!("/v1/codes/{ID_NUMBER}"))
            .await
            .status,
        404
    );
    let r = app
        .post(
            &app.operator,
            "/v1/subject-access",
            &json!({"id_type": "resident_id", "id_number": format!("{ID_NUMBER} ")}),
        )
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(
        app.delete(&app.platform, &format!("/v1/deposits/{deposit_id}"))
            .await
            .status,
        204
    );
    // Metrics and the audit trail.
    let r = app.get(&app.platform, "/metrics").await;
    assert_eq!(r.status, 200);
    let audit = serde_json::to_vec(&off_rt(|| app.state.store.audit_after(&[])).unwrap()).unwrap();
    assert!(
        find(&audit, &needles()).is_none(),
        "the audit trail holds personal data"
    );

    // The scan saw the vault's logs and would see a leak.
    assert!(records_seen() > 0, "no log record reached the scanner");
    let planted = tempfile::tempdir().unwrap();
    std::fs::write(planted.path().join("x"), format!("…{ID_NUMBER}…")).unwrap();
    assert_eq!(scan_dir(planted.path()).len(), 1);
    for n in needles() {
        assert!(find(&[b"<".as_slice(), &n, b">"].concat(), &needles()).is_some());
    }
    if crate::helpers::postgres_url().is_none() {
        assert!(std::fs::read_dir(app._dir.path()).unwrap().count() >= 2);
    }
    // The data directory itself is scanned when `app` drops.
}
