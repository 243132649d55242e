//! The embedded store's side of the write path ([`crate::writer`]): the
//! writer's connection, which commits without waiting for the disk and
//! hands each transaction to the sync thread ([`super::durability`]), and
//! between two transactions starts a long WAL over and sizes its caches.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use super::checkpoint::{restart_wal, Restarts, SCHEMAS};
use super::conn::{LARGE_CACHE_FROM_PAGES, LARGE_CACHE_KIB, SMALL_CACHE_KIB};
use super::durability::POISONED;
use crate::tx::{ChainId, Tx, ROOT_CHAIN};
use crate::writer::{Completion, WriteConn};
use crate::{StoreError, StoreResult};

/// How long the writer keeps a transaction open for more jobs once its
/// queue is empty, when the previous transaction had concurrent jobs: a
/// commit's cost is mostly per page, and jobs committed together share
/// pages (the tables' right-hand leaves, the audit head, the meter). A
/// lone caller never waits (docs/performance.md).
const LINGER: Duration = Duration::from_micros(500);

/// Transactions between two sizings of the caches.
const SIZE_EVERY: u32 = 1024;

/// The writer waits for readers during a WAL restart in steps of half a
/// millisecond, up to 10 s in all (SQLite's default handler sleeps up to
/// 100 ms at a time, which became the writes' tail latency).
pub(super) fn writer_busy(attempt: i32) -> bool {
    if attempt >= 20_000 {
        return false;
    }
    std::thread::sleep(Duration::from_micros(500));
    true
}

/// The writer's connection and its link to the sync thread.
pub(super) struct SqliteWriter {
    conn: Connection,
    synced: Option<mpsc::Sender<Vec<Completion>>>,
    syncer: Option<JoinHandle<()>>,
    poisoned: Arc<AtomicBool>,
    restarts: Arc<Restarts>,
    until_sizing: u32,
}

impl SqliteWriter {
    pub(super) fn new(
        conn: Connection,
        synced: mpsc::Sender<Vec<Completion>>,
        syncer: JoinHandle<()>,
        poisoned: Arc<AtomicBool>,
        restarts: Arc<Restarts>,
    ) -> Self {
        SqliteWriter {
            conn,
            synced: Some(synced),
            syncer: Some(syncer),
            poisoned,
            restarts,
            until_sizing: 0,
        }
    }
}

impl WriteConn for SqliteWriter {
    fn chain(&self) -> ChainId {
        ROOT_CHAIN
    }

    fn linger(&self) -> Duration {
        LINGER
    }

    fn before_batch(&mut self) {
        if self.until_sizing == 0 {
            size_caches(&self.conn);
            self.until_sizing = SIZE_EVERY;
        }
        self.until_sizing -= 1;
        for (schema, restart) in SCHEMAS.iter().zip(&self.restarts.0) {
            if restart.load(Ordering::Acquire) && restart_wal(&self.conn, schema) {
                restart.store(false, Ordering::Release);
            }
        }
    }

    fn refuses(&self) -> Option<StoreError> {
        self.poisoned
            .load(Ordering::Acquire)
            .then(|| StoreError::Unavailable(POISONED.into()))
    }

    fn begin(&mut self) -> StoreResult<()> {
        Ok(self.conn.execute_batch("BEGIN IMMEDIATE")?)
    }

    fn tx(&mut self) -> StoreResult<&mut dyn Tx> {
        Ok(&mut self.conn)
    }

    fn commit(&mut self) -> StoreResult<()> {
        Ok(self.conn.execute_batch("COMMIT")?)
    }

    fn rollback(&mut self) {
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }

    fn answer(&mut self, done: Vec<Completion>) {
        // Answered by the sync thread once the WALs are on disk.
        let Some(synced) = &self.synced else {
            let e = StoreError::Unavailable("the sync thread stopped".into());
            done.into_iter().for_each(|c| c(Some(e.clone())));
            return;
        };
        if let Err(mpsc::SendError(done)) = synced.send(done) {
            let e = StoreError::Unavailable("the sync thread stopped".into());
            done.into_iter().for_each(|c| c(Some(e.clone())));
        }
    }

    fn close(&mut self) {
        // Checkpoint on a clean stop so the WAL does not grow across restarts;
        // the sync thread answers the last transactions and stops after it.
        let _ = self.conn.execute_batch(
            "PRAGMA main.synchronous = FULL; PRAGMA ident.synchronous = FULL;
             PRAGMA main.wal_checkpoint(TRUNCATE); PRAGMA ident.wal_checkpoint(TRUNCATE);",
        );
        self.synced.take();
        if let Some(h) = self.syncer.take() {
            let _ = h.join();
        }
    }
}

/// Gives the writer's databases the page cache the vault's size calls for
/// (see [`SMALL_CACHE_KIB`]): both stay small until `main` passes 1 GiB,
/// then both get the large cache. `ident` follows `main` because
/// redemptions read the identity pages of recent deposits, which are still
/// in its WAL. A failure only leaves the caches as they were.
pub(super) fn size_caches(conn: &Connection) {
    size_caches_from(conn, LARGE_CACHE_FROM_PAGES)
}

pub(super) fn size_caches_from(conn: &Connection, large_from_pages: i64) {
    let kib = match conn.query_row("PRAGMA main.page_count", [], |r| r.get::<_, i64>(0)) {
        Ok(p) if p >= large_from_pages => LARGE_CACHE_KIB,
        Ok(_) => SMALL_CACHE_KIB,
        Err(_) => return,
    };
    for schema in SCHEMAS {
        let _ = conn.execute_batch(&format!("PRAGMA {schema}.cache_size = -{kib}"));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::sqlite::{conn::open_connection, schema};

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
}
