//! The SQLite backend: two database files in one directory — `vault.db`
//! (tenants, keyring, deposits, codes, audit, usage) and `identity.db` (the
//! `applicant` group and its data keys, GB/T 35273 §6.2 separation),
//! attached to one connection so a request commits to both in one
//! transaction.
//!
//! Both run in WAL mode with `secure_delete` (erased keys are overwritten, not
//! left in free pages), and a 2xx means the write is on disk. One writer
//! thread owns the write connection: callers queue jobs; the thread runs
//! every queued job in its own savepoint inside one transaction and commits
//! once (group commit). A failing job rolls back only its savepoint; a
//! failing commit fails every job of the batch.
//!
//! Durability is `synchronous=FULL`'s, pipelined: the writer commits without
//! waiting for the disk and hands the batch to a sync thread, which
//! `fdatasync`s both WAL files and only then answers the batch's callers —
//! while the writer already runs the next batch. A commit is answered only
//! once its frames (and every earlier frame) are on disk, as with FULL. The
//! checkpointer's connection keeps `synchronous=FULL`, so WAL frames are
//! synced before they are copied into the database files. If an `fdatasync`
//! fails, the store refuses every later write until it is reopened: after a
//! failed flush the kernel may have dropped pages, and writing on would
//! build on a hole.
//!
//! With WAL, SQLite commits the two files one after the other, so a crash
//! between the two commits leaves one transaction half done in one of them;
//! `recover` mends that as the store opens, before any job runs.

mod ops;
mod recover;
mod schema;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ops::Deref;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use dzl_audit::Head;
use rusqlite::{params, Connection, ErrorCode as SqlCode};

use crate::{StoreError, StoreResult};

/// Jobs one transaction may hold before it commits.
const MAX_BATCH: usize = 512;

/// How long the writer keeps a transaction open for more jobs once the
/// queue is empty, when the previous batch showed concurrent callers. A
/// commit's cost is mostly per page, and jobs committed together share
/// pages (the tables' right-hand leaves, the audit head, the meter): in
/// alternated runs under load the writer's system time per deposit fell
/// from 39–47 to 34–40 µs. A lone caller never waits (docs/performance.md).
const LINGER: std::time::Duration = std::time::Duration::from_micros(500);

/// The writer's page cache per database while the vault database is
/// smaller than 1 GiB, and once it is larger (in KiB, as `PRAGMA
/// cache_size` takes negative values).
/// Below 1 GiB the whole file is in the memory map, so the cache holds
/// little but the transaction's own pages, and must stay small: SQLite
/// renumbers B-tree pages through page 262,145 (the lock page at 1 GiB),
/// and every commit after such a renumbering walks the writer's whole
/// cache. That walk was a fifth of the writer's time with 256 MiB of
/// cache. Past 1 GiB the walk never happens, and a large cache keeps the
/// random-keyed index pages that lie beyond the map.
const SMALL_CACHE_KIB: i64 = 2048;
const LARGE_CACHE_KIB: i64 = 262_144;
const LARGE_CACHE_FROM_PAGES: i64 = 262_144;

type Completion = Box<dyn FnOnce(Option<StoreError>) + Send>;
/// A job run once: given the open transaction, or why there is none.
type OnceJob = Box<dyn FnOnce(Result<&WriteTx, &StoreError>) -> Completion + Send>;

/// A queued write.
enum Job {
    /// Runs once, in a savepoint of its own.
    Once(OnceJob),
    /// May run more than once: first without a savepoint of its own, in a
    /// group of such jobs sharing one ([`Group`]); again, in its own, if a
    /// job of its group fails. Deposits and redemptions: a savepoint per
    /// job copied every page each job touched, which was about a fifth of
    /// the writer's time per deposit (`benches/writer.rs`).
    Rerunnable(Box<dyn Rerun>),
}

impl Job {
    fn once<R: Send + 'static>(
        f: impl FnOnce(&WriteTx) -> StoreResult<R> + Send + 'static,
        reply: crate::Reply<R>,
    ) -> Job {
        Job::Once(Box::new(move |conn| {
            let result = match conn {
                Err(e) => Err(e.clone()),
                Ok(conn) => in_savepoint(conn, f),
            };
            completion(result, reply)
        }))
    }

    fn rerunnable<R: Send + 'static>(
        f: impl Fn(&WriteTx) -> StoreResult<R> + Send + 'static,
        reply: crate::Reply<R>,
    ) -> Job {
        Job::Rerunnable(Box::new(Rerunnable {
            f,
            result: None,
            reply,
        }))
    }

    /// Answers the job with `err` without running it.
    fn refuse(self, err: &StoreError) {
        match self {
            Job::Once(job) => job(Err(err))(None),
            Job::Rerunnable(job) => job.finish(Some(err))(None),
        }
    }
}

/// A write the writer may run more than once; only its last run counts.
trait Rerun: Send {
    /// Runs the job in the open transaction, in a savepoint of its own if
    /// `own_savepoint`, keeping its result; whether it succeeded.
    fn run(&mut self, tx: &WriteTx, own_savepoint: bool) -> bool;
    /// The job's completion: its last run's result, or `err` instead.
    fn finish(self: Box<Self>, err: Option<&StoreError>) -> Completion;
}

struct Rerunnable<F, R> {
    f: F,
    result: Option<StoreResult<R>>,
    reply: crate::Reply<R>,
}

impl<F, R> Rerun for Rerunnable<F, R>
where
    F: Fn(&WriteTx) -> StoreResult<R> + Send,
    R: Send + 'static,
{
    fn run(&mut self, tx: &WriteTx, own_savepoint: bool) -> bool {
        let result = if own_savepoint {
            in_savepoint(tx, &self.f)
        } else {
            caught(tx, &self.f)
        };
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn finish(self: Box<Self>, err: Option<&StoreError>) -> Completion {
        let result = match (err, self.result) {
            (Some(e), _) => Err(e.clone()),
            (None, Some(result)) => result,
            (None, None) => Err(StoreError::Unavailable("the write never ran".into())),
        };
        completion(result, self.reply)
    }
}

/// A job's completion: `reply` gets the job's `result` once its
/// transaction is durable, or the commit's (or sync's) error instead.
fn completion<R: Send + 'static>(result: StoreResult<R>, reply: crate::Reply<R>) -> Completion {
    Box::new(move |commit_err| {
        reply(match commit_err {
            Some(e) => Err(e),
            None => result,
        })
    })
}

