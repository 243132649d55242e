//! The load itself: one HTTP/1.1 keep-alive connection per task, each task
//! sending signed POSTs back to back (closed loop) until the phase's
//! deadline or until it runs out of work, recording every latency in an HDR
//! histogram and every answer's status.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dzl_sdk::Signer;
use dzl_types::signing;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::Deserialize;

use crate::body::{redemption_body, DepositBodies};
use crate::target::Target;

/// How long in-flight requests may take after a phase's deadline before
/// they are abandoned (and counted as timeouts).
pub const GRACE: Duration = Duration::from_secs(10);

/// Latencies are recorded in microseconds, up to an hour.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// What a phase sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Deposit-sized JSON to the echo server.
    Echo,
    /// Deposits whose codes are kept for the redemption phase.
    Deposit,
    /// Deposits whose codes are dropped (filling the store).
    Preload,
    /// Redemptions of kept codes.
    Redeem,
}

/// Codes to redeem, each handed out once.
#[derive(Debug, Default)]
pub struct CodePool {
    codes: Vec<String>,
    next: AtomicUsize,
}

impl CodePool {
    /// A pool of `codes`.
    pub fn new(codes: Vec<String>) -> Self {
        CodePool {
            codes,
            next: AtomicUsize::new(0),
        }
    }

    /// The next code, or `None` when all are handed out.
    fn take(&self) -> Option<&str> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        self.codes.get(i).map(String::as_str)
    }

    /// How many codes the pool holds.
    pub fn len(&self) -> usize {
        self.codes.len()
    }
}

/// One phase's work, shared by its tasks.
#[derive(Debug)]
pub struct Work {
    kind: Kind,
    path: &'static str,
    signer: Signer,
    bodies: Arc<DepositBodies>,
    /// Body numbers, shared by all deposit phases of a run.
    seq: Arc<AtomicU64>,
    /// Preload: how many deposits to send in all.
    limit: u64,
    issued: AtomicU64,
    pool: Arc<CodePool>,
    /// Answers so far, and the successful ones (for progress reports).
    pub done: AtomicU64,
    /// Successful answers so far.
    pub ok: AtomicU64,
}

impl Work {
    /// A phase of `kind`: `signer` signs every request; deposit-shaped
    /// bodies come from `bodies` numbered by `seq`; preloads stop after
    /// `limit` requests; redemptions take codes from `pool`.
    pub fn new(
        kind: Kind,
        signer: Signer,
        bodies: Arc<DepositBodies>,
        seq: Arc<AtomicU64>,
        limit: u64,
        pool: Arc<CodePool>,
    ) -> Self {
        let path = match kind {
            Kind::Echo => "/echo",
            Kind::Deposit | Kind::Preload => "/v1/deposits",
            Kind::Redeem => "/v1/redemptions",
        };
        Work {
            kind,
            path,
            signer,
            bodies,
            seq,
            limit,
            issued: AtomicU64::new(0),
            pool,
            done: AtomicU64::new(0),
            ok: AtomicU64::new(0),
        }
    }

    /// The status that counts as success.
    pub fn ok_status(&self) -> u16 {
        match self.kind {
            Kind::Echo | Kind::Redeem => 200,
            Kind::Deposit | Kind::Preload => 201,
        }
    }

    fn next_body(&self) -> Option<String> {
        match self.kind {
            Kind::Echo | Kind::Deposit => {
                Some(self.bodies.body(self.seq.fetch_add(1, Ordering::Relaxed)))
            }
            Kind::Preload => {
                if self.issued.fetch_add(1, Ordering::Relaxed) >= self.limit {
                    return None;
                }
                Some(self.bodies.body(self.seq.fetch_add(1, Ordering::Relaxed)))
            }
            Kind::Redeem => self.pool.take().map(redemption_body),
        }
    }
}

