//! Vault administration: creating the keyring, adding tenants, rotating
//! keys, and loading the keyring and vault secrets with the root key. Shared
//! by `dzlctl`, `dzl-vault demo`, the server's start-up and the tests.
//!
//! Architecture invariant: the root key is only ever held in memory here and
//! in its key file or environment variable; nothing writes it to the store.

use chrono::{DateTime, Utc};
use dzl_crypto::{
    CryptoError, DataKey, Kek, Keyring, ReceiptSigner, RootKey, RootKeyHolder, SecretKey,
    SecureRandom, Suite, SystemRandom, WrappedKey, Zeroizing,
};
use dzl_types::{DepositId, Group, Purpose, ScopeSet, SubjectRef, TenantId};

use crate::{
    rules, Call, CertPin, DataKeyKind, Filing, InitMaterial, KekState, RekeyedKek, ResealedDeposit,
    RewrappedDataKey, RewrappedSecret, Sealed, SealedDeposit, SealedRecords, SealedSecret,
    SecretRef, Store, StoreError, TenantKind, TenantRow, TenantState,
};

/// Label of tenant signing secrets sealed under the keyring.
pub const TENANT_SECRET: &str = "tenant-secret";
/// Label of vault secrets sealed under the keyring.
pub const VAULT_SECRET: &str = "vault-secret";
/// Name of the subject-index key.
pub const SUBJECT_INDEX: &str = "subject-index";
/// Prefix of receipt signing keys' names.
pub const RECEIPT_PREFIX: &str = "receipt:";
/// Every group.
const ALL_GROUPS: ScopeSet = ScopeSet::ALL;
/// Default request rate limit (requests per second).
pub const DEFAULT_RATE_LIMIT: u32 = 1000;

/// What can go wrong administering the vault.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The root key does not open the keyring.
    #[error(
        "the root key does not open this vault's keyring (wrong DZL_ROOT_KEY / DZL_ROOT_KEY_FILE?)"
    )]
    WrongRootKey,
    /// The vault has no keyring yet.
    #[error("the vault is not initialised: run `dzlctl init`")]
    NotInitialised,
    /// Something cryptographic failed.
    #[error("cryptography: {0}")]
    Crypto(#[from] dzl_crypto::CryptoError),
    /// The root key could not be read.
    #[error("root key: {0}")]
    RootKey(String),
    /// A bad argument.
    #[error("{0}")]
    Invalid(String),
}

/// Result of administration.
pub type AdminResult<T> = Result<T, AdminError>;

/// Where the root key comes from. `Debug` never shows an inline key.
#[derive(Clone, Default)]
pub struct RootKeySource {
    /// `DZL_ROOT_KEY_FILE`.
    pub file: Option<std::path::PathBuf>,
    /// `DZL_ROOT_KEY` (base64).
    pub inline: Option<String>,
}

impl std::fmt::Debug for RootKeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootKeySource")
            .field("file", &self.file)
            .field("inline", &self.inline.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl RootKeySource {
    /// From the environment: `DZL_ROOT_KEY_FILE`, else `DZL_ROOT_KEY`;
    /// empty variables count as unset.
    pub fn from_env() -> Self {
        RootKeySource {
            file: std::env::var_os("DZL_ROOT_KEY_FILE")
                .filter(|v| !v.is_empty())
                .map(Into::into),
            inline: std::env::var("DZL_ROOT_KEY")
                .ok()
                .filter(|v| !v.trim().is_empty()),
        }
    }

    /// Reads the key. The file wins over the variable.
    pub fn load(&self) -> AdminResult<RootKey> {
        if let Some(path) = &self.file {
            let text =
                Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
                    AdminError::RootKey(format!("reading {}: {e}", path.display()))
                })?);
            return RootKey::from_base64(&text).map_err(|_| {
                AdminError::RootKey(format!(
                    "{} does not hold a base64 32-byte key",
                    path.display()
                ))
            });
        }
        if let Some(b64) = &self.inline {
            return RootKey::from_base64(b64).map_err(|_| {
                AdminError::RootKey("DZL_ROOT_KEY is not a base64 32-byte key".into())
            });
        }
        Err(AdminError::RootKey(
            "set DZL_ROOT_KEY_FILE or DZL_ROOT_KEY".into(),
        ))
    }
}

/// Writes a new root key to `path` with mode 0600, refusing to overwrite.
pub fn write_new_root_key(path: &std::path::Path) -> AdminResult<RootKey> {
    use std::io::Write as _;
    let rng = SystemRandom::new();
    let key = RootKey::generate(&rng)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(path)
        .map_err(|e| AdminError::RootKey(format!("creating {}: {e}", path.display())))?;
    let text = Zeroizing::new(key.to_base64());
    f.write_all(text.as_bytes())
        .and_then(|_| f.write_all(b"\n"))
        .and_then(|_| f.sync_all())
        .map_err(|e| AdminError::RootKey(format!("writing {}: {e}", path.display())))?;
    Ok(key)
}

/// The operator running a CLI verb, for the audit trail: `cli:<os user>`.
pub fn cli_actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}

/// Converts the crypto crate's wrapped bytes to the stored [`Sealed`].
pub fn sealed(w: WrappedKey) -> Sealed {
    Sealed {
        kek_version: w.kek_version,
        bytes: w.bytes,
    }
}

/// Converts a stored [`Sealed`] to the crypto crate's type.
pub fn wrapped(s: &Sealed) -> WrappedKey {
    WrappedKey {
        kek_version: s.kek_version,
        bytes: s.bytes.clone(),
    }
}

