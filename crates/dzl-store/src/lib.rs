//! Storage for dzl-vault: the [`Store`] every part of the vault talks to,
//! the operations behind it written once ([`ops`]) over a narrow
//! transaction interface ([`tx::Tx`]), the one batching write path
//! ([`writer`]), the embedded SQLite backend ([`sqlite`]), and [`admin`],
//! the vault administration (init, tenants, the key lifecycle) that the
//! CLI, the demo and the tests share. The PostgreSQL backend
//! (`dzl-store-pg`) implements the same interface.
//!
//! Architecture invariants:
//! * Each operation's rules exist once, in [`ops`] and [`rules`]; a
//!   backend holds only its SQL text, its locking, its connections and
//!   its files. Both backends pass one conformance suite
//!   (`conformance`, test support behind the feature of that name).
//! * One call of [`Store`] is one transaction: everything a request
//!   changes — rows, codes, its audit entry, its usage counter — commits
//!   together or not at all. Refusals that must be recorded (a failed
//!   redemption, a probe of another tenant's id) commit their audit entry
//!   and come back as [`StoreError::Refused`] or [`StoreError::Throttled`].
//! * Every write goes through the store's writer ([`writer`]): jobs
//!   arriving while a commit is in flight share the next transaction, and
//!   each is answered only once that transaction is durable.
//! * The audit trail is one hash chain per writer; no row is written by
//!   every writer, so replicas over PostgreSQL never wait for each other
//!   but on the rows a request really shares.
//! * The store sees only ciphertext, wrapped keys and hashes; the one place
//!   that touches plaintext key material is [`admin`], on the operator side.
//! * Reads block; callers on an async runtime run them on a blocking
//!   thread. Writes can be submitted from any thread without blocking it.
//! * Long operator work (rewrap, reseal, purge) is cut into bounded transactions by
//!   the caller, so a running server's writes never wait long.

pub mod admin;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod model;
pub mod ops;
pub mod rules;
pub mod sqlite;
pub mod tx;
pub mod writer;

pub use model::*;
pub use sqlite::SqliteStore;
pub use tx::{ChainId, ChainRow, ChainTip, ROOT_CHAIN};

use chrono::{DateTime, Utc};
use dzl_types::rules::Violation;
use dzl_types::wire::{CodeStatus, Outcome, OutcomeRequest, SubjectAccessResponse};
use dzl_types::{CodeId, DepositId, ErrorCode, RedemptionId, TenantId};

use crate::tx::Tx;
use crate::writer::{Txn, Writer};

/// What can go wrong in the store.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The request is refused for a reason the caller may learn; anything that
    /// had to be recorded about it (audit, usage) has been committed.
    #[error("refused: {0}")]
    Refused(ErrorCode),
    /// The request is refused for now: retry after this many seconds. Its
    /// audit entry and count have been committed.
    #[error("throttled for {0} s")]
    Throttled(u64),
    /// The request breaks a rule of what a deposit or grant may be
    /// (`dzl_types::rules`); nothing was stored.
    #[error("refused: {0}")]
    Rule(Violation),
    /// The platform already made a deposit under this `external_ref`
    /// (erased or voided ones included): `duplicate_external_ref`, naming
    /// that deposit. Only the platform that made it is told, so that after
    /// losing a deposit's answer it can issue codes for it or erase it.
    /// Nothing was stored.
    #[error("refused: duplicate_external_ref")]
    DuplicateExternalRef(DepositId),
    /// The transaction conflicted with another writer's (a serialization
    /// failure or deadlock); the writer runs it again.
    #[error("conflict: {0}")]
    Conflict(String),
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

