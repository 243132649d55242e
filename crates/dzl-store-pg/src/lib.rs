//! The PostgreSQL backend of dzl-vault, for stateless replicas: several
//! `dzl-vault` servers over one database. Every rule is the store's
//! ([`dzl_store::ops`]); this crate holds what is PostgreSQL's own: the
//! SQL of [`dzl_store::tx::Tx`] ([`rows`]), the schema ([`schema`]), the
//! writer's connection and its audit chain ([`writer`]), the connection
//! pool, TLS to the database, and [`PgGuards`], the request guards every
//! replica shares (nonces, rate limits), batched.
//!
//! # Layout
//!
//! Two schemas: `dzl` (tenants, keyring, sealed secrets, deposits, their
//! records, codes, redemptions, audit chains, usage, meta, the guards'
//! tables) and `dzl_identity` (the `applicant` group and its data keys,
//! kept apart as GB/T 35273 §6.2 asks; an operator may grant the two to
//! different roles). Timestamps are BIGINT milliseconds, ciphertext and
//! wrapped keys BYTEA. [`PgStore::connect`] applies the missing migrations
//! in one transaction under `pg_advisory_xact_lock`, so replicas starting
//! together migrate once.
//!
//! # Writes
//!
//! Each replica has one writer ([`dzl_store::writer`]) on a connection of
//! its own: the jobs that arrive while a transaction commits share the
//! next one, a savepoint per group of jobs, and each job is answered once
//! COMMIT returns (`synchronous_commit` on: durable). The writer owns an
//! audit chain — claimed with a session advisory lock, opened and
//! announced in chain 1 if none is free — so replicas never wait for each
//! other's audit entries; its usage counters are its own rows too. What
//! two replicas really share is locked row by row at READ COMMITTED:
//!
//! * Redemption is exactly-once by the conditional
//!   `UPDATE dzl.codes SET state = 'redeemed' … WHERE row = $1 AND state = 'issued'`
//!   ([`dzl_store::tx::Tx::claim_code`]): a concurrent redeemer blocks on
//!   the row, re-reads it, matches nothing, and is refused (audited).
//! * A write that wraps under a KEK version holds that version's row
//!   `FOR SHARE` until commit, and `keys retire` takes it `FOR UPDATE`
//!   before counting what still needs it. Keyring and tenant changes first
//!   update the `generation` row, so they queue behind each other.
//! * A deposit is locked `FOR SHARE` to issue a code on it and `FOR UPDATE`
//!   to erase or purge it, so no code is issued on an erased deposit.
//! * Reads that must agree (audit verification, purge preview, `keys
//!   list`) run in one REPEATABLE READ, READ ONLY transaction.
//!
//! A transaction that fails with SQLSTATE 40001 (serialization failure) or
//! 40P01 (deadlock) is run again whole, a bounded number of times
//! ([`PgOptions::max_attempts`]) with jittered back-off.
//!
//! # PostgreSQL-compatible distributed SQL
//!
//! The same code runs on CockroachDB and YugabyteDB, with these notes:
//!
//! * CockroachDB runs SERIALIZABLE by default; set [`PgOptions::isolation`]
//!   to [`Isolation::Serializable`] there. Contending transactions then fail
//!   with 40001 instead of waiting, and are run again: exactly-once
//!   redemption and the audit chains hold either way.
//! * Advisory locks are not implemented by CockroachDB: there every writer
//!   opens a chain of its own at start instead of claiming a free one.
//!   Start one process first (e.g. `dzlctl` once) so it migrates before
//!   the other replicas connect. The audit table's append-only triggers
//!   need PL/pgSQL triggers (CockroachDB 24.3 or later); `UNLOGGED` tables
//!   are ordinary tables there.
//! * `BIGSERIAL` code rows are `unique_rowid()` values on CockroachDB: not
//!   sequential, still unique 64-bit keys, which is all a code embeds.
//!
//! # Connections
//!
//! Reads use an `r2d2` pool of `postgres` clients; the writer and the
//! guards have a connection each. Every connection sets
//! `statement_timeout` and `idle_in_transaction_session_timeout` when it is
//! opened, so a stuck statement cannot block the other replicas for long.
//! An unreachable database is [`StoreError::Unavailable`] naming host and
//! port, never the password. With `sslmode=require` in the URL the
//! connections use TLS and check the server's certificate against
//! [`PgOptions::ca_file`].

