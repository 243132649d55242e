//! The same clients for callers without an async runtime (feature
//! `blocking`, on reqwest's blocking client). Every method has the name,
//! arguments, errors, retry rules and documentation of its async twin in the
//! crate root; only `.await` goes.
//!
//! As with reqwest's blocking client, do not make or use these from inside
//! an async runtime: use the async clients there.
//!
//! ```no_run
//! # fn main() -> Result<(), dzl_sdk::Error> {
//! use dzl_sdk::blocking::Vault;
//! use dzl_sdk::types::Purpose;
//! use dzl_sdk::Signer;
//!
//! let vault = Vault::new("http://127.0.0.1:8080")?;
//! let funder = vault.funder(Signer::new("k_funder", "secret"));
//! let redemption = funder.redeem("ac_…", Purpose::CreditApplication)?;
//! funder.verify_receipt(&redemption)?;
//! # Ok(())
//! # }
//! ```

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use dzl_crypto::Suite;
use dzl_types::signing::{self, SignatureAlgorithm};
use dzl_types::wire::{
    CodeStatus, Decision, DepositResponse, IssuedCode, Outcome, ReceiptKey, SubjectAccessResponse,
};
use dzl_types::{CodeId, DepositId, IdType, Purpose, RedemptionId, ScopeSet, TenantId};

use crate::builder::Deposit;
use crate::client::KeyCache;
use crate::error::{Error, TransportError};
use crate::ops::{self, Config, Op, RetryPolicy};
use crate::raw::RawResponse;
use crate::redemption::{verify_receipt, Redemption, VerifiedReceipt};
use crate::signer::Signer;

/// A connection to one vault, blocking; see [`crate::Vault`].
#[derive(Debug, Clone)]
pub struct Vault {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    base: String,
    http: reqwest::blocking::Client,
    retry: RetryPolicy,
    keys: KeyCache,
    suite: OnceLock<Suite>,
}