/// The writer's connection, and what its open transaction has still to
/// write. Every job of a batch appends to one audit chain and counts one
/// call: rather than read and rewrite the chain's head row and the meter's
/// row once per job, the transaction keeps them here and writes each once,
/// just before COMMIT ([`WriteTx::flush`]). A job's savepoint that rolls
/// back rolls this back too. Nothing here outlives its transaction, so a
/// second process writing between two transactions (`dzlctl` beside a
/// running vault) is seen: the head is read afresh by each transaction's
/// first entry, inside its write lock.
pub(crate) struct WriteTx {
    conn: Connection,
    pending: RefCell<Pending>,
}

/// One metered count: day, tenant, operation, outcome.
type UsageKey = (String, String, &'static str, String);

#[derive(Default)]
struct Pending {
    /// The chain's head after this transaction's last entry, once it has one.
    head: Option<Head>,
    /// The calls counted in this transaction, in order.
    usage: Vec<UsageKey>,
}

/// Where a job's savepoint started, to roll [`Pending`] back to.
struct Mark {
    head: Option<Head>,
    usage: usize,
}

impl Deref for WriteTx {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.conn
    }
}

impl WriteTx {
    fn new(conn: Connection) -> WriteTx {
        WriteTx {
            conn,
            pending: RefCell::new(Pending::default()),
        }
    }

    /// The audit chain's head as this transaction sees it.
    pub(crate) fn audit_head(&self) -> StoreResult<Head> {
        if let Some(head) = &self.pending.borrow().head {
            return Ok(head.clone());
        }
        Ok(ops::stored_audit_head(&self.conn)?)
    }

    /// Moves the head on after an entry was inserted.
    pub(crate) fn set_audit_head(&self, head: Head) {
        self.pending.borrow_mut().head = Some(head);
    }

    /// Counts one call for billing.
    pub(crate) fn count_usage(&self, key: UsageKey) {
        self.pending.borrow_mut().usage.push(key);
    }

    fn mark(&self) -> Mark {
        let p = self.pending.borrow();
        Mark {
            head: p.head.clone(),
            usage: p.usage.len(),
        }
    }

    fn roll_back_to(&self, mark: Mark) {
        let mut p = self.pending.borrow_mut();
        p.head = mark.head;
        p.usage.truncate(mark.usage);
    }

    /// Writes what is pending, then commits the transaction.
    fn commit(&self) -> StoreResult<()> {
        self.flush()?;
        self.conn.execute_batch("COMMIT").map_err(map_sql)
    }

    /// Forgets what is pending, then rolls the transaction back: the
    /// in-memory head must never outlive the entries it follows.
    fn roll_back(&self) -> rusqlite::Result<()> {
        self.discard();
        self.conn.execute_batch("ROLLBACK")
    }

    /// Writes the head and the counts; the transaction's last statements.
    fn flush(&self) -> StoreResult<()> {
        let pending = std::mem::take(&mut *self.pending.borrow_mut());
        if let Some(head) = pending.head {
            self.conn
                .prepare_cached("UPDATE audit_head SET seq = ?1, hash = ?2 WHERE id = 1")?
                .execute(params![head.seq, head.hash])?;
        }
        let mut counts: BTreeMap<UsageKey, i64> = BTreeMap::new();
        for key in pending.usage {
            *counts.entry(key).or_default() += 1;
        }
        let mut upsert = self.conn.prepare_cached(
            "INSERT INTO usage (day, tenant_id, operation, outcome, calls) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (day, tenant_id, operation, outcome) DO UPDATE SET calls = calls + excluded.calls",
        )?;
        for ((day, tenant, operation, outcome), calls) in counts {
            upsert.execute(params![day, tenant, operation, outcome, calls])?;
        }
        Ok(())
    }

    /// Forgets what a failed transaction had pending.
    fn discard(&self) {
        *self.pending.borrow_mut() = Pending::default();
    }
}

/// The SQLite store. Cheap to share behind an `Arc`.
pub struct SqliteStore {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    reader: Mutex<Connection>,
    writer: Mutex<Option<JoinHandle<()>>>,
    syncer: Mutex<Option<JoinHandle<()>>>,
    checkpointer: Mutex<Option<(mpsc::Sender<()>, JoinHandle<()>)>>,
    dir: PathBuf,
}

/// How soon the checkpointer runs again after a round that copied frames.
/// Each round ends with an `fdatasync` of the database file it copied
/// into, and while that flush runs, the WALs' own `fdatasync`s wait behind
/// it on the disk: with rounds 250 ms apart, the vault's took 27 ms on
/// average, and three quarters of the deposits slower than the p99 had
/// overlapped a round and a WAL flush of over 3 ms. Rounds 25 ms apart
/// flushed a tenth as much each: in alternated runs the p99 of deposits
/// fell from 12.3–16.5 ms to 9.9–13.7 ms. Rounds 10 ms apart keep the
/// flushes of redemptions' scattered code pages short too: in eight
/// alternated rounds their p99 was 8.4–9.9 ms against 10.6–12.1 ms at
/// 25 ms, for 1–3 µs more of the checkpointer's CPU per request
/// (docs/performance.md).
const CHECKPOINT_BUSY: std::time::Duration = std::time::Duration::from_millis(10);

/// How soon it runs again after a round that found nothing to copy: an
/// idle vault is not woken a hundred times a second.
const CHECKPOINT_IDLE: std::time::Duration = std::time::Duration::from_millis(250);

/// WAL frames (of 4 KiB pages) past which a WAL is started over: 32,768
/// frames, 128 MiB. Starting over holds the writer for a few milliseconds
/// ([`restart_wal`]), so it should be rare. A crash leaves the WAL for the
/// next start to recover: killed under load with 136–246 MiB of WAL file,
/// the vault was ready again in 0.02–0.09 s (`scripts/crash-ready`).
const WAL_RESTART_FRAMES: i64 = 32_768;

/// The writer waits for readers during a restart in steps of half a
/// millisecond, up to 10 s in all (SQLite's default handler sleeps up to
/// 100 ms at a time, which became the writes' tail latency).
fn writer_busy(attempt: i32) -> bool {
    if attempt >= 20_000 {
        return false;
    }
    std::thread::sleep(std::time::Duration::from_micros(500));
    true
}

/// The two attached databases, in the order of [`Restarts`]' flags and of
/// the checkpointer's [`DbFile`]s.
const SCHEMAS: [&str; 2] = ["main", "ident"];

/// The WALs the checkpointer has found long and copied, for the writer to
/// start over between two of its transactions ([`Round::wants_restart`]).
#[derive(Default)]
struct Restarts([AtomicBool; 2]);

