//! The embedded SQLite backend: two database files in one directory —
//! `vault.db` (tenants, keyring, deposits, codes, audit, usage) and
//! `identity.db` (the `applicant` group and its data keys, GB/T 35273 §6.2
//! separation), attached to one connection so a request commits to both in
//! one transaction.
//!
//! * [`conn`]: opening the files, the settings every connection shares.
//! * [`rows`]: the SQL of [`crate::tx::Tx`].
//! * [`writer`]: the writer's connection in the one write path.
//! * [`durability`]: the sync thread that answers a commit once it is on
//!   disk.
//! * [`checkpoint`]: the checkpointer that copies WAL frames into the
//!   database files and keeps the WALs short.
//! * [`schema`]: migrations; [`recover`]: mending at open what a crash left
//!   half written between the two files.
//!
//! Reads of configuration go to one shared read connection; a read that
//! may take long (subject access) opens a connection of its own.

mod checkpoint;
pub mod conn;
mod durability;
mod recover;
mod rows;
mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use rusqlite::Connection;

pub use conn::{identity_db, vault_db};

use crate::tx::Tx;
use crate::writer::{Completion, Writer};
use crate::{Backend, StoreError, StoreResult, Vault};

/// The embedded store.
pub type SqliteStore = Vault<SqliteBackend>;

/// The SQLite backend's read side and background threads.
pub struct SqliteBackend {
    reader: Mutex<Connection>,
    checkpointer: Mutex<Option<(mpsc::Sender<()>, JoinHandle<()>)>>,
    dir: PathBuf,
}

impl std::fmt::Debug for SqliteBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteBackend")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Vault<SqliteBackend> {
    /// Opens (creating if needed) the store in `dir`, mends what a crash
    /// left half written, and starts its writer, sync thread and
    /// checkpointer.
    pub fn open(dir: &Path) -> StoreResult<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Unavailable(format!("creating {}: {e}", dir.display())))?;
        conn::restrict_dir(dir);
        let mut writer_conn = conn::open_connection(dir)?;
        schema::migrate(&writer_conn)?;
        writer_conn.busy_handler(Some(writer::writer_busy))?;
        recover::mend(&mut writer_conn, chrono::Utc::now())?;
        // The sync thread makes each commit durable before it is answered.
        writer_conn.execute_batch(
            "PRAGMA main.wal_autocheckpoint = 0; PRAGMA ident.wal_autocheckpoint = 0;
             PRAGMA main.synchronous = OFF; PRAGMA ident.synchronous = OFF;",
        )?;
        let reader = conn::open_connection(dir)?;
        let checkpoint_conn = conn::open_connection(dir)?;
        // SQLite creates files 0644 and gives a new -wal or -shm its
        // database's mode: owner-only from here on.
        conn::restrict_files(dir);
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let restarts = Arc::new(checkpoint::Restarts::default());
        let wanted = restarts.clone();
        let db_dir = dir.to_owned();
        let checkpointer = std::thread::Builder::new()
            .name("dzl-sqlite-checkpoint".into())
            .spawn(move || checkpoint::checkpoint_loop(checkpoint_conn, stop_rx, wanted, db_dir))
            .map_err(|e| StoreError::Unavailable(format!("starting the checkpointer: {e}")))?;
        // Set when an `fdatasync` fails: no write is accepted any more.
        let poisoned = Arc::new(AtomicBool::new(false));
        let (sync_tx, sync_rx) = mpsc::channel::<Vec<Completion>>();
        let wals = durability::Wals::new(dir);
        let sync_poison = poisoned.clone();
        let syncer = std::thread::Builder::new()
            .name("dzl-sqlite-sync".into())
            .spawn(move || durability::sync_loop(wals, sync_rx, sync_poison))
            .map_err(|e| StoreError::Unavailable(format!("starting the sync thread: {e}")))?;
        let writer = Writer::start(
            writer::SqliteWriter::new(writer_conn, sync_tx, syncer, poisoned, restarts),
            "dzl-sqlite-writer",
        )?;
        let backend = SqliteBackend {
            reader: Mutex::new(reader),
            checkpointer: Mutex::new(Some((stop_tx, checkpointer))),
            dir: dir.to_owned(),
        };
        Ok(Vault::new(backend, writer))
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.backend().dir
    }
}

impl SqliteBackend {
    fn reader(&self) -> StoreResult<std::sync::MutexGuard<'_, Connection>> {
        self.reader
            .lock()
            .map_err(|_| StoreError::Unavailable("reader lock poisoned".into()))
    }
}

impl Backend for SqliteBackend {
    fn read<R>(&self, f: impl FnOnce(&mut dyn Tx) -> StoreResult<R>) -> StoreResult<R> {
        let mut conn = self.reader()?;
        f(&mut *conn)
    }

    fn snapshot<R>(&self, f: impl FnOnce(&mut dyn Tx) -> StoreResult<R>) -> StoreResult<R> {
        let mut conn = self.reader()?;
        in_snapshot(&mut conn, f)
    }

    /// On a connection of its own: a cold subject lookup over ten million
    /// deposits takes most of a second, and the shared read connection
    /// answers `/readyz` and the reloads. Opening one costs a fraction of
    /// a millisecond.
    fn snapshot_apart<R>(&self, f: impl FnOnce(&mut dyn Tx) -> StoreResult<R>) -> StoreResult<R> {
        let mut conn = conn::open_connection(&self.dir)?;
        in_snapshot(&mut conn, f)
    }

    fn close(&self) {
        if let Ok(mut c) = self.checkpointer.lock() {
            if let Some((stop, h)) = c.take() {
                drop(stop);
                let _ = h.join();
            }
        }
    }
}

/// Runs `f` inside one read transaction on `conn`.
fn in_snapshot<R>(
    conn: &mut Connection,
    f: impl FnOnce(&mut dyn Tx) -> StoreResult<R>,
) -> StoreResult<R> {
    conn.execute_batch("BEGIN")?;
    let result = f(&mut *conn);
    let _ = conn.execute_batch("COMMIT");
    result
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::Store;

    #[test]
    fn subject_access_does_not_wait_for_the_shared_read_connection() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
        // A long read holds the shared read connection meanwhile.
        let held = store.backend().reader.lock().unwrap();
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
                    .subject_access(&call, &["subject".to_owned()])
                    .map(|r| r.deposits.len()),
            );
        });
        let answer = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("answered while the read connection is held");
        assert_eq!(answer.unwrap(), 0);
        drop(held);
        assert_eq!(
            store.verify_audit(&mut |_| {}).unwrap(),
            Ok(1),
            "and audited"
        );
    }

    /// What a submitted job's reply got, from which thread.
    type Got = (StoreResult<i64>, std::thread::ThreadId);

    fn submit_and_wait(store: &SqliteStore, fail: bool) -> Got {
        let (tx, rx) = mpsc::channel::<Got>();
        store.writer().submit(
            move |txn| {
                if fail {
                    Err(StoreError::Invalid("refused".into()))
                } else {
                    txn.read().generation()
                }
            },
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

        let (out, from) = submit_and_wait(&store, false);
        assert_eq!(out.unwrap(), 1);
        assert_ne!(from, here, "answered by the store's threads");

        let (out, _) = submit_and_wait(&store, true);
        assert!(matches!(out, Err(StoreError::Invalid(_))));

        store.close();
        let (out, from) = submit_and_wait(&store, false);
        assert!(matches!(out, Err(StoreError::Unavailable(_))), "{out:?}");
        assert_eq!(from, here, "a closed store answers on the caller's thread");
    }
}
