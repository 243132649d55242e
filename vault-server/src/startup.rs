//! Building and running the server: open the store, take the data
//! directory's lock (one server per store), load keys and tenants, bind, and
//! keep the loaded keys and tenants fresh while serving.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use anyhow::Context as _;
use dzl_crypto::RootKeyHolder;
use dzl_store::admin::RootKeySource;
use dzl_store::{SqliteStore, Store};

use crate::conn::Guarded;
use crate::limits::Guards;
use crate::settings::Settings;
use crate::state::{system_clock, AppState, Clock};

/// How often the server looks for key and tenant changes made by `dzlctl`.
pub const RELOAD_INTERVAL: Duration = Duration::from_millis(500);

/// File handles kept out of the connection budget: the store's files or
/// PostgreSQL connections (counted apart), the listener, the log, the
/// runtime's own, with room to spare.
pub const RESERVED_FILE_HANDLES: u64 = 256;

/// Connections the server accepts at once, per worker, so that every
/// connection the workers hold still leaves the store and the process the
/// file handles they need: the soft RLIMIT_NOFILE, raised to the hard limit
/// first when it is lower, less [`RESERVED_FILE_HANDLES`] and the store's
/// connections. A configured `server.max_connections` above that is refused.
pub fn connections_per_worker(settings: &Settings, workers: usize) -> anyhow::Result<usize> {
    let soft = rlimit::increase_nofile_limit(u64::MAX)
        .context("reading and raising the file-handle limit (RLIMIT_NOFILE)")?;
    let reserved = RESERVED_FILE_HANDLES + u64::from(settings.store.pool_size);
    let room = soft.saturating_sub(reserved);
    let workers = workers.max(1);
    anyhow::ensure!(
        room >= workers as u64,
        "the file-handle limit ({soft}) leaves no room for connections: raise RLIMIT_NOFILE above {}",
        reserved + workers as u64
    );
    let total = match settings.server.max_connections {
        0 => room,
        n => {
            anyhow::ensure!(
                n as u64 <= room,
                "server.max_connections is {n}, but the file-handle limit ({soft}) leaves room for {room}: lower it or raise RLIMIT_NOFILE"
            );
            n as u64
        }
    };
    let per_worker = usize::try_from(total / workers as u64)
        .unwrap_or(usize::MAX)
        .max(1);
    log::info!(
        "accepting at most {} connections ({workers} workers × {per_worker}; file-handle limit {soft})",
        per_worker * workers
    );
    Ok(per_worker)
}

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
            writers: settings.store.writers,
            statement_timeout: Duration::from_millis(settings.store.statement_timeout_ms),
            ca_file: settings.store.ca_file.clone(),
            ..Default::default()
        };
        let store = dzl_store_pg::connect(url, opts)
            .map_err(|e| anyhow::anyhow!("opening the store: {e}"))?;
        let pg = dzl_store_pg::guards(&store).map_err(|e| anyhow::anyhow!("{e}"))?;
        let guards = Guards::shared(pg, &settings.limits);
        let target = store.backend().target().to_owned();
        anyhow::ensure!(
            store.is_initialised().map_err(|e| anyhow::anyhow!("{e}"))?,
            "the vault in PostgreSQL at {target} is not initialised: run `dzlctl init` with DZL__STORE__URL set"
        );
        return Ok((Arc::new(store), guards, None));
    }
    let dir = settings.store.data_dir.clone();
    // Refused before anything is written: a mistyped directory must not
    // become a new, empty one.
    anyhow::ensure!(
        dzl_store::sqlite::vault_db(&dir).is_file(),
        "no vault in {}: initialise one with `dzlctl --data-dir {} init` (the root key from \
         DZL_ROOT_KEY_FILE or DZL_ROOT_KEY), or give --data-dir the directory of an initialised vault",
        dir.display(),
        dir.display()
    );
    let mut lock = std::fs::OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut lock, 0o600);
    let lock = lock
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
    let store: Arc<dyn Store> = Arc::new(store);
    let guards = Guards::local(
        &settings.limits,
        store.clone(),
        chrono::Utc::now().timestamp(),
    )
    .map_err(|e| anyhow::anyhow!("loading the nonces kept in the store: {e}"))?;
    Ok((store, guards, Some(lock)))
}

/// How long a connection may go from the first byte of a request to the
/// first byte of its answer, in request deadlines: one for the head, one
/// for the body, two for the work ([`crate::conn`]).
pub const ANSWER_DEADLINE_FACTOR: u32 = 4;