/// Checkpoints both WALs until told to stop, PASSIVE: it never waits for,
/// nor blocks, the writer. But under continuous writes the WAL would never
/// start over, since the writer appends while the checkpointer copies, and
/// it would grow without bound (9 GB after three minutes of load,
/// measured). So once a WAL holds more than [`WAL_RESTART_FRAMES`], the
/// checkpointer asks the writer to start it over ([`restart_wal`]): the
/// writer does so between two transactions, when only the frames appended
/// since this PASSIVE round are left to copy. A RESTART run here instead
/// had to catch the writer between transactions, waited up to 1.9 s for
/// that, and then held it while it copied everything appended meanwhile
/// (docs/performance.md). The writer's own automatic checkpoints are off,
/// so copying never lands inside a commit.
fn checkpoint_loop(
    conn: Connection,
    stop: mpsc::Receiver<()>,
    restarts: Arc<Restarts>,
    dir: PathBuf,
) {
    let mut files = [DbFile::new(vault_db(&dir)), DbFile::new(identity_db(&dir))];
    let mut wait = CHECKPOINT_IDLE;
    loop {
        match stop.recv_timeout(wait) {
            Err(mpsc::RecvTimeoutError::Timeout) => {
                wait = CHECKPOINT_IDLE;
                for ((schema, restart), file) in SCHEMAS.iter().zip(&restarts.0).zip(&mut files) {
                    match checkpoint(&conn, schema) {
                        Ok(round) => {
                            if file.sync_after(&round) {
                                wait = CHECKPOINT_BUSY;
                            }
                            if round.wants_restart() {
                                restart.store(true, Ordering::Release);
                            }
                        }
                        Err(e) => {
                            log::warn!("WAL checkpoint of {schema} failed (will retry): {e}")
                        }
                    }
                }
            }
            _ => return,
        }
    }
}

/// What a PASSIVE round found: frames in the WAL, and frames copied into the
/// database file so far.
struct Round {
    frames: i64,
    copied: i64,
}

impl Round {
    /// Whether the WAL should start over now: it is long, and this round
    /// copied nearly all of it (a reader's snapshot may hold a few frames
    /// back), so the writer's RESTART has little left to copy. Past twice
    /// the length it starts over regardless, and the writer waits for what
    /// is left: the WAL's length stays bounded.
    fn wants_restart(&self) -> bool {
        self.frames > 2 * WAL_RESTART_FRAMES
            || (self.frames > WAL_RESTART_FRAMES
                && self.frames - self.copied <= RESTART_LEFT_FRAMES)
    }
}

/// Frames a round may leave uncopied and still call for a restart.
const RESTART_LEFT_FRAMES: i64 = 1_024;

/// One PASSIVE checkpoint of `schema`'s WAL.
fn checkpoint(conn: &Connection, schema: &str) -> rusqlite::Result<Round> {
    conn.query_row(
        &format!("PRAGMA {schema}.wal_checkpoint(PASSIVE)"),
        [],
        |r| {
            Ok(Round {
                frames: r.get(1)?,
                copied: r.get(2)?,
            })
        },
    )
}

/// A database file the checkpointer syncs after its rounds. SQLite syncs a
/// database file only once a round has copied the whole WAL, which under
/// continuous writes never happens before the writer's RESTART: that one
/// sync then flushed everything copied since the WAL last started over,
/// 25 ms with a 128 MiB WAL, while the writer waited (docs/performance.md).
/// Synced here, off the writer, after each round that copied frames.
struct DbFile {
    path: PathBuf,
    file: Option<std::fs::File>,
    synced: i64,
}

impl DbFile {
    fn new(path: PathBuf) -> DbFile {
        DbFile {
            path,
            file: None,
            synced: 0,
        }
    }

    /// Syncs the file if `round` copied frames since the last sync. True
    /// if it had copied any (whether or not the sync succeeded).
    fn sync_after(&mut self, round: &Round) -> bool {
        if round.copied == self.synced {
            return false;
        }
        let file = match &self.file {
            Some(f) => f,
            None => match std::fs::File::open(&self.path) {
                Ok(f) => self.file.insert(f),
                Err(e) => {
                    log::warn!("opening {} to sync it: {e}", self.path.display());
                    return true;
                }
            },
        };
        match file.sync_data() {
            Ok(()) => self.synced = round.copied,
            Err(e) => log::warn!("syncing {}: {e}", self.path.display()),
        }
        true
    }
}

/// Starts `schema`'s WAL over, on the writer's connection between two
/// transactions: a RESTART checkpoint copies the few frames the last
/// PASSIVE round left, syncs the database file (synchronous is FULL for
/// it, as on the checkpointer's connection), and waits for readers; the
/// next transaction then writes from the start of the WAL. False if it
/// could not (the checkpointer was mid-round, or an error, logged): the WAL
/// stays as it was, to be started over later.
fn restart_wal(conn: &Connection, schema: &str) -> bool {
    let restarted = conn
        .execute_batch(&format!("PRAGMA {schema}.synchronous = FULL"))
        .and_then(|()| {
            conn.query_row(
                &format!("PRAGMA {schema}.wal_checkpoint(RESTART)"),
                [],
                |r| r.get::<_, i64>(0),
            )
        });
    if let Err(e) = conn.execute_batch(&format!("PRAGMA {schema}.synchronous = OFF")) {
        log::warn!("setting synchronous = OFF on {schema} again failed: {e}");
    }
    match restarted {
        Ok(busy) => busy == 0,
        Err(e) => {
            log::warn!("starting the WAL of {schema} over failed (will retry): {e}");
            false
        }
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// The main database file in `dir`.
pub fn vault_db(dir: &Path) -> PathBuf {
    dir.join("vault.db")
}

/// The identity database file in `dir`.
pub fn identity_db(dir: &Path) -> PathBuf {
    dir.join("identity.db")
}

pub(crate) fn map_sql(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            SqlCode::DatabaseCorrupt | SqlCode::NotADatabase => StoreError::Corrupt(e.to_string()),
            SqlCode::ConstraintViolation => StoreError::Invalid(e.to_string()),
            _ => StoreError::Unavailable(e.to_string()),
        },
        rusqlite::Error::QueryReturnedNoRows
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::FromSqlConversionFailure(..) => StoreError::Corrupt(e.to_string()),
        _ => StoreError::Unavailable(e.to_string()),
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        map_sql(e)
    }
}

