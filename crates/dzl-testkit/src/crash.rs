//! The crash harness (issue 6, item 2): mixed load against the real
//! `dzl-vault` binary, SIGKILL at a random moment, restart, check.
//!
//! Each cycle: start the server over the same data directory → verify what
//! the previous cycles acknowledged (below) → run deposits and redemptions
//! from several concurrent clients → SIGKILL after a random delay while
//! requests are in flight → `PRAGMA integrity_check` of `vault.db` and
//! `identity.db` and the audit chain, with the server down.
//!
//! The harness keeps a model of every code it was *acknowledged*:
//!
//! | state | how a code gets there | what a redemption must answer after any restart |
//! |---|---|---|
//! | issued | its deposit was answered 201 | 200, with the deposited identity |
//! | unknown | a redemption was sent and no answer came (killed) | 200 or 409 `code_already_redeemed` |
//! | redeemed | a redemption was answered 200 | 409 `code_already_redeemed`, never 200 again |
//!
//! Anything else is a violation: a lost deposit (404, 410), a lost or
//! phantom redemption (409 for an issued code), a double redemption (200 for
//! a redeemed code), a 5xx, a failed integrity check, a broken audit chain,
//! or an acknowledged deposit or redemption missing from the audit trail.
//! Every cycle verifies all unknown codes and a sample of the others; the
//! end verifies every code.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dzl_sdk::RawClient;
use dzl_store::Store as _;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde::Serialize;
use serde_json::json;

use crate::process::{wait_ready, VaultProcess};
use crate::{canary, check_store, deposit_body, new_root, provision, Provision};

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Kill cycles.
    pub cycles: usize,
    /// Concurrent clients during the load.
    pub workers: usize,
    /// The kill comes this long after the load starts, at the earliest…
    pub min_load: Duration,
    /// …and at the latest.
    pub max_load: Duration,
    /// Codes of each state verified per cycle (all unknown ones always).
    pub sample: usize,
    /// Random seed (kill moments, operation mix).
    pub seed: u64,
    /// The `dzl-vault` binary.
    pub bin: PathBuf,
    /// The data directory (a new temporary one when `None`; kept on failure).
    pub data_dir: Option<PathBuf>,
    /// Print a line per cycle.
    pub verbose: bool,
}

impl Config {
    /// Defaults for `cycles` cycles of `bin`.
    pub fn new(bin: PathBuf, cycles: usize) -> Self {
        Config {
            cycles,
            workers: 8,
            min_load: Duration::from_millis(50),
            max_load: Duration::from_millis(700),
            sample: 10,
            seed: rand::random(),
            bin,
            data_dir: None,
            verbose: false,
        }
    }
}

/// The figures of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Seed used.
    pub seed: u64,
    /// Kill cycles completed (each one a SIGKILL and a restart).
    pub cycles: usize,
    /// Deposits answered 201.
    pub deposits_acknowledged: u64,
    /// Redemptions answered 200 during the load.
    pub redemptions_acknowledged: u64,
    /// Requests in flight when the server was killed (no answer).
    pub unanswered_requests: u64,
    /// Redemptions with no answer, later found redeemed (409) or redeemable (200).
    pub unknown_resolved_redeemed: u64,
    /// Of those, ones that had not committed and redeemed afterwards.
    pub unknown_resolved_not_committed: u64,
    /// Verification redemptions that answered as the model said.
    pub verifications: u64,
    /// Acknowledged writes lost (must be 0).
    pub lost: u64,
    /// Codes redeemed twice (must be 0).
    pub double_redemptions: u64,
    /// `integrity_check` runs, each on both databases.
    pub integrity_checks: u64,
    /// Audit entries in the chain verified at the end.
    pub audit_entries: u64,
    /// Everything that broke a rule.
    pub violations: Vec<String>,
    /// Wall time.
    pub seconds: f64,
    /// The data directory when it was kept.
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Issued,
    InFlight,
    Unknown,
    Redeemed,
}

#[derive(Debug, Clone)]
struct Code {
    code: String,
    deposit_id: String,
    state: State,
    redemption_id: Option<String>,
}

