//! `dzl-vault`: the vault's HTTP server. Only wiring: settings, root key,
//! logging, then `Application`.

/// mimalloc, for Rust and (through `override`) for SQLite: glibc's malloc
/// cost a fifth of the HTTP workers' time under load (docs/performance.md).
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
        /// The address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        bind: String,
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
        Command::Demo { bind } => {
            let demo = dzl_vault_server::demo::prepare()?;
            let mut settings = Settings::default();
            settings.store.data_dir = demo.data_dir.clone();
            settings.server.bind = bind;
            let root = RootKeySource {
                file: Some(demo.root_key_file.clone()),
                inline: None,
            }
            .load()?;
            let app = Application::build(settings, root)?;
            let url = format!("http://127.0.0.1:{}", app.port());
            println!("{}", dzl_vault_server::demo::instructions(&demo, &url));
            return serve(app);
        }
    };
    let app = Application::build(settings, root)?;
    log::info!("dzl-vault listening on port {}", app.port());
    serve(app)
}

fn serve(app: Application) -> anyhow::Result<()> {
    actix_web::rt::System::new().block_on(app.run())?;
    Ok(())
}