/// The vault's storage: every operation of [`ops`] over one backend.
/// Implemented once, by [`Vault`].
pub trait Store: Send + Sync + 'static {
    // ---- requests of HTTP API v1 (each one transaction) ----

    /// Stores a deposit with its sealed groups and its first codes.
    fn create_deposit(&self, deposit: NewDeposit) -> StoreResult<Vec<CreatedCode>>;
    /// [`Store::create_deposit`], queued: `reply` gets the result. Never
    /// blocks, so an async worker may call it and await the reply.
    fn submit_deposit(&self, deposit: NewDeposit, reply: Reply<Vec<CreatedCode>>);
    /// Issues one more code on a deposit the platform owns.
    fn issue_code(
        &self,
        call: &Call,
        deposit: &DepositId,
        code: NewCode,
    ) -> StoreResult<CreatedCode>;
    /// A code's status, for the platform that owns it.
    fn code_status(&self, call: &Call, code: &CodeId) -> StoreResult<CodeStatus>;
    /// Revokes a code the platform owns.
    fn revoke_code(&self, call: &Call, code: &CodeId) -> StoreResult<CodeStatus>;
    /// Erases a deposit: destroys its data keys and ciphertexts, revokes its codes.
    fn erase_deposit(&self, call: &Call, deposit: &DepositId) -> StoreResult<()>;
    /// Redeems a code exactly once; every attempt is audited.
    fn redeem(&self, call: &Call, attempt: RedeemAttempt) -> StoreResult<Redeemed>;
    /// [`Store::redeem`], queued: `reply` gets the result. Never blocks.
    fn submit_redeem(&self, call: Call, attempt: RedeemAttempt, reply: Reply<Redeemed>);
    /// Records a funder's decision on its redemption.
    fn report_outcome(
        &self,
        call: &Call,
        redemption: &RedemptionId,
        outcome: &OutcomeRequest,
    ) -> StoreResult<Outcome>;
    /// Every deposit about a subject — filed under any of its blind
    /// indexes, one per suite — and every redemption of them.
    fn subject_access(
        &self,
        call: &Call,
        subject_indexes: &[String],
    ) -> StoreResult<SubjectAccessResponse>;
    /// Records a refused call that still must be audited (e.g. a throttled redemption).
    fn record_refusal(&self, call: &Call, refusal: ErrorCode) -> StoreResult<()>;

    // ---- guards that survive restarts ----

    /// Records a nonce accepted until `until` (unix seconds); false if it
    /// was recorded already. Durable when it returns.
    fn remember_nonce(&self, key_id: &str, nonce: &str, until: i64, now: i64) -> StoreResult<bool>;
    /// The nonces recorded until after `now`.
    fn live_nonces(&self, now: i64) -> StoreResult<Vec<(String, String, i64)>>;

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
    /// Adds KEK `version` of `suite` as active, with `secrets` sealed under
    /// it (a receipt key for a suite the vault moves to), in one
    /// transaction; the previous active one becomes decrypt-only. The
    /// vault's suite is its active KEK's.
    fn rotate_kek(
        &self,
        actor: &str,
        version: u32,
        suite: Suite,
        wrapped: Vec<u8>,
        secrets: Vec<SealedSecret>,
    ) -> StoreResult<()>;
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
    /// Returns how many rows changed. Not audited per call: the caller
    /// records the run ([`Store::record_action`] before the first batch,
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
    /// Active deposits per suite, by suite (counts every deposit: for
    /// `keys reseal`, not for requests).
    fn deposit_suites(&self) -> StoreResult<Vec<(Suite, u64)>>;
    /// Up to `limit` active deposits of another suite than `suite`, with
    /// their sealed groups and wrapped data keys, in the order of their
    /// filings, after `after` (paging). Read-only.
    fn deposits_to_reseal(
        &self,
        suite: Suite,
        after: Option<&Filing>,
        limit: usize,
    ) -> StoreResult<Vec<SealedDeposit>>;
    /// Replaces the seal of each deposit that is still as it was read
    /// ([`rules::reseal_applies`]: an erasure, rewrap or reseal meanwhile
    /// is left alone). One transaction, audited (`call.operation`).
    /// Refused (`Invalid`) unless `suite` is the vault's suite. Returns
    /// how many were replaced.
    fn reseal_deposits(
        &self,
        call: &Call,
        suite: Suite,
        deposits: Vec<ResealedDeposit>,
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
    /// Verifies every audit chain, on its own and together; the outer error
    /// is the store's, the inner the trail's. `progress` gets the count of
    /// entries verified so far.
    fn verify_audit(
        &self,
        progress: &mut dyn FnMut(i64),
    ) -> StoreResult<Result<u64, dzl_audit::TrailError>>;
    /// Every audit chain with its recorded head.
    fn audit_chains(&self) -> StoreResult<Vec<ChainRow>>;
    /// The number of audit entries, as the chains' heads record them.
    fn audit_head_seq(&self) -> StoreResult<i64> {
        Ok(self.audit_chains()?.iter().map(|c| c.head.seq).sum())
    }
    /// Entries of `chain` with `seq > after`, at most `limit`, in order.
    fn audit_entries(
        &self,
        chain: ChainId,
        after: i64,
        limit: usize,
    ) -> StoreResult<Vec<dzl_audit::AuditEntry>>;
    /// Every entry appended after `marks` (heads taken earlier with
    /// [`Store::audit_chains`]; a chain not among them from its start),
    /// chain by chain, each in order.
    fn audit_after(&self, marks: &[ChainRow]) -> StoreResult<Vec<dzl_audit::AuditEntry>> {
        let mut out = Vec::new();
        for chain in self.audit_chains()? {
            let mut after = marks
                .iter()
                .find(|m| m.chain == chain.chain)
                .map_or(0, |m| m.head.seq);
            loop {
                let page = self.audit_entries(chain.chain, after, 10_000)?;
                let Some(last) = page.last() else { break };
                after = last.seq;
                out.extend(page);
            }
        }
        Ok(out)
    }
    /// Audit entries matching `query`, in chain then seq order.
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
    /// One step of a purge under `plan` ([`ops::purge::step`]). One
    /// transaction; audited. Call until it returns counts below `limit`.
    fn purge(&self, call: &Call, plan: &PurgePlan, limit: usize) -> StoreResult<PurgeCounts>;
    /// Whether the store answers, reading and writing (for readiness).
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

/// A backend's read side and lifetime; its write side is the
/// [`writer::WriteConn`] it gives the store's writer.
pub trait Backend: Send + Sync + 'static {
    /// Runs `f` on a read connection; each statement sees what is
    /// committed when it runs.
    fn read<R>(&self, f: impl FnOnce(&mut dyn Tx) -> StoreResult<R>) -> StoreResult<R>;
    /// Runs `f` in one consistent read-only snapshot.
    fn snapshot<R>(&self, f: impl FnOnce(&mut dyn Tx) -> StoreResult<R>) -> StoreResult<R>;
    /// [`Backend::snapshot`] for a read that may take long, on a
    /// connection that the short reads do not wait for.
    fn snapshot_apart<R>(&self, f: impl FnOnce(&mut dyn Tx) -> StoreResult<R>) -> StoreResult<R> {
        self.snapshot(f)
    }
    /// Stops background work; called after the writer has stopped.
    fn close(&self) {}
}

