//! The async clients: [`Vault`] (one connection pool, timeouts, retries,
//! the receipt-key cache) and the three role clients made from it.

use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use dzl_crypto::Suite;
use dzl_types::signing::SignatureAlgorithm;
use dzl_types::wire::{
    CodeStatus, Decision, DepositResponse, IssuedCode, Outcome, ReceiptKey, SubjectAccessResponse,
};
use dzl_types::{CodeId, DepositId, IdType, Purpose, RedemptionId, ScopeSet, TenantId};

use crate::builder::Deposit;
use crate::error::Error;
use crate::ops::{self, Config, Op, RetryPolicy};
use crate::raw::RawClient;
use crate::redemption::{verify_receipt, Redemption, VerifiedReceipt};
use crate::signer::Signer;

/// The receipt keys seen so far. Keys are only ever added by the vault, so
/// the cache is refreshed only when a receipt names a key it lacks.
#[derive(Debug, Default)]
pub(crate) struct KeyCache(RwLock<Vec<ReceiptKey>>);

impl KeyCache {
    pub fn get(&self) -> Vec<ReceiptKey> {
        self.0.read().map(|k| k.clone()).unwrap_or_default()
    }

    pub fn knows(&self, key_id: &str) -> bool {
        self.0
            .read()
            .map(|k| k.iter().any(|k| k.key_id == key_id))
            .unwrap_or(false)
    }

    pub fn set(&self, keys: Vec<ReceiptKey>) {
        if let Ok(mut k) = self.0.write() {
            *k = keys;
        }
    }
}

/// A connection to one vault: its base URL, one HTTP connection pool,
/// timeouts, the retry policy and the receipt-key cache. Cheap to clone
/// (clones share all of it); make the role clients from it.
///
/// ```
/// # fn main() -> Result<(), dzl_sdk::Error> {
/// use std::time::Duration;
/// use dzl_sdk::{RetryPolicy, Signer, Vault};
///
/// let vault = Vault::builder("http://127.0.0.1:8080")
///     .timeout(Duration::from_secs(10))
///     .retry(RetryPolicy::default())
///     .build()?;
/// let platform = vault.platform(Signer::new("k_platform", "secret"));
/// let funder = vault.funder(Signer::new("k_funder", "secret"));
/// # let _ = (platform, funder);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Vault {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    base: String,
    raw: RawClient,
    retry: RetryPolicy,
    keys: KeyCache,
    /// The vault's suite: told by the builder, or learned once.
    suite: OnceLock<Suite>,
}

/// Configures a [`Vault`]; see [`Vault::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until .build()"]
pub struct VaultBuilder {
    config: Config,
}

impl VaultBuilder {
    /// The whole-request timeout of one attempt (default 30 s); `None` for
    /// none.
    pub fn timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.config.timeout = timeout.into();
        self
    }

    /// The connect timeout (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// The vault's cipher suite: requests are signed with its algorithm
    /// (HMAC-SHA256 for `intl`, HMAC-SM3 for `gm`). Without it requests are
    /// signed for `intl` until the suite is learned from
    /// `GET /v1/receipt-keys` ([`Vault::suite`], [`Vault::receipt_keys`], or
    /// by itself after a vault refuses the algorithm, which costs a `gm`
    /// vault's first request one round trip more).
    pub fn suite(mut self, suite: Suite) -> Self {
        self.config.suite = Some(suite);
        self
    }

    /// When to send a request again (default: [`RetryPolicy::default`]).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.config.retry = policy;
        self
    }

    /// Trusts this PEM CA certificate (or bundle) for the vault's TLS
    /// certificate. Once any root is given, the built-in roots are not used:
    /// a bureau's vault is reached through its own CA.
    pub fn root_certificate_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.config.tls.roots_pem.push(pem.into());
        self
    }

    /// Presents this client certificate (PEM chain, leaf first) and private
    /// key (PEM) when the vault asks for one (mutual TLS).
    pub fn client_identity_pem(mut self, cert_chain_pem: &[u8], key_pem: &[u8]) -> Self {
        let mut pem = cert_chain_pem.to_vec();
        pem.push(b'\n');
        pem.extend_from_slice(key_pem);
        self.config.tls.identity_pem = Some(pem);
        self
    }

    /// Checks the base URL and makes the connection pool.
    pub fn build(self) -> Result<Vault, Error> {
        let base = self.config.checked_base()?;
        let mut http = reqwest::Client::builder()
            .user_agent(Config::user_agent())
            .connect_timeout(self.config.connect_timeout);
        let roots = self.config.tls.roots()?;
        if !roots.is_empty() {
            http = http.tls_certs_only(roots);
        }
        if let Some(identity) = self.config.tls.identity()? {
            http = http.identity(identity);
        }
        if let Some(t) = self.config.timeout {
            http = http.timeout(t);
        }
        let http = http.build().map_err(|e| Error::Transport(e.into()))?;
        let suite = OnceLock::new();
        if let Some(told) = self.config.suite {
            let _ = suite.set(told);
        }
        Ok(Vault {
            shared: Arc::new(Shared {
                raw: RawClient::with_http(base.clone(), http, None),
                base,
                retry: self.config.retry,
                keys: KeyCache::default(),
                suite,
            }),
        })
    }
}