/// Creates an `intl` vault: [`init_as`] with [`Suite::Intl`].
pub fn init(store: &dyn Store, root: &dyn RootKeyHolder, actor: &str) -> AdminResult<String> {
    init_as(store, root, actor, Suite::Intl)
}

/// Creates the keyring (KEK version 1, of `suite`), the receipt signing
/// key (Ed25519 for `intl`, SM2 for `gm`) and the subject-index key.
/// Refused if the vault already has a keyring. Returns the root key's
/// fingerprint.
pub fn init_as(
    store: &dyn Store,
    root: &dyn RootKeyHolder,
    actor: &str,
    suite: Suite,
) -> AdminResult<String> {
    if store.is_initialised()? {
        return Err(AdminError::Invalid(
            "the vault is already initialised".into(),
        ));
    }
    let rng = SystemRandom::new();
    let kek = Kek::generate_for(1, suite, &rng)?;
    let kek_wrapped = root.wrap_kek(&kek)?;
    let keyring = Keyring::new(vec![kek], 1)?;
    let receipt = new_receipt_key(&keyring, suite, &rng)?;
    let index_key = SecretKey::generate(&rng)?;
    let index = SealedSecret {
        sealed: sealed(keyring.seal_secret(VAULT_SECRET, SUBJECT_INDEX, index_key.expose())?),
        public: None,
        name: SUBJECT_INDEX.into(),
    };
    store.initialise(
        actor,
        InitMaterial {
            suite,
            kek_wrapped,
            secrets: vec![receipt, index],
        },
    )?;
    Ok(root.fingerprint())
}

/// A fresh receipt signing key of `suite`'s algorithm, sealed under
/// `keyring`'s active version.
fn new_receipt_key(
    keyring: &Keyring,
    suite: Suite,
    rng: &dyn SecureRandom,
) -> AdminResult<SealedSecret> {
    let pkcs8 = ReceiptSigner::generate_pkcs8_for(suite, rng)?;
    let signer = ReceiptSigner::from_pkcs8_derived_id(&pkcs8)?;
    let name = format!("{RECEIPT_PREFIX}{}", signer.key_id());
    Ok(SealedSecret {
        sealed: sealed(keyring.seal_secret(VAULT_SECRET, &name, &pkcs8)?),
        public: Some(signer.public_key_b64url()),
        name,
    })
}

/// The keyring and vault secrets, opened with the root key.
pub struct VaultKeys {
    /// The KEKs.
    pub keyring: Keyring,
    /// Receipt signers, newest last; the last one signs.
    pub receipt_signers: Vec<ReceiptSigner>,
    /// The key of the subject blind index.
    pub subject_index: SecretKey,
}

impl std::fmt::Debug for VaultKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultKeys")
            .field("keyring", &self.keyring)
            .finish_non_exhaustive()
    }
}

impl VaultKeys {
    /// The vault's suite: its active KEK's. New deposits, code hashes,
    /// subject indexes, receipts, request signatures and audit entries
    /// follow it.
    pub fn suite(&self) -> Suite {
        self.keyring.active_suite()
    }

    /// The key that signs receipts: the newest of the vault's suite (the
    /// newest of all, should the vault hold none of its suite).
    pub fn receipt_signer(&self) -> Option<&ReceiptSigner> {
        let suite = self.suite();
        self.receipt_signers
            .iter()
            .rev()
            .find(|s| s.algorithm().suite() == suite)
            .or_else(|| self.receipt_signers.last())
    }

    /// A subject's blind index in the vault's suite.
    pub fn subject_index(&self, id_type: &str, id_number: &str) -> String {
        subject_index(self.suite(), &self.subject_index, id_type, id_number)
    }

    /// A subject's blind indexes in every suite, the vault's first: what
    /// subject access looks up, since deposits made before a change of
    /// suite (and erased ones, which a reseal cannot refile) keep the
    /// index of theirs.
    pub fn subject_indexes(&self, id_type: &str, id_number: &str) -> Vec<String> {
        let suite = self.suite();
        std::iter::once(suite)
            .chain(Suite::ALL.into_iter().filter(|s| *s != suite))
            .map(|s| subject_index(s, &self.subject_index, id_type, id_number))
            .collect()
    }
}

/// What a subject's blind index is computed over: its id type and number.
pub fn subject_key(id_type: &str, id_number: &str) -> String {
    format!("{id_type}\n{id_number}")
}

/// A subject's blind index in `suite` under the vault's index `key`.
pub fn subject_index(suite: Suite, key: &SecretKey, id_type: &str, id_number: &str) -> String {
    dzl_crypto::blind_index_for(
        suite,
        key.expose(),
        "subject",
        subject_key(id_type, id_number).as_bytes(),
    )
}

/// The pseudonym of a subject that `platform` is given with each deposit
/// (`sub_` and 32 hex characters), in `suite`: the same subject has
/// different references at different platforms.
pub fn subject_ref(
    suite: Suite,
    key: &SecretKey,
    platform: &TenantId,
    id_type: &str,
    id_number: &str,
) -> SubjectRef {
    let platform_ref = format!("{platform}\n{}", subject_key(id_type, id_number));
    let index =
        dzl_crypto::blind_index_for(suite, key.expose(), "subject-ref", platform_ref.as_bytes());
    SubjectRef::from_trusted(format!("sub_{}", &index[..32]))
}

/// A deposit's groups as the vault seals them, with their data keys.
#[derive(Debug)]
pub struct SealedGroups {
    /// The data key of the non-identity groups, wrapped by the active KEK.
    pub records_key: Sealed,
    /// The sealed non-identity groups.
    pub records: Vec<(Group, Vec<u8>)>,
    /// The identity group's own data key, wrapped by the active KEK.
    pub identity_key: Sealed,
    /// The sealed identity (`applicant`) group.
    pub identity: Vec<u8>,
}

