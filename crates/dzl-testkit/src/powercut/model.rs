//! What the vault acknowledged, the mixed load that makes it acknowledge
//! things, and the checks of what it answers after a power cut.
//!
//! One code per deposit. Every code the harness was given (a deposit
//! answered 201) is in the model, in one of these states:
//!
//! | state | how a code gets there | a redemption must answer |
//! |---|---|---|
//! | issued | its deposit was answered 201 | 200, with the deposited data |
//! | unknown | a redemption, revocation or erasure got no answer | 200, or what the unanswered request would have made it answer |
//! | redeemed | a redemption was answered 200 | 409 `code_already_redeemed` |
//! | revoked | a revocation was answered 200 | 410 `code_revoked` |
//! | erased | its deposit's erasure was answered 204 | 410 `code_revoked` |
//!
//! and `GET /v1/codes/{id}` must say `issued`, `redeemed` or `revoked`
//! (`revoked` for an erased deposit's code). Anything else is a
//! violation: an acknowledged write lost, or a code redeemed twice.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dzl_sdk::RawClient;
use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use rand::{Rng as _, SeedableRng as _};
use serde_json::json;

use super::CutMode;
use crate::crash::{problem_code, redeem_as, send, send_bytes};
use crate::{canary, deposit_body};

/// The tenants' clients of one running server.
pub(crate) struct Clients {
    pub platform: RawClient,
    pub funder: RawClient,
    pub funder_id: String,
}

/// Requests whose outcome is unknown (no answer came): each may have
/// committed, or not.
const MAY_REDEEM: u8 = 1;
const MAY_REVOKE: u8 = 2;
const MAY_ERASE: u8 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Issued,
    /// A request of the load is in flight.
    Busy,
    /// Requests that may have committed (`MAY_*`); or none did.
    Unknown(u8),
    Redeemed,
    Revoked,
    Erased,
    /// Found lost (404): reported once, not checked again.
    Lost,
}

#[derive(Debug, Clone)]
struct Code {
    code: String,
    code_id: String,
    deposit_id: String,
    state: State,
    /// The redemption the vault acknowledged (200), if any.
    redemption_id: Option<String>,
    revoke_acked: bool,
    erase_acked: bool,
    /// The cycle of the last acknowledged change.
    changed: usize,
}

/// Counts of one store's run.
#[derive(Debug, Clone, Default)]
pub(crate) struct Counts {
    pub deposits: u64,
    pub redemptions: u64,
    pub revocations: u64,
    pub erasures: u64,
    pub unanswered: u64,
    pub unknown_committed: u64,
    pub unknown_not_committed: u64,
    pub redemption_checks: u64,
    pub status_checks: u64,
    pub lost: u64,
    pub double: u64,
    pub lost_by_mode: [u64; 2],
    pub double_by_mode: [u64; 2],
}

/// The model of one store.
#[derive(Default)]
pub(crate) struct Model {
    codes: Vec<Code>,
    /// Candidates for the load's next redemption, revocation or erasure
    /// (checked on taking: a code may have left `Issued` meanwhile).
    issued: Vec<usize>,
    pub violations: Vec<String>,
    pub counts: Counts,
    /// The mode of the cut whose aftermath is being checked.
    pub after: Option<CutMode>,
}

fn mode_index(m: CutMode) -> usize {
    match m {
        CutMode::Synced => 0,
        CutMode::Reordered => 1,
    }
}

impl Model {
    pub fn violation(&mut self, v: String) {
        let v = match self.after {
            Some(m) => format!("after a {m:?} cut: {v}"),
            None => v,
        };
        log::error!("violation: {v}");
        self.violations.push(v);
    }

    pub fn lost(&mut self, v: String) {
        self.counts.lost += 1;
        if let Some(m) = self.after {
            self.counts.lost_by_mode[mode_index(m)] += 1;
        }
        self.violation(v);
    }

    pub fn double(&mut self, v: String) {
        self.counts.double += 1;
        if let Some(m) = self.after {
            self.counts.double_by_mode[mode_index(m)] += 1;
        }
        self.violation(v);
    }

