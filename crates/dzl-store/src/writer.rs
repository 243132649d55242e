//! The one write path of every backend. Callers queue jobs; one writer
//! thread per store runs every job that arrives while the previous
//! transaction commits in one transaction, and answers each job only once
//! that transaction is durable (group commit). A backend supplies the
//! connection ([`WriteConn`]): how to begin and commit, and when a commit
//! is durable.
//!
//! Jobs run without a savepoint each: consecutive jobs share one
//! (`SAVEPOINT grp`), since a savepoint per job copied every page each job
//! touched (SQLite) or cost two round trips (PostgreSQL). A job that fails
//! before writing anything leaves nothing to undo. One that fails after
//! writing undoes the group, and the group's jobs run again, each in a
//! savepoint of its own, so only the failed job's writes are left out.
//! Every job may therefore run more than once, and must do the same given
//! the same database: its inputs are captured, and only its last run's
//! result is answered. A transaction that conflicts with another writer
//! (PostgreSQL's serialization failures and deadlocks) is run again whole.
//!
//! What every job of a transaction appends to its writer's audit chain, and
//! the calls it counts for billing, are kept here ([`TxState`]) and written
//! once, just before COMMIT; a job's savepoint that rolls back rolls them
//! back too. Nothing here outlives its transaction: the chain's head is
//! read afresh (and locked) by each transaction's first entry, or by BEGIN's
//! own round trip where the backend does so ([`WriteConn::opened`]), and
//! with it the vault's suite, whose digest chains the transaction's entries.

use std::collections::{BTreeMap, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dzl_audit::{AuditEntry, AuditRecord, ChainHash, Head};
use dzl_crypto::Suite;
use dzl_types::TenantId;

use crate::tx::{ChainId, ChainTip, FailureWindow, Lock, Tx, UsageKey};
use crate::{Call, KekState, Reply, StoreError, StoreResult, TenantRow};

/// Jobs one transaction may hold before it commits.
pub const MAX_BATCH: usize = 512;

/// Called once a job's transaction is durable (`None`) or failed.
pub type Completion = Box<dyn FnOnce(Option<StoreError>) + Send>;

/// A backend's side of the write path: the connection the writer thread
/// owns.
pub trait WriteConn: Send + 'static {
    /// The audit chain this writer appends to.
    fn chain(&self) -> ChainId;
    /// How long the writer keeps a transaction open for more jobs once its
    /// queue is empty, when the previous transaction had concurrent jobs.
    fn linger(&self) -> Duration;
    /// Housekeeping between two transactions.
    fn before_batch(&mut self) {}
    /// Why the writer refuses every write now, if it does.
    fn refuses(&self) -> Option<StoreError> {
        None
    }
    /// Begins a write transaction.
    fn begin(&mut self) -> StoreResult<()>;
    /// What [`WriteConn::begin`] also did, in the same round trip: read
    /// and lock the chain's head and the key versions that wrap, then open
    /// the group savepoint (`SAVEPOINT grp`) after those locks. `None`, the
    /// default: nothing, and the transaction reads the head when its first
    /// entry needs it.
    fn opened(&mut self) -> Option<Opened> {
        None
    }
    /// The open transaction.
    fn tx(&mut self) -> StoreResult<&mut dyn Tx>;
    /// Commits the open transaction.
    fn commit(&mut self) -> StoreResult<()>;
    /// Rolls the open transaction back (best effort).
    fn rollback(&mut self);
    /// Hands on the completions of a committed transaction: each is called
    /// once the transaction is durable, or with the error that stopped it
    /// from becoming so.
    fn answer(&mut self, done: Vec<Completion>);
    /// Whether a transaction that failed with `e` may run again whole.
    fn retryable(&self, e: &StoreError) -> bool {
        matches!(e, StoreError::Conflict(_))
    }
    /// How often a transaction that keeps conflicting runs.
    fn max_attempts(&self) -> u32 {
        1
    }
    /// The writer is stopping: last housekeeping.
    fn close(&mut self) {}
}

/// What a connection read and locked as it began a transaction
/// ([`WriteConn::opened`]).
pub struct Opened {
    /// The chain's head and the vault's suite.
    pub tip: ChainTip,
    /// The key versions that wrap (active or decrypt-only), share-locked.
    pub wrappable: Vec<u32>,
}

/// What the open transaction has still to write, and what it has read
/// that cannot change under it.
pub struct TxState {
    chain: ChainId,
    head: Option<Head>,
    /// The vault's suite, read with `head`.
    suite: Suite,
    entries: Vec<AuditEntry>,
    usage: Vec<UsageKey>,
    writes: u64,
    tenants: HashMap<TenantId, Option<TenantRow>>,
    windows: HashMap<TenantId, Option<FailureWindow>>,
    wrappable: Vec<u32>,
    /// Versions locked as the transaction began: kept by every rollback
    /// to a savepoint, as their locks are.
    locked_keks: Vec<u32>,
}

