//! Building and running the server: open the store, take the data
//! directory's lock (one server per store), load keys and tenants, bind, and
//! keep the loaded keys and tenants fresh while serving.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, HttpServer};
use anyhow::Context as _;
use dzl_crypto::RootKeyHolder;
use dzl_store::admin::RootKeySource;
use dzl_store::{SqliteStore, Store};

use crate::limits::Guards;
use crate::settings::Settings;
use crate::state::{system_clock, AppState, Clock};

/// How often the server looks for key and tenant changes made by `dzlctl`.
pub const RELOAD_INTERVAL: Duration = Duration::from_millis(500);

/// A bound, not yet running server.
pub struct Application {
    port: u16,
    server: actix_web::dev::Server,
    state: web::Data<AppState>,
    _lock: Option<std::fs::File>,
}

/// Runs blocking start-up work on a plain thread, so `build` may be called
/// from inside an async runtime (tests, embedders) as well as from `main`.
fn off_runtime<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|s| match s.spawn(f).join() {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

/// Opens the configured store: PostgreSQL when `store.url` is set (guards
/// shared by every replica), else SQLite in `store.data_dir` (guards in
/// memory, the directory locked to this one server).
fn open_store(
    settings: &Settings,
) -> anyhow::Result<(Arc<dyn Store>, Guards, Option<std::fs::File>)> {
    if let Some(url) = &settings.store.url {
        let opts = dzl_store_pg::PgOptions {
            pool_size: settings.store.pool_size,
            statement_timeout: Duration::from_millis(settings.store.statement_timeout_ms),
            ca_file: settings.store.ca_file.clone(),
            ..Default::default()
        };
        let store = dzl_store_pg::PgStore::connect(url, opts)
            .map_err(|e| anyhow::anyhow!("opening the store: {e}"))?;
        let guards = Guards::shared(store.guards(), &settings.limits);
        let target = store.target().to_owned();
        anyhow::ensure!(
            store.is_initialised().map_err(|e| anyhow::anyhow!("{e}"))?,
            "the vault in PostgreSQL at {target} is not initialised: run `dzlctl init` with DZL__STORE__URL set"
        );
        return Ok((Arc::new(store), guards, None));
    }
    let dir = settings.store.data_dir.clone();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("server.lock"))
        .context("opening the data directory's lock")?;
    lock.try_lock().map_err(|_| {
        anyhow::anyhow!(
            "another dzl-vault server is serving {}; one server per data directory",
            dir.display()
        )
    })?;
    let store = SqliteStore::open(&dir).map_err(|e| anyhow::anyhow!("opening the store: {e}"))?;
    anyhow::ensure!(
        store.is_initialised().map_err(|e| anyhow::anyhow!("{e}"))?,
        "the vault in {} is not initialised: run `dzlctl --data-dir {} init`",
        dir.display(),
        dir.display()
    );
    Ok((Arc::new(store), Guards::local(&settings.limits), Some(lock)))
}

/// The root key `serve` opens the vault with: in the hardware module that
/// `[root_key] pkcs11` (`DZL__ROOT_KEY__PKCS11`) names, else from
/// `DZL_ROOT_KEY_FILE` / `DZL_ROOT_KEY`. Both at once is refused.
pub fn load_root_key(settings: &Settings) -> anyhow::Result<Box<dyn RootKeyHolder>> {
    let file_or_env = RootKeySource::from_env();
    match &settings.root_key.pkcs11 {
        Some(uri) => {
            anyhow::ensure!(
                file_or_env.file.is_none() && file_or_env.inline.is_none(),
                "both root_key.pkcs11 and DZL_ROOT_KEY_FILE / DZL_ROOT_KEY are set: unset the one not meant"
            );
            let uri = dzl_hsm::Pkcs11Uri::parse(uri)?;
            let root = dzl_hsm::Pkcs11Root::open(&uri)?;
            log::info!(
                "root key in the PKCS#11 {} (fingerprint {})",
                root.place(),
                root.fingerprint()
            );
            Ok(Box::new(root))
        }
        None => Ok(Box::new(file_or_env.load()?)),
    }
}

impl Application {
    /// Opens the store in `settings.store.data_dir` and binds `settings.server.bind`.
    pub fn build(settings: Settings, root: impl RootKeyHolder + 'static) -> anyhow::Result<Self> {
        Self::build_with_clock(settings, root, system_clock())
    }

    /// As [`Application::build`], with an injected clock.
    pub fn build_with_clock(
        settings: Settings,
        root: impl RootKeyHolder + 'static,
        clock: Clock,
    ) -> anyhow::Result<Self> {
        let root: Box<dyn RootKeyHolder> = Box::new(root);
        // The store blocks (and the PostgreSQL client refuses to run on an
        // async runtime's thread): open and load it on a plain thread.
        let (store, guards, lock) = off_runtime(|| open_store(&settings))?;
        let state = web::Data::new(AppState::new(store, guards, settings.clone(), root, clock));
        off_runtime(|| state.reload(true));
        let listener = TcpListener::bind(&settings.server.bind)
            .with_context(|| format!("binding {}", settings.server.bind))?;
        let port = listener.local_addr()?.port();
        let app_state = state.clone();
        let server = HttpServer::new(move || crate::create_app(app_state.clone()))
            .on_connect(crate::tls::on_connect)
            .shutdown_timeout(10);
        let mut server = if settings.tls.enabled() {
            let config = crate::tls::server_config(&settings.tls)?;
            server.listen_rustls_0_23(listener, config)?
        } else {
            server.listen(listener)?
        };
        if settings.server.workers > 0 {
            server = server.workers(settings.server.workers);
        }
        Ok(Application {
            port,
            server: server.run(),
            state,
            _lock: lock,
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The shared state.
    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    /// Serves until stopped, reloading keys and tenants when they change.
    pub async fn run(self) -> std::io::Result<()> {
        let state = self.state.clone();
        let reloader = actix_web::rt::spawn(async move {
            let mut tick = tokio::time::interval(RELOAD_INTERVAL);
            loop {
                tick.tick().await;
                let st = state.clone();
                let _ = web::block(move || st.reload(false)).await;
            }
        });
        let result = self.server.await;
        reloader.abort();
        result
    }
}
