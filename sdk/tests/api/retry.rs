//! The retry rules and the mapping of odd answers, against a scripted
//! server that answers each connection with the next reply of its script
//! and records what it was sent.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use dzl_sdk::types::{CodeId, Purpose};
use dzl_sdk::{Error, RetryPolicy, Signer, TransportError, Vault};

use crate::assert_err;
use crate::helpers::unknown_code;

enum Reply {
    /// Status, extra headers, body.
    Answer(u16, &'static str, String),
    /// Read the request, then say nothing for this long.
    Hang(Duration),
}

fn problem(status: u16, code: &str) -> Reply {
    let body = serde_json::json!({
        "type": format!("urn:dzl-vault:problem:{code}"), "title": "t",
        "status": status, "detail": "d", "code": code,
    });
    Reply::Answer(
        status,
        "Content-Type: application/problem+json\r\n",
        body.to_string(),
    )
}

struct Scripted {
    url: String,
    seen: Arc<Mutex<Vec<Vec<String>>>>,
    thread: Option<JoinHandle<()>>,
}

impl Scripted {
    /// Serves one connection per reply, then stops listening.
    fn start(script: Vec<Reply>) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let thread = std::thread::spawn(move || {
            for reply in script {
                let Ok((stream, _)) = listener.accept() else {
                    return;
                };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut head = Vec::new();
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    let line = line.trim_end().to_owned();
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    head.push(line);
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                log.lock().unwrap().push(head);
                let mut stream = stream;
                match reply {
                    Reply::Answer(status, headers, body) => {
                        let _ = write!(
                            stream,
                            "HTTP/1.1 {status} X\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                    }
                    Reply::Hang(d) => std::thread::sleep(d),
                }
            }
        });
        Scripted {
            url,
            seen,
            thread: Some(thread),
        }
    }

    fn requests(&mut self) -> Vec<Vec<String>> {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.seen.lock().unwrap().clone()
    }
}

fn fast() -> RetryPolicy {
    RetryPolicy {
        max_retries: 3,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        max_retry_after: Duration::from_secs(2),
    }
}

fn vault(url: &str, policy: RetryPolicy) -> Vault {
    Vault::builder(url)
        .timeout(Duration::from_millis(500))
        .retry(policy)
        .build()
        .unwrap()
}

fn code_id() -> CodeId {
    CodeId::parse(&format!("cod_{}", "0".repeat(32))).unwrap()
}

fn status_body() -> String {
    serde_json::json!({
        "code_id": code_id(), "deposit_id": format!("dep_{}", "0".repeat(32)),
        "state": "issued", "funder_id": format!("ten_{}", "0".repeat(32)),
        "scopes": ["risk"], "purpose": "drawdown",
        "expires_at": "2030-01-01T00:00:00Z", "redeemed_at": null, "outcome": null,
    })
    .to_string()
}

fn header<'a>(head: &'a [String], name: &str) -> &'a str {
    let prefix = format!("{}:", name.to_ascii_lowercase());
    head.iter()
        .find(|l| l.to_ascii_lowercase().starts_with(&prefix))
        .map(|l| l[prefix.len()..].trim())
        .unwrap_or("")
}

#[tokio::test]
async fn idempotent_calls_retry_503_and_429_each_signed_afresh() {
    let mut s = Scripted::start(vec![
        problem(503, "storage_unavailable"),
        Reply::Answer(
            429,
            "Retry-After: 1\r\nContent-Type: application/problem+json\r\n",
            r#"{"code":"rate_limited","detail":"d","status":429}"#.into(),
        ),
        Reply::Answer(200, "Content-Type: application/json\r\n", status_body()),
    ]);
    let platform = vault(&s.url, fast()).platform(Signer::new("k_p", "secret"));
    let started = std::time::Instant::now();
    let status = platform.code_status(&code_id()).await.unwrap();
    assert_eq!(status.code_id, code_id());
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was waited"
    );
    let seen = s.requests();
    assert_eq!(seen.len(), 3);
    let nonces: std::collections::HashSet<_> = seen
        .iter()
        .map(|h| header(h, "X-DZL-Nonce").to_owned())
        .collect();
    assert_eq!(nonces.len(), 3, "every attempt has its own nonce");
    assert!(seen.iter().all(|h| h[0].starts_with("GET /v1/codes/cod_")));
}

