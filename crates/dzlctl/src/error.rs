//! The CLI's one error type, [`CliError`], and the one place that maps the
//! layers below (settings, store, administration) onto it. Every error has a
//! stable machine-readable [`CliError::code`] (printed with `--json`) and an
//! [`ExitStatus`]: 1 for an operation that failed, 2 for arguments the vault
//! refused, 3 when the vault cannot be opened (not initialised, no usable or
//! the wrong root key). Messages never contain key material or secrets.

use std::path::PathBuf;

use dzl_store::admin::AdminError;
use dzl_store::StoreError;
use dzl_types::{ErrorCode, TenantId};

/// How the process ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// 0: done.
    Ok = 0,
    /// 1: the operation failed (store, configuration, I/O, refused).
    Failure = 1,
    /// 2: the command line was wrong (clap's code for usage errors).
    Usage = 2,
    /// 3: the vault cannot be opened: not initialised, or no usable / the
    /// wrong root key.
    Locked = 3,
}

impl ExitStatus {
    /// The process exit code.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// What can go wrong running a verb.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line could not be parsed (clap's message).
    #[error("{0}")]
    Usage(String),
    /// An argument the vault refuses (e.g. a name too long, scopes on a platform).
    #[error("{0}")]
    InvalidArgument(String),
    /// The configuration could not be loaded.
    #[error("configuration: {0}")]
    Config(String),
    /// The data directory holds no initialised vault.
    #[error("no initialised vault in {}: run `dzlctl init` first (or check --data-dir / DZL__STORE__DATA_DIR)", .dir.display())]
    NotInitialised {
        /// The data directory.
        dir: PathBuf,
    },
    /// `init` on a vault that already has a keyring.
    #[error("the vault in {} is already initialised; nothing was changed", .dir.display())]
    AlreadyInitialised {
        /// The data directory.
        dir: PathBuf,
    },
    /// The root key does not open the keyring.
    #[error("the root key does not open this vault's keyring: check DZL_ROOT_KEY_FILE / DZL_ROOT_KEY (root key fingerprint given: {fingerprint})")]
    WrongRootKey {
        /// Fingerprint of the key that was tried (not secret).
        fingerprint: String,
    },
    /// The root key could not be read (unset, unreadable, malformed).
    #[error("root key: {0}")]
    RootKey(String),
    /// No tenant has that id.
    #[error("no tenant {0} in this vault (see `dzlctl tenant list`)")]
    TenantNotFound(TenantId),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A cryptographic operation failed.
    #[error("cryptography: {0}")]
    Crypto(String),
    /// `keys retire` refused: the version is active, unknown or still needed.
    #[error("refused: {0}")]
    RetireRefused(dzl_store::rules::RetireRefusal),
    /// `keys rewrap` left data keys on old versions.
    #[error("{remaining} data keys are still on old key versions ({failed} could not be unwrapped{first}); nothing else is wrong with them: run `dzlctl keys rewrap` again, and retire no version they use")]
    RewrapIncomplete {
        /// Keys still on old versions.
        remaining: u64,
        /// Keys that could not be unwrapped.
        failed: u64,
        /// `; first: …` naming the first failure, or empty.
        first: String,
    },
    /// `keys reseal` left deposits in another suite than the vault's.
    #[error("{remaining} deposits are still sealed in another suite than the vault's ({failed} could not be opened{first}); they open as before: run `dzlctl keys reseal` again, and retire no version they use")]
    ResealIncomplete {
        /// Active deposits of other suites.
        remaining: u64,
        /// Deposits that could not be opened.
        failed: u64,
        /// `; first: …` naming the first failure, or empty.
        first: String,
    },
    /// `audit verify` found the chain broken.
    #[error("{}", broken(.0))]
    AuditChainBroken(dzl_audit::TrailError),
    /// A file the verb must create already exists.
    #[error("{} already exists; it is never overwritten: name a new file", .0.display())]
    FileExists(PathBuf),
    /// The new root key file could not be written.
    #[error("new root key: {0}")]
    NewRootKey(String),
    /// Writing the output failed.
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
}

