//! The test harness: a real server on port 0 over a fresh temporary store,
//! with a platform, two funders and an operator, and a movable clock.
//!
//! The same tests run in three configurations: an `intl` vault over SQLite
//! (the default), over PostgreSQL (`DZL_TEST_BACKEND=postgres`), and a
//! `gm` vault whose root key is in SoftHSM2 (`DZL_TEST_SUITE=gm`: the
//! vault made with `init --suite gm`, tenants signing with HMAC-SM3,
//! receipts in SM2, the root key an AES key in a SoftHSM2 token this
//! harness sets up; skipped loudly where SoftHSM2 is not installed).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};

use chrono::{Duration, Utc};
use dzl_crypto::{ReceiptAlgorithm, RootKey, RootKeyHolder, Suite};
use dzl_sdk::{RawClient, RawResponse, Signer};
use dzl_store::admin::{self, NewTenant};
use dzl_store::{SqliteStore, TenantKind};
use dzl_vault_server::settings::Settings;
use dzl_vault_server::startup::Application;
use dzl_vault_server::AppState;
use serde_json::{json, Value};

/// Canary identities: valid check digits, searched for in every file and log.
pub const NAME: &str = "欧阳金丝雀";
pub const ID_NUMBER: &str = "11010519491231002X";
pub const PHONE: &str = "13912345678";

pub struct Tenant {
    pub id: String,
    pub signer: Signer,
}

pub struct TestApp {
    pub base: String,
    /// The PostgreSQL database of this test, dropped with it.
    pub _database: Option<dzl_store_pg::testing::TestDatabase>,
    /// Kept so the store outlives the test.
    pub _dir: tempfile::TempDir,
    pub root: Arc<dyn RootKeyHolder>,
    pub platform: Tenant,
    pub other_platform: Tenant,
    pub funder: Tenant,
    pub other_funder: Tenant,
    pub operator: Tenant,
    pub state: actix_web::web::Data<AppState>,
    offset_ms: Arc<AtomicI64>,
}

pub struct Options {
    pub settings: Settings,
    /// Entitlement of the second funder.
    pub other_funder_scopes: Option<&'static str>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            settings: Settings::default(),
            other_funder_scopes: Some("risk"),
        }
    }
}

pub fn new_root() -> RootKey {
    RootKey::generate(&dzl_crypto::SystemRandom::new()).expect("rng")
}

/// The suite of the vaults under test: `gm` when `DZL_TEST_SUITE=gm`,
/// else `intl`.
pub fn suite() -> Suite {
    match std::env::var("DZL_TEST_SUITE").as_deref() {
        Ok("gm") => Suite::Gm,
        Ok("intl") | Err(_) => Suite::Intl,
        Ok(other) => panic!("DZL_TEST_SUITE={other}: expected gm or intl"),
    }
}

/// The receipt algorithm of [`suite`].
pub fn receipt_algorithm() -> ReceiptAlgorithm {
    ReceiptAlgorithm::for_suite(suite())
}

/// Credentials signing with the algorithm of [`suite`].
pub fn signer(key_id: &str, secret: &str) -> Signer {
    Signer::new(key_id, secret).for_suite(suite())
}

/// The root key of a `gm` test vault: an AES key in the test SoftHSM2's
/// token, made once per process; each vault opens it with a session of
/// its own. `None` (said on stderr) when SoftHSM2 is not installed.
fn hsm_root(test: &str) -> Option<Arc<dyn RootKeyHolder>> {
    const TOKEN: &str = "dzl-api";
    static URI: OnceLock<Option<dzl_hsm::Pkcs11Uri>> = OnceLock::new();
    let uri = URI.get_or_init(|| {
        let hsm = dzl_hsm::softhsm::shared(&[TOKEN], test)?;
        let uri = dzl_hsm::Pkcs11Uri::parse(&hsm.uri(TOKEN, "api-root")).expect("uri");
        dzl_hsm::Pkcs11Root::open_or_create(&uri).expect("the root key in SoftHSM2");
        Some(uri)
    });
    match uri {
        Some(uri) => Some(Arc::new(
            dzl_hsm::Pkcs11Root::open(uri).expect("the root key in SoftHSM2"),
        )),
        None => None,
    }
}

/// Initialises a store in `dir` with the test tenants.
pub fn provision(
    dir: &std::path::Path,
    root: &dyn RootKeyHolder,
    other_funder_scopes: Option<&str>,
) -> Vec<Tenant> {
    let store = SqliteStore::open(dir).expect("open store");
    let t = provision_store(&store, root, other_funder_scopes);
    store.close();
    t
}

