//! Throughput of `keys rewrap`: builds a store holding DZL_BENCH_KEYS data
//! keys (default 100,000: half records keys, half identity keys) under KEK
//! version 1, rotates to version 2, and moves every key onto it with
//! `admin::rewrap` — the function `dzlctl keys rewrap` runs — in batches of
//! 2,000 (DZL_BENCH_BATCH to change), then prints keys per second. With DZL_BENCH_DZLCTL=<path to a
//! dzlctl binary> it times that binary's `keys rewrap` instead.
//!
//! Run: `cargo bench -p dzl-store --bench rewrap`
//! (or, for the binary: `cargo build --release -p dzlctl &&
//! DZL_BENCH_DZLCTL=target/release/dzlctl cargo bench -p dzl-store --bench rewrap`).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use chrono::{Duration, Utc};
use dzl_crypto::{DataKey, SystemRandom};
use dzl_store::admin::{self, RewrapOptions};
use dzl_store::{Call, NewDeposit, Sealed, SqliteStore, Store};
use dzl_types::{DepositId, Purpose, ScopeSet, SubjectRef};

fn main() {
    if let Err(e) = run() {
        eprintln!("rewrap bench failed: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let keys: usize = std::env::var("DZL_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let expected = keys / 2 * 2;
    let deposits = keys / 2;
    // DZL_BENCH_DIR keeps the store between runs (each run rotates once
    // more and moves every key again), so profiles can skip the set-up.
    let tmp = tempfile::tempdir()?;
    let dir = std::env::var_os("DZL_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_owned());
    let data = dir.join("data");
    let key_file = dir.join("root.key");
    let reuse = key_file.exists();
    let root = if reuse {
        admin::RootKeySource {
            file: Some(key_file.clone()),
            inline: None,
        }
        .load()?
    } else {
        std::fs::create_dir_all(&dir)?;
        admin::write_new_root_key(&key_file)?
    };
    let store = SqliteStore::open(&data)?;
    if !reuse {
        admin::init(&store, &root, "cli:bench")?;
    }
    let keyring = admin::load_keyring(&store, &root)?;
    let deposits = if reuse { 0 } else { deposits };

    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let now = Utc::now();
    let consent = serde_json::json!({
        "consent_id": "CNS-1",
        "granted_at": now - Duration::hours(1),
        "expires_at": now + Duration::days(365),
        "scopes": ["applicant", "device", "risk"],
        "evidence_sha256": "a".repeat(64),
    })
    .to_string();
    // Many writers at once, so the store's group commit batches them.
    std::thread::scope(|s| {
        for _ in 0..16 {
            s.spawn(|| {
                let rng = SystemRandom::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= deposits {
                        break;
                    }
                    let id = DepositId::from_trusted(format!("dep_{i:032x}"));
                    let wrap = |kind: &str| {
                        let dk = DataKey::generate(&rng).expect("rng");
                        let w = keyring.wrap_data_key(&dk, id.as_str(), kind).expect("wrap");
                        Sealed {
                            kek_version: w.kek_version,
                            bytes: w.bytes,
                        }
                    };
                    store
                        .create_deposit(NewDeposit {
                            call: Call {
                                actor: "ten_bench".into(),
                                operation: "deposit.create",
                                now,
                            },
                            id: id.clone(),
                            external_ref: format!("B-{i}"),
                            purpose: Purpose::CreditApplication,
                            consent_json: consent.clone(),
                            consent_scopes: ScopeSet::ALL,
                            consent_expires: now + Duration::days(365),
                            groups: ScopeSet::ALL,
                            suite: dzl_crypto::Suite::Intl,
                            subject_index: format!("{i:064x}"),
                            subject_ref: SubjectRef::from_trusted(format!("sub_{i:032x}")),
                            records_key: wrap("records"),
                            records: vec![(dzl_types::Group::Risk, vec![0u8; 64])],
                            identity_key: wrap("identity"),
                            identity: vec![0u8; 160],
                            codes: vec![],
                        })
                        .expect("deposit");
                }
            });
        }
    });
    eprintln!(
        "stored {deposits} deposits ({} data keys) in {:.1} s",
        deposits * 2,
        started.elapsed().as_secs_f64()
    );
    admin::rotate_keys(&store, &root, "cli:bench")?;

    if let Some(bin) = std::env::var_os("DZL_BENCH_DZLCTL") {
        // `cargo bench` runs this from the crate's directory; a relative
        // path is taken from the workspace's root, where the command is typed.
        let bin = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(bin);
        store.close();
        drop(store);
        // The binary waits for running servers to load the new version
        // (up to 2 s after the rotation) before it starts; its own figure
        // excludes that wait.
        let started = Instant::now();
        let out = std::process::Command::new(&bin)
            .env("DZL_ROOT_KEY_FILE", &key_file)
            .arg("--data-dir")
            .arg(&data)
            .args(["--json", "keys", "rewrap"])
            .output()
            .map_err(|e| format!("{}: {e}", bin.display()))?;
        let wall = started.elapsed().as_secs_f64();
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned().into());
        }
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        println!(
            "dzlctl keys rewrap: {} data keys in {} s = {} keys/s (process wall time {wall:.2} s, including the 2 s pickup wait)",
            doc["data_keys_rewrapped"], doc["elapsed_seconds"], doc["keys_per_second"]
        );
        return Ok(());
    }

    let keyring = admin::load_keyring(&store, &root)?;
    if std::env::var_os("DZL_BENCH_PHASES").is_some() {
        phases(&store, &keyring);
    }
    if std::env::var_os("DZL_BENCH_SEQUENTIAL").is_some() {
        phases_write(&store, &keyring);
        return Ok(());
    }
    let report = admin::rewrap(
        &store,
        &keyring,
        &Call {
            actor: "cli:bench".into(),
            operation: "keys.rewrap",
            now: Utc::now(),
        },
        RewrapOptions {
            wait_for_servers: false,
            batch_size: std::env::var("DZL_BENCH_BATCH")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(admin::DEFAULT_REWRAP_BATCH),
        },
        &mut |_, _| {},
    )?;
    let secs = report.elapsed.as_secs_f64();
    println!(
        "admin::rewrap: {} data keys in {secs:.3} s = {:.0} keys/s",
        report.data_keys_rewrapped,
        report.data_keys_rewrapped as f64 / secs,
    );
    assert_eq!(report.data_keys_rewrapped as usize, expected);
    assert_eq!(report.data_keys_remaining, 0);
    Ok(())
}