    /// The ids the audit trail must hold an `ok` entry for: deposits,
    /// redemptions, revoked codes, erased deposits.
    pub fn acknowledged(&self) -> Acknowledged {
        let mut a = Acknowledged::default();
        for c in &self.codes {
            a.deposits.push(c.deposit_id.clone());
            a.redemptions.extend(c.redemption_id.clone());
            if c.revoke_acked {
                a.revocations.push(c.code_id.clone());
            }
            if c.erase_acked {
                a.erasures.push(c.deposit_id.clone());
            }
        }
        a
    }
}

/// What the vault acknowledged, by id.
#[derive(Debug, Default)]
pub(crate) struct Acknowledged {
    pub deposits: Vec<String>,
    pub redemptions: Vec<String>,
    pub revocations: Vec<String>,
    pub erasures: Vec<String>,
}

fn lock(m: &Mutex<Model>) -> std::sync::MutexGuard<'_, Model> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn redeem(c: &Clients, code: &str) -> Option<dzl_sdk::RawResponse> {
    redeem_as(&c.funder, code).await
}

/// A 200 redemption released exactly what was deposited; its id.
fn released_intact(r: &dzl_sdk::RawResponse, deposit_id: &str) -> Result<String, String> {
    let v = r.json();
    if v["deposit_id"] != deposit_id {
        return Err(format!(
            "a redemption released deposit {} instead of {deposit_id}",
            v["deposit_id"]
        ));
    }
    let a = &v["applicant"];
    let intact = a["name"] == canary::NAME
        && a["id_number"] == canary::ID_NUMBER
        && a["phone"] == canary::PHONE
        && v["device"]["device_id"] == "d-1"
        && v["risk"]["score"] == 712;
    if !intact {
        return Err(format!(
            "the redemption of deposit {deposit_id} released other data"
        ));
    }
    v["redemption_id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("the redemption of deposit {deposit_id} has no id"))
}

/// The kinds of request of the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Deposit,
    Redeem,
    Revoke,
    Erase,
}

/// One client of the mixed load: 40 % deposits, 35 % redemptions, 15 %
/// revocations, 10 % erasures (deposits when no code is issued), until
/// `stop`.
pub(crate) async fn worker(
    c: Arc<Clients>,
    model: Arc<Mutex<Model>>,
    stop: Arc<AtomicBool>,
    seq: Arc<AtomicU64>,
    cycle: usize,
    seed: u64,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    while !stop.load(Ordering::SeqCst) {
        let roll: f64 = rng.gen();
        let kind = match roll {
            r if r < 0.40 => Kind::Deposit,
            r if r < 0.75 => Kind::Redeem,
            r if r < 0.90 => Kind::Revoke,
            _ => Kind::Erase,
        };
        let picked = if kind == Kind::Deposit {
            None
        } else {
            take_issued(&model, &mut rng)
        };
        match picked {
            None => deposit(&c, &model, &seq, cycle).await,
            Some(i) => act(&c, &model, i, kind, cycle).await,
        }
    }
}

/// Deposits until the model holds `target` acknowledged deposits.
pub(crate) async fn fill(
    c: Arc<Clients>,
    model: Arc<Mutex<Model>>,
    seq: Arc<AtomicU64>,
    target: u64,
) {
    while lock(&model).counts.deposits < target && lock(&model).violations.is_empty() {
        deposit(&c, &model, &seq, 0).await;
    }
}

fn take_issued(model: &Mutex<Model>, rng: &mut StdRng) -> Option<usize> {
    let mut m = lock(model);
    while !m.issued.is_empty() {
        let at = rng.gen_range(0..m.issued.len());
        let i = m.issued.swap_remove(at);
        if m.codes[i].state == State::Issued {
            m.codes[i].state = State::Busy;
            return Some(i);
        }
    }
    None
}

