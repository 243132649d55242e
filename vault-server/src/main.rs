//! `dzl-vault`: the vault's HTTP server. Only wiring: settings, root key,
//! logging, then `Application`.

/// mimalloc, for Rust and (through `override`) for SQLite: with glibc's
/// malloc, allocation takes a fifth of the HTTP workers' time under load
/// (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use dzl_store::admin::RootKeySource;
use dzl_vault_server::settings::Settings;
use dzl_vault_server::startup::Application;

/// dzl-vault: the authorization-code data vault of information-level 断直连.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve HTTP API v1 over an initialised store (root key from
    /// DZL_ROOT_KEY_FILE or DZL_ROOT_KEY).
    Serve {
        /// A TOML configuration file; DZL__SECTION__KEY variables override it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The data directory (overrides store.data_dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The address to listen on (overrides server.bind).
        #[arg(long)]
        bind: Option<String>,
    },
    /// One command to try it: a fresh vault under the system temp dir, demo
    /// tenants, served on 127.0.0.1:8080 (or --bind).
    Demo {
        /// The address to listen on (port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:8080")]
        bind: String,
        /// Also write the address, data directory, root key file and demo
        /// credentials to this file as shell `export` lines (mode 0600),
        /// once the vault listens.
        #[arg(long)]
        env_file: Option<PathBuf>,
    },
}

fn main() -> std::process::ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let (settings, root) = match cli.command {
        Command::Serve {
            config,
            data_dir,
            bind,
        } => {
            let mut settings = Settings::load(config.as_deref())?;
            if let Some(d) = data_dir {
                settings.store.data_dir = d;
            }
            if let Some(b) = bind {
                settings.server.bind = b;
            }
            let root = dzl_vault_server::startup::load_root_key(&settings)?;
            (settings, root)
        }
        Command::Demo { bind, env_file } => return demo(bind, env_file),
    };
    let app = Application::build(settings, root)?;
    log::info!("dzl-vault listening on port {}", app.port());
    serve(app)
}

fn demo(bind: String, env_file: Option<PathBuf>) -> anyhow::Result<()> {
    use dzl_vault_server::demo;
    let prepared = demo::prepare()?;
    let started = (|| {
        let mut settings = Settings::default();
        settings.store.data_dir = prepared.data_dir.clone();
        settings.server.bind = bind;
        let root = RootKeySource {
            file: Some(prepared.root_key_file.clone()),
            inline: None,
        }
        .load()?;
        let app = Application::build(settings, root)?;
        let url = format!("http://127.0.0.1:{}", app.port());
        if let Some(path) = &env_file {
            demo::write_env_file(path, &demo::env_file_text(&prepared, &url))?;
        }
        anyhow::Ok((app, url))
    })();
    let (app, url) = match started {
        Ok(started) => started,
        Err(e) => {
            demo::discard(&prepared);
            return Err(e);
        }
    };
    println!("{}", demo::instructions(&prepared, &url));
    serve(app)
}

fn serve(app: Application) -> anyhow::Result<()> {
    actix_web::rt::System::new().block_on(app.run())?;
    Ok(())
}
