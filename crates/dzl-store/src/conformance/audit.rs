//! The audit trail: one hash chain per writer, verified on its own and
//! together with the others, read whole, and what tampering with it at the
//! database level shows. Tampering is done through the [`super::Backdoor`],
//! as someone with write access to the database would; verification is
//! always asked of another store than the one whose chain was changed, as
//! `dzlctl audit verify` beside a server.

use std::collections::BTreeSet;

use chrono::Utc;
use dzl_audit::{AuditEntry, AuditRecord, ChainError, Head, TrailError};

use super::fixture::{chain_of, cli_call};
use super::{Factory, Fixture};
use crate::tx::{ChainId, ROOT_CHAIN};
use crate::{AuditQuery, Store};

/// The trail's error, which there must be.
fn trail_error(store: &dyn Store) -> TrailError {
    match store.verify_audit(&mut |_| {}) {
        Ok(Err(e)) => e,
        Ok(Ok(n)) => panic!("the trail verified ({n} entries) after tampering"),
        Err(e) => panic!("verifying failed as the store's error, not the trail's: {e}"),
    }
}

/// Records `n` operator actions through `store`, each with a distinct
/// detail; their details.
fn actions(store: &dyn Store, tag: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let detail = format!("{tag} action {i}");
            store
                .record_action(&cli_call("audit.verify", Utc::now()), "ok", &detail)
                .unwrap();
            detail
        })
        .collect()
}

/// A store writing a few entries to a chain of its own where the backend
/// has several (chain 1 otherwise), a second store that verifies, and the
/// written chain with its head.
struct Tampered<F: Factory> {
    _writer: std::sync::Arc<crate::Vault<F::Backend>>,
    f: Fixture<F>,
    chain: ChainId,
    head: Head,
}

fn tampered<F: Factory>(factory: F) -> Tampered<F> {
    let f = Fixture::new(factory);
    let writer = f.open();
    actions(&f.store, "first", 2);
    let chain = chain_of(&*writer);
    actions(&*writer, "writer", 5);
    actions(&f.store, "first", 2);
    let head = f
        .store
        .audit_chains()
        .unwrap()
        .into_iter()
        .find(|c| c.chain == chain)
        .unwrap()
        .head;
    assert!(head.seq >= 6, "{head:?}");
    assert!(f.verified().is_ok());
    Tampered {
        _writer: writer,
        f,
        chain,
        head,
    }
}

/// Plain UPDATE, DELETE (and TRUNCATE) of the trail are refused by the
/// database.
pub fn the_trail_refuses_plain_updates_and_deletes<F: Factory>(factory: F) {
    let f = Fixture::new(factory);
    let tried = f.backdoor().try_changing_the_trail();
    assert!(tried.len() >= 2, "{tried:?}");
    for (statement, answer) in tried {
        match answer {
            Err(why) => assert!(why.contains("append-only"), "{statement}: {why}"),
            Ok(()) => panic!("{statement} was allowed"),
        }
    }
    assert_eq!(f.verified(), Ok(1));
}

