//! The harness: a real vault on port 0 over a fresh temporary store, served
//! on its own thread (so async and blocking tests alike can call it), with a
//! movable, freezable clock and the tenants the tests need.

use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use chrono::{DateTime, Duration, Utc};
use dzl_sdk::types::{Group, IdType, Os, Purpose, ScopeSet, TenantId};
use dzl_sdk::{
    ApplicantBuilder, ConsentBuilder, Deposit, DepositBuilder, DeviceBuilder, FunderClient,
    OperatorClient, PlatformClient, RetryPolicy, RiskBuilder, Signer, Vault,
};
use dzl_store::admin::{self, NewTenant};
use dzl_store::{SqliteStore, TenantKind};
use dzl_vault_server::settings::Settings;
use dzl_vault_server::startup::Application;

/// Canary identity: a valid resident id.
pub const NAME: &str = "欧阳金丝雀";
pub const ID_NUMBER: &str = "11010519491231002X";
pub const PHONE: &str = "13912345678";

pub struct Tenant {
    pub id: TenantId,
    pub signer: Signer,
}

#[derive(Default)]
struct ClockState {
    offset_ms: i64,
    frozen_at: Option<DateTime<Utc>>,
}

pub struct TestVault {
    pub url: String,
    pub platform: Tenant,
    pub other_platform: Tenant,
    /// Entitled to every group and purpose.
    pub funder: Tenant,
    /// Entitled to `risk` and `drawdown` only.
    pub other_funder: Tenant,
    pub operator: Tenant,
    /// A platform allowed 2 requests a second.
    pub limited_platform: Tenant,
    clock: Arc<Mutex<ClockState>>,
    system: actix_web::rt::System,
    thread: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for TestVault {
    fn drop(&mut self) {
        self.system.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn start() -> TestVault {
    start_with(Settings::default())
}

pub fn start_with(mut settings: Settings) -> TestVault {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dzl_crypto::RootKey::generate(&dzl_crypto::SystemRandom::new()).expect("rng");
    let store = SqliteStore::open(dir.path()).expect("open store");
    admin::init(&store, &root, "test").expect("init");
    let keys = admin::load_keys(&store, &root).expect("keys");
    let add =
        |kind, name: &str, scopes: Option<&str>, purposes: Vec<Purpose>, rate: Option<u32>| {
            let c = admin::add_tenant(
                &store,
                &keys.keyring,
                "test",
                NewTenant {
                    cert_pin: None,
                    kind,
                    name: name.into(),
                    scopes: scopes.map(|s| ScopeSet::parse_list(s).expect("scopes")),
                    purposes,
                    rate_limit: rate,
                },
            )
            .expect("tenant");
            Tenant {
                id: c.tenant_id.clone(),
                signer: Signer::new(c.key_id.clone(), c.secret.as_str()),
            }
        };
    let platform = add(TenantKind::Platform, "Platform A", None, vec![], None);
    let other_platform = add(TenantKind::Platform, "Platform B", None, vec![], None);
    let funder = add(TenantKind::Funder, "Bank A", None, vec![], None);
    let other_funder = add(
        TenantKind::Funder,
        "Bank B",
        Some("risk"),
        vec![Purpose::Drawdown],
        None,
    );
    let operator = add(TenantKind::Operator, "Operator", None, vec![], None);
    let limited_platform = add(TenantKind::Platform, "Platform C", None, vec![], Some(2));
    store.close();

    settings.store.data_dir = dir.path().to_owned();
    settings.server.bind = "127.0.0.1:0".into();
    settings.server.workers = 1;
    let clock = Arc::new(Mutex::new(ClockState::default()));
    let c = clock.clone();
    let server_clock: dzl_vault_server::state::Clock = Arc::new(move || {
        let s = c.lock().expect("clock");
        s.frozen_at.unwrap_or_else(Utc::now) + Duration::milliseconds(s.offset_ms)
    });
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        let system = actix_web::rt::System::new();
        let started = system.block_on(async move {
            let app = Application::build_with_clock(settings, root, server_clock).expect("build");
            let port = app.port();
            actix_web::rt::spawn(app.run());
            (port, actix_web::rt::System::current())
        });
        tx.send(started).expect("send");
        let _ = system.run();
    });
    let (port, system) = rx.recv().expect("server started");
    TestVault {
        url: format!("http://127.0.0.1:{port}"),
        platform,
        other_platform,
        funder,
        other_funder,
        operator,
        limited_platform,
        clock,
        system,
        thread: Some(thread),
        _dir: dir,
    }
}

impl TestVault {
    pub fn vault(&self) -> Vault {
        Vault::new(&self.url).expect("vault")
    }

