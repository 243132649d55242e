//! Vault administration: creating the keyring, adding tenants, rotating
//! keys, and loading the keyring and vault secrets with the root key. Shared
//! by `dzlctl`, `dzl-vault demo`, the server's start-up and the tests.
//!
//! Architecture invariant: the root key is only ever held in memory here and
//! in its key file or environment variable; nothing writes it to the store.

use chrono::Utc;
use dzl_crypto::{
    Kek, Keyring, ReceiptSigner, RootKey, SecretKey, SecureRandom, SystemRandom, WrappedKey,
    Zeroizing,
};
use dzl_types::{Purpose, ScopeSet, TenantId};

use crate::{
    InitMaterial, KekState, Sealed, SealedSecret, Store, StoreError, TenantKind, TenantRow,
    TenantState,
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

fn sealed(w: WrappedKey) -> Sealed {
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

/// Creates the keyring (KEK version 1), the receipt signing key and the
/// subject-index key. Refused if the vault already has a keyring.
pub fn init(store: &dyn Store, root: &RootKey, actor: &str) -> AdminResult<String> {
    if store.is_initialised()? {
        return Err(AdminError::Invalid(
            "the vault is already initialised".into(),
        ));
    }
    let rng = SystemRandom::new();
    let kek = Kek::generate(1, &rng)?;
    let kek_wrapped = root.wrap_kek(&kek)?;
    let keyring = Keyring::new(vec![kek], 1)?;
    let pkcs8 = ReceiptSigner::generate_pkcs8(&rng)?;
    let signer = ReceiptSigner::from_pkcs8_derived_id(&pkcs8)?;
    let receipt_name = format!("{RECEIPT_PREFIX}{}", signer.key_id());
    let receipt = SealedSecret {
        sealed: sealed(keyring.seal_secret(VAULT_SECRET, &receipt_name, &pkcs8)?),
        public: Some(signer.public_key_b64url()),
        name: receipt_name,
    };
    let index_key = SecretKey::generate(&rng)?;
    let index = SealedSecret {
        sealed: sealed(keyring.seal_secret(VAULT_SECRET, SUBJECT_INDEX, index_key.expose())?),
        public: None,
        name: SUBJECT_INDEX.into(),
    };
    store.initialise(
        actor,
        InitMaterial {
            kek_wrapped,
            secrets: vec![receipt, index],
        },
    )?;
    Ok(root.fingerprint())
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

/// Opens the keyring with `root`.
pub fn load_keyring(store: &dyn Store, root: &RootKey) -> AdminResult<Keyring> {
    let rows = store.keks()?;
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
            .unwrap_kek(row.version, &row.wrapped)
            .map_err(|_| AdminError::WrongRootKey)?;
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
pub fn load_keys(store: &dyn Store, root: &RootKey) -> AdminResult<VaultKeys> {
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
    let secret_bytes: [u8; 32] = dzl_crypto::random_bytes(&rng)?;
    use base64::Engine as _;
    let secret =
        Zeroizing::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret_bytes));
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

/// Opens a tenant's signing secret.
pub fn open_tenant_secret(keyring: &Keyring, t: &TenantRow) -> AdminResult<Zeroizing<Vec<u8>>> {
    Ok(keyring.open_secret(TENANT_SECRET, t.id.as_str(), &wrapped(&t.secret))?)
}

/// Makes a new active KEK; a running server picks it up by itself. Returns
/// the new version.
pub fn rotate_keys(store: &dyn Store, root: &RootKey, actor: &str) -> AdminResult<u32> {
    // Proves the root key first: a rotation under the wrong root key would
    // leave a keyring nobody can open.
    load_keyring(store, root)?;
    let next = store.keks()?.iter().map(|k| k.version).max().unwrap_or(0) + 1;
    let rng = SystemRandom::new();
    let kek = Kek::generate(next, &rng)?;
    store.rotate_kek(actor, next, root.wrap_kek(&kek)?)?;
    Ok(next)
}

/// A random source that can be shared.
pub fn rng() -> impl SecureRandom {
    SystemRandom::new()
}