impl Vault {
    /// Starts configuring a vault at `base_url` (`http://host:port`).
    pub fn builder(base_url: impl Into<String>) -> VaultBuilder {
        VaultBuilder {
            config: Config::new(base_url),
        }
    }

    /// A vault at `base_url` with the default timeouts and retries.
    pub fn new(base_url: impl Into<String>) -> Result<Vault, Error> {
        Vault::builder(base_url).build()
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.shared.base
    }

    /// A platform (资产方) client signing with `signer`.
    pub fn platform(&self, signer: Signer) -> PlatformClient {
        PlatformClient {
            vault: self.clone(),
            signer,
        }
    }

    /// A funder (资金方) client signing with `signer`.
    pub fn funder(&self, signer: Signer) -> FunderClient {
        FunderClient {
            vault: self.clone(),
            signer,
        }
    }

    /// An operator client signing with `signer`.
    pub fn operator(&self, signer: Signer) -> OperatorClient {
        OperatorClient {
            vault: self.clone(),
            signer,
        }
    }

    /// Fetches the receipt verification keys (`GET /v1/receipt-keys`,
    /// unsigned) and refreshes the cache with them.
    pub async fn receipt_keys(&self) -> Result<Vec<ReceiptKey>, Error> {
        let answer = self.send_op(None, &ops::receipt_keys()).await?;
        let _ = self.shared.suite.set(answer.suite.unwrap_or(Suite::Intl));
        self.shared.keys.set(answer.keys.clone());
        Ok(answer.keys)
    }

    /// The vault's cipher suite: the one the builder was told, else the
    /// one `GET /v1/receipt-keys` names (fetched once and kept; a vault that
    /// names none is `intl`).
    pub async fn suite(&self) -> Result<Suite, Error> {
        if let Some(suite) = self.shared.suite.get() {
            return Ok(*suite);
        }
        self.receipt_keys().await?;
        Ok(self.shared.suite.get().copied().unwrap_or(Suite::Intl))
    }

    /// Verifies a receipt, fetching the keys when the cache lacks the one it
    /// names.
    async fn verify(&self, redemption: &Redemption) -> Result<VerifiedReceipt, Error> {
        let keys = if self.shared.keys.knows(&redemption.receipt().key_id) {
            self.shared.keys.get()
        } else {
            self.receipt_keys().await?
        };
        Ok(verify_receipt(&keys, redemption)?)
    }

    /// Sends `op`, again while the retry policy allows, and reads the answer.
    /// Sends `op` signed with the vault's suite: the one told or learned,
    /// else `intl`. A vault that refuses the algorithm
    /// (`unsupported_signature_algorithm`: nothing happened) makes the
    /// client learn the suite from `GET /v1/receipt-keys` and send once
    /// more with it.
    async fn run<T>(&self, signer: Option<&Signer>, op: Op<T>) -> Result<T, Error> {
        let Some(signer) = signer else {
            return self.send_op(None, &op).await;
        };
        let known = self.shared.suite.get().copied();
        let first = SignatureAlgorithm::for_suite(known.unwrap_or(Suite::Intl));
        match self.send_op(Some((signer, first)), &op).await {
            Err(e) if known.is_none() && refused_algorithm(&e) => {
                let learned = SignatureAlgorithm::for_suite(self.suite().await?);
                if learned == first {
                    return Err(e);
                }
                self.send_op(Some((signer, learned)), &op).await
            }
            other => other,
        }
    }