fn open_connection(dir: &Path) -> StoreResult<Connection> {
    let conn = Connection::open(vault_db(dir))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    let ident = identity_db(dir);
    let ident = ident
        .to_str()
        .ok_or_else(|| StoreError::Invalid("data directory path is not UTF-8".into()))?;
    conn.execute("ATTACH DATABASE ?1 AS ident", [ident])?;
    // The memory map serves reads of the random-keyed indexes (subject
    // blind index, external_ref) instead of `pread` (docs/performance.md);
    // writes never go through it. Every connection starts with a small page
    // cache: a reader's is emptied by each commit of the writer anyway, and
    // the writer's grows with its database (`size_caches`). Sub-journals
    // stay in memory. A WAL that starts over is cut back to 256 MiB, above
    // the size it starts over at (`WAL_RESTART_FRAMES`), so that under
    // load its file is reused, not cut and grown again each time (cutting
    // it cost the restart 4 ms).
    conn.execute_batch(&format!(
        "PRAGMA main.journal_mode = WAL;
         PRAGMA ident.journal_mode = WAL;
         PRAGMA main.synchronous = FULL;
         PRAGMA ident.synchronous = FULL;
         PRAGMA main.secure_delete = ON;
         PRAGMA ident.secure_delete = ON;
         PRAGMA main.cache_size = -{SMALL_CACHE_KIB};
         PRAGMA ident.cache_size = -{SMALL_CACHE_KIB};
         PRAGMA main.mmap_size = 4294967296;
         PRAGMA ident.mmap_size = 1073741824;
         PRAGMA main.journal_size_limit = 268435456;
         PRAGMA ident.journal_size_limit = 268435456;
         PRAGMA foreign_keys = ON;
         PRAGMA temp_store = MEMORY;"
    ))?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `dir` and starts its writer.
    pub fn open(dir: &Path) -> StoreResult<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Unavailable(format!("creating {}: {e}", dir.display())))?;
        restrict_dir(dir);
        let writer_conn = open_connection(dir)?;
        schema::migrate(&writer_conn)?;
        writer_conn.busy_handler(Some(writer_busy))?;
        let writer_conn = WriteTx::new(writer_conn);
        recover::mend(&writer_conn, chrono::Utc::now())?;
        // The sync thread makes each commit durable before it is answered.
        writer_conn.execute_batch(
            "PRAGMA main.wal_autocheckpoint = 0; PRAGMA ident.wal_autocheckpoint = 0;
             PRAGMA main.synchronous = OFF; PRAGMA ident.synchronous = OFF;",
        )?;
        let reader = open_connection(dir)?;
        let checkpoint_conn = open_connection(dir)?;
        // SQLite creates files 0644 and gives a new -wal or -shm its
        // database's mode: owner-only from here on.
        restrict_files(dir);
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let restarts = Arc::new(Restarts::default());
        let wanted = restarts.clone();
        let db_dir = dir.to_owned();
        let checkpointer = std::thread::Builder::new()
            .name("dzl-sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpoint_conn, stop_rx, wanted, db_dir))
            .map_err(|e| StoreError::Unavailable(format!("starting the checkpointer: {e}")))?;
        // Set when an `fdatasync` fails: no write is accepted any more.
        let poisoned = Arc::new(AtomicBool::new(false));
        let (sync_tx, sync_rx) = mpsc::channel::<Vec<Completion>>();
        let wals = Wals::new(dir);
        let sync_poison = poisoned.clone();
        let syncer = std::thread::Builder::new()
            .name("dzl-sqlite-sync".into())
            .spawn(move || sync_loop(wals, sync_rx, sync_poison))
            .map_err(|e| StoreError::Unavailable(format!("starting the sync thread: {e}")))?;
        let (tx, rx) = mpsc::channel::<Job>();
        let handle = std::thread::Builder::new()
            .name("dzl-sqlite-writer".into())
            .spawn(move || writer_loop(writer_conn, rx, sync_tx, poisoned, restarts))
            .map_err(|e| StoreError::Unavailable(format!("starting writer: {e}")))?;
        Ok(SqliteStore {
            jobs: Mutex::new(Some(tx)),
            reader: Mutex::new(reader),
            writer: Mutex::new(Some(handle)),
            syncer: Mutex::new(Some(syncer)),
            checkpointer: Mutex::new(Some((stop_tx, checkpointer))),
            dir: dir.to_owned(),
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs `f` in its own savepoint in the writer's next transaction, and
    /// returns once that transaction is committed (or failed). `Err` from `f`
    /// rolls back everything `f` did.
    pub(crate) fn write<R: Send + 'static>(
        &self,
        f: impl FnOnce(&WriteTx) -> StoreResult<R> + Send + 'static,
    ) -> StoreResult<R> {
        wait_for(|reply| self.submit(f, reply))
    }

    /// Queues `f` as [`SqliteStore::write`] runs it, and returns at once:
    /// `reply` gets the result once the transaction is on disk (from the
    /// sync thread), or an error (from the writer, or here if the store is
    /// closed). It is called exactly once, unless the writer thread dies
    /// with the job queued, in which case it is dropped uncalled.
    pub(crate) fn submit<R: Send + 'static>(
        &self,
        f: impl FnOnce(&WriteTx) -> StoreResult<R> + Send + 'static,
        reply: crate::Reply<R>,
    ) {
        self.queue(Job::once(f, reply));
    }

    /// [`SqliteStore::submit`] for a job that may run more than once
    /// ([`Job::Rerunnable`]): `f` must do the same given the same database,
    /// and its result is the one of its last run.
    pub(crate) fn submit_rerunnable<R: Send + 'static>(
        &self,
        f: impl Fn(&WriteTx) -> StoreResult<R> + Send + 'static,
        reply: crate::Reply<R>,
    ) {
        self.queue(Job::rerunnable(f, reply));
    }

    fn queue(&self, job: Job) {
        let sender = match self.jobs.lock() {
            Err(_) => Err(StoreError::Unavailable("writer lock poisoned".into())),
            Ok(jobs) => jobs
                .clone()
                .ok_or_else(|| StoreError::Unavailable("store closed".into())),
        };
        match sender {
            // A job the writer can no longer take comes back in the error.
            Ok(sender) => {
                if let Err(mpsc::SendError(job)) = sender.send(job) {
                    job.refuse(&StoreError::Unavailable("writer stopped".into()));
                }
            }
            Err(e) => job.refuse(&e),
        }
    }

    /// Runs `f` on the read connection (a consistent WAL snapshot per statement).
    pub(crate) fn read<R>(&self, f: impl FnOnce(&Connection) -> StoreResult<R>) -> StoreResult<R> {
        let conn = self
            .reader
            .lock()
            .map_err(|_| StoreError::Unavailable("reader lock poisoned".into()))?;
        f(&conn)
    }

    /// Runs `f` on the read connection inside one read transaction, so
    /// every statement of `f` sees the same snapshot.
    pub(crate) fn read_snapshot<R>(
        &self,
        f: impl FnOnce(&Connection) -> StoreResult<R>,
    ) -> StoreResult<R> {
        self.read(|conn| snapshot(conn, f))
    }

    /// [`Self::read_snapshot`] on a connection of its own, for a read that
    /// may take long (a cold subject lookup over ten million deposits took
    /// 0.9 s): the shared read connection answers `/readyz` and the
    /// reloads, which should not wait behind it. Opening one and reading
    /// a snapshot took 0.14 ms in a release build.
    pub(crate) fn read_snapshot_apart<R>(
        &self,
        f: impl FnOnce(&Connection) -> StoreResult<R>,
    ) -> StoreResult<R> {
        snapshot(&open_connection(&self.dir)?, f)
    }

    /// Stops the writer after the queued jobs; later calls fail.
    pub fn close(&self) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.take();
        }
        if let Ok(mut c) = self.checkpointer.lock() {
            if let Some((stop, h)) = c.take() {
                drop(stop);
                let _ = h.join();
            }
        }
        // The writer checkpoints both WALs (TRUNCATE) as it stops; the sync
        // thread answers the last batches and stops after it.
        if let Ok(mut w) = self.writer.lock() {
            if let Some(h) = w.take() {
                let _ = h.join();
            }
        }
        if let Ok(mut w) = self.syncer.lock() {
            if let Some(h) = w.take() {
                let _ = h.join();
            }
        }
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.close();
    }
}

