//! Hostile clients: slow bodies and heads, connection floods, invented
//! methods, forged signatures, protocol errors. Each test holds one bound.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::helpers::*;

fn addr(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_owned()
}

/// What a raw connection got: the bytes the server sent before it closed
/// (or before `limit`), and when the answer began.
struct Raw {
    bytes: Vec<u8>,
    answered_after: Option<Duration>,
    closed: bool,
    elapsed: Duration,
}

impl Raw {
    fn status(&self) -> Option<u16> {
        let text = String::from_utf8_lossy(&self.bytes);
        text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// Sends `head`, then one byte of `drip` every `every` until the server
/// answers and closes, the drip runs out, or `limit` passes.
async fn drip(addr: &str, head: &[u8], drip: &[u8], every: Duration, limit: Duration) -> Raw {
    let start = Instant::now();
    let mut out = Raw {
        bytes: Vec::new(),
        answered_after: None,
        closed: false,
        elapsed: Duration::ZERO,
    };
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return out;
    };
    if s.write_all(head).await.is_err() {
        out.closed = true;
        return out;
    }
    let mut next = 0;
    let mut buf = [0u8; 4096];
    let mut tick = tokio::time::interval(every);
    while start.elapsed() < limit {
        tokio::select! {
            n = s.read(&mut buf) => match n {
                Ok(0) | Err(_) => {
                    out.closed = true;
                    out.elapsed = start.elapsed();
                    return out;
                }
                Ok(n) => {
                    out.answered_after.get_or_insert(start.elapsed());
                    out.bytes.extend_from_slice(&buf[..n]);
                }
            },
            _ = tick.tick() => {
                if next < drip.len() {
                    // A refused write means the server closed: read what it sent.
                    if s.write_all(&drip[next..next + 1]).await.is_err() {
                        next = drip.len();
                    } else {
                        next += 1;
                    }
                }
            }
        }
    }
    out.elapsed = start.elapsed();
    out
}

/// `n` signed-deposit heads sent to `addr` at once, each followed by a
/// body of `body` spaces dripped a byte per `every`, for at most `limit`.
fn slow_deposits(
    addr: &str,
    n: usize,
    body: usize,
    every: Duration,
    limit: Duration,
) -> Vec<tokio::task::JoinHandle<Raw>> {
    (0..n)
        .map(|_| {
            let a = addr.to_owned();
            tokio::spawn(async move {
                drip(&a, &slow_deposit_head(&a), &vec![b' '; body], every, limit).await
            })
        })
        .collect()
}

fn slow_deposit_head(addr: &str) -> Vec<u8> {
    format!(
        "POST /v1/deposits HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 65000\r\n\r\n{{"
    )
    .into_bytes()
}

/// Finding 1: a body sent a byte at a time does not hold a connection.
/// Every slow body is answered 408 `request_timeout` (problem+json) and
/// closed at the deadline, more of them than the server accepts at once,
/// while `/healthz` and signed deposits keep answering. Before the
/// deadline existed these sockets were held for as long as they dripped.
#[actix_web::test]
async fn slow_bodies_are_cut_at_the_deadline_while_signed_traffic_keeps_answering() {
    let mut opts = Options::default();
    opts.settings.server.request_timeout_ms = 1000;
    opts.settings.server.max_connections = 64;
    let app = spawn_app_with(opts).await;
    let a = addr(&app);
    let slow = slow_deposits(
        &a,
        150,
        200,
        Duration::from_millis(100),
        Duration::from_secs(15),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    // While they drip: liveness and signed deposits answer.
    let mut worst = Duration::ZERO;
    for i in 0..5 {
        let t = Instant::now();
        let r = app.anonymous().send("GET", "/healthz", b"").await.unwrap();
        assert_eq!(r.status, 200);
        let body = deposit_body(&format!("SLOW-{i}"), json!([]));
        let r = app.post(&app.platform, "/v1/deposits", &body).await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        worst = worst.max(t.elapsed());
    }
    assert!(
        worst < Duration::from_secs(6),
        "healthz + deposit took {worst:?}"
    );
    for s in slow {
        let r = s.await.unwrap();
        assert_eq!(r.status(), Some(408), "{}", r.text());
        assert!(r.closed, "the connection stays open after 408");
        let text = r.text();
        assert!(
            text.contains("application/problem+json") && text.contains("\"request_timeout\""),
            "{text}"
        );
        assert!(r.answered_after.unwrap() < Duration::from_secs(10));
    }
}

/// Sends one request of raw bytes on a fresh connection and reads the
/// answer until the server closes (or 5 s pass).
async fn raw_request(addr: &str, bytes: &[u8]) -> Raw {
    drip(
        addr,
        bytes,
        b"",
        Duration::from_secs(1),
        Duration::from_secs(5),
    )
    .await
}

async fn metrics_text(app: &TestApp) -> String {
    let r = app.anonymous().send("GET", "/metrics", b"").await.unwrap();
    assert_eq!(r.status, 200);
    String::from_utf8(r.body).unwrap()
}

/// Finding 3: invented methods and paths do not grow `/metrics` or reach
/// the log: a method outside the standard ones is labelled `other`, a path
/// by its route pattern (`unmatched` when none matches).
#[actix_web::test]
async fn invented_methods_and_paths_grow_neither_metrics_nor_the_log() {
    let app = spawn_app().await;
    let a = addr(&app);
    let marker = "QZXINVENTED";
    crate::pii::watch(marker.as_bytes());
    // Warm up the label sets an honest client produces.
    for _ in 0..2 {
        raw_request(
            &a,
            format!("{marker}0 /healthz HTTP/1.1\r\nHost: {a}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await;
        raw_request(
            &a,
            format!("GET /{marker}/0 HTTP/1.1\r\nHost: {a}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await;
    }
    metrics_text(&app).await;
    let before = metrics_text(&app).await;
    for i in 0..200 {
        let method = format!("{marker}{i}{}", "M".repeat(2000));
        let r = raw_request(
            &a,
            format!("{method} /healthz HTTP/1.1\r\nHost: {a}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await;
        assert!(r.status().is_some(), "no answer: {}", r.text());
        let r = raw_request(
            &a,
            format!(
                "GET /{marker}/{i}/{} HTTP/1.1\r\nHost: {a}\r\nConnection: close\r\n\r\n",
                "p".repeat(2000)
            )
            .as_bytes(),
        )
        .await;
        assert_eq!(r.status(), Some(404), "{}", r.text());
    }
    let after = metrics_text(&app).await;
    assert!(
        !after.contains(marker),
        "an invented method or path is a label"
    );
    assert!(after.contains("method=\"other\""), "{after}");
    assert_eq!(
        before.lines().count(),
        after.lines().count(),
        "400 requests with invented methods and paths added metric series"
    );
    assert!(
        after.len() < before.len() + 200,
        "{} → {}",
        before.len(),
        after.len()
    );
    assert_eq!(
        crate::pii::sightings(marker.as_bytes()),
        0,
        "an invented method or path reached the log"
    );
}

/// Finding 6: a key the schemas do not define is not echoed: the answer
/// points at the object holding it and says "unknown field", in every
/// group and nested object, for an id number, a name or a phone as key.
#[actix_web::test]
async fn error_details_never_echo_a_client_chosen_key() {
    let app = spawn_app().await;
    let ok = || deposit_body("KEYS-1", json!([]));
    let key_cases = [
        ("/applicant", ID_NUMBER),
        ("/applicant", NAME),
        ("/device", PHONE),
        ("/risk", ID_NUMBER),
        ("/risk/features", NAME),
        ("/risk/features", "ouyangjinsique"),
        ("/consent", PHONE),
        ("", NAME),
    ];
    for (parent, key) in key_cases {
        let mut body = ok();
        let target = if parent.is_empty() {
            &mut body
        } else {
            body.pointer_mut(parent).unwrap()
        };
        target[key] = json!(1);
        if parent == "/risk/features" {
            target[key] = json!("x");
        }
        let r = app.post(&app.platform, "/v1/deposits", &body).await;
        assert_problem(&r, 422, "validation_failed");
        let text = String::from_utf8_lossy(&r.body);
        assert!(!text.contains(key), "{parent}: {text}");
        assert_eq!(r.json()["field"], parent, "{text}");
    }
    // Grants, and the other bodies with objects.
    let mut body = ok();
    body["grants"] = json!([{"funder_id": app.funder.id, "scopes": ["risk"], PHONE: 1}]);
    let r = app.post(&app.platform, "/v1/deposits", &body).await;
    assert_problem(&r, 422, "validation_failed");
    assert_eq!(r.json()["field"], "/grants/0");
    let r = app
        .post(
            &app.funder,
            "/v1/redemptions",
            &json!({"code": "ac_x", "purpose": "drawdown", NAME: 1}),
        )
        .await;
    assert_problem(&r, 422, "validation_failed");
    assert_eq!(r.json()["field"], "");
    let r = app
        .post(
            &app.operator,
            "/v1/subject-access",
            &json!({"id_type": "resident_id", "id_number": ID_NUMBER, PHONE: 1}),
        )
        .await;
    assert_problem(&r, 422, "validation_failed");
    assert!(!String::from_utf8_lossy(&r.body).contains(PHONE));
}

/// Finding 7: `risk.features` reaches the funder digit for digit, or the
/// deposit is refused: a repeated name and a number no 64-bit integer or
/// double holds exactly are 422, like a repeated fixed field.
#[actix_web::test]
async fn risk_features_are_kept_exactly_or_refused() {
    let app = spawn_app().await;
    let grants = json!([{"funder_id": app.funder.id, "scopes": ["risk"]}]);
    let body = |r: &str, features: &str| {
        serde_json::to_string(&deposit_body(r, grants.clone()))
            .unwrap()
            .replace(r#"{"age_months":17,"income_ratio":0.42}"#, features)
            .replace(r#"{"income_ratio":0.42,"age_months":17}"#, features)
    };
    let client = app.client(&app.platform);
    for (i, features) in [
        r#"{"big":123456789012345678901234567890}"#,
        r#"{"tiny":0.1e-400}"#,
        r#"{"a":1,"a":2}"#,
    ]
    .into_iter()
    .enumerate()
    {
        let b = body(&format!("FEAT-BAD-{i}"), features);
        assert!(b.contains(features), "{b}");
        let r = client
            .send("POST", "/v1/deposits", b.as_bytes())
            .await
            .unwrap();
        assert_problem(&r, 422, "validation_failed");
        assert_eq!(r.json()["field"], "/risk/features", "{features}");
    }
    let exact = r#"{"z_first":1e3,"ratio":0.10,"count":12345678901234567,"neg":-0,"small":5e-324}"#;
    let r = client
        .send("POST", "/v1/deposits", body("FEAT-OK", exact).as_bytes())
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let code = r.json()["codes"][0]["code"].as_str().unwrap().to_owned();
    let r = app.redeem(&app.funder, &code, "credit_application").await;
    assert_eq!(r.status, 200);
    let text = String::from_utf8_lossy(&r.body);
    assert!(text.contains(&format!(r#""features":{exact}"#)), "{text}");
}

/// Finding 8: a name (and every free-text field) holds only characters
/// that show: controls, bidirectional controls, zero-width characters,
/// noncharacters and a BOM are refused, and so is a name that shows
/// nothing. The probe saw each of these answered 201.
#[actix_web::test]
async fn names_refuse_invisible_and_bidirectional_characters() {
    let app = spawn_app().await;
    let bad = [
        "欧阳\u{202e}金丝雀",
        "欧阳\u{200f}金丝雀",
        "欧阳\u{85}金丝雀",
        "欧阳\u{9b}金丝雀",
        "欧阳金丝雀\u{ffff}",
        "\u{feff}欧阳金丝雀",
        "\u{200b}",
        "\u{301}",
    ];
    for (i, name) in bad.iter().enumerate() {
        for field in ["name", "residence_address", "employer"] {
            let mut body = deposit_body(&format!("UNI-{i}-{field}"), json!([]));
            body["applicant"][field] = json!(name);
            let r = app.post(&app.platform, "/v1/deposits", &body).await;
            assert_problem(&r, 422, "validation_failed");
            assert_eq!(r.json()["field"], format!("/applicant/{field}"), "{name:?}");
        }
    }
    let mut body = deposit_body("UNI-model", json!([]));
    body["device"]["model"] = json!("Pixel\u{202e}8");
    let r = app.post(&app.platform, "/v1/deposits", &body).await;
    assert_problem(&r, 422, "validation_failed");
    assert_eq!(r.json()["field"], "/device/model");
    // What a real name may hold still passes.
    let mut body = deposit_body("UNI-ok", json!([]));
    body["applicant"]["name"] = json!("阿卜杜拉·买买提");
    let r = app.post(&app.platform, "/v1/deposits", &body).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
}

/// Finding 4: forged signatures are throttled per key id and per source
/// address (429 with Retry-After once the minute's budget is spent), a
/// valid signature under the attacked key id still passes, and each
/// window becomes one audit entry with its count, not one per attempt.
#[actix_web::test]
async fn failed_authentications_are_throttled_and_audited_once_a_window() {
    use dzl_sdk::RawClient;
    let mut opts = Options::default();
    opts.settings.limits.auth_failures_per_key_per_minute = 5;
    opts.settings.limits.auth_failures_per_source_per_minute = 12;
    let app = spawn_app_with(opts).await;
    let head = {
        let state = app.state.clone();
        off_rt(move || state.store.audit_chains()).unwrap()
    };
    let forged = RawClient::new(
        app.base.clone(),
        Some(signer(app.platform.signer.key_id(), "not-the-secret")),
    );
    let body = serde_json::to_vec(&deposit_body("THROTTLE-1", json!([]))).unwrap();
    for i in 0..8 {
        let r = forged.send("POST", "/v1/deposits", &body).await.unwrap();
        if i < 5 {
            assert_problem(&r, 401, "invalid_signature");
        } else {
            assert_problem(&r, 429, "rate_limited");
            let secs: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
            assert!((1..=60).contains(&secs), "{secs}");
        }
    }
    // The tenant itself is not locked out by a forger.
    let r = app
        .post(
            &app.platform,
            "/v1/deposits",
            &deposit_body("THROTTLE-2", json!([])),
        )
        .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    // Four more failures naming no known key id spend the source's 12.
    let unknown = RawClient::new(app.base.clone(), Some(signer("k_nobody", "x")));
    for _ in 0..4 {
        let r = unknown.send("POST", "/v1/deposits", &body).await.unwrap();
        assert_problem(&r, 401, "invalid_signature");
    }
    // Now everything signed from this address waits, valid or not.
    let r = app
        .post(
            &app.funder,
            "/v1/redemptions",
            &json!({"code": "ac_x", "purpose": "drawdown"}),
        )
        .await;
    assert_problem(&r, 429, "rate_limited");
    assert!(r.headers.contains_key("retry-after"));
    let r = app.anonymous().send("GET", "/healthz", b"").await.unwrap();
    assert_eq!(r.status, 200, "unsigned routes are not throttled");

    // The minute ends: one entry for the key id, one for the source.
    app.advance(chrono::Duration::seconds(61));
    let mut entries = Vec::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let state = app.state.clone();
        let head = head.clone();
        entries = off_rt(move || state.store.audit_after(&head))
            .unwrap()
            .into_iter()
            .filter(|e| e.record.operation == "authenticate")
            .collect();
        if entries.len() >= 2 {
            break;
        }
    }
    assert_eq!(entries.len(), 2, "{entries:#?}");
    let key = entries
        .iter()
        .find(|e| e.record.actor == app.platform.id)
        .unwrap();
    assert_eq!(key.record.result, "invalid_signature");
    let detail = key.record.detail.as_deref().unwrap();
    assert!(
        detail.starts_with("8 failed authentications under this tenant's key id"),
        "{detail}"
    );
    let source = entries.iter().find(|e| e.record.actor == "system").unwrap();
    let detail = source.record.detail.as_deref().unwrap();
    assert!(
        detail.starts_with("4 failed authentications from 127.0.0.1"),
        "{detail}"
    );
    // A new window: the address may try again.
    let r = app
        .post(
            &app.platform,
            "/v1/deposits",
            &deposit_body("THROTTLE-3", json!([])),
        )
        .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
}

/// Finding 9: every file of the data directory is the owner's only
/// (vault.db, identity.db, their -wal and -shm, server.lock); they were
/// 0644 in a 0700 directory.
#[cfg(unix)]
#[actix_web::test]
async fn the_data_directorys_files_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let app = spawn_app().await;
    if app._database.is_some() {
        eprintln!("SKIPPED: file modes are SQLite's; this run is on PostgreSQL");
        return;
    }
    app.deposit("MODES-1", &["applicant"], 600).await;
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(app._dir.path()).unwrap() {
        let entry = entry.unwrap();
        let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
        let name = entry.file_name().to_string_lossy().into_owned();
        assert_eq!(mode, 0o600, "{name} is {mode:o}");
        seen.push(name);
    }
    seen.sort();
    for f in [
        "identity.db",
        "identity.db-wal",
        "server.lock",
        "vault.db",
        "vault.db-wal",
    ] {
        assert!(seen.iter().any(|s| s == f), "{f} missing from {seen:?}");
    }
}

/// Slow heads. The first request's head is cut by actix-http's deadline
/// (408, its problem+json body given by `conn::Guarded`). Beyond the nine: that deadline covers only the first
/// request of a connection, and it drains a chunked body its handler
/// stopped reading for as long as it comes. The connection guard
/// (`conn.rs`) answers or closes within four request deadlines of the
/// first unanswered byte: a second head sent a byte at a time, and a
/// chunked body dripped past its 408, are both cut; without the guard both
/// connections stay open past 12 s.
#[actix_web::test]
async fn slow_heads_after_the_first_request_and_drained_bodies_are_cut() {
    let mut opts = Options::default();
    opts.settings.server.request_timeout_ms = 1000;
    let app = spawn_app_with(opts).await;
    let a = addr(&app);
    let answer = Duration::from_millis(4 * 1000);
    let drip_head: Vec<u8> = b"X-Slow: 1\r\n".repeat(40);
    let first = format!("GET /healthz HTTP/1.1\r\nHost: {a}\r\n\r\nGET /healthz HTTP/1.1\r\n");
    let chunked = format!(
        "POST /v1/deposits HTTP/1.1\r\nHost: {a}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let drip_chunks = b"1\r\n \r\n".repeat(80);
    let first_head = format!("GET /healthz HTTP/1.1\r\nHost: {a}\r\n");
    let (first_slow, keep_alive, drained) = tokio::join!(
        drip(
            &a,
            first_head.as_bytes(),
            &drip_head,
            Duration::from_millis(100),
            Duration::from_secs(12)
        ),
        drip(
            &a,
            first.as_bytes(),
            &drip_head,
            Duration::from_millis(100),
            Duration::from_secs(12)
        ),
        drip(
            &a,
            chunked.as_bytes(),
            &drip_chunks,
            Duration::from_millis(50),
            Duration::from_secs(12)
        ),
    );
    // The first head: actix-http's own deadline, 408 `request_timeout`.
    assert_eq!(first_slow.status(), Some(408), "{}", first_slow.text());
    assert!(
        first_slow.text().contains("\"code\":\"request_timeout\""),
        "{}",
        first_slow.text()
    );
    assert!(first_slow.closed && first_slow.elapsed < Duration::from_millis(2500));
    assert!(
        keep_alive.closed,
        "the keep-alive connection was held: {}",
        keep_alive.text()
    );
    assert_eq!(
        keep_alive.status(),
        Some(200),
        "the first request was answered"
    );
    assert_eq!(drained.status(), Some(408), "{}", drained.text());
    assert!(
        drained.closed,
        "the drained connection was held: {}",
        drained.text()
    );
    // Closed within the answer deadline (plus the 408's own deadline).
    let margin = Duration::from_millis(1500);
    assert!(
        keep_alive.elapsed < answer + margin,
        "{:?}",
        keep_alive.elapsed
    );
    assert!(
        drained.elapsed < Duration::from_millis(1000) + answer + margin,
        "{:?}",
        drained.elapsed
    );
}

/// Finding 9: protocol errors. actix-http answers them itself, before any
/// service of ours runs: 400 (or 431 for too many or too large headers)
/// and `connection: close`; the connection's stream (`conn::Guarded`)
/// gives that answer its problem+json body. The answer is immediate, the
/// connection is closed, nothing is stored, and the server answers the
/// next request.
#[actix_web::test]
async fn protocol_errors_are_refused_with_a_problem_and_closed_before_anything_runs() {
    let app = spawn_app().await;
    let a = addr(&app);
    let h = format!("Host: {a}\r\nContent-Type: application/json\r\n");
    let body = serde_json::to_string(&deposit_body("PROTO-1", json!([]))).unwrap();
    let many: String = (0..120).map(|i| format!("X-H{i}: v\r\n")).collect();
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "two Content-Length",
            format!("POST /v1/deposits HTTP/1.1\r\n{h}Content-Length: {}\r\nContent-Length: 1\r\n\r\n{body}", body.len()),
            400,
            "malformed_request",
        ),
        (
            "Content-Length with chunked",
            format!("POST /v1/deposits HTTP/1.1\r\n{h}Content-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{body}", body.len()),
            400,
            "malformed_request",
        ),
        ("too many headers", format!("GET /healthz HTTP/1.1\r\n{h}{many}\r\n"), 431, "request_head_too_large"),
        (
            "a head over 128 KiB",
            format!("GET /healthz HTTP/1.1\r\n{h}X-Big: {}\r\n\r\n", "a".repeat(140_000)),
            431,
            "request_head_too_large",
        ),
        ("a malformed request line", "GET  /healthz HTTP/1.1 x\r\n\r\n".to_owned(), 400, "malformed_request"),
    ];
    for (what, request, status, code) in cases {
        let r = raw_request(&a, request.as_bytes()).await;
        assert_eq!(r.status(), Some(status), "{what}: {}", r.text());
        assert!(r.closed, "{what}: left open");
        assert!(r.answered_after.unwrap() < Duration::from_secs(1), "{what}");
        let text = r.text();
        let (head, problem) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let head = head.to_ascii_lowercase();
        assert!(
            head.contains("connection: close")
                && head.contains("content-type: application/problem+json")
                && head.contains(&format!("content-length: {}", problem.len())),
            "{what}: {text}"
        );
        let problem: serde_json::Value = serde_json::from_str(problem).unwrap();
        assert_eq!(problem["code"], code, "{what}: {problem}");
        assert_eq!(problem["status"], status, "{what}: {problem}");
    }
    let r = app.anonymous().send("GET", "/healthz", b"").await.unwrap();
    assert_eq!(r.status, 200);
    let state = app.state.clone();
    let stored = off_rt(move || state.store.audit_head_seq()).unwrap();
    let state = app.state.clone();
    let entries = off_rt(move || state.store.audit_after(&[])).unwrap();
    assert!(
        entries
            .iter()
            .all(|e| e.record.operation != "deposit.create"),
        "a malformed request was stored ({stored} entries)"
    );
}

/// Finding 1 at its depth, on the real binary under a 512 file-handle
/// limit (`prlimit`): 600 slow-body sockets, more than the limit allows,
/// while `/healthz` and signed deposits keep answering and the server
/// never runs out of file handles. The server caps its connections below
/// the limit (512 − 256 reserved − the store's 16 = 240) and the rest wait
/// in the listen backlog, costing no handle; before the cap and the
/// deadline, 1,100 such sockets against 1,024 handles made `/healthz` time
/// out for 71 s with "Too many open files" logged.
#[actix_web::test]
#[allow(clippy::zombie_processes)] // killed and waited for below
async fn slow_sockets_beyond_the_file_handle_limit_never_exhaust_it() {
    use std::io::Read as _;
    use std::process::{Command, Stdio};
    if Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!("SKIPPED: slow_sockets_beyond_the_file_handle_limit needs prlimit (util-linux)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("server.log");
    let root = new_root();
    let tenants = provision(dir.path(), &root, None);
    let child = Command::new("prlimit")
        .args(["--nofile=512:512", "--"])
        .arg(env!("CARGO_BIN_EXE_dzl-vault"))
        .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("DZL_ROOT_KEY", root.to_base64())
        .env_remove("DZL_ROOT_KEY_FILE")
        .env("DZL__SERVER__REQUEST_TIMEOUT_MS", "1000")
        .env("DZL__SERVER__WORKERS", "2")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut child = scopeguard(child);
    let read_log = || {
        let mut text = String::new();
        std::fs::File::open(&log)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        text
    };
    let mut port = None;
    for _ in 0..200 {
        port = read_log()
            .lines()
            .find_map(|l| l.split("dzl-vault listening on port ").nth(1))
            .and_then(|p| p.trim().parse::<u16>().ok());
        if port.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let port = port.unwrap_or_else(|| panic!("the server did not start: {}", read_log()));
    assert!(
        read_log()
            .contains("accepting at most 240 connections (2 workers × 120; file-handle limit 512)"),
        "{}",
        read_log()
    );
    let a = format!("127.0.0.1:{port}");
    // The limit is long enough for the last of the backlog on a busy machine.
    let slow = slow_deposits(
        &a,
        600,
        100,
        Duration::from_millis(200),
        Duration::from_secs(60),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let platform = dzl_sdk::RawClient::new(format!("http://{a}"), Some(tenants[0].signer.clone()));
    let anonymous = dzl_sdk::RawClient::new(format!("http://{a}"), None);
    for i in 0..3 {
        let t = Instant::now();
        let r = tokio::time::timeout(
            Duration::from_secs(15),
            anonymous.send("GET", "/healthz", b""),
        )
        .await
        .expect("healthz timed out")
        .unwrap();
        assert_eq!(r.status, 200);
        let body = serde_json::to_vec(&deposit_body(&format!("FD-{i}"), json!([]))).unwrap();
        let r = tokio::time::timeout(
            Duration::from_secs(15),
            platform.send("POST", "/v1/deposits", &body),
        )
        .await
        .expect("a signed deposit timed out")
        .unwrap();
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        eprintln!(
            "healthz + deposit {i} with 600 slow sockets held: {:?}",
            t.elapsed()
        );
    }
    // Every slow body is answered 408, or, when the machine is so busy
    // that the answer would come after the connection's answer deadline,
    // cut at that deadline: none is held.
    let (mut timeouts, mut cut, mut held) = (0, 0, 0);
    for s in slow {
        let r = s.await.unwrap();
        match (r.status(), r.closed) {
            (Some(408), _) => timeouts += 1,
            (None, true) => cut += 1,
            _ => held += 1,
        }
    }
    assert_eq!(
        (timeouts + cut, held),
        (600, 0),
        "{timeouts} answered 408, {cut} cut, {held} held or answered otherwise"
    );
    assert!(timeouts > 0, "no slow body was answered 408");
    let text = read_log();
    assert!(!text.contains("Too many open files"), "{text}");
    child.kill();
}

/// Kills the child when dropped (a failed assertion must not leave it).
struct ChildGuard(std::process::Child);

fn scopeguard(child: std::process::Child) -> ChildGuard {
    ChildGuard(child)
}

impl ChildGuard {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}