#[derive(Default)]
struct Model {
    codes: Vec<Code>,
    deposits: Vec<String>,
    violations: Vec<String>,
    deposits_acked: u64,
    redemptions_acked: u64,
    unanswered: u64,
    lost: u64,
    double: u64,
}

impl Model {
    fn violation(&mut self, v: String) {
        log::error!("violation: {v}");
        self.violations.push(v);
    }
}

struct Clients {
    platform: RawClient,
    funder: RawClient,
    funder_id: String,
}

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) async fn send(
    c: &RawClient,
    method: &str,
    path: &str,
    body: &serde_json::Value,
) -> Option<dzl_sdk::RawResponse> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    send_bytes(c, method, path, &bytes).await
}

/// Sends a request; `None` when no answer came (in time).
pub(crate) async fn send_bytes(
    c: &RawClient,
    method: &str,
    path: &str,
    body: &[u8],
) -> Option<dzl_sdk::RawResponse> {
    match tokio::time::timeout(REQUEST_TIMEOUT, c.send(method, path, body)).await {
        Ok(Ok(r)) => Some(r),
        _ => None,
    }
}

pub(crate) fn problem_code(r: &dzl_sdk::RawResponse) -> String {
    r.json()["code"].as_str().unwrap_or("").to_owned()
}

