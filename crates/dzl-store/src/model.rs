//! What the store takes and gives: rows, inputs of the transactional
//! operations, and their results. Only ciphertext, wrapped keys and hashes.

use chrono::{DateTime, Utc};
pub use dzl_crypto::{CertPin, Suite};
use dzl_types::{CodeId, DepositId, Group, Purpose, RedemptionId, ScopeSet, SubjectRef, TenantId};

/// Bytes sealed under one KEK version of the keyring.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The KEK version that wraps them.
    pub kek_version: u32,
    /// The envelope.
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealed {{ kek_version: {}, .. }}", self.kek_version)
    }
}

/// Who is calling, and when: every transactional operation audits and meters
/// against it.
#[derive(Debug, Clone)]
pub struct Call {
    /// The tenant (or `cli:<user>`, `system`).
    pub actor: String,
    /// The metered and audited operation name, e.g. `redemption.create`.
    pub operation: &'static str,
    /// The request time (the injected clock).
    pub now: DateTime<Utc>,
}

/// A tenant's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TenantKind {
    /// Deposits.
    Platform,
    /// Redeems.
    Funder,
    /// Subject access and usage.
    Operator,
}

impl TenantKind {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            TenantKind::Platform => "platform",
            TenantKind::Funder => "funder",
            TenantKind::Operator => "operator",
        }
    }
    /// Parses the stored text.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "platform" => Some(TenantKind::Platform),
            "funder" => Some(TenantKind::Funder),
            "operator" => Some(TenantKind::Operator),
            _ => None,
        }
    }
}

/// Whether a tenant may call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantState {
    /// May call.
    Active,
    /// Gets 403 until resumed.
    Suspended,
}

impl TenantState {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            TenantState::Active => "active",
            TenantState::Suspended => "suspended",
        }
    }
    /// Parses the stored text.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(TenantState::Active),
            "suspended" => Some(TenantState::Suspended),
            _ => None,
        }
    }
}

/// A tenant as stored: its signing secret sealed under the keyring.
#[derive(Debug, Clone)]
pub struct TenantRow {
    /// `ten_…`.
    pub id: TenantId,
    /// Kind.
    pub kind: TenantKind,
    /// Display name.
    pub name: String,
    /// The key id it signs with.
    pub key_id: String,
    /// Its signing secret, sealed (label `tenant-secret`, id = tenant id).
    pub secret: Sealed,
    /// Groups a funder is entitled to.
    pub scopes: Option<ScopeSet>,
    /// Purposes a funder is entitled to.
    pub purposes: Vec<Purpose>,
    /// Requests per second.
    pub rate_limit: u32,
    /// Active or suspended.
    pub state: TenantState,
    /// When created.
    pub created_at: DateTime<Utc>,
    /// The secret it signed with before its last `tenant rotate-secret`,
    /// still accepted until its deadline.
    pub previous_secret: Option<PreviousSecret>,
    /// The client certificate it must present (mutual TLS), if pinned.
    pub cert_pin: Option<CertPin>,
}

/// A tenant's previous signing secret during the overlap after a rotation.
#[derive(Debug, Clone)]
pub struct PreviousSecret {
    /// Sealed like the current one (label `tenant-secret`, id = tenant id).
    pub secret: Sealed,
    /// Accepted strictly before this instant (see [`crate::rules::previous_secret_valid`]).
    pub valid_until: DateTime<Utc>,
}

/// A KEK's life cycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KekState {
    /// Wraps new data keys.
    Active,
    /// Unwraps only.
    DecryptOnly,
    /// Gone.
    Retired,
}

impl KekState {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            KekState::Active => "active",
            KekState::DecryptOnly => "decrypt_only",
            KekState::Retired => "retired",
        }
    }
    /// Parses the stored text.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(KekState::Active),
            "decrypt_only" => Some(KekState::DecryptOnly),
            "retired" => Some(KekState::Retired),
            _ => None,
        }
    }
}

/// A KEK version as stored, wrapped by the root key: what opening the
/// keyring needs (read without counting what each version protects).
#[derive(Debug, Clone)]
pub struct KekVersion {
    /// Version, from 1.
    pub version: u32,
    /// The suite of the key inside (its AEAD): the vault's suite while it
    /// is the active version.
    pub suite: Suite,
    /// State.
    pub state: KekState,
    /// Wrapped by the root key (empty once retired).
    pub wrapped: Vec<u8>,
}