/// What one phase measured.
#[derive(Debug)]
pub struct PhaseResult {
    /// Connections (= tasks).
    pub connections: usize,
    /// From the first request to the last answer.
    pub elapsed: Duration,
    /// Answers received (any status).
    pub requests: u64,
    /// Answers with the success status.
    pub ok: u64,
    /// The success status.
    pub ok_status: u16,
    /// Answers per status.
    pub statuses: BTreeMap<u16, u64>,
    /// Requests that got no answer (connection refused, reset, …).
    pub transport_errors: u64,
    /// Requests still unanswered [`GRACE`] after the deadline.
    pub timeouts: u64,
    /// Whether the phase ended because it ran out of work (codes, preload count).
    pub exhausted: bool,
    /// Latency of every answered request, in microseconds.
    pub latency_us: Histogram<u64>,
    /// Codes issued by deposits (deposit phase only).
    pub codes: Vec<String>,
    /// This process's CPU time during the phase, by thread group.
    pub cpu: BTreeMap<&'static str, crate::cpu::Usage>,
}

impl PhaseResult {
    /// Answers per second.
    pub fn throughput(&self) -> f64 {
        per_second(self.requests, self.elapsed)
    }

    /// Successful answers per second.
    pub fn ok_throughput(&self) -> f64 {
        per_second(self.ok, self.elapsed)
    }

    /// A latency quantile in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        self.latency_us.value_at_quantile(q) as f64 / 1000.0
    }

    /// The largest latency in milliseconds.
    pub fn max_ms(&self) -> f64 {
        self.latency_us.max() as f64 / 1000.0
    }

    /// The mean latency in milliseconds.
    pub fn mean_ms(&self) -> f64 {
        self.latency_us.mean() / 1000.0
    }
}

fn per_second(n: u64, d: Duration) -> f64 {
    let s = d.as_secs_f64();
    if s > 0.0 {
        n as f64 / s
    } else {
        0.0
    }
}

fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
        .map_err(|e| anyhow::anyhow!("histogram: {e:?}"))
}

type Sender = SendRequest<Full<Bytes>>;