/// Where a job started, to roll [`TxState`] back to.
#[derive(Clone)]
struct Mark {
    head: Option<Head>,
    suite: Suite,
    entries: usize,
    usage: usize,
}

impl TxState {
    /// The state of a new transaction of `chain`'s writer.
    pub fn new(chain: ChainId) -> TxState {
        TxState {
            chain,
            head: None,
            suite: Suite::Intl,
            entries: Vec::new(),
            usage: Vec::new(),
            writes: 0,
            tenants: HashMap::new(),
            windows: HashMap::new(),
            wrappable: Vec::new(),
            locked_keks: Vec::new(),
        }
    }

    fn mark(&self) -> Mark {
        Mark {
            head: self.head.clone(),
            suite: self.suite,
            entries: self.entries.len(),
            usage: self.usage.len(),
        }
    }

    fn roll_back_to(&mut self, mark: &Mark) {
        self.head = mark.head.clone();
        self.suite = mark.suite;
        self.entries.truncate(mark.entries);
        self.usage.truncate(mark.usage);
        self.tenants.clear();
        self.windows.clear();
        self.wrappable.clear();
    }

    /// Writes the entries, the chain's head and the counts: the
    /// transaction's last statements.
    pub fn flush(&mut self, tx: &mut dyn Tx) -> StoreResult<()> {
        let mut counts: BTreeMap<UsageKey, u64> = BTreeMap::new();
        for key in self.usage.drain(..) {
            *counts.entry(key).or_default() += 1;
        }
        let counts: Vec<(UsageKey, u64)> = counts.into_iter().collect();
        let entries = match &self.head {
            Some(head) if !self.entries.is_empty() => Some((self.entries.as_slice(), head)),
            _ => None,
        };
        tx.append_trail(self.chain, entries, &counts)?;
        self.entries.clear();
        self.head = None;
        Ok(())
    }
}

/// One open write transaction, as the operations see it: the backend's
/// rows, and the writer's audit chain and meter.
pub struct Txn<'a> {
    tx: &'a mut dyn Tx,
    st: &'a mut TxState,
}