/// A KEK version as stored, with what it still protects (`dzlctl keys list`,
/// retirement).
#[derive(Debug, Clone)]
pub struct KekRow {
    /// Version, from 1.
    pub version: u32,
    /// The suite of the key inside.
    pub suite: Suite,
    /// State.
    pub state: KekState,
    /// Wrapped by the root key (empty once retired).
    pub wrapped: Vec<u8>,
    /// When made.
    pub created_at: DateTime<Utc>,
    /// When retired (its wrapped bytes deleted).
    pub retired_at: Option<DateTime<Utc>>,
    /// Data keys it still wraps (records and identity keys).
    pub data_keys: u64,
    /// Secrets it still seals (tenant secrets, previous tenant secrets,
    /// vault secrets).
    pub secrets: u64,
}

/// What still needs one KEK version: the reasons `keys retire` refuses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyUsage {
    /// Data keys of the non-identity groups.
    pub records_keys: u64,
    /// Data keys of the identity group (identity store).
    pub identity_keys: u64,
    /// Tenants' current signing secrets.
    pub tenant_secrets: u64,
    /// Tenants' previous signing secrets still inside their overlap.
    pub previous_tenant_secrets: u64,
    /// Sealed vault secrets (receipt signing keys, the subject-index key).
    pub vault_secrets: u64,
}

impl KeyUsage {
    /// Everything counted.
    pub fn total(&self) -> u64 {
        self.records_keys
            + self.identity_keys
            + self.tenant_secrets
            + self.previous_tenant_secrets
            + self.vault_secrets
    }

    /// The non-zero counts in words, e.g. `3 data keys, 1 tenant secret`.
    pub fn describe(&self) -> String {
        let parts = [
            (self.records_keys, "data key", "data keys"),
            (self.identity_keys, "identity key", "identity keys"),
            (self.tenant_secrets, "tenant secret", "tenant secrets"),
            (
                self.previous_tenant_secrets,
                "previous tenant secret",
                "previous tenant secrets",
            ),
            (self.vault_secrets, "vault secret", "vault secrets"),
        ];
        let words: Vec<String> = parts
            .iter()
            .filter(|(n, ..)| *n > 0)
            .map(|(n, one, many)| format!("{n} {}", if *n == 1 { one } else { many }))
            .collect();
        if words.is_empty() {
            "nothing".into()
        } else {
            words.join(", ")
        }
    }
}

/// Which data key of a deposit: the two are wrapped with different AAD
/// kinds and live in different databases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataKeyKind {
    /// The key of the `device` and `risk` groups (`data_keys`).
    Records,
    /// The key of the `applicant` group (the identity store).
    Identity,
}

impl DataKeyKind {
    /// Both kinds.
    pub const ALL: [DataKeyKind; 2] = [DataKeyKind::Records, DataKeyKind::Identity];

    /// The `kind` bound into the wrap's AAD (`Keyring::wrap_data_key`).
    pub fn as_str(self) -> &'static str {
        match self {
            DataKeyKind::Records => "records",
            DataKeyKind::Identity => "identity",
        }
    }
}

/// A wrapped data key as stored.
#[derive(Debug, Clone)]
pub struct StoredDataKey {
    /// Which key.
    pub kind: DataKeyKind,
    /// Its deposit (the AAD's owner id).
    pub deposit_id: DepositId,
    /// The wrapped key.
    pub wrapped: Sealed,
}

/// A data key wrapped anew, to replace the stored one if that is still
/// wrapped by `from_version`.
#[derive(Debug, Clone)]
pub struct RewrappedDataKey {
    /// Which key.
    pub kind: DataKeyKind,
    /// Its deposit.
    pub deposit_id: DepositId,
    /// The version it was read under; the row is left alone if it changed.
    pub from_version: u32,
    /// The new wrap.
    pub wrapped: Sealed,
}

/// Where a deposit is filed for subject access. A reseal walks the
/// deposits it has to reseal in the order of their filings, and names
/// the last one it read to go on after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filing {
    /// The run it is filed in (SQLite files deposits in runs,
    /// `ops::deposit::SUBJECT_RUN_SHIFT`); 0 for a backend that files
    /// them in the deposit's own row (PostgreSQL).
    pub run: i64,
    /// The subject index it is filed under.
    pub subject_index: String,
    /// The deposit.
    pub deposit_id: DepositId,
}

/// A deposit's sealed non-identity groups and their data key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedRecords {
    /// The data key, wrapped.
    pub key: Sealed,
    /// The sealed `device` group, if deposited.
    pub device: Option<Vec<u8>>,
    /// The sealed `risk` group, if deposited.
    pub risk: Option<Vec<u8>>,
}

