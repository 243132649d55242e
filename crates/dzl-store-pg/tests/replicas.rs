//! What several replicas over one PostgreSQL must get right: exactly-once
//! redemption under concurrency (at READ COMMITTED and at SERIALIZABLE, as
//! on CockroachDB), a valid audit chain under concurrent appends, nonces,
//! rate limits and failure windows shared between stores, migrations that
//! run once when replicas start together, and clear errors when the
//! database is unreachable or too slow.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use chrono::Utc;
use common::{deposit, fresh, now_call, options, parties};
use dzl_store::{Call, RedeemAttempt, Store, StoreError};
use dzl_store_pg::testing::fresh_database;
use dzl_store_pg::{schema, Isolation, PgOptions, PgStore};
use dzl_types::{ErrorCode, Purpose, RedemptionId, TenantId};

/// `threads` threads, alternating between `stores`, redeem one code at once.
fn race_one_code(stores: &[PgStore], p: &common::Parties, threads: usize) -> (usize, Vec<String>) {
    let (_, codes) = deposit(&stores[0], p, "APP-RACE", &["applicant,device,risk"]).unwrap();
    let code = codes[0].clone();
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let store = stores[i % stores.len()].clone();
            let (barrier, code, funder) =
                (barrier.clone(), code.clone(), p.funder.tenant_id.clone());
            std::thread::spawn(move || {
                barrier.wait();
                store.redeem(
                    &now_call(&funder, "redemption.create"),
                    RedeemAttempt {
                        code,
                        purpose: Purpose::CreditApplication,
                        redemption_id: RedemptionId::from_trusted(format!("red_{i}")),
                    },
                )
            })
        })
        .collect();
    let mut ok = 0;
    let mut refused = Vec::new();
    for h in handles {
        match h.join().unwrap() {
            Ok(_) => ok += 1,
            Err(StoreError::Refused(c)) => refused.push(c.as_str().to_owned()),
            Err(e) => panic!("a redemption failed instead of being refused: {e}"),
        }
    }
    (ok, refused)
}

#[test]
fn exactly_one_of_32_concurrent_redemptions_across_two_replicas_wins() {
    let url = pg_url_or_skip!();
    let f = fresh(&url);
    let p = parties(&f);
    let replica = f.replica();
    let (ok, refused) = race_one_code(&[f.store.clone(), replica], &p, 32);
    assert_eq!(ok, 1, "refusals: {refused:?}");
    assert_eq!(refused.len(), 31);
    assert!(
        refused.iter().all(|c| c == "code_already_redeemed"),
        "{refused:?}"
    );
    // Every attempt is on one valid chain: init, 2 tenants, deposit, code, 32 attempts.
    assert_eq!(f.store.verify_audit(&mut |_| {}).unwrap(), Ok(37));
    let mut sql = f.sql();
    let redemptions: i64 = sql
        .query_one("SELECT count(*) FROM dzl.redemptions", &[])
        .unwrap()
        .get(0);
    assert_eq!(redemptions, 1);
}

#[test]
fn exactly_once_also_at_serializable_with_retries() {
    let url = pg_url_or_skip!();
    let f = fresh(&url);
    let p = parties(&f);
    let serializable = PgOptions {
        isolation: Isolation::Serializable,
        max_attempts: 40,
        ..options()
    };
    let a = PgStore::connect(f.db.url(), serializable.clone()).unwrap();
    let b = PgStore::connect(f.db.url(), serializable).unwrap();
    let (ok, refused) = race_one_code(&[a, b], &p, 12);
    assert_eq!(ok, 1, "refusals: {refused:?}");
    assert!(
        refused.iter().all(|c| c == "code_already_redeemed"),
        "{refused:?}"
    );
    assert_eq!(f.store.verify_audit(&mut |_| {}).unwrap(), Ok(5 + 12));
}

