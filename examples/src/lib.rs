//! Runnable dzl-vault programs, and the one piece they share: [`Sandbox`],
//! a throw-away vault served in-process on a temporary directory with a
//! platform, a funder and an operator — for the `end_to_end` program, the
//! SDK's doc examples, and anyone who wants to try the SDK without running
//! `dzl-vault demo`.
//!
//! * `platform_and_funder` — against an already running vault (e.g.
//!   `dzl-vault demo`, whose printed `DZL_*` variables it reads): a platform
//!   deposits, a funder redeems, verifies the receipt and reports an
//!   outcome, the platform reads the code's status.
//! * `end_to_end` — starts a [`Sandbox`] and runs the same flow; exits 0.
//!   `end_to_end --suite gm` does it with a `gm` (国密) vault: SM4-GCM
//!   storage, HMAC-SM3 request signatures, SM2 receipts.
#![warn(missing_docs)]

use std::sync::mpsc;
use std::thread::JoinHandle;

use anyhow::Context as _;
use dzl_sdk::chrono::{Duration, Utc};
use dzl_sdk::types::{CodeState, CodeStatus, Decision, Group, IdType, Outcome, Purpose, ScopeSet};
use dzl_sdk::{
    ApplicantBuilder, ConsentBuilder, Deposit, DeviceBuilder, RiskBuilder, Signer, Suite,
    VerifiedReceipt,
};
use dzl_store::admin::{self, NewTenant};
use dzl_store::{SqliteStore, TenantKind};
use dzl_vault_server::settings::Settings;
use dzl_vault_server::startup::Application;

/// A tenant's credentials, as `dzlctl tenant add` prints them.
#[derive(Clone)]
pub struct Credentials {
    /// `ten_…`.
    pub tenant_id: String,
    /// The key id requests are signed with.
    pub key_id: String,
    secret: String,
}

impl Credentials {
    /// Credentials from their three parts.
    pub fn new(
        tenant_id: impl Into<String>,
        key_id: impl Into<String>,
        secret: impl Into<String>,
    ) -> Self {
        Credentials {
            tenant_id: tenant_id.into(),
            key_id: key_id.into(),
            secret: secret.into(),
        }
    }

