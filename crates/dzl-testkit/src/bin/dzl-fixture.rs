//! `dzl-fixture`: an initialised vault in a fresh temporary directory with
//! test tenants, served on loopback, for API fuzzers and other black-box
//! tools. Prints one JSON line on stdout, then serves:
//!
//! ```json
//! {"base_url":"http://127.0.0.1:PORT","data_dir":"…","tenants":{"platform":{"tenant_id","key_id","secret"},
//!  "other_platform":{…},"funder":{…},"other_funder":{…},"operator":{…}}}
//! ```
//!
//! It stops on SIGTERM / SIGINT, when its standard input closes (with
//! `--stdin-closes`), or after `--max-seconds`; the data directory is removed
//! unless `--keep` is given. Logs (env_logger, `RUST_LOG`) go to stderr.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use dzl_testkit::{new_root, provision, Provision};
use dzl_vault_server::settings::Settings;
use dzl_vault_server::startup::Application;

/// A provisioned throw-away vault for black-box testing.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: String,
    /// Use this (empty or new) directory instead of a temporary one.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Keep the data directory on exit.
    #[arg(long)]
    keep: bool,
    /// Requests per second of every tenant (the vault's default when absent).
    #[arg(long)]
    rate_limit: Option<u32>,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 3600)]
    max_seconds: u64,
    /// Stop when standard input reaches end of file.
    #[arg(long)]
    stdin_closes: bool,
    /// Actix workers.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Redemptions of unknown codes a funder may make in a minute (the
    /// vault's default when absent; API fuzzers guess a lot).
    #[arg(long)]
    failed_redemptions_per_minute: Option<u32>,
    /// Redemptions of unknown codes in an hour that suspend the funder.
    #[arg(long)]
    failed_redemptions_per_hour: Option<u32>,
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
    // Unused (and removed at exit) when --data-dir names the directory.
    let temp = tempfile::Builder::new().prefix("dzl-fixture-").tempdir()?;
    let dir = match &cli.data_dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => temp.path().to_owned(),
    };
    let root = new_root()?;
    let tenants = provision(
        &dir,
        &root,
        &Provision {
            rate_limit: cli.rate_limit,
            others_rate_limit: None,
        },
    )?;
    let mut settings = Settings::default();
    settings.store.data_dir = dir.clone();
    settings.server.bind = cli.bind.clone();
    settings.server.workers = cli.workers;
    if let Some(n) = cli.failed_redemptions_per_minute {
        settings.limits.failed_redemptions_per_minute = n;
    }
    if let Some(n) = cli.failed_redemptions_per_hour {
        settings.limits.failed_redemptions_per_hour = n;
    }
    settings.validate()?;
    let app = Application::build(settings, root)?;
    let line = serde_json::json!({
        "base_url": format!("http://127.0.0.1:{}", app.port()),
        "data_dir": dir,
        "tenants": tenants,
    });
    println!("{line}");
    log::info!("dzl-fixture listening on port {}", app.port());
    let max = Duration::from_secs(cli.max_seconds);
    let stdin_closes = cli.stdin_closes;
    actix_web::rt::System::new().block_on(async move {
        let (eof_tx, eof_rx) = tokio::sync::oneshot::channel::<()>();
        if stdin_closes {
            std::thread::spawn(move || {
                let mut sink = Vec::new();
                let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
                let _ = eof_tx.send(());
            });
        } else {
            std::mem::forget(eof_tx);
        }
        tokio::select! {
            r = app.run() => r,
            _ = tokio::time::sleep(max) => Ok(()),
            _ = eof_rx => Ok(()),
        }
    })?;
    if cli.keep && cli.data_dir.is_none() {
        eprintln!("kept {}", temp.keep().display());
    }
    Ok(())
}
