//! The embedded SQLite backend as a conformance factory
//! (`dzl_store::conformance::Factory`): a fresh data directory per test,
//! its stores opened on the same files as `dzlctl` opens them beside a
//! running server, and the files opened as any SQLite client opens them.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use dzl_audit::{AuditEntry, Head};
use dzl_store::conformance::{Backdoor, Blob, DepositRows, Factory};
use dzl_store::sqlite::{identity_db, vault_db, SqliteBackend};
use dzl_store::tx::{ChainId, ROOT_CHAIN};
use dzl_store::SqliteStore;
use dzl_types::DepositId;
use rusqlite::{params, Connection};

/// A fresh data directory.
pub struct Sqlite {
    pub dir: tempfile::TempDir,
}

pub fn sqlite() -> Option<Sqlite> {
    Some(Sqlite {
        dir: tempfile::tempdir().unwrap(),
    })
}

impl Factory for Sqlite {
    type Backend = SqliteBackend;

    fn open(&self) -> SqliteStore {
        SqliteStore::open(self.dir.path()).unwrap()
    }

    fn backdoor(&self) -> Box<dyn Backdoor> {
        Box::new(Files::open(self.dir.path()))
    }

    fn chain_per_store(&self) -> bool {
        false
    }
}

/// The two database files, opened as any SQLite client opens them.
pub struct Files {
    conn: Connection,
}

impl Files {
    pub fn open(dir: &Path) -> Files {
        let conn = Connection::open(vault_db(dir)).unwrap();
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .unwrap();
        conn.execute(
            "ATTACH DATABASE ?1 AS ident",
            [identity_db(dir).to_str().unwrap()],
        )
        .unwrap();
        Files { conn }
    }

    /// Runs `change` with the audit table's guard triggers dropped, and
    /// puts them back, in one transaction; the rows it changed.
    fn unguarded(&mut self, change: impl FnOnce(&rusqlite::Transaction<'_>) -> usize) -> usize {
        let tx = self.conn.transaction().unwrap();
        let triggers: Vec<(String, String)> = tx
            .prepare(
                "SELECT name, sql FROM sqlite_schema WHERE type = 'trigger' AND tbl_name = 'audit'",
            )
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(!triggers.is_empty(), "the audit table has its guards");
        for (name, _) in &triggers {
            tx.execute_batch(&format!("DROP TRIGGER {name}")).unwrap();
        }
        let changed = change(&tx);
        for (_, sql) in &triggers {
            tx.execute_batch(sql).unwrap();
        }
        tx.commit().unwrap();
        changed
    }

    fn count(&self, sql: &str, deposit: &DepositId) -> u64 {
        self.conn
            .query_row(sql, [deposit.as_str()], |r| r.get::<_, i64>(0))
            .unwrap() as u64
    }
}

/// The one chain the embedded store has.
fn root(chain: ChainId) {
    assert_eq!(chain, ROOT_CHAIN, "the embedded store has one audit chain");
}

/// A blob's table, column and key column, as named in these files.
fn located(blob: Blob<'_>) -> (String, &'static str, &'static str, String) {
    let (table, column, key, value) = blob.location();
    let table = match table {
        "identities" => "ident.identities".to_owned(),
        t => t.to_owned(),
    };
    (table, column, key, value)
}

impl Backdoor for Files {
    fn alter_entry(&mut self, chain: ChainId, seq: i64, actor: &str) {
        root(chain);
        let n = self.unguarded(|tx| {
            tx.execute(
                "UPDATE audit SET actor = ?1 WHERE seq = ?2",
                params![actor, seq],
            )
            .unwrap()
        });
        assert_eq!(n, 1);
    }

    fn set_entry_alg(&mut self, chain: ChainId, seq: i64, alg: Option<&str>) {
        root(chain);
        let n = self.unguarded(|tx| {
            tx.execute(
                "UPDATE audit SET alg = ?1 WHERE seq = ?2",
                params![alg, seq],
            )
            .unwrap()
        });
        assert_eq!(n, 1);
    }

    fn delete_entry(&mut self, chain: ChainId, seq: i64) {
        root(chain);
        let n = self.unguarded(|tx| {
            tx.execute("DELETE FROM audit WHERE seq = ?1", [seq])
                .unwrap()
        });
        assert_eq!(n, 1);
    }