/// Seals a deposit's groups (their JSON) as the vault does: two fresh data
/// keys of the vault's suite, the `applicant` group under its own; each
/// group bound to the deposit and its name; both keys wrapped by the
/// active KEK, bound to the deposit and their kind.
pub fn seal_groups(
    keyring: &Keyring,
    rng: &dyn SecureRandom,
    deposit: &DepositId,
    applicant: &[u8],
    device: Option<&[u8]>,
    risk: Option<&[u8]>,
) -> Result<SealedGroups, CryptoError> {
    let id = deposit.as_str();
    let identity_dk = keyring.generate_data_key(rng)?;
    let records_dk = keyring.generate_data_key(rng)?;
    let seal = |dk: &DataKey, g: Group, json: &[u8]| {
        dzl_crypto::seal_record(dk, id, g.as_str(), json, rng)
    };
    let mut records = Vec::new();
    for (g, json) in [(Group::Device, device), (Group::Risk, risk)] {
        if let Some(json) = json {
            records.push((g, seal(&records_dk, g, json)?));
        }
    }
    Ok(SealedGroups {
        identity: seal(&identity_dk, Group::Applicant, applicant)?,
        identity_key: sealed(keyring.wrap_data_key(
            &identity_dk,
            id,
            DataKeyKind::Identity.as_str(),
        )?),
        records_key: sealed(keyring.wrap_data_key(
            &records_dk,
            id,
            DataKeyKind::Records.as_str(),
        )?),
        records,
    })
}

/// A root key that does not open a KEK is the wrong one; a hardware module
/// that fails says so.
fn root_error(e: dzl_crypto::CryptoError) -> AdminError {
    match e {
        dzl_crypto::CryptoError::KeyModule => AdminError::RootKey(
            "the hardware module holding the root key failed to unwrap the keyring".into(),
        ),
        _ => AdminError::WrongRootKey,
    }
}

/// Opens the keyring with `root`.
pub fn load_keyring(store: &dyn Store, root: &dyn RootKeyHolder) -> AdminResult<Keyring> {
    let rows = store.kek_versions()?;
    if rows.is_empty() {
        return Err(AdminError::NotInitialised);
    }
    let mut keks = Vec::new();
    let mut active = None;
    for row in rows {
        if row.state == KekState::Retired {
            continue;
        }
        let kek = root
            .unwrap_kek(row.version, row.suite, &row.wrapped)
            .map_err(root_error)?;
        if row.state == KekState::Active {
            active = Some(row.version);
        }
        keks.push(kek);
    }
    let active =
        active.ok_or_else(|| StoreError::Corrupt("the keyring has no active version".into()))?;
    Ok(Keyring::new(keks, active)?)
}

/// Opens the keyring and the vault's secrets with `root`.
pub fn load_keys(store: &dyn Store, root: &dyn RootKeyHolder) -> AdminResult<VaultKeys> {
    let keyring = load_keyring(store, root)?;
    let mut receipt_signers = Vec::new();
    for s in store.receipt_keys()? {
        let pkcs8 = keyring.open_secret(VAULT_SECRET, &s.name, &wrapped(&s.sealed))?;
        receipt_signers.push(ReceiptSigner::from_pkcs8_derived_id(&pkcs8)?);
    }
    if receipt_signers.is_empty() {
        return Err(StoreError::Corrupt("no receipt signing key".into()).into());
    }
    let index = store
        .sealed_secret(SUBJECT_INDEX)?
        .ok_or_else(|| StoreError::Corrupt("no subject index key".into()))?;
    let bytes = keyring.open_secret(VAULT_SECRET, SUBJECT_INDEX, &wrapped(&index.sealed))?;
    Ok(VaultKeys {
        keyring,
        receipt_signers,
        subject_index: SecretKey::from_bytes(&bytes)?,
    })
}

/// A tenant to add.
#[derive(Debug, Clone)]
pub struct NewTenant {
    /// Kind.
    pub kind: TenantKind,
    /// Display name.
    pub name: String,
    /// Groups a funder is entitled to (all when absent).
    pub scopes: Option<ScopeSet>,
    /// Purposes a funder is entitled to (all when empty).
    pub purposes: Vec<Purpose>,
    /// Requests per second.
    pub rate_limit: Option<u32>,
    /// The client certificate it must present over mutual TLS, if pinned.
    pub cert_pin: Option<CertPin>,
}

impl NewTenant {
    /// A tenant of `kind` called `name`, with the defaults: every group and
    /// purpose (for a funder), the default rate limit, no certificate pin.
    pub fn new(kind: TenantKind, name: impl Into<String>) -> NewTenant {
        NewTenant {
            kind,
            name: name.into(),
            scopes: None,
            purposes: Vec::new(),
            rate_limit: None,
            cert_pin: None,
        }
    }
}

/// What a new tenant is given, once.
pub struct TenantCredentials {
    /// `ten_…`.
    pub tenant_id: TenantId,
    /// The key id it signs with.
    pub key_id: String,
    /// The signing secret. Shown once; stored only sealed.
    pub secret: Zeroizing<String>,
    /// Entitled groups (funders).
    pub scopes: Option<ScopeSet>,
    /// Entitled purposes.
    pub purposes: Vec<Purpose>,
    /// Requests per second.
    pub rate_limit: u32,
}

impl std::fmt::Debug for TenantCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantCredentials")
            .field("tenant_id", &self.tenant_id)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// Adds a tenant with a fresh signing secret sealed under the active KEK.
