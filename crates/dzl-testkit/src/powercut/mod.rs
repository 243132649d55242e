//! The power-cut harness (issue 22): mixed load against the real
//! `dzl-vault` binary, a power cut at a random moment, restart on what the
//! disk would hold, check.
//!
//! The server runs with an `LD_PRELOAD` library (`tracefs.c`, compiled with
//! `cc` at run time) that records every change it makes to the files of its
//! data directory — writes with their bytes, truncations, creations,
//! removals — and every `fsync`/`fdatasync` of a file or of the directory,
//! in order ([`trace`]). The server is killed at a random moment: after a
//! random delay into the load, or by the library itself right after the
//! Nth flush returned (before the server acts on it), or during start-up.
//! The harness then rebuilds the data directory from the files as the
//! server started and the trace: each file as at its last flush and the
//! directory as at its last flush ([`CutMode::Synced`]), or that plus a
//! random subset of the unflushed writes cut into 4 KiB pieces
//! ([`CutMode::Reordered`]). The `-shm` files are lost. The real files,
//! which kept everything (the kernel's page cache survives a SIGKILL),
//! are thrown away.
//!
//! After every cut, on a copy of the rebuilt files with no server running:
//! `PRAGMA integrity_check` of `vault.db` and `identity.db`; the writes left
//! half done across the two files are counted; `dzlctl audit verify` (which
//! opens the store, so mends them first) must find the audit trail intact;
//! no write may be left half done; `dzlctl audit export` must show exactly
//! one `deposit.void` or `identity.discard` entry per write mended, both
//! by `dzlctl` now and by the server when it opened the previous cut's
//! files. Then the server restarts on the rebuilt files, and over HTTP (see
//! [`model`]): every code left unknown by the cut is redeemed; the state of
//! every code changed since the last check is read; a sample of each state
//! is redeemed. Every few cuts the store is finished: every code is
//! redeemed, the server stopped, the audit trail verified and exported, and
//! every acknowledged deposit, redemption, revocation and erasure must have
//! its `ok` entry, no code two redemptions; then a fresh store begins.
//!
//! Nothing here reads the store through its library: the server is driven
//! over signed HTTP, the files are checked with SQLite and `dzlctl`.

mod model;
pub mod trace;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, SecondsFormat, Utc};
use dzl_crypto::RootKey;
use dzl_sdk::RawClient;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde::Serialize;

use crate::process::{wait_ready, ExitedEarly, VaultProcess};
use crate::{
    half_done, integrity_check, new_root, pairs_check, provision, HalfDone, Provision, Tenants,
};
use model::{Clients, Model, Scope};
pub use trace::{CutMode, CutOptions, CutStats, Files};

/// The library's source, compiled where the harness runs.
pub const LIBRARY_SOURCE: &str = include_str!("tracefs.c");

/// Compiles `tracefs.c` into `dir` with `cc` (or `$CC`); its path.
pub fn build_library(dir: &Path) -> anyhow::Result<PathBuf> {
    let src = dir.join("tracefs.c");
    std::fs::write(&src, LIBRARY_SOURCE)?;
    let out = dir.join("libtracefs.so");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let built = Command::new(&cc)
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&out)
        .arg(&src)
        .args(["-ldl", "-lpthread"])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cc}"))?;
    anyhow::ensure!(
        built.status.success(),
        "{cc} could not build the trace library: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    Ok(out)
}

/// Which cut modes a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Modes {
    /// Every cut [`CutMode::Synced`].
    Synced,
    /// Every cut [`CutMode::Reordered`].
    Reordered,
    /// One of each, in turn.
    Alternate,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Power cuts.
    pub cuts: usize,
    /// Which modes.
    pub modes: Modes,
    /// Model a write path that answers before its WAL is durable: flushes
    /// of `-wal` files make nothing durable. The harness must then find
    /// acknowledged writes lost.
    pub ignore_wal_syncs: bool,
    /// Concurrent clients during the load.
    pub workers: usize,
    /// A cut at a random time comes this long after the load starts, at
    /// the earliest…
    pub min_load: Duration,
    /// …and at the latest.
    pub max_load: Duration,
    /// Codes of each state redeemed after each cut.
    pub sample: usize,
    /// Cuts before the store is finished and a fresh one begins.
    pub cuts_per_store: usize,
    /// Deposits each store gets before its first cut, with no trace and
    /// no cut: an older store, most of whose deposits lie beyond the
    /// latest audit entries (which mending reads) when `warm_up` is over
    /// 16,384.
    pub warm_up: u64,
    /// Random seed.
    pub seed: u64,
    /// The `dzl-vault` binary.
    pub vault_bin: PathBuf,
    /// The `dzlctl` binary.
    pub dzlctl_bin: PathBuf,
    /// Working directory (a temporary one when `None`, kept on failure).
    pub dir: Option<PathBuf>,
    /// A line per cut on stderr.
    pub verbose: bool,
    /// Stop after this many violations.
    pub max_violations: usize,
}

impl Config {
    /// Defaults for `cuts` cuts.
    pub fn new(vault_bin: PathBuf, dzlctl_bin: PathBuf, cuts: usize) -> Self {
        Config {
            cuts,
            modes: Modes::Alternate,
            ignore_wal_syncs: false,
            workers: 8,
            min_load: Duration::from_millis(50),
            max_load: Duration::from_millis(700),
            sample: 10,
            cuts_per_store: 25,
            warm_up: 0,
            seed: rand::random(),
            vault_bin,
            dzlctl_bin,
            dir: None,
            verbose: false,
            max_violations: 20,
        }
    }
}

