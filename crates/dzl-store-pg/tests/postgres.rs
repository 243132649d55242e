//! What only the PostgreSQL backend has to get right, beside the
//! conformance suite (`tests/conformance.rs`): exactly-once redemption at
//! SERIALIZABLE (as on CockroachDB), audit chains claimed by several
//! writers at once, the guards replicas share (nonces, token buckets),
//! migrations (run once when replicas start together, from the v3 schema
//! with data, refused when newer), clear errors when the database is
//! unreachable, slow or drops its connections, and TLS to the database.
//! Each test gets its own fresh database; without `DZL_TEST_PG_URL` each
//! says SKIPPED and returns.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[macro_use]
mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use chrono::Utc;
use common::{options, postgres};
use dzl_audit::ChainHash;
use dzl_crypto::{DataKey, Kek, Keyring, ReceiptSigner, RootKey, SecretKey, SystemRandom};
use dzl_store::admin;
use dzl_store::conformance::fixture::{attempt, deposit, now_call, verified};
use dzl_store::conformance::fixture::{APPLICANT, DEVICE, RISK};
use dzl_store::conformance::replicas::race_one_code;
use dzl_store::conformance::{Factory, Fixture};
use dzl_store::tx::ROOT_CHAIN;
use dzl_store::{Store, StoreError, Suite};
use dzl_store_pg::testing::fresh_database;
use dzl_store_pg::{schema, Isolation, PgOptions, PgStore};
use dzl_types::code::CodeSecret;
use dzl_types::wire::{CodeState, Decision};
use dzl_types::{AuthCode, CodeId, DepositId, ErrorCode, Group, Purpose, TenantId};

/// A fresh initialised vault, or a loud skip.
macro_rules! fixture_or_skip {
    () => {
        match postgres() {
            Some(f) => Fixture::new(f),
            None => return,
        }
    };
}

/// The announcements of chains in chain 1, by chain.
fn announced(store: &dyn Store) -> Vec<i64> {
    store
        .audit_entries(ROOT_CHAIN, 0, 100_000)
        .unwrap()
        .iter()
        .filter_map(|e| dzl_audit::announced_chain(&e.record))
        .collect()
}

#[test]
fn exactly_once_also_at_serializable_with_retries() {
    let f = fixture_or_skip!();
    let p = f.parties();
    let serializable = PgOptions {
        isolation: Isolation::Serializable,
        max_attempts: 40,
        ..options()
    };
    let stores: [Arc<dyn Store>; 2] = [
        Arc::new(dzl_store_pg::connect(f.factory.db.url(), serializable.clone()).unwrap()),
        Arc::new(dzl_store_pg::connect(f.factory.db.url(), serializable).unwrap()),
    ];
    let race = race_one_code(&stores, &p, 12);
    assert_eq!(race.won, 1, "refusals: {:?}", race.refused);
    assert!(
        race.refused
            .iter()
            .all(|c| *c == ErrorCode::CodeAlreadyRedeemed),
        "{:?}",
        race.refused
    );
    assert_eq!(f.backdoor().deposit_rows(&race.deposit).redemptions, 1);
    assert!(f.verified().is_ok());
}

#[test]
fn each_live_writer_claims_a_chain_of_its_own_and_a_closed_ones_chain_is_reused() {
    let f = fixture_or_skip!();
    // Four replicas start at once: four chains, three of them opened and
    // each announced once.
    let barrier = Arc::new(Barrier::new(4));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (barrier, url) = (barrier.clone(), f.factory.db.url().to_owned());
            std::thread::spawn(move || {
                barrier.wait();
                let store = dzl_store_pg::connect(&url, options()).unwrap();
                let chain = dzl_store::conformance::fixture::chain_of(&store);
                (store, chain)
            })
        })
        .collect();
    let mut replicas: Vec<(PgStore, i64)> =
        handles.into_iter().map(|h| h.join().unwrap()).collect();
    let chains: BTreeSet<i64> = replicas.iter().map(|(_, c)| *c).collect();
    assert_eq!(chains.len(), 4, "{chains:?}");
    assert!(
        !chains.contains(&ROOT_CHAIN),
        "the first store holds chain 1"
    );
    let mut opened = announced(&f.store);
    opened.sort();
    assert_eq!(opened, chains.iter().copied().collect::<Vec<_>>());
    assert!(f.verified().is_ok());

    // A replica that stops frees its chain; the next one takes it over,
    // opening nothing new.
    let (stopped, freed) = replicas.remove(1);
    drop(stopped);
    let next = f.factory.open();
    assert_eq!(dzl_store::conformance::fixture::chain_of(&next), freed);
    assert_eq!(announced(&f.store).len(), 4);
    let ids: Vec<i64> = f
        .store
        .audit_chains()
        .unwrap()
        .iter()
        .map(|c| c.chain)
        .collect();
    assert_eq!(ids.len(), 5);
    // The taken-over chain goes on from its head.
    assert!(verified(&next).is_ok());
}

