//! The audit trail's entries and their hash chains. Pure: no IO.
//!
//! The trail is a set of chains, one per writer, numbered from 1. Every
//! entry commits to the previous one of its chain: `hash =
//! H("dzl/audit/v1\n" || prev_hash || "\n" || body)`, where `body` is the
//! entry's fields as JSON in a fixed order and `H` the entry's own
//! [`ChainHash`]: SHA-256, or SM3 for entries written while the vault's
//! suite is `gm` (such an entry says `"alg":"sm3"`, in its body too). An
//! entry that names no hash is SHA-256, so chains written before there
//! were two verify unchanged, and a chain may change hash from one entry
//! to the next when its vault changes suite. The first entry's
//! `prev_hash` is its chain's [`genesis`]: 64 zeros for chain 1, a hash of
//! the chain's number for the others, so an entry cannot be moved from one
//! chain to another (the genesis is a fixed label's SHA-256 in every
//! suite: a public constant, not a digest of anything recorded). Editing,
//! deleting or reordering any entry breaks
//! every link after it; [`verify_chain`] finds the first break. The store
//! also keeps each chain's head (last seq and hash) beside the entries, so
//! a truncated tail shows, and announces every chain but the first in
//! chain 1, so a removed chain shows too.
//!
//! Architecture invariant: an entry holds who, when, what operation, its
//! result, the purpose, ids, and the *names* of the groups concerned — never a
//! field value, never a code, never a secret. The types here have no field
//! that could carry one, except `detail`, which callers fill only with fixed
//! texts.

use serde::{Deserialize, Serialize};

/// The `prev_hash` of the first entry of chain 1.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The `prev_hash` of the first entry of `chain`.
pub fn genesis(chain: i64) -> String {
    if chain == 1 {
        return GENESIS.to_owned();
    }
    let label = format!("dzl/audit/chain\n{chain}");
    hex::encode(ring::digest::digest(&ring::digest::SHA256, label.as_bytes()).as_ref())
}

/// The head of `chain` before its first entry.
pub fn empty_head(chain: i64) -> Head {
    Head {
        seq: 0,
        hash: genesis(chain),
    }
}

/// The hash an entry is chained with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChainHash {
    /// SHA-256: entries of an `intl` vault, and every entry that names no
    /// hash.
    #[default]
    Sha256,
    /// SM3 (GB/T 32905): entries written while the vault's suite is `gm`.
    Sm3,
}

impl ChainHash {
    /// The name an entry carries (`sha256` is never written: it is the
    /// default).
    pub const fn as_str(self) -> &'static str {
        match self {
            ChainHash::Sha256 => "sha256",
            ChainHash::Sm3 => "sm3",
        }
    }

    /// Whether this is the hash of an entry that names none.
    pub fn is_sha256(&self) -> bool {
        *self == ChainHash::Sha256
    }

    /// What a store keeps: nothing for SHA-256, `sm3` for SM3.
    pub const fn stored(self) -> Option<&'static str> {
        match self {
            ChainHash::Sha256 => None,
            ChainHash::Sm3 => Some("sm3"),
        }
    }

    /// Reads what [`ChainHash::stored`] kept; `None` for anything else.
    pub fn from_stored(stored: Option<&str>) -> Option<ChainHash> {
        match stored {
            None => Some(ChainHash::Sha256),
            Some("sm3") => Some(ChainHash::Sm3),
            Some(_) => None,
        }
    }
}

/// What happened, before it is chained.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// RFC 3339 UTC time with milliseconds.
    pub at: String,
    /// Who: a tenant id, `cli:<os user>` for operators at the CLI, or `system`.
    pub actor: String,
    /// What, e.g. `deposit.create`, `redemption.attempt`, `tenant.suspend`.
    pub operation: String,
    /// `ok`, or the problem code that refused it.
    pub result: String,
    /// The purpose involved.
    pub purpose: Option<String>,
    /// The deposit involved.
    pub deposit_id: Option<String>,
    /// The code involved (its public id, never the code).
    pub code_id: Option<String>,
    /// The redemption involved.
    pub redemption_id: Option<String>,
    /// Another tenant involved (the funder of a code, the tenant suspended…).
    pub subject_tenant: Option<String>,
    /// Names of the groups concerned, comma-separated.
    pub groups: Option<String>,
    /// A fixed, non-personal note.
    pub detail: Option<String>,
}

/// A chained entry as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// The chain it belongs to.
    #[serde(default = "root_chain")]
    pub chain: i64,
    /// Position in the chain, from 1, without gaps.
    pub seq: i64,
    /// The hash it is chained with; absent for SHA-256.
    #[serde(default, skip_serializing_if = "ChainHash::is_sha256")]
    pub alg: ChainHash,
    /// The content.
    #[serde(flatten)]
    pub record: AuditRecord,
    /// The previous entry's hash (or [`GENESIS`]).
    pub prev_hash: String,
    /// This entry's hash.
    pub hash: String,
}