/// Checks a 200 redemption body: the right deposit, the canary identity.
fn released_ok(r: &dzl_sdk::RawResponse, deposit_id: &str) -> Result<String, String> {
    let v = r.json();
    if v["deposit_id"] != deposit_id {
        return Err(format!(
            "redemption released deposit {} not {deposit_id}",
            v["deposit_id"]
        ));
    }
    if v["applicant"]["id_number"] != canary::ID_NUMBER || v["device"]["device_id"] != "d-1" {
        return Err(format!("redemption of {deposit_id} released other data"));
    }
    v["redemption_id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| "redemption without id".to_owned())
}

async fn redeem(c: &Clients, code: &str) -> Option<dzl_sdk::RawResponse> {
    redeem_as(&c.funder, code).await
}

/// `funder` redeems `code` for `credit_application`.
pub(crate) async fn redeem_as(funder: &RawClient, code: &str) -> Option<dzl_sdk::RawResponse> {
    send(
        funder,
        "POST",
        "/v1/redemptions",
        &json!({"code": code, "purpose": "credit_application"}),
    )
    .await
}

/// One client of the load: deposits and redemptions until `stop`.
async fn worker(
    id: usize,
    cycle: usize,
    c: Arc<Clients>,
    model: Arc<Mutex<Model>>,
    stop: Arc<AtomicBool>,
    seq: Arc<AtomicU64>,
    seed: u64,
) {
    let mut rng = StdRng::seed_from_u64(seed ^ ((cycle as u64) << 20) ^ id as u64);
    while !stop.load(Ordering::SeqCst) {
        // Pick a code to redeem (60 %) or deposit.
        let picked = if rng.gen_bool(0.6) {
            let mut m = model.lock().unwrap_or_else(|e| e.into_inner());
            let issued: Vec<usize> = m
                .codes
                .iter()
                .enumerate()
                .filter(|(_, c)| c.state == State::Issued)
                .map(|(i, _)| i)
                .collect();
            if issued.is_empty() {
                None
            } else {
                let i = issued[rng.gen_range(0..issued.len())];
                m.codes[i].state = State::InFlight;
                Some((i, m.codes[i].code.clone(), m.codes[i].deposit_id.clone()))
            }
        } else {
            None
        };
        match picked {
            Some((i, code, deposit_id)) => {
                let r = redeem(&c, &code).await;
                let mut m = model.lock().unwrap_or_else(|e| e.into_inner());
                match r {
                    None => {
                        m.codes[i].state = State::Unknown;
                        m.unanswered += 1;
                    }
                    Some(r) if r.status == 200 => match released_ok(&r, &deposit_id) {
                        Ok(rid) => {
                            m.codes[i].state = State::Redeemed;
                            m.codes[i].redemption_id = Some(rid);
                            m.redemptions_acked += 1;
                        }
                        Err(e) => m.violation(format!("cycle {cycle}: {e}")),
                    },
                    Some(r) if r.status == 429 => m.codes[i].state = State::Issued,
                    Some(r) => {
                        let code = problem_code(&r);
                        m.lost += 1;
                        m.violation(format!(
                            "cycle {cycle}: an acknowledged, never redeemed code answered {} {code}",
                            r.status
                        ));
                    }
                }
            }
            None => {
                let n = seq.fetch_add(1, Ordering::SeqCst);
                let body = deposit_body(&format!("CR-{cycle}-{n}"), &c.funder_id);
                let r = send(&c.platform, "POST", "/v1/deposits", &body).await;
                let mut m = model.lock().unwrap_or_else(|e| e.into_inner());
                match r {
                    None => m.unanswered += 1,
                    Some(r) if r.status == 201 => {
                        let v = r.json();
                        let deposit_id = v["deposit_id"].as_str().unwrap_or("").to_owned();
                        match v["codes"][0]["code"].as_str() {
                            Some(code) => {
                                m.codes.push(Code {
                                    code: code.to_owned(),
                                    deposit_id: deposit_id.clone(),
                                    state: State::Issued,
                                    redemption_id: None,
                                });
                                m.deposits.push(deposit_id);
                                m.deposits_acked += 1;
                            }
                            None => {
                                m.violation(format!("cycle {cycle}: a 201 deposit without a code"))
                            }
                        }
                    }
                    Some(r) if r.status == 429 => {}
                    Some(r) => {
                        let code = problem_code(&r);
                        m.violation(format!(
                            "cycle {cycle}: a deposit answered {} {code}",
                            r.status
                        ));
                    }
                }
            }
        }
    }
}

/// Redeems `idx` and checks the answer against the model; updates it.
async fn verify_code(c: &Clients, model: &Mutex<Model>, idx: usize, cycle: usize) -> (bool, bool) {
    let (code, deposit_id, state) = {
        let m = model.lock().unwrap_or_else(|e| e.into_inner());
        let k = &m.codes[idx];
        (k.code.clone(), k.deposit_id.clone(), k.state)
    };
    let r = redeem(c, &code).await;
    let mut m = model.lock().unwrap_or_else(|e| e.into_inner());
    let Some(r) = r else {
        m.violation(format!(
            "cycle {cycle}: no answer to a verification redemption"
        ));
        return (false, false);
    };
    let pc = problem_code(&r);
    match (state, r.status) {
        (State::Issued | State::Unknown, 200) => match released_ok(&r, &deposit_id) {
            Ok(rid) => {
                m.codes[idx].state = State::Redeemed;
                m.codes[idx].redemption_id = Some(rid);
                (true, state == State::Unknown)
            }
            Err(e) => {
                m.violation(format!("cycle {cycle}: {e}"));
                (false, false)
            }
        },
        (State::Unknown | State::Redeemed, 409) if pc == "code_already_redeemed" => {
            m.codes[idx].state = State::Redeemed;
            (true, false)
        }
        (State::Redeemed, 200) => {
            m.double += 1;
            m.violation(format!(
                "cycle {cycle}: an acknowledged redemption redeemed again (deposit {deposit_id})"
            ));
            (false, false)
        }
        (s, status) => {
            m.lost += 1;
            m.violation(format!(
                "cycle {cycle}: a {s:?} code of deposit {deposit_id} answered {status} {pc}"
            ));
            (false, false)
        }
    }
}

/// Verifies every unknown code, and `sample` issued and redeemed ones (all
/// of them when `sample` is `None`). Returns the verification count.
async fn verify(
    c: &Arc<Clients>,
    model: &Arc<Mutex<Model>>,
    sample: Option<usize>,
    rng: &mut StdRng,
    cycle: usize,
    report: &mut Report,
) -> u64 {
    let pick = |state: State, rng: &mut StdRng| -> Vec<usize> {
        let m = model.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<usize> = (0..m.codes.len())
            .filter(|i| m.codes[*i].state == state)
            .collect();
        if let Some(n) = sample {
            use rand::seq::SliceRandom as _;
            all.shuffle(rng);
            all.truncate(n);
        }
        all
    };
    // Unknown first (they are the interesting ones), then redeemed (must be
    // 409), then issued (redeems them now).
    let mut order = pick(State::Unknown, rng);
    let unknown: HashSet<usize> = order.iter().copied().collect();
    order.extend(pick(State::Redeemed, rng));
    order.extend(pick(State::Issued, rng));
    let mut n = 0;
    for chunk in order.chunks(8) {
        let mut set = tokio::task::JoinSet::new();
        for &idx in chunk {
            let c2 = c.clone();
            let m2 = model.clone();
            let was_unknown = unknown.contains(&idx);
            set.spawn(async move { (verify_code(&c2, &m2, idx, cycle).await, was_unknown) });
        }
        while let Some(res) = set.join_next().await {
            if let Ok(((ok, fresh), was_unknown)) = res {
                if ok {
                    n += 1;
                    if was_unknown {
                        if fresh {
                            report.unknown_resolved_not_committed += 1;
                        } else {
                            report.unknown_resolved_redeemed += 1;
                        }
                    }
                }
            }
        }
    }
    n
}

/// Every acknowledged deposit and redemption has its `ok` audit entry.
fn check_audit_trail(dir: &Path, model: &Mutex<Model>) -> anyhow::Result<Vec<String>> {
    let store = dzl_store::SqliteStore::open(dir).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut deposits = HashSet::new();
    let mut redemptions = HashSet::new();
    let mut after = 0;
    loop {
        let page = store
            .audit_entries(dzl_store::ROOT_CHAIN, after, 10_000)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for e in &page {
            if e.record.result != "ok" {
                continue;
            }
            if e.record.operation == "deposit.create" {
                deposits.extend(e.record.deposit_id.clone());
            }
            if e.record.operation == "redemption.create" {
                redemptions.extend(e.record.redemption_id.clone());
            }
        }
    }
    store.close();
    let m = model.lock().unwrap_or_else(|e| e.into_inner());
    let mut missing = Vec::new();
    for d in &m.deposits {
        if !deposits.contains(d) {
            missing.push(format!(
                "acknowledged deposit {d} has no deposit.create ok audit entry"
            ));
        }
    }
    for c in &m.codes {
        if let Some(r) = &c.redemption_id {
            if !redemptions.contains(r) {
                missing.push(format!(
                    "acknowledged redemption {r} has no redemption.create ok audit entry"
                ));
            }
        }
    }
    Ok(missing)
}

/// Runs the harness.
pub fn run(cfg: &Config) -> anyhow::Result<Report> {
    let started = Instant::now();
    let temp;
    let dir: PathBuf = match &cfg.data_dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            temp = tempfile::Builder::new().prefix("dzl-crash-").tempdir()?;
            temp.path().to_owned()
        }
    };
    let data = dir.join("data");
    std::fs::create_dir_all(&data)?;
    let log = dir.join("server.log");
    let root = new_root()?;
    let tenants = provision(
        &data,
        &root,
        &Provision {
            rate_limit: Some(1_000_000),
            others_rate_limit: None,
        },
    )?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let model = Arc::new(Mutex::new(Model::default()));
    let seq = Arc::new(AtomicU64::new(0));
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut report = Report {
        seed: cfg.seed,
        ..Report::default()
    };
    let startup = Duration::from_secs(30);
    let too_many =
        |m: &Arc<Mutex<Model>>| m.lock().map(|m| m.violations.len() >= 20).unwrap_or(true);

    for cycle in 0..=cfg.cycles {
        let server = VaultProcess::start(&cfg.bin, &data, &root, &log, startup)?;
        let clients = Arc::new(Clients {
            platform: RawClient::new(server.base.clone(), Some(tenants.platform.signer())),
            funder: RawClient::new(server.base.clone(), Some(tenants.funder.signer())),
            funder_id: tenants.funder.tenant_id.clone(),
        });
        rt.block_on(wait_ready(&server.base, startup))?;
        // What the cycles before acknowledged still holds.
        let sample = if cycle == cfg.cycles {
            None
        } else {
            Some(cfg.sample)
        };
        report.verifications += rt.block_on(verify(
            &clients,
            &model,
            sample,
            &mut rng,
            cycle,
            &mut report,
        ));
        if cycle == cfg.cycles || too_many(&model) {
            server.stop(Duration::from_secs(10))?;
            break;
        }
        // Load, then SIGKILL at a random moment (one cycle in ten: at once).
        let stop = Arc::new(AtomicBool::new(false));
        let load_for = if rng.gen_ratio(1, 10) {
            Duration::ZERO
        } else {
            let span = cfg.max_load.saturating_sub(cfg.min_load).as_millis() as u64;
            cfg.min_load + Duration::from_millis(rng.gen_range(0..=span))
        };
        let handles: Vec<_> = (0..cfg.workers)
            .map(|w| {
                rt.spawn(worker(
                    w,
                    cycle,
                    clients.clone(),
                    model.clone(),
                    stop.clone(),
                    seq.clone(),
                    cfg.seed,
                ))
            })
            .collect();
        std::thread::sleep(load_for);
        // No new requests from here on; the ones in flight meet the kill.
        stop.store(true, Ordering::SeqCst);
        server.kill9()?;
        for h in handles {
            if let Err(e) = rt.block_on(h) {
                model
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .violation(format!("cycle {cycle}: a client failed: {e}"));
            }
        }
        // With the server down: both databases and the chain.
        let entries = check_store(&data);
        report.integrity_checks += 1;
        if let Err(e) = entries {
            model
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .violation(format!("cycle {cycle}: {e:#}"));
        }
        report.cycles = cycle + 1;
        if cfg.verbose {
            let m = model.lock().unwrap_or_else(|e| e.into_inner());
            eprintln!(
                "cycle {:>4}: killed after {:>4} ms; deposits {} redemptions {} unanswered {} violations {}",
                cycle + 1,
                load_for.as_millis(),
                m.deposits_acked,
                m.redemptions_acked,
                m.unanswered,
                m.violations.len()
            );
        }
    }
    // Clean stop done: the final state of the store.
    match check_store(&data) {
        Ok(n) => report.audit_entries = n,
        Err(e) => model
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .violation(format!("final: {e:#}")),
    }
    report.integrity_checks += 1;
    match check_audit_trail(&data, &model) {
        Ok(missing) => {
            let mut m = model.lock().unwrap_or_else(|e| e.into_inner());
            for v in missing {
                m.lost += 1;
                m.violation(v);
            }
        }
        Err(e) => model
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .violation(format!("reading the audit trail: {e:#}")),
    }
    let m = model.lock().unwrap_or_else(|e| e.into_inner());
    report.deposits_acknowledged = m.deposits_acked;
    report.redemptions_acknowledged = m.redemptions_acked;
    report.unanswered_requests = m.unanswered;
    report.lost = m.lost;
    report.double_redemptions = m.double;
    report.violations = m.violations.clone();
    report.seconds = started.elapsed().as_secs_f64();
    if !report.violations.is_empty() || cfg.data_dir.is_some() {
        report.data_dir = Some(dir.clone());
    }
    drop(m);
    if !report.violations.is_empty() && cfg.data_dir.is_none() {
        // Keep the evidence: the temporary directory goes on return.
        report.data_dir = Some(temp_keep(&dir));
    }
    Ok(report)
}

/// Copies a failing run's directory somewhere that outlives the TempDir.
fn temp_keep(dir: &Path) -> PathBuf {
    let keep = std::env::temp_dir().join(format!("dzl-crash-failed-{}", std::process::id()));
    let _ = copy_dir(dir, &keep);
    keep
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let p = e.path();
        let t = to.join(e.file_name());
        if p.is_dir() {
            copy_dir(&p, &t)?;
        } else {
            std::fs::copy(&p, &t)?;
        }
    }
    Ok(())
}
