//! Storage for dzl-vault: the [`Store`] trait every backend implements, the
//! SQLite backend (the embedded default), and [`admin`], the vault
//! administration (init, tenants, the key lifecycle: rotate, rewrap,
//! retire, root rekey) that the CLI, the demo and the tests share.
//!
//! Architecture invariants:
//! * One method of [`Store`] is one transaction: everything a request changes
//!   — rows, codes, its audit entry, its usage counter — commits together or
//!   not at all. Refusals that must be recorded (a failed redemption) commit
//!   their audit entry and come back as [`StoreError::Refused`].
//! * The store sees only ciphertext, wrapped keys and hashes; the one place
//!   that touches plaintext key material is [`admin`], on the operator side.
//! * Every method blocks; callers on an async runtime run them on a blocking
//!   thread. The SQLite backend never runs a statement on the caller's thread
//!   for writes: one writer thread owns the write connection and commits
//!   queued jobs together (group commit).
//! * Decisions (may this code be redeemed? when does it expire? may this key
//!   version be retired? what does a purge remove?) are the pure functions
//!   of [`rules`], so every backend decides alike.
//! * Every operator action that changes the store appends its audit entry in
//!   the same transaction; changes a running server must see (tenants, keys,
//!   secrets) bump the generation in that transaction too.
//! * Long operator work (rewrap, purge) is cut into bounded transactions by
//!   the caller, so a running server's writes never wait long.

pub mod admin;
pub mod model;
pub mod rules;
pub mod sqlite;

pub use model::*;
pub use sqlite::SqliteStore;

use chrono::{DateTime, Utc};
use dzl_types::wire::{CodeStatus, Outcome, OutcomeRequest, SubjectAccessResponse};
use dzl_types::{CodeId, DepositId, ErrorCode, Purpose, RedemptionId, TenantId};

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The request is refused for a reason the caller may learn; anything that
    /// had to be recorded about it (audit, usage) has been committed.
    #[error("refused: {0}")]
    Refused(ErrorCode),
    /// The platform already made a deposit under this `external_ref`
    /// (erased or voided ones included): `duplicate_external_ref`, naming
    /// that deposit. Only the platform that made it is told, so that after
    /// losing a deposit's answer it can issue codes for it or erase it.
    /// Nothing was stored.
    #[error("refused: duplicate_external_ref")]
    DuplicateExternalRef(DepositId),
    /// The store cannot be used right now (I/O error, disk full, locked).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store holds something it should not (corruption, tampering).
    #[error("store corrupt: {0}")]
    Corrupt(String),
    /// The store was asked something impossible (a bug or a bad argument).
    #[error("invalid: {0}")]
    Invalid(String),
}

/// Result of the store.
pub type StoreResult<T> = Result<T, StoreError>;

/// Where a submitted call's result goes ([`Store::submit_deposit`]). It is
/// called exactly once, on whichever thread finished the call.
pub type Reply<T> = Box<dyn FnOnce(StoreResult<T>) + Send>;

