//! Helpers of the PostgreSQL tests: a fresh database per test (or a loud
//! skip when `DZL_TEST_PG_URL` is unset), a store initialised on it, and
//! deposits of real sealed groups built as the server builds them.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::time::Duration;

use chrono::{DateTime, Utc};
use dzl_crypto::{DataKey, RootKey, SystemRandom};
use dzl_store::admin::{self, NewTenant, TenantCredentials, VaultKeys};
use dzl_store::{Call, NewCode, NewDeposit, Sealed, Store, StoreResult, TenantKind};
use dzl_store_pg::testing::{fresh_database, TestDatabase, TEST_URL_VAR};
use dzl_store_pg::{PgOptions, PgStore};
use dzl_types::code::CodeSecret;
use dzl_types::{AuthCode, DepositId, Group, Purpose, ScopeSet, SubjectRef, TenantId};

/// The admin URL, or `None` after a loud line on stderr (written past the
/// test harness's capture, so it shows in every run).
pub fn pg_url() -> Option<String> {
    match std::env::var(TEST_URL_VAR) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: {TEST_URL_VAR} not set (a PostgreSQL test did not run)"
            );
            None
        }
    }
}

/// Returns from the test (skipped) unless `DZL_TEST_PG_URL` is set.
macro_rules! pg_url_or_skip {
    () => {
        match common::pg_url() {
            Some(url) => url,
            None => return,
        }
    };
}

/// Options of the tests' stores.
pub fn options() -> PgOptions {
    PgOptions {
        pool_size: 8,
        statement_timeout: Duration::from_secs(20),
        connect_timeout: Duration::from_secs(10),
        ..PgOptions::default()
    }
}

/// A fresh database with an initialised store on it. `store` is declared
/// first so it is dropped before the database.
pub struct Fixture {
    pub store: PgStore,
    pub root: RootKey,
    pub db: TestDatabase,
}

impl Fixture {
    /// Another store on the same database: a second replica.
    pub fn replica(&self) -> PgStore {
        PgStore::connect(self.db.url(), options()).unwrap()
    }

    /// A raw client on the database (for what an attacker or operator does
    /// with SQL).
    pub fn sql(&self) -> postgres::Client {
        postgres::Client::connect(self.db.url(), postgres::NoTls).unwrap()
    }
}

/// A fresh, initialised store.
pub fn fresh(url: &str) -> Fixture {
    let db = fresh_database(url).unwrap();
    let store = PgStore::connect(db.url(), options()).unwrap();
    let root = RootKey::generate(&SystemRandom::new()).unwrap();
    admin::init(&store, &root, "cli:test").unwrap();
    Fixture { store, root, db }
}

pub fn now_call(actor: &TenantId, op: &'static str) -> Call {
    Call {
        actor: actor.to_string(),
        operation: op,
        now: Utc::now(),
    }
}

/// The opened keys, a platform and a funder entitled to everything.
pub struct Parties {
    pub keys: VaultKeys,
    pub platform: TenantCredentials,
    pub funder: TenantCredentials,
}

pub fn parties(f: &Fixture) -> Parties {
    let keys = admin::load_keys(&f.store, &f.root).unwrap();
    let add = |kind, name: &str| {
        admin::add_tenant(
            &f.store,
            &keys.keyring,
            "cli:test",
            NewTenant::new(kind, name),
        )
        .unwrap()
    };
    let platform = add(TenantKind::Platform, "Platform");
    let funder = add(TenantKind::Funder, "Bank");
    Parties {
        keys,
        platform,
        funder,
    }
}

pub const APPLICANT: &str = r#"{"name":"张三","id_type":"resident_id","id_number":"11010519491231002X","phone":"13800138000"}"#;
pub const DEVICE: &str = r#"{"device_id":"d-1","os":"android","ip":"203.0.113.7"}"#;
pub const RISK: &str = r#"{"score":712}"#;

