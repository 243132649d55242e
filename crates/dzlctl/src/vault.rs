//! Opening the vault the way every verb after `init` does: a [`Context`]
//! (data directory, settings, root key source, audit actor, clock) resolved
//! once from flags, configuration and environment, and a [`Vault`] — the
//! SQLite store plus the keyring opened with the root key.
//!
//! Invariants:
//! * Opening never creates anything: a data directory without `vault.db` is
//!   reported as not initialised, not silently turned into an empty store.
//!   Only `init` creates a store.
//! * Every verb that opens a [`Vault`] first proves the root key opens the
//!   keyring, even verbs that do not decrypt anything (`tenant list`,
//!   `suspend`): holding the root key is what makes someone an operator of
//!   this vault, and a wrong key or data directory is caught before anything
//!   is read or changed.
//! * The root key is held in memory only; nothing here prints or logs it
//!   (only its fingerprint).

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use dzl_crypto::{Keyring, RootKeyHolder};
use dzl_store::admin::{self, RootKeySource};
use dzl_store::{Call, SqliteStore, Store};

use crate::error::{from_admin, CliError};
use crate::settings::Settings;

/// Everything a verb needs to know about where and as whom it runs.
#[derive(Clone)]
pub struct Context {
    /// The data directory.
    pub data_dir: PathBuf,
    /// Where the root key comes from when it is a file or a variable.
    pub root_key: RootKeySource,
    /// The `pkcs11:` URI of a root key in a hardware module
    /// (`[root_key] pkcs11`, `DZL__ROOT_KEY__PKCS11`, or `init --root-key`).
    pub root_pkcs11: Option<String>,
    /// Who is acting, for the audit trail (`cli:<user>`).
    pub actor: String,
    /// Retention, secret overlap and the rest of the configuration.
    pub settings: Settings,
    /// The clock's reading for this run when injected (the hidden `--now`
    /// flag, for tests only); `None`: the system clock.
    pub now: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for Context {
    // By hand: `RootKeySource` may hold the root key itself (`DZL_ROOT_KEY`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("data_dir", &self.data_dir)
            .field("root_key_file", &self.root_key.file)
            .field("root_key_inline", &self.root_key.inline.is_some())
            .field("root_key_pkcs11", &self.root_pkcs11)
            .field("actor", &self.actor)
            .field("now", &self.now)
            .finish()
    }
}

impl Context {
    /// A context for `data_dir`, taking the root key from the environment
    /// (`DZL_ROOT_KEY_FILE`, else `DZL_ROOT_KEY`) and the actor from the OS
    /// user.
    /// An empty variable counts as unset.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let mut root_key = RootKeySource::from_env();
        root_key.file = root_key.file.filter(|f| !f.as_os_str().is_empty());
        root_key.inline = root_key.inline.filter(|k| !k.trim().is_empty());
        let data_dir = data_dir.into();
        let mut settings = Settings::defaults();
        settings.store.data_dir = data_dir.clone();
        Context {
            data_dir,
            root_key,
            root_pkcs11: None,
            actor: admin::cli_actor(),
            settings,
            now: None,
        }
    }

    /// The context of a command line: `--config` and `--data-dir` resolved
    /// through [`Settings`], the root key from the environment.
    pub fn from_args(config: Option<&Path>, data_dir: Option<PathBuf>) -> Result<Self, CliError> {
        let settings = Settings::load(config)?.with_data_dir(data_dir);
        let mut ctx = Context::new(settings.store.data_dir.clone());
        ctx.root_pkcs11 = settings.root_key.pkcs11.clone();
        ctx.settings = settings;
        Ok(ctx)
    }

    /// The time of this run: the injected clock, else the system clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.now.unwrap_or_else(Utc::now)
    }

    /// An operator action `operation` by this context's actor, now, for the
    /// store's audit trail.
    pub fn call(&self, operation: &'static str) -> Call {
        Call {
            actor: self.actor.clone(),
            operation,
            now: self.now(),
        }
    }

    /// Loads the root key: opens it in its hardware module when a
    /// `pkcs11:` URI is configured, else reads the file or variable. Both
    /// at once is refused: which key is meant would be a guess.
    pub fn load_root_key(&self) -> Result<Box<dyn RootKeyHolder>, CliError> {
        match &self.root_pkcs11 {
            Some(uri) => {
                if self.root_key.file.is_some() || self.root_key.inline.is_some() {
                    return Err(CliError::RootKey(
                        "both a pkcs11: root key and DZL_ROOT_KEY_FILE / DZL_ROOT_KEY are set: \
                         unset the one not meant"
                            .into(),
                    ));
                }
                Ok(Box::new(open_pkcs11(uri, false)?.0))
            }
            None => Ok(Box::new(
                self.root_key
                    .load()
                    .map_err(|e| from_admin(e, &self.data_dir, ""))?,
            )),
        }
    }

    /// Whether there is a store to open: a file in the data directory, or a
    /// PostgreSQL URL (the connection then tells).
    pub fn store_exists(&self) -> bool {
        self.settings.store.url.is_some() || dzl_store::sqlite::vault_db(&self.data_dir).is_file()
    }

    /// Opens the configured store: PostgreSQL when `store.url` is set, else
    /// SQLite in the data directory.
    pub fn open_store(&self) -> Result<Box<dyn Store>, CliError> {
        match &self.settings.store.url {
            Some(url) => Ok(Box::new(dzl_store_pg::connect(
                url,
                dzl_store_pg::PgOptions {
                    ca_file: self.settings.store.ca_file.clone(),
                    // One command writes one thing at a time: one writer,
                    // so at most one audit chain to claim or open.
                    writers: 1,
                    ..Default::default()
                },
            )?)),
            None => Ok(Box::new(SqliteStore::open(&self.data_dir)?)),
        }
    }

    /// A warning when the root key file can be read by group or others.
    pub fn root_key_file_warning(&self) -> Option<String> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let path = self.root_key.file.as_ref()?;
            let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
            (mode & 0o077 != 0).then(|| {
                format!(
                    "the root key file {} has mode {mode:04o}: anyone in its group or others \
                     may read it; run `chmod 600 {}`",
                    path.display(),
                    path.display()
                )
            })
        }
        #[cfg(not(unix))]
        {
            None
        }
    }
}