pub fn add_tenant(
    store: &dyn Store,
    keyring: &Keyring,
    actor: &str,
    t: NewTenant,
) -> AdminResult<TenantCredentials> {
    let name = t.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(AdminError::Invalid(
            "the name must be 1-100 characters without control characters".into(),
        ));
    }
    let rate_limit = t.rate_limit.unwrap_or(DEFAULT_RATE_LIMIT);
    if rate_limit == 0 {
        return Err(AdminError::Invalid(
            "the rate limit must be at least 1 request per second".into(),
        ));
    }
    let (scopes, purposes) = match t.kind {
        TenantKind::Funder => (
            Some(t.scopes.unwrap_or(ALL_GROUPS)),
            if t.purposes.is_empty() {
                Purpose::ALL.to_vec()
            } else {
                t.purposes
            },
        ),
        _ if t.scopes.is_some() || !t.purposes.is_empty() => {
            return Err(AdminError::Invalid(
                "only funders have --scopes and --purposes".into(),
            ))
        }
        _ => (None, Vec::new()),
    };
    let rng = SystemRandom::new();
    let id = TenantId::from_trusted(dzl_crypto::new_id("ten", &rng)?);
    let key_id = format!("k_{}", hex::encode(dzl_crypto::random_bytes::<12>(&rng)?));
    let secret = new_signing_secret(&rng)?;
    let sealed_secret =
        sealed(keyring.seal_secret(TENANT_SECRET, id.as_str(), secret.as_bytes())?);
    store.add_tenant(
        actor,
        TenantRow {
            id: id.clone(),
            kind: t.kind,
            name,
            key_id: key_id.clone(),
            secret: sealed_secret,
            scopes,
            purposes: purposes.clone(),
            rate_limit,
            state: TenantState::Active,
            created_at: Utc::now(),
            previous_secret: None,
            cert_pin: t.cert_pin,
        },
    )?;
    Ok(TenantCredentials {
        tenant_id: id,
        key_id,
        secret,
        scopes,
        purposes,
        rate_limit,
    })
}

/// A fresh tenant signing secret: 32 random bytes, base64url.
fn new_signing_secret(rng: &dyn SecureRandom) -> AdminResult<Zeroizing<String>> {
    use base64::Engine as _;
    let bytes = Zeroizing::new(dzl_crypto::random_bytes::<32>(rng)?);
    Ok(Zeroizing::new(
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(*bytes),
    ))
}

/// Opens a tenant's signing secret.
pub fn open_tenant_secret(keyring: &Keyring, t: &TenantRow) -> AdminResult<Zeroizing<Vec<u8>>> {
    Ok(keyring.open_secret(TENANT_SECRET, t.id.as_str(), &wrapped(&t.secret))?)
}

/// A tenant's previous secret, opened, and the instant it stops working.
pub type OpenPreviousSecret = (Zeroizing<Vec<u8>>, DateTime<Utc>);

/// Opens a tenant's previous signing secret if it still works at `now`
/// (`None` when it has none, or its overlap has ended; an ended one is not
/// even opened, since `keys retire` may have taken its key).
pub fn open_previous_tenant_secret(
    keyring: &Keyring,
    t: &TenantRow,
    now: DateTime<Utc>,
) -> AdminResult<Option<OpenPreviousSecret>> {
    match &t.previous_secret {
        Some(p) if rules::previous_secret_valid(p.valid_until, now) => Ok(Some((
            keyring.open_secret(TENANT_SECRET, t.id.as_str(), &wrapped(&p.secret))?,
            p.valid_until,
        ))),
        _ => Ok(None),
    }
}

/// What a tenant is given by a secret rotation, once.
pub struct RotatedSecret {
    /// The tenant.
    pub tenant_id: TenantId,
    /// Its key id (unchanged: both secrets sign under it).
    pub key_id: String,
    /// The new signing secret. Shown once; stored only sealed.
    pub secret: Zeroizing<String>,
    /// Until when the previous secret is still accepted.
    pub previous_valid_until: DateTime<Utc>,
}

impl std::fmt::Debug for RotatedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotatedSecret")
            .field("tenant_id", &self.tenant_id)
            .field("previous_valid_until", &self.previous_valid_until)
            .finish_non_exhaustive()
    }
}

/// Gives `tenant` a new signing secret sealed under the active KEK; the
/// current one keeps working for `overlap_seconds` from `call.now`.
pub fn rotate_tenant_secret(
    store: &dyn Store,
    keyring: &Keyring,
    call: &Call,
    tenant: &TenantId,
    overlap_seconds: u32,
) -> AdminResult<RotatedSecret> {
    let row = store
        .tenants()?
        .into_iter()
        .find(|t| &t.id == tenant)
        .ok_or_else(|| AdminError::Invalid(format!("no tenant {tenant}")))?;
    let secret = new_signing_secret(&SystemRandom::new())?;
    let sealed_secret =
        sealed(keyring.seal_secret(TENANT_SECRET, tenant.as_str(), secret.as_bytes())?);
    let until = rules::previous_secret_deadline(call.now, overlap_seconds);
    store.rotate_tenant_secret(call, tenant, sealed_secret, until)?;
    Ok(RotatedSecret {
        tenant_id: row.id,
        key_id: row.key_id,
        secret,
        previous_valid_until: until,
    })
}

/// Makes a new active KEK of the vault's suite; a running server picks it
/// up by itself. Returns the new version.
pub fn rotate_keys(store: &dyn Store, root: &dyn RootKeyHolder, actor: &str) -> AdminResult<u32> {
    let suite = load_keyring(store, root)?.active_suite();
    rotate_keys_to(store, root, actor, suite)
}

