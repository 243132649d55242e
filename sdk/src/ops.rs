//! The calls of HTTP API v1 without IO: what to send, whether it is safe to
//! send again, and how to read the answer. The async clients and the
//! blocking ones drive the same operations, so they cannot drift apart.

use std::time::Duration;

use dzl_crypto::Suite;
use dzl_types::domain::{check_id_number, today_in_china};
use dzl_types::wire::{
    AmountFen, CodeStatus, Decision, DepositResponse, IssueCodeRequest, IssuedCode, Outcome,
    OutcomeRequest, ReceiptKey, RedemptionRequest, SubjectAccessRequest, SubjectAccessResponse,
    MAX_TTL_SECONDS,
};
use dzl_types::{AuthCode, CodeId, DepositId, IdType, Purpose, RedemptionId, ScopeSet, TenantId};
use serde::de::DeserializeOwned;

use crate::builder::Deposit;
use crate::error::{BuildError, Error, RawBody, TransportError};
use crate::raw::RawResponse;
use crate::redemption::Redemption;

/// When the SDK sends a request again by itself.
///
/// * A request that never reached the vault (no connection could be made)
///   is sent again, whatever the call.
/// * Idempotent calls (`code_status`, `revoke_code`, `erase_deposit`,
///   `subject_access`, the receipt keys) are also sent again after a timeout
///   or a broken connection, and after `429` and `503` answers, waiting the
///   vault's `Retry-After` when it gives one.
/// * `deposit`, `issue_code`, `redeem` and `report_outcome` are never sent
///   again once they may have reached the vault: the caller finds out what
///   happened first (see [`crate::FunderClient::redeem`]).
///
/// Every attempt is signed afresh (new timestamp and nonce).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// At most this many attempts after the first.
    pub max_retries: u32,
    /// The first backoff; it doubles with each retry (with jitter).
    pub initial_backoff: Duration,
    /// The longest backoff.
    pub max_backoff: Duration,
    /// A `Retry-After` longer than this is not waited for: the error goes
    /// back to the caller.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    /// Three retries, backing off from 200 ms to at most 5 s, waiting a
    /// `Retry-After` of up to 10 s.
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// Never retry: every failure goes straight back to the caller.
    pub fn none() -> Self {
        RetryPolicy {
            max_retries: 0,
            ..RetryPolicy::default()
        }
    }

    /// The wait before retry number `retries_done + 1`, or `None` to give up.
    pub(crate) fn delay(
        &self,
        idempotent: bool,
        retries_done: u32,
        outcome: &Result<RawResponse, TransportError>,
    ) -> Option<Duration> {
        if retries_done >= self.max_retries {
            return None;
        }
        let backoff = || {
            let exp = self
                .initial_backoff
                .saturating_mul(2u32.saturating_pow(retries_done));
            let capped = exp.min(self.max_backoff);
            // Equal jitter: half fixed, half random.
            capped / 2 + capped.mul_f64(crate::signer::random_fraction() / 2.0)
        };
        match outcome {
            Err(e) if !e.request_may_have_reached_vault() => Some(backoff()),
            Err(_) if idempotent => Some(backoff()),
            Err(_) => None,
            Ok(r) if idempotent && (r.status == 429 || r.status == 503) => {
                match crate::error::retry_after(&r.headers) {
                    Some(wait) if wait > self.max_retry_after => None,
                    Some(wait) => Some(wait),
                    None => Some(backoff()),
                }
            }
            Ok(_) => None,
        }
    }
}

/// Connection settings shared by the async and blocking builders.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub base: String,
    /// The vault's suite when told; else learned from `GET /v1/receipt-keys`.
    pub suite: Option<Suite>,
    pub timeout: Option<Duration>,
    pub connect_timeout: Duration,
    pub retry: RetryPolicy,
    pub tls: TlsConfig,
}

