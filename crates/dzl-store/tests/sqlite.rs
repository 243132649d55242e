//! What only the embedded SQLite backend has to get right, beside the
//! conformance suite (`tests/conformance.rs`): mending, as the store opens,
//! a request a crash left half written between its two files, `vault.db`
//! and `identity.db` (PostgreSQL commits one database). Its migrations and
//! its WAL restarts are tested with the code (`src/sqlite`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use chrono::Utc;
use dzl_store::conformance::fixture::{at_call, deposit_at};
use dzl_store::conformance::{Factory, Fixture};
use dzl_store::tx::ROOT_CHAIN;
use dzl_store::Store;
use dzl_types::DepositId;

/// The store's audit entries after `after`, as (operation, actor, deposit id).
fn entries_after(store: &dyn Store, after: i64) -> Vec<(String, String, Option<String>)> {
    store
        .audit_entries(ROOT_CHAIN, after, 100)
        .unwrap()
        .into_iter()
        .map(|e| (e.record.operation, e.record.actor, e.record.deposit_id))
        .collect()
}

/// An entry the store wrote by itself about `deposit`, as [`entries_after`] lists it.
fn by_system(operation: &str, deposit: &str) -> (String, String, Option<String>) {
    (operation.into(), "system".into(), Some(deposit.into()))
}

/// Runs `sql` on one of the store's files directly (the store must be
/// closed), then dies with it open, as a crash would: the WAL keeps its
/// frames, so the next open knows the last writer did not close.
fn crash_after(dir: &std::path::Path, file: &str, sql: &str) {
    let conn = rusqlite::Connection::open(dir.join(file)).unwrap();
    conn.execute_batch(sql).unwrap();
    std::mem::forget(conn);
}

/// A crash that left every write whole.
const A_WHOLE_WRITE: &str = "UPDATE meta SET value = value WHERE key = 'generation'";