/// The figures of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Seed used.
    pub seed: u64,
    /// Whether WAL flushes were ignored (the broken write path's model).
    pub ignore_wal_syncs: bool,
    /// Power cuts, each followed by a rebuild, the checks and a restart.
    pub cuts: usize,
    /// Of those, [`CutMode::Synced`].
    pub cuts_synced: usize,
    /// Of those, [`CutMode::Reordered`].
    pub cuts_reordered: usize,
    /// Cuts at a random moment of the load.
    pub cuts_at_random_time: usize,
    /// Cuts right after a flush returned, by the library.
    pub cuts_after_a_flush: usize,
    /// Of those, counted among one file's flushes (between the flushes of
    /// two files, say).
    pub cuts_after_a_flush_of_one_file: usize,
    /// Cuts right after a write, by the library.
    pub cuts_after_a_write: usize,
    /// Cuts during start-up (recovery and mending included).
    pub cuts_in_start_up: usize,
    /// Cuts before any load ran (during the checks after a restart).
    pub cuts_in_checks: usize,
    /// Stores run (each from provisioning to its final checks).
    pub stores: usize,
    /// Deposits answered 201.
    pub deposits_acknowledged: u64,
    /// Of those, made before the stores' first cuts (`warm_up`).
    pub warm_up_deposits: u64,
    /// Redemptions answered 200 during the load.
    pub redemptions_acknowledged: u64,
    /// Revocations answered 200.
    pub revocations_acknowledged: u64,
    /// Erasures answered 204.
    pub erasures_acknowledged: u64,
    /// Requests that got no answer (in flight at a cut).
    pub unanswered_requests: u64,
    /// Unanswered requests found committed…
    pub unknown_found_committed: u64,
    /// …or not (the code then redeemed).
    pub unknown_found_not_committed: u64,
    /// Redemptions that answered as the model said.
    pub redemption_checks: u64,
    /// Code states read (`GET /v1/codes/{id}`) and compared.
    pub status_checks: u64,
    /// Acknowledged writes lost (must be 0).
    pub lost: u64,
    /// Of those, found after a [`CutMode::Synced`] / a [`CutMode::Reordered`] cut.
    pub lost_by_mode: [u64; 2],
    /// Codes redeemed twice (must be 0).
    pub double_redemptions: u64,
    /// Of those, by mode.
    pub double_by_mode: [u64; 2],
    /// `integrity_check` runs, each of both databases.
    pub integrity_checks: u64,
    /// `dzlctl audit verify` runs that found the trail intact.
    pub audit_verified: u64,
    /// Entries verified at the stores' ends, summed.
    pub audit_entries_at_store_ends: u64,
    /// Writes found half done across the two files after a cut.
    pub half_done_found: u64,
    /// Of those, by kind.
    pub half_done_by_kind: HalfDone,
    /// Writes the server mended as it opened cut files (audited).
    pub mended_by_server: u64,
    /// Writes `dzlctl` mended as it opened the copies (audited).
    pub mended_by_dzlctl: u64,
    /// Of the server's, erasures or purges kept only in `identity.db`
    /// (by the wording of their `deposit.void` entries).
    pub mended_shreddings_by_server: u64,
    /// Trace bytes read.
    pub trace_bytes: u64,
    /// Flushes traced.
    pub flushes: u64,
    /// Bytes written and not flushed at the cuts.
    pub unflushed_bytes: u64,
    /// Unflushed 4 KiB pieces kept by the cuts (Reordered).
    pub pieces_kept: u64,
    /// Unflushed pieces dropped.
    pub pieces_dropped: u64,
    /// Unflushed changes to the directory dropped.
    pub dir_ops_dropped: u64,
    /// WAL headers written (a WAL started or started over), in the traces.
    pub wal_headers: u64,
    /// Of those, while the WAL's database file had unflushed writes (a WAL
    /// starting over then could overwrite frames whose pages a cut loses).
    pub wal_headers_over_unflushed_db: u64,
    /// Everything that broke a rule.
    pub violations: Vec<String>,
    /// Wall time.
    pub seconds: f64,
    /// The working directory, when kept.
    pub dir: Option<PathBuf>,
}

/// Audit operations of the store's mending (`recover`).
const MEND_OPERATIONS: [&str; 2] = ["deposit.void", "identity.discard"];

/// One audit entry as `dzlctl audit export` writes it.
#[derive(Debug, Clone)]
struct Entry {
    at: DateTime<Utc>,
    operation: String,
    result: String,
    deposit_id: Option<String>,
    code_id: Option<String>,
    redemption_id: Option<String>,
    detail: String,
}

impl Entry {
    fn parse(line: &str) -> anyhow::Result<Entry> {
        let v: serde_json::Value = serde_json::from_str(line).context("an exported line")?;
        let s = |k: &str| v[k].as_str().map(str::to_owned);
        let at = s("at").context("an entry without `at`")?;
        Ok(Entry {
            at: DateTime::parse_from_rfc3339(&at)?.with_timezone(&Utc),
            operation: s("operation").unwrap_or_default(),
            result: s("result").unwrap_or_default(),
            deposit_id: s("deposit_id"),
            code_id: s("code_id"),
            redemption_id: s("redemption_id"),
            detail: s("detail").unwrap_or_default(),
        })
    }

