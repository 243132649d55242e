//! Mends, as the store opens, what a crash left half-written between its
//! two files.
//!
//! In WAL mode SQLite commits the databases of one transaction one after
//! the other: the writer's commit appends to `vault.db`'s WAL, then to
//! `identity.db`'s. A process killed between the two leaves `vault.db`'s
//! half of its last transaction without `identity.db`'s: a deposit without
//! its identity row, or an erasure that kept the identity row. The sync
//! thread makes `identity.db`'s WAL durable before `vault.db`'s, so a power
//! cut between the two leaves the opposite: identity rows whose deposit was
//! lost. None of these was acknowledged; each is a request that must not
//! have happened by halves. [`mend`] finds them among the latest writes and
//! finishes or undoes each, with an audit entry for each:
//!
//! | found | done | audited as |
//! |---|---|---|
//! | an active deposit without its identity row | shredded, its codes revoked | `deposit.void` |
//! | an erased deposit that kept its identity row | the row deleted | `identity.discard` |
//! | an identity row without its deposit | the row deleted | `identity.discard` |
//!
//! It runs at every open: whether the last process crashed cannot be told
//! from the files, since any connection that closes last (a `sqlite3`
//! shell, an integrity check) checkpoints and deletes the WALs. Only the
//! latest writes can be half done, so only they are read: the deposits
//! that the `deposit.*` entries among the last [`AUDIT_TAIL`] audit entries
//! name, and the newest [`IDENTITY_TAIL`] identity rows (deposit ids begin
//! with their creation time). Other entries (redemptions) name deposits
//! of any age, and reading those cold would make opening a large store slow.

use chrono::{DateTime, Utc};
use dzl_types::DepositId;
use rusqlite::Connection;

use super::conn::snapshot;
use crate::ops::codes::{discard_identity, void_deposit};
use crate::tx::ROOT_CHAIN;
use crate::writer::{TxState, Txn};
use crate::StoreResult;

/// How many of the latest audit entries are read for the deposits they
/// name: several full transactions of `MAX_BATCH` jobs.
const AUDIT_TAIL: i64 = 16_384;

/// How many of the newest identity rows are checked for their deposit:
/// several full transactions of deposits.
const IDENTITY_TAIL: i64 = 4_096;

/// One write found half done.
#[derive(Debug, PartialEq, Eq)]
enum Half {
    /// An active deposit whose identity row is missing.
    DepositWithoutIdentity(String),
    /// An erased deposit whose identity row is still there.
    ErasedWithIdentity(String),
    /// An identity row whose deposit row is missing.
    IdentityWithoutDeposit(String),
}

/// The half-done writes among the latest ones, as `conn` sees them.
fn find(conn: &Connection) -> StoreResult<Vec<Half>> {
    let mut found = Vec::new();
    let mut named = conn.prepare(
        "SELECT d.id, d.state = 'erased',
                EXISTS (SELECT 1 FROM ident.identities i WHERE i.deposit_id = d.id)
         FROM deposits d
         WHERE d.id IN (SELECT deposit_id FROM audit
                        WHERE seq > (SELECT seq FROM audit_head WHERE id = 1) - ?1
                          AND operation LIKE 'deposit.%')",
    )?;
    let mut rows = named.query([AUDIT_TAIL])?;
    while let Some(r) = rows.next()? {
        let (id, erased, has_identity): (String, bool, bool) = (r.get(0)?, r.get(1)?, r.get(2)?);
        match (erased, has_identity) {
            (false, false) => found.push(Half::DepositWithoutIdentity(id)),
            (true, true) => found.push(Half::ErasedWithIdentity(id)),
            _ => {}
        }
    }
    let mut orphans = conn.prepare(
        "SELECT i.deposit_id
         FROM (SELECT deposit_id FROM ident.identities ORDER BY deposit_id DESC LIMIT ?1) i
         WHERE NOT EXISTS (SELECT 1 FROM deposits d WHERE d.id = i.deposit_id)",
    )?;
    let mut rows = orphans.query([IDENTITY_TAIL])?;
    while let Some(r) = rows.next()? {
        found.push(Half::IdentityWithoutDeposit(r.get(0)?));
    }
    Ok(found)
}

/// Finds the half-done writes and mends them in one transaction, before
/// the writer takes any job. A first look reads a snapshot and writes
/// nothing, so a store opened while a server runs (`dzlctl`) does not wait
/// for its writer; a read there can fall between the server's two commits,
/// so what it finds is looked for again with the write lock held, when no
/// commit can be halfway. Returns how many writes were mended.
pub(super) fn mend(conn: &mut Connection, now: DateTime<Utc>) -> StoreResult<usize> {
    if snapshot(conn, find)?.is_empty() {
        return Ok(0);
    }
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let mended = find(conn).and_then(|found| {
        let mut st = TxState::new(ROOT_CHAIN);
        for half in &found {
            let mut txn = Txn::new(conn, &mut st);
            match half {
                Half::DepositWithoutIdentity(id) => {
                    void_deposit(&mut txn, &DepositId::from_trusted(id.clone()), now)?
                }
                Half::ErasedWithIdentity(id) | Half::IdentityWithoutDeposit(id) => {
                    discard_identity(&mut txn, &DepositId::from_trusted(id.clone()), now)?
                }
            }
        }
        st.flush(conn)?;
        conn.execute_batch("COMMIT")?;
        Ok(found.len())
    });
    match mended {
        Ok(n) => {
            if n > 0 {
                log::warn!(
                    "mended {n} writes a crash had left half done between vault.db and identity.db \
                     (audit operations deposit.void and identity.discard)"
                );
            }
            Ok(n)
        }
        Err(e) => {
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            Err(e)
        }
    }
}
