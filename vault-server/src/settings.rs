//! Configuration: a TOML file (optional) layered under `DZL__SECTION__KEY`
//! environment variables, through the `config` crate. Every value has a
//! default, so `dzl-vault serve` needs none of it.

use std::path::PathBuf;

use serde::Deserialize;

/// Everything the server can be told.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// HTTP listener.
    pub server: ServerSettings,
    /// Storage.
    pub store: StoreSettings,
    /// Authorization codes.
    pub codes: CodeSettings,
    /// Query monitoring.
    pub limits: LimitSettings,
    /// TLS and mutual TLS.
    pub tls: crate::tls::TlsSettings,
    /// Where the root key is, when it is in a hardware module.
    pub root_key: RootKeySettings,
    /// `[retention]`: read by `dzlctl purge`; the server ignores it, so one
    /// file can configure both.
    pub retention: serde::de::IgnoredAny,
    /// `[tenants]`: read by `dzlctl tenant rotate-secret`; ignored here.
    pub tenants: serde::de::IgnoredAny,
}

/// `[root_key]`: the root key in a hardware security module. Without it the
/// root key comes from `DZL_ROOT_KEY_FILE` / `DZL_ROOT_KEY`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RootKeySettings {
    /// The key's `pkcs11:` URI (RFC 7512: token, object, module-path,
    /// pin-source=file:… or env:…); `DZL__ROOT_KEY__PKCS11`. It names the
    /// key and where the PIN is read from; it holds no secret.
    pub pkcs11: Option<String>,
}

/// HTTP listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to bind; loopback by default. Port 0 picks a free port.
    pub bind: String,
    /// Worker threads (0: one per core).
    pub workers: usize,
    /// Longest a client may take to send a request's head, and again its
    /// body, in milliseconds; past it the answer is 408 and the connection
    /// is closed.
    pub request_timeout_ms: u64,
    /// Longest a TLS handshake may take, in milliseconds.
    pub tls_handshake_timeout_ms: u64,
    /// Connections served at once, over all workers (0: as many as the
    /// file-handle limit leaves room for). Above that limit the server
    /// refuses to start.
    pub max_connections: usize,
}

/// Storage: SQLite in `data_dir` (the default), or PostgreSQL at `url`.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSettings {
    /// The SQLite data directory.
    pub data_dir: PathBuf,
    /// `postgres://…`: serve from PostgreSQL instead (replicas share it).
    pub url: Option<String>,
    /// PostgreSQL connections per replica for reads.
    pub pool_size: u32,
    /// PostgreSQL writer connections per replica, each with its own audit
    /// chain.
    pub writers: u32,
    /// Longest a PostgreSQL statement may run, in milliseconds.
    pub statement_timeout_ms: u64,
    /// PEM CA certificates PostgreSQL's server certificate must chain to;
    /// required when `url` says `sslmode=require`.
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for StoreSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password.
        f.debug_struct("StoreSettings")
            .field("data_dir", &self.data_dir)
            .field("url", &self.url.as_ref().map(|_| "<set>"))
            .field("pool_size", &self.pool_size)
            .field("writers", &self.writers)
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

/// Authorization codes.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CodeSettings {
    /// Lifetime of a code whose grant names none.
    pub default_ttl_seconds: u32,
    /// Longest lifetime a grant may ask for (at most 30 days).
    pub max_ttl_seconds: u32,
}

/// Query monitoring: replay window, guessing and authentication-failure
/// limits (docs/api.md, "Tenants and limits").
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSettings {
    /// Redemptions of unknown codes a funder may make in a minute before 429s.
    pub failed_redemptions_per_minute: u32,
    /// Redemptions of unknown codes in an hour that suspend the funder.
    pub failed_redemptions_per_hour: u32,
    /// How far a request's timestamp may be from the clock, in seconds.
    pub max_skew_seconds: i64,
    /// Failed authentications a minute under one key id before further
    /// failures under it are answered 429.
    pub auth_failures_per_key_per_minute: u32,
    /// Failed authentications a minute from one source address before every
    /// signed request from it is answered 429 until the minute ends.
    pub auth_failures_per_source_per_minute: u32,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            bind: "127.0.0.1:8080".into(),
            workers: 0,
            request_timeout_ms: 5000,
            tls_handshake_timeout_ms: 3000,
            max_connections: 0,
        }
    }
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            data_dir: PathBuf::from("dzl-data"),
            url: None,
            pool_size: 16,
            writers: 2,
            statement_timeout_ms: 5000,
            ca_file: None,
        }
    }
}

