//! The narrow interface every backend implements: row-level reads and
//! writes inside one open transaction ([`Tx`]), and the rows they take and
//! give. The rules of every operation ([`crate::ops`]) are written once
//! over it; a backend adds only its SQL text, its locking and its
//! connection handling.
//!
//! A backend may answer a method with one statement or several; what it
//! must keep is the method's contract, stated on each. Methods that decide
//! a race say how ([`Tx::claim_code`], [`Tx::set_code_state`],
//! [`Tx::insert_deposit`]): their condition is part of the statement, so a
//! concurrent writer that changed the row first makes them report that
//! nothing changed.

use chrono::{DateTime, Utc};
use dzl_audit::{AuditEntry, Head};
use dzl_types::{CodeId, DepositId, Group, Purpose, RedemptionId, ScopeSet, SubjectRef, TenantId};

use crate::rules::StoredCodeState;
use crate::{
    AuditQuery, DataKeyKind, DepositSeal, Filing, KekRow, KekState, KekVersion, KeyUsage,
    PurgeCounts, PurgePlan, ResealedDeposit, RewrappedDataKey, RewrappedSecret, Sealed,
    SealedDeposit, SealedSecret, StoreResult, StoredDataKey, Suite, TenantRow, UsageQuery,
    UsageRow,
};

/// How a read locks the row it reads, where the backend locks rows
/// (PostgreSQL); a backend whose transactions hold one write lock for
/// the whole database (SQLite) ignores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    /// No lock.
    None,
    /// Others may read and share-lock it, not change it, until commit.
    Share,
    /// Nobody else may lock or change it until commit.
    Update,
}

/// A hash chain of the audit trail. Each writer appends to one chain of
/// its own, so writers never wait for each other's audit entries.
pub type ChainId = i64;

/// The chain every vault has from `init`, and in which every other chain
/// is announced when it is opened.
pub const ROOT_CHAIN: ChainId = 1;

/// A chain as recorded: its id and head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainRow {
    /// The chain.
    pub chain: ChainId,
    /// Its last entry.
    pub head: Head,
}

/// A chain's head as a writer reads it to append, with the vault's suite
/// read in the same statement: the suite of the active KEK (`intl` before
/// there is one), whose digest chains the entries the transaction appends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainTip {
    /// The chain's last entry.
    pub head: Head,
    /// The vault's suite.
    pub suite: Suite,
}

/// Whether a deposit still holds its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DepositState {
    /// Its data keys exist.
    Active,
    /// Crypto-shredded.
    Erased,
}

impl DepositState {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            DepositState::Active => "active",
            DepositState::Erased => "erased",
        }
    }
    /// Parses the stored text.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(DepositState::Active),
            "erased" => Some(DepositState::Erased),
            _ => None,
        }
    }
}

/// A deposit's row, without its sealed groups.
#[derive(Debug, Clone)]
pub struct DepositRow {
    /// `dep_…`.
    pub id: DepositId,
    /// The platform that made it.
    pub platform_id: TenantId,
    /// The platform's reference.
    pub external_ref: String,
    /// Why.
    pub purpose: Purpose,
    /// The consent as JSON.
    pub consent_json: String,
    /// The groups consented to.
    pub consent_scopes: ScopeSet,
    /// When the consent ends.
    pub consent_expires: DateTime<Utc>,
    /// The groups deposited.
    pub groups: ScopeSet,
    /// Active or erased.
    pub state: DepositState,
    /// When made.
    pub created_at: DateTime<Utc>,
}

/// A deposit to insert, with its sealed groups: the deposit row, its
/// subject filing, its records (data key and the non-identity groups) and
/// its identity row (kept apart).
#[derive(Debug)]
pub struct DepositInsert<'a> {
    /// The deposit row (state active).
    pub row: &'a DepositRow,
    /// The suite its data keys, groups and subject index are of.
    pub suite: Suite,
    /// Blind index of the subject.
    pub subject_index: &'a str,
    /// The platform's pseudonym of the subject.
    pub subject_ref: &'a SubjectRef,
    /// The run the subject index is filed in ([`crate::ops::subject_run`]).
    pub subject_run: i64,
    /// The data key of the non-identity groups, wrapped.
    pub records_key: &'a Sealed,
    /// The sealed `device` group, if deposited.
    pub device: Option<&'a [u8]>,
    /// The sealed `risk` group, if deposited.
    pub risk: Option<&'a [u8]>,
    /// The identity group's data key, wrapped.
    pub identity_key: &'a Sealed,
    /// The sealed identity group.
    pub identity: &'a [u8],
}