/// Initialises `store` as a vault of [`suite`] with the test tenants (any
/// backend).
pub fn provision_store(
    store: &dyn dzl_store::Store,
    root: &dyn RootKeyHolder,
    other_funder_scopes: Option<&str>,
) -> Vec<Tenant> {
    admin::init_as(store, root, "test", suite()).expect("init");
    let keys = admin::load_keys(store, root).expect("keys");
    let add = |kind, name: &str, scopes: Option<&str>, purposes: Vec<dzl_types::Purpose>| {
        let c = admin::add_tenant(
            store,
            &keys.keyring,
            "test",
            NewTenant {
                cert_pin: None,
                kind,
                name: name.into(),
                scopes: scopes.map(|s| dzl_types::ScopeSet::parse_list(s).expect("scopes")),
                purposes,
                rate_limit: None,
            },
        )
        .expect("tenant");
        Tenant {
            id: c.tenant_id.to_string(),
            signer: signer(&c.key_id, c.secret.as_str()),
        }
    };
    let t = vec![
        add(TenantKind::Platform, "Platform A", None, vec![]),
        add(TenantKind::Platform, "Platform B", None, vec![]),
        add(TenantKind::Funder, "Bank A", None, vec![]),
        add(
            TenantKind::Funder,
            "Bank B",
            other_funder_scopes,
            vec![dzl_types::Purpose::Drawdown],
        ),
        add(TenantKind::Operator, "Operator", None, vec![]),
    ];
    t
}

/// Runs `f` on a plain thread. Store calls block (the PostgreSQL client
/// refuses to run on an async runtime's thread), so tests call the store
/// through this, as the server calls it through its blocking pool.
pub fn off_rt<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|s| s.spawn(f).join().expect("store call panicked"))
}

