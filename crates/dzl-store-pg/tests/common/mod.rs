//! The PostgreSQL backend as a conformance factory
//! (`dzl_store::conformance::Factory`): a fresh database per test (or a
//! loud skip when `DZL_TEST_PG_URL` is unset), each store opened on it a
//! replica with a writer and an audit chain of its own, and the database
//! reached with SQL as its owner reaches it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::time::Duration;

use dzl_audit::{AuditEntry, Head};
use dzl_store::conformance::{Backdoor, Blob, DepositRows, Factory};
use dzl_store::tx::ChainId;
use dzl_store_pg::testing::{fresh_database, TestDatabase, TEST_URL_VAR};
use dzl_store_pg::{PgBackend, PgOptions, PgStore};
use dzl_types::DepositId;
use postgres::{Client, NoTls};

/// The admin URL, or `None` after a loud line on stderr (written past the
/// test harness's capture, so it shows in every run).
pub fn pg_url() -> Option<String> {
    match std::env::var(TEST_URL_VAR) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: {TEST_URL_VAR} not set (a PostgreSQL test did not run)"
            );
            None
        }
    }
}

/// Returns from the test (skipped) unless `DZL_TEST_PG_URL` is set.
#[allow(unused_macros)]
macro_rules! pg_url_or_skip {
    () => {
        match common::pg_url() {
            Some(url) => url,
            None => return,
        }
    };
}

/// Options of the tests' stores: one writer, so each store is one chain.
pub fn options() -> PgOptions {
    PgOptions {
        pool_size: 8,
        writers: 1,
        statement_timeout: Duration::from_secs(20),
        connect_timeout: Duration::from_secs(10),
        ..PgOptions::default()
    }
}

/// A fresh database.
pub struct Postgres {
    pub db: TestDatabase,
}

/// A fresh database, or `None` (said on stderr) without a server to test
/// against.
pub fn postgres() -> Option<Postgres> {
    let url = pg_url()?;
    Some(Postgres {
        db: fresh_database(&url).unwrap(),
    })
}

impl Postgres {
    /// A raw client on the database.
    pub fn sql(&self) -> Client {
        Client::connect(self.db.url(), NoTls).unwrap()
    }
}

impl Factory for Postgres {
    type Backend = PgBackend;

    fn open(&self) -> PgStore {
        dzl_store_pg::connect(self.db.url(), options()).unwrap()
    }

    fn backdoor(&self) -> Box<dyn Backdoor> {
        Box::new(Sql(self.sql()))
    }

    fn chain_per_store(&self) -> bool {
        true
    }
}

/// The database, as its owner reaches it with SQL.
pub struct Sql(pub Client);

/// What the database answered, as text.
fn message(e: &postgres::Error) -> String {
    e.as_db_error()
        .map_or_else(|| e.to_string(), |d| d.message().to_owned())
}

/// A blob's table, column and key column, as named in the database.
fn located(blob: Blob<'_>) -> (String, &'static str, &'static str, String) {
    let (table, column, key, value) = blob.location();
    let table = match table {
        "identities" => "dzl_identity.identities".to_owned(),
        t => format!("dzl.{t}"),
    };
    (table, column, key, value)
}

impl Sql {
    /// Runs `change` with the audit table's triggers disabled, and enables
    /// them again, in one transaction; the rows it changed.
    fn unguarded(&mut self, change: impl FnOnce(&mut postgres::Transaction<'_>) -> u64) -> u64 {
        let mut tx = self.0.transaction().unwrap();
        tx.batch_execute("ALTER TABLE dzl.audit DISABLE TRIGGER USER")
            .unwrap();
        let changed = change(&mut tx);
        tx.batch_execute("ALTER TABLE dzl.audit ENABLE TRIGGER USER")
            .unwrap();
        tx.commit().unwrap();
        changed
    }
}

impl Backdoor for Sql {
    fn alter_entry(&mut self, chain: ChainId, seq: i64, actor: &str) {
        let n = self.unguarded(|tx| {
            tx.execute(
                "UPDATE dzl.audit SET actor = $3 WHERE chain = $1 AND seq = $2",
                &[&chain, &seq, &actor],
            )
            .unwrap()
        });
        assert_eq!(n, 1);
    }

    fn set_entry_alg(&mut self, chain: ChainId, seq: i64, alg: Option<&str>) {
        let n = self.unguarded(|tx| {
            tx.execute(
                "UPDATE dzl.audit SET alg = $3 WHERE chain = $1 AND seq = $2",
                &[&chain, &seq, &alg],
            )
            .unwrap()
        });
        assert_eq!(n, 1);
    }

    fn delete_entry(&mut self, chain: ChainId, seq: i64) {
        let n = self.unguarded(|tx| {
            tx.execute(
                "DELETE FROM dzl.audit WHERE chain = $1 AND seq = $2",
                &[&chain, &seq],
            )
            .unwrap()
        });
        assert_eq!(n, 1);
    }