    fn mends(&self) -> bool {
        MEND_OPERATIONS.contains(&self.operation.as_str())
    }

    /// A mending that finished an erasure or purge whose `vault.db` half
    /// was lost, as the store's wording of the entry says (a figure only:
    /// other wording counts nothing).
    fn mends_a_shredding(&self) -> bool {
        self.operation == "deposit.void" && self.detail.contains("erasure or purge")
    }
}

/// `dzlctl` on a data directory.
struct Ctl {
    bin: PathBuf,
    root: String,
}

impl Ctl {
    fn run(&self, data: &Path, args: &[&str]) -> anyhow::Result<std::process::Output> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--data-dir")
            .arg(data)
            .args(args)
            .env("DZL_ROOT_KEY", &self.root)
            .env_remove("DZL_ROOT_KEY_FILE")
            .stdin(Stdio::null());
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("DZL__") {
                cmd.env_remove(k);
            }
        }
        cmd.output()
            .with_context(|| format!("running {}", self.bin.display()))
    }

    /// `dzlctl audit verify`: the entries verified, or what it said.
    fn verify(&self, data: &Path) -> anyhow::Result<Result<u64, String>> {
        let out = self.run(data, &["--json", "audit", "verify"])?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        Ok(match (out.status.success(), v["entries"].as_u64()) {
            (true, Some(n)) => Ok(n),
            _ => Err(format!(
                "dzlctl audit verify: {} {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )),
        })
    }

    /// `dzlctl audit export [--since]`.
    fn export(&self, data: &Path, since: Option<DateTime<Utc>>) -> anyhow::Result<Vec<Entry>> {
        let since = since.map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true));
        let mut args = vec!["audit", "export"];
        if let Some(s) = &since {
            args.extend(["--since", s.as_str()]);
        }
        let out = self.run(data, &args)?;
        anyhow::ensure!(
            out.status.success(),
            "dzlctl audit export: {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(Entry::parse)
            .collect()
    }
}

/// How a cycle's cut comes.
#[derive(Debug, Clone)]
enum Cut {
    /// The harness kills the server this long into the load.
    Time(Duration),
    /// The library kills it right after the Nth flush once armed (the
    /// server ready).
    AfterFlush(u64),
    /// The library kills it right after the Nth flush of one file once
    /// armed: between the flushes of two files of one commit, say.
    AfterFlushOf(u64, String),
    /// The library kills it right after the Nth write once armed: a cut
    /// with unflushed writes, often in the middle of a commit.
    AfterWrite(u64),
    /// The library kills it right after the Nth flush from its start.
    StartUp(u64),
}

/// Running estimates to aim the flush-counted cuts.
#[derive(Debug, Default)]
struct Aim {
    /// Flushes before the server was ready, last seen.
    start_up: u64,
    /// Flushes after it was ready, in cuts at a random time.
    after_ready: Vec<u64>,
    /// Writes after it was ready, in cuts at a random time.
    writes_after_ready: Vec<u64>,
    /// Flushes of each file after it was ready, in cuts at a random time.
    flushes_of: BTreeMap<String, Vec<u64>>,
}

/// The largest count to aim a cut at: one and a half times the mean seen
/// in cuts at a random time (`guess` before any).
fn aim_at(seen: &[u64], guess: u64) -> u64 {
    if seen.is_empty() {
        return guess;
    }
    let mean = seen.iter().sum::<u64>() / seen.len() as u64;
    (mean * 3 / 2).max(2)
}

/// One store's state across its cycles.
struct StoreRun {
    data: PathBuf,
    log: PathBuf,
    root: RootKey,
    tenants: Tenants,
    model: Arc<Mutex<Model>>,
    seq: Arc<AtomicU64>,
    /// The files as the next server start finds them.
    files: Files,
    /// Writes half done in `files` (which that start must mend).
    half_done: u64,
    /// The last cut's mode.
    last_mode: Option<CutMode>,
    /// Codes changed since this cycle are checked by state after the next cut.
    unchecked_since: usize,
}

struct Harness<'a> {
    cfg: &'a Config,
    work: PathBuf,
    lib: PathBuf,
    rt: tokio::runtime::Runtime,
    rng: StdRng,
    aim: Aim,
    report: Report,
}

/// Runs the harness.
pub fn run(cfg: &Config) -> anyhow::Result<Report> {
    let started = Instant::now();
    let mut temp = None;
    let work = match &cfg.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.canonicalize()?
        }
        None => {
            let t = tempfile::Builder::new().prefix("dzl-powercut-").tempdir()?;
            let p = t.path().canonicalize()?;
            temp = Some(t);
            p
        }
    };
    let lib = build_library(&work)?;
    let mut h = Harness {
        cfg,
        lib,
        rt: tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?,
        rng: StdRng::seed_from_u64(cfg.seed),
        aim: Aim::default(),
        report: Report {
            seed: cfg.seed,
            ignore_wal_syncs: cfg.ignore_wal_syncs,
            ..Report::default()
        },
        work,
    };
    while h.report.cuts < cfg.cuts && h.report.violations.len() < cfg.max_violations {
        h.store()?;
    }
    let mut report = h.report;
    report.seconds = started.elapsed().as_secs_f64();
    if let Some(t) = temp {
        if report.violations.is_empty() {
            drop(t);
        } else {
            report.dir = Some(t.keep());
        }
    } else {
        report.dir = cfg.dir.clone();
    }
    Ok(report)
}