/// Makes a new active KEK of `suite`, which becomes the vault's suite: new
/// deposits, code hashes, receipts, request signatures and audit entries
/// follow it at once (a running server picks it up by itself), and old
/// deposits open as before. A vault holding no receipt key of `suite`
/// gets one in the same transaction. Returns the new version.
pub fn rotate_keys_to(
    store: &dyn Store,
    root: &dyn RootKeyHolder,
    actor: &str,
    suite: Suite,
) -> AdminResult<u32> {
    // Proves the root key first: a rotation under the wrong root key would
    // leave a keyring nobody can open.
    let keys = load_keys(store, root)?;
    let next = store.keks()?.iter().map(|k| k.version).max().unwrap_or(0) + 1;
    let rng = SystemRandom::new();
    let kek = Kek::generate_for(next, suite, &rng)?;
    let wrapped = root.wrap_kek(&kek)?;
    let mut secrets = Vec::new();
    if !keys
        .receipt_signers
        .iter()
        .any(|s| s.algorithm().suite() == suite)
    {
        let keyring = Keyring::new(vec![kek], next)?;
        secrets.push(new_receipt_key(&keyring, suite, &rng)?);
    }
    store.rotate_kek(actor, next, suite, wrapped, secrets)?;
    Ok(next)
}

/// How `keys rewrap` works.
#[derive(Debug, Clone, Copy)]
pub struct RewrapOptions {
    /// Data keys per store transaction.
    pub batch_size: usize,
    /// Whether to wait [`rules::rewrap_wait`] after a fresh rotation, so
    /// running servers have loaded the active version before keys move
    /// onto it.
    pub wait_for_servers: bool,
}

/// Data keys per transaction by default: small enough that a running
/// server's writes wait only milliseconds, large enough to amortise commits.
pub const DEFAULT_REWRAP_BATCH: usize = 2000;

impl Default for RewrapOptions {
    fn default() -> Self {
        RewrapOptions {
            batch_size: DEFAULT_REWRAP_BATCH,
            wait_for_servers: true,
        }
    }
}

/// A data key that could not be rewrapped (it stays where it was).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewrapFailure {
    /// Which key.
    pub kind: DataKeyKind,
    /// Its deposit.
    pub deposit_id: DepositId,
    /// The version it is wrapped by.
    pub kek_version: u32,
    /// Why (no key material).
    pub error: String,
}

/// What `keys rewrap` did.
#[derive(Debug, Clone, Default)]
pub struct RewrapReport {
    /// The version everything was moved onto.
    pub active_version: u32,
    /// Data keys found on other versions when it started.
    pub data_keys_found: u64,
    /// Data keys moved.
    pub data_keys_rewrapped: u64,
    /// Secrets (tenant, previous tenant, vault) moved.
    pub secrets_rewrapped: u64,
    /// Data keys still on other versions when it ended (failures, or keys a
    /// server with an old keyring wrote meanwhile: run it again).
    pub data_keys_remaining: u64,
    /// Keys that could not be unwrapped (at most [`MAX_REPORTED_FAILURES`]).
    pub failures: Vec<RewrapFailure>,
    /// Keys that could not be unwrapped, in all.
    pub failed: u64,
    /// Time spent moving data keys.
    pub elapsed: std::time::Duration,
}

/// How many failures a [`RewrapReport`] lists.
pub const MAX_REPORTED_FAILURES: usize = 10;

/// Refuses to move anything onto `active` unless it is still the active
/// version among `keks` (another rotation may have run); with `wait`,
/// first waits [`rules::rewrap_wait`] after its rotation, so running
/// servers have loaded it.
fn still_active(keks: &[crate::KekRow], active: u32, wait: bool) -> AdminResult<()> {
    let row = keks
        .iter()
        .find(|k| k.version == active)
        .ok_or_else(|| StoreError::Invalid(format!("key version {active} is not in the store")))?;
    if row.state != KekState::Active {
        return Err(StoreError::Invalid(format!(
            "key version {active} is no longer active (another rotation ran): run the command again"
        ))
        .into());
    }
    if wait {
        std::thread::sleep(rules::rewrap_wait(row.created_at, Utc::now()));
    }
    Ok(())
}

/// Passes over the old versions before `rewrap` stops looking for keys
/// written meanwhile under an old version.
const MAX_REWRAP_PASSES: usize = 5;