/// TLS options: the CAs to trust instead of the built-in roots, and the
/// client certificate to present (mutual TLS).
#[derive(Clone, Default)]
pub(crate) struct TlsConfig {
    /// PEM CA certificates; when any is given, only these are trusted.
    pub roots_pem: Vec<Vec<u8>>,
    /// PEM certificate chain followed by its PEM private key.
    pub identity_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private key.
        f.debug_struct("TlsConfig")
            .field("roots", &self.roots_pem.len())
            .field("identity", &self.identity_pem.is_some())
            .finish()
    }
}

impl TlsConfig {
    /// Parsed root certificates, or a configuration error.
    pub fn roots(&self) -> Result<Vec<reqwest::Certificate>, Error> {
        let mut out = Vec::new();
        for pem in &self.roots_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| Error::Config {
                detail: format!("a root certificate is not PEM: {e}"),
            })?;
            if certs.is_empty() {
                return Err(Error::Config {
                    detail: "a root certificate file holds no certificate".into(),
                });
            }
            out.extend(certs);
        }
        Ok(out)
    }

    /// The parsed client identity, if any.
    pub fn identity(&self) -> Result<Option<reqwest::Identity>, Error> {
        self.identity_pem
            .as_deref()
            .map(|pem| {
                reqwest::Identity::from_pem(pem).map_err(|e| Error::Config {
                    detail: format!("the client certificate or key is not usable PEM: {e}"),
                })
            })
            .transpose()
    }
}

/// The default whole-request timeout of one attempt.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl Config {
    pub fn new(base: impl Into<String>) -> Self {
        Config {
            base: base.into(),
            suite: None,
            timeout: Some(DEFAULT_TIMEOUT),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            retry: RetryPolicy::default(),
            tls: TlsConfig::default(),
        }
    }

    /// The base URL, checked: `http(s)://host[:port]` and nothing after it,
    /// because the path is part of what is signed.
    pub fn checked_base(&self) -> Result<String, Error> {
        let url = reqwest::Url::parse(self.base.trim()).map_err(|e| Error::Config {
            detail: format!("the base URL is not a URL: {e}"),
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::Config {
                detail: "the base URL must start with http:// or https://".into(),
            });
        }
        if url.host().is_none()
            || url.path() != "/"
            || url.query().is_some()
            || url.fragment().is_some()
            || !url.username().is_empty()
        {
            return Err(Error::Config {
                detail:
                    "the base URL must be scheme://host[:port], without path, query or credentials"
                        .into(),
            });
        }
        Ok(url.as_str().trim_end_matches('/').to_owned())
    }

    pub fn user_agent() -> String {
        format!("dzl-sdk/{}", env!("CARGO_PKG_VERSION"))
    }
}

/// One call: the request, its retry class and how to read its success.
pub(crate) struct Op<T> {
    pub method: &'static str,
    pub path: String,
    pub body: Vec<u8>,
    pub idempotent: bool,
    success: u16,
    decode: fn(u16, Vec<u8>) -> Result<T, Error>,
}

impl<T> Op<T> {
    /// Reads an answer.
    pub fn finish(&self, resp: RawResponse) -> Result<T, Error> {
        if resp.status == self.success {
            (self.decode)(resp.status, resp.body)
        } else {
            Err(Error::from_response(resp.status, &resp.headers, &resp.body))
        }
    }
}

fn json<T: DeserializeOwned>(status: u16, body: Vec<u8>) -> Result<T, Error> {
    serde_json::from_slice(&body).map_err(|e| Error::UnexpectedResponse {
        status,
        detail: format!("the body does not decode: {}", decode_message(&e)),
        body: RawBody(body),
    })
}

/// What went wrong decoding, without serde's quotes of the input (which
/// may be personal data).
pub(crate) fn decode_message(e: &serde_json::Error) -> String {
    format!(
        "{:?} error at line {}, column {}",
        e.classify(),
        e.line(),
        e.column()
    )
}

fn nothing(_: u16, _: Vec<u8>) -> Result<(), Error> {
    Ok(())
}

fn to_body<T: serde::Serialize>(v: &T) -> Vec<u8> {
    // Serialising these wire types cannot fail: no maps with non-string
    // keys, no custom serialisers that error.
    serde_json::to_vec(v).unwrap_or_default()
}