    pub fn vault_with(&self, retry: RetryPolicy) -> Vault {
        Vault::builder(&self.url)
            .retry(retry)
            .build()
            .expect("vault")
    }

    pub fn platform(&self) -> PlatformClient {
        self.vault().platform(self.platform.signer.clone())
    }

    pub fn funder(&self) -> FunderClient {
        self.vault().funder(self.funder.signer.clone())
    }

    pub fn operator(&self) -> OperatorClient {
        self.vault().operator(self.operator.signer.clone())
    }

    pub fn blocking(&self) -> dzl_sdk::blocking::Vault {
        dzl_sdk::blocking::Vault::new(&self.url).expect("vault")
    }

    /// Moves the server's clock by `d` (either way).
    pub fn advance(&self, d: Duration) {
        self.clock.lock().expect("clock").offset_ms += d.num_milliseconds();
    }

    /// Stops the server's clock where it is now.
    pub fn freeze(&self) {
        let mut s = self.clock.lock().expect("clock");
        s.frozen_at = Some(Utc::now());
    }

    /// A deposit of all three groups for the canary applicant, granting
    /// `scopes` to the main funder for `ttl` seconds.
    pub fn deposit(&self, scopes: ScopeSet, ttl: u32) -> Deposit {
        deposit_for(&self.funder.id, scopes, ttl)
    }
}

/// A fresh external reference.
pub fn reference() -> String {
    format!("APP-{}", &dzl_sdk::fresh_nonce()[..20])
}

pub fn applicant_and_risk() -> ScopeSet {
    ScopeSet::single(Group::Applicant).with(Group::Risk)
}

/// A complete deposit builder without grants (consent covers all groups).
pub fn base_deposit(purpose: Purpose) -> DepositBuilder {
    let now = Utc::now();
    Deposit::builder(reference(), purpose)
        .consent(
            ConsentBuilder::new(
                "CNS-77",
                ScopeSet::ALL,
                now - Duration::hours(1),
                now + Duration::days(365),
            )
            .evidence("本人同意……"),
        )
        .applicant(
            ApplicantBuilder::new(NAME, IdType::ResidentId, ID_NUMBER, PHONE)
                .residence_address("北京市朝阳区金丝雀路1号"),
        )
        .device(DeviceBuilder::new("d-1", Os::Android, "203.0.113.7"))
        .risk(
            RiskBuilder::new(712)
                .grade("B+")
                .tag("thin_file")
                .feature("income_ratio", 0.42)
                .feature_int("age_months", 17),
        )
}

pub fn deposit_for(funder: &TenantId, scopes: ScopeSet, ttl: u32) -> Deposit {
    base_deposit(Purpose::CreditApplication)
        .grant(funder.as_str(), scopes, Some(ttl))
        .build()
        .expect("valid deposit")
}

/// A well-formed code no vault issued.
pub fn unknown_code() -> String {
    format!(
        "ac_{}",
        &(dzl_sdk::fresh_nonce() + &dzl_sdk::fresh_nonce())[..32]
    )
}

/// Asserts `r` is `Err` matching `pat`, showing what came instead.
#[macro_export]
macro_rules! assert_err {
    ($r:expr, $pat:pat) => {
        match $r {
            Err($pat) => {}
            other => panic!("expected {}, got {:?}", stringify!($pat), other),
        }
    };
}