#[test]
fn concurrent_appends_from_two_replicas_keep_the_chain_valid() {
    let url = pg_url_or_skip!();
    let f = fresh(&url);
    let p = Arc::new(parties(&f));
    let stores = [f.store.clone(), f.replica()];
    let threads = 8;
    let per_thread: usize = 15;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let store = stores[i % 2].clone();
            let (barrier, p) = (barrier.clone(), p.clone());
            std::thread::spawn(move || {
                barrier.wait();
                for j in 0..per_thread {
                    if j % 3 == 0 {
                        // A deposit with a code: three entries in one transaction.
                        deposit(&store, &p, &format!("APP-{i}-{j}"), &["risk"]).unwrap();
                    } else {
                        let c = Call {
                            actor: format!("cli:t{i}"),
                            operation: "audit.verify",
                            now: Utc::now(),
                        };
                        store.record_action(&c, "ok", "test").unwrap();
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let deposits = threads * per_thread.div_ceil(3);
    let actions = threads * per_thread - deposits;
    let expected = 3 + deposits * 2 + actions;
    assert_eq!(
        stores[1].verify_audit(&mut |_| {}).unwrap(),
        Ok(expected as u64)
    );
    assert_eq!(f.store.audit_head_seq().unwrap(), expected as i64);
}

#[test]
fn a_nonce_is_refused_on_the_other_replica() {
    let url = pg_url_or_skip!();
    let f = fresh(&url);
    let (a, b) = (f.store.guards(), f.replica().guards());
    let now = 1_800_000_000;
    assert!(a.nonce_fresh("k_1", "n0nce-0000000001", now, 600).unwrap());
    assert!(!b
        .nonce_fresh("k_1", "n0nce-0000000001", now + 5, 600)
        .unwrap());
    assert!(!a
        .nonce_fresh("k_1", "n0nce-0000000001", now + 600, 600)
        .unwrap());
    assert!(
        b.nonce_fresh("k_2", "n0nce-0000000001", now + 5, 600)
            .unwrap(),
        "per key id"
    );
    assert!(
        b.nonce_fresh("k_1", "n0nce-0000000001", now + 601, 600)
            .unwrap(),
        "past the window it is fresh again, as in memory"
    );
    // Old nonces are swept.
    assert!(a.nonce_fresh("k_3", "n0nce-0000000003", now, 600).unwrap());
    assert_eq!(b.sweep_nonces(now + 1).unwrap(), 1);

    // Many replicas racing one nonce: exactly one sees it fresh.
    let guards: Vec<_> = (0..8)
        .map(|i| if i % 2 == 0 { a.clone() } else { b.clone() })
        .collect();
    let barrier = Arc::new(Barrier::new(guards.len()));
    let fresh_count: usize = guards
        .into_iter()
        .map(|g| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                g.nonce_fresh("k_9", "race-nonce-0000001", now, 600)
                    .unwrap()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| usize::from(h.join().unwrap()))
        .sum();
    assert_eq!(fresh_count, 1);
}

#[test]
fn the_token_bucket_is_shared_between_replicas() {
    let url = pg_url_or_skip!();
    let f = fresh(&url);
    let (a, b) = (f.store.guards(), f.replica().guards());
    let t = TenantId::from_trusted("ten_rate".into());
    let now = 1_800_000_000.0;
    // Capacity 2: one token from each replica, then none for either.
    assert_eq!(a.take_token(&t, 2, now).unwrap(), Ok(()));
    assert_eq!(b.take_token(&t, 2, now).unwrap(), Ok(()));
    assert_eq!(a.take_token(&t, 2, now).unwrap(), Err(1));
    assert_eq!(b.take_token(&t, 2, now + 0.1).unwrap(), Err(1));
    // Refilled at the rate.
    assert_eq!(b.take_token(&t, 2, now + 0.6).unwrap(), Ok(()));
    // Another tenant has its own bucket.
    let other = TenantId::from_trusted("ten_other".into());
    assert_eq!(a.take_token(&other, 2, now).unwrap(), Ok(()));

    // 40 concurrent takes of a 10-token bucket: exactly 10 granted.
    let busy = TenantId::from_trusted("ten_busy".into());
    let barrier = Arc::new(Barrier::new(8));
    let granted: usize = (0..8)
        .map(|i| {
            let g = if i % 2 == 0 { a.clone() } else { b.clone() };
            let (barrier, busy) = (barrier.clone(), busy.clone());
            std::thread::spawn(move || {
                barrier.wait();
                (0..5)
                    .filter(|_| g.take_token(&busy, 10, now).unwrap().is_ok())
                    .count()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .sum();
    assert_eq!(granted, 10);
}

#[test]
fn failure_windows_throttle_and_suspend_across_replicas() {
    let url = pg_url_or_skip!();
    let f = fresh(&url);
    let (a, b) = (f.store.guards(), f.replica().guards());
    let t = TenantId::from_trusted("ten_guess".into());
    let (per_minute, per_hour) = (3, 5);
    // The in-memory limiter's own sequence, spread over two replicas.
    assert!(!a.record_failure(&t, 100, per_hour).unwrap());
    assert!(!b.record_failure(&t, 100, per_hour).unwrap());
    assert_eq!(a.check_guessing(&t, 105, per_minute).unwrap(), Ok(()));
    assert!(!a.record_failure(&t, 100, per_hour).unwrap());
    assert_eq!(b.check_guessing(&t, 110, per_minute).unwrap(), Err(50));
    assert_eq!(
        a.check_guessing(&t, 160, per_minute).unwrap(),
        Ok(()),
        "a new minute"
    );
    assert!(!b.record_failure(&t, 161, per_hour).unwrap());
    assert!(a.record_failure(&t, 162, per_hour).unwrap(), "suspend");
    // The windows start afresh after the verdict.
    assert_eq!(b.check_guessing(&t, 163, per_minute).unwrap(), Ok(()));
    assert!(!b.record_failure(&t, 163, per_hour).unwrap());
    b.clear_failures(&t).unwrap();

    // Racing past the hourly threshold: exactly one replica is told to suspend.
    let racer = TenantId::from_trusted("ten_racer".into());
    let barrier = Arc::new(Barrier::new(8));
    let verdicts: usize = (0..8)
        .map(|i| {
            let g = if i % 2 == 0 { a.clone() } else { b.clone() };
            let (barrier, racer) = (barrier.clone(), racer.clone());
            std::thread::spawn(move || {
                barrier.wait();
                (0..5)
                    .filter(|_| g.record_failure(&racer, 1000, 40).unwrap())
                    .count()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .sum();
    assert_eq!(verdicts, 1);
}

#[test]
fn migrations_run_once_when_replicas_start_together() {
    let url = pg_url_or_skip!();
    let db = fresh_database(&url).unwrap();
    let replicas = 4;
    let barrier = Arc::new(Barrier::new(replicas));
    let handles: Vec<_> = (0..replicas)
        .map(|_| {
            let (barrier, url) = (barrier.clone(), db.url().to_owned());
            std::thread::spawn(move || {
                barrier.wait();
                PgStore::connect(&url, options())
            })
        })
        .collect();
    let stores: Vec<PgStore> = handles
        .into_iter()
        .map(|h| h.join().unwrap().expect("every replica starts"))
        .collect();
    let mut sql = postgres::Client::connect(db.url(), postgres::NoTls).unwrap();
    let versions: Vec<i32> = sql
        .query(
            "SELECT version FROM dzl.schema_migrations ORDER BY version",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let expected: Vec<i32> = schema::MIGRATIONS.iter().map(|m| m.version).collect();
    assert_eq!(versions, expected);
    assert_eq!(schema::current_version(), *expected.last().unwrap());
    // One generation row, one audit head: nothing ran twice.
    let generation: i64 = sql
        .query_one("SELECT count(*) FROM dzl.meta", &[])
        .unwrap()
        .get(0);
    assert_eq!(generation, 1);
    assert_eq!(stores[3].audit_head_seq().unwrap(), 0);
    // Connecting again changes nothing.
    drop(PgStore::connect(db.url(), options()).unwrap());
    let again: i64 = sql
        .query_one("SELECT count(*) FROM dzl.schema_migrations", &[])
        .unwrap()
        .get(0);
    assert_eq!(again, expected.len() as i64);
    drop(stores);
}

#[test]
fn a_newer_schema_is_refused() {
    let url = pg_url_or_skip!();
    let db = fresh_database(&url).unwrap();
    drop(PgStore::connect(db.url(), options()).unwrap());
    let mut sql = postgres::Client::connect(db.url(), postgres::NoTls).unwrap();
    sql.execute(
        "INSERT INTO dzl.schema_migrations (version, name) VALUES (999, 'from the future')",
        &[],
    )
    .unwrap();
    let err = PgStore::connect(db.url(), options()).unwrap_err();
    assert!(
        matches!(&err, StoreError::Invalid(m) if m.contains("999")),
        "{err}"
    );
}

#[test]
fn an_unreachable_database_is_a_clear_unavailable_error() {
    // Needs no PostgreSQL: nothing listens on port 1.
    let started = Instant::now();
    let err = PgStore::connect(
        "postgres://dzl:s3cret-pw@127.0.0.1:1/dzl_test",
        PgOptions {
            connect_timeout: Duration::from_secs(1),
            ..PgOptions::default()
        },
    )
    .unwrap_err();
    let StoreError::Unavailable(message) = &err else {
        panic!("expected Unavailable, got {err:?}")
    };
    assert!(message.contains("127.0.0.1:1"), "{message}");
    assert!(!message.contains("s3cret-pw"), "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // A URL that does not parse is Invalid and not repeated either.
    let err = PgStore::connect("postgres://dzl:s3cret-pw@[::1", PgOptions::default()).unwrap_err();
    assert!(
        matches!(&err, StoreError::Invalid(m) if !m.contains("s3cret")),
        "{err:?}"
    );
}

#[test]
fn a_statement_stuck_behind_a_lock_times_out_as_unavailable_and_writes_nothing() {
    let url = pg_url_or_skip!();
    let f = fresh(&url);
    let impatient = PgStore::connect(
        f.db.url(),
        PgOptions {
            statement_timeout: Duration::from_millis(300),
            ..options()
        },
    )
    .unwrap();
    let p = parties(&f);
    let seq = f.store.audit_head_seq().unwrap();
    // Another session holds the audit head.
    let mut sql = f.sql();
    let mut holder = sql.transaction().unwrap();
    holder
        .execute("SELECT 1 FROM dzl.audit_head WHERE id = 1 FOR UPDATE", &[])
        .unwrap();
    let started = Instant::now();
    let err = deposit(&impatient, &p, "APP-SLOW", &["risk"]).unwrap_err();
    assert!(
        matches!(&err, StoreError::Unavailable(m) if m.contains("57014")),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    holder.rollback().unwrap();
    // Nothing half-written: no deposit, no code, no entry; the chain holds.
    assert_eq!(f.store.audit_head_seq().unwrap(), seq);
    let deposits: i64 = sql
        .query_one("SELECT count(*) FROM dzl.deposits", &[])
        .unwrap()
        .get(0);
    assert_eq!(deposits, 0);
    assert!(f.store.verify_audit(&mut |_| {}).unwrap().is_ok());
    // And the same store works once the lock is gone.
    deposit(&impatient, &p, "APP-SLOW", &["risk"]).unwrap();
}

#[test]
fn a_suspension_on_one_replica_stops_redemption_on_the_other() {
    let url = pg_url_or_skip!();
    let f = fresh(&url);
    let p = parties(&f);
    let replica = f.replica();
    let (_, codes) = deposit(&f.store, &p, "APP-1", &["risk"]).unwrap();
    let g0 = replica.generation().unwrap();
    f.store
        .set_tenant_state(
            "system",
            &p.funder.tenant_id,
            dzl_store::TenantState::Suspended,
            "guessing",
        )
        .unwrap();
    assert!(replica.generation().unwrap() > g0);
    let refused = replica.redeem(
        &now_call(&p.funder.tenant_id, "redemption.create"),
        RedeemAttempt {
            code: codes[0].clone(),
            purpose: Purpose::CreditApplication,
            redemption_id: RedemptionId::from_trusted("red_1".into()),
        },
    );
    assert!(matches!(
        refused,
        Err(StoreError::Refused(ErrorCode::TenantSuspended))
    ));
}

#[test]
fn a_replica_recovers_when_the_database_drops_its_connections() {
    let url = pg_url_or_skip!();
    let f = fresh(&url);
    let p = parties(&f);
    deposit(&f.store, &p, "APP-1", &["risk"]).unwrap();
    // As after a failover or an operator's pg_terminate_backend.
    let mut sql = f.sql();
    let killed: i64 = sql
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(killed >= 1);
    // Pooled connections are checked before use: the next calls reconnect.
    deposit(&f.store, &p, "APP-2", &["risk"]).unwrap();
    f.store.ping().unwrap();
    assert!(f.store.verify_audit(&mut |_| {}).unwrap().is_ok());
}

/// Turns the test server's TLS on with a throw-away certificate (ALTER
/// SYSTEM, reload) and puts its own settings back when dropped.
struct ServerCertificate {
    admin: postgres::Client,
}

impl Drop for ServerCertificate {
    fn drop(&mut self) {
        // One statement at a time: ALTER SYSTEM refuses a transaction block.
        for sql in [
            "ALTER SYSTEM RESET ssl",
            "ALTER SYSTEM RESET ssl_cert_file",
            "ALTER SYSTEM RESET ssl_key_file",
            "SELECT pg_reload_conf()",
        ] {
            let _ = self.admin.batch_execute(sql);
        }
    }
}

/// The uid and gid of the `postgres` account, when there is one.
fn postgres_account() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd.lines().find(|l| l.starts_with("postgres:"))?;
    let mut fields = line.split(':').skip(2);
    Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
}

#[test]
fn with_sslmode_require_the_store_talks_tls_and_checks_the_server_certificate() {
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt as _;
    let url = pg_url_or_skip!();
    let skip = |why: &str| {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: TLS to PostgreSQL needs {why} (a PostgreSQL test did not run)"
        );
    };
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let superuser: String = admin.query_one("SHOW is_superuser", &[]).unwrap().get(0);
    let (Some((uid, gid)), true, true) = (
        postgres_account(),
        superuser == "on",
        url.contains("@127.0.0.1:") || url.contains("@localhost:"),
    ) else {
        skip("a local server, a postgres account and a superuser test role");
        return;
    };

    // A CA and a server certificate for 127.0.0.1, readable by the server.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "dzl test database CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = (dir.path().join("server.pem"), dir.path().join("server.key"));
    std::fs::write(&cert_file, leaf.pem()).unwrap();
    std::fs::write(&key_file, leaf_key.serialize_pem()).unwrap();
    for p in [dir.path(), &cert_file, &key_file] {
        std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
    }
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let wrong_ca = dir.path().join("other-ca.pem");
    let other = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .self_signed(&rcgen::KeyPair::generate().unwrap())
        .unwrap();
    std::fs::write(&wrong_ca, other.pem()).unwrap();

    let mut guard = ServerCertificate { admin };
    for (setting, value) in [
        ("ssl_cert_file", cert_file.display().to_string()),
        ("ssl_key_file", key_file.display().to_string()),
        ("ssl", "on".to_owned()),
    ] {
        guard
            .admin
            .batch_execute(&format!("ALTER SYSTEM SET {setting} = '{value}'"))
            .unwrap();
    }
    guard
        .admin
        .batch_execute("SELECT pg_reload_conf()")
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));

    let db = fresh_database(&url).unwrap();
    let tls_url = format!("{}?sslmode=require", db.url());
    let with_ca = |ca: Option<&std::path::Path>| {
        PgStore::connect(
            &tls_url,
            PgOptions {
                ca_file: ca.map(|p| p.to_owned()),
                // A refused certificate is retried until this runs out.
                connect_timeout: Duration::from_secs(2),
                ..options()
            },
        )
    };
    // The right CA: connected, over TLS as the server sees it.
    let store = with_ca(Some(&ca_file)).unwrap();
    assert!(!store.is_initialised().unwrap());
    let tls_sessions: i64 = guard
        .admin
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.datname = $1 AND a.application_name = 'dzl-vault' AND s.ssl",
            &[&db.name()],
        )
        .unwrap()
        .get(0);
    assert!(tls_sessions >= 1, "no TLS session seen by the server");
    drop(store);
    // Another CA: the server's certificate is refused, nothing connects.
    match with_ca(Some(&wrong_ca)) {
        Err(StoreError::Unavailable(why)) => assert!(why.contains("127.0.0.1"), "{why}"),
        other => panic!("a server certificate from another CA was accepted: {other:?}"),
    }
    // sslmode=require without a CA to check against: refused up front.
    match with_ca(None) {
        Err(StoreError::Invalid(why)) => assert!(why.contains("ca_file"), "{why}"),
        other => panic!("{other:?}"),
    }
    // No sslmode: plaintext, as before (TLS only when asked for).
    PgStore::connect(db.url(), options()).unwrap();
}