fn one<T: rusqlite::types::FromSql>(dir: &std::path::Path, file: &str, sql: &str) -> T {
    let conn = rusqlite::Connection::open(dir.join(file)).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[test]
fn a_deposit_whose_identity_never_committed_is_voided_as_the_store_opens() {
    let mut f = Fixture::new(common::sqlite().unwrap());
    let p = f.parties();
    let now = Utc::now();
    deposit_at(&f.store, &p, "kept", now, &[3600]);
    deposit_at(&f.store, &p, "half", now, &[3600, 7200]);
    let head = f.store.audit_head_seq().unwrap();
    f.store.close();
    let dir = &f.factory.dir;
    // Killed between the two commits: vault.db has the deposit, identity.db not.
    crash_after(
        dir.path(),
        "identity.db",
        "DELETE FROM identities WHERE deposit_id = 'dep_half'",
    );

    f.store = f.factory.open();
    assert_eq!(
        entries_after(&f.store, head),
        [by_system("deposit.void", "dep_half")]
    );
    assert!(f.verified().is_ok());
    let head = f.store.audit_head_seq().unwrap();
    f.store.close();
    let dir = &f.factory.dir;
    let state = |id: &str| -> String {
        one(
            dir.path(),
            "vault.db",
            &format!("SELECT state FROM deposits WHERE id = '{id}'"),
        )
    };
    assert_eq!(state("dep_half"), "erased");
    assert_eq!(state("dep_kept"), "active");
    let left: i64 = one(
        dir.path(),
        "vault.db",
        "SELECT (SELECT count(*) FROM deposit_records WHERE deposit_id = 'dep_half')
              + (SELECT count(*) FROM codes WHERE deposit_id = 'dep_half' AND state <> 'revoked')",
    );
    assert_eq!(left, 0, "no key, ciphertext or live code of it is left");
    let kept: i64 = one(
        dir.path(),
        "identity.db",
        "SELECT count(*) FROM identities WHERE deposit_id = 'dep_kept'",
    );
    assert_eq!(kept, 1);

    // Mended once: after another crash, opening finds nothing and writes nothing.
    crash_after(dir.path(), "vault.db", A_WHOLE_WRITE);
    f.store = f.factory.open();
    assert_eq!(f.store.audit_head_seq().unwrap(), head);
}

#[test]
fn identity_rows_a_crash_left_behind_are_deleted_as_the_store_opens() {
    let mut f = Fixture::new(common::sqlite().unwrap());
    let p = f.parties();
    let now = Utc::now();
    deposit_at(&f.store, &p, "erased", now, &[3600]);
    deposit_at(&f.store, &p, "kept", now, &[3600]);
    f.store
        .erase_deposit(
            &at_call(&p.platform.tenant_id, "deposit.erase", now),
            &DepositId::from_trusted("dep_erased".into()),
        )
        .unwrap();
    let head = f.store.audit_head_seq().unwrap();
    f.store.close();
    let dir = &f.factory.dir;
    // An erasure whose identity.db half was lost, and a deposit whose
    // vault.db half was lost (the identity WAL is synced first).
    crash_after(
        dir.path(),
        "identity.db",
        "INSERT INTO identities (deposit_id, kek_version, wrapped_key, envelope)
             SELECT 'dep_erased', kek_version, wrapped_key, envelope FROM identities
             WHERE deposit_id = 'dep_kept';
         INSERT INTO identities (deposit_id, kek_version, wrapped_key, envelope)
             SELECT 'dep_lost', kek_version, wrapped_key, envelope FROM identities
             WHERE deposit_id = 'dep_kept';",
    );

    f.store = f.factory.open();
    let mut mended = entries_after(&f.store, head);
    mended.sort();
    assert_eq!(
        mended,
        [
            by_system("identity.discard", "dep_erased"),
            by_system("identity.discard", "dep_lost")
        ]
    );
    assert!(f.verified().is_ok());
    let head = f.store.audit_head_seq().unwrap();
    f.store.close();
    let dir = &f.factory.dir;
    let identities: Vec<String> = rusqlite::Connection::open(dir.path().join("identity.db"))
        .unwrap()
        .prepare("SELECT deposit_id FROM identities ORDER BY deposit_id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(identities, ["dep_kept"]);

    crash_after(dir.path(), "vault.db", A_WHOLE_WRITE);
    f.store = f.factory.open();
    assert_eq!(f.store.audit_head_seq().unwrap(), head);
}

#[test]
fn an_erasure_a_power_cut_kept_only_in_identity_db_is_finished_however_old_the_deposit() {
    let mut f = Fixture::new(common::sqlite().unwrap());
    let p = f.parties();
    let now = Utc::now();
    deposit_at(&f.store, &p, "old", now, &[3600, 7200]);
    deposit_at(&f.store, &p, "kept", now, &[3600]);
    // More entries since than mending reads of the audit trail: nothing
    // there names the deposits any more.
    std::thread::scope(|s| {
        for _ in 0..32 {
            s.spawn(|| {
                for _ in 0..520 {
                    f.store
                        .record_action(&at_call(&p.platform.tenant_id, "test.fill", now), "ok", "")
                        .unwrap();
                }
            });
        }
    });
    assert!(f.store.audit_head_seq().unwrap() > 16_384 + 6);
    f.store
        .erase_deposit(
            &at_call(&p.platform.tenant_id, "deposit.erase", now),
            &DepositId::from_trusted("dep_kept".into()),
        )
        .unwrap();
    let head = f.store.audit_head_seq().unwrap();
    f.store.close();
    let dir = &f.factory.dir;
    // A power cut kept identity.db's half of an erasure of dep_old (its
    // identity row deleted, the deletion noted) and lost vault.db's half.
    crash_after(
        dir.path(),
        "identity.db",
        "DELETE FROM identities WHERE deposit_id = 'dep_old';
         INSERT INTO shredded (deposit_id) VALUES ('dep_old');",
    );

    f.store = f.factory.open();
    assert_eq!(
        entries_after(&f.store, head),
        [by_system("deposit.void", "dep_old")]
    );
    assert!(f.verified().is_ok());
    let head = f.store.audit_head_seq().unwrap();
    f.store.close();
    let dir = &f.factory.dir;
    let state: String = one(
        dir.path(),
        "vault.db",
        "SELECT state FROM deposits WHERE id = 'dep_old'",
    );
    assert_eq!(state, "erased");
    let left: i64 = one(
        dir.path(),
        "vault.db",
        "SELECT (SELECT count(*) FROM deposit_records WHERE deposit_id = 'dep_old')
              + (SELECT count(*) FROM codes WHERE deposit_id = 'dep_old' AND state <> 'revoked')",
    );
    assert_eq!(left, 0, "no key or live code of it is left");
    let noted: i64 = one(
        dir.path(),
        "identity.db",
        "SELECT count(*) FROM shredded WHERE deposit_id = 'dep_kept'",
    );
    assert_eq!(noted, 1, "a whole erasure notes its deposit in identity.db");

    // Mended once: after another crash, opening finds nothing and writes nothing.
    crash_after(dir.path(), "vault.db", A_WHOLE_WRITE);
    f.store = f.factory.open();
    assert_eq!(f.store.audit_head_seq().unwrap(), head);
}