#[tokio::test]
async fn redeem_is_never_retried_once_sent() {
    // One reply only: a retry would find no listener and end as a
    // transport error instead.
    let mut s = Scripted::start(vec![problem(503, "storage_unavailable")]);
    let funder = vault(&s.url, fast()).funder(Signer::new("k_f", "secret"));
    match funder
        .redeem(&unknown_code(), Purpose::CreditApplication)
        .await
    {
        Err(Error::Unavailable { code, .. }) => {
            assert_eq!(code, Some(dzl_sdk::types::ErrorCode::StorageUnavailable))
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
    assert_eq!(s.requests().len(), 1);
}

#[tokio::test]
async fn a_redeem_that_times_out_may_have_gone_through() {
    let mut s = Scripted::start(vec![Reply::Hang(Duration::from_millis(1500))]);
    let funder = vault(&s.url, fast()).funder(Signer::new("k_f", "secret"));
    match funder
        .redeem(&unknown_code(), Purpose::CreditApplication)
        .await
    {
        Err(Error::Transport(e)) => {
            assert!(matches!(e, TransportError::Timeout(_)), "{e:?}");
            assert!(e.request_may_have_reached_vault());
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(s.requests().len(), 1, "sent once");
}

#[tokio::test]
async fn an_idempotent_call_that_times_out_is_sent_again() {
    let mut s = Scripted::start(vec![
        Reply::Hang(Duration::from_millis(600)),
        Reply::Answer(200, "Content-Type: application/json\r\n", status_body()),
    ]);
    let platform = vault(&s.url, fast()).platform(Signer::new("k_p", "secret"));
    platform.code_status(&code_id()).await.unwrap();
    assert_eq!(s.requests().len(), 2);
}

#[tokio::test]
async fn a_long_retry_after_is_left_to_the_caller() {
    let mut s = Scripted::start(vec![Reply::Answer(
        429,
        "Retry-After: 60\r\nContent-Type: application/problem+json\r\n",
        r#"{"code":"rate_limited","detail":"d","status":429}"#.into(),
    )]);
    let platform = vault(&s.url, fast()).platform(Signer::new("k_p", "secret"));
    match platform.code_status(&code_id()).await {
        Err(Error::RateLimited { retry_after }) => {
            assert_eq!(retry_after, Some(Duration::from_secs(60)))
        }
        other => panic!("expected rate_limited, got {other:?}"),
    }
    assert_eq!(s.requests().len(), 1);
}

#[tokio::test]
async fn no_connection_is_retried_even_for_redeem_and_reported_as_not_sent() {
    let url = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    }; // closed again: connections are refused
    let funder = vault(&url, fast()).funder(Signer::new("k_f", "secret"));
    match funder
        .redeem(&unknown_code(), Purpose::CreditApplication)
        .await
    {
        Err(Error::Transport(e)) => {
            assert!(matches!(e, TransportError::Connect(_)), "{e:?}");
            assert!(!e.request_may_have_reached_vault());
        }
        other => panic!("expected a connect error, got {other:?}"),
    }
}

#[tokio::test]
async fn odd_answers_are_mapped() {
    let mut s = Scripted::start(vec![
        Reply::Answer(
            502,
            "Content-Type: text/html\r\n",
            "<html>bad gateway</html>".into(),
        ),
        problem(418, "brand_new_code"),
        problem(500, "internal_error"),
        problem(404, "not_found"),
        problem(413, "payload_too_large"),
        Reply::Answer(
            200,
            "Content-Type: application/json\r\n",
            r#"{"surprise":true}"#.into(),
        ),
    ]);
    let v = vault(&s.url, RetryPolicy::none());
    let platform = v.platform(Signer::new("k_p", "secret"));
    let funder = v.funder(Signer::new("k_f", "secret"));
    assert_err!(
        platform.code_status(&code_id()).await,
        Error::UnexpectedResponse { status: 502, .. }
    );
    match platform.code_status(&code_id()).await {
        Err(Error::Other { code, status, .. }) => {
            assert_eq!((code.as_str(), status), ("brand_new_code", 418))
        }
        other => panic!("expected other, got {other:?}"),
    }
    assert_err!(
        platform.code_status(&code_id()).await,
        Error::Internal { .. }
    );
    assert_err!(
        platform.code_status(&code_id()).await,
        Error::BadRequest { status: 404, .. }
    );
    assert_err!(
        platform.code_status(&code_id()).await,
        Error::PayloadTooLarge
    );
    // A 200 that does not decode: the body is kept, its Debug is not.
    match funder
        .redeem(&unknown_code(), Purpose::CreditApplication)
        .await
    {
        Err(Error::UnexpectedResponse { status, body, .. }) => {
            assert_eq!(status, 200);
            assert_eq!(body.as_bytes(), br#"{"surprise":true}"#);
            assert!(!format!("{body:?}").contains("surprise"));
        }
        other => panic!("expected an undecodable answer, got {other:?}"),
    }
    assert_eq!(s.requests().len(), 6);
}

#[test]
fn base_urls_are_checked() {
    for bad in [
        "127.0.0.1:8080",
        "ftp://x",
        "http://x/prefix",
        "http://u:p@x",
        "http://x?q=1",
    ] {
        assert_err!(Vault::new(bad), Error::Config { .. });
    }
    assert_eq!(
        Vault::new("http://127.0.0.1:8080/").unwrap().base_url(),
        "http://127.0.0.1:8080"
    );
}

/// A client not told the suite signs for `intl`; a `gm` vault refuses the
/// algorithm (nothing happened), the client learns the suite from
/// `GET /v1/receipt-keys` and sends once more with HMAC-SM3, and keeps
/// signing so. A client told `gm` signs with HMAC-SM3 from the start.
#[tokio::test]
async fn a_refused_algorithm_makes_the_client_learn_the_suite_and_sign_again() {
    let keys = serde_json::json!({"suite": "gm", "keys": []}).to_string();
    let json = "Content-Type: application/json\r\n";
    let mut s = Scripted::start(vec![
        problem(401, "unsupported_signature_algorithm"),
        Reply::Answer(200, json, keys),
        Reply::Answer(200, json, status_body()),
        Reply::Answer(200, json, status_body()),
    ]);
    let platform = vault(&s.url, fast()).platform(Signer::new("k_p", "secret"));

    platform.code_status(&code_id()).await.unwrap();
    platform.code_status(&code_id()).await.unwrap();

    let seen = s.requests();
    let lines: Vec<&str> = seen.iter().map(|h| h[0].as_str()).collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(lines[1].starts_with("GET /v1/receipt-keys "), "{lines:?}");
    let sig = |i: usize| header(&seen[i], "x-dzl-signature").to_owned();
    assert!(!sig(0).starts_with("HMAC-"), "{}", sig(0));
    assert!(sig(2).starts_with("HMAC-SM3 "), "{}", sig(2));
    assert!(sig(3).starts_with("HMAC-SM3 "), "{}", sig(3));

    let mut told = Scripted::start(vec![Reply::Answer(200, json, status_body())]);
    let vault = Vault::builder(&told.url)
        .suite(dzl_sdk::Suite::Gm)
        .retry(fast())
        .build()
        .unwrap();
    vault
        .platform(Signer::new("k_p", "secret"))
        .code_status(&code_id())
        .await
        .unwrap();
    let seen = told.requests();
    assert_eq!(seen.len(), 1);
    assert!(header(&seen[0], "x-dzl-signature").starts_with("HMAC-SM3 "));
}