/// The backend the suite runs on: SQLite, or PostgreSQL when
/// `DZL_TEST_BACKEND=postgres` and `DZL_TEST_PG_URL` name a server (each
/// test then gets its own fresh database).
pub fn postgres_url() -> Option<String> {
    (std::env::var("DZL_TEST_BACKEND").as_deref() == Ok("postgres")).then(|| {
        std::env::var(dzl_store_pg::testing::TEST_URL_VAR)
            .expect("DZL_TEST_BACKEND=postgres needs DZL_TEST_PG_URL")
    })
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

/// The root key of a test vault: in SoftHSM2 for a `gm` vault, else a
/// fresh key in memory. A `gm` run without SoftHSM2 stops here: asking for
/// that configuration on a machine without it is a mistake of the caller
/// (`scripts/test` checks first, and says loudly that it skips it).
pub fn test_root() -> Arc<dyn RootKeyHolder> {
    match suite() {
        Suite::Gm => hsm_root("the API suite on a gm vault").unwrap_or_else(|| {
            panic!("DZL_TEST_SUITE=gm needs SoftHSM2 (apt-get install softhsm2)")
        }),
        Suite::Intl => Arc::new(new_root()),
    }
}

pub async fn spawn_app_with(opts: Options) -> TestApp {
    crate::pii::install();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = test_root();
    let mut settings = opts.settings;
    let mut database = None;
    let tenants = match postgres_url() {
        Some(admin_url) => {
            let (db, t) = off_rt(|| {
                let db = dzl_store_pg::testing::fresh_database(&admin_url).expect("fresh database");
                let store = dzl_store_pg::connect(db.url(), Default::default()).expect("connect");
                let t = provision_store(&store, &*root, opts.other_funder_scopes);
                (db, t)
            });
            settings.store.url = Some(db.url().to_owned());
            database = Some(db);
            t
        }
        None => provision(dir.path(), &*root, opts.other_funder_scopes),
    };
    let mut tenants = tenants.into_iter();
    settings.store.data_dir = dir.path().to_owned();
    settings.server.bind = "127.0.0.1:0".into();
    settings.server.workers = 2;
    let offset_ms = Arc::new(AtomicI64::new(0));
    let off = offset_ms.clone();
    let clock = Arc::new(move || Utc::now() + Duration::milliseconds(off.load(Ordering::SeqCst)));
    let app = Application::build_with_clock(settings, root.clone(), clock).expect("build");
    let base = format!("http://127.0.0.1:{}", app.port());
    let state = app.state();
    actix_web::rt::spawn(app.run());
    let mut next = || tenants.next().expect("tenant");
    TestApp {
        base,
        _dir: dir,
        _database: database,
        root,
        platform: next(),
        other_platform: next(),
        funder: next(),
        other_funder: next(),
        operator: next(),
        state,
        offset_ms,
    }
}

pub fn consent(scopes: &[&str]) -> Value {
    let now = Utc::now();
    json!({
        "consent_id": "CNS-77",
        "granted_at": (now - Duration::hours(1)).to_rfc3339(),
        "expires_at": (now + Duration::days(365)).to_rfc3339(),
        "scopes": scopes,
        "evidence_sha256": "a".repeat(64),
    })
}

pub fn applicant() -> Value {
    json!({"name": NAME, "id_type": "resident_id", "id_number": ID_NUMBER, "phone": PHONE,
           "residence_address": "北京市朝阳区金丝雀路1号"})
}

/// A deposit body with all three groups and the given grants.
pub fn deposit_body(external_ref: &str, grants: Value) -> Value {
    json!({
        "external_ref": external_ref,
        "purpose": "credit_application",
        "consent": consent(&["applicant", "device", "risk"]),
        "applicant": applicant(),
        "device": {"device_id": "d-1", "os": "android", "ip": "203.0.113.7"},
        "risk": {"score": 712, "grade": "B+", "tags": ["thin_file"], "features": {"income_ratio": 0.42, "age_months": 17}},
        "grants": grants,
    })
}

impl TestApp {
    pub fn client(&self, t: &Tenant) -> RawClient {
        RawClient::new(self.base.clone(), Some(t.signer.clone()))
    }

    pub fn anonymous(&self) -> RawClient {
        RawClient::new(self.base.clone(), None)
    }

    pub async fn post(&self, t: &Tenant, path: &str, body: &Value) -> RawResponse {
        let bytes = serde_json::to_vec(body).expect("json");
        let r = self
            .client(t)
            .send("POST", path, &bytes)
            .await
            .expect("transport");
        crate::pii::check_response("POST", path, &r);
        r
    }

    pub async fn get(&self, t: &Tenant, path: &str) -> RawResponse {
        let r = self
            .client(t)
            .send("GET", path, b"")
            .await
            .expect("transport");
        crate::pii::check_response("GET", path, &r);
        r
    }

    pub async fn delete(&self, t: &Tenant, path: &str) -> RawResponse {
        let r = self
            .client(t)
            .send("DELETE", path, b"")
            .await
            .expect("transport");
        crate::pii::check_response("DELETE", path, &r);
        r
    }

    /// Deposits with one grant to the main funder; returns the response JSON.
    pub async fn deposit(&self, external_ref: &str, scopes: &[&str], ttl: u32) -> Value {
        let grants = json!([{"funder_id": self.funder.id, "scopes": scopes, "ttl_seconds": ttl}]);
        let r = self
            .post(
                &self.platform,
                "/v1/deposits",
                &deposit_body(external_ref, grants),
            )
            .await;
        assert_eq!(
            r.status,
            201,
            "deposit failed: {}",
            String::from_utf8_lossy(&r.body)
        );
        r.json()
    }

    pub async fn redeem(&self, funder: &Tenant, code: &str, purpose: &str) -> RawResponse {
        self.post(
            funder,
            "/v1/redemptions",
            &json!({"code": code, "purpose": purpose}),
        )
        .await
    }

    /// Moves the server's clock forward.
    pub fn advance(&self, d: Duration) {
        self.offset_ms
            .fetch_add(d.num_milliseconds(), Ordering::SeqCst);
    }
}

impl Drop for TestApp {
    /// The PII scan of the data directory and the logs (`pii`).
    fn drop(&mut self) {
        // Dropping the database talks to PostgreSQL: not on the runtime's thread.
        if let Some(db) = self._database.take() {
            off_rt(move || drop(db));
        }
        if !std::thread::panicking() {
            crate::pii::check_dir(self._dir.path());
        }
    }
}

/// Asserts a problem+json answer with `status` and `code`.
pub fn assert_problem(r: &RawResponse, status: u16, code: &str) {
    let body = String::from_utf8_lossy(&r.body);
    assert_eq!(r.status, status, "expected {status} {code}, got {body}");
    let ct = r
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert_eq!(ct, "application/problem+json", "{body}");
    let v = r.json();
    assert_eq!(v["code"], code, "{body}");
    assert_eq!(v["status"], status, "{body}");
    assert!(
        v["type"].as_str().is_some_and(|t| t.ends_with(code)),
        "{body}"
    );
    assert!(v["title"].is_string() && v["detail"].is_string(), "{body}");
}