async fn deposit(c: &Clients, model: &Mutex<Model>, seq: &AtomicU64, cycle: usize) {
    let n = seq.fetch_add(1, Ordering::SeqCst);
    let body = deposit_body(&format!("PC-{cycle}-{n}"), &c.funder_id);
    let r = send(&c.platform, "POST", "/v1/deposits", &body).await;
    let mut m = lock(model);
    match r {
        None => m.counts.unanswered += 1,
        Some(r) if r.status == 201 => {
            let v = r.json();
            let first = &v["codes"][0];
            match (
                v["deposit_id"].as_str(),
                first["code"].as_str(),
                first["code_id"].as_str(),
            ) {
                (Some(d), Some(code), Some(code_id)) => {
                    m.codes.push(Code {
                        code: code.to_owned(),
                        code_id: code_id.to_owned(),
                        deposit_id: d.to_owned(),
                        state: State::Issued,
                        redemption_id: None,
                        revoke_acked: false,
                        erase_acked: false,
                        changed: cycle,
                    });
                    let i = m.codes.len() - 1;
                    m.issued.push(i);
                    m.counts.deposits += 1;
                }
                _ => m.violation(format!("cycle {cycle}: a 201 deposit without its ids")),
            }
        }
        Some(r) if r.status == 429 => {}
        Some(r) => {
            let pc = problem_code(&r);
            m.violation(format!(
                "cycle {cycle}: a deposit answered {} {pc}",
                r.status
            ));
        }
    }
}

/// A redemption, revocation or erasure of issued code `i` in the load.
async fn act(c: &Clients, model: &Mutex<Model>, i: usize, kind: Kind, cycle: usize) {
    let (code, code_id, deposit_id) = {
        let m = lock(model);
        let k = &m.codes[i];
        (k.code.clone(), k.code_id.clone(), k.deposit_id.clone())
    };
    let r = match kind {
        Kind::Redeem => redeem(c, &code).await,
        Kind::Revoke => {
            let path = format!("/v1/codes/{code_id}/revoke");
            send(&c.platform, "POST", &path, &json!({})).await
        }
        _ => {
            let path = format!("/v1/deposits/{deposit_id}");
            send_bytes(&c.platform, "DELETE", &path, b"").await
        }
    };
    let mut m = lock(model);
    let Some(r) = r else {
        m.counts.unanswered += 1;
        m.codes[i].state = State::Unknown(match kind {
            Kind::Redeem => MAY_REDEEM,
            Kind::Revoke => MAY_REVOKE,
            _ => MAY_ERASE,
        });
        return;
    };
    if r.status == 429 {
        m.codes[i].state = State::Issued;
        m.issued.push(i);
        return;
    }
    let acked = match (kind, r.status) {
        (Kind::Redeem, 200) => match released_intact(&r, &deposit_id) {
            Ok(rid) => {
                m.codes[i].redemption_id = Some(rid);
                m.counts.redemptions += 1;
                Some(State::Redeemed)
            }
            Err(e) => {
                m.violation(format!("cycle {cycle}: {e}"));
                Some(State::Redeemed)
            }
        },
        (Kind::Revoke, 200) if r.json()["state"] == "revoked" => {
            m.codes[i].revoke_acked = true;
            m.counts.revocations += 1;
            Some(State::Revoked)
        }
        (Kind::Erase, 204) => {
            m.codes[i].erase_acked = true;
            m.counts.erasures += 1;
            Some(State::Erased)
        }
        _ => None,
    };
    match acked {
        Some(s) => {
            m.codes[i].state = s;
            m.codes[i].changed = cycle;
        }
        None => {
            let pc = problem_code(&r);
            let now = holds(r.status, &pc, State::Issued);
            m.codes[i].state = now;
            if now == State::Issued {
                m.issued.push(i);
            }
            m.lost(format!(
                "cycle {cycle}: a {kind:?} of an issued code of deposit {deposit_id} answered {} {pc}",
                r.status
            ));
        }
    }
}