impl Clone for StoreError {
    fn clone(&self) -> Self {
        match self {
            StoreError::Refused(c) => StoreError::Refused(*c),
            StoreError::DuplicateExternalRef(d) => StoreError::DuplicateExternalRef(d.clone()),
            StoreError::Unavailable(s) => StoreError::Unavailable(s.clone()),
            StoreError::Corrupt(s) => StoreError::Corrupt(s.clone()),
            StoreError::Invalid(s) => StoreError::Invalid(s.clone()),
        }
    }
}

/// Runs `f` inside one read transaction on `conn`.
fn snapshot<R>(conn: &Connection, f: impl FnOnce(&Connection) -> StoreResult<R>) -> StoreResult<R> {
    conn.execute_batch("BEGIN")?;
    let result = f(conn);
    let _ = conn.execute_batch("COMMIT");
    result
}

/// Submits a call with `submit` and blocks until its reply.
pub(crate) fn wait_for<R: Send + 'static>(submit: impl FnOnce(crate::Reply<R>)) -> StoreResult<R> {
    let (tx, rx) = mpsc::sync_channel::<StoreResult<R>>(1);
    submit(Box::new(move |out| {
        // The caller may have gone away; nothing to do then.
        let _ = tx.send(out);
    }));
    rx.recv()
        .map_err(|_| StoreError::Unavailable("writer stopped".into()))?
}