impl<'a> Txn<'a> {
    /// A transaction over `tx` with `st`.
    pub fn new(tx: &'a mut dyn Tx, st: &'a mut TxState) -> Txn<'a> {
        Txn { tx, st }
    }

    /// The rows, to read.
    pub fn read(&mut self) -> &mut dyn Tx {
        self.tx
    }

    /// The rows, to write: a job that fails after calling this is undone
    /// by a savepoint.
    pub fn write(&mut self) -> &mut dyn Tx {
        self.st.writes += 1;
        self.tx
    }

    /// The chain this transaction appends to.
    pub fn chain(&self) -> ChainId {
        self.st.chain
    }

    /// The chain's head as this transaction sees it (read and locked by
    /// its first entry).
    pub fn head(&mut self) -> StoreResult<Head> {
        if let Some(head) = &self.st.head {
            return Ok(head.clone());
        }
        let chain = self.st.chain;
        let tip = self.tx.chain_head(chain, Lock::Update)?.ok_or_else(|| {
            StoreError::Corrupt(format!("audit chain {chain} has no recorded head"))
        })?;
        self.st.suite = tip.suite;
        self.st.head = Some(tip.head.clone());
        Ok(tip.head)
    }

    /// The vault's suite as this transaction sees it: its active KEK's,
    /// read with the chain's head.
    pub fn suite(&mut self) -> StoreResult<Suite> {
        self.head()?;
        Ok(self.st.suite)
    }

    /// Appends `record` to the writer's chain, hashed with the vault's
    /// suite's digest.
    pub fn audit(&mut self, record: AuditRecord) -> StoreResult<()> {
        let head = self.head()?;
        let alg = match self.st.suite {
            Suite::Intl => ChainHash::Sha256,
            Suite::Gm => ChainHash::Sm3,
        };
        let e = dzl_audit::chain_with(alg, self.st.chain, head.seq, &head.hash, record);
        self.st.head = Some(Head {
            seq: e.seq,
            hash: e.hash.clone(),
        });
        self.st.entries.push(e);
        Ok(())
    }

    /// Counts one call for billing, with its outcome.
    pub fn meter(&mut self, call: &Call, outcome: &str) {
        self.st.usage.push((
            call.now.format("%Y-%m-%d").to_string(),
            call.actor.clone(),
            call.operation,
            outcome.to_owned(),
        ));
    }

    /// A tenant, read once per transaction (its row cannot change under
    /// the transaction but by the transaction itself, which calls
    /// [`Txn::forget_tenant`]).
    pub fn tenant(&mut self, id: &TenantId) -> StoreResult<Option<TenantRow>> {
        if let Some(t) = self.st.tenants.get(id) {
            return Ok(t.clone());
        }
        let t = self.tx.tenant(id, Lock::Share)?;
        self.st.tenants.insert(id.clone(), t.clone());
        Ok(t)
    }

    /// A funder's failed-redemption windows, read once per transaction.
    pub fn failure_window(&mut self, id: &TenantId) -> StoreResult<Option<FailureWindow>> {
        if let Some(w) = self.st.windows.get(id) {
            return Ok(*w);
        }
        let w = self.tx.failure_window(id)?;
        self.st.windows.insert(id.clone(), w);
        Ok(w)
    }

    /// Sets (or, with `None`, forgets) a funder's failed-redemption windows.
    pub fn set_failure_window(
        &mut self,
        id: &TenantId,
        window: Option<FailureWindow>,
    ) -> StoreResult<()> {
        self.write().set_failure_window(id, window.as_ref())?;
        self.st.windows.insert(id.clone(), window);
        Ok(())
    }

    /// Forgets a tenant read by [`Txn::tenant`], after changing it.
    pub fn forget_tenant(&mut self, id: &TenantId) {
        self.st.tenants.remove(id);
    }

    /// The keyring changed in this transaction (a version added, demoted
    /// or retired): versions checked before are checked again, and the
    /// entries from here on are hashed with the digest of the suite now
    /// active.
    pub fn keyring_changed(&mut self) -> StoreResult<()> {
        self.st.wrappable.clear();
        self.st.locked_keks.clear();
        if self.st.head.is_some() {
            if let Some(tip) = self.tx.chain_head(self.st.chain, Lock::None)? {
                self.st.suite = tip.suite;
            }
        }
        Ok(())
    }

    /// Refuses to wrap under a KEK version that is retired or unknown: a
    /// writer holding a keyring older than a `keys retire` must not store
    /// keys nobody can unwrap any more. The server reloads and retries.
    /// Checked once per version per transaction; the version's row stays
    /// share-locked until commit, so a retirement waits.
    pub fn ensure_wrappable(&mut self, version: u32) -> StoreResult<()> {
        if self.st.wrappable.contains(&version) || self.st.locked_keks.contains(&version) {
            return Ok(());
        }
        match self.tx.kek_state(version, Lock::Share)? {
            Some(KekState::Active | KekState::DecryptOnly) => {
                self.st.wrappable.push(version);
                Ok(())
            }
            _ => Err(StoreError::Unavailable(format!(
                "key version {version} is retired or unknown; the keyring is being reloaded"
            ))),
        }
    }
}

/// A queued job: run (perhaps more than once) in the open transaction,
/// then answered.
pub(crate) trait Rerun: Send {
    /// Runs the job, keeping its result; whether it succeeded.
    fn run(&mut self, txn: &mut Txn<'_>) -> bool;
    /// Whether its last run failed without a write to undo.
    fn failed_cleanly(&self) -> bool;
    /// Whether its last run failed with an error that dooms the whole
    /// transaction (per [`WriteConn::retryable`]).
    fn error(&self) -> Option<&StoreError>;
    /// The job's completion: its last run's result, or `err` instead.
    fn finish(self: Box<Self>, err: Option<&StoreError>) -> Completion;
}

struct Job<F, R> {
    f: F,
    result: Option<StoreResult<R>>,
    clean: bool,
    reply: Reply<R>,
}

/// Whether an error comes from the rules (the transaction is intact), not
/// from the database.
fn refusal(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Refused(_)
            | StoreError::Throttled(_)
            | StoreError::DuplicateExternalRef(_)
            | StoreError::Rule(_)
    )
}

