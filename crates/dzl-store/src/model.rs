//! What the store takes and gives: rows, inputs of the transactional
//! operations, and their results. Only ciphertext, wrapped keys and hashes.

use chrono::{DateTime, Utc};
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

/// A KEK as stored: wrapped by the root key.
#[derive(Debug, Clone)]
pub struct KekRow {
    /// Version, from 1.
    pub version: u32,
    /// State.
    pub state: KekState,
    /// Wrapped by the root key (empty once retired).
    pub wrapped: Vec<u8>,
    /// When made.
    pub created_at: DateTime<Utc>,
    /// Data keys it still wraps.
    pub data_keys: u64,
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
    pub secret_hash: [u8; 32],
    /// The funder it is for.
    pub funder_id: TenantId,
    /// The groups it releases.
    pub scopes: ScopeSet,
    /// Its lifetime; capped at the consent's end.
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
    /// When the consent ends.
    pub consent_expires: DateTime<Utc>,
    /// Groups deposited.
    pub groups: ScopeSet,
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