/// Runs one statement of the writer's own (savepoints), prepared once.
fn step(tx: &WriteTx, sql: &str) -> rusqlite::Result<()> {
    tx.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// Runs `f`, a panic in it being an error.
fn caught<R>(tx: &WriteTx, f: impl FnOnce(&WriteTx) -> StoreResult<R>) -> StoreResult<R> {
    catch_unwind(AssertUnwindSafe(|| f(tx)))
        .unwrap_or_else(|_| Err(StoreError::Corrupt("a store job panicked".into())))
}

fn in_savepoint<R>(tx: &WriteTx, f: impl FnOnce(&WriteTx) -> StoreResult<R>) -> StoreResult<R> {
    step(tx, "SAVEPOINT job")?;
    let mark = tx.mark();
    let result = caught(tx, f).and_then(|r| {
        step(tx, "RELEASE job")?;
        Ok(r)
    });
    if result.is_err() {
        tx.roll_back_to(mark);
        tx.execute_batch("ROLLBACK TO job; RELEASE job")?;
    }
    result
}

/// The jobs of one transaction.
#[derive(Default)]
struct Batch {
    /// The completions of the jobs that have run to the end.
    done: Vec<Completion>,
    /// The rerunnable jobs run since the group's savepoint, when one is open.
    group: Option<Group>,
    /// Set when the transaction can no longer commit; it is rolled back and
    /// every job gets this error.
    failed: Option<StoreError>,
}

/// Consecutive rerunnable jobs under one savepoint (`SAVEPOINT grp`), and
/// where [`Pending`] stood when it was opened.
struct Group {
    jobs: Vec<Box<dyn Rerun>>,
    mark: Mark,
}

impl Batch {
    fn run(&mut self, tx: &WriteTx, job: Job) {
        match job {
            Job::Once(job) => {
                // After the group, so that undoing the group never undoes it.
                self.close_group(tx);
                self.done.push(job(Ok(tx)));
            }
            Job::Rerunnable(job) => self.run_rerunnable(tx, job),
        }
    }

    fn run_rerunnable(&mut self, tx: &WriteTx, mut job: Box<dyn Rerun>) {
        let mut group = match self.group.take() {
            Some(group) => group,
            None => {
                if let Err(e) = step(tx, "SAVEPOINT grp") {
                    self.fail(map_sql(e));
                    self.done.push(job.finish(None));
                    return;
                }
                Group {
                    jobs: Vec::new(),
                    mark: tx.mark(),
                }
            }
        };
        if job.run(tx, false) {
            group.jobs.push(job);
            self.group = Some(group);
            return;
        }
        // The job failed, perhaps halfway: undo the whole group, then run
        // each of its jobs again, each in a savepoint of its own, so that
        // only the failed job's writes are left out.
        let Group { jobs, mark } = group;
        tx.roll_back_to(mark);
        let undone = tx.execute_batch("ROLLBACK TO grp; RELEASE grp");
        for mut j in jobs.into_iter().chain(std::iter::once(job)) {
            if undone.is_ok() {
                j.run(tx, true);
            }
            self.done.push(j.finish(None));
        }
        if let Err(e) = undone {
            self.fail(map_sql(e));
        }
    }

    /// Releases the group's savepoint: its jobs are done.
    fn close_group(&mut self, tx: &WriteTx) {
        if let Some(group) = self.group.take() {
            if let Err(e) = step(tx, "RELEASE grp") {
                self.fail(map_sql(e));
            }
            self.done
                .extend(group.jobs.into_iter().map(|j| j.finish(None)));
        }
    }

    fn fail(&mut self, e: StoreError) {
        log::error!("a write batch cannot commit: {e}");
        self.failed.get_or_insert(e);
    }
}

/// Why a poisoned store refuses writes.
const POISONED: &str = "the store could not make a write durable (fdatasync failed); \
    check the disk, then restart the vault";

fn writer_loop(
    conn: WriteTx,
    rx: mpsc::Receiver<Job>,
    synced: mpsc::Sender<Vec<Completion>>,
    poisoned: Arc<AtomicBool>,
    restarts: Arc<Restarts>,
) {
    let mut previous_batch = 0;
    let mut until_sizing: u32 = 0;
    while let Ok(first) = rx.recv() {
        if until_sizing == 0 {
            size_caches(&conn);
            until_sizing = 1024;
        }
        for (schema, restart) in SCHEMAS.iter().zip(&restarts.0) {
            if restart.load(Ordering::Acquire) && restart_wal(&conn, schema) {
                restart.store(false, Ordering::Release);
            }
        }
        let begin = if poisoned.load(Ordering::Acquire) {
            Err(StoreError::Unavailable(POISONED.into()))
        } else {
            conn.execute_batch("BEGIN IMMEDIATE").map_err(map_sql)
        };
        if let Err(err) = begin {
            first.refuse(&err);
            while let Ok(job) = rx.try_recv() {
                job.refuse(&err);
            }
            continue;
        }
        let deadline = std::time::Instant::now() + LINGER;
        let mut batch = Batch::default();
        let mut taken = 1;
        batch.run(&conn, first);
        while taken < MAX_BATCH && batch.failed.is_none() {
            let job = match rx.try_recv() {
                Ok(job) => job,
                Err(_) if previous_batch <= 1 => break,
                Err(_) => {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    match rx.recv_timeout(left) {
                        Ok(job) => job,
                        Err(_) => break,
                    }
                }
            };
            taken += 1;
            batch.run(&conn, job);
        }
        previous_batch = taken;
        until_sizing -= 1;
        batch.close_group(&conn);
        let Batch {
            done: completions,
            failed,
            ..
        } = batch;
        let committed = match failed {
            Some(e) => Err(e),
            None => conn.commit(),
        };
        match committed {
            Err(e) => {
                log::error!("commit of {} jobs failed: {e}", completions.len());
                let _ = conn.roll_back();
                for c in completions {
                    c(Some(e.clone()));
                }
            }
            // Answered by the sync thread once the WALs are on disk.
            Ok(()) => {
                if let Err(mpsc::SendError(completions)) = synced.send(completions) {
                    let e = StoreError::Unavailable("the sync thread stopped".into());
                    for c in completions {
                        c(Some(e.clone()));
                    }
                }
            }
        }
    }
    // Checkpoint on a clean stop so the WAL does not grow across restarts.
    let _ = conn.execute_batch(
        "PRAGMA main.synchronous = FULL; PRAGMA ident.synchronous = FULL;
         PRAGMA main.wal_checkpoint(TRUNCATE); PRAGMA ident.wal_checkpoint(TRUNCATE);",
    );
}

/// Gives the writer's databases the page cache the vault's size calls for
/// (see `SMALL_CACHE_KIB`): both stay small until `main` passes 1 GiB, then
/// both get the large cache. `ident` follows `main` because redemptions
/// read the identity pages of recent deposits, which are still in its WAL:
/// with 1,000,000 stored, a 2 MiB `ident` cache cost the writer 94 µs per
/// redemption against 77 µs with the large one (docs/performance.md). Run
/// when the writer starts and every 1,024 commits; a failure only leaves
/// the caches as they were.
fn size_caches(conn: &Connection) {
    size_caches_from(conn, LARGE_CACHE_FROM_PAGES)
}

fn size_caches_from(conn: &Connection, large_from_pages: i64) {
    let kib = match conn.query_row("PRAGMA main.page_count", [], |r| r.get::<_, i64>(0)) {
        Ok(p) if p >= large_from_pages => LARGE_CACHE_KIB,
        Ok(_) => SMALL_CACHE_KIB,
        Err(_) => return,
    };
    for schema in SCHEMAS {
        let _ = conn.execute_batch(&format!("PRAGMA {schema}.cache_size = -{kib}"));
    }
}

/// The WAL file of the database file `db`.
fn wal_of(db: PathBuf) -> PathBuf {
    let mut name = db.into_os_string();
    name.push("-wal");
    PathBuf::from(name)
}

/// The two WAL files, each opened once it exists (SQLite keeps a WAL while
/// any connection is open, so a handle stays valid).
struct Wals {
    dir: PathBuf,
    paths: [PathBuf; 2],
    files: [Option<std::fs::File>; 2],
}

impl Wals {
    fn new(dir: &Path) -> Wals {
        Wals {
            dir: dir.to_owned(),
            // `identity.db` first: a power cut between the two syncs then
            // loses the deposits of `vault.db`'s unsynced commits and keeps
            // identity rows nothing points to, which `recover` deletes as
            // the store opens. The other order would keep deposits whose
            // identity rows were lost; `recover` voids those too, but a
            // deposit stays on record, erased.
            paths: [wal_of(identity_db(dir)), wal_of(vault_db(dir))],
            files: [None, None],
        }
    }

    /// `fdatasync`s both WAL files. A WAL that does not exist yet holds no
    /// commit; when one is first opened, the directory is synced too, so
    /// its entry is as durable as its frames.
    fn sync(&mut self) -> std::io::Result<()> {
        for (slot, path) in self.files.iter_mut().zip(&self.paths) {
            if slot.is_none() {
                match std::fs::File::open(path) {
                    Ok(f) => {
                        std::fs::File::open(&self.dir)?.sync_all()?;
                        *slot = Some(f);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
            }
            if let Some(f) = slot {
                f.sync_data()?;
            }
        }
        Ok(())
    }
}

/// Answers committed batches once both WAL files are on disk, as many
/// batches per `fdatasync` as have queued up meanwhile.
fn sync_loop(mut wals: Wals, rx: mpsc::Receiver<Vec<Completion>>, poisoned: Arc<AtomicBool>) {
    while let Ok(first) = rx.recv() {
        let mut batches = vec![first];
        while let Ok(more) = rx.try_recv() {
            batches.push(more);
        }
        let err = if poisoned.load(Ordering::Acquire) {
            Some(StoreError::Unavailable(POISONED.into()))
        } else {
            match wals.sync() {
                Ok(()) => None,
                Err(e) => {
                    log::error!("fdatasync of the WAL failed: {e}; the store refuses writes until it is reopened");
                    poisoned.store(true, Ordering::Release);
                    Some(StoreError::Unavailable(POISONED.into()))
                }
            }
        };
        for c in batches.into_iter().flatten() {
            c(err.clone());
        }
    }
}

#[cfg(unix)]
fn restrict_dir(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Err(e) = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
        log::warn!("could not restrict {} to mode 0700: {e}", dir.display());
    }
}

#[cfg(not(unix))]
fn restrict_dir(_dir: &Path) {}

/// Makes every file of the data directory readable by its owner only.
#[cfg(unix)]
fn restrict_files(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for path in entries.flatten().map(|e| e.path()).filter(|p| p.is_file()) {
        if let Err(e) = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)) {
            log::warn!("could not restrict {} to mode 0600: {e}", path.display());
        }
    }
}