pub mod guards;
mod rows;
pub mod schema;
pub mod testing;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use dzl_store::tx::Tx;
use dzl_store::writer::Writer;
use dzl_store::{Backend, StoreError, StoreResult, Vault};
use postgres::config::SslMode;
use postgres::error::SqlState;
use postgres::Client;
use r2d2_postgres::PostgresConnectionManager;

pub use guards::PgGuards;

use rows::PgConn;

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
    /// Writer connections of this replica, each with its own audit chain
    /// (at least 1): a writer's transactions run one after another, so
    /// more than one keeps the database busy while a commit waits for its
    /// WAL flush or a round trip (docs/performance.md).
    pub writers: u32,
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
            writers: 2,
        }
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

/// The PostgreSQL store: one replica's reads and writer. Every
/// `PgStore` on the same database sees the same state.
pub type PgStore = Vault<PgBackend>;

/// How a new connection is made: the configuration, TLS, and the session
/// settings every connection gets.
#[derive(Clone)]
pub(crate) struct Connector {
    config: postgres::Config,
    tls: Tls,
    session: Arc<str>,
    pub(crate) target: Arc<str>,
}

impl Connector {
    /// A new connection of its own (not from the pool).
    pub(crate) fn connect(&self) -> StoreResult<Client> {
        let mut client = self.config.connect(self.tls.clone()).map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot connect to PostgreSQL at {}: {e}",
                self.target
            ))
        })?;
        client.batch_execute(&self.session).map_err(map_pg)?;
        Ok(client)
    }
}

/// The PostgreSQL backend's read side: the pool.
pub struct PgBackend {
    pool: Pool,
    connector: Connector,
    isolation: Isolation,
    max_attempts: u32,
}

impl std::fmt::Debug for PgBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgBackend")
            .field("target", &self.connector.target)
            .field("isolation", &self.isolation)
            .finish_non_exhaustive()
    }
}

/// Connects a pool to `url`, brings the schema up to date (once,
/// whoever else connects at the same time), and starts this replica's
/// writer on a connection and an audit chain of its own.
/// `Unavailable` naming host and port when the database cannot be
/// reached within `opts.connect_timeout`.
pub fn connect(url: &str, opts: PgOptions) -> StoreResult<PgStore> {
    let mut config = parse_config(url)?;
    let target: Arc<str> = describe_target(&config).into();
    config.connect_timeout(opts.connect_timeout);
    config.application_name("dzl-vault");
    let tls = tls_connector(&mut config, opts.ca_file.as_deref())?;
    let session: Arc<str> = format!(
        "SET statement_timeout = {}; SET idle_in_transaction_session_timeout = {}",
        opts.statement_timeout.as_millis().max(1),
        opts.idle_in_transaction_timeout.as_millis().max(1)
    )
    .into();
    let connector = Connector {
        config: config.clone(),
        tls: tls.clone(),
        session: session.clone(),
        target: target.clone(),
    };
    let manager = PostgresConnectionManager::new(config, tls);
    let pool = r2d2::Pool::builder()
        .max_size(opts.pool_size.max(1))
        .min_idle(Some(1))
        .connection_timeout(opts.connect_timeout)
        .connection_customizer(Box::new(SessionSettings(session)))
        .error_handler(Box::new(LogErrors(target.clone())))
        .build(manager)
        .map_err(|e| {
            StoreError::Unavailable(format!("cannot connect to PostgreSQL at {target}: {e}"))
        })?;
    let pool = Pool::new(pool);
    {
        let mut conn = pooled(&pool, &target)?;
        schema::migrate(&mut conn)?;
    }
    let writers = (0..opts.writers.max(1))
        .map(|_| writer::PgWriter::start(connector.clone(), opts.isolation, opts.max_attempts))
        .collect::<StoreResult<Vec<_>>>()?;
    let writer = Writer::start_lanes(writers, "dzl-pg-writer")?;
    let backend = PgBackend {
        pool,
        connector,
        isolation: opts.isolation,
        max_attempts: opts.max_attempts.max(1),
    };
    Ok(Vault::new(backend, writer))
}