/// A code's row.
#[derive(Debug, Clone)]
pub struct CodeRow {
    /// The row key the code embeds.
    pub row: i64,
    /// Its public id.
    pub code_id: CodeId,
    /// Hash of its secret.
    pub secret_hash: Vec<u8>,
    /// Its deposit.
    pub deposit_id: DepositId,
    /// The platform that owns it.
    pub platform_id: TenantId,
    /// The funder that may redeem it.
    pub funder_id: TenantId,
    /// The groups it releases.
    pub scopes: ScopeSet,
    /// Its purpose.
    pub purpose: Purpose,
    /// As stored.
    pub state: StoredCodeState,
    /// Its deadline.
    pub expires_at: DateTime<Utc>,
    /// When redeemed.
    pub redeemed_at: Option<DateTime<Utc>>,
    /// Its redemption, once redeemed.
    pub redemption_id: Option<RedemptionId>,
}

/// A code to insert (state issued).
#[derive(Debug, Clone)]
pub struct CodeInsert<'a> {
    /// Its public id.
    pub code_id: &'a CodeId,
    /// Hash of its secret.
    pub secret_hash: &'a [u8],
    /// Its deposit.
    pub deposit_id: &'a DepositId,
    /// The platform.
    pub platform_id: &'a TenantId,
    /// The funder.
    pub funder_id: &'a TenantId,
    /// Groups.
    pub scopes: ScopeSet,
    /// Purpose.
    pub purpose: Purpose,
    /// When issued.
    pub created_at: DateTime<Utc>,
    /// Deadline.
    pub expires_at: DateTime<Utc>,
}

/// A redemption's row.
#[derive(Debug, Clone)]
pub struct RedemptionRow {
    /// `red_…`.
    pub id: RedemptionId,
    /// The code's row.
    pub code_row: i64,
    /// The code.
    pub code_id: CodeId,
    /// The deposit.
    pub deposit_id: DepositId,
    /// Its platform.
    pub platform_id: TenantId,
    /// The funder.
    pub funder_id: TenantId,
    /// Purpose.
    pub purpose: Purpose,
    /// Groups released.
    pub scopes: ScopeSet,
    /// When.
    pub redeemed_at: DateTime<Utc>,
    /// The funder's decision, once reported.
    pub outcome: Option<StoredOutcome>,
}

/// A reported outcome as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredOutcome {
    /// `approved`, `declined` or `withdrawn`.
    pub decision: dzl_types::wire::Decision,
    /// The amount, in fen.
    pub amount_fen: Option<u64>,
    /// When reported.
    pub reported_at: DateTime<Utc>,
}

/// What a code's deposit releases, read in the transaction that redeems it.
#[derive(Debug)]
pub struct Release {
    /// The deposit's platform.
    pub platform_id: TenantId,
    /// Its reference.
    pub external_ref: String,
    /// Its consent as JSON.
    pub consent_json: String,
    /// Whether it is still active.
    pub state: DepositState,
    /// The data key of the non-identity groups, if it has one.
    pub records_key: Option<Sealed>,
    /// The sealed non-identity groups among the scopes asked for.
    pub records: Vec<(Group, Vec<u8>)>,
    /// The identity key and group, if asked for and present.
    pub identity: Option<(Sealed, Vec<u8>)>,
}

/// A funder's redemptions of unknown codes, counted in a minute window (for
/// the throttle) and an hour window (for suspension).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FailureWindow {
    /// Unix seconds the minute window began.
    pub minute_start: i64,
    /// Failures in it.
    pub minute_count: u32,
    /// Unix seconds the hour window began.
    pub hour_start: i64,
    /// Failures in it.
    pub hour_count: u32,
}