/// Deposits the three groups as the server does (fresh data keys, the
/// applicant under its own), with one code for `p.funder` per entry of
/// `grants`; returns the deposit and the codes.
pub fn deposit(
    store: &dyn Store,
    p: &Parties,
    external_ref: &str,
    grants: &[&str],
) -> StoreResult<(DepositId, Vec<AuthCode>)> {
    let rng = SystemRandom::new();
    let now = Utc::now();
    let id = DepositId::from_trusted(dzl_crypto::new_id("dep", &rng).unwrap());
    let identity_dk = DataKey::generate(&rng).unwrap();
    let records_dk = DataKey::generate(&rng).unwrap();
    let seal = |dk: &DataKey, g: Group, json: &str| {
        dzl_crypto::seal_record(dk, id.as_str(), g.as_str(), json.as_bytes(), &rng).unwrap()
    };
    let wrap = |dk: &DataKey, kind: &str| {
        let w = p.keys.keyring.wrap_data_key(dk, id.as_str(), kind).unwrap();
        Sealed {
            kek_version: w.kek_version,
            bytes: w.bytes,
        }
    };
    let consent_end: DateTime<Utc> = now + chrono::Duration::days(365);
    let consent = serde_json::json!({
        "consent_id": "CNS-77", "granted_at": now, "expires_at": consent_end,
        "scopes": ["applicant", "device", "risk"], "evidence_sha256": "a".repeat(64),
    });
    let mut secrets = Vec::new();
    let mut codes = Vec::new();
    for g in grants {
        let secret = CodeSecret::generate(&rng).unwrap();
        codes.push(NewCode {
            code_id: dzl_types::CodeId::from_trusted(dzl_crypto::new_id("cod", &rng).unwrap()),
            secret_hash: secret.hash(),
            funder_id: p.funder.tenant_id.clone(),
            scopes: ScopeSet::parse_list(g).unwrap(),
            ttl_seconds: 3600,
        });
        secrets.push(secret);
    }
    let subject_index = dzl_crypto::blind_index(
        &p.keys.subject_index,
        "subject",
        b"resident_id\n11010519491231002X",
    );
    let created = store.create_deposit(NewDeposit {
        call: now_call(&p.platform.tenant_id, "deposit.create"),
        id: id.clone(),
        external_ref: external_ref.into(),
        purpose: Purpose::CreditApplication,
        consent_json: consent.to_string(),
        consent_expires: consent_end,
        groups: ScopeSet::ALL,
        subject_index,
        subject_ref: SubjectRef::from_trusted("sub_test".into()),
        records_key: wrap(&records_dk, "records"),
        records: vec![
            (Group::Device, seal(&records_dk, Group::Device, DEVICE)),
            (Group::Risk, seal(&records_dk, Group::Risk, RISK)),
        ],
        identity_key: wrap(&identity_dk, "identity"),
        identity: seal(&identity_dk, Group::Applicant, APPLICANT),
        codes,
    })?;
    let codes = created
        .into_iter()
        .zip(secrets)
        .map(|(c, s)| s.into_code(c.row))
        .collect();
    Ok((id, codes))
}

/// Opens what a redemption released, as the server does: `(group, json)`.
pub fn open(p: &Parties, r: &dzl_store::Redeemed) -> Vec<(Group, String)> {
    let keyring = &p.keys.keyring;
    let id = r.deposit_id.as_str();
    let mut out = Vec::new();
    if let Some((key, env)) = &r.identity {
        let dk = keyring
            .unwrap_data_key(&admin::wrapped(key), id, "identity")
            .unwrap();
        let plain = dzl_crypto::open_record(&dk, id, Group::Applicant.as_str(), env).unwrap();
        out.push((Group::Applicant, String::from_utf8(plain.to_vec()).unwrap()));
    }
    if let Some(key) = &r.records_key {
        let dk = keyring
            .unwrap_data_key(&admin::wrapped(key), id, "records")
            .unwrap();
        for (g, env) in &r.records {
            let plain = dzl_crypto::open_record(&dk, id, g.as_str(), env).unwrap();
            out.push((*g, String::from_utf8(plain.to_vec()).unwrap()));
        }
    }
    out
}
