//! The CLI's configuration: where the vault lives, how long deposits are
//! kept, how long a rotated tenant secret keeps working. Layered through the
//! `config` crate, weakest first: the defaults, the TOML file given by
//! `--config` (`[store] data_dir`, `[retention] deposit_days`,
//! `[tenants] secret_overlap_seconds`), then the environment variables
//! `DZL__SECTION__KEY`; the `--data-dir` flag, applied by the caller,
//! beats them all. Unknown sections and keys are ignored, so one file
//! (and one `DZL__…` environment) can serve both the CLI and the server.
//!
//! The root key itself is deliberately not configuration: a key file or
//! variable comes only from `DZL_ROOT_KEY_FILE` / `DZL_ROOT_KEY` (see
//! `dzl_store::admin::RootKeySource`), so it never sits in a config file
//! next to the data it protects. A root key in a hardware module is named
//! by `[root_key] pkcs11` (`DZL__ROOT_KEY__PKCS11`), a `pkcs11:` URI that
//! says where the key is and where its PIN is read from, and holds no
//! secret (see `dzl_hsm::uri`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Data directory used when nothing else names one.
pub const DEFAULT_DATA_DIR: &str = "./dzl-data";
/// Prefix of environment overrides: `DZL__SECTION__KEY`.
pub const ENV_PREFIX: &str = "DZL";
/// Separator of environment overrides.
pub const ENV_SEPARATOR: &str = "__";

/// Days a deposit is kept before `purge` crypto-shreds it, by default.
pub const DEFAULT_DEPOSIT_DAYS: u32 = 365;
/// Seconds a tenant's previous secret keeps working after
/// `tenant rotate-secret`, by default (one day).
pub const DEFAULT_SECRET_OVERLAP_SECONDS: u32 = 86_400;
/// The longest overlap allowed (30 days).
pub const MAX_SECRET_OVERLAP_SECONDS: u32 = 30 * 86_400;

/// The CLI's settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Settings {
    /// `[store]`.
    pub store: StoreSettings,
    /// `[retention]`.
    pub retention: RetentionSettings,
    /// `[tenants]`.
    pub tenants: TenantSettings,
    /// `[root_key]`.
    #[serde(default)]
    pub root_key: RootKeySettings,
}

/// `[root_key]`: a root key in a hardware security module.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct RootKeySettings {
    /// The `pkcs11:` URI of the root key (the server reads the same key).
    #[serde(default)]
    pub pkcs11: Option<String>,
}

/// `[retention]`: how long the vault keeps deposits.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RetentionSettings {
    /// Days after its creation a deposit is crypto-shredded by `purge`
    /// (1 or more; default 365).
    pub deposit_days: u32,
}

/// `[tenants]`: tenant credentials.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TenantSettings {
    /// Seconds the previous secret keeps working after
    /// `tenant rotate-secret` (0 to 2592000; default 86400).
    pub secret_overlap_seconds: u32,
}

/// `[store]`: where the vault's files are.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StoreSettings {
    /// The data directory (`vault.db`, `identity.db`). A relative path is
    /// relative to the working directory.
    pub data_dir: PathBuf,
    /// `postgres://…`: the vault lives in PostgreSQL instead (as for the
    /// server, `DZL__STORE__URL`).
    #[serde(default)]
    pub url: Option<String>,
    /// PEM CA certificates PostgreSQL's server certificate must chain to
    /// (with `sslmode=require` in the URL; `DZL__STORE__CA_FILE`).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