/// A day's count of one tenant's calls of one operation with one outcome.
pub type UsageKey = (String, String, &'static str, String);

/// Row-level reads and writes inside one open transaction (or, for a read
/// connection, one snapshot). Every method is one step of an operation in
/// [`crate::ops`]; none decides anything the rules there decide.
pub trait Tx {
    // ---- savepoints (the writer's) ----

    /// `SAVEPOINT name`.
    fn savepoint(&mut self, name: &str) -> StoreResult<()>;
    /// `RELEASE name`.
    fn release(&mut self, name: &str) -> StoreResult<()>;
    /// `ROLLBACK TO name; RELEASE name`.
    fn rollback_to(&mut self, name: &str) -> StoreResult<()>;

    // ---- meta ----

    /// The generation: a number bumped by every change of tenants or keys.
    fn generation(&mut self) -> StoreResult<i64>;
    /// Bumps the generation.
    fn bump_generation(&mut self) -> StoreResult<()>;
    /// Reads something cheap from every table space (readiness).
    fn ping(&mut self) -> StoreResult<()>;

    // ---- the keyring ----

    /// A KEK version's state (`None`: no such version).
    fn kek_state(&mut self, version: u32, lock: Lock) -> StoreResult<Option<KekState>>;
    /// Every KEK version with its wrapped key, oldest first; reads no
    /// per-deposit row.
    fn kek_versions(&mut self) -> StoreResult<Vec<KekVersion>>;
    /// Every KEK version with what it still protects.
    fn keks(&mut self) -> StoreResult<Vec<KekRow>>;
    /// What still needs `version` at `now`.
    fn key_usage(&mut self, version: u32, now: DateTime<Utc>) -> StoreResult<KeyUsage>;
    /// The newest version, 0 when there is none.
    fn max_kek_version(&mut self) -> StoreResult<u32>;
    /// Inserts a KEK version of `suite`.
    fn insert_kek(
        &mut self,
        version: u32,
        suite: Suite,
        state: KekState,
        wrapped: &[u8],
        at: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// Makes the active version decrypt-only.
    fn demote_active_kek(&mut self) -> StoreResult<()>;
    /// Marks `version` retired and deletes its wrapped key.
    fn retire_kek(&mut self, version: u32, at: DateTime<Utc>) -> StoreResult<()>;
    /// Replaces `version`'s root-key wrap.
    fn set_kek_wrapped(&mut self, version: u32, wrapped: &[u8]) -> StoreResult<()>;

    // ---- sealed secrets ----

    /// Sealed secrets whose name starts with `prefix` (all with `""`), by
    /// creation time then name.
    fn sealed_secrets(&mut self, prefix: &str) -> StoreResult<Vec<SealedSecret>>;
    /// One sealed secret.
    fn sealed_secret(&mut self, name: &str) -> StoreResult<Option<SealedSecret>>;
    /// Inserts a sealed secret.
    fn insert_sealed_secret(&mut self, s: &SealedSecret, at: DateTime<Utc>) -> StoreResult<()>;
    /// Replaces a secret's seal if it is still sealed by `s.from_version`;
    /// whether it changed.
    fn rewrap_secret(&mut self, s: &RewrappedSecret) -> StoreResult<bool>;
    /// Drops previous tenant secrets sealed by `version`; how many.
    fn drop_previous_secrets(&mut self, version: u32) -> StoreResult<u64>;

    // ---- tenants ----

    /// Every tenant, by creation time then id.
    fn tenants(&mut self) -> StoreResult<Vec<TenantRow>>;
    /// One tenant.
    fn tenant(&mut self, id: &TenantId, lock: Lock) -> StoreResult<Option<TenantRow>>;
    /// Inserts a tenant.
    fn insert_tenant(&mut self, t: &TenantRow) -> StoreResult<()>;
    /// Rewrites a tenant's mutable columns (state, secrets, pin) from `t`.
    fn update_tenant(&mut self, t: &TenantRow, at: DateTime<Utc>) -> StoreResult<()>;

    // ---- deposits ----

    /// Inserts a deposit, everything filed with it and its first `codes`,
    /// unless the platform already has one under its `external_ref`: then
    /// nothing is written and the existing deposit's id comes back.
    /// Otherwise the codes' row keys, in the order given.
    fn insert_deposit(
        &mut self,
        d: &DepositInsert<'_>,
        codes: &[CodeInsert<'_>],
    ) -> StoreResult<Result<Vec<i64>, DepositId>>;
    /// One deposit.
    fn deposit(&mut self, id: &DepositId, lock: Lock) -> StoreResult<Option<DepositRow>>;
    /// Crypto-shreds a deposit: deletes its data keys and ciphertexts,
    /// revokes its issued codes, marks it erased. Returns the codes revoked.
    fn shred_deposit(&mut self, id: &DepositId, at: DateTime<Utc>) -> StoreResult<u64>;
    /// Deletes a deposit's identity row; whether there was one.
    fn delete_identity(&mut self, id: &DepositId) -> StoreResult<bool>;

    // ---- codes ----

    /// Inserts a code; its row key.
    fn insert_code(&mut self, c: &CodeInsert<'_>) -> StoreResult<i64>;
    /// The code with this public id.
    fn code_by_id(&mut self, id: &CodeId) -> StoreResult<Option<CodeRow>>;
    /// The code with this row key.
    fn code_by_row(&mut self, row: i64) -> StoreResult<Option<CodeRow>>;
    /// Moves an issued code to `to` (revoked or expired) at `at`, only if
    /// it is still issued; whether it moved.
    fn set_code_state(
        &mut self,
        row: i64,
        to: StoredCodeState,
        at: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Redeems the code at `r.code_row` if and only if it is still issued,
    /// records the redemption `r`, and reads what its deposit releases for
    /// `r.scopes`. `None`: the code was no longer issued and nothing was
    /// written. This is the one step that makes redemption exactly-once.
    fn claim_code(&mut self, r: &RedemptionRow) -> StoreResult<Option<Release>>;
    /// Stores up to `limit` issued codes past their deadline at `now` as
    /// expired ([`crate::rules::code_expirable`]), earliest deadline first;
    /// how many.
    fn expire_codes(&mut self, now: DateTime<Utc>, limit: usize) -> StoreResult<u64>;

    // ---- redemptions ----

    /// One redemption.
    fn redemption(&mut self, id: &RedemptionId, lock: Lock) -> StoreResult<Option<RedemptionRow>>;
    /// Records a redemption's outcome if none is recorded yet; whether it
    /// was recorded.
    fn set_outcome(&mut self, id: &RedemptionId, outcome: &StoredOutcome) -> StoreResult<bool>;

    // ---- subject access ----

    /// Every deposit filed under a subject index.
    fn subject_deposits(&mut self, subject_index: &str) -> StoreResult<Vec<DepositRow>>;
    /// Every redemption of a deposit.
    fn deposit_redemptions(&mut self, deposit: &DepositId) -> StoreResult<Vec<RedemptionRow>>;

    // ---- retention ----

    /// Up to `limit` active deposits created before the plan's cut-off
    /// ([`crate::rules::deposit_past_retention`]), oldest first.
    fn deposits_past_retention(
        &mut self,
        plan: &PurgePlan,
        limit: usize,
    ) -> StoreResult<Vec<DepositRow>>;
    /// What a purge under `plan` would do, counted in this snapshot.
    fn purge_counts(&mut self, plan: &PurgePlan) -> StoreResult<PurgeCounts>;

    // ---- rewrap ----

    /// Up to `limit` data keys of `kind` wrapped by `version`, in deposit
    /// id order after `after`.
    fn data_keys_on(
        &mut self,
        kind: DataKeyKind,
        version: u32,
        after: Option<&DepositId>,
        limit: usize,
    ) -> StoreResult<Vec<StoredDataKey>>;
    /// Replaces a wrapped data key if its row still exists and is still
    /// wrapped by `k.from_version`; whether it changed.
    fn rewrap_data_key(&mut self, k: &RewrappedDataKey) -> StoreResult<bool>;

    // ---- reseal ----

    /// Active deposits of every suite, counted: `(suite, deposits)`, by
    /// suite.
    fn deposit_suites(&mut self) -> StoreResult<Vec<(Suite, u64)>>;
    /// Up to `limit` active deposits of another suite than `suite`, with
    /// what they seal, in the order of their filings, after `after`.
    fn deposits_to_reseal(
        &mut self,
        suite: Suite,
        after: Option<&Filing>,
        limit: usize,
    ) -> StoreResult<Vec<SealedDeposit>>;
    /// A deposit's seal as it is now (`None`: no such deposit), its row
    /// locked as `lock` says.
    fn deposit_seal(&mut self, id: &DepositId, lock: Lock) -> StoreResult<Option<DepositSeal>>;
    /// Replaces a deposit's seal by `r`: its suite, subject index and
    /// reference, its filing (moved to the new index in the same run),
    /// its data keys and sealed groups. Writes unconditionally: the caller
    /// has checked [`Tx::deposit_seal`] under lock.
    fn replace_seal(&mut self, r: &ResealedDeposit) -> StoreResult<()>;

    // ---- the audit trail ----

    /// A chain's head (`None`: no such chain) and the vault's suite, in
    /// one statement.
    fn chain_head(&mut self, chain: ChainId, lock: Lock) -> StoreResult<Option<ChainTip>>;
    /// Appends `entries` (consecutive, of one chain) and records `head`.
    fn append_audit(
        &mut self,
        chain: ChainId,
        entries: &[AuditEntry],
        head: &Head,
    ) -> StoreResult<()>;
    /// Records a new, empty chain.
    fn insert_chain(&mut self, chain: ChainId) -> StoreResult<()>;
    /// Every chain with its recorded head, by id.
    fn chains(&mut self) -> StoreResult<Vec<ChainRow>>;
    /// The chain ids that hold entries, by id.
    fn chains_with_entries(&mut self) -> StoreResult<Vec<ChainId>>;
    /// Up to `limit` entries of `chain` after `after`, in order.
    fn audit_entries(
        &mut self,
        chain: ChainId,
        after: i64,
        limit: usize,
    ) -> StoreResult<Vec<AuditEntry>>;
    /// Entries of every chain matching `q`, by time then chain then seq.
    fn audit_query(&mut self, q: &AuditQuery) -> StoreResult<Vec<AuditEntry>>;

    // ---- usage ----

    /// Adds `calls` to each counter, on behalf of `chain`'s writer.
    fn add_usage(&mut self, chain: ChainId, counts: &[(UsageKey, u64)]) -> StoreResult<()>;
    /// A transaction's last writes, on behalf of `chain`'s writer: its
    /// audit entries and the head they lead to, and its counts. A backend
    /// that can writes them in one statement.
    fn append_trail(
        &mut self,
        chain: ChainId,
        entries: Option<(&[AuditEntry], &Head)>,
        counts: &[(UsageKey, u64)],
    ) -> StoreResult<()> {
        if let Some((entries, head)) = entries {
            self.append_audit(chain, entries, head)?;
        }
        if !counts.is_empty() {
            self.add_usage(chain, counts)?;
        }
        Ok(())
    }
    /// Counters matching `q`, summed over writers, by day, tenant,
    /// operation, outcome.
    fn usage_query(&mut self, q: &UsageQuery) -> StoreResult<Vec<UsageRow>>;

    // ---- guards that survive restarts ----

    /// A funder's failure windows.
    fn failure_window(&mut self, tenant: &TenantId) -> StoreResult<Option<FailureWindow>>;
    /// Sets (or, with `None`, forgets) a funder's failure windows.
    fn set_failure_window(
        &mut self,
        tenant: &TenantId,
        window: Option<&FailureWindow>,
    ) -> StoreResult<()>;
    /// Records a nonce accepted until `until` (unix seconds); false if it
    /// was recorded already.
    fn insert_nonce(&mut self, key_id: &str, nonce: &str, until: i64) -> StoreResult<bool>;
    /// Nonces recorded until after `now` (unix seconds).
    fn live_nonces(&mut self, now: i64) -> StoreResult<Vec<(String, String, i64)>>;
    /// Forgets nonces recorded until `now` or before; how many.
    fn sweep_nonces(&mut self, now: i64) -> StoreResult<u64>;
}
