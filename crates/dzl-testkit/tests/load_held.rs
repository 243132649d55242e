//! Load held (issue 6, item 9): the real `dzl-vault` binary under sustained
//! overload — 32 clients of one platform whose rate limit is 20 requests a
//! second, sending deposits as fast as they are answered for 4 seconds.
//!
//! * every answer is 201 or 429 `rate_limited` with `Retry-After` (no 5xx,
//!   no timeout);
//! * 429s are quick (p99 well under the admitted requests' latency bound);
//! * the admitted requests keep a bounded p99;
//! * the limiter admits what the rate allows — no more than rate × time plus
//!   one bucket, and not starved below half of it;
//! * nothing is lost and nothing extra is stored: the operator's subject
//!   access report lists exactly the admitted deposits, and every admitted
//!   deposit's code redeems.
//!
//! The thresholds are loose enough for a debug build on two shared cores;
//! the figures of a run are printed (docs/reliability.md).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dzl_sdk::RawClient;
use dzl_testkit::process::{vault_binary, wait_ready, VaultProcess};
use dzl_testkit::{canary, deposit_body, new_root, provision, Provision};
use serde_json::json;

const RATE: u32 = 20;
const CLIENTS: usize = 32;
const SECONDS: u64 = 4;

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_refused_quickly_admitted_work_stays_bounded_and_nothing_is_lost() {
    let bin = vault_binary().expect("the dzl-vault binary");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let root = new_root().unwrap();
    let tenants = provision(
        &data,
        &root,
        &Provision {
            rate_limit: Some(RATE),
            others_rate_limit: Some(1_000_000),
        },
    )
    .unwrap();
    let server = VaultProcess::start(
        &bin,
        &data,
        &root,
        &dir.path().join("server.log"),
        Duration::from_secs(30),
    )
    .unwrap();
    wait_ready(&server.base, Duration::from_secs(30))
        .await
        .unwrap();

    #[derive(Default)]
    struct Seen {
        admitted: Vec<Duration>,
        refused: Vec<Duration>,
        codes: Vec<String>,
        other: Vec<String>,
    }
    let seen = Arc::new(Mutex::new(Seen::default()));
    let start = Instant::now();
    let until = start + Duration::from_secs(SECONDS);
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let client = RawClient::new(server.base.clone(), Some(tenants.platform.signer()));
        let funder_id = tenants.funder.tenant_id.clone();
        let seen = seen.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while Instant::now() < until {
                n += 1;
                let body =
                    serde_json::to_vec(&deposit_body(&format!("LH-{c}-{n}"), &funder_id)).unwrap();
                let t = Instant::now();
                let r = tokio::time::timeout(
                    Duration::from_secs(10),
                    client.send("POST", "/v1/deposits", &body),
                )
                .await;
                let took = t.elapsed();
                let mut s = seen.lock().unwrap();
                match r {
                    Ok(Ok(r)) if r.status == 201 => {
                        s.admitted.push(took);
                        s.codes
                            .push(r.json()["codes"][0]["code"].as_str().unwrap().to_owned());
                    }
                    Ok(Ok(r)) if r.status == 429 => {
                        let retry = r.headers.get("retry-after").and_then(|v| v.to_str().ok());
                        if r.json()["code"] != "rate_limited"
                            || !retry.is_some_and(|v| v.parse::<u64>().is_ok_and(|s| s >= 1))
                        {
                            s.other.push(format!(
                                "a 429 without rate_limited and Retry-After: {:?}",
                                r
                            ));
                        }
                        s.refused.push(took);
                    }
                    Ok(Ok(r)) => {
                        s.other
                            .push(format!("{} {}", r.status, String::from_utf8_lossy(&r.body)))
                    }
                    Ok(Err(e)) => s.other.push(format!("transport: {e}")),
                    Err(_) => s.other.push("no answer within 10 s".into()),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let (mut admitted, mut refused, codes, other) = {
        let s = seen.lock().unwrap();
        (
            s.admitted.clone(),
            s.refused.clone(),
            s.codes.clone(),
            s.other.clone(),
        )
    };
    let a99 = percentile(&mut admitted, 0.99);
    let a50 = percentile(&mut admitted, 0.50);
    let r99 = percentile(&mut refused, 0.99);
    let r50 = percentile(&mut refused, 0.50);
    eprintln!(
        "load held: {CLIENTS} clients, rate limit {RATE}/s, {elapsed:.1} s: {} admitted \
         (p50 {a50:?}, p99 {a99:?}), {} refused with 429 (p50 {r50:?}, p99 {r99:?}), {} other",
        admitted.len(),
        refused.len(),
        other.len()
    );
    assert!(
        other.is_empty(),
        "answers other than 201 and 429: {other:#?}"
    );
    let allowed = RATE as f64 * elapsed + RATE as f64 + 2.0;
    assert!(
        (admitted.len() as f64) <= allowed,
        "{} admitted, more than the {allowed:.0} the rate allows",
        admitted.len()
    );
    assert!(
        admitted.len() as f64 >= 0.5 * RATE as f64 * SECONDS as f64,
        "only {} admitted: the limiter starved the tenant",
        admitted.len()
    );
    assert!(refused.len() > admitted.len(), "the load was no overload");
    assert!(
        r99 < Duration::from_millis(500),
        "429s are slow: p99 {r99:?}"
    );
    assert!(
        a99 < Duration::from_secs(3),
        "admitted p99 unbounded: {a99:?}"
    );

    // Nothing lost, nothing extra.
    let operator = RawClient::new(server.base.clone(), Some(tenants.operator.signer()));
    let body =
        serde_json::to_vec(&json!({"id_type": "resident_id", "id_number": canary::ID_NUMBER}))
            .unwrap();
    let r = operator
        .send("POST", "/v1/subject-access", &body)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["deposits"].as_array().unwrap().len(),
        codes.len(),
        "stored deposits differ from the admitted ones"
    );
    let funder = RawClient::new(server.base.clone(), Some(tenants.funder.signer()));
    for code in &codes {
        let body =
            serde_json::to_vec(&json!({"code": code, "purpose": "credit_application"})).unwrap();
        let r = funder.send("POST", "/v1/redemptions", &body).await.unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    server.stop(Duration::from_secs(10)).unwrap();
    dzl_testkit::check_store(&data).unwrap();
}