    /// Sends `op`, signed with `signer`'s credentials and the algorithm
    /// given, retrying as the policy says.
    async fn send_op<T>(
        &self,
        signer: Option<(&Signer, SignatureAlgorithm)>,
        op: &Op<T>,
    ) -> Result<T, Error> {
        let mut retries = 0;
        loop {
            let headers = signer.map(|(s, alg)| s.sign_now(alg, op.method, &op.path, &op.body));
            let outcome = self
                .shared
                .raw
                .send_with(op.method, &op.path, &op.body, headers)
                .await;
            match self.shared.retry.delay(op.idempotent, retries, &outcome) {
                Some(wait) => {
                    tokio::time::sleep(wait).await;
                    retries += 1;
                }
                None => return op.finish(outcome?),
            }
        }
    }
}

/// Whether the vault refused the request's signature algorithm.
pub(crate) fn refused_algorithm(e: &Error) -> bool {
    matches!(
        e,
        Error::Unauthorized {
            code: dzl_types::ErrorCode::UnsupportedSignatureAlgorithm,
            ..
        }
    )
}

/// The platform's (资产方) client: deposits, codes, erasure.
#[derive(Debug, Clone)]
pub struct PlatformClient {
    vault: Vault,
    signer: Signer,
}

impl PlatformClient {
    /// A client of the vault at `base_url` with default settings. To share
    /// one connection pool between clients, or to set timeouts and retries,
    /// use [`Vault::builder`].
    pub fn new(base_url: impl Into<String>, signer: Signer) -> Result<Self, Error> {
        Ok(Vault::new(base_url)?.platform(signer))
    }