fn lock(m: &Mutex<Model>) -> std::sync::MutexGuard<'_, Model> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn remove_if_there(p: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

impl Harness<'_> {
    fn violation(&mut self, v: String) {
        log::error!("violation: {v}");
        self.report.violations.push(v);
    }

    /// Moves the model's violations into the report.
    fn collect(&mut self, model: &Mutex<Model>) {
        let taken = std::mem::take(&mut lock(model).violations);
        self.report.violations.extend(taken);
    }

    fn too_many(&self, model: &Mutex<Model>) -> bool {
        self.report.violations.len() + lock(model).violations.len() >= self.cfg.max_violations
    }

    fn ctl(&self, root: &RootKey) -> Ctl {
        Ctl {
            bin: self.cfg.dzlctl_bin.clone(),
            root: root.to_base64(),
        }
    }

    /// One store: provisioned, cut `cuts_per_store` times, finished.
    fn store(&mut self) -> anyhow::Result<()> {
        let n = self.report.stores;
        self.report.stores += 1;
        let data = self.work.join(format!("store-{n}"));
        if data.exists() {
            // Left by an earlier run in the same directory.
            std::fs::remove_dir_all(&data)?;
        }
        remove_if_there(&self.work.join(format!("store-{n}.log")))?;
        std::fs::create_dir_all(&data)?;
        let data = data.canonicalize()?;
        let root = new_root()?;
        let tenants = provision(
            &data,
            &root,
            &Provision {
                rate_limit: Some(1_000_000),
                others_rate_limit: None,
            },
        )?;
        let model = Arc::new(Mutex::new(Model::default()));
        let seq = Arc::new(AtomicU64::new(0));
        if self.cfg.warm_up > 0 {
            self.warm_up(
                &data,
                &root,
                &tenants,
                &model,
                &seq,
                &self.work.join(format!("store-{n}.log")),
            )?;
            self.report.warm_up_deposits += lock(&model).counts.deposits;
        }
        let mut s = StoreRun {
            files: Files::read(&data)?,
            log: self.work.join(format!("store-{n}.log")),
            data,
            root,
            tenants,
            model,
            seq,
            half_done: 0,
            last_mode: None,
            unchecked_since: 0,
        };
        let before = self.report.violations.len();
        let mut cycle = 0;
        while cycle < self.cfg.cuts_per_store
            && self.report.cuts < self.cfg.cuts
            && !self.too_many(&s.model)
        {
            let mode = match self.cfg.modes {
                Modes::Synced => CutMode::Synced,
                Modes::Reordered => CutMode::Reordered,
                Modes::Alternate if self.report.cuts.is_multiple_of(2) => CutMode::Synced,
                Modes::Alternate => CutMode::Reordered,
            };
            let usable = self.cycle(&mut s, cycle, mode)?;
            self.collect(&s.model);
            if !usable {
                break;
            }
            cycle += 1;
        }
        self.finish(&mut s, cycle)?;
        self.collect(&s.model);
        let m = lock(&s.model);
        let c = &m.counts;
        let r = &mut self.report;
        r.deposits_acknowledged += c.deposits;
        r.redemptions_acknowledged += c.redemptions;
        r.revocations_acknowledged += c.revocations;
        r.erasures_acknowledged += c.erasures;
        r.unanswered_requests += c.unanswered;
        r.unknown_found_committed += c.unknown_committed;
        r.unknown_found_not_committed += c.unknown_not_committed;
        r.redemption_checks += c.redemption_checks;
        r.status_checks += c.status_checks;
        r.lost += c.lost;
        r.double_redemptions += c.double;
        for i in 0..2 {
            r.lost_by_mode[i] += c.lost_by_mode[i];
            r.double_by_mode[i] += c.double_by_mode[i];
        }
        drop(m);
        if self.report.violations.len() == before {
            // Nothing to keep: a long run would fill the disk.
            let _ = std::fs::remove_dir_all(&s.data);
            let _ = std::fs::remove_file(&s.log);
        }
        Ok(())
    }

    /// Deposits `warm_up` codes from `workers` clients, untraced, and stops
    /// the server cleanly.
    fn warm_up(
        &mut self,
        data: &Path,
        root: &RootKey,
        tenants: &Tenants,
        model: &Arc<Mutex<Model>>,
        seq: &Arc<AtomicU64>,
        log: &Path,
    ) -> anyhow::Result<()> {
        let server = VaultProcess::start(
            &self.cfg.vault_bin,
            data,
            root,
            log,
            Duration::from_secs(60),
        )?;
        self.rt
            .block_on(wait_ready(&server.base, Duration::from_secs(60)))?;
        let clients = Arc::new(Clients {
            platform: RawClient::new(server.base.clone(), Some(tenants.platform.signer())),
            funder: RawClient::new(server.base.clone(), Some(tenants.funder.signer())),
            funder_id: tenants.funder.tenant_id.clone(),
        });
        let handles: Vec<_> = (0..self.cfg.workers)
            .map(|_| {
                self.rt.spawn(model::fill(
                    clients.clone(),
                    model.clone(),
                    seq.clone(),
                    self.cfg.warm_up,
                ))
            })
            .collect();
        for h in handles {
            self.rt.block_on(h)?;
        }
        server.stop(Duration::from_secs(60))?;
        model::reindex(model);
        Ok(())
    }

    fn choose_cut(&mut self) -> Cut {
        // A quarter each: at a random time, after the Nth flush, after
        // the Nth flush of one file, after the Nth write; one in ten during
        // start-up instead.
        if self.aim.start_up > 0 && self.rng.gen_ratio(1, 10) {
            return Cut::StartUp(self.rng.gen_range(1..=self.aim.start_up));
        }
        match self.rng.gen_range(0..4) {
            3 if !self.aim.flushes_of.is_empty() => {
                let names: Vec<&String> = self.aim.flushes_of.keys().collect();
                let name = names[self.rng.gen_range(0..names.len())].clone();
                let max = aim_at(&self.aim.flushes_of[&name], 10);
                Cut::AfterFlushOf(self.rng.gen_range(1..=max), name)
            }
            0 | 3 => {
                let span = self.cfg.max_load.saturating_sub(self.cfg.min_load);
                let ms = self.rng.gen_range(0..=span.as_millis() as u64);
                Cut::Time(self.cfg.min_load + Duration::from_millis(ms))
            }
            1 => Cut::AfterFlush(self.rng.gen_range(1..=aim_at(&self.aim.after_ready, 40))),
            _ => Cut::AfterWrite(
                self.rng
                    .gen_range(1..=aim_at(&self.aim.writes_after_ready, 400)),
            ),
        }
    }

    /// One cycle: start on the files, check, load, cut, rebuild, check the
    /// files. False when the store cannot go on (the server did not start).
    fn cycle(&mut self, s: &mut StoreRun, cycle: usize, mode: CutMode) -> anyhow::Result<bool> {
        let trace_path = self.work.join("trace");
        let arm = self.work.join("armed");
        remove_if_there(&trace_path)?;
        remove_if_there(&arm)?;
        let cut = self.choose_cut();
        let lib = self.lib.clone().into_os_string();
        let dir = s.data.clone().into_os_string();
        let trace_os = trace_path.clone().into_os_string();
        let arm_os = arm.clone().into_os_string();
        let n = match &cut {
            Cut::AfterFlush(n) | Cut::AfterFlushOf(n, _) | Cut::AfterWrite(n) | Cut::StartUp(n) => {
                n.to_string()
            }
            Cut::Time(_) => String::new(),
        };
        let mut env: Vec<(&str, &std::ffi::OsStr)> = vec![
            ("LD_PRELOAD", &lib),
            ("DZL_PC_DIR", &dir),
            ("DZL_PC_LOG", &trace_os),
        ];
        if !matches!(cut, Cut::StartUp(_)) {
            env.push(("DZL_PC_ARM", &arm_os));
        }
        match &cut {
            Cut::AfterWrite(_) => env.push(("DZL_PC_CUT_AT_WRITE", n.as_ref())),
            Cut::AfterFlush(_) | Cut::StartUp(_) => env.push(("DZL_PC_CUT_AT_SYNC", n.as_ref())),
            Cut::AfterFlushOf(_, name) => {
                env.push(("DZL_PC_CUT_AT_SYNC", n.as_ref()));
                env.push(("DZL_PC_CUT_FILE", name.as_ref()));
            }
            Cut::Time(_) => {}
        }
        let started = Utc::now();
        let mut clock = Phases::new();
        lock(&s.model).after = s.last_mode;
        let cut_armed = !matches!(cut, Cut::Time(_));
        let server = match self.start(s, &env, cut_armed) {
            Ok(server) => server,
            Err(e) => {
                lock(&s.model).violation(format!("cycle {cycle}: {e:#}"));
                return Ok(false);
            }
        };
        clock.mark();
        let (reached_ready, loaded, killed_itself) = match server {
            None => (false, false, true),
            Some(mut server) => {
                std::fs::write(&arm, b"")?;
                let clients = Arc::new(Clients {
                    platform: RawClient::new(
                        server.base.clone(),
                        Some(s.tenants.platform.signer()),
                    ),
                    funder: RawClient::new(server.base.clone(), Some(s.tenants.funder.signer())),
                    funder_id: s.tenants.funder.tenant_id.clone(),
                });
                let scope = Scope::AfterCut {
                    changed_in: s.unchecked_since,
                    sample: self.cfg.sample,
                };
                self.rt.block_on(model::check(
                    &clients,
                    &s.model,
                    scope,
                    &mut self.rng,
                    cycle,
                    cut_armed,
                ));
                model::reindex(&s.model);
                clock.mark();
                let outcome = if server.exited()? {
                    // Cut during the checks: what they did not reach is
                    // checked after the next start.
                    (true, false, true)
                } else {
                    s.unchecked_since = cycle;
                    (
                        true,
                        true,
                        self.load(&mut server, s, &clients, cycle, &cut)?,
                    )
                };
                server.kill9()?;
                outcome
            }
        };
        let cut_at = Utc::now();
        clock.mark_at(2);
        let bytes = std::fs::read(&trace_path).unwrap_or_default();
        let trace = trace::parse(&bytes)?;
        let opts = CutOptions {
            mode,
            ignore_syncs_of: self.cfg.ignore_wal_syncs.then_some("-wal"),
        };
        let (files, stats) = trace::power_cut(&s.files, &trace, &opts, &mut self.rng)
            .context("rebuilding the files from the trace")?;
        drop(trace);
        files.write(&s.data)?;
        s.files = files;
        s.last_mode = Some(mode);
        self.count_cut(
            &stats,
            &cut,
            mode,
            bytes.len() as u64,
            reached_ready,
            loaded,
            killed_itself,
        );
        clock.mark_at(3);
        self.check_files(s, started, cut_at, reached_ready)?;
        clock.mark_at(4);
        if self.cfg.verbose {
            let m = lock(&s.model);
            eprintln!(
                "cut {:>4} (store {}, {:?}, {}): trace {} KiB, {} flushes, {} KiB unflushed \
                 ({} pieces kept, {} dropped), {} half done; acknowledged {} deposits {} \
                 redemptions {} revocations {} erasures; violations {}; ms: {}",
                self.report.cuts,
                self.report.stores - 1,
                mode,
                describe(&cut, killed_itself, reached_ready, loaded),
                bytes.len() / 1024,
                stats.syncs,
                stats.unsynced_bytes / 1024,
                stats.pieces_kept,
                stats.pieces_dropped,
                s.half_done,
                m.counts.deposits,
                m.counts.redemptions,
                m.counts.revocations,
                m.counts.erasures,
                self.report.violations.len() + m.violations.len(),
                clock
            );
        }
        Ok(true)
    }

    /// Starts the server with `env` and waits until it is ready. `None`
    /// when it died meanwhile and a cut was armed (a cut in start-up).
    fn start(
        &mut self,
        s: &StoreRun,
        env: &[(&str, &std::ffi::OsStr)],
        cut_armed: bool,
    ) -> anyhow::Result<Option<VaultProcess>> {
        let startup = Duration::from_secs(60);
        let server = match VaultProcess::start_with(
            &self.cfg.vault_bin,
            &s.data,
            &s.root,
            &s.log,
            startup,
            env,
        ) {
            Ok(server) => server,
            Err(e) => {
                let killed = e
                    .downcast_ref::<ExitedEarly>()
                    .is_some_and(|x| x.status.signal() == Some(SIGKILL));
                if killed && cut_armed {
                    return Ok(None);
                }
                return Err(e.context("the server did not start on the files a power cut left"));
            }
        };
        let mut server = server;
        let deadline = Instant::now() + startup;
        loop {
            let step = Duration::from_millis(250);
            if self.rt.block_on(wait_ready(&server.base, step)).is_ok() {
                break;
            }
            if server.exited()? {
                if cut_armed {
                    return Ok(None);
                }
                anyhow::bail!("the server died before it was ready on the files a power cut left");
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the server was not ready within {startup:?} on the files a power cut left"
            );
        }
        Ok(Some(server))
    }

    /// The mixed load until the cut; whether the server killed itself.
    fn load(
        &mut self,
        server: &mut VaultProcess,
        s: &StoreRun,
        clients: &Arc<Clients>,
        cycle: usize,
        cut: &Cut,
    ) -> anyhow::Result<bool> {
        let stop = Arc::new(AtomicBool::new(false));
        let handles: Vec<_> = (0..self.cfg.workers)
            .map(|w| {
                self.rt.spawn(model::worker(
                    clients.clone(),
                    s.model.clone(),
                    stop.clone(),
                    s.seq.clone(),
                    cycle,
                    self.cfg.seed ^ ((self.report.cuts as u64) << 20) ^ w as u64,
                ))
            })
            .collect();
        let limit = match *cut {
            Cut::Time(d) => d,
            // A flush count the load never reaches: cut at the latest time.
            _ => self.cfg.max_load * 3,
        };
        let until = Instant::now() + limit;
        let mut killed_itself = false;
        while Instant::now() < until {
            if server.exited()? {
                killed_itself = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        // No new requests from here on; those in flight meet the cut.
        stop.store(true, Ordering::SeqCst);
        if !killed_itself {
            server.sigkill()?;
        }
        for h in handles {
            if let Err(e) = self.rt.block_on(h) {
                lock(&s.model).violation(format!("cycle {cycle}: a client failed: {e}"));
            }
        }
        Ok(killed_itself)
    }

    #[allow(clippy::too_many_arguments)]
    fn count_cut(
        &mut self,
        stats: &CutStats,
        cut: &Cut,
        mode: CutMode,
        trace_bytes: u64,
        reached_ready: bool,
        loaded: bool,
        killed_itself: bool,
    ) {
        let r = &mut self.report;
        r.cuts += 1;
        match mode {
            CutMode::Synced => r.cuts_synced += 1,
            CutMode::Reordered => r.cuts_reordered += 1,
        }
        if !reached_ready {
            r.cuts_in_start_up += 1;
        } else if !loaded {
            r.cuts_in_checks += 1;
        } else if killed_itself && matches!(cut, Cut::AfterWrite(_)) {
            r.cuts_after_a_write += 1;
        } else if killed_itself {
            r.cuts_after_a_flush += 1;
            if matches!(cut, Cut::AfterFlushOf(..)) {
                r.cuts_after_a_flush_of_one_file += 1;
            }
        } else {
            r.cuts_at_random_time += 1;
        }
        r.trace_bytes += trace_bytes;
        r.flushes += stats.syncs;
        r.unflushed_bytes += stats.unsynced_bytes;
        r.pieces_kept += stats.pieces_kept;
        r.pieces_dropped += stats.pieces_dropped;
        r.dir_ops_dropped += stats.dir_ops_dropped;
        r.wal_headers += stats.wal_headers;
        r.wal_headers_over_unflushed_db += stats.wal_headers_over_unflushed_db;
        if reached_ready {
            self.aim.start_up = stats.syncs_before_armed;
        }
        if loaded && matches!(cut, Cut::Time(_)) {
            self.aim
                .after_ready
                .push(stats.syncs.saturating_sub(stats.syncs_before_armed));
            self.aim.writes_after_ready.push(stats.writes_after_armed);
            for (name, n) in &stats.syncs_after_armed_of {
                self.aim
                    .flushes_of
                    .entry(name.clone())
                    .or_default()
                    .push(*n);
            }
        }
    }

    /// The checks of the files a cut left, on a copy, with no server.
    fn check_files(
        &mut self,
        s: &mut StoreRun,
        started: DateTime<Utc>,
        cut_at: DateTime<Utc>,
        reached_ready: bool,
    ) -> anyhow::Result<()> {
        let scratch = self.work.join("scratch");
        if scratch.exists() {
            std::fs::remove_dir_all(&scratch)?;
        }
        s.files.write(&scratch)?;
        let mut problems = Vec::new();
        for db in [
            dzl_store::sqlite::vault_db(&scratch),
            dzl_store::sqlite::identity_db(&scratch),
        ] {
            if let Err(e) = integrity_check(&db) {
                problems.push(format!("{e:#}"));
            }
        }
        self.report.integrity_checks += 1;
        let found = match half_done(&scratch) {
            Ok(h) => {
                let k = &mut self.report.half_done_by_kind;
                k.deposits_without_identity += h.deposits_without_identity;
                k.erased_with_identity += h.erased_with_identity;
                k.identities_without_deposit += h.identities_without_deposit;
                h.total()
            }
            Err(e) => {
                problems.push(format!("counting half-done writes: {e:#}"));
                0
            }
        };
        let mid = Utc::now();
        let ctl = self.ctl(&s.root);
        match ctl.verify(&scratch)? {
            Ok(_) => self.report.audit_verified += 1,
            Err(e) => problems.push(e),
        }
        if let Err(e) = pairs_check(&scratch) {
            problems.push(format!("after dzlctl opened the store: {e:#}"));
        }
        match ctl.export(&scratch, Some(started)) {
            Ok(entries) => {
                let by_ctl = entries.iter().filter(|e| e.at >= mid && e.mends()).count() as u64;
                let by_server = entries
                    .iter()
                    .filter(|e| e.at < cut_at && e.mends())
                    .count() as u64;
                if by_ctl != found {
                    problems.push(format!(
                        "{found} writes were half done, dzlctl's opening audited {by_ctl} mended"
                    ));
                }
                let expected = s.half_done;
                if (reached_ready && by_server != expected) || by_server > expected {
                    problems.push(format!(
                        "the server opened files with {expected} writes half done and audited \
                         {by_server} mended"
                    ));
                }
                self.report.mended_by_dzlctl += by_ctl;
                self.report.mended_by_server += by_server;
                self.report.mended_shreddings_by_server += entries
                    .iter()
                    .filter(|e| e.at < cut_at && e.mends_a_shredding())
                    .count() as u64;
            }
            Err(e) => problems.push(format!("{e:#}")),
        }
        self.report.half_done_found += found;
        s.half_done = found;
        let mut m = lock(&s.model);
        m.after = s.last_mode;
        for p in problems {
            m.violation(format!("cut {}: {p}", self.report.cuts));
        }
        Ok(())
    }

    /// The store's end: every code redeemed, a clean stop, the audit trail.
    fn finish(&mut self, s: &mut StoreRun, cycle: usize) -> anyhow::Result<()> {
        lock(&s.model).after = s.last_mode;
        let started = Utc::now();
        let server = match VaultProcess::start(
            &self.cfg.vault_bin,
            &s.data,
            &s.root,
            &s.log,
            Duration::from_secs(60),
        ) {
            Ok(server) => server,
            Err(e) => {
                self.violation(format!(
                    "the server did not start at the store's end: {e:#}"
                ));
                return Ok(());
            }
        };
        let ready = self
            .rt
            .block_on(wait_ready(&server.base, Duration::from_secs(60)));
        if let Err(e) = ready {
            self.violation(format!(
                "the server was not ready at the store's end: {e:#}"
            ));
            return Ok(());
        }
        let clients = Arc::new(Clients {
            platform: RawClient::new(server.base.clone(), Some(s.tenants.platform.signer())),
            funder: RawClient::new(server.base.clone(), Some(s.tenants.funder.signer())),
            funder_id: s.tenants.funder.tenant_id.clone(),
        });
        self.rt.block_on(model::check(
            &clients,
            &s.model,
            Scope::Everything,
            &mut self.rng,
            cycle,
            false,
        ));
        server.stop(Duration::from_secs(30))?;
        let mut problems = Vec::new();
        for db in [
            dzl_store::sqlite::vault_db(&s.data),
            dzl_store::sqlite::identity_db(&s.data),
        ] {
            if let Err(e) = integrity_check(&db) {
                problems.push(format!("{e:#}"));
            }
        }
        self.report.integrity_checks += 1;
        let ctl = self.ctl(&s.root);
        match ctl.verify(&s.data)? {
            Ok(n) => {
                self.report.audit_verified += 1;
                self.report.audit_entries_at_store_ends += n;
            }
            Err(e) => problems.push(e),
        }
        if let Err(e) = pairs_check(&s.data) {
            problems.push(format!("{e:#}"));
        }
        let entries = match ctl.export(&s.data, None) {
            Ok(entries) => {
                let by_server = entries
                    .iter()
                    .filter(|e| e.at >= started && e.mends())
                    .count() as u64;
                if by_server != s.half_done {
                    problems.push(format!(
                        "the server opened files with {} writes half done and audited \
                         {by_server} mended",
                        s.half_done
                    ));
                }
                self.report.mended_by_server += by_server;
                self.report.mended_shreddings_by_server += entries
                    .iter()
                    .filter(|e| e.at >= started && e.mends_a_shredding())
                    .count() as u64;
                Some(entries)
            }
            Err(e) => {
                problems.push(format!("{e:#}"));
                None
            }
        };
        let mut m = lock(&s.model);
        for p in problems {
            m.violation(format!("store end: {p}"));
        }
        if let Some(entries) = entries {
            audit_covers(&entries, &mut m);
        }
        Ok(())
    }
}

/// Every acknowledged write has its `ok` entry; no code has two
/// redemptions (one code per deposit: counted by deposit).
fn audit_covers(entries: &[Entry], m: &mut Model) {
    let mut ok: HashMap<&str, HashSet<&str>> = HashMap::new();
    let mut redeemed: BTreeMap<&str, u32> = BTreeMap::new();
    for e in entries.iter().filter(|e| e.result == "ok") {
        let id = match e.operation.as_str() {
            "deposit.create" | "deposit.erase" => e.deposit_id.as_deref(),
            "redemption.create" => {
                if let Some(d) = e.deposit_id.as_deref() {
                    *redeemed.entry(d).or_default() += 1;
                }
                e.redemption_id.as_deref()
            }
            "code.revoke" => e.code_id.as_deref(),
            _ => None,
        };
        if let Some(id) = id {
            ok.entry(e.operation.as_str()).or_default().insert(id);
        }
    }
    let acked = m.acknowledged();
    let mut missing = Vec::new();
    for (op, ids) in [
        ("deposit.create", &acked.deposits),
        ("redemption.create", &acked.redemptions),
        ("code.revoke", &acked.revocations),
        ("deposit.erase", &acked.erasures),
    ] {
        let have = ok.get(op);
        for id in ids {
            if !have.is_some_and(|h| h.contains(id.as_str())) {
                missing.push(format!(
                    "an acknowledged {op} of {id} has no ok audit entry"
                ));
            }
        }
    }
    for v in missing {
        m.lost(v);
    }
    for (deposit, n) in redeemed {
        if n > 1 {
            m.double(format!(
                "the audit trail holds {n} successful redemptions of deposit {deposit}'s code"
            ));
        }
    }
}

fn describe(cut: &Cut, killed_itself: bool, reached_ready: bool, loaded: bool) -> String {
    match cut {
        _ if !reached_ready => "in start-up".into(),
        _ if !loaded => "in the checks after start".into(),
        Cut::Time(d) => format!("{} ms into the load", d.as_millis()),
        Cut::AfterFlush(n) if killed_itself => format!("after flush {n}"),
        Cut::AfterFlush(n) => format!("flush {n} never came; at the latest time"),
        Cut::AfterFlushOf(n, f) if killed_itself => format!("after flush {n} of {f}"),
        Cut::AfterFlushOf(n, f) => format!("flush {n} of {f} never came; at the latest time"),
        Cut::AfterWrite(n) if killed_itself => format!("after write {n}"),
        Cut::AfterWrite(n) => format!("write {n} never came; at the latest time"),
        Cut::StartUp(n) => format!("start-up flush {n} never came; at the latest time"),
    }
}

/// Where a cycle's time went, for `--verbose`: start, checks, load and
/// cut, rebuild, checks of the files.
struct Phases {
    last: Instant,
    ms: [u128; 5],
    at: usize,
}

impl Phases {
    fn new() -> Phases {
        Phases {
            last: Instant::now(),
            ms: [0; 5],
            at: 0,
        }
    }

    /// Ends the current phase.
    fn mark(&mut self) {
        let i = self.at;
        self.mark_at(i);
    }

    /// Ends phase `i` (phases skipped stay 0).
    fn mark_at(&mut self, i: usize) {
        let now = Instant::now();
        if let Some(ms) = self.ms.get_mut(i) {
            *ms = now.duration_since(self.last).as_millis();
        }
        self.last = now;
        self.at = i + 1;
    }
}

impl std::fmt::Display for Phases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [start, checks, load, rebuild, files] = self.ms;
        write!(
            f,
            "start {start}, checks {checks}, load {load}, rebuild {rebuild}, file checks {files}"
        )
    }
}

/// The signal the library (and the harness) cut with.
const SIGKILL: i32 = 9;