/// An active deposit as it is sealed, for a reseal to open and seal anew.
#[derive(Debug, Clone)]
pub struct SealedDeposit {
    /// Where it is filed (and which deposit it is).
    pub filing: Filing,
    /// The suite it is sealed in.
    pub suite: Suite,
    /// The platform that made it (its subject reference is the platform's).
    pub platform_id: TenantId,
    /// Its non-identity groups, if its row exists.
    pub records: Option<SealedRecords>,
    /// Its identity group's wrapped data key and envelope, if its row
    /// exists.
    pub identity: Option<(Sealed, Vec<u8>)>,
}

/// What a deposit's seal is now, read again (and locked) in the
/// transaction that would replace it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepositSeal {
    /// Active or erased.
    pub state: crate::tx::DepositState,
    /// Its suite.
    pub suite: Suite,
    /// The wrapped data key of its non-identity groups, if any.
    pub records_key: Option<Sealed>,
    /// The wrapped data key of its identity group, if any.
    pub identity_key: Option<Sealed>,
}

/// A deposit sealed anew in another suite, to replace the stored one if
/// that is still as it was read ([`crate::rules::reseal_applies`]).
#[derive(Debug, Clone)]
pub struct ResealedDeposit {
    /// The deposit as it was read.
    pub read: SealedDeposit,
    /// The suite it is now sealed in.
    pub suite: Suite,
    /// Its subject's blind index in that suite.
    pub subject_index: String,
    /// The platform's pseudonym of its subject in that suite.
    pub subject_ref: SubjectRef,
    /// Its non-identity groups under a fresh data key, if it has them.
    pub records: Option<SealedRecords>,
    /// Its identity group under a fresh data key.
    pub identity: (Sealed, Vec<u8>),
}

/// A sealed secret of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    /// A tenant's current signing secret.
    Tenant(TenantId),
    /// A tenant's previous signing secret (overlap after a rotation).
    PreviousTenant(TenantId),
    /// A vault secret by name (`receipt:…`, `subject-index`).
    Vault(String),
}

/// A secret sealed anew, to replace the stored one if that is still sealed
/// by `from_version`.
#[derive(Debug, Clone)]
pub struct RewrappedSecret {
    /// Which secret.
    pub secret: SecretRef,
    /// The version it was read under.
    pub from_version: u32,
    /// The new seal.
    pub sealed: Sealed,
}

/// A KEK wrapped under a new root key, replacing `old_wrapped`.
#[derive(Clone)]
pub struct RekeyedKek {
    /// Version.
    pub version: u32,
    /// The bytes it replaces (must still be stored).
    pub old_wrapped: Vec<u8>,
    /// The KEK wrapped by the new root key.
    pub new_wrapped: Vec<u8>,
}

impl std::fmt::Debug for RekeyedKek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RekeyedKek {{ version: {}, .. }}", self.version)
    }
}

/// What `purge` does at one instant (see [`crate::rules::purge_plan`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgePlan {
    /// The purge's clock: issued codes whose deadline is at or before it expire.
    pub now: DateTime<Utc>,
    /// Active deposits created strictly before this are crypto-shredded.
    pub deposits_created_before: DateTime<Utc>,
    /// The retention the cut-off came from, for the audit trail.
    pub retention_days: u32,
}

/// What a purge did (or, previewed, would do).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeCounts {
    /// Issued codes past their deadline, now stored as expired.
    pub codes_expired: u64,
    /// Deposits past retention whose data keys were destroyed.
    pub deposits_shredded: u64,
    /// Outstanding codes of those deposits, revoked with them.
    pub codes_revoked: u64,
}

/// Which audit entries to read: some of one chain's.
#[derive(Debug, Clone)]
pub struct AuditQuery {
    /// The chain.
    pub chain: crate::ChainId,
    /// Only entries with `seq` greater than this (paging).
    pub after_seq: i64,
    /// Only entries at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only entries strictly before this time.
    pub until: Option<DateTime<Utc>>,
    /// At most this many.
    pub limit: usize,
}

impl Default for AuditQuery {
    fn default() -> Self {
        AuditQuery {
            chain: crate::ROOT_CHAIN,
            after_seq: 0,
            since: None,
            until: None,
            limit: 0,
        }
    }
}

/// Which usage counters to read.
#[derive(Debug, Clone, Default)]
pub struct UsageQuery {
    /// First UTC day, inclusive.
    pub from: Option<chrono::NaiveDate>,
    /// Last UTC day, inclusive.
    pub to: Option<chrono::NaiveDate>,
    /// One tenant only.
    pub tenant: Option<TenantId>,
}