/// The store over backend `B`: its reads, and its writer.
pub struct Vault<B: Backend> {
    backend: B,
    writer: Writer,
}

impl<B: Backend> std::fmt::Debug for Vault<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault").finish_non_exhaustive()
    }
}

/// A committed refusal (`Ok(Err(code))`) as the caller's error.
fn refused<T>(r: StoreResult<Result<T, ErrorCode>>) -> StoreResult<T> {
    r.and_then(|r| r.map_err(StoreError::Refused))
}

impl<B: Backend> Vault<B> {
    /// A store over `backend`, its writes run by `writer`.
    pub fn new(backend: B, writer: Writer) -> Self {
        Vault { backend, writer }
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The writer, to queue a job of one's own ([`Writer::submit`]).
    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    /// Runs `f` in the writer's next transaction and waits until it is
    /// durable.
    pub fn write<R: Send + 'static>(
        &self,
        f: impl Fn(&mut Txn<'_>) -> StoreResult<R> + Send + 'static,
    ) -> StoreResult<R> {
        self.writer.write(f)
    }

    /// Stops the writer after the queued jobs, then the backend; later
    /// calls fail.
    pub fn close(&self) {
        self.writer.close();
        self.backend.close();
    }
}

impl<B: Backend> Drop for Vault<B> {
    fn drop(&mut self) {
        self.close();
    }
}

impl<B: Backend> Store for Vault<B> {
    fn create_deposit(&self, d: NewDeposit) -> StoreResult<Vec<CreatedCode>> {
        writer::wait_for(|reply| self.submit_deposit(d, reply))
    }

