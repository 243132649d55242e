//! The SQLite writer alone, without HTTP: DZL_BENCH_THREADS callers
//! (default 64) each store deposits shaped like `dzl-load`'s (three sealed
//! groups of 1.2 KB in all, one code) for DZL_BENCH_SECS seconds (default
//! 5), then redeem the codes they got, oldest first, for as long again. Prints each
//! phase's throughput and the writer thread's CPU time per operation.
//! DZL_BENCH_PRELOAD deposits first (default 10,000, without timing them),
//! so the figures are for a store that already holds that many.
//!
//! Run: `cargo bench -p dzl-store --bench writer`. Under `cargo test`
//! (no `--bench` argument) it runs a short smoke run instead: 200
//! preloaded, one second per phase.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration as StdDuration, Instant};

use chrono::{Duration, Utc};
use dzl_crypto::{new_ordered_id, DataKey, Keyring, SecureRandom, SystemRandom};
use dzl_store::admin::{self, NewTenant};
use dzl_store::{Call, NewCode, NewDeposit, RedeemAttempt, Sealed, SqliteStore, Store, TenantKind};
use dzl_types::{
    AuthCode, CodeId, DepositId, Group, Purpose, RedemptionId, ScopeSet, SubjectRef, TenantId,
};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU time (user + system) of this process's threads named `name`, in
/// clock ticks.
fn thread_ticks(name: &str) -> u64 {
    let mut total = 0;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if &stat[open + 1..close] != name {
            continue;
        }
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        // utime and stime are fields 14 and 15 of stat; 12 and 13 here.
        total += fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
    }
    total
}

const TICKS_PER_SEC: f64 = 100.0;

struct Bench {
    store: SqliteStore,
    keyring: Keyring,
    platform: TenantId,
    funder: TenantId,
    consent: String,
    next: AtomicU64,
}

impl Bench {
    fn deposit(&self, rng: &SystemRandom) -> AuthCode {
        let now = Utc::now();
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        let ms = now.timestamp_millis() as u64;
        let id = DepositId::from_trusted(new_ordered_id("dep", ms, rng).unwrap());
        let wrap = |kind: &str| {
            let dk = DataKey::generate(rng).unwrap();
            let w = self.keyring.wrap_data_key(&dk, id.as_str(), kind).unwrap();
            Sealed {
                kek_version: w.kek_version,
                bytes: w.bytes,
            }
        };
        let mut index = [0u8; 32];
        rng.fill(&mut index).unwrap();
        let secret = dzl_types::code::CodeSecret::generate(rng).unwrap();
        let codes = vec![NewCode {
            code_id: CodeId::from_trusted(new_ordered_id("cod", ms, rng).unwrap()),
            secret_hash: secret.hash().to_vec(),
            funder_id: self.funder.clone(),
            scopes: ScopeSet::parse_list("applicant,risk").unwrap(),
            ttl_seconds: 3600,
        }];
        let created = self
            .store
            .create_deposit(NewDeposit {
                call: Call {
                    actor: self.platform.to_string(),
                    operation: "deposit.create",
                    now,
                },
                id: id.clone(),
                external_ref: format!("LOAN-{i:010}-{}", hex::encode(&index[..4])),
                purpose: Purpose::CreditApplication,
                consent_json: self.consent.clone(),
                consent_scopes: ScopeSet::ALL,
                consent_expires: now + Duration::days(365),
                groups: ScopeSet::ALL,
                suite: dzl_crypto::Suite::Intl,
                subject_index: hex::encode(index),
                subject_ref: SubjectRef::from_trusted(new_ordered_id("sub", ms, rng).unwrap()),
                records_key: wrap("records"),
                records: vec![
                    (Group::Device, vec![7u8; 380]),
                    (Group::Risk, vec![9u8; 420]),
                ],
                identity_key: wrap("identity"),
                identity: vec![5u8; 400],
                codes,
            })
            .expect("deposit");
        let row = created.first().unwrap().row;
        secret.into_code(row)
    }

