//! The audit trail as a whole: opening a writer's chain, and verifying
//! every chain on its own and all of them together.

use std::collections::BTreeSet;

use dzl_audit::{AuditEntry, ChainError, TrailError};

use super::action;
use crate::tx::{ChainId, Tx, ROOT_CHAIN};
use crate::writer::Txn;
use crate::{Call, StoreError, StoreResult};

/// Entries read at a time while verifying.
const PAGE: usize = 10_000;

/// Opens a new chain for a writer, in a transaction of chain 1's: records
/// it and announces it in chain 1, so that removing it shows. Chain 1's
/// head is locked first, so writers opening chains at once queue there.
pub fn open_chain(txn: &mut Txn<'_>, call: &Call) -> StoreResult<ChainId> {
    if txn.chain() != ROOT_CHAIN {
        return Err(StoreError::Invalid(
            "a chain is opened in a transaction of chain 1".into(),
        ));
    }
    txn.head()?;
    let next = txn
        .read()
        .chains()?
        .iter()
        .map(|c| c.chain)
        .max()
        .unwrap_or(ROOT_CHAIN)
        + 1;
    txn.write().insert_chain(next)?;
    txn.audit(dzl_audit::AuditRecord {
        operation: dzl_audit::CHAIN_OPENED.into(),
        ..action(call, "ok", dzl_audit::chain_opened_detail(next))
    })?;
    Ok(next)
}

/// A chain's entries, read a page at a time.
struct Entries<'a> {
    tx: &'a mut dyn Tx,
    chain: ChainId,
    after: i64,
    page: std::vec::IntoIter<AuditEntry>,
    done: bool,
}

impl Iterator for Entries<'_> {
    type Item = StoreResult<AuditEntry>;
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(e) = self.page.next() {
                self.after = e.seq;
                return Some(Ok(e));
            }
            if self.done {
                return None;
            }
            match self.tx.audit_entries(self.chain, self.after, PAGE) {
                Ok(page) => {
                    self.done = page.len() < PAGE;
                    self.page = page.into_iter();
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

/// Verifies every chain, from one snapshot: each chain's links and hashes
/// up to its recorded head, and that the chains recorded, the chains that
/// hold entries and the chains announced in chain 1 are the same set.
/// Returns the number of entries; `progress` gets the running count.
pub fn verify(
    tx: &mut dyn Tx,
    progress: &mut dyn FnMut(i64),
) -> StoreResult<Result<u64, TrailError>> {
    let heads = tx.chains()?;
    let mut ids: BTreeSet<ChainId> = heads.iter().map(|c| c.chain).collect();
    ids.extend(tx.chains_with_entries()?);
    ids.insert(ROOT_CHAIN);
    let mut announced = BTreeSet::new();
    let mut total = 0u64;
    for chain in ids.clone() {
        let fail = |error| Ok(Err(TrailError { chain, error }));
        if chain != ROOT_CHAIN && !announced.contains(&chain) {
            return fail(ChainError::Unaccounted("not announced in chain 1"));
        }
        let Some(head) = heads
            .iter()
            .find(|c| c.chain == chain)
            .map(|c| c.head.clone())
        else {
            return fail(ChainError::Unaccounted("without a recorded head (removed)"));
        };
        let entries = Entries {
            tx: &mut *tx,
            chain,
            after: 0,
            page: Vec::new().into_iter(),
            done: false,
        };
        let base = total as i64;
        let collect = chain == ROOT_CHAIN;
        let found = &mut announced;
        let checked = dzl_audit::verify_chain(
            chain,
            entries.inspect(|e| {
                if let (true, Ok(e)) = (collect, e) {
                    found.extend(dzl_audit::announced_chain(&e.record));
                }
            }),
            &head,
            |seq| progress(base + seq),
        );
        match checked {
            Ok(n) => total += n,
            Err(error) => return fail(error),
        }
    }
    if let Some(missing) = announced.difference(&ids).next() {
        return Ok(Err(TrailError {
            chain: *missing,
            error: ChainError::Unaccounted("announced in chain 1 but gone (removed)"),
        }));
    }
    Ok(Ok(total))
}
