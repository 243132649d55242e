//! `dzl-powercut`: the power-cut harness against the real `dzl-vault`
//! binary (see `dzl_testkit::powercut`). Prints one line per cut with
//! `--verbose`, then the report as one JSON document; exits 1 on any
//! violation (with `--ignore-wal-syncs`: on none, since that run models a
//! broken write path the harness must catch).
//!
//! ```text
//! dzl-powercut --cuts 500 [--mode synced|reordered|alternate] [--workers 8]
//!              [--cuts-per-store 25] [--warm-up 0] [--seed N] [--min-load-ms 50] [--max-load-ms 700]
//!              [--ignore-wal-syncs] [--vault-bin PATH] [--dzlctl-bin PATH] [--dir DIR] [--verbose]
//! ```

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use dzl_testkit::powercut::{self, Config, Modes};

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    /// Only what was flushed survives.
    Synced,
    /// What was flushed, and a random subset of the rest in 4 KiB pieces.
    Reordered,
    /// One of each in turn.
    Alternate,
}

/// Mixed load against dzl-vault, power cuts at random moments, restart on
/// what the disk would hold, check.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Power cuts.
    #[arg(long, default_value_t = 20)]
    cuts: usize,
    /// What a cut keeps of unflushed writes.
    #[arg(long, value_enum, default_value_t = Mode::Alternate)]
    mode: Mode,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// Cuts before a store is finished and a fresh one begins.
    #[arg(long, default_value_t = 25)]
    cuts_per_store: usize,
    /// Deposits each store gets before its first cut (untraced): over
    /// 16,384 makes most of them older than the audit entries mending reads.
    #[arg(long, default_value_t = 0)]
    warm_up: u64,
    /// Earliest cut at a random time after the load starts, in ms.
    #[arg(long, default_value_t = 50)]
    min_load_ms: u64,
    /// Latest cut at a random time after the load starts, in ms.
    #[arg(long, default_value_t = 700)]
    max_load_ms: u64,
    /// Codes of each state redeemed after each cut.
    #[arg(long, default_value_t = 10)]
    sample: usize,
    /// Random seed (random when absent; the report names it).
    #[arg(long)]
    seed: Option<u64>,
    /// Model a write path that answers before its WAL is durable (flushes
    /// of -wal files make nothing durable): the run must find lost writes.
    #[arg(long)]
    ignore_wal_syncs: bool,
    /// Stop after this many violations.
    #[arg(long, default_value_t = 20)]
    max_violations: usize,
    /// The dzl-vault binary (default: DZL_VAULT_BIN, else `cargo build` it).
    #[arg(long)]
    vault_bin: Option<PathBuf>,
    /// The dzlctl binary (default: DZL_DZLCTL_BIN, else `cargo build` it).
    #[arg(long)]
    dzlctl_bin: Option<PathBuf>,
    /// Work in this directory (default: a temporary one, kept on failure).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// A line per cut on stderr.
    #[arg(long)]
    verbose: bool,
}

fn main() -> std::process::ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("off")).init();
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
    let vault_bin = match cli.vault_bin {
        Some(b) => b,
        None => dzl_testkit::process::vault_binary()?,
    };
    let dzlctl_bin = match cli.dzlctl_bin {
        Some(b) => b,
        None => dzl_testkit::process::dzlctl_binary()?,
    };
    let mut cfg = Config::new(vault_bin, dzlctl_bin, cli.cuts);
    cfg.modes = match cli.mode {
        Mode::Synced => Modes::Synced,
        Mode::Reordered => Modes::Reordered,
        Mode::Alternate => Modes::Alternate,
    };
    cfg.workers = cli.workers.max(1);
    cfg.cuts_per_store = cli.cuts_per_store.max(1);
    cfg.warm_up = cli.warm_up;
    cfg.min_load = Duration::from_millis(cli.min_load_ms);
    cfg.max_load = Duration::from_millis(cli.max_load_ms.max(cli.min_load_ms));
    cfg.sample = cli.sample;
    cfg.ignore_wal_syncs = cli.ignore_wal_syncs;
    cfg.max_violations = cli.max_violations.max(1);
    if let Some(s) = cli.seed {
        cfg.seed = s;
    }
    cfg.dir = cli.dir;
    cfg.verbose = cli.verbose;
    let report = powercut::run(&cfg)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    let clean = report.violations.is_empty();
    Ok(if cli.ignore_wal_syncs { !clean } else { clean })
}