#[test]
fn a_replica_with_several_writers_has_a_chain_per_writer_and_redeems_exactly_once() {
    let f = fixture_or_skip!();
    let p = Arc::new(f.parties());
    let before = f.store.audit_chains().unwrap().len();
    let three = PgOptions {
        writers: 3,
        ..options()
    };
    let store: Arc<dyn Store> = Arc::new(dzl_store_pg::connect(f.factory.db.url(), three).unwrap());
    let chains = f.store.audit_chains().unwrap();
    assert_eq!(chains.len(), before + 3, "one chain per writer");
    assert_eq!(announced(&f.store).len(), chains.len() - 1);

    // Deposits from many threads at once spread over the writers.
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let (store, p) = (store.clone(), p.clone());
            std::thread::spawn(move || {
                for i in 0..25 {
                    deposit(&*store, &p, &format!("APP-{t}-{i}"), &["applicant"]).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let written: Vec<i64> = f
        .store
        .audit_chains()
        .unwrap()
        .iter()
        .filter(|c| c.chain != ROOT_CHAIN && c.head.seq > 1)
        .map(|c| c.chain)
        .collect();
    assert!(written.len() >= 2, "deposits went to chains {written:?}");

    // Redemptions racing on the writers of one replica: one wins.
    let race = race_one_code(std::slice::from_ref(&store), &p, 12);
    assert_eq!(race.won, 1, "refusals: {:?}", race.refused);
    assert_eq!(f.backdoor().deposit_rows(&race.deposit).redemptions, 1);
    assert!(f.verified().is_ok());
}

#[test]
fn a_replica_whose_connections_the_database_drops_writes_again_at_once() {
    let f = fixture_or_skip!();
    let p = f.parties();
    deposit(&f.store, &p, "APP-1", &["risk"]).unwrap();
    // As after a failover or an operator's pg_terminate_backend.
    let mut sql = f.factory.sql();
    let killed: i64 = sql
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(killed >= 1);
    // Pooled connections are checked before use and the writer reconnects,
    // claiming a chain again (chain 1, once the old session's lock is
    // gone): the very next calls work.
    let next = deposit(&f.store, &p, "APP-2", &["risk"]).unwrap();
    f.store.ping().unwrap();
    f.store
        .redeem(
            &now_call(&p.funder.tenant_id, "redemption.create"),
            attempt(&next.codes[0], Purpose::CreditApplication),
        )
        .unwrap();
    assert!(f.verified().is_ok());
}

#[test]
fn a_nonce_is_refused_on_the_other_replica() {
    let f = fixture_or_skip!();
    let other = f.factory.open();
    let (a, b) = (
        dzl_store_pg::guards(&f.store).unwrap(),
        dzl_store_pg::guards(&other).unwrap(),
    );
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

    // Many replicas racing one nonce: exactly one sees it fresh, also with
    // clocks 601 s behind the sweep the last answer above started.
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
    let f = fixture_or_skip!();
    let other = f.factory.open();
    let (a, b) = (
        dzl_store_pg::guards(&f.store).unwrap(),
        dzl_store_pg::guards(&other).unwrap(),
    );
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
fn migrations_run_once_when_replicas_start_together() {
    let Some(url) = common::pg_url() else { return };
    let db = fresh_database(&url).unwrap();
    let replicas = 4;
    let barrier = Arc::new(Barrier::new(replicas));
    let handles: Vec<_> = (0..replicas)
        .map(|_| {
            let (barrier, url) = (barrier.clone(), db.url().to_owned());
            std::thread::spawn(move || {
                barrier.wait();
                dzl_store_pg::connect(&url, options())
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
    // One generation row, chain 1 once: nothing ran twice.
    let generation: i64 = sql
        .query_one("SELECT count(*) FROM dzl.meta", &[])
        .unwrap()
        .get(0);
    assert_eq!(generation, 1);
    let root: i64 = sql
        .query_one("SELECT count(*) FROM dzl.audit_chains WHERE chain = 1", &[])
        .unwrap()
        .get(0);
    assert_eq!(root, 1);
    assert!(verified(&stores[3]).is_ok());
    // Connecting again changes nothing.
    drop(dzl_store_pg::connect(db.url(), options()).unwrap());
    let again: i64 = sql
        .query_one("SELECT count(*) FROM dzl.schema_migrations", &[])
        .unwrap()
        .get(0);
    assert_eq!(again, expected.len() as i64);
    drop(stores);
}

#[test]
fn a_newer_schema_is_refused() {
    let Some(url) = common::pg_url() else { return };
    let db = fresh_database(&url).unwrap();
    drop(dzl_store_pg::connect(db.url(), options()).unwrap());
    let mut sql = postgres::Client::connect(db.url(), postgres::NoTls).unwrap();
    sql.execute(
        "INSERT INTO dzl.schema_migrations (version, name) VALUES (999, 'from the future')",
        &[],
    )
    .unwrap();
    let err = dzl_store_pg::connect(db.url(), options()).unwrap_err();
    assert!(
        matches!(&err, StoreError::Invalid(m) if m.contains("999")),
        "{err}"
    );
}

#[test]
fn an_unreachable_database_is_a_clear_unavailable_error() {
    // Needs no PostgreSQL: nothing listens on port 1.
    let started = Instant::now();
    let err = dzl_store_pg::connect(
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
    let err =
        dzl_store_pg::connect("postgres://dzl:s3cret-pw@[::1", PgOptions::default()).unwrap_err();
    assert!(
        matches!(&err, StoreError::Invalid(m) if !m.contains("s3cret")),
        "{err:?}"
    );
}

#[test]
fn a_statement_stuck_behind_a_lock_times_out_as_unavailable_and_writes_nothing() {
    let f = fixture_or_skip!();
    let impatient = dzl_store_pg::connect(
        f.factory.db.url(),
        PgOptions {
            statement_timeout: Duration::from_millis(300),
            ..options()
        },
    )
    .unwrap();
    let p = f.parties();
    let seq = f.store.audit_head_seq().unwrap();
    // Another session holds every chain's head.
    let mut sql = f.factory.sql();
    let mut holder = sql.transaction().unwrap();
    holder
        .execute("SELECT 1 FROM dzl.audit_chains FOR UPDATE", &[])
        .unwrap();
    let started = Instant::now();
    let err = deposit(&impatient, &p, "APP-SLOW", &["risk"])
        .map(|_| ())
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Unavailable(m) if m.contains("57014")),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    holder.rollback().unwrap();
    // Nothing half-written: no deposit, no code, no entry; the trail holds.
    assert_eq!(f.store.audit_head_seq().unwrap(), seq);
    let deposits: i64 = sql
        .query_one("SELECT count(*) FROM dzl.deposits", &[])
        .unwrap()
        .get(0);
    assert_eq!(deposits, 0);
    assert!(f.verified().is_ok());
    // And the same store works once the lock is gone.
    deposit(&impatient, &p, "APP-SLOW", &["risk"]).unwrap();
}

#[test]
fn identity_fields_live_in_their_own_schema() {
    let f = fixture_or_skip!();
    let p = f.parties();
    let d = deposit(&f.store, &p, "APP-1", &[]).unwrap();
    let mut sql = f.factory.sql();
    let schemas: Vec<String> = sql
        .query(
            "SELECT table_schema::text FROM information_schema.columns
             WHERE column_name = 'envelope' OR column_name = 'wrapped_key'
             GROUP BY table_schema, table_name ORDER BY table_schema",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        schemas,
        ["dzl", "dzl_identity"],
        "deposit_records and identities"
    );
    let identities: i64 = sql
        .query_one(
            "SELECT count(*) FROM dzl_identity.identities WHERE deposit_id = $1",
            &[&d.id.as_str()],
        )
        .unwrap()
        .get(0);
    assert_eq!(identities, 1);
    // The non-identity row has no place for the applicant group.
    let columns: Vec<String> = sql
        .query(
            "SELECT column_name::text FROM information_schema.columns
             WHERE table_schema = 'dzl' AND table_name = 'deposit_records' ORDER BY column_name",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        columns,
        ["deposit_id", "device", "kek_version", "risk", "wrapped_key"]
    );
}

/// Migrations 1 to 3, and data as schema 3 stores it: the keyring and
/// vault secrets, a platform and a funder, a deposit of the three groups
/// (its data key in `data_keys`, its groups in `records`) with one code
/// issued and one redeemed (the redemption with its outcome), three audit
/// entries under the single head, and usage counters.
struct V3 {
    root: RootKey,
    keyring: Keyring,
    index_key: SecretKey,
    platform: TenantId,
    funder: TenantId,
    platform_secret: &'static [u8],
    deposit: DepositId,
    issued: AuthCode,
    redeemed: CodeId,
    head: dzl_audit::Head,
}

fn v3_vault(sql: &mut postgres::Client) -> V3 {
    sql.batch_execute(
        "CREATE SCHEMA dzl;
         CREATE TABLE dzl.schema_migrations (
             version    INTEGER PRIMARY KEY,
             name       TEXT NOT NULL,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         );",
    )
    .unwrap();
    for m in &schema::MIGRATIONS[..3] {
        sql.batch_execute(m.sql).unwrap();
        sql.execute(
            "INSERT INTO dzl.schema_migrations (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )
        .unwrap();
    }
    let rng = SystemRandom::new();
    let now = Utc::now();
    let ms = now.timestamp_millis();
    let root = RootKey::generate(&rng).unwrap();
    let kek = Kek::generate(1, &rng).unwrap();
    let kek_wrapped = root.wrap_kek(&kek).unwrap();
    let keyring = Keyring::new(vec![kek], 1).unwrap();
    let pkcs8 = ReceiptSigner::generate_pkcs8(&rng).unwrap();
    let signer = ReceiptSigner::from_pkcs8_derived_id(&pkcs8).unwrap();
    let receipt = format!("{}{}", admin::RECEIPT_PREFIX, signer.key_id());
    let index_key = SecretKey::generate(&rng).unwrap();
    let seal = |label: &str, id: &str, bytes: &[u8]| keyring.seal_secret(label, id, bytes).unwrap();
    sql.execute(
        "INSERT INTO dzl.keks (version, state, wrapped, created_at) VALUES (1, 'active', $1, $2)",
        &[&kek_wrapped, &ms],
    )
    .unwrap();
    for (name, sealed, public) in [
        (
            receipt.as_str(),
            seal(admin::VAULT_SECRET, &receipt, &pkcs8),
            Some(signer.public_key_b64url()),
        ),
        (
            admin::SUBJECT_INDEX,
            seal(
                admin::VAULT_SECRET,
                admin::SUBJECT_INDEX,
                index_key.expose(),
            ),
            None,
        ),
    ] {
        sql.execute(
            "INSERT INTO dzl.sealed_secrets (name, kek_version, sealed, public, created_at)
             VALUES ($1, 1, $2, $3, $4)",
            &[&name, &sealed.bytes, &public, &ms],
        )
        .unwrap();
    }
    let platform = TenantId::from_trusted("ten_v3platform".into());
    let funder = TenantId::from_trusted("ten_v3funder".into());
    let platform_secret: &'static [u8] = b"the platform's signing secret, v3";
    for (id, kind, scopes, purposes, secret) in [
        (&platform, "platform", None, "", platform_secret),
        (
            &funder,
            "funder",
            Some("applicant,device,risk"),
            "credit_application,drawdown",
            b"the funder's signing secret, v3".as_slice(),
        ),
    ] {
        sql.execute(
            "INSERT INTO dzl.tenants (id, kind, name, key_id, secret_kek_version, secret_sealed,
                 scopes, purposes, rate_limit, state, created_at, updated_at)
             VALUES ($1, $2, $1, $1 || '_key', 1, $3, $4, $5, 100, 'active', $6, $6)",
            &[
                &id.as_str(),
                &kind,
                &seal(admin::TENANT_SECRET, id.as_str(), secret).bytes,
                &scopes,
                &purposes,
                &ms,
            ],
        )
        .unwrap();
    }

    // The deposit, sealed and filed as schema 3 files it.
    let deposit = DepositId::from_trusted("dep_v3".into());
    let records_dk = DataKey::generate(&rng).unwrap();
    let identity_dk = DataKey::generate(&rng).unwrap();
    let wrapped = |dk: &DataKey, kind: &str| {
        keyring
            .wrap_data_key(dk, deposit.as_str(), kind)
            .unwrap()
            .bytes
    };
    let sealed = |dk: &DataKey, g: Group, json: &str| {
        dzl_crypto::seal_record(dk, deposit.as_str(), g.as_str(), json.as_bytes(), &rng).unwrap()
    };
    let consent_end = now + chrono::Duration::days(365);
    let consent = serde_json::json!({
        "consent_id": "CNS-3", "granted_at": now, "expires_at": consent_end,
        "scopes": ["applicant", "device", "risk"], "evidence_sha256": "a".repeat(64),
    });
    let subject_index =
        dzl_crypto::blind_index(&index_key, "subject", b"resident_id\n11010519491231002X");
    sql.execute(
        "INSERT INTO dzl.deposits (id, platform_id, external_ref, purpose, consent,
             consent_scopes, consent_expires, groups, subject_index, subject_ref, state, created_at)
         VALUES ($1, $2, 'APP-V3', 'credit_application', $3, 'applicant,device,risk', $4,
             'applicant,device,risk', $5, 'sub_v3', 'active', $6)",
        &[
            &deposit.as_str(),
            &platform.as_str(),
            &consent.to_string(),
            &consent_end.timestamp_millis(),
            &subject_index,
            &ms,
        ],
    )
    .unwrap();
    sql.execute(
        "INSERT INTO dzl.data_keys (deposit_id, kek_version, wrapped) VALUES ($1, 1, $2)",
        &[&deposit.as_str(), &wrapped(&records_dk, "records")],
    )
    .unwrap();
    for (g, json) in [(Group::Device, DEVICE), (Group::Risk, RISK)] {
        sql.execute(
            "INSERT INTO dzl.records (deposit_id, grp, envelope) VALUES ($1, $2, $3)",
            &[
                &deposit.as_str(),
                &g.as_str(),
                &sealed(&records_dk, g, json),
            ],
        )
        .unwrap();
    }
    sql.execute(
        "INSERT INTO dzl_identity.identities (deposit_id, kek_version, wrapped_key, envelope)
         VALUES ($1, 1, $2, $3)",
        &[
            &deposit.as_str(),
            &wrapped(&identity_dk, "identity"),
            &sealed(&identity_dk, Group::Applicant, APPLICANT),
        ],
    )
    .unwrap();
    let issued = CodeSecret::generate(&rng).unwrap();
    let spent = CodeSecret::generate(&rng).unwrap();
    let expires = (now + chrono::Duration::hours(1)).timestamp_millis();
    for (row, code, hash, state, redeemed_at) in [
        (1i64, "cod_v3issued", issued.hash(), "issued", None),
        (2, "cod_v3redeemed", spent.hash(), "redeemed", Some(ms)),
    ] {
        sql.execute(
            "INSERT INTO dzl.codes (row, code_id, secret_hash, deposit_id, platform_id,
                 funder_id, scopes, purpose, state, created_at, expires_at, redeemed_at)
             VALUES ($1, $2, $3, $4, $5, $6, 'applicant,device,risk', 'credit_application',
                 $7, $8, $9, $10)",
            &[
                &row,
                &code,
                &hash.to_vec(),
                &deposit.as_str(),
                &platform.as_str(),
                &funder.as_str(),
                &state,
                &ms,
                &expires,
                &redeemed_at,
            ],
        )
        .unwrap();
    }
    sql.batch_execute("SELECT setval('dzl.codes_row_seq', 2)")
        .unwrap();
    sql.execute(
        "INSERT INTO dzl.redemptions (id, code_row, code_id, deposit_id, platform_id, funder_id,
             purpose, scopes, redeemed_at, decision, amount_fen, reported_at)
         VALUES ('red_v3', 2, 'cod_v3redeemed', $1, $2, $3, 'credit_application',
             'applicant,device,risk', $4, 'approved', 500000, $4)",
        &[&deposit.as_str(), &platform.as_str(), &funder.as_str(), &ms],
    )
    .unwrap();

    // Three entries under the single head, and the counters.
    let (mut seq, mut hash) = (0, dzl_audit::GENESIS.to_owned());
    for (actor, operation) in [
        ("cli:test", "vault.init"),
        (platform.as_str(), "deposit.create"),
        (funder.as_str(), "redemption.create"),
    ] {
        let e = dzl_audit::chain(
            1,
            seq,
            &hash,
            dzl_audit::AuditRecord {
                at: dzl_store::ops::at(now),
                actor: actor.into(),
                operation: operation.into(),
                result: "ok".into(),
                ..Default::default()
            },
        );
        let r = &e.record;
        sql.execute(
            "INSERT INTO dzl.audit (seq, at, actor, operation, result, prev_hash, hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &e.seq,
                &r.at,
                &r.actor,
                &r.operation,
                &r.result,
                &e.prev_hash,
                &e.hash,
            ],
        )
        .unwrap();
        (seq, hash) = (e.seq, e.hash);
    }
    sql.execute(
        "UPDATE dzl.audit_head SET seq = $1, hash = $2 WHERE id = 1",
        &[&seq, &hash],
    )
    .unwrap();
    let day = now.format("%Y-%m-%d").to_string();
    for (tenant, op) in [
        (&platform, "deposit.create"),
        (&funder, "redemption.create"),
    ] {
        sql.execute(
            "INSERT INTO dzl.usage (day, tenant_id, operation, outcome, calls)
             VALUES ($1, $2, $3, 'ok', 1)",
            &[&day, &tenant.as_str(), &op],
        )
        .unwrap();
    }
    V3 {
        root,
        keyring,
        index_key,
        platform,
        funder,
        platform_secret,
        deposit,
        issued: issued.into_code(1),
        redeemed: CodeId::from_trusted("cod_v3redeemed".into()),
        head: dzl_audit::Head { seq, hash },
    }
}

#[test]
fn a_v3_vault_with_data_migrates_and_goes_on_where_it_was() {
    let Some(url) = common::pg_url() else { return };
    let db = fresh_database(&url).unwrap();
    let mut sql = postgres::Client::connect(db.url(), postgres::NoTls).unwrap();
    let v3 = v3_vault(&mut sql);

    let store = dzl_store_pg::connect(db.url(), options()).unwrap();

    let versions: Vec<i32> = sql
        .query(
            "SELECT version FROM dzl.schema_migrations ORDER BY version",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, [1, 2, 3, 4, 5]);
    // The single chain is chain 1, whole, under the head it had.
    let chains = store.audit_chains().unwrap();
    assert_eq!(chains.len(), 1);
    assert_eq!((chains[0].chain, &chains[0].head), (ROOT_CHAIN, &v3.head));
    assert_eq!(verified(&store), Ok(3));
    // Migration 5: everything stored before is `intl`, chained with SHA-256.
    assert!(store.keks().unwrap().iter().all(|k| k.suite == Suite::Intl));
    assert_eq!(store.deposit_suites().unwrap(), [(Suite::Intl, 1)]);
    let trail = store.audit_after(&[]).unwrap();
    assert_eq!(trail.len(), 3);
    assert!(trail.iter().all(|e| e.alg == ChainHash::Sha256));
    // The counters, as counted by chain 1's writer.
    let mut usage: Vec<_> = store
        .usage()
        .unwrap()
        .into_iter()
        .map(|u| (u.tenant_id, u.operation, u.calls))
        .collect();
    usage.sort();
    let mut expected = vec![
        (v3.platform.to_string(), "deposit.create".to_owned(), 1),
        (v3.funder.to_string(), "redemption.create".to_owned(), 1),
    ];
    expected.sort();
    assert_eq!(usage, expected);
    // The keyring, the vault secrets and the tenants' secrets open.
    let keys = admin::load_keys(&store, &v3.root).unwrap();
    assert_eq!(keys.keyring.versions(), v3.keyring.versions());
    assert_eq!(keys.subject_index.expose(), v3.index_key.expose());
    let platform = store
        .tenants()
        .unwrap()
        .into_iter()
        .find(|t| t.id == v3.platform)
        .unwrap();
    assert_eq!(
        &admin::open_tenant_secret(&keys.keyring, &platform).unwrap()[..],
        v3.platform_secret
    );
    // The redeemed code shows its redemption's outcome (linked by the
    // migration); the issued one redeems, its groups read from the merged row.
    let status = store
        .code_status(&now_call(&v3.platform, "code.status"), &v3.redeemed)
        .unwrap();
    assert_eq!(status.state, CodeState::Redeemed);
    assert_eq!(
        status.outcome.map(|o| (o.decision, o.amount_fen)),
        Some((Decision::Approved, Some(500_000)))
    );
    let r = store
        .redeem(
            &now_call(&v3.funder, "redemption.create"),
            attempt(&v3.issued, Purpose::CreditApplication),
        )
        .unwrap();
    let open = |dk_kind: &str, key: &dzl_store::Sealed, g: Group, env: &[u8]| {
        let dk = keys
            .keyring
            .unwrap_data_key(&admin::wrapped(key), v3.deposit.as_str(), dk_kind)
            .unwrap();
        let plain = dzl_crypto::open_record(&dk, v3.deposit.as_str(), g.as_str(), env).unwrap();
        String::from_utf8(plain.to_vec()).unwrap()
    };
    let (ikey, ienv) = r.identity.as_ref().unwrap();
    assert_eq!(open("identity", ikey, Group::Applicant, ienv), APPLICANT);
    let rkey = r.records_key.as_ref().unwrap();
    let records: Vec<(Group, String)> = r
        .records
        .iter()
        .map(|(g, env)| (*g, open("records", rkey, *g, env)))
        .collect();
    assert_eq!(
        records,
        [
            (Group::Device, DEVICE.to_owned()),
            (Group::Risk, RISK.to_owned())
        ]
    );
    let report = store
        .subject_access(
            &now_call(&TenantId::from_trusted("ten_op".into()), "subject.access"),
            &[dzl_crypto::blind_index(
                &v3.index_key,
                "subject",
                b"resident_id\n11010519491231002X",
            )],
        )
        .unwrap();
    assert_eq!(report.deposits.len(), 1);
    assert_eq!(report.redemptions.len(), 2);
    // Chain 1 goes on from its old head; erasure finds the merged rows.
    store
        .erase_deposit(&now_call(&v3.platform, "deposit.erase"), &v3.deposit)
        .unwrap();
    let left: i64 = sql
        .query_one(
            "SELECT (SELECT count(*) FROM dzl.deposit_records)
                  + (SELECT count(*) FROM dzl_identity.identities)",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
    assert_eq!(verified(&store), Ok(3 + 2 + 1));
    let replica = dzl_store_pg::connect(db.url(), options()).unwrap();
    assert_eq!(dzl_store::conformance::fixture::chain_of(&replica), 2);
    assert_eq!(verified(&store), Ok(3 + 2 + 1 + 2));
    // The migrated vault moves to `gm`: its entries from then on are SM3.
    let marks = store.audit_chains().unwrap();
    admin::rotate_keys_to(&store, &v3.root, "cli:test", Suite::Gm).unwrap();
    let after = store.audit_after(&marks).unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].alg, ChainHash::Sm3);
    assert_eq!(verified(&store), Ok(3 + 2 + 1 + 2 + 1));
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
        dzl_store_pg::connect(
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
    dzl_store_pg::connect(db.url(), options()).unwrap();
}