/// Moves every data key and sealed secret onto the keyring's active
/// version, in transactions of `opts.batch_size` data keys. Resumable: it
/// only ever looks at keys not on the active version. Reading and unwrapping
/// the next batch overlaps with the store writing the previous one.
/// `progress(done, total)` is called after each batch.
pub fn rewrap(
    store: &dyn Store,
    keyring: &Keyring,
    call: &Call,
    opts: RewrapOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> AdminResult<RewrapReport> {
    let active = keyring.active_version();
    let batch_size = opts.batch_size.max(1);
    let keks = store.keks()?;
    still_active(&keks, active, opts.wait_for_servers)?;
    let old_versions = |keks: &[crate::KekRow]| -> Vec<(u32, u64)> {
        keks.iter()
            .filter(|k| k.version != active && k.state != KekState::Retired)
            .map(|k| (k.version, k.data_keys))
            .collect()
    };
    let mut report = RewrapReport {
        active_version: active,
        data_keys_found: old_versions(&keks).iter().map(|(_, n)| n).sum(),
        ..RewrapReport::default()
    };
    // On record before any key moves, so an interrupted run is accounted for.
    store.record_action(
        call,
        "started",
        &format!(
            "rewrap onto version {active}: {} data keys on older versions",
            report.data_keys_found
        ),
    )?;
    let started = std::time::Instant::now();
    let mut failed_seen = std::collections::HashSet::new();
    let mut total = report.data_keys_found;
    progress(0, total);
    for _ in 0..MAX_REWRAP_PASSES {
        let versions = old_versions(&store.keks()?);
        let pending: u64 = versions.iter().map(|(_, n)| n).sum();
        // Keys written meanwhile under an old version join the total.
        total = total.max(report.data_keys_rewrapped + pending);
        if pending <= failed_seen.len() as u64 {
            break;
        }
        let moved = rewrap_pass(
            store,
            keyring,
            &versions,
            batch_size,
            &mut report,
            &mut failed_seen,
            &mut |done| progress(done, total),
        )?;
        if moved == 0 {
            break;
        }
    }
    report.elapsed = started.elapsed();
    report.failed = failed_seen.len() as u64;

    let secrets = rewrap_secret_list(store, keyring)?;
    report.data_keys_remaining = old_versions(&store.keks()?).iter().map(|(_, n)| n).sum();
    let detail = format!(
        "rewrap onto version {active}: {} data keys moved, {} secrets moved, {} data keys remain elsewhere",
        report.data_keys_rewrapped,
        secrets.len(),
        report.data_keys_remaining
    );
    report.secrets_rewrapped = store.rewrap_secrets(call, active, secrets, &detail)?;
    Ok(report)
}

/// Runs `read` on this thread and `write` on another: `read` hands each
/// batch it has made to `send` (which says false once the writer has
/// stopped), and the store writes batch n while `read` makes batch n+1.
/// `moved` counts what `write` reports. Returns the first error of either.
fn pipelined<B: Send>(
    moved: &std::sync::atomic::AtomicU64,
    write: impl Fn(B) -> AdminResult<u64> + Send,
    read: impl FnOnce(&mut dyn FnMut(B) -> bool) -> AdminResult<()>,
) -> AdminResult<()> {
    use std::sync::atomic::Ordering;
    use std::sync::mpsc;

    let (tx, rx) = mpsc::sync_channel::<B>(1);
    std::thread::scope(|scope| -> AdminResult<()> {
        let writer = scope.spawn(move || -> AdminResult<()> {
            for batch in rx {
                moved.fetch_add(write(batch)?, Ordering::Relaxed);
            }
            Ok(())
        });
        let reading = read(&mut |batch| tx.send(batch).is_ok());
        drop(tx);
        let written = writer.join().unwrap_or_else(|_| {
            Err(StoreError::Unavailable("the writing thread panicked".into()).into())
        });
        reading.and(written)
    })
}

/// One pass over every old version and both kinds of data key. Returns the
/// keys moved.
fn rewrap_pass(
    store: &dyn Store,
    keyring: &Keyring,
    versions: &[(u32, u64)],
    batch_size: usize,
    report: &mut RewrapReport,
    failed_seen: &mut std::collections::HashSet<(DataKeyKind, DepositId)>,
    progress: &mut dyn FnMut(u64),
) -> AdminResult<u64> {
    use std::sync::atomic::{AtomicU64, Ordering};

    let active = keyring.active_version();
    let moved = AtomicU64::new(0);
    let base = report.data_keys_rewrapped;
    let outcome = pipelined(
        &moved,
        |batch| Ok(store.rewrap_data_keys(active, batch)?),
        |send| {
            for &(version, _) in versions {
                for kind in DataKeyKind::ALL {
                    let mut after: Option<DepositId> = None;
                    loop {
                        let batch =
                            store.data_keys_on(kind, version, after.as_ref(), batch_size)?;
                        let Some(last) = batch.last() else { break };
                        after = Some(last.deposit_id.clone());
                        let full = batch.len() == batch_size;
                        let mut out = Vec::with_capacity(batch.len());
                        for k in batch {
                            match keyring.rewrap_data_key(
                                &wrapped(&k.wrapped),
                                k.deposit_id.as_str(),
                                kind.as_str(),
                            ) {
                                Ok(w) => out.push(RewrappedDataKey {
                                    kind,
                                    deposit_id: k.deposit_id,
                                    from_version: version,
                                    wrapped: sealed(w),
                                }),
                                Err(e) => {
                                    if failed_seen.insert((kind, k.deposit_id.clone()))
                                        && report.failures.len() < MAX_REPORTED_FAILURES
                                    {
                                        report.failures.push(RewrapFailure {
                                            kind,
                                            deposit_id: k.deposit_id,
                                            kek_version: version,
                                            error: e.to_string(),
                                        });
                                    }
                                }
                            }
                        }
                        if !out.is_empty() && !send(out) {
                            // The writer stopped: its error is reported.
                            return Ok(());
                        }
                        progress(base + moved.load(Ordering::Relaxed));
                        if !full {
                            break;
                        }
                    }
                }
            }
            Ok(())
        },
    );
    let moved = moved.into_inner();
    report.data_keys_rewrapped += moved;
    progress(report.data_keys_rewrapped);
    outcome?;
    Ok(moved)
}

/// Every sealed secret not on the active version, sealed anew.
fn rewrap_secret_list(store: &dyn Store, keyring: &Keyring) -> AdminResult<Vec<RewrappedSecret>> {
    let active = keyring.active_version();
    let mut out = Vec::new();
    let mut push = |secret: SecretRef, label: &str, id: &str, s: &Sealed| -> AdminResult<()> {
        if s.kek_version != active {
            out.push(RewrappedSecret {
                secret,
                from_version: s.kek_version,
                sealed: sealed(keyring.rewrap_secret(label, id, &wrapped(s))?),
            });
        }
        Ok(())
    };
    for t in store.tenants()? {
        push(
            SecretRef::Tenant(t.id.clone()),
            TENANT_SECRET,
            t.id.as_str(),
            &t.secret,
        )?;
        if let Some(p) = &t.previous_secret {
            push(
                SecretRef::PreviousTenant(t.id.clone()),
                TENANT_SECRET,
                t.id.as_str(),
                &p.secret,
            )?;
        }
    }
    for s in store.sealed_secrets()? {
        push(
            SecretRef::Vault(s.name.clone()),
            VAULT_SECRET,
            &s.name,
            &s.sealed,
        )?;
    }
    Ok(out)
}

/// How `keys reseal` works.
#[derive(Debug, Clone, Copy)]
pub struct ResealOptions {
    /// Deposits per store transaction.
    pub batch_size: usize,
    /// Whether to wait [`rules::rewrap_wait`] after a fresh rotation, so
    /// running servers have loaded the active version before deposits are
    /// sealed under it.
    pub wait_for_servers: bool,
}

/// Deposits per transaction by default: each carries its sealed groups, so
/// a batch is a few hundred kilobytes and a running server's writes wait
/// milliseconds.
pub const DEFAULT_RESEAL_BATCH: usize = 500;

/// A deposit that could not be resealed (it stays as it was, and opens as
/// before).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResealFailure {
    /// The deposit.
    pub deposit_id: DepositId,
    /// Why (no key material, no personal data).
    pub error: String,
}

