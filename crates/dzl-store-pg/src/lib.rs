//! The PostgreSQL backend of dzl-vault: [`PgStore`] implements
//! [`dzl_store::Store`] with the SQLite backend's semantics, so several
//! stateless `dzl-vault` replicas can serve over one database; [`PgGuards`]
//! holds the request guards those replicas must share (nonces, rate limits,
//! failed-redemption windows).
//!
//! # Layout
//!
//! Two schemas: `dzl` (tenants, keyring, sealed secrets, deposits, records,
//! codes, redemptions, audit chain and head, usage, meta, the guards'
//! tables) and `dzl_identity` (the `applicant` group and its data keys,
//! kept apart as GB/T 35273 §6.2 asks; an operator may grant the two to
//! different roles). Timestamps are BIGINT milliseconds, ciphertext and
//! wrapped keys BYTEA. The schema is versioned ([`schema`]): every
//! [`PgStore::connect`] applies the missing migrations in one transaction
//! under `pg_advisory_xact_lock`, recording each in `dzl.schema_migrations`,
//! so replicas starting together migrate once.
//!
//! # Transactions and isolation
//!
//! One [`Store`](dzl_store::Store) method is one transaction, run at
//! **READ COMMITTED** with explicit row locks where a decision depends on a
//! row another transaction may change:
//!
//! * Redemption is exactly-once by the conditional
//!   `UPDATE dzl.codes SET state = 'redeemed' … WHERE row = $1 AND state = 'issued'`
//!   in the transaction that reads the sealed groups and appends the audit
//!   entry: a concurrent redeemer blocks on the row, re-reads it, matches
//!   nothing, and is refused (its refusal audited).
//! * The audit chain is appended under
//!   `SELECT seq, hash FROM dzl.audit_head WHERE id = 1 FOR UPDATE`, so
//!   appends from every replica are serialised. Each transaction appends its
//!   entries *last*, after every other row it locks (data rows, then its
//!   usage counter, then the head): the head is held only for the commit,
//!   and no lock order cycle can form through it.
//! * Keyring and tenant changes first lock the `generation` row of
//!   `dzl.meta` (one at a time across replicas); a write that wraps under a
//!   KEK version takes that version's row `FOR SHARE`, and `retire_kek`
//!   takes it `FOR UPDATE` before counting what still needs it, so no key
//!   can be stored under a version being retired.
//! * Deposits are locked (`FOR SHARE` to issue a code, `FOR UPDATE` to
//!   erase or purge) so no code is issued on an erased deposit.
//! * Reads that must agree with each other (audit verification, purge
//!   preview) run in one REPEATABLE READ, READ ONLY transaction.
//!
//! Refusals that must be recorded (a failed redemption) commit their audit
//! entry and come back as [`StoreError::Refused`]; refusals that must leave
//! no trace roll back. A transaction that fails with SQLSTATE 40001
//! (serialization failure) or 40P01 (deadlock) is retried from the start a
//! bounded number of times ([`PgOptions::max_attempts`]) with jittered
//! back-off.
//!
//! # PostgreSQL-compatible distributed SQL
//!
//! The same code runs on CockroachDB and YugabyteDB, with these notes:
//!
//! * CockroachDB runs SERIALIZABLE by default (READ COMMITTED only when the
//!   cluster enables it); YugabyteDB's READ COMMITTED also needs a cluster
//!   flag. Set [`PgOptions::isolation`] to [`Isolation::Serializable`] there.
//!   Contending transactions then fail with 40001 instead of waiting, and
//!   the retry loop above re-runs them: exactly-once redemption and the
//!   audit chain hold either way (the test suite runs the concurrent
//!   redemption test at SERIALIZABLE too). `SELECT … FOR UPDATE` and
//!   `FOR SHARE` are supported by both.
//! * The audit head is one row every write updates: the throughput ceiling
//!   of a replicated deployment is that row's commit rate, on any engine.
//! * Advisory locks are not implemented by CockroachDB: start one process
//!   first (e.g. `dzlctl` once) so it migrates before the other replicas
//!   connect. The audit table's append-only triggers need PL/pgSQL triggers
//!   (CockroachDB 24.3 or later); `UNLOGGED` tables are ordinary tables there.
//! * `BIGSERIAL` code rows are `unique_rowid()` values on CockroachDB: not
//!   sequential, still unique 64-bit keys, which is all a code embeds.
//!
//! # Connections
//!
//! An `r2d2` pool of `postgres` clients; each connection sets
//! `statement_timeout` and `idle_in_transaction_session_timeout` when it is
//! opened, so a stuck statement or a client that stalls holding the audit
//! head cannot block the other replicas for long. An unreachable database
//! is [`StoreError::Unavailable`] naming host and port, never the password.
//! Connections are made without TLS: run the database on the same host or
//! a private network until TLS to PostgreSQL is added.