    fn submit_deposit(&self, d: NewDeposit, reply: Reply<Vec<CreatedCode>>) {
        self.writer
            .submit(move |txn| ops::deposit::create(txn, &d), reply)
    }

    fn issue_code(
        &self,
        call: &Call,
        deposit: &DepositId,
        code: NewCode,
    ) -> StoreResult<CreatedCode> {
        let (call, deposit) = (call.clone(), deposit.clone());
        refused(self.write(move |txn| ops::deposit::issue_code(txn, &call, &deposit, &code)))
    }

    fn code_status(&self, call: &Call, code: &CodeId) -> StoreResult<CodeStatus> {
        let (call, code) = (call.clone(), code.clone());
        refused(self.write(move |txn| ops::codes::status(txn, &call, &code)))
    }

    fn revoke_code(&self, call: &Call, code: &CodeId) -> StoreResult<CodeStatus> {
        let (call, code) = (call.clone(), code.clone());
        refused(self.write(move |txn| ops::codes::revoke(txn, &call, &code)))
    }

    fn erase_deposit(&self, call: &Call, deposit: &DepositId) -> StoreResult<()> {
        let (call, deposit) = (call.clone(), deposit.clone());
        refused(self.write(move |txn| ops::codes::erase(txn, &call, &deposit)))
    }

    fn redeem(&self, call: &Call, attempt: RedeemAttempt) -> StoreResult<Redeemed> {
        writer::wait_for(|reply| self.submit_redeem(call.clone(), attempt, reply))
    }

    fn submit_redeem(&self, call: Call, attempt: RedeemAttempt, reply: Reply<Redeemed>) {
        self.writer.submit(
            move |txn| ops::redeem::redeem(txn, &call, &attempt),
            Box::new(move |out: StoreResult<Result<Redeemed, StoreError>>| {
                reply(out.and_then(|r| r))
            }),
        )
    }

    fn report_outcome(
        &self,
        call: &Call,
        redemption: &RedemptionId,
        outcome: &OutcomeRequest,
    ) -> StoreResult<Outcome> {
        let (call, redemption, outcome) = (call.clone(), redemption.clone(), outcome.clone());
        refused(
            self.write(move |txn| ops::redeem::report_outcome(txn, &call, &redemption, &outcome)),
        )
    }

    fn subject_access(
        &self,
        call: &Call,
        subject_indexes: &[String],
    ) -> StoreResult<SubjectAccessResponse> {
        // Read from a snapshot of its own, off the writer: finding a
        // subject probes every run of the subject index. The report is
        // released only once its audit entry commits.
        let report = self
            .backend
            .snapshot_apart(|tx| ops::subject::report(tx, subject_indexes))?;
        let detail = format!(
            "{} deposits, {} redemptions reported",
            report.deposits.len(),
            report.redemptions.len()
        );
        let call = call.clone();
        self.write(move |txn| {
            txn.audit(ops::action(&call, "ok", detail.clone()))?;
            txn.meter(&call, "ok");
            Ok(())
        })?;
        Ok(report)
    }

    fn record_refusal(&self, call: &Call, refusal: ErrorCode) -> StoreResult<()> {
        let call = call.clone();
        self.write(move |txn| ops::record_refusal(txn, &call, refusal.as_str()))
    }