/// What `keys reseal` did.
#[derive(Debug, Clone, Default)]
pub struct ResealReport {
    /// The suite deposits were resealed in: the vault's.
    pub suite: Option<Suite>,
    /// Active deposits of other suites when it started.
    pub deposits_found: u64,
    /// Deposits resealed.
    pub deposits_resealed: u64,
    /// Secrets (tenant, previous tenant, vault) moved onto the active
    /// version.
    pub secrets_rewrapped: u64,
    /// Active deposits of other suites when it ended (failures, or deposits
    /// a server with an old keyring made meanwhile: run it again).
    pub deposits_remaining: u64,
    /// Deposits that could not be resealed (at most
    /// [`MAX_REPORTED_FAILURES`]).
    pub failures: Vec<ResealFailure>,
    /// Deposits that could not be resealed, in all.
    pub failed: u64,
    /// Time spent resealing deposits.
    pub elapsed: std::time::Duration,
}

/// Active deposits of another suite than `suite`.
fn other_suites(store: &dyn Store, suite: Suite) -> AdminResult<u64> {
    Ok(store
        .deposit_suites()?
        .iter()
        .filter(|(s, _)| *s != suite)
        .map(|(_, n)| n)
        .sum())
}

/// Reseals every active deposit of another suite in the vault's suite: its
/// data keys are opened, its groups opened and sealed again under two
/// fresh data keys of the vault's suite wrapped by the active KEK, and its
/// subject index and reference computed again in that suite. Each batch
/// of `opts.batch_size` deposits is one transaction, and a deposit is
/// replaced only if nothing changed it since it was read
/// ([`rules::reseal_applies`]), so a running server keeps serving, and an
/// erasure meanwhile stays erased. Then every sealed secret moves onto
/// the active version, so the other suite's versions can be retired.
/// Resumable: it only ever looks at deposits of other suites. Codes keep
/// the hash they were issued with (the vault holds no code to hash again).
/// `progress(done, total)` is called after each batch.
pub fn reseal(
    store: &dyn Store,
    keys: &VaultKeys,
    call: &Call,
    opts: ResealOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> AdminResult<ResealReport> {
    let keyring = &keys.keyring;
    let (active, suite) = (keyring.active_version(), keys.suite());
    let batch_size = opts.batch_size.max(1);
    still_active(&store.keks()?, active, opts.wait_for_servers)?;
    let mut report = ResealReport {
        suite: Some(suite),
        deposits_found: other_suites(store, suite)?,
        ..ResealReport::default()
    };
    store.record_action(
        call,
        "started",
        &format!(
            "reseal in {suite} under version {active}: {} deposits of other suites",
            report.deposits_found
        ),
    )?;
    let started = std::time::Instant::now();
    let mut failed_seen = std::collections::HashSet::new();
    let mut total = report.deposits_found;
    progress(0, total);
    for _ in 0..MAX_REWRAP_PASSES {
        let pending = other_suites(store, suite)?;
        // Deposits made meanwhile by a server with an old keyring join.
        total = total.max(report.deposits_resealed + pending);
        if pending <= failed_seen.len() as u64 {
            break;
        }
        let moved = reseal_pass(
            store,
            keys,
            call,
            batch_size,
            &mut report,
            &mut failed_seen,
            &mut |done| progress(done, total),
        )?;
        if moved == 0 {
            break;
        }
    }
    report.elapsed = started.elapsed();
    report.failed = failed_seen.len() as u64;
    let secrets = rewrap_secret_list(store, keyring)?;
    report.deposits_remaining = other_suites(store, suite)?;
    let detail = format!(
        "reseal in {suite} under version {active}: {} deposits resealed, {} secrets moved, \
         {} deposits of other suites remain",
        report.deposits_resealed,
        secrets.len(),
        report.deposits_remaining
    );
    report.secrets_rewrapped = store.rewrap_secrets(call, active, secrets, &detail)?;
    Ok(report)
}

/// One walk over the deposits of other suites. Returns the deposits
/// resealed.
fn reseal_pass(
    store: &dyn Store,
    keys: &VaultKeys,
    call: &Call,
    batch_size: usize,
    report: &mut ResealReport,
    failed_seen: &mut std::collections::HashSet<DepositId>,
    progress: &mut dyn FnMut(u64),
) -> AdminResult<u64> {
    use std::sync::atomic::{AtomicU64, Ordering};

    let suite = keys.suite();
    let rng = SystemRandom::new();
    let moved = AtomicU64::new(0);
    let base = report.deposits_resealed;
    let outcome = pipelined(
        &moved,
        |batch| Ok(store.reseal_deposits(call, suite, batch)?),
        |send| {
            let mut after: Option<Filing> = None;
            loop {
                let batch = store.deposits_to_reseal(suite, after.as_ref(), batch_size)?;
                let Some(last) = batch.last() else { break };
                after = Some(last.filing.clone());
                let full = batch.len() == batch_size;
                let mut out = Vec::with_capacity(batch.len());
                for d in batch {
                    match reseal_deposit(keys, &rng, &d) {
                        Ok(r) => out.push(r),
                        Err(error) => {
                            let id = d.filing.deposit_id;
                            if failed_seen.insert(id.clone())
                                && report.failures.len() < MAX_REPORTED_FAILURES
                            {
                                report.failures.push(ResealFailure {
                                    deposit_id: id,
                                    error,
                                });
                            }
                        }
                    }
                }
                if !out.is_empty() && !send(out) {
                    // The writer stopped: its error is reported.
                    return Ok(());
                }
                progress(base + moved.load(Ordering::Relaxed));
                if !full {
                    break;
                }
            }
            Ok(())
        },
    );
    let moved = moved.into_inner();
    report.deposits_resealed += moved;
    progress(report.deposits_resealed);
    outcome?;
    Ok(moved)
}

/// `d` opened and sealed anew in the vault's suite, or why not (a message
/// with no key material and no personal data): what [`reseal`] hands the
/// store for each deposit.
pub fn reseal_deposit(
    keys: &VaultKeys,
    rng: &dyn SecureRandom,
    d: &SealedDeposit,
) -> Result<ResealedDeposit, String> {
    let keyring = &keys.keyring;
    let deposit = &d.filing.deposit_id;
    let id = deposit.as_str();
    let open = |key: &Sealed, kind: DataKeyKind, g: Group, env: &[u8]| {
        let dk = keyring
            .unwrap_data_key(&wrapped(key), id, kind.as_str())
            .map_err(|e| format!("its {} key: {e}", kind.as_str()))?;
        dzl_crypto::open_record(&dk, id, g.as_str(), env)
            .map_err(|e| format!("its {} group: {e}", g.as_str()))
    };
    let (identity_key, identity) = d.identity.as_ref().ok_or("it has no identity row")?;
    let applicant = open(
        identity_key,
        DataKeyKind::Identity,
        Group::Applicant,
        identity,
    )?;
    let subject: serde_json::Value = serde_json::from_slice(&applicant)
        .map_err(|_| "its applicant group is not JSON".to_owned())?;
    let field = |name: &str| {
        subject[name]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("its applicant group has no {name}"))
    };
    let (id_type, id_number) = (
        Zeroizing::new(field("id_type")?),
        Zeroizing::new(field("id_number")?),
    );
    let mut device = None;
    let mut risk = None;
    if let Some(r) = &d.records {
        for (g, env, out) in [
            (Group::Device, &r.device, &mut device),
            (Group::Risk, &r.risk, &mut risk),
        ] {
            if let Some(env) = env {
                *out = Some(open(&r.key, DataKeyKind::Records, g, env)?);
            }
        }
    }
    let groups = seal_groups(
        keyring,
        rng,
        deposit,
        &applicant,
        device.as_deref().map(|v| v.as_slice()),
        risk.as_deref().map(|v| v.as_slice()),
    )
    .map_err(|e| format!("sealing: {e}"))?;
    let suite = keys.suite();
    Ok(ResealedDeposit {
        read: d.clone(),
        suite,
        subject_index: subject_index(suite, &keys.subject_index, &id_type, &id_number),
        subject_ref: subject_ref(
            suite,
            &keys.subject_index,
            &d.platform_id,
            &id_type,
            &id_number,
        ),
        records: d.records.as_ref().map(|_| SealedRecords {
            key: groups.records_key,
            device: groups
                .records
                .iter()
                .find(|(g, _)| *g == Group::Device)
                .map(|(_, e)| e.clone()),
            risk: groups
                .records
                .iter()
                .find(|(g, _)| *g == Group::Risk)
                .map(|(_, e)| e.clone()),
        }),
        identity: (groups.identity_key, groups.identity),
    })
}