    fn swap_entries(&mut self, chain: ChainId, a: i64, b: i64) {
        let n = self.unguarded(|tx| {
            let mut mv = |from: i64, to: i64| {
                tx.execute(
                    "UPDATE dzl.audit SET seq = $3 WHERE chain = $1 AND seq = $2",
                    &[&chain, &from, &to],
                )
                .unwrap()
            };
            mv(a, -1) + mv(b, a) + mv(-1, b)
        });
        assert_eq!(n, 3);
    }

    fn cut_after(&mut self, chain: ChainId, seq: i64) {
        self.unguarded(|tx| {
            tx.execute(
                "DELETE FROM dzl.audit WHERE chain = $1 AND seq > $2",
                &[&chain, &seq],
            )
            .unwrap()
        });
    }

    fn set_head(&mut self, chain: ChainId, head: Option<&Head>) {
        match head {
            None => self
                .0
                .execute("DELETE FROM dzl.audit_chains WHERE chain = $1", &[&chain])
                .unwrap(),
            Some(h) => self
                .0
                .execute(
                    "INSERT INTO dzl.audit_chains (chain, seq, hash, created_at)
                     VALUES ($1, $2, $3, 0)
                     ON CONFLICT (chain) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
                    &[&chain, &h.seq, &h.hash],
                )
                .unwrap(),
        };
    }

    fn insert_entries(&mut self, entries: &[AuditEntry]) {
        let col = |f: fn(&AuditEntry) -> Option<String>| -> Vec<Option<String>> {
            entries.iter().map(f).collect()
        };
        let chains: Vec<i64> = entries.iter().map(|e| e.chain).collect();
        let seqs: Vec<i64> = entries.iter().map(|e| e.seq).collect();
        self.0
            .execute(
                "INSERT INTO dzl.audit (chain, seq, at, actor, operation, result, purpose,
                     deposit_id, code_id, redemption_id, subject_tenant, groups, detail,
                     prev_hash, hash, alg)
                 SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[],
                     $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],
                     $11::text[], $12::text[], $13::text[], $14::text[], $15::text[],
                     $16::text[])",
                &[
                    &chains,
                    &seqs,
                    &col(|e| Some(e.record.at.clone())),
                    &col(|e| Some(e.record.actor.clone())),
                    &col(|e| Some(e.record.operation.clone())),
                    &col(|e| Some(e.record.result.clone())),
                    &col(|e| e.record.purpose.clone()),
                    &col(|e| e.record.deposit_id.clone()),
                    &col(|e| e.record.code_id.clone()),
                    &col(|e| e.record.redemption_id.clone()),
                    &col(|e| e.record.subject_tenant.clone()),
                    &col(|e| e.record.groups.clone()),
                    &col(|e| e.record.detail.clone()),
                    &col(|e| Some(e.prev_hash.clone())),
                    &col(|e| Some(e.hash.clone())),
                    &col(|e| e.alg.stored().map(str::to_owned)),
                ],
            )
            .unwrap();
    }

    fn try_changing_the_trail(&mut self) -> Vec<(String, Result<(), String>)> {
        [
            "UPDATE dzl.audit SET actor = 'x'",
            "DELETE FROM dzl.audit WHERE seq = 1",
            "DELETE FROM dzl.audit",
            "TRUNCATE dzl.audit",
        ]
        .into_iter()
        .map(|sql| {
            let answer = self.0.batch_execute(sql).map_err(|e| message(&e));
            (sql.to_owned(), answer)
        })
        .collect()
    }

    fn deposit_rows(&mut self, deposit: &DepositId) -> DepositRows {
        let r = self
            .0
            .query_one(
                "SELECT (SELECT count(*) FROM dzl.deposits WHERE id = $1),
                        (SELECT count(*) FROM dzl.deposits WHERE id = $1 AND subject_index <> ''),
                        (SELECT count(*) FROM dzl.deposit_records WHERE deposit_id = $1),
                        (SELECT count(*) FROM dzl_identity.identities WHERE deposit_id = $1),
                        (SELECT count(*) FROM dzl.codes WHERE deposit_id = $1),
                        (SELECT count(*) FROM dzl.redemptions WHERE deposit_id = $1)",
                &[&deposit.as_str()],
            )
            .unwrap();
        let n = |i: usize| r.get::<_, i64>(i) as u64;
        DepositRows {
            deposits: n(0),
            subject_filings: n(1),
            records: n(2),
            identities: n(3),
            codes: n(4),
            redemptions: n(5),
        }
    }

    fn blob(&mut self, blob: Blob<'_>) -> Vec<u8> {
        let (table, column, key, value) = located(blob);
        self.0
            .query_one(
                &format!("SELECT {column} FROM {table} WHERE {key}::text = $1"),
                &[&value],
            )
            .unwrap()
            .get(0)
    }

    fn set_blob(&mut self, blob: Blob<'_>, bytes: &[u8]) {
        let (table, column, key, value) = located(blob);
        let n = self
            .0
            .execute(
                &format!("UPDATE {table} SET {column} = $1 WHERE {key}::text = $2"),
                &[&bytes, &value],
            )
            .unwrap();
        assert_eq!(n, 1, "{table}.{column}");
    }
}