    fn redeem(&self, rng: &SystemRandom, code: AuthCode) {
        let now = Utc::now();
        let id = new_ordered_id("red", now.timestamp_millis() as u64, rng).unwrap();
        self.store
            .redeem(
                &Call {
                    actor: self.funder.to_string(),
                    operation: "code.redeem",
                    now,
                },
                RedeemAttempt {
                    code,
                    purpose: Purpose::CreditApplication,
                    redemption_id: RedemptionId::from_trusted(id),
                    limits: Default::default(),
                },
            )
            .expect("redeem");
    }
}

fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let threads = env("DZL_BENCH_THREADS", 64);
    let secs = env("DZL_BENCH_SECS", if smoke { 1 } else { 5 });
    let preload = env("DZL_BENCH_PRELOAD", if smoke { 200 } else { 10_000 });
    let tmp = tempfile::tempdir().unwrap();
    let dir = std::env::var_os("DZL_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_owned());
    let key_file = dir.join("root.key");
    std::fs::create_dir_all(&dir).unwrap();
    let root = admin::write_new_root_key(&key_file).unwrap();
    let store = SqliteStore::open(&dir.join("data")).unwrap();
    admin::init(&store, &root, "cli:bench").unwrap();
    let keyring = admin::load_keyring(&store, &root).unwrap();
    let tenant = |kind, name: &str| {
        admin::add_tenant(&store, &keyring, "cli:bench", NewTenant::new(kind, name))
            .unwrap()
            .tenant_id
    };
    let platform = tenant(TenantKind::Platform, "platform");
    let funder = tenant(TenantKind::Funder, "funder");
    let now = Utc::now();
    let consent = serde_json::json!({
        "consent_id": "CNS-2026-000001",
        "granted_at": now - Duration::hours(1),
        "expires_at": now + Duration::days(365),
        "scopes": ["applicant", "device", "risk"],
        "evidence_sha256": "a".repeat(64),
    })
    .to_string();
    let bench = Bench {
        store,
        keyring,
        platform,
        funder,
        consent,
        next: AtomicU64::new(0),
    };

    let preloaded = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let rng = SystemRandom::new();
                while preloaded.fetch_add(1, Ordering::Relaxed) < preload {
                    bench.deposit(&rng);
                }
            });
        }
    });

    let codes = Mutex::new(std::collections::VecDeque::new());
    let stop = AtomicBool::new(false);
    let phase = |name: &str, work: &(dyn Fn(&SystemRandom) -> bool + Sync)| {
        let done = AtomicU64::new(0);
        let running = AtomicU64::new(threads);
        stop.store(false, Ordering::Relaxed);
        let ticks = thread_ticks("dzl-sqlite-writ");
        let started = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    let rng = SystemRandom::new();
                    while !stop.load(Ordering::Relaxed) && work(&rng) {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    running.fetch_sub(1, Ordering::Relaxed);
                });
            }
            // Until the time is up or the work has run out.
            let end = started + StdDuration::from_secs(secs);
            while Instant::now() < end && running.load(Ordering::Relaxed) > 0 {
                std::thread::sleep(StdDuration::from_millis(5));
            }
            stop.store(true, Ordering::Relaxed);
        });
        let elapsed = started.elapsed().as_secs_f64();
        let n = done.load(Ordering::Relaxed).max(1);
        let writer_us = (thread_ticks("dzl-sqlite-writ") - ticks) as f64 / TICKS_PER_SEC * 1e6;
        println!(
            "{name:<11} {:>8.0}/s   writer {:>5.1} µs each",
            n as f64 / elapsed,
            writer_us / n as f64
        );
    };
    phase("deposit", &|rng| {
        let got = bench.deposit(rng);
        codes.lock().unwrap().push_back(got);
        true
    });
    phase("redemption", &|rng| {
        let Some(code) = codes.lock().unwrap().pop_front() else {
            return false;
        };
        bench.redeem(rng, code);
        true
    });
}