pub mod guards;
mod ops;
pub mod schema;
pub mod testing;

use std::sync::Arc;
use std::time::Duration;

use dzl_store::{StoreError, StoreResult};
use postgres::config::SslMode;
use postgres::error::SqlState;
use postgres::{Client, IsolationLevel, Transaction};
use r2d2_postgres::PostgresConnectionManager;

pub use guards::PgGuards;

/// The connection pool: an r2d2 pool whose handle, when dropped, is dropped
/// on a plain thread. The sync `postgres` client runs a small runtime of its
/// own to close a connection, which panics on an async runtime's thread; a
/// server drops its store on one at shutdown, so the last handle must not
/// close connections there.
#[derive(Clone)]
pub(crate) struct Pool(Option<r2d2::Pool<Manager>>);

/// Every pool's TLS connector: rustls, used when the URL says
/// `sslmode=require` (see [`tls_connector`]); otherwise TLS is off.
type Tls = tokio_postgres_rustls::MakeRustlsConnect;
type Manager = PostgresConnectionManager<Tls>;

/// The connector for `config`. With `sslmode=require` the server's
/// certificate must chain to a CA in `ca_file` and name the host connected
/// to (stricter than libpq's `require`, which checks nothing); any other
/// `sslmode` is set to `disable`.
fn tls_connector(
    config: &mut postgres::Config,
    ca_file: Option<&std::path::Path>,
) -> StoreResult<Tls> {
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    if config.get_ssl_mode() == SslMode::Require {
        let ca = ca_file.ok_or_else(|| {
            StoreError::Invalid(
                "sslmode=require needs store.ca_file: the PEM CA certificates the PostgreSQL \
                 server's certificate must chain to"
                    .into(),
            )
        })?;
        let bad =
            |why: String| StoreError::Invalid(format!("store.ca_file {}: {why}", ca.display()));
        for cert in
            rustls::pki_types::CertificateDer::pem_file_iter(ca).map_err(|e| bad(e.to_string()))?
        {
            roots
                .add(cert.map_err(|e| bad(e.to_string()))?)
                .map_err(|e| bad(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(bad("no certificate in it".into()));
        }
    } else {
        config.ssl_mode(SslMode::Disable);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Invalid(format!("TLS to PostgreSQL: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(client))
}

impl Pool {
    fn new(pool: r2d2::Pool<Manager>) -> Self {
        Pool(Some(pool))
    }
}

impl std::ops::Deref for Pool {
    type Target = r2d2::Pool<Manager>;
    fn deref(&self) -> &Self::Target {
        // Only `drop` takes it out.
        self.0
            .as_ref()
            .unwrap_or_else(|| unreachable!("the pool is present until dropped"))
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if let Some(pool) = self.0.take() {
            if tokio_runtime_present() {
                let _ = std::thread::Builder::new()
                    .name("dzl-pg-pool-drop".into())
                    .spawn(move || drop(pool));
            } else {
                drop(pool);
            }
        }
    }
}

/// Whether this thread is inside a tokio runtime (where the sync client's
/// own runtime may not be started).
fn tokio_runtime_present() -> bool {
    tokio::runtime::Handle::try_current().is_ok()
}

/// The isolation level of write transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// PostgreSQL's default, with explicit row locks (see the crate doc).
    ReadCommitted,
    /// For engines that run SERIALIZABLE only (CockroachDB): conflicts
    /// become 40001 failures, which are retried.
    Serializable,
}

/// How to connect.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Connections in the pool (at least 1).
    pub pool_size: u32,
    /// Longest a statement may run (waiting for locks included) before the
    /// database cancels it; the call is then `Unavailable`.
    pub statement_timeout: Duration,
    /// Longest to wait for a new connection, or for a free one in the pool.
    pub connect_timeout: Duration,
    /// Longest a connection may sit idle inside a transaction before the
    /// database ends its session (releasing its locks).
    pub idle_in_transaction_timeout: Duration,
    /// Isolation of write transactions.
    pub isolation: Isolation,
    /// Attempts of one transaction that keeps failing with 40001/40P01.
    pub max_attempts: u32,
    /// PEM CA certificates the server's certificate must chain to; required
    /// when the URL says `sslmode=require` (TLS to the database).
    pub ca_file: Option<std::path::PathBuf>,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            pool_size: 16,
            statement_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            idle_in_transaction_timeout: Duration::from_secs(10),
            isolation: Isolation::ReadCommitted,
            max_attempts: 12,
            ca_file: None,
        }
    }
}

/// The PostgreSQL store. Cheap to clone (the pool is shared); every clone,
/// and every other `PgStore` on the same database, sees the same state.
#[derive(Clone)]
pub struct PgStore {
    pub(crate) pool: Pool,
    pub(crate) target: Arc<str>,
    pub(crate) isolation: Isolation,
    pub(crate) max_attempts: u32,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("target", &self.target)
            .field("isolation", &self.isolation)
            .finish_non_exhaustive()
    }
}

