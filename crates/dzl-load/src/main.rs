//! `dzl-load`: drives signed deposits, then redemptions of the codes they
//! issued, against a dzl-vault on this machine's loopback, and prints
//! throughput, latency percentiles (HDR histogram) and answers per status.
//!
//! ```text
//! dzl-load --spawn --baseline --connections 64 --duration 10s
//! dzl-load --spawn --suite gm --connections 64 --duration 10s            # a 国密 vault
//! dzl-load --url http://127.0.0.1:8080 --connections 64 --duration 10s   # with DZL_* credentials
//! ```
//!
//! Every phase is bounded in time (`--duration`, at most 600 s; a preload by
//! its count and `--preload-max-time`), and only loopback hosts are ever
//! contacted.

/// mimalloc, for Rust and (through `override`) for SQLite: glibc's malloc
/// cost a fifth of the HTTP workers' time under load (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod body;
mod cpu;
mod driver;
mod report;
mod spawn;
mod target;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use dzl_crypto::Suite;
use dzl_sdk::Signer;
use serde_json::json;

use crate::body::DepositBodies;
use crate::driver::{run_phase, CodePool, Kind, Progress, Work};
use crate::report::{Machine, Report};
use crate::spawn::Credentials;
use crate::target::Target;

/// The longest phase `--duration` allows.
const MAX_DURATION: Duration = Duration::from_secs(600);
/// The longest `--preload-max-time` allows.
const MAX_PRELOAD_TIME: Duration = Duration::from_secs(24 * 3600);

/// Load generator for dzl-vault (loopback only).
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Cli {
    /// The vault to drive: http://HOST[:PORT] with HOST in 127.0.0.0/8, [::1] or localhost.
    /// Repeat it for replicas over one database: connections are spread
    /// over them evenly.
    #[arg(
        long,
        env = "DZL_URL",
        required_unless_present = "spawn",
        value_delimiter = ','
    )]
    url: Vec<String>,
    /// Start a vault in this process instead (fresh store in a temporary
    /// directory, a platform and a funder allowed 1,000,000 requests/s).
    #[arg(long)]
    spawn: bool,
    /// With --spawn: the directory to make the store's temporary directory in.
    #[arg(long, value_name = "DIR", requires = "spawn")]
    spawn_dir: Option<PathBuf>,
    /// The vault's cipher suite, intl or gm: with --spawn, the suite the
    /// vault is made with; without, the one the target vault has (requests
    /// are signed with its HMAC).
    #[arg(long, default_value = "intl", value_parser = parse_suite)]
    suite: Suite,
    /// Also drive an in-process actix-web JSON echo server with the same
    /// body size, and print each operation's throughput over that ceiling.
    #[arg(long)]
    baseline: bool,
    /// Concurrent keep-alive connections (one task each).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=1024))]
    connections: u16,
    /// How long each operation is driven: 10s, 1500ms, 2m (at most 600 s).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Worker threads of the spawned vault and of the echo server (default: one per CPU).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    workers: Option<u16>,
    /// Threads of the load generator's own runtime (default: one per CPU).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    client_threads: Option<u16>,
    /// Deposit this many records first (not measured against the targets;
    /// progress on stderr), e.g. to measure with millions stored.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=100_000_000))]
    preload: u64,
    /// Connections for --preload (default: --connections).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    preload_connections: Option<u16>,
    /// Upper bound on the preload's time: it stops there even if short of N.
    #[arg(long, default_value = "2h", value_parser = parse_preload_time)]
    preload_max_time: Duration,
    /// Groups each deposit's grant gives the funder (comma-separated).
    #[arg(long, default_value = "applicant,risk")]
    grant_scopes: String,
    /// Drive deposits only (no redemption phase).
    #[arg(long)]
    skip_redemption: bool,
    /// Print one JSON document instead of the table.
    #[arg(long)]
    json: bool,
    /// The platform's key id.
    #[arg(long, env = "DZL_PLATFORM_KEY_ID")]
    platform_key_id: Option<String>,
    /// The platform's signing secret.
    #[arg(long, env = "DZL_PLATFORM_SECRET", hide_env_values = true)]
    platform_secret: Option<String>,
    /// The funder's tenant id (ten_…), named in each deposit's grant.
    #[arg(long, env = "DZL_FUNDER_ID")]
    funder_id: Option<String>,
    /// The funder's key id.
    #[arg(long, env = "DZL_FUNDER_KEY_ID")]
    funder_key_id: Option<String>,
    /// The funder's signing secret.
    #[arg(long, env = "DZL_FUNDER_SECRET", hide_env_values = true)]
    funder_secret: Option<String>,
}