/// The guards replicas share, batched on a connection of their own to
/// `store`'s database.
pub fn guards(store: &PgStore) -> StoreResult<PgGuards> {
    PgGuards::start(store.backend().connector.clone())
}

impl PgBackend {
    /// `host:port/database` this store talks to (no credentials).
    pub fn target(&self) -> &str {
        &self.connector.target
    }

    /// Runs `f` on a pooled connection between `begin` and COMMIT,
    /// retrying it on 40001/40P01.
    fn run<R>(
        &self,
        begin: Option<&str>,
        mut f: impl FnMut(&mut dyn Tx) -> StoreResult<R>,
    ) -> StoreResult<R> {
        let mut attempt = 1;
        loop {
            let mut pooled = pooled(&self.pool, &self.connector.target)?;
            let mut conn = PgConn::new(&mut *pooled);
            let out = (|| {
                if let Some(begin) = begin {
                    conn.batch(begin)?;
                }
                let r = f(&mut conn)?;
                if begin.is_some() {
                    conn.batch("COMMIT")?;
                }
                Ok(r)
            })();
            if out.is_err() && begin.is_some() {
                let _ = conn.batch("ROLLBACK");
            }
            match out {
                Err(StoreError::Conflict(e)) if attempt < self.max_attempts => {
                    log::debug!("read attempt {attempt} conflicted ({e}); retrying");
                    std::thread::sleep(Duration::from_millis(2 << attempt.min(6)));
                    attempt += 1;
                }
                Err(StoreError::Conflict(e)) => {
                    return Err(StoreError::Unavailable(format!(
                        "the read kept conflicting with writers ({attempt} attempts): {e}"
                    )))
                }
                other => return other,
            }
        }
    }
}

impl Backend for PgBackend {
    fn read<R>(&self, f: impl FnOnce(&mut dyn Tx) -> StoreResult<R>) -> StoreResult<R> {
        let mut pooled = pooled(&self.pool, &self.connector.target)?;
        f(&mut PgConn::new(&mut *pooled))
    }

    fn snapshot<R>(&self, f: impl FnOnce(&mut dyn Tx) -> StoreResult<R>) -> StoreResult<R> {
        let begin = match self.isolation {
            Isolation::ReadCommitted => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
            Isolation::Serializable => "BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY",
        };
        let mut f = Some(f);
        self.run(Some(begin), |tx| match f.take() {
            Some(f) => f(tx),
            None => Err(StoreError::Unavailable(
                "a read that conflicted cannot run again; retry the request".into(),
            )),
        })
    }
}

pub(crate) fn pooled(pool: &Pool, target: &str) -> StoreResult<r2d2::PooledConnection<Manager>> {
    pool.get().map_err(|e| {
        StoreError::Unavailable(format!("no connection to PostgreSQL at {target}: {e}"))
    })
}

/// Sets the session's timeouts on every new pooled connection.
#[derive(Debug)]
struct SessionSettings(Arc<str>);

impl r2d2::CustomizeConnection<Client, postgres::Error> for SessionSettings {
    fn on_acquire(&self, conn: &mut Client) -> Result<(), postgres::Error> {
        conn.batch_execute(&self.0)
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
        if *code == SqlState::T_R_SERIALIZATION_FAILURE || *code == SqlState::T_R_DEADLOCK_DETECTED
        {
            return StoreError::Conflict(format!("{}: {}", code.code(), db.message()));
        }
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