/// Serves the app on `listener`: plain HTTP/1.1, or TLS when configured,
/// each connection's stream [`Guarded`] by the answer deadline.
fn listen(
    builder: actix_server::ServerBuilder,
    listener: TcpListener,
    settings: &Settings,
    state: web::Data<AppState>,
) -> anyhow::Result<actix_server::ServerBuilder> {
    use actix_http::HttpService;
    use actix_service::{fn_service, map_config, ServiceFactoryExt as _};
    use actix_tls::accept::rustls_0_23::{Acceptor, TlsStream};
    use actix_web::dev::AppConfig;
    use actix_web::rt::net::TcpStream;

    let request_timeout = Duration::from_millis(settings.server.request_timeout_ms);
    let answer = request_timeout * ANSWER_DEADLINE_FACTOR;
    let http = move || {
        HttpService::<Guarded<TcpStream>, _, _, _, _>::build()
            .client_request_timeout(request_timeout)
            .client_disconnect_timeout(Duration::from_secs(1))
    };
    let app = move |state: &web::Data<AppState>| {
        map_config(crate::create_app(state.clone()), |_| AppConfig::default())
    };
    if !settings.tls.enabled() {
        return Ok(builder.listen("dzl-vault", listener, move || {
            fn_service(move |io: TcpStream| {
                let peer = io.peer_addr().ok();
                std::future::ready(Ok((Guarded::new(io, answer), peer)))
            })
            .and_then(http().h1(app(&state)))
        })?);
    }
    let config = crate::tls::server_config(&settings.tls)?;
    let mut acceptor = Acceptor::new(config);
    acceptor.set_handshake_timeout(Duration::from_millis(
        settings.server.tls_handshake_timeout_ms,
    ));
    Ok(builder.listen("dzl-vault-tls", listener, move || {
        acceptor
            .clone()
            .map_err(|e| match e {
                actix_tls::accept::TlsError::Tls(e) => actix_http::error::DispatchError::Io(e),
                actix_tls::accept::TlsError::Timeout => actix_http::error::DispatchError::Io(
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake"),
                ),
                actix_tls::accept::TlsError::Service(never) => match never {},
            })
            .map(move |io: TlsStream<TcpStream>| {
                let peer = io.get_ref().0.peer_addr().ok();
                (Guarded::new(io, answer), peer)
            })
            .and_then(
                HttpService::<Guarded<TlsStream<TcpStream>>, _, _, _, _>::build()
                    .client_request_timeout(request_timeout)
                    .client_disconnect_timeout(Duration::from_secs(1))
                    .secure()
                    .on_connect_ext(|io: &Guarded<TlsStream<TcpStream>>, data: &mut _| {
                        crate::tls::on_connect(io.get_ref(), data)
                    })
                    .h1(app(&state)),
            )
    })?)
}

/// Binds `addr`; an address in use says how to choose another.
fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            anyhow::anyhow!(
                "{addr} is already in use (another dzl-vault?): choose another address with \
                 --bind, e.g. --bind 127.0.0.1:8081 (port 0 picks a free port), or stop what \
                 listens there"
            )
        } else {
            anyhow::Error::new(e).context(format!("binding {addr}"))
        }
    })
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
        let listener = bind(&settings.server.bind)?;
        let port = listener.local_addr()?.port();
        let workers = match settings.server.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let per_worker = connections_per_worker(&settings, workers)?;
        let builder = actix_server::Server::build()
            .workers(workers)
            .max_concurrent_connections(per_worker)
            .shutdown_timeout(10);
        let server = listen(builder, listener, &settings, state.clone())?.run();
        Ok(Application {
            port,
            server,
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

    /// Serves until stopped, reloading keys and tenants when they change
    /// and auditing the failed authentications of each ended window.
    pub async fn run(self) -> std::io::Result<()> {
        let state = self.state.clone();
        let reloader = actix_web::rt::spawn(async move {
            let mut tick = tokio::time::interval(RELOAD_INTERVAL);
            loop {
                tick.tick().await;
                let st = state.clone();
                let _ = web::block(move || st.reload(false)).await;
                audit_failed_authentications(&state, state.now().timestamp()).await;
            }
        });
        let result = self.server.await;
        reloader.abort();
        // Windows still open are audited now rather than lost.
        audit_failed_authentications(&self.state, i64::MAX).await;
        result
    }
}

/// Audits every window of failed authentications that ended by `now`.
async fn audit_failed_authentications(state: &web::Data<AppState>, now: i64) {
    let closed = state.auth_throttle.take_closed(now);
    if closed.is_empty() {
        return;
    }
    let st = state.clone();
    let result =
        web::block(move || crate::throttle::audit_closed(&*st.store, &closed, st.now())).await;
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => log::error!("auditing failed authentications: {e}"),
        Err(e) => log::error!("auditing failed authentications: {e}"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn connections_stay_below_the_file_handle_limit() {
        let soft = rlimit::increase_nofile_limit(u64::MAX).unwrap();
        let mut settings = Settings::default();
        let per_worker = connections_per_worker(&settings, 4).unwrap();
        assert!((per_worker * 4) as u64 <= soft - RESERVED_FILE_HANDLES - 16);
        settings.server.max_connections = 100;
        assert_eq!(connections_per_worker(&settings, 4).unwrap(), 25);
        settings.server.max_connections = usize::try_from(soft).unwrap();
        let e = connections_per_worker(&settings, 4)
            .unwrap_err()
            .to_string();
        assert!(e.contains("server.max_connections"), "{e}");
    }
}