/// Opens the root key a `pkcs11:` URI names, generating it in the token
/// first when `create` is set and it is absent. Returns whether it was made.
pub fn open_pkcs11(uri: &str, create: bool) -> Result<(dzl_hsm::Pkcs11Root, bool), CliError> {
    let parsed = dzl_hsm::Pkcs11Uri::parse(uri).map_err(|e| CliError::RootKey(e.to_string()))?;
    let opened = if create {
        dzl_hsm::Pkcs11Root::open_or_create(&parsed)
    } else {
        dzl_hsm::Pkcs11Root::open(&parsed).map(|r| (r, false))
    };
    opened.map_err(|e| CliError::RootKey(e.to_string()))
}

/// An initialised vault, opened with a root key that opens its keyring, by
/// the operator of a [`Context`].
pub struct Vault {
    store: Box<dyn Store>,
    root: Box<dyn RootKeyHolder>,
    keyring: Keyring,
    data_dir: PathBuf,
    actor: String,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("data_dir", &self.data_dir)
            .field("root_key_fingerprint", &self.root.fingerprint())
            .field("keyring", &self.keyring)
            .field("actor", &self.actor)
            .finish()
    }
}

impl Vault {
    /// Opens the vault of `ctx`: refuses a data directory without an
    /// initialised store ([`CliError::NotInitialised`]) and a root key that
    /// does not open the keyring ([`CliError::WrongRootKey`]).
    pub fn open(ctx: &Context) -> Result<Self, CliError> {
        let not_initialised = || CliError::NotInitialised {
            dir: ctx.data_dir.clone(),
        };
        if !ctx.store_exists() {
            return Err(not_initialised());
        }
        let store = ctx.open_store()?;
        if !store.is_initialised()? {
            return Err(not_initialised());
        }
        let root = ctx.load_root_key()?;
        let keyring = admin::load_keyring(&*store, &*root)
            .map_err(|e| from_admin(e, &ctx.data_dir, &root.fingerprint()))?;
        Ok(Vault {
            store,
            root,
            keyring,
            data_dir: ctx.data_dir.clone(),
            actor: ctx.actor.clone(),
        })
    }

    /// The store.
    pub fn store(&self) -> &dyn Store {
        &*self.store
    }

    /// The keyring, opened.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Who is acting, for the audit trail.
    pub fn actor(&self) -> &str {
        &self.actor
    }

    /// The root key (for verbs that rewrap the keyring).
    pub fn root_key(&self) -> &dyn RootKeyHolder {
        &*self.root
    }
}