/// Redeems code `i` and judges the answer; updates the model. `cut_armed`:
/// the server may die meanwhile, and an unanswered redemption then leaves
/// the code unknown rather than being a violation.
async fn check_by_redemption(
    c: &Clients,
    model: &Mutex<Model>,
    i: usize,
    cycle: usize,
    cut_armed: bool,
) {
    let (code, deposit_id, state) = {
        let m = lock(model);
        let k = &m.codes[i];
        (k.code.clone(), k.deposit_id.clone(), k.state)
    };
    let r = redeem(c, &code).await;
    let mut m = lock(model);
    let Some(r) = r else {
        if cut_armed {
            m.codes[i].state = match state {
                State::Issued => State::Unknown(MAY_REDEEM),
                State::Unknown(may) => State::Unknown(may | MAY_REDEEM),
                s => s,
            };
        } else {
            m.violation(format!("cycle {cycle}: no answer to a check's redemption"));
        }
        return;
    };
    m.counts.redemption_checks += 1;
    let pc = problem_code(&r);
    let unknown = match state {
        State::Unknown(may) => Some(may),
        _ => None,
    };
    let next = match (state, r.status, pc.as_str()) {
        (State::Issued | State::Unknown(_), 200, _) => match released_intact(&r, &deposit_id) {
            Ok(rid) => {
                m.codes[i].redemption_id = Some(rid);
                if unknown.is_some() {
                    m.counts.unknown_not_committed += 1;
                }
                State::Redeemed
            }
            Err(e) => {
                m.violation(format!("cycle {cycle}: {e}"));
                State::Redeemed
            }
        },
        (State::Unknown(may), 409, "code_already_redeemed") if may & MAY_REDEEM != 0 => {
            m.counts.unknown_committed += 1;
            State::Redeemed
        }
        (State::Unknown(may), 410, "code_revoked") if may & (MAY_REVOKE | MAY_ERASE) != 0 => {
            m.counts.unknown_committed += 1;
            if may & MAY_REVOKE != 0 {
                State::Revoked
            } else {
                State::Erased
            }
        }
        (State::Redeemed, 409, "code_already_redeemed") => State::Redeemed,
        (State::Revoked, 410, "code_revoked") => State::Revoked,
        (State::Erased, 410, "code_revoked") => State::Erased,
        (State::Redeemed, 200, _) => {
            m.double(format!(
                "cycle {cycle}: an acknowledged redemption of deposit {deposit_id}'s code redeemed again"
            ));
            State::Redeemed
        }
        (s, status, _) => {
            m.lost(format!(
                "cycle {cycle}: a redemption of a {} code of deposit {deposit_id} answered {status} {pc}",
                describe(s)
            ));
            holds(status, &pc, s)
        }
    };
    if next != state {
        m.codes[i].state = next;
        m.codes[i].changed = cycle;
    }
}

/// What the vault holds after a violation, as far as its answer (`status`,
/// problem code `pc`) tells, so that one loss is reported once; `was` when
/// it does not tell.
fn holds(status: u16, pc: &str, was: State) -> State {
    match (status, pc) {
        (200, _) | (409, "code_already_redeemed") => State::Redeemed,
        (410, "code_revoked") => State::Revoked,
        (404, _) => State::Lost,
        _ => was,
    }
}

fn describe(s: State) -> String {
    match s {
        State::Issued => "issued".into(),
        State::Busy => "busy".into(),
        State::Unknown(may) => format!("unknown (may have: {may:#b})"),
        State::Redeemed => "redeemed".into(),
        State::Revoked => "revoked".into(),
        State::Erased => "erased".into(),
        State::Lost => "lost".into(),
    }
}