/// Rewraps every non-retired KEK from `old` onto `new` in one transaction.
/// Afterwards only `new` opens the keyring. Returns the versions rewrapped.
pub fn rekey_root(
    store: &dyn Store,
    old: &dyn RootKeyHolder,
    new: &dyn RootKeyHolder,
    call: &Call,
) -> AdminResult<Vec<u32>> {
    let mut keks = Vec::new();
    for row in store.keks()? {
        if row.state == KekState::Retired {
            continue;
        }
        let kek = old
            .unwrap_kek(row.version, row.suite, &row.wrapped)
            .map_err(root_error)?;
        keks.push(RekeyedKek {
            version: row.version,
            new_wrapped: new.wrap_kek(&kek)?,
            old_wrapped: row.wrapped,
        });
    }
    let versions: Vec<u32> = keks.iter().map(|k| k.version).collect();
    let detail = format!(
        "keyring versions {} rewrapped under root key {} (was {})",
        versions
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(","),
        new.fingerprint(),
        old.fingerprint()
    );
    store.rekey_root(call, keks, &detail)?;
    // Proves the new key opens what was just written.
    load_keyring(store, new)?;
    Ok(versions)
}

/// A random source that can be shared.
pub fn rng() -> impl SecureRandom {
    SystemRandom::new()
}