/// Several stores write; every chain verifies, the count is every entry,
/// and `audit_chains`, `audit_after`, `audit_entries` and `audit_query`
/// cover every chain.
pub fn an_intact_trail_of_several_writers_verifies_and_reads_whole<F: Factory>(factory: F) {
    let f = Fixture::new(factory);
    let marks = f.store.audit_chains().unwrap();
    let (b, c) = (f.open(), f.open());
    let mut written: BTreeSet<String> = BTreeSet::new();
    let mine = if f.factory.chain_per_store() {
        let mine = [chain_of(&f.store), chain_of(&*b), chain_of(&*c)];
        assert_eq!(mine.iter().collect::<BTreeSet<_>>().len(), 3, "{mine:?}");
        written.insert("which-chain".to_owned());
        mine.to_vec()
    } else {
        vec![ROOT_CHAIN]
    };
    written.extend(actions(&f.store, "a", 3));
    written.extend(actions(&*b, "b", 4));
    written.extend(actions(&*c, "c", 5));
    written.extend(actions(&f.store, "a again", 1));
    let chains = f.store.audit_chains().unwrap();
    let ids: Vec<ChainId> = chains.iter().map(|c| c.chain).collect();
    assert!(mine.iter().all(|m| ids.contains(m)), "{mine:?} {ids:?}");
    if !f.factory.chain_per_store() {
        assert_eq!(ids, [ROOT_CHAIN]);
    }

    // Verified as a whole, from any store: the count is the heads' sum.
    let total = f.store.audit_head_seq().unwrap();
    assert_eq!(total, chains.iter().map(|c| c.head.seq).sum::<i64>());
    assert_eq!(f.verified(), Ok(total as u64));
    assert_eq!(super::fixture::verified(&*c), Ok(total as u64));
    let mut seen = 0;
    f.store.verify_audit(&mut |n| seen = n).unwrap().unwrap();
    assert_eq!(seen, total, "progress counts every chain");

    // Read whole: each chain in order up to its head, by every reader.
    let mut everything = Vec::new();
    for chain in &chains {
        let entries = f.store.audit_entries(chain.chain, 0, 100_000).unwrap();
        assert_eq!(
            entries.len() as i64,
            chain.head.seq,
            "chain {}",
            chain.chain
        );
        let seqs: Vec<i64> = entries.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=chain.head.seq).collect::<Vec<_>>());
        assert!(entries.iter().all(|e| e.chain == chain.chain));
        assert_eq!(
            entries.last().map(|e| e.hash.clone()),
            Some(chain.head.hash.clone())
        );
        let queried = f
            .store
            .audit_query(&AuditQuery {
                chain: chain.chain,
                limit: 100_000,
                ..AuditQuery::default()
            })
            .unwrap();
        assert_eq!(queried, entries, "audit_query reads chain {}", chain.chain);
        everything.extend(entries);
    }
    assert_eq!(everything.len() as i64, total);
    assert_eq!(f.store.audit_after(&[]).unwrap(), everything);
    // What was appended since the marks, whichever store appended it.
    let after = b.audit_after(&marks).unwrap();
    let details: BTreeSet<String> = after
        .iter()
        .filter(|e| e.record.operation == "audit.verify")
        .filter_map(|e| e.record.detail.clone())
        .map(|d| {
            if d.starts_with("which-chain") {
                "which-chain".to_owned()
            } else {
                d
            }
        })
        .collect();
    assert_eq!(details, written);
    let opened = after
        .iter()
        .filter(|e| e.record.operation == dzl_audit::CHAIN_OPENED)
        .count();
    assert_eq!(
        opened,
        chains.len() - marks.len(),
        "each new chain announced once"
    );
    assert_eq!(
        after.len() as i64,
        total - marks.iter().map(|m| m.head.seq).sum::<i64>()
    );
}

/// An entry whose content was changed is found, at its chain and seq.
pub fn an_altered_entry_is_found<F: Factory>(factory: F) {
    let t = tampered(factory);
    let seq = t.head.seq - 2;
    t.f.backdoor().alter_entry(t.chain, seq, "cli:mallory");
    let e = trail_error(&t.f.store);
    assert_eq!(
        (e.chain, e.error.clone()),
        (t.chain, ChainError::Altered { seq })
    );
    assert_eq!(e.seq(), seq);
}

/// A deleted entry is found where the chain skips it.
pub fn a_deleted_entry_is_found<F: Factory>(factory: F) {
    let t = tampered(factory);
    let seq = t.head.seq - 3;
    t.f.backdoor().delete_entry(t.chain, seq);
    let e = trail_error(&t.f.store);
    assert_eq!(
        (e.chain, e.error),
        (
            t.chain,
            ChainError::Gap {
                seq: seq + 1,
                expected: seq
            }
        )
    );
}

/// Two entries that swapped places are found at the first.
pub fn reordered_entries_are_found<F: Factory>(factory: F) {
    let t = tampered(factory);
    let seq = t.head.seq - 3;
    t.f.backdoor().swap_entries(t.chain, seq, seq + 1);
    let e = trail_error(&t.f.store);
    assert_eq!(
        (e.chain, e.error),
        (t.chain, ChainError::BrokenLink { seq })
    );
}

/// A chain whose last entries were deleted, its head left, is found.
pub fn a_tail_cut_below_its_head_is_found<F: Factory>(factory: F) {
    let t = tampered(factory);
    let keep = t.head.seq - 2;
    t.f.backdoor().cut_after(t.chain, keep);
    let e = trail_error(&t.f.store);
    assert_eq!(
        (e.chain, e.error),
        (
            t.chain,
            ChainError::HeadMismatch {
                last_seq: keep,
                head_seq: t.head.seq
            }
        )
    );
}

/// Deletes the entries of `t`'s chain after `keep`, and its recorded
/// head; what verification then says.
fn behead<F: Factory>(t: &Tampered<F>, keep: i64) -> TrailError {
    let mut db = t.f.backdoor();
    db.cut_after(t.chain, keep);
    db.set_head(t.chain, None);
    trail_error(&t.f.store)
}

/// A chain whose last entries and recorded head were both deleted is
/// found: entries without a head.
pub fn a_chain_cut_with_its_head_deleted_is_found<F: Factory>(factory: F) {
    let t = tampered(factory);
    let e = behead(&t, t.head.seq - 2);
    assert_eq!(
        (e.chain, e.error),
        (
            t.chain,
            ChainError::Unaccounted("without a recorded head (removed)")
        )
    );
}