impl Settings {
    /// Loads the settings from the default, `file` (if given; it must exist)
    /// and the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, config::ConfigError> {
        Self::from_sources(file, None)
    }

    /// The defaults alone (no file, no environment).
    pub fn defaults() -> Self {
        Settings {
            store: StoreSettings {
                url: None,
                ca_file: None,
                data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            },
            retention: RetentionSettings {
                deposit_days: DEFAULT_DEPOSIT_DAYS,
            },
            tenants: TenantSettings {
                secret_overlap_seconds: DEFAULT_SECRET_OVERLAP_SECONDS,
            },
            root_key: RootKeySettings::default(),
        }
    }

    /// Like [`Settings::load`], but reads environment overrides from `env`
    /// instead of the process environment when it is `Some` (for tests).
    pub fn from_sources(
        file: Option<&Path>,
        env: Option<HashMap<String, String>>,
    ) -> Result<Self, config::ConfigError> {
        let mut builder = config::Config::builder()
            .set_default("store.data_dir", DEFAULT_DATA_DIR)?
            .set_default("retention.deposit_days", DEFAULT_DEPOSIT_DAYS)?
            .set_default(
                "tenants.secret_overlap_seconds",
                DEFAULT_SECRET_OVERLAP_SECONDS,
            )?;
        if let Some(file) = file {
            builder = builder.add_source(
                config::File::from(file)
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        builder
            .add_source(
                config::Environment::with_prefix(ENV_PREFIX)
                    .prefix_separator(ENV_SEPARATOR)
                    .separator(ENV_SEPARATOR)
                    .ignore_empty(true)
                    .source(env),
            )
            .build()?
            .try_deserialize::<Settings>()?
            .validated()
    }

    fn validated(self) -> Result<Self, config::ConfigError> {
        if self.retention.deposit_days == 0 {
            return Err(config::ConfigError::Message(
                "retention.deposit_days must be at least 1".into(),
            ));
        }
        if self.tenants.secret_overlap_seconds > MAX_SECRET_OVERLAP_SECONDS {
            return Err(config::ConfigError::Message(format!(
                "tenants.secret_overlap_seconds must be at most {MAX_SECRET_OVERLAP_SECONDS}"
            )));
        }
        Ok(self)
    }

    /// The settings with `data_dir` replacing the configured directory when
    /// given (the `--data-dir` flag).
    pub fn with_data_dir(mut self, data_dir: Option<PathBuf>) -> Self {
        if let Some(dir) = data_dir {
            self.store.data_dir = dir;
        }
        self
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dzl.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn default_is_dzl_data() {
        let s = Settings::from_sources(None, env(&[])).unwrap();
        assert_eq!(s.store.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
    }

    #[test]
    fn file_then_env_then_flag() {
        let (_d, path) = file("[store]\ndata_dir = \"/from/file\"\n\n[server]\nbind = \"x\"\n");
        let from_file = Settings::from_sources(Some(&path), env(&[])).unwrap();
        assert_eq!(from_file.store.data_dir, PathBuf::from("/from/file"));

        let from_env =
            Settings::from_sources(Some(&path), env(&[("DZL__STORE__DATA_DIR", "/from/env")]))
                .unwrap();
        assert_eq!(from_env.store.data_dir, PathBuf::from("/from/env"));

        let from_flag = from_env.with_data_dir(Some("/from/flag".into()));
        assert_eq!(from_flag.store.data_dir, PathBuf::from("/from/flag"));
    }

    #[test]
    fn unrelated_and_empty_variables_are_ignored() {
        let s = Settings::from_sources(
            None,
            env(&[
                ("DZL_ROOT_KEY_FILE", "/k"),
                ("DZL__STORE__DATA_DIR", ""),
                ("DZL__SERVER__BIND", "127.0.0.1:0"),
            ]),
        )
        .unwrap();
        assert_eq!(s.store.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
    }

    #[test]
    fn retention_and_overlap_have_defaults_and_are_checked() {
        let s = Settings::from_sources(None, env(&[])).unwrap();
        assert_eq!(s.retention.deposit_days, DEFAULT_DEPOSIT_DAYS);
        assert_eq!(
            s.tenants.secret_overlap_seconds,
            DEFAULT_SECRET_OVERLAP_SECONDS
        );
        let (_d, path) =
            file("[retention]\ndeposit_days = 30\n[tenants]\nsecret_overlap_seconds = 0\n");
        let s = Settings::from_sources(Some(&path), env(&[])).unwrap();
        assert_eq!(s.retention.deposit_days, 30);
        assert_eq!(s.tenants.secret_overlap_seconds, 0);
        let s =
            Settings::from_sources(None, env(&[("DZL__RETENTION__DEPOSIT_DAYS", "7")])).unwrap();
        assert_eq!(s.retention.deposit_days, 7);
        assert!(
            Settings::from_sources(None, env(&[("DZL__RETENTION__DEPOSIT_DAYS", "0")])).is_err()
        );
        assert!(Settings::from_sources(
            None,
            env(&[("DZL__TENANTS__SECRET_OVERLAP_SECONDS", "99999999")])
        )
        .is_err());
    }

    #[test]
    fn the_pkcs11_root_key_is_configured_by_file_or_environment() {
        let uri = "pkcs11:token=t;object=k?module-path=/m.so&pin-source=env:PIN";
        assert_eq!(
            Settings::from_sources(None, env(&[]))
                .unwrap()
                .root_key
                .pkcs11,
            None
        );
        let (_d, path) = file(&format!("[root_key]\npkcs11 = \"{uri}\"\n"));
        let s = Settings::from_sources(Some(&path), env(&[])).unwrap();
        assert_eq!(s.root_key.pkcs11.as_deref(), Some(uri));
        let s = Settings::from_sources(None, env(&[("DZL__ROOT_KEY__PKCS11", uri)])).unwrap();
        assert_eq!(s.root_key.pkcs11.as_deref(), Some(uri));
    }

    #[test]
    fn a_missing_or_broken_file_is_an_error() {
        assert!(
            Settings::from_sources(Some(Path::new("/nonexistent/dzl.toml")), env(&[])).is_err()
        );
        let (_d, path) = file("[store\ndata_dir = 1");
        assert!(Settings::from_sources(Some(&path), env(&[])).is_err());
    }
}