    /// Deposits an applicant's data with consent and returns the deposit id,
    /// the subject reference and one code per grant (`POST /v1/deposits`).
    /// The codes are shown only here: hand each to its funder.
    ///
    /// Refused before sending when [`Deposit`] could not be built; the vault
    /// still decides what only it knows ([`Error::FunderNotEntitled`],
    /// [`Error::UnknownFunder`], [`Error::DuplicateExternalRef`], …), and
    /// stores nothing when it refuses.
    ///
    /// Not retried once it may have reached the vault. If it fails with
    /// [`Error::Transport`] and
    /// [`request_may_have_reached_vault`](crate::TransportError::request_may_have_reached_vault),
    /// send the same deposit again: the `external_ref` makes that safe. A
    /// success means the first attempt had not gone through;
    /// [`Error::DuplicateExternalRef`] means it had, and its answer was lost.
    /// That error's `deposit_id` names the deposit: its codes were shown
    /// only in the lost answer, so issue new ones with
    /// [`PlatformClient::issue_code`] (or erase it with
    /// [`PlatformClient::erase_deposit`]).
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let sandbox = dzl_examples::Sandbox::start()?;
    /// # let (url, platform_signer) = (sandbox.url().to_owned(), sandbox.platform.signer());
    /// # let funder_id = sandbox.funder.tenant_id.clone();
    /// # tokio::runtime::Runtime::new()?.block_on(async move {
    /// use chrono::{Duration, Utc};
    /// use dzl_sdk::{ApplicantBuilder, ConsentBuilder, Deposit, PlatformClient, RiskBuilder};
    /// use dzl_sdk::types::{Group, IdType, Purpose, ScopeSet};
    ///
    /// let platform = PlatformClient::new(url, platform_signer)?;
    /// let scopes = ScopeSet::single(Group::Applicant).with(Group::Risk);
    /// let now = Utc::now();
    /// let deposit = Deposit::builder("APP-20261122-0001", Purpose::CreditApplication)
    ///     .consent(
    ///         ConsentBuilder::new("CNS-77", scopes, now, now + Duration::days(365))
    ///             .evidence("本人同意……(the signed consent text)"),
    ///     )
    ///     .applicant(ApplicantBuilder::new("张三", IdType::ResidentId, "11010519491231002X", "13800138000"))
    ///     .risk(RiskBuilder::new(712).grade("B+"))
    ///     .grant(&funder_id, scopes, Some(3600))
    ///     .build()?;
    /// let created = platform.deposit(&deposit).await?;
    /// assert_eq!(created.codes.len(), 1);
    /// // created.codes[0].code goes to the funder with the application.
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })
    /// # }
    /// ```
    pub async fn deposit(&self, deposit: &Deposit) -> Result<DepositResponse, Error> {
        self.vault
            .run(Some(&self.signer), ops::deposit(deposit))
            .await
    }

    /// Issues one more code for a deposit (`POST /v1/deposits/{id}/codes`).
    /// Not retried once it may have reached the vault (a second attempt
    /// would issue a second code).
    pub async fn issue_code(
        &self,
        deposit_id: &DepositId,
        funder_id: &TenantId,
        scopes: ScopeSet,
        ttl_seconds: Option<u32>,
    ) -> Result<IssuedCode, Error> {
        let op = ops::issue_code(deposit_id, funder_id, scopes, ttl_seconds)?;
        self.vault.run(Some(&self.signer), op).await
    }

    /// A code's state, and the funder's outcome once reported
    /// (`GET /v1/codes/{id}`). Retried.
    pub async fn code_status(&self, code_id: &CodeId) -> Result<CodeStatus, Error> {
        self.vault
            .run(Some(&self.signer), ops::code_status(code_id))
            .await
    }

    /// Revokes an unredeemed code (`POST /v1/codes/{id}/revoke`); revoking a
    /// revoked code succeeds again. Fails with [`Error::CodeAlreadyRedeemed`]
    /// or [`Error::CodeExpired`]. Retried.
    pub async fn revoke_code(&self, code_id: &CodeId) -> Result<CodeStatus, Error> {
        self.vault
            .run(Some(&self.signer), ops::revoke_code(code_id))
            .await
    }

    /// Erases a deposit (consent withdrawn): its data keys are destroyed and
    /// its outstanding codes revoked; the audit trail stays
    /// (`DELETE /v1/deposits/{id}`). Succeeds when the deposit is erased,
    /// by this call or an earlier one. Retried.
    pub async fn erase_deposit(&self, deposit_id: &DepositId) -> Result<(), Error> {
        ops::erased(
            self.vault
                .run(Some(&self.signer), ops::erase_deposit(deposit_id))
                .await,
        )
    }
}

/// The funder's (资金方) client: redemption, receipts, outcomes.
#[derive(Debug, Clone)]
pub struct FunderClient {
    vault: Vault,
    signer: Signer,
}

impl FunderClient {
    /// A client of the vault at `base_url` with default settings. To share
    /// one connection pool between clients, or to set timeouts and retries,
    /// use [`Vault::builder`].
    pub fn new(base_url: impl Into<String>, signer: Signer) -> Result<Self, Error> {
        Ok(Vault::new(base_url)?.funder(signer))
    }