pub(crate) fn deposit(d: &Deposit) -> Op<DepositResponse> {
    Op {
        method: "POST",
        path: "/v1/deposits".into(),
        body: to_body(d.request()),
        idempotent: false,
        success: 201,
        decode: json,
    }
}

pub(crate) fn issue_code(
    deposit: &DepositId,
    funder_id: &TenantId,
    scopes: ScopeSet,
    ttl_seconds: Option<u32>,
) -> Result<Op<IssuedCode>, Error> {
    if let Some(t) = ttl_seconds {
        check_ttl(t, "/ttl_seconds")?;
    }
    let r = IssueCodeRequest {
        funder_id: funder_id.clone(),
        scopes,
        ttl_seconds,
    };
    Ok(Op {
        method: "POST",
        path: format!("/v1/deposits/{deposit}/codes"),
        body: to_body(&r),
        idempotent: false,
        success: 201,
        decode: json,
    })
}

/// The range every vault accepts; a vault may be configured lower.
pub(crate) fn check_ttl(ttl: u32, field: &str) -> Result<(), BuildError> {
    // The vault's rule, with the longest lifetime any vault accepts.
    let policy = dzl_types::rules::TtlPolicy {
        default_seconds: 1,
        max_seconds: MAX_TTL_SECONDS,
    };
    let at = field.strip_suffix("/ttl_seconds").unwrap_or(field);
    dzl_types::rules::resolve_ttl(policy, Some(ttl), at)
        .map(|_| ())
        .map_err(BuildError::from)
}

pub(crate) fn code_status(code: &CodeId) -> Op<CodeStatus> {
    Op {
        method: "GET",
        path: format!("/v1/codes/{code}"),
        body: Vec::new(),
        idempotent: true,
        success: 200,
        decode: json,
    }
}

pub(crate) fn revoke_code(code: &CodeId) -> Op<CodeStatus> {
    Op {
        method: "POST",
        path: format!("/v1/codes/{code}/revoke"),
        body: Vec::new(),
        idempotent: true,
        success: 200,
        decode: json,
    }
}

pub(crate) fn erase_deposit(deposit: &DepositId) -> Op<()> {
    Op {
        method: "DELETE",
        path: format!("/v1/deposits/{deposit}"),
        body: Vec::new(),
        idempotent: true,
        success: 204,
        decode: nothing,
    }
}

/// `erase_deposit` succeeds when the deposit is erased, now or before.
pub(crate) fn erased(r: Result<(), Error>) -> Result<(), Error> {
    match r {
        Err(Error::DepositErased) => Ok(()),
        other => other,
    }
}

pub(crate) fn redeem(code: &str, purpose: Purpose) -> Result<Op<Redemption>, Error> {
    // A malformed code would be refused (and audited) by the vault.
    AuthCode::parse(code).map_err(|e| BuildError::invalid("/code", e.0))?;
    let body = to_body(&RedemptionRequest {
        code: code.to_owned(),
        purpose,
    });
    Ok(Op {
        method: "POST",
        path: "/v1/redemptions".into(),
        body,
        idempotent: false,
        success: 200,
        decode: |status, body| {
            Redemption::from_json(&body).map_err(|e| Error::UnexpectedResponse {
                status,
                detail: e.to_string(),
                body: RawBody(body),
            })
        },
    })
}

pub(crate) fn report_outcome(
    redemption: &RedemptionId,
    decision: Decision,
    amount_fen: Option<u64>,
) -> Result<Op<Outcome>, Error> {
    let amount_fen = amount_fen
        .map(AmountFen::new)
        .transpose()
        .map_err(|e| BuildError::invalid("/amount_fen", e.0))?;
    let r = OutcomeRequest {
        decision,
        amount_fen,
    };
    Ok(Op {
        method: "POST",
        path: format!("/v1/redemptions/{redemption}/outcome"),
        body: to_body(&r),
        idempotent: false,
        success: 200,
        decode: json,
    })
}