    /// The signing secret (shown once by `dzlctl tenant add`).
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// The SDK signer of these credentials.
    pub fn signer(&self) -> Signer {
        Signer::new(self.key_id.clone(), self.secret.clone())
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("tenant_id", &self.tenant_id)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// A vault served on `127.0.0.1` (a free port) over a fresh store in a
/// temporary directory, on its own thread, until dropped.
pub struct Sandbox {
    url: String,
    /// A platform (资产方).
    pub platform: Credentials,
    /// A funder (资金方) entitled to every group and purpose.
    pub funder: Credentials,
    /// An operator.
    pub operator: Credentials,
    system: actix_web::rt::System,
    thread: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Sandbox {
    /// Initialises an `intl` vault (new root key, keyring), adds the three
    /// tenants and starts serving.
    pub fn start() -> anyhow::Result<Sandbox> {
        Self::start_as(Suite::Intl)
    }

    /// [`Sandbox::start`] with a vault of `suite`, as `dzlctl init --suite`
    /// makes it.
    pub fn start_as(suite: Suite) -> anyhow::Result<Sandbox> {
        let dir = tempfile::tempdir().context("creating a temporary directory")?;
        let root = dzl_crypto::RootKey::generate(&dzl_crypto::SystemRandom::new())
            .map_err(|e| anyhow::anyhow!("generating a root key: {e}"))?;
        let store = SqliteStore::open(dir.path()).map_err(|e| anyhow::anyhow!("{e}"))?;
        admin::init_as(&store, &root, "sandbox", suite)?;
        let keys = admin::load_keys(&store, &root)?;
        let add = |kind, name: &str| -> anyhow::Result<Credentials> {
            let c =
                admin::add_tenant(&store, &keys.keyring, "sandbox", NewTenant::new(kind, name))?;
            Ok(Credentials::new(
                c.tenant_id.to_string(),
                c.key_id.clone(),
                c.secret.as_str(),
            ))
        };
        let platform = add(TenantKind::Platform, "Sandbox Platform")?;
        let funder = add(TenantKind::Funder, "Sandbox Bank")?;
        let operator = add(TenantKind::Operator, "Sandbox Operator")?;
        store.close();

        let mut settings = Settings::default();
        settings.store.data_dir = dir.path().to_owned();
        settings.server.bind = "127.0.0.1:0".into();
        settings.server.workers = 1;
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let system = actix_web::rt::System::new();
            let started = system.block_on(async move {
                let app = Application::build(settings, root)?;
                let port = app.port();
                actix_web::rt::spawn(app.run());
                Ok::<_, anyhow::Error>((port, actix_web::rt::System::current()))
            });
            let ok = started.is_ok();
            let _ = tx.send(started);
            if ok {
                let _ = system.run();
            }
        });
        let (port, system) = rx
            .recv()
            .context("the sandbox server thread ended before starting")??;
        Ok(Sandbox {
            url: format!("http://127.0.0.1:{port}"),
            platform,
            funder,
            operator,
            system,
            thread: Some(thread),
            _dir: dir,
        })
    }

    /// The base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Deposits a sample application with a one-hour code for the funder
    /// (all three groups, purpose `credit_application`) and returns the code.
    pub async fn demo_code(&self) -> anyhow::Result<String> {
        let platform = dzl_sdk::PlatformClient::new(self.url(), self.platform.signer())?;
        let reference = format!("SANDBOX-{}", &dzl_sdk::fresh_nonce()[..12]);
        let created = platform
            .deposit(&sample_deposit(&reference, &self.funder.tenant_id)?)
            .await?;
        let code = created.codes.into_iter().next().context("no code issued")?;
        Ok(code.code)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.system.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A sample application: a consenting applicant with all three groups and
/// one grant of `applicant` and `risk` to `funder_id`, valid for an hour.
pub fn sample_deposit(external_ref: &str, funder_id: &str) -> Result<Deposit, dzl_sdk::BuildError> {
    let now = Utc::now();
    let granted = ScopeSet::single(Group::Applicant).with(Group::Risk);
    Deposit::builder(external_ref, Purpose::CreditApplication)
        .consent(
            ConsentBuilder::new("CNS-77", ScopeSet::ALL, now, now + Duration::days(365))
                .evidence("本人同意将身份、设备与风险信息提供给征信机构，用于授信申请。"),
        )
        .applicant(
            ApplicantBuilder::new(
                "张三",
                IdType::ResidentId,
                "11010519491231002X",
                "13800138000",
            )
            .residence_address("北京市朝阳区建国路1号"),
        )
        .device(DeviceBuilder::new(
            "d-1",
            dzl_sdk::types::Os::Android,
            "203.0.113.7",
        ))
        .risk(
            RiskBuilder::new(712)
                .grade("B+")
                .tag("thin_file")
                .feature("income_ratio", 0.42)
                .feature_int("age_months", 17),
        )
        .grant(funder_id, granted, Some(3600))
        .build()
}

/// What [`run_flow`] did, for the programs to print.
#[derive(Debug)]
pub struct FlowReport {
    /// The deposit.
    pub deposit_id: String,
    /// The verified receipt.
    pub receipt: VerifiedReceipt,
    /// The outcome as reported by the funder.
    pub outcome: Outcome,
    /// The code's status as the platform reads it at the end.
    pub status: CodeStatus,
}

/// The whole flow, both sides: the platform deposits, the funder redeems,
/// verifies the receipt and reports an outcome, the platform reads the code's
/// status. Both programs run it.
pub async fn run_flow(
    url: &str,
    platform: Signer,
    funder_id: &str,
    funder: Signer,
) -> anyhow::Result<FlowReport> {
    // One connection pool for both clients (in real life they are two
    // companies, each with its own).
    let vault = dzl_sdk::Vault::builder(url)
        .timeout(std::time::Duration::from_secs(10))
        .build()?;
    // Learned from the vault (GET /v1/receipt-keys): requests are signed
    // with its suite's HMAC, whatever the signers were made for.
    let suite = vault.suite().await.context("the vault's suite")?;
    println!("vault: cipher suite {suite}");
    let platform = vault.platform(platform);
    let funder = vault.funder(funder);

    // 资产方: deposit with consent; one code for the funder.
    let reference = format!("APP-{}", &dzl_sdk::fresh_nonce()[..16]);
    let created = platform
        .deposit(&sample_deposit(&reference, funder_id)?)
        .await
        .context("deposit")?;
    let issued = created.codes.first().context("the vault issued no code")?;
    println!(
        "platform: deposited {} ({}), code {} for {}",
        created.deposit_id, reference, issued.code_id, issued.funder_id
    );

    // 资金方: redeem the code that came with the application.
    let redemption = funder
        .redeem(&issued.code, Purpose::CreditApplication)
        .await
        .context("redeem")?;
    let applicant = redemption
        .applicant()
        .context("the applicant group was granted but not released")?;
    let risk = redemption
        .risk()
        .context("the risk group was granted but not released")?;
    println!(
        "funder: redeemed {}: groups {:?}, applicant {}, score {}",
        redemption.redemption_id(),
        redemption.scopes().names(),
        applicant.name.as_str(),
        risk.score.get()
    );
    let receipt = funder
        .verify_receipt(&redemption)
        .await
        .context("verify receipt")?;
    println!(
        "funder: receipt verified with key {} (groups_sha256 {}…)",
        receipt.key_id,
        &receipt.body.groups_sha256[..16]
    );
    let outcome = funder
        .report_outcome(
            redemption.redemption_id(),
            Decision::Approved,
            Some(500_000),
        )
        .await
        .context("report outcome")?;
    println!("funder: reported {:?}", outcome.decision);

    // 资产方: the code is spent, and the decision is visible.
    let status = platform
        .code_status(&issued.code_id)
        .await
        .context("code status")?;
    anyhow::ensure!(
        status.state == CodeState::Redeemed,
        "the code should read redeemed, reads {:?}",
        status.state
    );
    anyhow::ensure!(
        status.outcome.as_ref().map(|o| o.decision) == Some(Decision::Approved),
        "the outcome should be visible to the platform"
    );
    println!(
        "platform: code {} is {:?}; outcome {:?}",
        status.code_id, status.state, outcome.decision
    );
    Ok(FlowReport {
        deposit_id: created.deposit_id.to_string(),
        receipt,
        outcome,
        status,
    })
}
