//! dzl-vault's test harnesses, shared by two binaries and their tests:
//!
//! * `dzl-fixture`: an initialised vault in a temporary directory with a
//!   platform, a second platform, a funder, a second funder and an operator,
//!   served on loopback; prints one JSON line of credentials and the base URL
//!   (the API fuzzer `scripts/schemathesis` drives it).
//! * `dzl-crash`: mixed load against the real `dzl-vault` binary, SIGKILL at
//!   random moments, restart, and the checks of [`crash`].
//! * `dzl-powercut`: the same binary under an `LD_PRELOAD` library that
//!   traces its writes and flushes; power cuts at random moments, the data
//!   directory rebuilt as the disk would hold it, restart, and the checks of
//!   [`powercut`].
//!
//! Everything here talks to the vault as a client would (signed HTTP) or
//! reads its files from the outside (SQLite `integrity_check`, the audit
//! chain); nothing reaches into the server's memory.

pub mod crash;
pub mod powercut;
pub mod process;

use std::path::Path;

use anyhow::Context as _;
use dzl_crypto::RootKey;
use dzl_store::admin::{self, NewTenant};
use dzl_store::{SqliteStore, Store as _, TenantKind};
use serde::Serialize;
use serde_json::{json, Value};

/// Canary identities: valid check digits, deposited by the harnesses and
/// searched for wherever personal data must never appear.
pub mod canary {
    /// Name.
    pub const NAME: &str = "欧阳金丝雀";
    /// Resident id number (GB 11643 check digit valid).
    pub const ID_NUMBER: &str = "11010519491231002X";
    /// Mobile phone.
    pub const PHONE: &str = "13912345678";
}

/// A tenant's credentials, as `dzlctl tenant add` prints them.
#[derive(Debug, Clone, Serialize)]
pub struct Credentials {
    /// `ten_…`.
    pub tenant_id: String,
    /// The key id it signs with.
    pub key_id: String,
    /// The signing secret.
    pub secret: String,
}

impl Credentials {
    /// A signer for the SDK.
    pub fn signer(&self) -> dzl_sdk::Signer {
        dzl_sdk::Signer::new(self.key_id.clone(), self.secret.clone())
    }
}

/// The tenants of a provisioned vault.
#[derive(Debug, Clone, Serialize)]
pub struct Tenants {
    /// Deposits.
    pub platform: Credentials,
    /// Another platform (to test that tenants only touch what they own).
    pub other_platform: Credentials,
    /// Redeems; entitled to every group and purpose.
    pub funder: Credentials,
    /// Another funder, entitled to `risk` and `drawdown` only.
    pub other_funder: Credentials,
    /// Subject access.
    pub operator: Credentials,
}

/// How to provision.
#[derive(Debug, Clone, Default)]
pub struct Provision {
    /// Requests per second of every tenant (the vault's default when `None`).
    pub rate_limit: Option<u32>,
    /// Requests per second of the funders and the operator, when they
    /// should differ from `rate_limit`.
    pub others_rate_limit: Option<u32>,
}

/// A fresh root key.
pub fn new_root() -> anyhow::Result<RootKey> {
    RootKey::generate(&dzl_crypto::SystemRandom::new())
        .map_err(|e| anyhow::anyhow!("root key: {e}"))
}

/// Initialises a store in `dir` under `root` and adds the tenants.
pub fn provision(dir: &Path, root: &RootKey, p: &Provision) -> anyhow::Result<Tenants> {
    let store = SqliteStore::open(dir).map_err(|e| anyhow::anyhow!("opening the store: {e}"))?;
    admin::init(&store, root, "testkit").context("init")?;
    let keys = admin::load_keys(&store, root).context("keys")?;
    let add = |kind, name: &str, scopes: Option<&str>, purposes: Vec<dzl_types::Purpose>| {
        let rate_limit = match kind {
            TenantKind::Platform => p.rate_limit,
            _ => p.others_rate_limit.or(p.rate_limit),
        };
        let c = admin::add_tenant(
            &store,
            &keys.keyring,
            "testkit",
            NewTenant {
                cert_pin: None,
                kind,
                name: name.into(),
                scopes: scopes
                    .map(dzl_types::ScopeSet::parse_list)
                    .transpose()
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
                purposes,
                rate_limit,
            },
        )?;
        anyhow::Ok(Credentials {
            tenant_id: c.tenant_id.to_string(),
            key_id: c.key_id.clone(),
            secret: c.secret.as_str().to_owned(),
        })
    };
    let tenants = Tenants {
        platform: add(TenantKind::Platform, "Platform A", None, vec![])?,
        other_platform: add(TenantKind::Platform, "Platform B", None, vec![])?,
        funder: add(TenantKind::Funder, "Bank A", None, vec![])?,
        other_funder: add(
            TenantKind::Funder,
            "Bank B",
            Some("risk"),
            vec![dzl_types::Purpose::Drawdown],
        )?,
        operator: add(TenantKind::Operator, "Operator", None, vec![])?,
    };
    store.close();
    Ok(tenants)
}

/// A valid consent covering all three groups, granted an hour ago.
pub fn consent() -> Value {
    let now = chrono::Utc::now();
    json!({
        "consent_id": "CNS-77",
        "granted_at": (now - chrono::Duration::hours(1)).to_rfc3339(),
        "expires_at": (now + chrono::Duration::days(365)).to_rfc3339(),
        "scopes": ["applicant", "device", "risk"],
        "evidence_sha256": "a".repeat(64),
    })
}