pub(crate) fn subject_access(
    id_type: IdType,
    id_number: &str,
) -> Result<Op<SubjectAccessResponse>, Error> {
    check_id_number(id_type, id_number, today_in_china())
        .map_err(|e| BuildError::invalid("/id_number", e.0))?;
    let r = SubjectAccessRequest {
        id_type,
        id_number: id_number.to_owned(),
    };
    Ok(Op {
        method: "POST",
        path: "/v1/subject-access".into(),
        body: to_body(&r),
        idempotent: true,
        success: 200,
        decode: json,
    })
}

/// `GET /v1/receipt-keys`: the keys and, from a vault that says it, its
/// suite (`{"suite":"gm","keys":[…]}`). A vault that does not say is
/// `intl`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub(crate) struct ReceiptKeysAnswer {
    #[serde(default)]
    pub suite: Option<Suite>,
    pub keys: Vec<ReceiptKey>,
}

pub(crate) fn receipt_keys() -> Op<ReceiptKeysAnswer> {
    Op {
        method: "GET",
        path: "/v1/receipt-keys".into(),
        body: Vec::new(),
        idempotent: true,
        success: 200,
        decode: json,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_receipt_keys_answer_names_the_suite_or_is_intl() {
        let gm: ReceiptKeysAnswer = serde_json::from_str(
            r#"{"suite":"gm","keys":[{"key_id":"rk_1","algorithm":"SM2","public_key":"BA"}]}"#,
        )
        .unwrap();
        assert_eq!(gm.suite, Some(Suite::Gm));
        assert_eq!(gm.keys[0].algorithm, "SM2");
        let old: ReceiptKeysAnswer = serde_json::from_str(r#"{"keys":[]}"#).unwrap();
        assert_eq!(old.suite, None);
        assert!(serde_json::from_str::<ReceiptKeysAnswer>(r#"{"suite":"sm","keys":[]}"#).is_err());
    }

    fn answer(status: u16, retry_after: Option<u64>) -> Result<RawResponse, TransportError> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(s) = retry_after {
            headers.insert(reqwest::header::RETRY_AFTER, s.into());
        }
        Ok(RawResponse {
            status,
            headers,
            body: Vec::new(),
        })
    }

    #[test]
    fn only_idempotent_calls_retry_429_and_503() {
        let p = RetryPolicy::default();
        for status in [429, 503] {
            assert!(p.delay(true, 0, &answer(status, None)).is_some());
            assert!(p.delay(false, 0, &answer(status, None)).is_none());
        }
        for status in [200, 201, 400, 401, 404, 409, 410, 422, 500] {
            assert!(
                p.delay(true, 0, &answer(status, None)).is_none(),
                "{status}"
            );
        }
    }

    #[test]
    fn retry_after_is_honoured_within_bounds() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.delay(true, 0, &answer(429, Some(3))),
            Some(Duration::from_secs(3))
        );
        assert_eq!(p.delay(true, 0, &answer(429, Some(11))), None);
        assert_eq!(p.delay(true, 3, &answer(429, Some(1))), None);
        assert_eq!(RetryPolicy::none().delay(true, 0, &answer(503, None)), None);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            max_retries: 10,
            ..RetryPolicy::default()
        };
        for n in 0..10 {
            let d = p.delay(true, n, &answer(503, None)).unwrap();
            let full = p
                .initial_backoff
                .saturating_mul(2u32.pow(n))
                .min(p.max_backoff);
            assert!(d >= full / 2 && d <= full, "{n}: {d:?} vs {full:?}");
        }
    }

    #[test]
    fn ids_in_paths_and_bodies() {
        let code = CodeId::parse(&format!("cod_{}", "a".repeat(32))).unwrap();
        let op = code_status(&code);
        assert_eq!(
            (op.method, op.path.as_str()),
            ("GET", format!("/v1/codes/{code}").as_str())
        );
        assert!(op.idempotent && op.body.is_empty());
        let red = RedemptionId::parse(&format!("red_{}", "b".repeat(32))).unwrap();
        let op = report_outcome(&red, Decision::Approved, Some(5)).unwrap();
        assert!(!op.idempotent);
        assert_eq!(op.body, br#"{"decision":"approved","amount_fen":5}"#);
        assert!(redeem("ac_x", Purpose::Drawdown).is_err());
    }
}