    /// Redeems a code for `purpose` and returns exactly the granted groups,
    /// typed, with the consent and the vault's signed receipt
    /// (`POST /v1/redemptions`). A code redeems once.
    ///
    /// **Never retried once it may have reached the vault.** If it fails
    /// with [`Error::Transport`] and
    /// [`request_may_have_reached_vault`](crate::TransportError::request_may_have_reached_vault)
    /// (a timeout, a broken connection), the code may or may not have been
    /// redeemed. Redeeming it again is safe — the vault redeems a code
    /// exactly once — and tells you which:
    ///
    /// * it succeeds: the first attempt had not gone through;
    /// * [`Error::CodeAlreadyRedeemed`]: the first attempt went through and
    ///   its answer was lost. The data cannot be released a second time;
    ///   ask the platform for a new code. The platform sees the redemption
    ///   with [`PlatformClient::code_status`] (state `redeemed`,
    ///   `redeemed_at`) and issues another code with
    ///   [`PlatformClient::issue_code`].
    ///
    /// Failures with nothing released: [`Error::CodeNotFound`] (counts
    /// against the guessing limit), [`Error::CodeExpired`],
    /// [`Error::CodeRevoked`], [`Error::PurposeMismatch`],
    /// [`Error::RateLimited`]. A malformed code is refused before sending
    /// ([`Error::Invalid`]).
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let sandbox = dzl_examples::Sandbox::start()?;
    /// # let (url, funder_signer) = (sandbox.url().to_owned(), sandbox.funder.signer());
    /// # tokio::runtime::Runtime::new()?.block_on(async move {
    /// # let code = sandbox.demo_code().await?;
    /// use dzl_sdk::{Error, FunderClient};
    /// use dzl_sdk::types::Purpose;
    ///
    /// let funder = FunderClient::new(url, funder_signer)?;
    /// let redemption = funder.redeem(&code, Purpose::CreditApplication).await?;
    /// let receipt = funder.verify_receipt(&redemption).await?;
    /// if let Some(applicant) = redemption.applicant() {
    ///     println!("applicant {} redeemed under receipt key {}", applicant.name.as_str(), receipt.key_id);
    /// }
    /// // Archive `redemption.to_json()`: it verifies again later.
    ///
    /// // A code redeems exactly once.
    /// match funder.redeem(&code, Purpose::CreditApplication).await {
    ///     Err(Error::CodeAlreadyRedeemed) => {}
    ///     other => panic!("expected code_already_redeemed, got {other:?}"),
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })
    /// # }
    /// ```
    pub async fn redeem(&self, code: &str, purpose: Purpose) -> Result<Redemption, Error> {
        let op = ops::redeem(code, purpose)?;
        self.vault.run(Some(&self.signer), op).await
    }

    /// Verifies a redemption's receipt: the signature with the vault's
    /// published key (fetched from `GET /v1/receipt-keys` when not cached),
    /// the hash of the released groups, and the ids, scopes and time it
    /// names. See [`crate::verify_receipt`] for the offline check.
    pub async fn verify_receipt(&self, redemption: &Redemption) -> Result<VerifiedReceipt, Error> {
        self.vault.verify(redemption).await
    }

    /// Reports the decision on a redemption, with the amount in fen when
    /// there is one (`POST /v1/redemptions/{id}/outcome`); the platform then
    /// sees it in [`PlatformClient::code_status`]. Once per redemption: not
    /// retried once it may have reached the vault; if sent again,
    /// [`Error::OutcomeAlreadyReported`] means the first went through.
    pub async fn report_outcome(
        &self,
        redemption_id: &RedemptionId,
        decision: Decision,
        amount_fen: Option<u64>,
    ) -> Result<Outcome, Error> {
        let op = ops::report_outcome(redemption_id, decision, amount_fen)?;
        self.vault.run(Some(&self.signer), op).await
    }

    /// The receipt verification keys, fetched now (see
    /// [`Vault::receipt_keys`]).
    pub async fn receipt_keys(&self) -> Result<Vec<ReceiptKey>, Error> {
        self.vault.receipt_keys().await
    }
}

/// The bureau operator's client: subject-access reports.
#[derive(Debug, Clone)]
pub struct OperatorClient {
    vault: Vault,
    signer: Signer,
}

impl OperatorClient {
    /// A client of the vault at `base_url` with default settings.
    pub fn new(base_url: impl Into<String>, signer: Signer) -> Result<Self, Error> {
        Ok(Vault::new(base_url)?.operator(signer))
    }

    /// The subject-access report (个人查询本人信息): every deposit about the
    /// person with this id, and every redemption of them
    /// (`POST /v1/subject-access`; the id number travels in the body only).
    /// The id number is checked before sending. Retried (it changes
    /// nothing but the audit log).
    pub async fn subject_access(
        &self,
        id_type: IdType,
        id_number: &str,
    ) -> Result<SubjectAccessResponse, Error> {
        let op = ops::subject_access(id_type, id_number)?;
        self.vault.run(Some(&self.signer), op).await
    }
}