/// A deposit of the canary identity with all three groups and one grant of
/// every group to `funder_id`.
pub fn deposit_body(external_ref: &str, funder_id: &str) -> Value {
    json!({
        "external_ref": external_ref,
        "purpose": "credit_application",
        "consent": consent(),
        "applicant": {"name": canary::NAME, "id_type": "resident_id",
                      "id_number": canary::ID_NUMBER, "phone": canary::PHONE,
                      "residence_address": "北京市朝阳区金丝雀路1号"},
        "device": {"device_id": "d-1", "os": "android", "ip": "203.0.113.7"},
        "risk": {"score": 712, "grade": "B+"},
        "grants": [{"funder_id": funder_id, "scopes": ["applicant", "device", "risk"],
                    "ttl_seconds": 86400}],
    })
}

/// `PRAGMA integrity_check` of one SQLite file: `Ok` when it says `ok`.
pub fn integrity_check(db: &Path) -> anyhow::Result<()> {
    let conn =
        rusqlite::Connection::open(db).with_context(|| format!("opening {}", db.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    let rows: Vec<String> = conn
        .prepare("PRAGMA integrity_check")?
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<_, _>>()?;
    anyhow::ensure!(
        rows == ["ok"],
        "{}: integrity_check: {}",
        db.display(),
        rows.join("; ")
    );
    Ok(())
}

/// Verifies the audit chain of the store in `dir` (no server may hold it
/// open for writing meanwhile); returns how many entries it walked.
pub fn verify_audit(dir: &Path) -> anyhow::Result<u64> {
    let store = SqliteStore::open(dir).map_err(|e| anyhow::anyhow!("opening the store: {e}"))?;
    let result = store
        .verify_audit(&mut |_| {})
        .map_err(|e| anyhow::anyhow!("reading the audit chain: {e}"));
    store.close();
    match result? {
        Ok(n) => Ok(n),
        Err(e) => anyhow::bail!("the audit chain does not verify: {e}"),
    }
}

/// Writes found half done across the store's two files (see [`half_done`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct HalfDone {
    /// Active deposits without their identity row.
    pub deposits_without_identity: u64,
    /// Erased deposits that kept their identity row.
    pub erased_with_identity: u64,
    /// Identity rows without a deposit.
    pub identities_without_deposit: u64,
}

impl HalfDone {
    /// How many writes in all.
    pub fn total(&self) -> u64 {
        self.deposits_without_identity + self.erased_with_identity + self.identities_without_deposit
    }
}

/// Counts the writes that are not whole across the store's two files in
/// `dir`: active deposits without their identity row, erased deposits with
/// one, identity rows without a deposit. Reads every row, so it is for test
/// stores. It opens the files with plain SQLite, which does not mend them.
pub fn half_done(dir: &Path) -> anyhow::Result<HalfDone> {
    let vault = dzl_store::sqlite::vault_db(dir);
    let conn = rusqlite::Connection::open(&vault)
        .with_context(|| format!("opening {}", vault.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    let ident = dzl_store::sqlite::identity_db(dir);
    conn.execute(
        "ATTACH DATABASE ?1 AS ident",
        [ident.to_string_lossy().as_ref()],
    )?;
    let (without, erased_with, orphans): (i64, i64, i64) = conn.query_row(
        "SELECT
           (SELECT count(*) FROM deposits d WHERE d.state = 'active'
              AND NOT EXISTS (SELECT 1 FROM ident.identities i WHERE i.deposit_id = d.id)),
           (SELECT count(*) FROM deposits d WHERE d.state = 'erased'
              AND EXISTS (SELECT 1 FROM ident.identities i WHERE i.deposit_id = d.id)),
           (SELECT count(*) FROM ident.identities i
              WHERE NOT EXISTS (SELECT 1 FROM deposits d WHERE d.id = i.deposit_id))",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    Ok(HalfDone {
        deposits_without_identity: without as u64,
        erased_with_identity: erased_with as u64,
        identities_without_deposit: orphans as u64,
    })
}

/// Checks that every write is whole across the store's two files: every
/// active deposit has its identity row, and no identity row belongs to an
/// erased deposit or to none.
pub fn pairs_check(dir: &Path) -> anyhow::Result<()> {
    let h = half_done(dir)?;
    anyhow::ensure!(
        h.total() == 0,
        "writes half done across vault.db and identity.db: {} active deposits without \
         their identity row, {} erased deposits with one, {} identity rows \
         without a deposit",
        h.deposits_without_identity,
        h.erased_with_identity,
        h.identities_without_deposit
    );
    Ok(())
}

/// Both integrity checks, the audit chain of the store in `dir`, and (once
/// opening the store has mended what a crash left half done) that every
/// write is whole across its two files.
pub fn check_store(dir: &Path) -> anyhow::Result<u64> {
    integrity_check(&dzl_store::sqlite::vault_db(dir))?;
    integrity_check(&dzl_store::sqlite::identity_db(dir))?;
    let entries = verify_audit(dir)?;
    pairs_check(dir)?;
    Ok(entries)
}