fn root_chain() -> i64 {
    1
}

/// The SHA-256 hash of an entry with `seq` and `record` after `prev_hash`.
pub fn entry_hash(seq: i64, record: &AuditRecord, prev_hash: &str) -> String {
    entry_hash_with(ChainHash::Sha256, seq, record, prev_hash)
}

/// The `alg` hash of an entry with `seq` and `record` after `prev_hash`.
/// An SM3 entry's body names its hash (`"alg":"sm3"` after `seq`); a
/// SHA-256 entry's body is as it always was.
pub fn entry_hash_with(alg: ChainHash, seq: i64, record: &AuditRecord, prev_hash: &str) -> String {
    #[derive(Serialize)]
    struct Body<'a> {
        seq: i64,
        #[serde(skip_serializing_if = "Option::is_none")]
        alg: Option<&'static str>,
        #[serde(flatten)]
        record: &'a AuditRecord,
    }
    // Serialising a plain struct of strings cannot fail; fall back to an empty
    // body rather than panic, which would then fail verification loudly.
    let body = serde_json::to_vec(&Body {
        seq,
        alg: alg.stored(),
        record,
    })
    .unwrap_or_default();
    let parts: [&[u8]; 4] = [b"dzl/audit/v1\n", prev_hash.as_bytes(), b"\n", &body];
    match alg {
        ChainHash::Sha256 => {
            let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
            for p in parts {
                ctx.update(p);
            }
            hex::encode(ctx.finish().as_ref())
        }
        ChainHash::Sm3 => {
            use sm3::Digest as _;
            let mut h = sm3::Sm3::new();
            for p in parts {
                h.update(p);
            }
            hex::encode(h.finalize())
        }
    }
}

/// Chains `record` after the entry `(prev_seq, prev_hash)` of `chain`,
/// with SHA-256.
pub fn chain(chain: i64, prev_seq: i64, prev_hash: &str, record: AuditRecord) -> AuditEntry {
    chain_with(ChainHash::Sha256, chain, prev_seq, prev_hash, record)
}

/// Chains `record` after the entry `(prev_seq, prev_hash)` of `chain`,
/// with `alg`.
pub fn chain_with(
    alg: ChainHash,
    chain: i64,
    prev_seq: i64,
    prev_hash: &str,
    record: AuditRecord,
) -> AuditEntry {
    let seq = prev_seq + 1;
    let hash = entry_hash_with(alg, seq, &record, prev_hash);
    AuditEntry {
        chain,
        seq,
        alg,
        record,
        prev_hash: prev_hash.to_owned(),
        hash,
    }
}

/// Why a chain does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// An entry's seq is not one more than the previous one's (deleted or reordered).
    #[error("entry {seq}: expected seq {expected} (an entry was deleted or reordered)")]
    Gap {
        /// The seq found.
        seq: i64,
        /// The seq expected.
        expected: i64,
    },
    /// An entry does not point at the previous entry's hash.
    #[error("entry {seq}: prev_hash does not match the previous entry (reordered or replaced)")]
    BrokenLink {
        /// The entry.
        seq: i64,
    },
    /// An entry's content does not hash to its stored hash.
    #[error("entry {seq}: content does not match its hash (altered)")]
    Altered {
        /// The entry.
        seq: i64,
    },
    /// The chain ends before the recorded head (tail truncated) or differs from it.
    #[error("chain ends at entry {last_seq} but the recorded head is entry {head_seq} (truncated or replaced)")]
    HeadMismatch {
        /// Last seq found.
        last_seq: i64,
        /// Seq of the recorded head.
        head_seq: i64,
    },
    /// The chain is announced in chain 1, or holds entries, but has no
    /// recorded head (removed), or has a head but no announcement (added
    /// behind the writers' backs).
    #[error("the chain is {0}")]
    Unaccounted(&'static str),
    /// Reading the entries failed.
    #[error("reading entry after {after}: {message}")]
    Read {
        /// The last entry read.
        after: i64,
        /// What went wrong.
        message: String,
    },
}

impl ChainError {
    /// The seq of the first bad entry.
    pub fn seq(&self) -> i64 {
        match self {
            ChainError::Gap { seq, .. }
            | ChainError::BrokenLink { seq }
            | ChainError::Altered { seq } => *seq,
            ChainError::HeadMismatch { last_seq, .. } => last_seq + 1,
            ChainError::Read { after, .. } => after + 1,
            ChainError::Unaccounted(_) => 1,
        }
    }
}

/// Why the trail (every chain together) does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("chain {chain}: {error}")]
pub struct TrailError {
    /// The chain at fault.
    pub chain: i64,
    /// What is wrong with it.
    pub error: ChainError,
}