    fn remember_nonce(&self, key_id: &str, nonce: &str, until: i64, now: i64) -> StoreResult<bool> {
        let (key_id, nonce) = (key_id.to_owned(), nonce.to_owned());
        self.write(move |txn| ops::guards::remember_nonce(txn, &key_id, &nonce, until, now))
    }

    fn live_nonces(&self, now: i64) -> StoreResult<Vec<(String, String, i64)>> {
        self.backend.read(|tx| tx.live_nonces(now))
    }

    fn tenants(&self) -> StoreResult<Vec<TenantRow>> {
        self.backend.read(|tx| tx.tenants())
    }

    fn add_tenant(&self, actor: &str, tenant: TenantRow) -> StoreResult<()> {
        let actor = actor.to_owned();
        self.write(move |txn| ops::tenants::add(txn, &actor, &tenant))
    }

    fn set_tenant_state(
        &self,
        actor: &str,
        tenant: &TenantId,
        state: TenantState,
        reason: &str,
    ) -> StoreResult<bool> {
        let (actor, tenant, reason) = (actor.to_owned(), tenant.clone(), reason.to_owned());
        let now = Utc::now();
        self.write(move |txn| ops::tenants::set_state(txn, &actor, &tenant, state, &reason, now))
    }

    fn set_tenant_cert_pin(
        &self,
        actor: &str,
        tenant: &TenantId,
        pin: Option<CertPin>,
    ) -> StoreResult<bool> {
        let (actor, tenant) = (actor.to_owned(), tenant.clone());
        let now = Utc::now();
        self.write(move |txn| ops::tenants::set_pin(txn, &actor, &tenant, pin.as_ref(), now))
    }

    fn rotate_tenant_secret(
        &self,
        call: &Call,
        tenant: &TenantId,
        secret: Sealed,
        previous_valid_until: DateTime<Utc>,
    ) -> StoreResult<()> {
        let (call, tenant) = (call.clone(), tenant.clone());
        self.write(move |txn| {
            ops::tenants::rotate_secret(txn, &call, &tenant, &secret, previous_valid_until)
        })
    }

    fn keks(&self) -> StoreResult<Vec<KekRow>> {
        self.backend.snapshot(|tx| tx.keks())
    }

    fn kek_versions(&self) -> StoreResult<Vec<KekVersion>> {
        self.backend.read(|tx| tx.kek_versions())
    }

    fn rotate_kek(
        &self,
        actor: &str,
        version: u32,
        suite: Suite,
        wrapped: Vec<u8>,
        secrets: Vec<SealedSecret>,
    ) -> StoreResult<()> {
        let actor = actor.to_owned();
        let now = Utc::now();
        self.write(move |txn| {
            ops::keys::rotate(txn, &actor, version, suite, &wrapped, &secrets, now)
        })
    }

    fn sealed_secret(&self, name: &str) -> StoreResult<Option<SealedSecret>> {
        self.backend.read(|tx| tx.sealed_secret(name))
    }