/// `host:port/database` of a configuration: what errors and logs may name.
pub(crate) fn describe_target(config: &postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or("(default database)");
    format!("{host}:{port}/{db}")
}

/// Parses a `postgres://` URL (or a `key=value` string) without ever
/// repeating it in an error, since it may hold a password.
pub(crate) fn parse_config(url: &str) -> StoreResult<postgres::Config> {
    url.parse::<postgres::Config>().map_err(|_| {
        StoreError::Invalid(
            "the PostgreSQL URL does not parse (expected postgres://user:password@host:port/database)"
                .into(),
        )
    })
}

/// Sets the session's timeouts on every new connection.
#[derive(Debug)]
struct SessionSettings {
    statement_timeout_ms: u128,
    idle_in_transaction_ms: u128,
}

impl r2d2::CustomizeConnection<Client, postgres::Error> for SessionSettings {
    fn on_acquire(&self, conn: &mut Client) -> Result<(), postgres::Error> {
        conn.batch_execute(&format!(
            "SET statement_timeout = {}; SET idle_in_transaction_session_timeout = {}; \
             SET application_name = 'dzl-vault'",
            self.statement_timeout_ms, self.idle_in_transaction_ms
        ))
    }
}

/// Logs pool errors without the connection string.
#[derive(Debug)]
struct LogErrors(Arc<str>);

impl r2d2::HandleError<postgres::Error> for LogErrors {
    fn handle_error(&self, error: postgres::Error) {
        log::warn!("PostgreSQL at {}: {error}", self.0);
    }
}

