//! In-process servers: a real vault over a fresh store in a temporary
//! directory (`--spawn`), and the actix-web JSON echo server that gives the
//! HTTP ceiling (`--baseline`). Both bind 127.0.0.1:0 and run their own
//! actix worker threads, as `dzl-vault serve` does.

use std::path::Path;
use std::sync::mpsc;

use actix_web::{web, App, HttpResponse, HttpServer};
use dzl_crypto::{RootKey, Suite};
use dzl_sdk::Signer;
use dzl_store::admin::{self, NewTenant};
use dzl_store::{SqliteStore, TenantKind};
use dzl_vault_server::settings::Settings;
use dzl_vault_server::startup::Application;

use crate::target::Target;

/// Requests per second allowed to the spawned tenants: far above anything
/// this machine can send, so the rate limiter is on but never refuses.
pub const SPAWN_RATE_LIMIT: u32 = 1_000_000;

/// The tenants dzl-load signs as.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// Signs deposits.
    pub platform: Signer,
    /// The funder's tenant id (the grant's `funder_id`).
    pub funder_id: String,
    /// Signs redemptions.
    pub funder: Signer,
}

/// A vault served from this process.
pub struct SpawnedVault {
    /// Where it listens.
    pub target: Target,
    /// A platform and a funder with [`SPAWN_RATE_LIMIT`].
    pub credentials: Credentials,
    /// The store's directory, removed on drop.
    pub dir: tempfile::TempDir,
}

/// Initialises a vault of `suite` in a new temporary directory under
/// `parent` (the system temp dir when `None`), adds a platform and a funder
/// (signing with the suite's HMAC), and serves it on 127.0.0.1:0 with
/// `workers` actix workers. Everything else is the server's default
/// settings: durability, audit chain, signatures, nonces, rate limits and
/// metrics all on.
pub fn spawn_vault(
    parent: Option<&Path>,
    workers: usize,
    suite: Suite,
) -> anyhow::Result<SpawnedVault> {
    let dir = match parent {
        Some(p) => tempfile::Builder::new().prefix("dzl-load-").tempdir_in(p)?,
        None => tempfile::Builder::new().prefix("dzl-load-").tempdir()?,
    };
    let root = RootKey::generate(&dzl_crypto::SystemRandom::new())
        .map_err(|e| anyhow::anyhow!("root key: {e}"))?;
    let store = SqliteStore::open(dir.path()).map_err(|e| anyhow::anyhow!("store: {e}"))?;
    admin::init_as(&store, &root, "dzl-load", suite)?;
    let keys = admin::load_keys(&store, &root)?;
    let add = |kind, name: &str| {
        admin::add_tenant(
            &store,
            &keys.keyring,
            "dzl-load",
            NewTenant {
                rate_limit: Some(SPAWN_RATE_LIMIT),
                ..NewTenant::new(kind, name)
            },
        )
    };
    let platform = add(TenantKind::Platform, "Load Platform")?;
    let funder = add(TenantKind::Funder, "Load Bank")?;
    store.close();
    let credentials = Credentials {
        platform: Signer::new(platform.key_id.clone(), platform.secret.as_str()).for_suite(suite),
        funder_id: funder.tenant_id.to_string(),
        funder: Signer::new(funder.key_id.clone(), funder.secret.as_str()).for_suite(suite),
    };

    let mut settings = Settings::default();
    settings.store.data_dir = dir.path().to_owned();
    settings.server.bind = "127.0.0.1:0".into();
    settings.server.workers = workers;
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("dzl-vault".into())
        .spawn(move || {
            let app = match Application::build(settings, root) {
                Ok(app) => app,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let _ = tx.send(Ok(app.port()));
            // Runs until the process exits.
            let _ = actix_web::rt::System::new().block_on(app.run());
        })?;
    let port = rx
        .recv()
        .map_err(|_| anyhow::anyhow!("the vault thread ended before binding"))??;
    Ok(SpawnedVault {
        target: Target::local(([127, 0, 0, 1], port).into())?,
        credentials,
        dir,
    })
}

/// The echo server: answers `POST /echo` with the JSON it was sent, parsed
/// and serialised again.
pub struct EchoServer {
    /// Where it listens.
    pub target: Target,
    handle: actix_web::dev::ServerHandle,
    thread: std::thread::JoinHandle<()>,
}

async fn echo(body: web::Json<serde_json::Value>) -> HttpResponse {
    HttpResponse::Ok().json(body.into_inner())
}

/// Starts the echo server on 127.0.0.1:0 with `workers` actix workers.
pub fn spawn_echo(workers: usize) -> anyhow::Result<EchoServer> {
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("dzl-load-echo".into())
        .spawn(move || {
            let _ = actix_web::rt::System::new().block_on(async move {
                let bound = HttpServer::new(|| {
                    App::new()
                        .app_data(web::JsonConfig::default().limit(64 * 1024))
                        .route("/echo", web::post().to(echo))
                })
                .workers(workers)
                .bind(("127.0.0.1", 0));
                let server = match bound {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = tx.send(Err(anyhow::anyhow!("binding the echo server: {e}")));
                        return Ok(());
                    }
                };
                let addr = server.addrs().first().copied();
                let server = server.run();
                let _ = match addr {
                    Some(a) => tx.send(Ok((a, server.handle()))),
                    None => tx.send(Err(anyhow::anyhow!("the echo server bound nothing"))),
                };
                server.await
            });
        })?;
    let (addr, handle) = rx
        .recv()
        .map_err(|_| anyhow::anyhow!("the echo thread ended before binding"))??;
    Ok(EchoServer {
        target: Target::local(addr)?,
        handle,
        thread,
    })
}

impl EchoServer {
    /// Stops the server and waits for its threads.
    pub async fn stop(self) {
        self.handle.stop(false).await;
        let _ = tokio::task::spawn_blocking(move || self.thread.join()).await;
    }
}