impl<F, R> Rerun for Job<F, R>
where
    F: Fn(&mut Txn<'_>) -> StoreResult<R> + Send,
    R: Send + 'static,
{
    fn run(&mut self, txn: &mut Txn<'_>) -> bool {
        let before = txn.st.writes;
        let result = catch_unwind(AssertUnwindSafe(|| (self.f)(txn)))
            .unwrap_or_else(|_| Err(StoreError::Corrupt("a store job panicked".into())));
        self.clean = match &result {
            Ok(_) => false,
            Err(e) => txn.st.writes == before && refusal(e),
        };
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn failed_cleanly(&self) -> bool {
        self.clean
    }

    fn error(&self) -> Option<&StoreError> {
        match &self.result {
            Some(Err(e)) => Some(e),
            _ => None,
        }
    }

    fn finish(self: Box<Self>, err: Option<&StoreError>) -> Completion {
        let result = match (err, self.result) {
            (Some(e), _) => Err(e.clone()),
            (None, Some(result)) => result,
            (None, None) => Err(StoreError::Unavailable("the write never ran".into())),
        };
        let reply = self.reply;
        Box::new(move |commit_err| {
            reply(match commit_err {
                Some(e) => Err(e),
                None => result,
            })
        })
    }
}

/// The jobs of one transaction, as they run.
struct Batch {
    st: TxState,
    jobs: Vec<Box<dyn Rerun>>,
    /// Where the shared savepoint's jobs start, and its state mark, while
    /// one is open.
    group: Option<(usize, Mark)>,
    /// Why the transaction cannot commit.
    failed: Option<StoreError>,
}

impl Batch {
    fn new(chain: ChainId) -> Batch {
        Batch {
            st: TxState::new(chain),
            jobs: Vec::new(),
            group: None,
            failed: None,
        }
    }

    /// A transaction `conn` has just begun.
    fn begun<W: WriteConn>(conn: &mut W) -> Batch {
        let mut batch = Batch::new(conn.chain());
        if let Some(o) = conn.opened() {
            batch.st.head = Some(o.tip.head);
            batch.st.suite = o.tip.suite;
            batch.st.locked_keks = o.wrappable;
            batch.group = Some((0, batch.st.mark()));
        }
        batch
    }

    /// Runs `job` in the open transaction and keeps it.
    fn run<W: WriteConn>(&mut self, conn: &mut W, mut job: Box<dyn Rerun>) {
        if self.failed.is_some() {
            self.jobs.push(job);
            return;
        }
        let tx = match conn.tx() {
            Ok(tx) => tx,
            Err(e) => {
                self.jobs.push(job);
                self.fail(e);
                return;
            }
        };
        if self.group.is_none() {
            if let Err(e) = tx.savepoint("grp") {
                self.jobs.push(job);
                self.fail(e);
                return;
            }
            self.group = Some((self.jobs.len(), self.st.mark()));
        }
        let mark = self.st.mark();
        if job.run(&mut Txn::new(tx, &mut self.st)) {
            self.jobs.push(job);
            return;
        }
        if job.failed_cleanly() {
            // Nothing written: nothing to undo but what it kept in memory.
            self.st.roll_back_to(&mark);
            self.jobs.push(job);
            return;
        }
        let doomed = job.error().filter(|e| conn.retryable(e)).cloned();
        self.jobs.push(job);
        if let Some(e) = doomed {
            self.fail(e);
            return;
        }
        if let Err(e) = self.rerun_group(conn) {
            self.fail(e);
        }
    }

    /// Undoes the open group, then runs each of its jobs again in a
    /// savepoint of its own, so that only the failed job's writes are left
    /// out.
    fn rerun_group<W: WriteConn>(&mut self, conn: &mut W) -> StoreResult<()> {
        let Some((start, group_mark)) = self.group.take() else {
            return Ok(());
        };
        self.st.roll_back_to(&group_mark);
        conn.tx()?.rollback_to("grp")?;
        for i in start..self.jobs.len() {
            let tx = conn.tx()?;
            tx.savepoint("job")?;
            let mark = self.st.mark();
            if self.jobs[i].run(&mut Txn::new(tx, &mut self.st)) {
                tx.release("job")?;
            } else {
                self.st.roll_back_to(&mark);
                tx.rollback_to("job")?;
            }
            if let Some(e) = self.jobs[i].error().filter(|e| conn.retryable(e)) {
                return Err(e.clone());
            }
        }
        Ok(())
    }

    /// Writes what is pending. The shared savepoint stays: COMMIT
    /// releases it, without a statement of its own.
    fn finish<W: WriteConn>(&mut self, conn: &mut W) {
        if self.failed.is_some() {
            return;
        }
        self.group = None;
        let done = conn.tx().and_then(|tx| self.st.flush(tx));
        if let Err(e) = done {
            self.fail(e);
        }
    }

    fn fail(&mut self, e: StoreError) {
        self.failed.get_or_insert(e);
    }
}

/// Runs `jobs` again in a fresh transaction, after one that conflicted.
fn rerun<W: WriteConn>(conn: &mut W, jobs: Vec<Box<dyn Rerun>>) -> Batch {
    let mut batch = match conn.begin() {
        Ok(()) => Batch::begun(conn),
        Err(e) => {
            let mut batch = Batch::new(conn.chain());
            batch.jobs = jobs;
            batch.fail(e);
            return batch;
        }
    };
    for job in jobs {
        batch.run(conn, job);
    }
    batch.finish(conn);
    batch
}

/// Commits `batch` (or rolls it back if it failed), retrying a transaction
/// that conflicted, and answers its jobs.
fn settle<W: WriteConn>(conn: &mut W, mut batch: Batch) {
    let mut attempt = 1;
    loop {
        let outcome = match batch.failed.take() {
            Some(e) => Err(e),
            None => conn.commit(),
        };
        match outcome {
            Ok(()) => {
                let done = batch.jobs.into_iter().map(|j| j.finish(None)).collect();
                conn.answer(done);
                return;
            }
            Err(e) => {
                conn.rollback();
                if conn.retryable(&e) && attempt < conn.max_attempts() {
                    log::debug!("write transaction attempt {attempt} conflicted ({e}); retrying");
                    backoff(attempt);
                    attempt += 1;
                    batch = rerun(conn, batch.jobs);
                    continue;
                }
                let e = if conn.retryable(&e) {
                    StoreError::Unavailable(format!(
                        "the transaction kept conflicting with other writers ({attempt} attempts): {e}"
                    ))
                } else {
                    e
                };
                log::error!(
                    "a write transaction of {} jobs failed: {e}",
                    batch.jobs.len()
                );
                for j in batch.jobs {
                    j.finish(Some(&e))(None);
                }
                return;
            }
        }
    }
}

/// Sleeps before attempt `attempt + 1`: exponential from 2 ms, capped at
/// 250 ms, with jitter so colliding writers spread out.
fn backoff(attempt: u32) {
    use std::hash::{BuildHasher, Hasher};
    let base = 2u64.saturating_mul(1 << attempt.min(7)).min(250);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(attempt);
    let jitter = h.finish() % (base + 1);
    std::thread::sleep(Duration::from_millis(base / 2 + jitter));
}

/// The next request for a batch being gathered: one already queued; else,
/// when the previous batch (`previous` requests) had company, one that
/// comes before `deadline`; else none, and the batch closes. A request
/// that comes alone is never held.
pub fn next_for_batch<T>(rx: &mpsc::Receiver<T>, previous: usize, deadline: Instant) -> Option<T> {
    match rx.try_recv() {
        Ok(r) => Some(r),
        Err(_) if previous <= 1 => None,
        Err(_) => rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .ok(),
    }
}

fn writer_loop<W: WriteConn>(
    mut conn: W,
    rx: mpsc::Receiver<Box<dyn Rerun>>,
    pending: Arc<AtomicUsize>,
) {
    let done = |n: usize| pending.fetch_sub(n, Ordering::Relaxed);
    let mut previous_batch = 0;
    while let Ok(first) = rx.recv() {
        conn.before_batch();
        let refused = conn.refuses();
        let begun = match refused {
            Some(e) => Err(e),
            None => conn.begin(),
        };
        if let Err(err) = begun {
            first.finish(Some(&err))(None);
            done(1);
            while let Ok(job) = rx.try_recv() {
                job.finish(Some(&err))(None);
                done(1);
            }
            continue;
        }
        let deadline = Instant::now() + conn.linger();
        let mut batch = Batch::begun(&mut conn);
        batch.run(&mut conn, first);
        while batch.jobs.len() < MAX_BATCH && batch.failed.is_none() {
            let Some(job) = next_for_batch(&rx, previous_batch, deadline) else {
                break;
            };
            batch.run(&mut conn, job);
        }
        previous_batch = batch.jobs.len();
        batch.finish(&mut conn);
        settle(&mut conn, batch);
        done(previous_batch);
    }
    conn.close();
}

/// One writer thread and its queue.
struct Lane {
    jobs: Mutex<Option<mpsc::Sender<Box<dyn Rerun>>>>,
    /// Jobs queued or running and not yet answered.
    pending: Arc<AtomicUsize>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// A store's writer: one thread per connection, each with its queue and
/// its audit chain; a job goes to the lane with the fewest jobs not yet answered.
/// The embedded store has one (its file has one write lock); a replica
/// over PostgreSQL may have several, whose transactions the database's row
/// locks order as they order two replicas'.
pub struct Writer {
    lanes: Vec<Lane>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("lanes", &self.lanes.len())
            .finish_non_exhaustive()
    }
}

impl Writer {
    /// Starts the writer thread `name` over `conn`.
    pub fn start<W: WriteConn>(conn: W, name: &str) -> StoreResult<Writer> {
        Writer::start_lanes(vec![conn], name)
    }

    /// Starts a writer thread over each of `conns` (at least one).
    pub fn start_lanes<W: WriteConn>(conns: Vec<W>, name: &str) -> StoreResult<Writer> {
        if conns.is_empty() {
            return Err(StoreError::Invalid("a writer needs a connection".into()));
        }
        let mut lanes = Vec::with_capacity(conns.len());
        for (i, conn) in conns.into_iter().enumerate() {
            let (tx, rx) = mpsc::channel::<Box<dyn Rerun>>();
            let pending = Arc::new(AtomicUsize::new(0));
            let counted = pending.clone();
            let thread_name = if i == 0 {
                name.to_owned()
            } else {
                format!("{name}-{i}")
            };
            let thread = std::thread::Builder::new()
                .name(thread_name)
                .spawn(move || writer_loop(conn, rx, counted))
                .map_err(|e| StoreError::Unavailable(format!("starting the writer: {e}")))?;
            lanes.push(Lane {
                jobs: Mutex::new(Some(tx)),
                pending,
                thread: Mutex::new(Some(thread)),
            });
        }
        Ok(Writer { lanes })
    }

    /// Queues `f` and returns at once: `reply` gets its result once the
    /// transaction is durable, or an error. It is called exactly once
    /// (here, at once, if the writer has stopped).
    pub fn submit<R: Send + 'static>(
        &self,
        f: impl Fn(&mut Txn<'_>) -> StoreResult<R> + Send + 'static,
        reply: Reply<R>,
    ) {
        let job: Box<dyn Rerun> = Box::new(Job {
            f,
            result: None,
            clean: false,
            reply,
        });
        let lane = self
            .lanes
            .iter()
            .min_by_key(|l| l.pending.load(Ordering::Relaxed));
        let sender = match lane.map(|l| (l, l.jobs.lock())) {
            None => Err(StoreError::Unavailable("store closed".into())),
            Some((_, Err(_))) => Err(StoreError::Unavailable("writer lock poisoned".into())),
            Some((lane, Ok(jobs))) => jobs
                .clone()
                .map(|s| (lane, s))
                .ok_or_else(|| StoreError::Unavailable("store closed".into())),
        };
        match sender {
            Ok((lane, sender)) => {
                lane.pending.fetch_add(1, Ordering::Relaxed);
                if let Err(mpsc::SendError(job)) = sender.send(job) {
                    lane.pending.fetch_sub(1, Ordering::Relaxed);
                    job.finish(Some(&StoreError::Unavailable("writer stopped".into())))(None);
                }
            }
            Err(e) => job.finish(Some(&e))(None),
        }
    }

    /// Runs `f` in the writer's next transaction and returns once that is
    /// durable (or failed).
    pub fn write<R: Send + 'static>(
        &self,
        f: impl Fn(&mut Txn<'_>) -> StoreResult<R> + Send + 'static,
    ) -> StoreResult<R> {
        wait_for(|reply| self.submit(f, reply))
    }

    /// Stops the writer after the queued jobs; later jobs are refused.
    pub fn close(&self) {
        for lane in &self.lanes {
            if let Ok(mut jobs) = lane.jobs.lock() {
                jobs.take();
            }
        }
        for lane in &self.lanes {
            if let Ok(mut t) = lane.thread.lock() {
                if let Some(h) = t.take() {
                    let _ = h.join();
                }
            }
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.close();
    }
}

/// Submits a call with `submit` and blocks until its reply.
pub fn wait_for<R: Send + 'static>(submit: impl FnOnce(Reply<R>)) -> StoreResult<R> {
    let (tx, rx) = mpsc::sync_channel::<StoreResult<R>>(1);
    submit(Box::new(move |out| {
        // The caller may have gone away; nothing to do then.
        let _ = tx.send(out);
    }));
    rx.recv()
        .map_err(|_| StoreError::Unavailable("writer stopped".into()))?
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::{Arc, Mutex};

    use rusqlite::{Connection, OptionalExtension};

    use super::*;
    use crate::tx::ROOT_CHAIN;

    /// A writer's connection over a SQLite file, durable at commit.
    struct TestConn(Connection);

    impl WriteConn for TestConn {
        fn chain(&self) -> ChainId {
            ROOT_CHAIN
        }
        fn linger(&self) -> Duration {
            Duration::ZERO
        }
        fn begin(&mut self) -> StoreResult<()> {
            Ok(self.0.execute_batch("BEGIN IMMEDIATE")?)
        }
        fn tx(&mut self) -> StoreResult<&mut dyn Tx> {
            Ok(&mut self.0)
        }
        fn commit(&mut self) -> StoreResult<()> {
            Ok(self.0.execute_batch("COMMIT")?)
        }
        fn rollback(&mut self) {
            let _ = self.0.execute_batch("ROLLBACK");
        }
        fn answer(&mut self, done: Vec<Completion>) {
            done.into_iter().for_each(|c| c(None));
        }
    }

    fn conn(dir: &std::path::Path) -> TestConn {
        let conn = crate::sqlite::conn::open_connection_for_tests(dir);
        TestConn(conn)
    }

    fn entry(actor: &str) -> AuditRecord {
        AuditRecord {
            at: "2026-11-22T00:00:00.000Z".into(),
            actor: actor.into(),
            operation: "test.op".into(),
            result: "ok".into(),
            ..Default::default()
        }
    }

    fn call(actor: &str) -> Call {
        Call {
            actor: actor.into(),
            operation: "test.op",
            now: chrono::DateTime::from_timestamp(1_795_000_000, 0).unwrap(),
        }
    }

    /// One job: an audit entry and a count, then it fails if `fail`
    /// (having written both and a row, so the failure has writes to undo).
    fn job(txn: &mut Txn<'_>, actor: &str, fail: bool) -> StoreResult<()> {
        txn.audit(entry(actor))?;
        txn.meter(&call("ten_a"), if fail { "failed" } else { "ok" });
        if fail {
            txn.write().bump_generation()?;
            Err(StoreError::Invalid("this job fails".into()))
        } else {
            Ok(())
        }
    }

    /// Runs `jobs` (actor, fails) in one transaction as the writer does;
    /// which jobs succeeded.
    fn commit(conn: &mut TestConn, jobs: &[(&str, bool)]) -> Vec<bool> {
        let results = Arc::new(Mutex::new(BTreeMap::new()));
        conn.begin().unwrap();
        let mut batch = Batch::new(ROOT_CHAIN);
        for (i, &(actor, fail)) in jobs.iter().enumerate() {
            let actor = actor.to_owned();
            let results = results.clone();
            let reply: Reply<()> = Box::new(move |out| {
                results.lock().unwrap().insert(i, out.is_ok());
            });
            let job: Box<dyn Rerun> = Box::new(Job {
                f: move |txn: &mut Txn<'_>| job(txn, &actor, fail),
                result: None,
                clean: false,
                reply,
            });
            batch.run(conn, job);
        }
        batch.finish(conn);
        assert!(batch.failed.is_none());
        settle(conn, batch);
        let results = results.lock().unwrap();
        (0..jobs.len()).map(|i| results[&i]).collect()
    }

    fn verified(conn: &mut TestConn) -> u64 {
        crate::ops::audit::verify(conn.tx().unwrap(), &mut |_| {})
            .unwrap()
            .unwrap()
    }

    fn actors(conn: &TestConn) -> Vec<String> {
        conn.0
            .prepare("SELECT actor FROM audit ORDER BY seq")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn calls(conn: &TestConn, outcome: &str) -> Option<i64> {
        conn.0
            .query_row(
                "SELECT calls FROM usage WHERE outcome = ?1",
                [outcome],
                |r| r.get(0),
            )
            .optional()
            .unwrap()
    }

    fn generation(conn: &mut TestConn) -> i64 {
        conn.tx().unwrap().generation().unwrap()
    }

    #[test]
    fn a_failed_job_leaves_nothing_and_its_group_all_it_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = conn(dir.path());
        let done = commit(
            &mut conn,
            &[
                ("a", false),
                ("b", false),
                ("fails", true),
                ("c", false),
                ("fails-too", true),
            ],
        );
        assert_eq!(done, [true, true, false, true, false]);
        assert_eq!(actors(&conn), ["a", "b", "c"]);
        assert_eq!(verified(&mut conn), 3, "the chain runs through the reruns");
        assert_eq!(calls(&conn, "ok"), Some(3));
        assert_eq!(
            calls(&conn, "failed"),
            None,
            "the failed jobs' counts are gone"
        );
        assert_eq!(generation(&mut conn), 1, "the failed jobs' writes are gone");

        assert_eq!(commit(&mut conn, &[("d", false)]), [true]);
        assert_eq!(calls(&conn, "ok"), Some(4));
        assert_eq!(verified(&mut conn), 4);
    }

    #[test]
    fn a_job_refused_before_it_writes_costs_its_batch_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = conn(dir.path());
        let runs = Arc::new(Mutex::new(0));
        let counted = runs.clone();
        conn.begin().unwrap();
        let mut batch = Batch::new(ROOT_CHAIN);
        let first: Box<dyn Rerun> = Box::new(Job {
            f: move |txn: &mut Txn<'_>| {
                *counted.lock().unwrap() += 1;
                job(txn, "first", false)
            },
            result: None,
            clean: false,
            reply: Box::new(|out: StoreResult<()>| assert!(out.is_ok())),
        });
        batch.run(&mut conn, first);
        let refused: Box<dyn Rerun> = Box::new(Job {
            f: |txn: &mut Txn<'_>| -> StoreResult<()> {
                txn.audit(entry("refused"))?;
                Err(StoreError::Refused(dzl_types::ErrorCode::CodeNotFound))
            },
            result: None,
            clean: false,
            reply: Box::new(|out: StoreResult<()>| assert!(out.is_err())),
        });
        batch.run(&mut conn, refused);
        batch.finish(&mut conn);
        settle(&mut conn, batch);
        assert_eq!(*runs.lock().unwrap(), 1, "the first job did not run again");
        assert_eq!(actors(&conn), ["first"], "the refusal's entry is gone");
        assert_eq!(verified(&mut conn), 1);
    }

    #[test]
    fn each_transaction_reads_the_head_another_writer_moved() {
        let dir = tempfile::tempdir().unwrap();
        let mut ours = conn(dir.path());
        let mut theirs = conn(dir.path());
        assert_eq!(commit(&mut ours, &[("a", false)]), [true]);
        assert_eq!(commit(&mut theirs, &[("b", false)]), [true]);
        assert_eq!(commit(&mut ours, &[("c", false)]), [true]);
        assert_eq!(verified(&mut ours), 3);
    }

    /// A job that changes the keyring makes the transaction's later jobs
    /// see the change: entries follow the suite now active, and a version
    /// retired earlier in the transaction no longer wraps in it.
    #[test]
    fn a_keyring_changed_in_the_transaction_holds_for_its_later_jobs() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = conn(dir.path());
        conn.begin().unwrap();
        let mut st = TxState::new(ROOT_CHAIN);
        let mut txn = Txn::new(&mut conn.0, &mut st);
        let now = call("a").now;
        assert_eq!(txn.suite().unwrap(), Suite::Intl, "no key yet");
        txn.write()
            .insert_kek(1, Suite::Gm, KekState::Active, b"wrapped", now)
            .unwrap();
        txn.keyring_changed().unwrap();
        assert_eq!(txn.suite().unwrap(), Suite::Gm);
        txn.audit(entry("a")).unwrap();
        assert_eq!(st_alg(&txn), ChainHash::Sm3);
        txn.ensure_wrappable(1).unwrap();
        txn.write().retire_kek(1, now).unwrap();
        txn.keyring_changed().unwrap();
        assert!(matches!(
            txn.ensure_wrappable(1),
            Err(StoreError::Unavailable(_))
        ));
    }

    fn st_alg(txn: &Txn<'_>) -> ChainHash {
        txn.st.entries.last().map(|e| e.alg).unwrap()
    }

    #[test]
    fn a_transaction_that_conflicts_runs_again_whole_and_answers_once() {
        struct Flaky {
            inner: TestConn,
            conflicts: u32,
        }
        impl WriteConn for Flaky {
            fn chain(&self) -> ChainId {
                ROOT_CHAIN
            }
            fn linger(&self) -> Duration {
                Duration::ZERO
            }
            fn begin(&mut self) -> StoreResult<()> {
                self.inner.begin()
            }
            fn tx(&mut self) -> StoreResult<&mut dyn Tx> {
                self.inner.tx()
            }
            fn commit(&mut self) -> StoreResult<()> {
                if self.conflicts > 0 {
                    self.conflicts -= 1;
                    return Err(StoreError::Conflict("serialization failure".into()));
                }
                self.inner.commit()
            }
            fn rollback(&mut self) {
                self.inner.rollback()
            }
            fn answer(&mut self, done: Vec<Completion>) {
                self.inner.answer(done)
            }
            fn max_attempts(&self) -> u32 {
                3
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Flaky {
            inner: conn(dir.path()),
            conflicts: 2,
        };
        let answers = Arc::new(Mutex::new(Vec::new()));
        conn.begin().unwrap();
        let mut batch = Batch::new(ROOT_CHAIN);
        for actor in ["a", "b"] {
            let answers = answers.clone();
            let j: Box<dyn Rerun> = Box::new(Job {
                f: move |txn: &mut Txn<'_>| job(txn, actor, false),
                result: None,
                clean: false,
                reply: Box::new(move |out: StoreResult<()>| {
                    answers.lock().unwrap().push(out.is_ok())
                }),
            });
            batch.run(&mut conn, j);
        }
        batch.finish(&mut conn);
        settle(&mut conn, batch);
        assert_eq!(*answers.lock().unwrap(), [true, true], "answered once each");
        assert_eq!(actors(&conn.inner), ["a", "b"], "written once");
        assert_eq!(verified(&mut conn.inner), 2);

        conn.conflicts = 5;
        conn.begin().unwrap();
        let mut batch = Batch::new(ROOT_CHAIN);
        let j: Box<dyn Rerun> = Box::new(Job {
            f: move |txn: &mut Txn<'_>| job(txn, "c", false),
            result: None,
            clean: false,
            reply: Box::new(move |out: StoreResult<()>| {
                assert!(matches!(out, Err(StoreError::Unavailable(_))), "{out:?}");
            }),
        });
        batch.run(&mut conn, j);
        batch.finish(&mut conn);
        settle(&mut conn, batch);
        assert_eq!(verified(&mut conn.inner), 2, "gave up after three attempts");
    }
}