/// Times reading, unwrapping and rewrapping alone (no writes).
fn phases(store: &SqliteStore, keyring: &dzl_crypto::Keyring) {
    let t = Instant::now();
    let mut all = Vec::new();
    let old = store
        .keks()
        .expect("keks")
        .iter()
        .filter(|k| k.state == dzl_store::KekState::DecryptOnly)
        .map(|k| k.version)
        .collect::<Vec<_>>();
    for (kind, version) in dzl_store::DataKeyKind::ALL
        .into_iter()
        .flat_map(|k| old.iter().map(move |v| (k, *v)))
    {
        let mut after: Option<DepositId> = None;
        loop {
            let batch = store
                .data_keys_on(kind, version, after.as_ref(), 2000)
                .expect("read");
            let Some(last) = batch.last() else { break };
            after = Some(last.deposit_id.clone());
            all.extend(batch);
        }
    }
    eprintln!(
        "read {} keys: {:.3} s",
        all.len(),
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    for k in &all {
        let w = admin::wrapped(&k.wrapped);
        keyring
            .rewrap_data_key(&w, k.deposit_id.as_str(), k.kind.as_str())
            .expect("rewrap");
    }
    eprintln!("rewrap crypto: {:.3} s", t.elapsed().as_secs_f64());
}

/// Times the three phases one after the other, doing the whole rewrap.
fn phases_write(store: &SqliteStore, keyring: &dzl_crypto::Keyring) {
    let t = Instant::now();
    let mut all = Vec::new();
    let old = store
        .keks()
        .expect("keks")
        .iter()
        .filter(|k| k.state == dzl_store::KekState::DecryptOnly)
        .map(|k| k.version)
        .collect::<Vec<_>>();
    for v in old {
        for kind in dzl_store::DataKeyKind::ALL {
            let mut after: Option<DepositId> = None;
            loop {
                let batch = store
                    .data_keys_on(kind, v, after.as_ref(), 2000)
                    .expect("read");
                let Some(last) = batch.last() else { break };
                after = Some(last.deposit_id.clone());
                all.extend(batch);
            }
        }
    }
    let read = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let out: Vec<dzl_store::RewrappedDataKey> = all
        .into_iter()
        .map(|k| {
            let w = keyring
                .rewrap_data_key(
                    &admin::wrapped(&k.wrapped),
                    k.deposit_id.as_str(),
                    k.kind.as_str(),
                )
                .expect("rewrap");
            dzl_store::RewrappedDataKey {
                kind: k.kind,
                deposit_id: k.deposit_id,
                from_version: k.wrapped.kek_version,
                wrapped: Sealed {
                    kek_version: w.kek_version,
                    bytes: w.bytes,
                },
            }
        })
        .collect();
    let crypto = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let n = out.len();
    let mut it = out.into_iter().peekable();
    while it.peek().is_some() {
        let batch: Vec<_> = it.by_ref().take(2000).collect();
        store
            .rewrap_data_keys(keyring.active_version(), batch)
            .expect("write");
    }
    eprintln!(
        "{n} keys: read {read:.3} s, crypto {crypto:.3} s, write {:.3} s",
        t.elapsed().as_secs_f64()
    );
}