impl PgStore {
    /// Connects a pool to `url`, and brings the schema up to date (once,
    /// whoever else connects at the same time). `Unavailable` naming host and
    /// port when the database cannot be reached within
    /// `opts.connect_timeout`.
    pub fn connect(url: &str, opts: PgOptions) -> StoreResult<Self> {
        let mut config = parse_config(url)?;
        let target: Arc<str> = describe_target(&config).into();
        config.connect_timeout(opts.connect_timeout);
        let tls = tls_connector(&mut config, opts.ca_file.as_deref())?;
        let manager = PostgresConnectionManager::new(config, tls);
        let pool = r2d2::Pool::builder()
            .max_size(opts.pool_size.max(1))
            .min_idle(Some(1))
            .connection_timeout(opts.connect_timeout)
            .connection_customizer(Box::new(SessionSettings {
                statement_timeout_ms: opts.statement_timeout.as_millis().max(1),
                idle_in_transaction_ms: opts.idle_in_transaction_timeout.as_millis().max(1),
            }))
            .error_handler(Box::new(LogErrors(target.clone())))
            .build(manager)
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot connect to PostgreSQL at {target}: {e}"))
            })?;
        let store = PgStore {
            pool: Pool::new(pool),
            target,
            isolation: opts.isolation,
            max_attempts: opts.max_attempts.max(1),
        };
        let mut conn = store.conn()?;
        schema::migrate(&mut conn).map_err(|e| match e {
            TxError::Db(e) => map_pg(e),
            TxError::Store(e) => e,
        })?;
        Ok(store)
    }

    /// The guards replicas share, over this store's pool.
    pub fn guards(&self) -> PgGuards {
        PgGuards::new(self.pool.clone(), self.target.clone())
    }

    /// `host:port/database` this store talks to (no credentials).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// A pooled connection.
    pub(crate) fn conn(&self) -> StoreResult<r2d2::PooledConnection<Manager>> {
        pooled(&self.pool, &self.target)
    }

    /// Runs `f` in one write transaction (see the crate doc), retrying it
    /// on 40001/40P01. `Err` rolls back everything `f` did.
    pub(crate) fn tx<R>(
        &self,
        f: impl FnMut(&mut Transaction<'_>) -> TxResult<R>,
    ) -> StoreResult<R> {
        let level = match self.isolation {
            Isolation::ReadCommitted => IsolationLevel::ReadCommitted,
            Isolation::Serializable => IsolationLevel::Serializable,
        };
        self.run(level, false, f)
    }

    /// Runs `f` in one consistent read-only snapshot.
    pub(crate) fn snapshot<R>(
        &self,
        f: impl FnMut(&mut Transaction<'_>) -> TxResult<R>,
    ) -> StoreResult<R> {
        let level = match self.isolation {
            Isolation::ReadCommitted => IsolationLevel::RepeatableRead,
            Isolation::Serializable => IsolationLevel::Serializable,
        };
        self.run(level, true, f)
    }

    fn run<R>(
        &self,
        level: IsolationLevel,
        read_only: bool,
        mut f: impl FnMut(&mut Transaction<'_>) -> TxResult<R>,
    ) -> StoreResult<R> {
        let mut attempt = 1;
        loop {
            let mut conn = self.conn()?;
            let out = (|| -> TxResult<R> {
                let mut tx = conn
                    .build_transaction()
                    .isolation_level(level)
                    .read_only(read_only)
                    .start()?;
                let r = f(&mut tx)?;
                tx.commit()?;
                Ok(r)
            })();
            match out {
                Ok(r) => return Ok(r),
                Err(TxError::Db(e)) if retryable(&e) && attempt < self.max_attempts => {
                    log::debug!("transaction attempt {attempt} conflicted ({e}); retrying");
                    backoff(attempt);
                    attempt += 1;
                }
                Err(TxError::Db(e)) if retryable(&e) => {
                    return Err(StoreError::Unavailable(format!(
                        "the transaction kept conflicting with others ({attempt} attempts): {e}"
                    )))
                }
                Err(TxError::Db(e)) => return Err(map_pg(e)),
                Err(TxError::Store(e)) => return Err(e),
            }
        }
    }

    /// Runs `f` on a pooled connection outside an explicit transaction (each
    /// statement commits by itself), retrying it on 40001/40P01.
    pub(crate) fn read<R>(&self, f: impl FnMut(&mut Client) -> TxResult<R>) -> StoreResult<R> {
        with_client(&self.pool, &self.target, self.max_attempts, f)
    }
}

pub(crate) fn pooled(pool: &Pool, target: &str) -> StoreResult<r2d2::PooledConnection<Manager>> {
    pool.get().map_err(|e| {
        StoreError::Unavailable(format!("no connection to PostgreSQL at {target}: {e}"))
    })
}

/// Runs `f` on a pooled client, retrying it on 40001/40P01.
pub(crate) fn with_client<R>(
    pool: &Pool,
    target: &str,
    max_attempts: u32,
    mut f: impl FnMut(&mut Client) -> TxResult<R>,
) -> StoreResult<R> {
    let mut attempt = 1;
    loop {
        let mut conn = pooled(pool, target)?;
        match f(&mut conn) {
            Ok(r) => return Ok(r),
            Err(TxError::Db(e)) if retryable(&e) && attempt < max_attempts => {
                backoff(attempt);
                attempt += 1;
            }
            Err(TxError::Db(e)) => return Err(map_pg(e)),
            Err(TxError::Store(e)) => return Err(e),
        }
    }
}

/// Why a transaction's closure stopped: the database (maybe retryable), or
/// the store's own verdict.
#[derive(Debug)]
pub(crate) enum TxError {
    Db(postgres::Error),
    Store(StoreError),
}

impl From<postgres::Error> for TxError {
    fn from(e: postgres::Error) -> Self {
        TxError::Db(e)
    }
}

impl From<StoreError> for TxError {
    fn from(e: StoreError) -> Self {
        TxError::Store(e)
    }
}

pub(crate) type TxResult<T> = Result<T, TxError>;

/// Whether re-running the whole transaction may succeed.
fn retryable(e: &postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    )
}

/// Sleeps before attempt `attempt + 1`: exponential from 2 ms, capped at
/// 250 ms, with jitter so colliding transactions spread out.
fn backoff(attempt: u32) {
    use std::hash::{BuildHasher, Hasher};
    let base = 2u64.saturating_mul(1 << attempt.min(7)).min(250);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(attempt);
    let jitter = h.finish() % (base + 1);
    std::thread::sleep(Duration::from_millis(base / 2 + jitter));
}

/// Maps a PostgreSQL error to the store's error: the one place that knows
/// SQLSTATEs. Connection, I/O, timeouts, cancellations, resource
/// exhaustion and unresolved conflicts are `Unavailable`; integrity
/// violations are `Invalid` (a duplicate external reference never gets
/// here: the deposit's `ON CONFLICT DO NOTHING` finds it, and the refusal
/// names the deposit that holds it); corrupted data, rows that do not
/// decode and a missing schema are `Corrupt`.
pub fn map_pg(e: postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        let class = &code.code()[..2];
        return match class {
            // Integrity constraint violations: a bug or a bad argument.
            "23" => StoreError::Invalid(format!("{}: {}", code.code(), db.message())),
            // Data exceptions.
            "22" => StoreError::Invalid(format!("{}: {}", code.code(), db.message())),
            // Undefined table/column/function: the schema is not what it must be.
            "42" => StoreError::Corrupt(format!(
                "the database schema is not as expected ({}): {}",
                code.code(),
                db.message()
            )),
            // data_corrupted, index_corrupted.
            "XX" if *code == SqlState::DATA_CORRUPTED || *code == SqlState::INDEX_CORRUPTED => {
                StoreError::Corrupt(format!("{}: {}", code.code(), db.message()))
            }
            // A trigger refused (the audit trail is append-only).
            "P0" => StoreError::Invalid(db.message().to_owned()),
            // 57014 query_canceled (statement_timeout), 57P01 admin shutdown,
            // 08 connection, 53 resources, 40 unresolved conflicts, 25P03
            // idle-in-transaction timeout, 25006 read-only (a standby), …
            _ => StoreError::Unavailable(format!("{}: {}", code.code(), db.message())),
        };
    }
    let text = e.to_string();
    if text.starts_with("error deserializing")
        || text.starts_with("invalid column")
        || text.starts_with("query returned an unexpected number of rows")
    {
        StoreError::Corrupt(format!("unexpected stored value: {text}"))
    } else if text.starts_with("error serializing") || text.starts_with("expected ") {
        StoreError::Invalid(text)
    } else {
        // Closed connections, I/O errors, connect timeouts.
        StoreError::Unavailable(format!("PostgreSQL: {text}"))
    }
}