    fn swap_entries(&mut self, chain: ChainId, a: i64, b: i64) {
        root(chain);
        let n = self.unguarded(|tx| {
            let mv = |from: i64, to: i64| {
                tx.execute("UPDATE audit SET seq = ?2 WHERE seq = ?1", [from, to])
                    .unwrap()
            };
            mv(a, -1) + mv(b, a) + mv(-1, b)
        });
        assert_eq!(n, 3);
    }

    fn cut_after(&mut self, chain: ChainId, seq: i64) {
        root(chain);
        self.unguarded(|tx| {
            tx.execute("DELETE FROM audit WHERE seq > ?1", [seq])
                .unwrap()
        });
    }

    fn set_head(&mut self, chain: ChainId, head: Option<&Head>) {
        root(chain);
        match head {
            None => self.conn.execute("DELETE FROM audit_head", []).unwrap(),
            Some(h) => self
                .conn
                .execute(
                    "INSERT INTO audit_head (id, seq, hash) VALUES (1, ?1, ?2)
                     ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
                    params![h.seq, h.hash],
                )
                .unwrap(),
        };
    }

    fn insert_entries(&mut self, entries: &[AuditEntry]) {
        let tx = self.conn.transaction().unwrap();
        {
            let mut insert = tx
                .prepare(
                    "INSERT INTO audit (seq, at, actor, operation, result, purpose, deposit_id,
                         code_id, redemption_id, subject_tenant, groups, detail, prev_hash, hash,
                         alg)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
                )
                .unwrap();
            for e in entries {
                root(e.chain);
                let r = &e.record;
                insert
                    .execute(params![
                        e.seq,
                        r.at,
                        r.actor,
                        r.operation,
                        r.result,
                        r.purpose,
                        r.deposit_id,
                        r.code_id,
                        r.redemption_id,
                        r.subject_tenant,
                        r.groups,
                        r.detail,
                        e.prev_hash,
                        e.hash,
                        e.alg.stored()
                    ])
                    .unwrap();
            }
        }
        tx.commit().unwrap();
    }

    fn try_changing_the_trail(&mut self) -> Vec<(String, Result<(), String>)> {
        [
            "UPDATE audit SET actor = 'x'",
            "DELETE FROM audit WHERE seq = 1",
            "DELETE FROM audit",
        ]
        .into_iter()
        .map(|sql| {
            let answer = self
                .conn
                .execute(sql, [])
                .map(drop)
                .map_err(|e| e.to_string());
            (sql.to_owned(), answer)
        })
        .collect()
    }

    fn deposit_rows(&mut self, deposit: &DepositId) -> DepositRows {
        let count = |sql: &str| self.count(sql, deposit);
        DepositRows {
            deposits: count("SELECT count(*) FROM deposits WHERE id = ?1"),
            subject_filings: count("SELECT count(*) FROM deposit_subjects WHERE deposit_id = ?1"),
            records: count("SELECT count(*) FROM deposit_records WHERE deposit_id = ?1"),
            identities: count("SELECT count(*) FROM ident.identities WHERE deposit_id = ?1"),
            codes: count("SELECT count(*) FROM codes WHERE deposit_id = ?1"),
            redemptions: count("SELECT count(*) FROM redemptions WHERE deposit_id = ?1"),
        }
    }

    fn blob(&mut self, blob: Blob<'_>) -> Vec<u8> {
        let (table, column, key, value) = located(blob);
        self.conn
            .query_row(
                &format!("SELECT {column} FROM {table} WHERE CAST({key} AS TEXT) = ?1"),
                [value],
                |r| r.get(0),
            )
            .unwrap()
    }

    fn set_blob(&mut self, blob: Blob<'_>, bytes: &[u8]) {
        let (table, column, key, value) = located(blob);
        let n = self
            .conn
            .execute(
                &format!("UPDATE {table} SET {column} = ?1 WHERE CAST({key} AS TEXT) = ?2"),
                params![bytes, value],
            )
            .unwrap();
        assert_eq!(n, 1, "{table}.{column}");
    }
}