#[cfg(not(unix))]
fn restrict_files(_dir: &Path) {}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use rusqlite::OptionalExtension;

    fn entry(actor: &str) -> dzl_audit::AuditRecord {
        dzl_audit::AuditRecord {
            at: "2026-11-22T00:00:00.000Z".into(),
            actor: actor.into(),
            operation: "test.op".into(),
            result: "ok".into(),
            ..Default::default()
        }
    }

    fn usage_key(outcome: &str) -> UsageKey {
        (
            "2026-11-22".into(),
            "ten_a".into(),
            "test.op",
            outcome.into(),
        )
    }

    /// The chain as stored, verified against the stored head.
    fn verified_entries(conn: &Connection) -> u64 {
        let head = ops::stored_audit_head(conn).unwrap();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {} FROM audit ORDER BY seq",
                ops::AUDIT_COLUMNS
            ))
            .unwrap();
        let rows = stmt.query_map([], ops::audit_row).unwrap();
        dzl_audit::verify_chain(rows, &head, |_| {}).unwrap()
    }

    fn calls(conn: &Connection, outcome: &str) -> Option<i64> {
        conn.query_row(
            "SELECT calls FROM usage WHERE outcome = ?1",
            [outcome],
            |r| r.get(0),
        )
        .optional()
        .unwrap()
    }

    fn store_tx(dir: &Path) -> WriteTx {
        let conn = open_connection(dir).unwrap();
        schema::migrate(&conn).unwrap();
        WriteTx::new(conn)
    }

    /// One job of a batch: an audit entry and a count, then it fails if
    /// `fail` (having written both).
    fn job(tx: &WriteTx, actor: &str, fail: bool) -> StoreResult<()> {
        ops::append_audit(tx, entry(actor))?;
        tx.count_usage(usage_key(if fail { "failed" } else { "ok" }));
        if fail {
            Err(StoreError::Invalid("this job fails".into()))
        } else {
            Ok(())
        }
    }

    /// One transaction of jobs (actor, fails), run once each.
    fn commit(tx: &WriteTx, jobs: &[(&str, bool)]) -> Vec<bool> {
        let jobs: Vec<_> = jobs.iter().map(|&(a, f)| (a, f, false)).collect();
        commit_kinds(tx, &jobs)
    }

    /// One transaction of jobs (actor, fails, rerunnable), run and committed
    /// as the writer does; which jobs succeeded.
    fn commit_kinds(tx: &WriteTx, jobs: &[(&str, bool, bool)]) -> Vec<bool> {
        let results = Arc::new(Mutex::new(BTreeMap::new()));
        tx.execute_batch("BEGIN IMMEDIATE").unwrap();
        let mut batch = Batch::default();
        for (i, &(actor, fail, rerunnable)) in jobs.iter().enumerate() {
            let actor = actor.to_owned();
            let results = results.clone();
            let reply: crate::Reply<()> = Box::new(move |out| {
                results.lock().unwrap().insert(i, out.is_ok());
            });
            let job = if rerunnable {
                Job::rerunnable(move |tx| job(tx, &actor, fail), reply)
            } else {
                Job::once(move |tx| job(tx, &actor, fail), reply)
            };
            batch.run(tx, job);
        }
        batch.close_group(tx);
        assert!(batch.failed.is_none());
        tx.commit().unwrap();
        for c in batch.done {
            c(None);
        }
        let results = results.lock().unwrap();
        (0..jobs.len()).map(|i| results[&i]).collect()
    }

    fn audit_actors(tx: &WriteTx) -> Vec<String> {
        tx.prepare("SELECT actor FROM audit ORDER BY seq")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn a_failed_rerunnable_job_leaves_nothing_and_its_group_all_it_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let tx = store_tx(dir.path());
        let done = commit_kinds(
            &tx,
            &[
                ("a", false, true),
                ("once", false, false),
                ("b", false, true),
                ("c", false, true),
                ("fails", true, true),
                ("d", false, true),
                ("fails-too", true, true),
            ],
        );
        assert_eq!(done, [true, true, true, true, false, true, false]);
        assert_eq!(audit_actors(&tx), ["a", "once", "b", "c", "d"]);
        assert_eq!(
            verified_entries(&tx),
            5,
            "the chain runs through the reruns"
        );
        assert_eq!(calls(&tx, "ok"), Some(5));
        assert_eq!(
            calls(&tx, "failed"),
            None,
            "the failed jobs' counts are gone"
        );

        assert_eq!(commit_kinds(&tx, &[("e", false, true)]), [true]);
        assert_eq!(calls(&tx, "ok"), Some(6));
        assert_eq!(verified_entries(&tx), 6);
    }

    #[test]
    fn a_batch_writes_head_and_counts_once_and_a_failed_job_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let tx = store_tx(dir.path());
        let done = commit(&tx, &[("a", false), ("b", true), ("c", false)]);
        assert_eq!(done, [true, false, true]);

        assert_eq!(verified_entries(&tx), 2, "the failed job's entry is gone");
        assert_eq!(audit_actors(&tx), ["a", "c"]);
        assert_eq!(calls(&tx, "ok"), Some(2));
        assert_eq!(calls(&tx, "failed"), None, "the failed job's count is gone");

        // The next batch adds to the stored count.
        assert_eq!(commit(&tx, &[("d", false)]), [true]);
        assert_eq!(calls(&tx, "ok"), Some(3));
        assert_eq!(verified_entries(&tx), 3);
    }

    #[test]
    fn each_transaction_reads_the_head_another_writer_moved() {
        let dir = tempfile::tempdir().unwrap();
        let ours = store_tx(dir.path());
        let theirs = store_tx(dir.path());
        for (tx, actor) in [(&ours, "a"), (&theirs, "b"), (&ours, "c")] {
            assert_eq!(commit(tx, &[(actor, false)]), [true]);
        }
        assert_eq!(verified_entries(&ours), 3);
    }

    #[test]
    fn a_failed_commit_forgets_what_was_pending() {
        let dir = tempfile::tempdir().unwrap();
        let tx = store_tx(dir.path());
        tx.execute_batch("BEGIN IMMEDIATE").unwrap();
        job(&tx, "a", false).unwrap();
        tx.roll_back().unwrap();
        assert_eq!(commit(&tx, &[("b", false)]), [true]);
        assert_eq!(verified_entries(&tx), 1);
        assert_eq!(calls(&tx, "ok"), Some(1));
    }

    #[test]
    fn a_database_file_is_synced_once_per_round_that_copied_frames() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        std::fs::write(&path, b"pages").unwrap();
        let mut file = DbFile::new(path);
        let round = |copied| Round {
            frames: 100,
            copied,
        };
        assert!(!file.sync_after(&round(0)), "nothing copied yet");
        assert!(
            file.sync_after(&round(40)),
            "frames copied: the next round comes soon"
        );
        assert_eq!(file.synced, 40);
        assert!(
            !file.sync_after(&round(40)),
            "the same frames are not synced twice"
        );
        // After the WAL starts over, its frames are counted from zero.
        assert!(file.sync_after(&round(3)));
        assert_eq!(file.synced, 3);
    }

    #[test]
    fn a_long_wal_starts_over_once_nearly_copied_or_once_twice_too_long() {
        let long = WAL_RESTART_FRAMES + 1;
        let cases = [
            (WAL_RESTART_FRAMES, WAL_RESTART_FRAMES, false),
            (long, long, true),
            (long, long - RESTART_LEFT_FRAMES, true),
            (long, long - RESTART_LEFT_FRAMES - 1, false),
            (2 * WAL_RESTART_FRAMES, 0, false),
            (2 * WAL_RESTART_FRAMES + 1, 0, true),
        ];
        for (frames, copied, restart) in cases {
            assert_eq!(
                Round { frames, copied }.wants_restart(),
                restart,
                "{frames} frames, {copied} copied"
            );
        }
    }

    #[test]
    fn the_writer_starts_a_wal_over_and_stays_unsynchronised() {
        let dir = tempfile::tempdir().unwrap();
        let writer = open_connection(dir.path()).unwrap();
        schema::migrate(&writer).unwrap();
        writer
            .execute_batch("PRAGMA main.wal_autocheckpoint = 0; PRAGMA main.synchronous = OFF;")
            .unwrap();
        let checkpointer = open_connection(dir.path()).unwrap();
        let frames = |w: &Connection| {
            for i in 0..200 {
                w.execute(
                    "INSERT INTO meta (key, value) VALUES (?1, ?2)",
                    params![format!("k{i:04}-{}", "x".repeat(900)), i],
                )
                .unwrap();
            }
            let round = checkpoint(&checkpointer, "main").unwrap();
            assert_eq!(round.copied, round.frames, "nothing reads: all copied");
            round.frames
        };
        let before = frames(&writer);
        assert!(before > 200, "each commit appends frames: {before}");

        assert!(restart_wal(&writer, "main"));
        let synchronous: i64 = writer
            .query_row("PRAGMA main.synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(synchronous, 0, "the writer's commits stay unsynchronised");
        writer
            .execute("INSERT INTO meta (key, value) VALUES ('after', 1)", [])
            .unwrap();
        let after = checkpoint(&checkpointer, "main").unwrap().frames;
        assert!(
            (1..=4).contains(&after),
            "the WAL started over: {after} frames after one small commit, {before} before"
        );
    }

    fn cache_kib(conn: &Connection, schema: &str) -> i64 {
        conn.query_row(&format!("PRAGMA {schema}.cache_size"), [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn the_databases_get_the_large_cache_once_main_passes_the_threshold() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_connection(dir.path()).unwrap();
        schema::migrate(&conn).unwrap();
        let pages: i64 = conn
            .query_row("PRAGMA main.page_count", [], |r| r.get(0))
            .unwrap();
        assert!(pages > 1, "the schema takes a few pages");

        size_caches(&conn);
        assert_eq!(cache_kib(&conn, "main"), -SMALL_CACHE_KIB);
        assert_eq!(cache_kib(&conn, "ident"), -SMALL_CACHE_KIB);

        size_caches_from(&conn, pages + 1);
        assert_eq!(cache_kib(&conn, "main"), -SMALL_CACHE_KIB, "one page short");

        size_caches_from(&conn, pages);
        assert_eq!(cache_kib(&conn, "main"), -LARGE_CACHE_KIB);
        assert_eq!(cache_kib(&conn, "ident"), -LARGE_CACHE_KIB);
    }

    #[test]
    fn subject_access_does_not_wait_for_the_shared_read_connection() {
        use crate::Store;
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
        // A long read holds the shared read connection meanwhile.
        let held = store.reader.lock().unwrap();
        let (tx, rx) = mpsc::channel();
        let asker = store.clone();
        std::thread::spawn(move || {
            let call = crate::Call {
                actor: "ten_op".into(),
                operation: "subject_access.query",
                now: chrono::Utc::now(),
            };
            let _ = tx.send(
                asker
                    .subject_access(&call, "subject")
                    .map(|r| r.deposits.len()),
            );
        });
        let answer = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("answered while the read connection is held");
        assert_eq!(answer.unwrap(), 0);
        drop(held);
        assert_eq!(
            verified_entries(&store.reader.lock().unwrap()),
            1,
            "and audited"
        );
    }

    /// What a submitted job's reply got, from which thread.
    type Got = (StoreResult<i64>, std::thread::ThreadId);

    fn submit_and_wait(store: &SqliteStore, f: fn(&WriteTx) -> StoreResult<i64>) -> Got {
        let (tx, rx) = mpsc::channel::<Got>();
        store.submit(
            f,
            Box::new(move |out| {
                let _ = tx.send((out, std::thread::current().id()));
            }),
        );
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("every submitted job is answered")
    }

    #[test]
    fn a_submitted_job_is_answered_once_durable_and_after_close_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let here = std::thread::current().id();

        let (out, from) = submit_and_wait(&store, |tx| {
            Ok(
                tx.query_row("SELECT value FROM meta WHERE key = 'generation'", [], |r| {
                    r.get(0)
                })?,
            )
        });
        assert_eq!(out.unwrap(), 1);
        assert_ne!(from, here, "answered by the store's threads");

        let (out, _) = submit_and_wait(&store, |_| Err(StoreError::Invalid("refused".into())));
        assert!(matches!(out, Err(StoreError::Invalid(_))));

        store.close();
        let (out, from) = submit_and_wait(&store, |_| Ok(7));
        assert!(matches!(out, Err(StoreError::Unavailable(_))), "{out:?}");
        assert_eq!(from, here, "a closed store answers on the caller's thread");
    }
}