/// `intl` or `gm`.
fn parse_suite(s: &str) -> Result<Suite, String> {
    s.parse().map_err(|_| format!("{s:?}: expected intl or gm"))
}

/// `10s`, `1500ms`, `2m`, `1h` or plain seconds.
fn parse_span(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 10s, 1500ms, 2m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit (use ms, s, m or h)")),
    };
    if !secs.is_finite() || secs <= 0.0 {
        return Err(format!("{s:?} must be positive"));
    }
    Ok(Duration::from_secs_f64(secs.min(1e9)))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = parse_span(s)?;
    if d < Duration::from_millis(100) || d > MAX_DURATION {
        return Err(format!("{s:?}: the duration must be 100ms..=600s"));
    }
    Ok(d)
}

fn parse_preload_time(s: &str) -> Result<Duration, String> {
    let d = parse_span(s)?;
    if d > MAX_PRELOAD_TIME {
        return Err(format!("{s:?}: at most 24h"));
    }
    Ok(d)
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dzl-load: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn required(v: Option<String>, flag: &str, env: &str) -> anyhow::Result<String> {
    v.filter(|s| !s.is_empty())
        .ok_or_else(|| anyhow::anyhow!("{flag} (or {env}) is required without --spawn"))
}

fn random_run_id() -> String {
    let b: [u8; 4] =
        dzl_crypto::random_bytes(&dzl_crypto::SystemRandom::new()).unwrap_or([0x5a; 4]);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let machine = Machine::detect();
    let workers = cli.workers.map_or(machine.nproc, usize::from);
    let client_threads = cli.client_threads.map_or(machine.nproc, usize::from);
    let connections = usize::from(cli.connections);
    let scopes: Vec<&str> = cli.grant_scopes.split(',').map(str::trim).collect();
    anyhow::ensure!(
        !scopes.is_empty()
            && scopes
                .iter()
                .all(|s| matches!(*s, "applicant" | "device" | "risk")),
        "--grant-scopes: a comma-separated list of applicant, device, risk"
    );

    // Where, and as whom. Nothing is sent before the target is known to be loopback.
    let (target, creds, spawned) = if cli.spawn {
        if !cli.url.is_empty() {
            eprintln!("dzl-load: --spawn given; ignoring --url / DZL_URL");
        }
        let v = spawn::spawn_vault(cli.spawn_dir.as_deref(), workers, cli.suite)?;
        (vec![v.target.clone()], v.credentials.clone(), Some(v))
    } else {
        anyhow::ensure!(
            !cli.url.is_empty(),
            "--url (or DZL_URL) is required without --spawn"
        );
        let target = cli
            .url
            .iter()
            .map(|u| Target::parse(u))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let creds = Credentials {
            platform: Signer::new(
                required(
                    cli.platform_key_id.clone(),
                    "--platform-key-id",
                    "DZL_PLATFORM_KEY_ID",
                )?,
                required(
                    cli.platform_secret.clone(),
                    "--platform-secret",
                    "DZL_PLATFORM_SECRET",
                )?,
            ),
            funder_id: required(cli.funder_id.clone(), "--funder-id", "DZL_FUNDER_ID")?,
            funder: Signer::new(
                required(
                    cli.funder_key_id.clone(),
                    "--funder-key-id",
                    "DZL_FUNDER_KEY_ID",
                )?,
                required(
                    cli.funder_secret.clone(),
                    "--funder-secret",
                    "DZL_FUNDER_SECRET",
                )?,
            )
            .for_suite(cli.suite),
        };
        let creds = Credentials {
            platform: creds.platform.for_suite(cli.suite),
            ..creds
        };
        (target, creds, None)
    };

    let bodies = Arc::new(DepositBodies::new(
        &random_run_id(),
        &creds.funder_id,
        &scopes,
    ));
    let body_bytes = bodies.body(0).len();
    let config = json!({
        "target": if spawned.is_some() { format!("spawned vault on {}", target[0].addr) } else { target.iter().map(|t| t.addr.to_string()).collect::<Vec<_>>().join(",") },
        "store_dir": spawned.as_ref().map(|v| v.dir.path().display().to_string()),
        "suite": cli.suite.as_str(),
        "server_workers": if spawned.is_some() || cli.baseline { Some(workers) } else { None },
        "client_threads": client_threads,
        "connections": connections,
        "duration_s": cli.duration.as_secs_f64(),
        "deposit_body_bytes": body_bytes,
        "grant_scopes": scopes,
        "preload": cli.preload,
        "baseline": cli.baseline,
    });

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(client_threads)
        .thread_name("dzl-load")
        .enable_all()
        .build()?;
    let report = rt.block_on(async {
        // Ctrl-C ends the whole run (the in-process servers would otherwise
        // stop alone and leave the load running to its deadline).
        tokio::spawn(async {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("dzl-load: interrupted");
                std::process::exit(130);
            }
        });
        let seq = Arc::new(AtomicU64::new(0));
        let no_codes = Arc::new(CodePool::default());
        let work = |kind, signer: &Signer, limit, pool: &Arc<CodePool>| {
            Arc::new(Work::new(
                kind,
                signer.clone(),
                bodies.clone(),
                seq.clone(),
                limit,
                pool.clone(),
            ))
        };

        let preload = if cli.preload > 0 {
            let n = cli.preload;
            let w = work(Kind::Preload, &creds.platform, n, &no_codes);
            let started = std::time::Instant::now();
            eprintln!("preload: depositing {n} records");
            let progress: Progress = Box::new(move |w: &Work, t: Duration| {
                    let ok = w.ok.load(Ordering::Relaxed);
                    let done = w.done.load(Ordering::Relaxed);
                    let rate = ok as f64 / t.as_secs_f64().max(1e-9);
                    let eta = (n.saturating_sub(done)) as f64 / rate.max(1e-9);
                    eprintln!(
                        "preload: {ok}/{n} stored ({:.1}%), {rate:.0}/s, {} refused, {:.0} s elapsed, eta {eta:.0} s",
                        100.0 * ok as f64 / n as f64,
                        done - ok,
                        t.as_secs_f64(),
                    );
                });
            let r = run_phase(
                &target,
                w,
                cli.preload_connections.map_or(connections, usize::from),
                cli.preload_max_time,
                Some((Duration::from_secs(5), progress)),
            )
            .await?;
            eprintln!(
                "preload: {} stored in {:.1} s ({:.0}/s)",
                r.ok,
                started.elapsed().as_secs_f64(),
                r.ok_throughput()
            );
            Some(r)
        } else {
            None
        };

        let echo = if cli.baseline {
            let server = spawn::spawn_echo(workers)?;
            eprintln!("echo: {} connections for {:?}", connections, cli.duration);
            let w = work(Kind::Echo, &creds.platform, 0, &no_codes);
            let r = run_phase(
                std::slice::from_ref(&server.target),
                w,
                connections,
                cli.duration,
                None,
            )
            .await;
            server.stop().await;
            Some(r?)
        } else {
            None
        };

        eprintln!("deposit: {} connections for {:?}", connections, cli.duration);
        let w = work(Kind::Deposit, &creds.platform, 0, &no_codes);
        let mut deposit = run_phase(&target, w, connections, cli.duration, None).await?;

        let redemption = if cli.skip_redemption {
            None
        } else {
            let pool = Arc::new(CodePool::new(std::mem::take(&mut deposit.codes)));
            eprintln!(
                "redemption: {} connections for at most {:?} over {} codes",
                connections,
                cli.duration,
                pool.len()
            );
            let w = work(Kind::Redeem, &creds.funder, 0, &pool);
            Some(run_phase(&target, w, connections, cli.duration, None).await?)
        };

        Ok::<_, anyhow::Error>(Report {
            machine: machine.clone(),
            config,
            preload,
            echo,
            deposit,
            redemption,
        })
    })?;

    if cli.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print!("{}", report.to_text());
    }
    // The spawned vault's threads end with the process; its directory goes now.
    drop(spawned);
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(
            parse_duration("1500ms").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("600s").unwrap(), Duration::from_secs(600));
        for bad in ["601s", "11m", "0s", "-1s", "10x", "", "s", "50ms", "1h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_preload_time("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_preload_time("25h").is_err());
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
