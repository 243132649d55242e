//! The CLI's configuration: where the vault lives. Layered through the
//! `config` crate, weakest first: the default `./dzl-data`, the TOML file
//! given by `--config` (`[store] data_dir = "..."`), then the environment
//! variable `DZL__STORE__DATA_DIR`; the `--data-dir` flag, applied by the
//! caller, beats them all. Unknown sections and keys are ignored, so one file
//! (and one `DZL__…` environment) can serve both the CLI and the server.
//!
//! The root key is deliberately not configuration: it comes only from
//! `DZL_ROOT_KEY_FILE` / `DZL_ROOT_KEY` (see `dzl_store::admin::RootKeySource`),
//! so it never sits in a config file next to the data it protects.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Data directory used when nothing else names one.
pub const DEFAULT_DATA_DIR: &str = "./dzl-data";
/// Prefix of environment overrides: `DZL__SECTION__KEY`.
pub const ENV_PREFIX: &str = "DZL";
/// Separator of environment overrides.
pub const ENV_SEPARATOR: &str = "__";

/// The CLI's settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Settings {
    /// `[store]`.
    pub store: StoreSettings,
}

/// `[store]`: where the vault's files are.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StoreSettings {
    /// The data directory (`vault.db`, `identity.db`). A relative path is
    /// relative to the working directory.
    pub data_dir: PathBuf,
}

impl Settings {
    /// Loads the settings from the default, `file` (if given; it must exist)
    /// and the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, config::ConfigError> {
        Self::from_sources(file, None)
    }

    /// Like [`Settings::load`], but reads environment overrides from `env`
    /// instead of the process environment when it is `Some` (for tests).
    pub fn from_sources(
        file: Option<&Path>,
        env: Option<HashMap<String, String>>,
    ) -> Result<Self, config::ConfigError> {
        let mut builder =
            config::Config::builder().set_default("store.data_dir", DEFAULT_DATA_DIR)?;
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
            .try_deserialize()
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
    fn a_missing_or_broken_file_is_an_error() {
        assert!(
            Settings::from_sources(Some(Path::new("/nonexistent/dzl.toml")), env(&[])).is_err()
        );
        let (_d, path) = file("[store\ndata_dir = 1");
        assert!(Settings::from_sources(Some(&path), env(&[])).is_err());
    }
}