    fn sealed_secrets(&self) -> StoreResult<Vec<SealedSecret>> {
        let mut all = self.backend.read(|tx| tx.sealed_secrets(""))?;
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    fn receipt_keys(&self) -> StoreResult<Vec<SealedSecret>> {
        self.backend
            .read(|tx| tx.sealed_secrets(admin::RECEIPT_PREFIX))
    }

    fn initialise(&self, actor: &str, init: InitMaterial) -> StoreResult<()> {
        let actor = actor.to_owned();
        let now = Utc::now();
        self.write(move |txn| ops::keys::initialise(txn, &actor, &init, now))
    }

    fn is_initialised(&self) -> StoreResult<bool> {
        Ok(self.backend.read(|tx| tx.max_kek_version())? > 0)
    }

    fn data_keys_on(
        &self,
        kind: DataKeyKind,
        version: u32,
        after: Option<&DepositId>,
        limit: usize,
    ) -> StoreResult<Vec<StoredDataKey>> {
        self.backend
            .read(|tx| tx.data_keys_on(kind, version, after, limit))
    }

    fn rewrap_data_keys(
        &self,
        target_version: u32,
        keys: Vec<RewrappedDataKey>,
    ) -> StoreResult<u64> {
        self.write(move |txn| ops::keys::rewrap_data_keys(txn, target_version, &keys))
    }

    fn rewrap_secrets(
        &self,
        call: &Call,
        target_version: u32,
        secrets: Vec<RewrappedSecret>,
        detail: &str,
    ) -> StoreResult<u64> {
        let (call, detail) = (call.clone(), detail.to_owned());
        self.write(move |txn| {
            ops::keys::rewrap_secrets(txn, &call, target_version, &secrets, &detail)
        })
    }

    fn deposit_suites(&self) -> StoreResult<Vec<(Suite, u64)>> {
        self.backend.snapshot_apart(|tx| tx.deposit_suites())
    }

    fn deposits_to_reseal(
        &self,
        suite: Suite,
        after: Option<&Filing>,
        limit: usize,
    ) -> StoreResult<Vec<SealedDeposit>> {
        self.backend
            .read(|tx| tx.deposits_to_reseal(suite, after, limit))
    }

    fn reseal_deposits(
        &self,
        call: &Call,
        suite: Suite,
        deposits: Vec<ResealedDeposit>,
    ) -> StoreResult<u64> {
        let call = call.clone();
        self.write(move |txn| ops::keys::reseal_deposits(txn, &call, suite, &deposits))
    }

    fn retire_kek(
        &self,
        call: &Call,
        version: u32,
    ) -> StoreResult<Result<bool, rules::RetireRefusal>> {
        let call = call.clone();
        self.write(move |txn| ops::keys::retire(txn, &call, version))
    }

    fn rekey_root(&self, call: &Call, keks: Vec<RekeyedKek>, detail: &str) -> StoreResult<()> {
        let (call, detail) = (call.clone(), detail.to_owned());
        self.write(move |txn| ops::keys::rekey_root(txn, &call, &keks, &detail))
    }

    fn generation(&self) -> StoreResult<i64> {
        self.backend.read(|tx| tx.generation())
    }

    fn verify_audit(
        &self,
        progress: &mut dyn FnMut(i64),
    ) -> StoreResult<Result<u64, dzl_audit::TrailError>> {
        self.backend.snapshot(|tx| ops::audit::verify(tx, progress))
    }

    fn audit_chains(&self) -> StoreResult<Vec<ChainRow>> {
        self.backend.snapshot(|tx| tx.chains())
    }

    fn audit_entries(
        &self,
        chain: ChainId,
        after: i64,
        limit: usize,
    ) -> StoreResult<Vec<dzl_audit::AuditEntry>> {
        self.backend
            .read(|tx| tx.audit_entries(chain, after, limit))
    }

    fn audit_query(&self, query: &AuditQuery) -> StoreResult<Vec<dzl_audit::AuditEntry>> {
        self.backend.read(|tx| tx.audit_query(query))
    }

    fn record_action(&self, call: &Call, result: &str, detail: &str) -> StoreResult<()> {
        let (call, result, detail) = (call.clone(), result.to_owned(), detail.to_owned());
        self.write(move |txn| ops::record_action(txn, &call, &result, &detail))
    }

    fn usage_query(&self, query: &UsageQuery) -> StoreResult<Vec<UsageRow>> {
        self.backend.read(|tx| tx.usage_query(query))
    }

    fn purge_preview(&self, plan: &PurgePlan) -> StoreResult<PurgeCounts> {
        self.backend.snapshot(|tx| tx.purge_counts(plan))
    }

    fn purge(&self, call: &Call, plan: &PurgePlan, limit: usize) -> StoreResult<PurgeCounts> {
        let (call, plan) = (call.clone(), *plan);
        self.write(move |txn| ops::purge::step(txn, &call, &plan, limit))
    }

    fn ping(&self) -> StoreResult<()> {
        self.backend.read(|tx| tx.ping())?;
        self.write(|txn| txn.read().ping())
    }
}