/// Opens one keep-alive HTTP/1.1 connection (Nagle off).
async fn connect(target: &Target) -> anyhow::Result<Sender> {
    let stream = tokio::net::TcpStream::connect(target.addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

#[derive(Deserialize)]
struct DepositAnswer {
    codes: Vec<CodeAnswer>,
}

#[derive(Deserialize)]
struct CodeAnswer {
    code: String,
}

struct TaskStats {
    latency_us: Histogram<u64>,
    statuses: BTreeMap<u16, u64>,
    transport_errors: u64,
    timeouts: u64,
    exhausted: bool,
    codes: Vec<String>,
}

async fn task(
    target: Arc<Target>,
    work: Arc<Work>,
    first: Sender,
    deadline: Instant,
    hard_deadline: Instant,
) -> anyhow::Result<TaskStats> {
    let mut st = TaskStats {
        latency_us: new_histogram()?,
        statuses: BTreeMap::new(),
        transport_errors: 0,
        timeouts: 0,
        exhausted: false,
        codes: Vec::new(),
    };
    let ok_status = work.ok_status();
    let mut sender = Some(first);
    while Instant::now() < deadline {
        let mut s = match sender.take() {
            Some(s) if !s.is_closed() => s,
            _ => match connect(&target).await {
                Ok(s) => s,
                Err(_) => {
                    st.transport_errors += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        if s.ready().await.is_err() {
            st.transport_errors += 1;
            continue;
        }
        let Some(body) = work.next_body() else {
            st.exhausted = true;
            break;
        };
        let h = work.signer.sign("POST", work.path, body.as_bytes());
        let req = hyper::Request::builder()
            .method(hyper::Method::POST)
            .uri(work.path)
            .header(hyper::header::HOST, target.host_header.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(signing::HEADER_KEY_ID, h.key_id)
            .header(signing::HEADER_TIMESTAMP, h.timestamp.to_string())
            .header(signing::HEADER_NONCE, h.nonce)
            .header(signing::HEADER_SIGNATURE, h.signature)
            .body(Full::new(Bytes::from(body)))?;
        let t0 = Instant::now();
        let answer = tokio::time::timeout_at(hard_deadline.into(), async {
            let resp = s.send_request(req).await?;
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body))
        })
        .await;
        match answer {
            Ok(Ok((status, body))) => {
                let us = t0.elapsed().as_micros().min(u128::from(MAX_LATENCY_US)) as u64;
                st.latency_us.saturating_record(us.max(1));
                *st.statuses.entry(status).or_default() += 1;
                work.done.fetch_add(1, Ordering::Relaxed);
                if status == ok_status {
                    work.ok.fetch_add(1, Ordering::Relaxed);
                    if work.kind == Kind::Deposit {
                        if let Ok(a) = serde_json::from_slice::<DepositAnswer>(&body) {
                            st.codes.extend(a.codes.into_iter().map(|c| c.code));
                        }
                    }
                }
                sender = Some(s);
            }
            // The connection is dropped; the next round opens a new one.
            Ok(Err(_)) => st.transport_errors += 1,
            Err(_) => {
                st.timeouts += 1;
                break;
            }
        }
    }
    Ok(st)
}

/// Called about every tick of a phase with its work and the time since it began.
pub type Progress = Box<dyn Fn(&Work, Duration) + Send + Sync>;

/// Runs `work` over `connections` connections for at most `duration` (all
/// connections are opened before the clock starts). `on_tick`, when given,
/// is called about every `tick` while the phase runs.
pub async fn run_phase(
    targets: &[Target],
    work: Arc<Work>,
    connections: usize,
    duration: Duration,
    progress: Option<(Duration, Progress)>,
) -> anyhow::Result<PhaseResult> {
    anyhow::ensure!(!targets.is_empty(), "no target to drive");
    // Connection i goes to target i mod n: replicas share the load evenly.
    let targets: Vec<Arc<Target>> = targets.iter().cloned().map(Arc::new).collect();
    let mut opening = tokio::task::JoinSet::new();
    for i in 0..connections {
        let t = targets[i % targets.len()].clone();
        opening.spawn(async move {
            let s = connect(&t)
                .await
                .map_err(|e| anyhow::anyhow!("connecting to {}: {e}", t.addr));
            s.map(|s| (t, s))
        });
    }
    let mut senders = Vec::with_capacity(connections);
    while let Some(r) = opening.join_next().await {
        senders.push(r??);
    }
    let cpu_before = crate::cpu::Snapshot::take();
    let start = Instant::now();
    let deadline = start + duration;
    let hard_deadline = deadline + GRACE;
    let reporter = progress.map(|(tick, f)| {
        let w = work.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(tick);
            interval.tick().await;
            loop {
                interval.tick().await;
                f(&w, start.elapsed());
            }
        })
    });
    let mut tasks = tokio::task::JoinSet::new();
    for (target, s) in senders {
        tasks.spawn(task(target, work.clone(), s, deadline, hard_deadline));
    }
    let mut result = PhaseResult {
        connections,
        elapsed: Duration::ZERO,
        requests: 0,
        ok: 0,
        ok_status: work.ok_status(),
        statuses: BTreeMap::new(),
        transport_errors: 0,
        timeouts: 0,
        exhausted: false,
        latency_us: new_histogram()?,
        codes: Vec::new(),
        cpu: BTreeMap::new(),
    };
    while let Some(r) = tasks.join_next().await {
        let st = r??;
        result
            .latency_us
            .add(&st.latency_us)
            .map_err(|e| anyhow::anyhow!("histogram: {e:?}"))?;
        for (status, n) in st.statuses {
            *result.statuses.entry(status).or_default() += n;
        }
        result.transport_errors += st.transport_errors;
        result.timeouts += st.timeouts;
        result.exhausted |= st.exhausted;
        result.codes.extend(st.codes);
    }
    result.elapsed = start.elapsed();
    result.cpu = cpu_before.usage_until(&crate::cpu::Snapshot::take());
    if let Some(r) = reporter {
        r.abort();
    }
    result.requests = result.statuses.values().sum();
    result.ok = result.statuses.get(&result.ok_status).copied().unwrap_or(0);
    Ok(result)
}