/// A vault secret sealed under the keyring, with its public part if any.
#[derive(Debug, Clone)]
pub struct SealedSecret {
    /// Name, e.g. `receipt:rk_…` or `subject-index`.
    pub name: String,
    /// The sealed bytes.
    pub sealed: Sealed,
    /// Public part (the receipt public key), if any.
    pub public: Option<String>,
}

/// What `init` stores.
pub struct InitMaterial {
    /// The vault's suite: KEK version 1's.
    pub suite: Suite,
    /// KEK version 1, wrapped by the root key.
    pub kek_wrapped: Vec<u8>,
    /// The vault's secrets (receipt signing key, subject index key).
    pub secrets: Vec<SealedSecret>,
}

/// A code to create.
#[derive(Debug, Clone)]
pub struct NewCode {
    /// Its public id.
    pub code_id: CodeId,
    /// Hash of its secret.
    pub secret_hash: Vec<u8>,
    /// The funder it is for.
    pub funder_id: TenantId,
    /// The groups it releases.
    pub scopes: ScopeSet,
    /// Its lifetime in seconds, already within bounds
    /// (`dzl_types::rules::resolve_ttl`); capped at the consent's end.
    pub ttl_seconds: u32,
}

/// A code as created.
#[derive(Debug, Clone)]
pub struct CreatedCode {
    /// Its public id.
    pub code_id: CodeId,
    /// The row key the code embeds.
    pub row: i64,
    /// The funder.
    pub funder_id: TenantId,
    /// Groups.
    pub scopes: ScopeSet,
    /// Purpose.
    pub purpose: Purpose,
    /// Deadline.
    pub expires_at: DateTime<Utc>,
}

/// A deposit to store.
#[derive(Debug)]
pub struct NewDeposit {
    /// The call (platform, time).
    pub call: Call,
    /// `dep_…`.
    pub id: DepositId,
    /// The platform's reference.
    pub external_ref: String,
    /// Why.
    pub purpose: Purpose,
    /// The consent as JSON (no personal data).
    pub consent_json: String,
    /// The groups consented to.
    pub consent_scopes: ScopeSet,
    /// When the consent ends.
    pub consent_expires: DateTime<Utc>,
    /// Groups deposited.
    pub groups: ScopeSet,
    /// The suite its data keys, groups and subject index are of.
    pub suite: Suite,
    /// Blind index of the subject (for subject access).
    pub subject_index: String,
    /// The platform's pseudonym of the subject.
    pub subject_ref: SubjectRef,
    /// Data key of the non-identity groups, wrapped.
    pub records_key: Sealed,
    /// Sealed non-identity groups.
    pub records: Vec<(Group, Vec<u8>)>,
    /// Data key of the identity group, wrapped (kept in the identity store).
    pub identity_key: Sealed,
    /// Sealed identity group.
    pub identity: Vec<u8>,
    /// Codes to issue.
    pub codes: Vec<NewCode>,
}

/// A redemption to attempt.
pub struct RedeemAttempt {
    /// The code, parsed.
    pub code: dzl_types::AuthCode,
    /// The purpose asked for.
    pub purpose: Purpose,
    /// The id the redemption gets if it succeeds.
    pub redemption_id: RedemptionId,
    /// How many unknown codes the funder may try.
    pub limits: crate::rules::GuessLimits,
}

/// What a successful redemption releases: ciphertext only; the caller opens it.
#[derive(Debug)]
pub struct Redeemed {
    /// The redemption.
    pub redemption_id: RedemptionId,
    /// The code.
    pub code_id: CodeId,
    /// The deposit.
    pub deposit_id: DepositId,
    /// Its platform.
    pub platform_id: TenantId,
    /// Its reference.
    pub external_ref: String,
    /// Purpose.
    pub purpose: Purpose,
    /// Consent JSON.
    pub consent_json: String,
    /// Groups released.
    pub scopes: ScopeSet,
    /// When.
    pub redeemed_at: DateTime<Utc>,
    /// Data key of the non-identity groups, if any released.
    pub records_key: Option<Sealed>,
    /// The non-identity groups released.
    pub records: Vec<(Group, Vec<u8>)>,
    /// Identity key and group, if released.
    pub identity: Option<(Sealed, Vec<u8>)>,
}

/// One usage counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    /// UTC day, `YYYY-MM-DD`.
    pub day: String,
    /// Tenant.
    pub tenant_id: String,
    /// Operation.
    pub operation: String,
    /// `ok` or the refusal code.
    pub outcome: String,
    /// Calls.
    pub calls: u64,
}