impl Default for CodeSettings {
    fn default() -> Self {
        CodeSettings {
            default_ttl_seconds: 24 * 3600,
            max_ttl_seconds: dzl_types::wire::MAX_TTL_SECONDS,
        }
    }
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            failed_redemptions_per_minute: 50,
            failed_redemptions_per_hour: 500,
            max_skew_seconds: dzl_types::signing::MAX_SKEW_SECS,
            auth_failures_per_key_per_minute: 60,
            auth_failures_per_source_per_minute: 300,
        }
    }
}

impl Settings {
    /// Defaults, then `file` (if given), then `DZL__SECTION__KEY` variables.
    pub fn load(file: Option<&std::path::Path>) -> anyhow::Result<Self> {
        let mut builder = config::Config::builder();
        if let Some(f) = file {
            builder = builder.add_source(config::File::from(f).required(true));
        }
        builder = builder.add_source(
            config::Environment::with_prefix("DZL")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true),
        );
        let s: Settings = builder.build()?.try_deserialize()?;
        s.validate()?;
        Ok(s)
    }

    /// Refuses settings that make no sense.
    pub fn validate(&self) -> anyhow::Result<()> {
        let c = &self.codes;
        anyhow::ensure!(
            (1..=dzl_types::wire::MAX_TTL_SECONDS).contains(&c.max_ttl_seconds),
            "codes.max_ttl_seconds must be 1..=2592000"
        );
        anyhow::ensure!(
            (1..=c.max_ttl_seconds).contains(&c.default_ttl_seconds),
            "codes.default_ttl_seconds must be 1..=codes.max_ttl_seconds"
        );
        let srv = &self.server;
        anyhow::ensure!(
            (100..=600_000).contains(&srv.request_timeout_ms),
            "server.request_timeout_ms must be 100..=600000"
        );
        anyhow::ensure!(
            (100..=600_000).contains(&srv.tls_handshake_timeout_ms),
            "server.tls_handshake_timeout_ms must be 100..=600000"
        );
        let l = &self.limits;
        anyhow::ensure!(
            l.failed_redemptions_per_minute >= 1,
            "limits.failed_redemptions_per_minute must be at least 1"
        );
        anyhow::ensure!(
            l.failed_redemptions_per_hour >= l.failed_redemptions_per_minute,
            "limits.failed_redemptions_per_hour must be at least the per-minute limit"
        );
        anyhow::ensure!(
            (1..=3600).contains(&l.max_skew_seconds),
            "limits.max_skew_seconds must be 1..=3600"
        );
        anyhow::ensure!(
            l.auth_failures_per_key_per_minute >= 1 && l.auth_failures_per_source_per_minute >= 1,
            "limits.auth_failures_per_key_per_minute and limits.auth_failures_per_source_per_minute must be at least 1"
        );
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::Settings;

    fn load(toml: &str) -> anyhow::Result<Settings> {
        let dir = std::env::temp_dir().join(format!("dzl-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(format!("{}.toml", toml.len()));
        std::fs::write(&file, toml).unwrap();
        Settings::load(Some(&file))
    }

    #[test]
    fn one_file_configures_server_and_cli_but_typos_are_refused() {
        let s = load("[server]\nbind = \"127.0.0.1:9\"\n[retention]\ndeposit_days = 30\n[tenants]\nsecret_overlap_seconds = 60\n")
            .unwrap();
        assert_eq!(s.server.bind, "127.0.0.1:9");
        assert!(load("[server]\nbnid = \"127.0.0.1:9\"\n").is_err());
        assert!(load("[codes]\ndefault_ttl_seconds = 0\n").is_err());
    }

    #[test]
    fn the_root_key_may_be_named_in_a_hardware_module() {
        let uri = "pkcs11:token=dzl;object=root?module-path=/m.so&pin-source=env:PIN";
        let s = load(&format!("[root_key]\npkcs11 = \"{uri}\"\n")).unwrap();
        assert_eq!(s.root_key.pkcs11.as_deref(), Some(uri));
        assert!(load("[root_key]\npkcs12 = \"x\"\n").is_err());
    }
}