impl TrailError {
    /// The seq of the first bad entry of the chain at fault.
    pub fn seq(&self) -> i64 {
        self.error.seq()
    }
}

/// The operation of the entry in chain 1 that announces another chain.
pub const CHAIN_OPENED: &str = "audit.chain_open";

/// The detail of the entry in chain 1 that announces `chain`.
pub fn chain_opened_detail(chain: i64) -> String {
    format!("chain {chain} opened")
}

/// The chain an announcing entry names, if `record` is one.
pub fn announced_chain(record: &AuditRecord) -> Option<i64> {
    if record.operation != CHAIN_OPENED {
        return None;
    }
    record
        .detail
        .as_deref()?
        .strip_prefix("chain ")?
        .strip_suffix(" opened")?
        .parse()
        .ok()
}

/// The recorded chain head: the last entry's seq and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Last seq (0 for an empty chain).
    pub seq: i64,
    /// Last hash ([`GENESIS`] for an empty chain).
    pub hash: String,
}

/// Walks `entries` of `chain` (in seq order, from the first) and checks
/// every link and hash (each with the entry's own [`ChainHash`]), then that the chain ends at `head`. Returns the
/// number of entries. `progress` is called with each verified seq.
pub fn verify_chain<E: std::fmt::Display>(
    chain: i64,
    entries: impl IntoIterator<Item = Result<AuditEntry, E>>,
    head: &Head,
    mut progress: impl FnMut(i64),
) -> Result<u64, ChainError> {
    let mut prev_seq = 0i64;
    let mut prev_hash = genesis(chain);
    let mut count = 0u64;
    for entry in entries {
        let entry = entry.map_err(|e| ChainError::Read {
            after: prev_seq,
            message: e.to_string(),
        })?;
        if entry.chain != chain {
            return Err(ChainError::Gap {
                seq: entry.seq,
                expected: prev_seq + 1,
            });
        }
        if entry.seq != prev_seq + 1 {
            return Err(ChainError::Gap {
                seq: entry.seq,
                expected: prev_seq + 1,
            });
        }
        if entry.prev_hash != prev_hash {
            return Err(ChainError::BrokenLink { seq: entry.seq });
        }
        if entry_hash_with(entry.alg, entry.seq, &entry.record, &entry.prev_hash) != entry.hash {
            return Err(ChainError::Altered { seq: entry.seq });
        }
        prev_seq = entry.seq;
        prev_hash = entry.hash;
        count += 1;
        progress(prev_seq);
    }
    if prev_seq != head.seq || prev_hash != head.hash {
        return Err(ChainError::HeadMismatch {
            last_seq: prev_seq,
            head_seq: head.seq,
        });
    }
    Ok(count)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn record(op: &str) -> AuditRecord {
        AuditRecord {
            at: "2026-11-22T08:00:00.000Z".into(),
            actor: "ten_x".into(),
            operation: op.into(),
            result: "ok".into(),
            ..Default::default()
        }
    }

    fn chain_of(n: usize) -> (Vec<AuditEntry>, Head) {
        let mut out: Vec<AuditEntry> = Vec::new();
        for i in 0..n {
            let (s, h) = out
                .last()
                .map(|e| (e.seq, e.hash.clone()))
                .unwrap_or((0, GENESIS.to_owned()));
            out.push(chain(1, s, &h, record(&format!("op{i}"))));
        }
        let head = out
            .last()
            .map(|e| Head {
                seq: e.seq,
                hash: e.hash.clone(),
            })
            .unwrap();
        (out, head)
    }

    fn check(entries: Vec<AuditEntry>, head: &Head) -> Result<u64, ChainError> {
        verify_chain(1, entries.into_iter().map(Ok::<_, String>), head, |_| {})
    }

    #[test]
    fn intact_chain_verifies() {
        let (e, head) = chain_of(5);
        assert_eq!(check(e, &head), Ok(5));
        let empty = Head {
            seq: 0,
            hash: GENESIS.into(),
        };
        assert_eq!(check(vec![], &empty), Ok(0));
    }

    #[test]
    fn alterations_are_found_at_the_first_bad_entry() {
        let (e, head) = chain_of(5);

        let mut altered = e.clone();
        altered[2].record.groups = Some("applicant".into());
        assert_eq!(check(altered, &head), Err(ChainError::Altered { seq: 3 }));

        let mut deleted = e.clone();
        deleted.remove(1);
        assert_eq!(check(deleted, &head).unwrap_err().seq(), 3);

        let mut swapped = e.clone();
        swapped.swap(1, 2);
        assert_eq!(check(swapped, &head).unwrap_err().seq(), 3);

        let mut truncated = e.clone();
        truncated.pop();
        assert!(matches!(
            check(truncated, &head),
            Err(ChainError::HeadMismatch {
                last_seq: 4,
                head_seq: 5
            })
        ));
    }

    #[test]
    fn a_chain_is_announced_by_a_fixed_entry() {
        let mut r = record(CHAIN_OPENED);
        r.detail = Some(chain_opened_detail(12));
        assert_eq!(announced_chain(&r), Some(12));
        r.detail = Some("chain x opened".into());
        assert_eq!(announced_chain(&r), None);
        assert_eq!(announced_chain(&record("deposit.create")), None);
    }

    #[test]
    fn each_chain_starts_from_its_own_genesis_and_entries_cannot_move_between_chains() {
        assert_eq!(genesis(1), GENESIS);
        assert_ne!(genesis(2), genesis(3));
        let two = chain(2, 0, &genesis(2), record("a"));
        let head = Head {
            seq: 1,
            hash: two.hash.clone(),
        };
        let verify =
            |c: i64, e: &AuditEntry| verify_chain(c, [Ok::<_, String>(e.clone())], &head, |_| {});
        assert_eq!(verify(2, &two), Ok(1));
        let mut moved = two.clone();
        moved.chain = 3;
        assert!(verify(3, &moved).is_err(), "relabelled into another chain");
        assert!(verify(2, &moved).is_err(), "found in the wrong chain");
        let in_one = chain(1, 0, GENESIS, record("a"));
        let mut relabelled = in_one.clone();
        relabelled.chain = 2;
        assert_eq!(
            verify_chain(
                2,
                [Ok::<_, String>(relabelled)],
                &Head {
                    seq: 1,
                    hash: in_one.hash
                },
                |_| {}
            ),
            Err(ChainError::BrokenLink { seq: 1 })
        );
    }

    /// Computed independently: Python's `hashlib.new("sm3")` over
    /// `dzl/audit/v1\n`, 64 zeros, `\n` and the body
    /// `{"seq":1,"alg":"sm3","at":…,"detail":null}`.
    #[test]
    fn an_sm3_entry_hashes_its_body_with_its_name_known_answer() {
        let e = chain_with(ChainHash::Sm3, 1, 0, GENESIS, record("a"));
        assert_eq!(
            e.hash,
            "57ef39c92c1a23921baf28136092e239f6d64339ef47910523f80a43328ae113"
        );
        assert_ne!(e.hash, chain(1, 0, GENESIS, record("a")).hash);
    }

    #[test]
    fn a_chain_that_changes_hash_verifies_and_an_altered_alg_is_found() {
        let algs = [
            ChainHash::Sha256,
            ChainHash::Sha256,
            ChainHash::Sm3,
            ChainHash::Sm3,
            ChainHash::Sha256,
        ];
        let mut entries: Vec<AuditEntry> = Vec::new();
        for (i, alg) in algs.iter().enumerate() {
            let (s, h) = entries
                .last()
                .map(|e| (e.seq, e.hash.clone()))
                .unwrap_or((0, GENESIS.to_owned()));
            entries.push(chain_with(*alg, 1, s, &h, record(&format!("op{i}"))));
        }
        let last = entries.last().unwrap();
        let head = Head {
            seq: last.seq,
            hash: last.hash.clone(),
        };
        assert_eq!(check(entries.clone(), &head), Ok(5));

        let mut downgraded = entries.clone();
        downgraded[2].alg = ChainHash::Sha256;
        assert_eq!(
            check(downgraded, &head),
            Err(ChainError::Altered { seq: 3 })
        );
        let mut upgraded = entries.clone();
        upgraded[0].alg = ChainHash::Sm3;
        assert_eq!(check(upgraded, &head), Err(ChainError::Altered { seq: 1 }));
    }

    #[test]
    fn only_an_sm3_entry_names_its_hash_when_exported() {
        let sha = chain(1, 0, GENESIS, record("a"));
        let sm3 = chain_with(ChainHash::Sm3, 1, 0, GENESIS, record("a"));
        let sha_json = serde_json::to_value(&sha).unwrap();
        let sm3_json = serde_json::to_value(&sm3).unwrap();
        assert!(sha_json.get("alg").is_none(), "{sha_json}");
        assert_eq!(sm3_json["alg"], "sm3");
        let back: AuditEntry = serde_json::from_value(sm3_json).unwrap();
        assert_eq!(back, sm3);
        let back: AuditEntry = serde_json::from_value(sha_json).unwrap();
        assert_eq!(back.alg, ChainHash::Sha256);
        for alg in [ChainHash::Sha256, ChainHash::Sm3] {
            assert_eq!(ChainHash::from_stored(alg.stored()), Some(alg));
        }
        assert_eq!(ChainHash::from_stored(Some("md5")), None);
    }
}