/// `the audit chain is broken at entry N: …`, naming the chain when the
/// trail has several.
fn broken(e: &dzl_audit::TrailError) -> String {
    let chain = if e.chain == 1 {
        String::new()
    } else {
        format!(" {}", e.chain)
    };
    format!(
        "the audit chain{chain} is broken at entry {}: {}",
        e.seq(),
        e.error
    )
}

impl CliError {
    /// A stable, machine-readable code (`--json` prints it as `code`).
    pub fn code(&self) -> &'static str {
        match self {
            CliError::Usage(_) => "usage",
            CliError::InvalidArgument(_) => "invalid_argument",
            CliError::Config(_) => "config",
            CliError::NotInitialised { .. } => "not_initialised",
            CliError::AlreadyInitialised { .. } => "already_initialised",
            CliError::WrongRootKey { .. } => "wrong_root_key",
            CliError::RootKey(_) => "root_key_unavailable",
            CliError::TenantNotFound(_) => "tenant_not_found",
            CliError::Store(StoreError::Refused(code)) => code.as_str(),
            CliError::Store(StoreError::DuplicateExternalRef(_)) => {
                ErrorCode::DuplicateExternalRef.as_str()
            }
            CliError::Store(StoreError::Throttled(_)) => ErrorCode::RateLimited.as_str(),
            CliError::Store(StoreError::Rule(v)) => v.code.as_str(),
            CliError::Store(StoreError::Unavailable(_) | StoreError::Conflict(_)) => {
                "store_unavailable"
            }
            CliError::Store(StoreError::Corrupt(_)) => "store_corrupt",
            CliError::Store(StoreError::Invalid(_)) => "store_invalid",
            CliError::Crypto(_) => "crypto",
            CliError::RetireRefused(r) => r.code(),
            CliError::RewrapIncomplete { .. } => "rewrap_incomplete",
            CliError::ResealIncomplete { .. } => "reseal_incomplete",
            CliError::AuditChainBroken(_) => "audit_chain_broken",
            CliError::FileExists(_) => "file_exists",
            CliError::NewRootKey(_) => "new_root_key",
            CliError::Output(_) => "output",
        }
    }

    /// How the process ends for this error.
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            CliError::Usage(_) | CliError::InvalidArgument(_) => ExitStatus::Usage,
            CliError::NotInitialised { .. }
            | CliError::WrongRootKey { .. }
            | CliError::RootKey(_) => ExitStatus::Locked,
            CliError::Config(_)
            | CliError::AlreadyInitialised { .. }
            | CliError::TenantNotFound(_)
            | CliError::Store(_)
            | CliError::Crypto(_)
            | CliError::RetireRefused(_)
            | CliError::RewrapIncomplete { .. }
            | CliError::ResealIncomplete { .. }
            | CliError::AuditChainBroken(_)
            | CliError::FileExists(_)
            | CliError::NewRootKey(_)
            | CliError::Output(_) => ExitStatus::Failure,
        }
    }
}

impl From<config::ConfigError> for CliError {
    fn from(e: config::ConfigError) -> Self {
        CliError::Config(e.to_string())
    }
}

impl From<dzl_crypto::CryptoError> for CliError {
    fn from(e: dzl_crypto::CryptoError) -> Self {
        CliError::Crypto(e.to_string())
    }
}

/// Maps an administration error, knowing the data directory (for
/// `NotInitialised`) and the fingerprint of the root key tried (for
/// `WrongRootKey`).
pub(crate) fn from_admin(e: AdminError, dir: &std::path::Path, fingerprint: &str) -> CliError {
    match e {
        AdminError::Store(e) => CliError::Store(e),
        AdminError::WrongRootKey => CliError::WrongRootKey {
            fingerprint: fingerprint.to_owned(),
        },
        AdminError::NotInitialised => CliError::NotInitialised {
            dir: dir.to_owned(),
        },
        AdminError::Crypto(e) => e.into(),
        AdminError::RootKey(msg) => CliError::RootKey(msg),
        AdminError::Invalid(msg) => CliError::InvalidArgument(msg),
    }
}