/// Chain 1 rewound (entries and head) to before it announced another
/// chain: that chain is then unaccounted for. For backends with a chain
/// per store.
pub fn a_root_chain_rewound_past_an_announcement_is_found<F: Factory>(factory: F) {
    let f = Fixture::new(factory);
    assert!(f.factory.chain_per_store(), "for a chain per store");
    actions(&f.store, "first", 2);
    let other = f.open();
    let chain = chain_of(&*other);
    actions(&*other, "other", 2);
    actions(&f.store, "first again", 2);
    let root = f.store.audit_entries(ROOT_CHAIN, 0, 1000).unwrap();
    let announced = root
        .iter()
        .find(|e| dzl_audit::announced_chain(&e.record) == Some(chain))
        .unwrap();
    let before = &root[(announced.seq - 2) as usize];
    let mut db = f.backdoor();
    db.cut_after(ROOT_CHAIN, before.seq);
    db.set_head(
        ROOT_CHAIN,
        Some(&Head {
            seq: before.seq,
            hash: before.hash.clone(),
        }),
    );
    let e = trail_error(&f.store);
    assert_eq!(e.chain, chain);
    assert!(matches!(e.error, ChainError::Unaccounted(_)), "{e}");
}

/// A chain whose every entry and head were deleted is found: a chain
/// other than 1 where chain 1 announced it, chain 1 as every trail has it.
pub fn a_removed_chain_is_found<F: Factory>(factory: F) {
    let t = tampered(factory);
    let e = behead(&t, 0);
    let why = if t.chain == ROOT_CHAIN {
        "without a recorded head (removed)"
    } else {
        "announced in chain 1 but gone (removed)"
    };
    assert_eq!((e.chain, e.error), (t.chain, ChainError::Unaccounted(why)));
}

/// A well-formed chain that no entry of chain 1 announces is found. For
/// backends with a chain per store (with one chain, there is no place for
/// another).
pub fn a_chain_nobody_announced_is_found<F: Factory>(factory: F) {
    let f = Fixture::new(factory);
    assert!(f.factory.chain_per_store(), "for a chain per store");
    let chain = 9;
    let entries = well_chained(chain, 0, &dzl_audit::genesis(chain), 3, "cli:forger");
    let last = entries.last().unwrap();
    let head = Head {
        seq: last.seq,
        hash: last.hash.clone(),
    };
    let mut db = f.backdoor();
    db.insert_entries(&entries);
    db.set_head(chain, Some(&head));
    let e = trail_error(&f.store);
    assert_eq!(
        (e.chain, e.error),
        (chain, ChainError::Unaccounted("not announced in chain 1"))
    );
    // Its head alone, without entries, is found too.
    db.cut_after(chain, 0);
    db.set_head(chain, Some(&dzl_audit::empty_head(chain)));
    let e = trail_error(&f.store);
    assert_eq!(e.chain, chain);
}

/// `n` entries of `chain` chained after `(seq, hash)`.
fn well_chained(chain: ChainId, seq: i64, hash: &str, n: usize, actor: &str) -> Vec<AuditEntry> {
    let (mut seq, mut hash) = (seq, hash.to_owned());
    (0..n)
        .map(|i| {
            let e = dzl_audit::chain(
                chain,
                seq,
                &hash,
                AuditRecord {
                    at: "2030-01-01T00:00:00.000Z".into(),
                    actor: format!("{actor}{i}"),
                    operation: "audit.verify".into(),
                    result: "ok".into(),
                    ..Default::default()
                },
            );
            (seq, hash) = (e.seq, e.hash.clone());
            e
        })
        .collect()
}

/// A chain longer than a page of verification verifies, and an entry
/// altered deep in it is found.
pub fn a_long_chain_verifies_page_by_page<F: Factory>(factory: F) {
    let f = Fixture::new(factory);
    let chain = chain_of(&f.store);
    let head = f
        .store
        .audit_chains()
        .unwrap()
        .into_iter()
        .find(|c| c.chain == chain)
        .unwrap()
        .head;
    let before = f.store.audit_head_seq().unwrap();
    // 12,000 well-chained entries written directly, more than a page.
    let entries = well_chained(chain, head.seq, &head.hash, 12_000, "cli:");
    let last = entries.last().unwrap().clone();
    let mut db = f.backdoor();
    db.insert_entries(&entries);
    db.set_head(
        chain,
        Some(&Head {
            seq: last.seq,
            hash: last.hash,
        }),
    );
    let mut seen = 0;
    let total = before + 12_000;
    assert_eq!(
        f.store.verify_audit(&mut |s| seen = s).unwrap(),
        Ok(total as u64)
    );
    assert_eq!(seen, total);
    // One altered entry deep in the third page is found.
    let deep = head.seq + 11_000;
    db.alter_entry(chain, deep, "cli:mallory");
    let e = trail_error(&f.store);
    assert_eq!((e.chain, e.seq()), (chain, deep), "{e}");
}