/// Reads code `i`'s state (`GET /v1/codes/{id}`, which changes nothing) and
/// compares it with the model.
async fn check_status(c: &Clients, model: &Mutex<Model>, i: usize, cycle: usize, cut_armed: bool) {
    let (code_id, deposit_id, state) = {
        let m = lock(model);
        let k = &m.codes[i];
        (k.code_id.clone(), k.deposit_id.clone(), k.state)
    };
    let expected = match state {
        State::Issued => "issued",
        State::Redeemed => "redeemed",
        State::Revoked | State::Erased => "revoked",
        State::Busy | State::Unknown(_) | State::Lost => return,
    };
    let r = send_bytes(&c.platform, "GET", &format!("/v1/codes/{code_id}"), b"").await;
    let mut m = lock(model);
    match r {
        None if cut_armed => {}
        None => m.violation(format!("cycle {cycle}: no answer to a status check")),
        Some(r) if r.status == 200 && r.json()["state"] == expected => {
            m.counts.status_checks += 1;
        }
        Some(r) => {
            let got = if r.status == 200 {
                r.json()["state"].to_string()
            } else {
                format!("{} {}", r.status, problem_code(&r))
            };
            m.counts.status_checks += 1;
            m.codes[i].state = match (r.status, r.json()["state"].as_str()) {
                (404, _) => State::Lost,
                (200, Some("redeemed")) => State::Redeemed,
                (200, Some("revoked")) => State::Revoked,
                // An acknowledged change undone: the redemption that
                // follows shows what the vault then releases.
                _ => state,
            };
            if state == State::Redeemed && got.contains("issued") {
                m.lost(format!(
                    "cycle {cycle}: an acknowledged redemption of deposit {deposit_id}'s code was lost (the code reads issued)"
                ));
            } else {
                m.lost(format!(
                    "cycle {cycle}: the {expected} code of deposit {deposit_id} reads {got}"
                ));
            }
        }
    }
}

/// What to check after a restart.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Scope {
    /// Every unknown code by redemption; the state of every code changed
    /// in cycle `changed_in` and later (`GET`, no change); and `sample`
    /// codes of each state by redemption.
    AfterCut { changed_in: usize, sample: usize },
    /// Every code, by redemption.
    Everything,
}

/// Checks what the vault answers against the model (see [`Scope`]).
pub(crate) async fn check(
    c: &Arc<Clients>,
    model: &Arc<Mutex<Model>>,
    scope: Scope,
    rng: &mut StdRng,
    cycle: usize,
    cut_armed: bool,
) {
    let (redeem, status): (Vec<usize>, Vec<usize>) = {
        let m = lock(model);
        let all = 0..m.codes.len();
        match scope {
            Scope::Everything => (
                all.filter(|&i| m.codes[i].state != State::Lost).collect(),
                Vec::new(),
            ),
            Scope::AfterCut { changed_in, sample } => {
                let mut redeem: Vec<usize> = all
                    .clone()
                    .filter(|&i| matches!(m.codes[i].state, State::Unknown(_)))
                    .collect();
                let status: Vec<usize> = all
                    .clone()
                    .filter(|&i| {
                        m.codes[i].changed >= changed_in
                            && !matches!(m.codes[i].state, State::Unknown(_))
                    })
                    .collect();
                for s in [
                    State::Issued,
                    State::Redeemed,
                    State::Revoked,
                    State::Erased,
                ] {
                    let mut of: Vec<usize> =
                        all.clone().filter(|&i| m.codes[i].state == s).collect();
                    of.shuffle(rng);
                    redeem.extend(of.into_iter().take(sample));
                }
                (redeem, status)
            }
        }
    };
    // Statuses first: the redemptions below change some of them.
    for chunk in status.chunks(16) {
        let mut set = tokio::task::JoinSet::new();
        for &i in chunk {
            let (c, m) = (c.clone(), model.clone());
            set.spawn(async move { check_status(&c, &m, i, cycle, cut_armed).await });
        }
        while set.join_next().await.is_some() {}
    }
    for chunk in redeem.chunks(16) {
        let mut set = tokio::task::JoinSet::new();
        for &i in chunk {
            let (c, m) = (c.clone(), model.clone());
            set.spawn(async move { check_by_redemption(&c, &m, i, cycle, cut_armed).await });
        }
        while set.join_next().await.is_some() {}
    }
}

/// Puts back in the load's reach the codes a check left issued.
pub(crate) fn reindex(model: &Mutex<Model>) {
    let mut m = lock(model);
    let issued: Vec<usize> = (0..m.codes.len())
        .filter(|&i| m.codes[i].state == State::Issued)
        .collect();
    m.issued = issued;
}