/// The vault's storage. Implemented by [`SqliteStore`]; a PostgreSQL backend
/// implements the same trait and passes the same tests.
pub trait Store: Send + Sync + 'static {
    // ---- requests of HTTP API v1 (each one transaction) ----

    /// Stores a deposit with its sealed groups and its first codes.
    fn create_deposit(&self, deposit: NewDeposit) -> StoreResult<Vec<CreatedCode>>;
    /// Issues one more code on a deposit the platform owns, for a funder
    /// entitled to `funder_purposes` (checked against the deposit's purpose).
    fn issue_code(
        &self,
        call: &Call,
        deposit: &DepositId,
        code: NewCode,
        funder_purposes: &[Purpose],
    ) -> StoreResult<CreatedCode>;
    /// A code's status, for the platform that owns it.
    fn code_status(&self, call: &Call, code: &CodeId) -> StoreResult<CodeStatus>;
    /// Revokes a code the platform owns.
    fn revoke_code(&self, call: &Call, code: &CodeId) -> StoreResult<CodeStatus>;
    /// Erases a deposit: destroys its data keys and ciphertexts, revokes its codes.
    fn erase_deposit(&self, call: &Call, deposit: &DepositId) -> StoreResult<()>;
    /// Redeems a code exactly once; every attempt is audited.
    fn redeem(&self, call: &Call, attempt: RedeemAttempt) -> StoreResult<Redeemed>;
    /// Records a funder's decision on its redemption.
    fn report_outcome(
        &self,
        call: &Call,
        redemption: &RedemptionId,
        outcome: &OutcomeRequest,
    ) -> StoreResult<Outcome>;
    /// Every deposit about a subject and every redemption of them.
    fn subject_access(
        &self,
        call: &Call,
        subject_index: &str,
    ) -> StoreResult<SubjectAccessResponse>;
    /// Records a refused call that still must be audited (e.g. a throttled redemption).
    fn record_refusal(&self, call: &Call, refusal: ErrorCode) -> StoreResult<()>;

    // ---- the hot requests, submitted ----

    /// Whether [`Store::submit_deposit`] and [`Store::submit_redeem`] only
    /// queue their work for threads of the store's own and return at once:
    /// they neither block nor touch a database on the calling thread, so an
    /// async worker may call them and await the reply without lending a
    /// thread to the wait. When false (the default), they run the call on
    /// the calling thread, which must then be one that may block.
    fn submits_without_waiting(&self) -> bool {
        false
    }
    /// [`Store::create_deposit`], its result handed to `reply`.
    fn submit_deposit(&self, deposit: NewDeposit, reply: Reply<Vec<CreatedCode>>) {
        reply(self.create_deposit(deposit))
    }
    /// [`Store::redeem`], its result handed to `reply`.
    fn submit_redeem(&self, call: Call, attempt: RedeemAttempt, reply: Reply<Redeemed>) {
        reply(self.redeem(&call, attempt))
    }

    // ---- tenants ----

    /// Every tenant.
    fn tenants(&self) -> StoreResult<Vec<TenantRow>>;
    /// Adds a tenant.
    fn add_tenant(&self, actor: &str, tenant: TenantRow) -> StoreResult<()>;
    /// Suspends or resumes a tenant; `Ok(false)` when it was already so.
    fn set_tenant_state(
        &self,
        actor: &str,
        tenant: &TenantId,
        state: TenantState,
        reason: &str,
    ) -> StoreResult<bool>;
    /// Pins a tenant to a client certificate, or (`None`) removes its pin;
    /// `Ok(false)` when it already was so. Bumps the generation; audited
    /// (`tenant.pin` / `tenant.unpin`). `Invalid` for an unknown tenant.
    fn set_tenant_cert_pin(
        &self,
        actor: &str,
        tenant: &TenantId,
        pin: Option<CertPin>,
    ) -> StoreResult<bool>;
    /// Gives a tenant a new signing secret; its current one becomes its
    /// previous secret, accepted until `previous_valid_until` (replacing any
    /// older previous secret). Bumps the generation; audited
    /// (`tenant.rotate_secret`). `Invalid` for an unknown tenant.
    fn rotate_tenant_secret(
        &self,
        call: &Call,
        tenant: &TenantId,
        secret: Sealed,
        previous_valid_until: DateTime<Utc>,
    ) -> StoreResult<()>;

    // ---- keys ----

    /// The keyring as stored, with what each version still protects (counts
    /// every data key: for `keys list` and retirement, not for loading).
    fn keks(&self) -> StoreResult<Vec<KekRow>>;
    /// The keyring's versions and wrapped keys alone, oldest first: what
    /// loading the keyring needs, in time independent of the store's size.
    fn kek_versions(&self) -> StoreResult<Vec<KekVersion>>;
    /// Adds KEK `version` as active; the previous active one becomes decrypt-only.
    fn rotate_kek(&self, actor: &str, version: u32, wrapped: Vec<u8>) -> StoreResult<()>;
    /// A sealed secret of the vault (receipt signing key, subject index key).
    fn sealed_secret(&self, name: &str) -> StoreResult<Option<SealedSecret>>;
    /// Every sealed vault secret, by name.
    fn sealed_secrets(&self) -> StoreResult<Vec<SealedSecret>>;
    /// All receipt signing keys.
    fn receipt_keys(&self) -> StoreResult<Vec<SealedSecret>>;
    /// Creates the store's first keyring and vault secrets; refused if initialised.
    fn initialise(&self, actor: &str, init: InitMaterial) -> StoreResult<()>;
    /// Whether [`Store::initialise`] has run.
    fn is_initialised(&self) -> StoreResult<bool>;
    /// Up to `limit` data keys of `kind` wrapped by KEK `version`, in deposit
    /// id order, after deposit `after` (paging). Read-only.
    fn data_keys_on(
        &self,
        kind: DataKeyKind,
        version: u32,
        after: Option<&DepositId>,
        limit: usize,
    ) -> StoreResult<Vec<StoredDataKey>>;
    /// Replaces wrapped data keys, each only if its row still exists and is
    /// still wrapped by `from_version` (an erased deposit or a concurrent
    /// rewrap is skipped, not an error). One transaction. Refused
    /// (`Invalid`) unless `target_version` is a non-retired version.
    /// Returns how many rows changed. Not audited per call, so a batch of
    /// one kind commits to one database file: the caller records the run
    /// ([`Store::record_action`] before the first batch,
    /// [`Store::rewrap_secrets`] after the last).
    fn rewrap_data_keys(
        &self,
        target_version: u32,
        keys: Vec<RewrappedDataKey>,
    ) -> StoreResult<u64>;
    /// Replaces sealed secrets (tenant, previous tenant and vault secrets),
    /// each only if still sealed by `from_version`, and records `detail`
    /// (the rewrap's summary). One transaction; bumps the generation;
    /// audited (`keys.rewrap`). Returns how many secrets changed.
    fn rewrap_secrets(
        &self,
        call: &Call,
        target_version: u32,
        secrets: Vec<RewrappedSecret>,
        detail: &str,
    ) -> StoreResult<u64>;
    /// Retires KEK `version`: deletes its wrapped bytes and marks it retired,
    /// if [`rules::retire_decision`] allows it given what still needs it at
    /// `call.now` (previous tenant secrets past their overlap do not count,
    /// and are dropped). One transaction; bumps the generation; audited
    /// (`keys.retire`), refusals too. `Ok(Ok(false))`: it was already
    /// retired.
    fn retire_kek(
        &self,
        call: &Call,
        version: u32,
    ) -> StoreResult<Result<bool, rules::RetireRefusal>>;
    /// Replaces the root-key wrap of every non-retired KEK at once. Refused
    /// (`Invalid`, nothing changed) unless `keks` names exactly the
    /// non-retired versions and each `old_wrapped` is still what is stored.
    /// One transaction; bumps the generation; audited (`root.rekey`).
    fn rekey_root(&self, call: &Call, keks: Vec<RekeyedKek>, detail: &str) -> StoreResult<()>;

    // ---- operations ----

    /// A number that changes whenever tenants or keys change, so a running
    /// server knows to reload them.
    fn generation(&self) -> StoreResult<i64>;
    /// Walks the audit chain; the outer error is the store's, the inner the chain's.
    fn verify_audit(
        &self,
        progress: &mut dyn FnMut(i64),
    ) -> StoreResult<Result<u64, dzl_audit::ChainError>>;
    /// The seq of the last audit entry as the chain head records it.
    fn audit_head_seq(&self) -> StoreResult<i64>;
    /// Audit entries with `seq > after`, at most `limit`, in order.
    fn audit_entries(&self, after: i64, limit: usize) -> StoreResult<Vec<dzl_audit::AuditEntry>>;
    /// Audit entries matching `query`, in seq order.
    fn audit_query(&self, query: &AuditQuery) -> StoreResult<Vec<dzl_audit::AuditEntry>>;
    /// Appends one audit entry for an operator action that changes no other
    /// row (an export, a verification), with `result` and a fixed `detail`.
    fn record_action(&self, call: &Call, result: &str, detail: &str) -> StoreResult<()>;
    /// Calls per tenant, operation, day and outcome matching `query`,
    /// ordered by day, tenant, operation, outcome.
    fn usage_query(&self, query: &UsageQuery) -> StoreResult<Vec<UsageRow>>;
    /// Every usage counter.
    fn usage(&self) -> StoreResult<Vec<UsageRow>> {
        self.usage_query(&UsageQuery::default())
    }
    /// What [`Store::purge`] would do under `plan` if run to completion. Read-only.
    fn purge_preview(&self, plan: &PurgePlan) -> StoreResult<PurgeCounts>;
    /// One step of a purge under `plan`: stores up to `limit` issued codes
    /// past their deadline as expired ([`rules::code_expirable`]), then
    /// crypto-shreds up to `limit` deposits past retention
    /// ([`rules::deposit_past_retention`]) as `erase_deposit` does, revoking
    /// their outstanding codes. One transaction; audited (`deposit.purge`
    /// per deposit, `vault.purge` for the step). Call until it returns
    /// counts below `limit`.
    fn purge(&self, call: &Call, plan: &PurgePlan, limit: usize) -> StoreResult<PurgeCounts>;
    /// Whether the store answers (for readiness).
    fn ping(&self) -> StoreResult<()>;
}

/// Checks that `tenant` is an active tenant of `kind` — the shared guard of
/// operations that take a tenant from the outside.
pub fn expect_kind(tenants: &[TenantRow], tenant: &TenantId, kind: TenantKind) -> StoreResult<()> {
    match tenants.iter().find(|t| &t.id == tenant) {
        Some(t) if t.kind == kind => Ok(()),
        Some(_) => Err(StoreError::Invalid(format!(
            "tenant {tenant} is not a {}",
            kind.as_str()
        ))),
        None => Err(StoreError::Invalid(format!("no tenant {tenant}"))),
    }
}
