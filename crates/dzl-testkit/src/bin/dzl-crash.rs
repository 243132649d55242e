//! `dzl-crash`: the kill -9 crash harness against the real `dzl-vault`
//! binary (see `dzl_testkit::crash`). Prints one line per cycle with
//! `--verbose`, then the report as one JSON document; exits 1 on any
//! violation.
//!
//! ```text
//! dzl-crash --cycles 200 [--workers 8] [--seed N] [--min-load-ms 50] [--max-load-ms 700]
//!           [--vault-bin target/debug/dzl-vault] [--data-dir DIR] [--verbose]
//! ```

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use dzl_testkit::crash::{self, Config};

/// Mixed load against dzl-vault, SIGKILL at random moments, restart, check.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Kill cycles.
    #[arg(long, default_value_t = 20)]
    cycles: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// Earliest kill after the load starts, in ms.
    #[arg(long, default_value_t = 50)]
    min_load_ms: u64,
    /// Latest kill after the load starts, in ms.
    #[arg(long, default_value_t = 700)]
    max_load_ms: u64,
    /// Codes of each state verified per cycle.
    #[arg(long, default_value_t = 10)]
    sample: usize,
    /// Random seed (random when absent; the report names it).
    #[arg(long)]
    seed: Option<u64>,
    /// The dzl-vault binary (default: DZL_VAULT_BIN, else `cargo build` it).
    #[arg(long)]
    vault_bin: Option<PathBuf>,
    /// Keep everything in this directory (default: a temporary one, kept on failure).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A line per cycle on stderr.
    #[arg(long)]
    verbose: bool,
}

fn main() -> std::process::ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match run(Cli::parse()) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<bool> {
    let bin = match cli.vault_bin {
        Some(b) => b,
        None => dzl_testkit::process::vault_binary()?,
    };
    let mut cfg = Config::new(bin, cli.cycles);
    cfg.workers = cli.workers.max(1);
    cfg.min_load = Duration::from_millis(cli.min_load_ms);
    cfg.max_load = Duration::from_millis(cli.max_load_ms.max(cli.min_load_ms));
    cfg.sample = cli.sample;
    if let Some(s) = cli.seed {
        cfg.seed = s;
    }
    cfg.data_dir = cli.data_dir;
    cfg.verbose = cli.verbose;
    let report = crash::run(&cfg)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(report.violations.is_empty())
}