/// Configures a blocking [`Vault`]; see [`crate::VaultBuilder`].
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

    /// See [`crate::VaultBuilder::suite`].
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
        let mut http = reqwest::blocking::Client::builder()
            .user_agent(Config::user_agent())
            .connect_timeout(self.config.connect_timeout)
            .timeout(self.config.timeout);
        let roots = self.config.tls.roots()?;
        if !roots.is_empty() {
            http = http.tls_certs_only(roots);
        }
        if let Some(identity) = self.config.tls.identity()? {
            http = http.identity(identity);
        }
        let http = http.build().map_err(|e| Error::Transport(e.into()))?;
        let suite = OnceLock::new();
        if let Some(told) = self.config.suite {
            let _ = suite.set(told);
        }
        Ok(Vault {
            shared: Arc::new(Shared {
                base,
                http,
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

    /// A platform client signing with `signer`.
    pub fn platform(&self, signer: Signer) -> PlatformClient {
        PlatformClient {
            vault: self.clone(),
            signer,
        }
    }

    /// A funder client signing with `signer`.
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

    /// See [`crate::Vault::receipt_keys`].
    pub fn receipt_keys(&self) -> Result<Vec<ReceiptKey>, Error> {
        let answer = self.run(None, ops::receipt_keys())?;
        let _ = self.shared.suite.set(answer.suite.unwrap_or(Suite::Intl));
        self.shared.keys.set(answer.keys.clone());
        Ok(answer.keys)
    }

    /// See [`crate::Vault::suite`].
    pub fn suite(&self) -> Result<Suite, Error> {
        if let Some(suite) = self.shared.suite.get() {
            return Ok(*suite);
        }
        self.receipt_keys()?;
        Ok(self.shared.suite.get().copied().unwrap_or(Suite::Intl))
    }

    fn verify(&self, redemption: &Redemption) -> Result<VerifiedReceipt, Error> {
        let keys = if self.shared.keys.knows(&redemption.receipt().key_id) {
            self.shared.keys.get()
        } else {
            self.receipt_keys()?
        };
        Ok(verify_receipt(&keys, redemption)?)
    }

    fn send(
        &self,
        signer: Option<(&Signer, SignatureAlgorithm)>,
        op: &Op<impl Sized>,
    ) -> Result<RawResponse, TransportError> {
        let method =
            reqwest::Method::from_bytes(op.method.as_bytes()).unwrap_or(reqwest::Method::GET);
        let mut req = self
            .shared
            .http
            .request(method, format!("{}{}", self.shared.base, op.path));
        if let Some(h) = signer.map(|(s, alg)| s.sign_now(alg, op.method, &op.path, &op.body)) {
            req = req
                .header(signing::HEADER_KEY_ID, h.key_id)
                .header(signing::HEADER_TIMESTAMP, h.timestamp.to_string())
                .header(signing::HEADER_NONCE, h.nonce)
                .header(signing::HEADER_SIGNATURE, h.signature);
        }
        if !op.body.is_empty() {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(op.body.clone());
        }
        let resp = req.send()?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes()?.to_vec();
        Ok(RawResponse {
            status,
            headers,
            body,
        })
    }

    /// See `crate::Vault::run`: the told or learned suite, else `intl`,
    /// and once more with the learned one after the vault refuses the
    /// algorithm.
    fn run<T>(&self, signer: Option<&Signer>, op: Op<T>) -> Result<T, Error> {
        let Some(signer) = signer else {
            return self.send_op(None, &op);
        };
        let known = self.shared.suite.get().copied();
        let first = SignatureAlgorithm::for_suite(known.unwrap_or(Suite::Intl));
        match self.send_op(Some((signer, first)), &op) {
            Err(e) if known.is_none() && crate::client::refused_algorithm(&e) => {
                let learned = SignatureAlgorithm::for_suite(self.suite()?);
                if learned == first {
                    return Err(e);
                }
                self.send_op(Some((signer, learned)), &op)
            }
            other => other,
        }
    }

    fn send_op<T>(
        &self,
        signer: Option<(&Signer, SignatureAlgorithm)>,
        op: &Op<T>,
    ) -> Result<T, Error> {
        let mut retries = 0;
        loop {
            let outcome = self.send(signer, op);
            match self.shared.retry.delay(op.idempotent, retries, &outcome) {
                Some(wait) => {
                    std::thread::sleep(wait);
                    retries += 1;
                }
                None => return op.finish(outcome?),
            }
        }
    }
}

/// The platform's client, blocking; see [`crate::PlatformClient`].
#[derive(Debug, Clone)]
pub struct PlatformClient {
    vault: Vault,
    signer: Signer,
}

impl PlatformClient {
    /// See [`crate::PlatformClient::new`].
    pub fn new(base_url: impl Into<String>, signer: Signer) -> Result<Self, Error> {
        Ok(Vault::new(base_url)?.platform(signer))
    }

    /// See [`crate::PlatformClient::deposit`].
    pub fn deposit(&self, deposit: &Deposit) -> Result<DepositResponse, Error> {
        self.vault.run(Some(&self.signer), ops::deposit(deposit))
    }

    /// See [`crate::PlatformClient::issue_code`].
    pub fn issue_code(
        &self,
        deposit_id: &DepositId,
        funder_id: &TenantId,
        scopes: ScopeSet,
        ttl_seconds: Option<u32>,
    ) -> Result<IssuedCode, Error> {
        let op = ops::issue_code(deposit_id, funder_id, scopes, ttl_seconds)?;
        self.vault.run(Some(&self.signer), op)
    }

    /// See [`crate::PlatformClient::code_status`].
    pub fn code_status(&self, code_id: &CodeId) -> Result<CodeStatus, Error> {
        self.vault
            .run(Some(&self.signer), ops::code_status(code_id))
    }

    /// See [`crate::PlatformClient::revoke_code`].
    pub fn revoke_code(&self, code_id: &CodeId) -> Result<CodeStatus, Error> {
        self.vault
            .run(Some(&self.signer), ops::revoke_code(code_id))
    }

    /// See [`crate::PlatformClient::erase_deposit`].
    pub fn erase_deposit(&self, deposit_id: &DepositId) -> Result<(), Error> {
        ops::erased(
            self.vault
                .run(Some(&self.signer), ops::erase_deposit(deposit_id)),
        )
    }
}

/// The funder's client, blocking; see [`crate::FunderClient`].
#[derive(Debug, Clone)]
pub struct FunderClient {
    vault: Vault,
    signer: Signer,
}

impl FunderClient {
    /// See [`crate::FunderClient::new`].
    pub fn new(base_url: impl Into<String>, signer: Signer) -> Result<Self, Error> {
        Ok(Vault::new(base_url)?.funder(signer))
    }

    /// See [`crate::FunderClient::redeem`] — never retried once it may have
    /// reached the vault; what to do after a timeout is explained there.
    pub fn redeem(&self, code: &str, purpose: Purpose) -> Result<Redemption, Error> {
        let op = ops::redeem(code, purpose)?;
        self.vault.run(Some(&self.signer), op)
    }

    /// See [`crate::FunderClient::verify_receipt`].
    pub fn verify_receipt(&self, redemption: &Redemption) -> Result<VerifiedReceipt, Error> {
        self.vault.verify(redemption)
    }

    /// See [`crate::FunderClient::report_outcome`].
    pub fn report_outcome(
        &self,
        redemption_id: &RedemptionId,
        decision: Decision,
        amount_fen: Option<u64>,
    ) -> Result<Outcome, Error> {
        let op = ops::report_outcome(redemption_id, decision, amount_fen)?;
        self.vault.run(Some(&self.signer), op)
    }

    /// See [`crate::FunderClient::receipt_keys`].
    pub fn receipt_keys(&self) -> Result<Vec<ReceiptKey>, Error> {
        self.vault.receipt_keys()
    }
}

/// The operator's client, blocking; see [`crate::OperatorClient`].
#[derive(Debug, Clone)]
pub struct OperatorClient {
    vault: Vault,
    signer: Signer,
}

impl OperatorClient {
    /// See [`crate::OperatorClient::new`].
    pub fn new(base_url: impl Into<String>, signer: Signer) -> Result<Self, Error> {
        Ok(Vault::new(base_url)?.operator(signer))
    }

    /// See [`crate::OperatorClient::subject_access`].
    pub fn subject_access(
        &self,
        id_type: IdType,
        id_number: &str,
    ) -> Result<SubjectAccessResponse, Error> {
        let op = ops::subject_access(id_type, id_number)?;
        self.vault.run(Some(&self.signer), op)
    }
}
