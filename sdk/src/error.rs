//! The SDK's errors: one [`Error`] enum whose variants are the vault's
//! problem `code`s (so callers `match` instead of parsing strings), kept
//! apart from what failed before the vault could answer ([`TransportError`]),
//! what the SDK refused to send ([`BuildError`]) and what a receipt check
//! found ([`ReceiptError`]).

use std::time::Duration;

use dzl_types::{DepositId, ErrorCode};
use serde::Deserialize;

/// Everything a client call can fail with.
///
/// The variants down to [`Error::Other`] are the vault's answers, one per
/// problem `code` of the HTTP API (docs/api.md); a code this SDK does not know
/// yet (added by a newer vault) arrives as [`Error::Other`]. The remaining
/// variants never came from the vault's problem body.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// 401: the request was not accepted as signed by a known key
    /// (`missing_signature`, `invalid_signature`, `stale_timestamp`,
    /// `nonce_replayed`, `certificate_mismatch`,
    /// `unsupported_signature_algorithm`). Nothing happened. Check the key
    /// id and secret, the machine's clock (±300 s), and that the client
    /// signs with the vault's suite (HMAC-SM3 at a `gm` vault).
    #[error("unauthorized ({code}): {detail}")]
    Unauthorized {
        /// Which check failed.
        code: ErrorCode,
        /// The vault's explanation.
        detail: String,
    },
    /// 403 `tenant_suspended`: an operator (or the guessing guard) suspended
    /// this tenant. Nothing happened.
    #[error("tenant suspended: {detail}")]
    TenantSuspended {
        /// The vault's explanation.
        detail: String,
    },
    /// 403 `forbidden`: this kind of tenant may not call this route (e.g. a
    /// funder's credentials on a platform client).
    #[error("forbidden: {detail}")]
    Forbidden {
        /// The vault's explanation.
        detail: String,
    },
    /// 403 `purpose_mismatch`: the code was issued for another purpose.
    /// Nothing was released; the code is still redeemable for its purpose.
    #[error("purpose mismatch: the code was issued for another purpose")]
    PurposeMismatch,
    /// 404 `code_not_found`: no such code, or one issued to another tenant
    /// (indistinguishable). At redemption this counts against the funder's
    /// guessing limits.
    #[error("code not found")]
    CodeNotFound,
    /// 404 `deposit_not_found`: no such deposit, or another platform's.
    #[error("deposit not found")]
    DepositNotFound,
    /// 404 `redemption_not_found`: no such redemption, or another funder's.
    #[error("redemption not found")]
    RedemptionNotFound,
    /// 409 `duplicate_external_ref`: this platform already deposited with this
    /// `external_ref` (erased deposits included). Nothing was stored.
    /// `deposit_id` names that earlier deposit: after a deposit whose answer
    /// was lost, issue a code for it ([`crate::PlatformClient::issue_code`])
    /// or erase it ([`crate::PlatformClient::erase_deposit`]).
    #[error("a deposit with this external_ref already exists")]
    DuplicateExternalRef {
        /// The earlier deposit; `None` only from a vault that predates the
        /// member.
        deposit_id: Option<DepositId>,
    },
    /// 409 `code_already_redeemed`: a code redeems exactly once. If your own
    /// earlier attempt timed out, this means it went through (see
    /// [`crate::FunderClient::redeem`]).
    #[error("the code has already been redeemed")]
    CodeAlreadyRedeemed,
    /// 409 `outcome_already_reported`: an outcome was already reported for
    /// this redemption.
    #[error("an outcome has already been reported for this redemption")]
    OutcomeAlreadyReported,
    /// 410 `code_expired`: the code's deadline has passed.
    #[error("the code has expired")]
    CodeExpired,
    /// 410 `code_revoked`: the platform revoked the code, or erased its
    /// deposit.
    #[error("the code has been revoked")]
    CodeRevoked,
    /// 410 `deposit_erased`: the deposit was erased (consent withdrawn).
    #[error("the deposit has been erased")]
    DepositErased,
    /// 422 `validation_failed`: the body broke the schema.
    #[error("validation failed at {}: {detail}", field.as_deref().unwrap_or("/"))]
    Validation {
        /// JSON pointer of the offending input, when the vault named one.
        field: Option<String>,
        /// Which rule failed (never the value).
        detail: String,
    },
    /// 422 `consent_insufficient`: the consent does not cover every group
    /// deposited.
    #[error("consent insufficient: {detail}")]
    ConsentInsufficient {
        /// JSON pointer of the offending input.
        field: Option<String>,
        /// The vault's explanation.
        detail: String,
    },
    /// 422 `consent_expired`: the consent's `expires_at` is not in the future.
    #[error("the consent has expired")]
    ConsentExpired,
    /// 422 `grant_exceeds_consent`: a grant names a group not consented to
    /// or not deposited.
    #[error("grant exceeds consent at {}: {detail}", field.as_deref().unwrap_or("/"))]
    GrantExceedsConsent {
        /// JSON pointer of the offending grant.
        field: Option<String>,
        /// The vault's explanation.
        detail: String,
    },
    /// 422 `funder_not_entitled`: the funder may not receive these groups,
    /// or data for this purpose, or is suspended.
    #[error("funder not entitled: {detail}")]
    FunderNotEntitled {
        /// JSON pointer of the offending grant.
        field: Option<String>,
        /// The vault's explanation.
        detail: String,
    },
    /// 422 `unknown_funder`: no funder has this tenant id.
    #[error("unknown funder at {}", field.as_deref().unwrap_or("/"))]
    UnknownFunder {
        /// JSON pointer of the offending `funder_id`.
        field: Option<String>,
    },
    /// 422 `invalid_ttl`: `ttl_seconds` is beyond the vault's maximum.
    #[error("invalid ttl: {detail}")]
    InvalidTtl {
        /// JSON pointer of the offending `ttl_seconds`.
        field: Option<String>,
        /// The vault's explanation (names the allowed range).
        detail: String,
    },
    /// 413 `payload_too_large`: the body is over 64 KiB.
    #[error("the request body is larger than 64 KiB")]
    PayloadTooLarge,
    /// 429 `rate_limited`: the tenant's request rate, or a funder's limit on
    /// redemptions of unknown codes. Nothing happened; try again after
    /// `retry_after`. Idempotent calls have already been retried.
    #[error("rate limited{}", retry_after.map(|d| format!("; retry after {} s", d.as_secs())).unwrap_or_default())]
    RateLimited {
        /// The vault's `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// 503 `storage_unavailable` or `not_ready`: the vault cannot serve now;
    /// nothing was changed. Idempotent calls have already been retried.
    #[error("the vault is unavailable: {detail}")]
    Unavailable {
        /// `storage_unavailable` or `not_ready` (none if the 503 came from
        /// something in front of the vault).
        code: Option<ErrorCode>,
        /// The explanation.
        detail: String,
        /// The `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// 500 `internal_error`: the vault failed; it tells nothing more (its
    /// log does). Nothing was released.
    #[error("internal error in the vault: {detail}")]
    Internal {
        /// The vault's (deliberately vague) explanation.
        detail: String,
    },
    /// The vault could not read the request at all (`malformed_json`,
    /// `invalid_header`, `malformed_request`, `request_head_too_large`,
    /// `unsupported_media_type`, `not_found`, `method_not_allowed`,
    /// `request_timeout`): a wrong base URL, an SDK that does not match the
    /// vault's API version, or a body that did not arrive in time.
    #[error("request not understood ({code}, HTTP {status}): {detail}")]
    BadRequest {
        /// The problem code.
        code: ErrorCode,
        /// The HTTP status.
        status: u16,
        /// The vault's explanation.
        detail: String,
    },
    /// A problem `code` this SDK does not know (added by a newer vault).
    #[error("{code} (HTTP {status}): {detail}")]
    Other {
        /// The problem code, as sent.
        code: String,
        /// The HTTP status.
        status: u16,
        /// The vault's explanation.
        detail: String,
    },
    /// The SDK refused to send the request: the input breaks a rule the
    /// vault would have refused it for. Nothing reached the wire.
    #[error("refused before sending: {0}")]
    Invalid(#[from] BuildError),
    /// No answer: the vault could not be reached, or did not answer in time.
    /// See [`TransportError::request_may_have_reached_vault`].
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// An answer that is neither the documented success nor a problem
    /// document (a proxy's error page, or a body this SDK cannot decode).
    /// The raw body is kept, because after a successful redemption it is
    /// the only copy of the released data; its `Debug` shows only its size.
    #[error("unexpected answer from the vault (HTTP {status}): {detail}")]
    UnexpectedResponse {
        /// The HTTP status.
        status: u16,
        /// What was wrong with it.
        detail: String,
        /// The body as received.
        body: RawBody,
    },
    /// A receipt did not verify.
    #[error("receipt refused: {0}")]
    Receipt(#[from] ReceiptError),
    /// The client was configured wrongly (e.g. a base URL that is not
    /// `http(s)://host[:port]`).
    #[error("invalid client configuration: {detail}")]
    Config {
        /// What is wrong.
        detail: String,
    },
}

impl Error {
    /// The problem `code` the vault answered with, if this error is one of
    /// its answers (for [`Error::Invalid`], the code the vault would have
    /// answered with).
    pub fn code(&self) -> Option<&str> {
        use Error as E;
        let c = match self {
            E::Unauthorized { code, .. } | E::BadRequest { code, .. } => *code,
            E::TenantSuspended { .. } => ErrorCode::TenantSuspended,
            E::Forbidden { .. } => ErrorCode::Forbidden,
            E::PurposeMismatch => ErrorCode::PurposeMismatch,
            E::CodeNotFound => ErrorCode::CodeNotFound,
            E::DepositNotFound => ErrorCode::DepositNotFound,
            E::RedemptionNotFound => ErrorCode::RedemptionNotFound,
            E::DuplicateExternalRef { .. } => ErrorCode::DuplicateExternalRef,
            E::CodeAlreadyRedeemed => ErrorCode::CodeAlreadyRedeemed,
            E::OutcomeAlreadyReported => ErrorCode::OutcomeAlreadyReported,
            E::CodeExpired => ErrorCode::CodeExpired,
            E::CodeRevoked => ErrorCode::CodeRevoked,
            E::DepositErased => ErrorCode::DepositErased,
            E::Validation { .. } => ErrorCode::ValidationFailed,
            E::ConsentInsufficient { .. } => ErrorCode::ConsentInsufficient,
            E::ConsentExpired => ErrorCode::ConsentExpired,
            E::GrantExceedsConsent { .. } => ErrorCode::GrantExceedsConsent,
            E::FunderNotEntitled { .. } => ErrorCode::FunderNotEntitled,
            E::UnknownFunder { .. } => ErrorCode::UnknownFunder,
            E::InvalidTtl { .. } => ErrorCode::InvalidTtl,
            E::PayloadTooLarge => ErrorCode::PayloadTooLarge,
            E::RateLimited { .. } => ErrorCode::RateLimited,
            E::Unavailable { code, .. } => return code.map(ErrorCode::as_str),
            E::Internal { .. } => ErrorCode::InternalError,
            E::Other { code, .. } => return Some(code),
            E::Invalid(b) => b.code,
            E::Transport(_) | E::UnexpectedResponse { .. } | E::Receipt(_) | E::Config { .. } => {
                return None
            }
        };
        Some(c.as_str())
    }

    /// Builds the error for a non-success answer.
    pub(crate) fn from_response(
        status: u16,
        headers: &reqwest::header::HeaderMap,
        body: &[u8],
    ) -> Error {
        let retry_after = retry_after(headers);
        match serde_json::from_slice::<ProblemBody>(body) {
            Ok(p) => Error::from_problem(status, p, retry_after),
            Err(_) => match status {
                429 => Error::RateLimited { retry_after },
                503 => Error::Unavailable {
                    code: None,
                    detail: "HTTP 503 without a problem document".into(),
                    retry_after,
                },
                _ => Error::UnexpectedResponse {
                    status,
                    detail: "not a problem document".into(),
                    body: RawBody(body.to_vec()),
                },
            },
        }
    }

    fn from_problem(status: u16, p: ProblemBody, retry_after: Option<Duration>) -> Error {
        use ErrorCode as C;
        let ProblemBody {
            code,
            detail,
            field,
            deposit_id,
        } = p;
        let Some(known) = ErrorCode::parse(&code) else {
            return Error::Other {
                code,
                status,
                detail,
            };
        };
        match known {
            C::MissingSignature
            | C::InvalidSignature
            | C::StaleTimestamp
            | C::NonceReplayed
            | C::CertificateMismatch
            | C::UnsupportedSignatureAlgorithm => Error::Unauthorized {
                code: known,
                detail,
            },
            C::TenantSuspended => Error::TenantSuspended { detail },
            C::Forbidden => Error::Forbidden { detail },
            C::PurposeMismatch => Error::PurposeMismatch,
            C::CodeNotFound => Error::CodeNotFound,
            C::DepositNotFound => Error::DepositNotFound,
            C::RedemptionNotFound => Error::RedemptionNotFound,
            C::DuplicateExternalRef => Error::DuplicateExternalRef {
                deposit_id: deposit_id.and_then(|id| DepositId::parse(&id).ok()),
            },
            C::CodeAlreadyRedeemed => Error::CodeAlreadyRedeemed,
            C::OutcomeAlreadyReported => Error::OutcomeAlreadyReported,
            C::CodeExpired => Error::CodeExpired,
            C::CodeRevoked => Error::CodeRevoked,
            C::DepositErased => Error::DepositErased,
            C::ValidationFailed => Error::Validation { field, detail },
            C::ConsentInsufficient => Error::ConsentInsufficient { field, detail },
            C::ConsentExpired => Error::ConsentExpired,
            C::GrantExceedsConsent => Error::GrantExceedsConsent { field, detail },
            C::FunderNotEntitled => Error::FunderNotEntitled { field, detail },
            C::UnknownFunder => Error::UnknownFunder { field },
            C::InvalidTtl => Error::InvalidTtl { field, detail },
            C::PayloadTooLarge => Error::PayloadTooLarge,
            C::RateLimited => Error::RateLimited { retry_after },
            C::NotReady | C::StorageUnavailable => Error::Unavailable {
                code: Some(known),
                detail,
                retry_after,
            },
            C::InternalError => Error::Internal { detail },
            C::MalformedJson
            | C::InvalidHeader
            | C::MalformedRequest
            | C::RequestHeadTooLarge
            | C::UnsupportedMediaType
            | C::NotFound
            | C::MethodNotAllowed
            | C::RequestTimeout => Error::BadRequest {
                code: known,
                status,
                detail,
            },
        }
    }
}

/// The members of a problem document the SDK reads (lenient: a newer vault
/// may add members).
#[derive(Deserialize)]
struct ProblemBody {
    code: String,
    #[serde(default)]
    detail: String,
    #[serde(default)]
    field: Option<String>,
    #[serde(default)]
    deposit_id: Option<String>,
}

/// `Retry-After` in delta-seconds (the form the vault sends).
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// A response body kept as received. Its `Debug` shows only its length:
/// it may hold personal data.
#[derive(Clone, PartialEq, Eq)]
pub struct RawBody(pub(crate) Vec<u8>);

impl RawBody {
    /// The bytes as received. Handle as personal data.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for RawBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RawBody({} bytes)", self.0.len())
    }
}

/// The vault could not be reached or did not answer in time.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// No connection could be made: the request never reached the vault.
    #[error("could not connect to the vault: {0}")]
    Connect(#[source] reqwest::Error),
    /// The answer did not come in time. The vault may or may not have acted.
    #[error("the vault did not answer in time: {0}")]
    Timeout(#[source] reqwest::Error),
    /// Any other failure to send the request or read the answer. The vault
    /// may or may not have acted.
    #[error("transport: {0}")]
    Http(#[source] reqwest::Error),
}

/// A rule of `dzl_types::rules` the request breaks, as the vault reports it.
impl From<dzl_types::rules::Violation> for BuildError {
    fn from(v: dzl_types::rules::Violation) -> Self {
        BuildError::new(v.code, &v.pointer, v.message)
    }
}

impl From<reqwest::Error> for TransportError {
    fn from(e: reqwest::Error) -> Self {
        if e.is_connect() {
            TransportError::Connect(e)
        } else if e.is_timeout() {
            TransportError::Timeout(e)
        } else {
            TransportError::Http(e)
        }
    }
}

impl TransportError {
    /// Whether the vault may have received (and acted on) the request.
    /// `false` only when no connection was made. When `true` for a call that
    /// is not idempotent (`deposit`, `issue_code`, `redeem`,
    /// `report_outcome`), find out what happened before trying again.
    pub fn request_may_have_reached_vault(&self) -> bool {
        !matches!(self, TransportError::Connect(_))
    }
}

/// The SDK refused to build or send something the vault would refuse. It
/// carries the problem code the vault would have answered with, a JSON
/// pointer to the offending input, and which rule failed (never the value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} at {}: {detail}", if field.is_empty() { "/" } else { field.as_str() })]
pub struct BuildError {
    code: ErrorCode,
    field: String,
    detail: String,
}

impl BuildError {
    pub(crate) fn new(code: ErrorCode, field: &str, detail: impl Into<String>) -> Self {
        BuildError {
            code,
            field: field.to_owned(),
            detail: detail.into(),
        }
    }

    /// `validation_failed` at `field`.
    pub(crate) fn invalid(field: &str, detail: impl Into<String>) -> Self {
        BuildError::new(ErrorCode::ValidationFailed, field, detail)
    }

    /// The problem code the vault would have answered with.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// JSON pointer of the offending input in the request body (`""` for
    /// the whole body).
    pub fn field(&self) -> &str {
        &self.field
    }

    /// Which rule failed.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

/// Why a redemption receipt was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptError {
    /// No receipt key with this id is published at `GET /v1/receipt-keys`.
    #[error("no receipt key {key_id} is published by the vault")]
    UnknownKey {
        /// The key id the receipt names.
        key_id: String,
    },
    /// The key is not an Ed25519 key, or its public key is malformed.
    #[error("receipt key {key_id} is not a usable Ed25519 key")]
    BadKey {
        /// The key id.
        key_id: String,
    },
    /// The signature does not verify over the signed text.
    #[error("the signature does not verify")]
    BadSignature,
    /// The signed text is not a receipt this SDK understands.
    #[error("the signed text is not a receipt: {detail}")]
    Malformed {
        /// What is wrong.
        detail: String,
    },
    /// The released groups do not hash to the receipt's `groups_sha256`:
    /// the data is not what the vault signed for.
    #[error("the released groups do not match the receipt's groups_sha256")]
    GroupsMismatch,
    /// The receipt is genuine but names another redemption, deposit, scope
    /// set or time than the redemption it came with.
    #[error("the receipt's {field} differs from the redemption's")]
    Mismatch {
        /// Which member differs.
        field: &'static str,
    },
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn answer(code: &str, status: u16, retry_after: Option<&str>) -> Error {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(r) = retry_after {
            headers.insert(reqwest::header::RETRY_AFTER, r.parse().unwrap());
        }
        let body = serde_json::json!({
            "type": format!("urn:dzl-vault:problem:{code}"), "title": "t", "status": status,
            "detail": "what went wrong", "code": code, "field": "/x",
        });
        Error::from_response(status, &headers, body.to_string().as_bytes())
    }

    #[test]
    fn every_problem_code_has_its_variant_and_round_trips() {
        for c in ErrorCode::ALL {
            let e = answer(c.as_str(), c.status(), None);
            assert_eq!(e.code(), Some(c.as_str()), "{c}: {e:?}");
            assert!(!matches!(e, Error::Other { .. }), "{c} is known");
        }
    }

    #[test]
    fn unknown_codes_and_details_are_kept() {
        match answer("shiny_new_code", 422, None) {
            Error::Other {
                code,
                status,
                detail,
            } => {
                assert_eq!(
                    (code.as_str(), status, detail.as_str()),
                    ("shiny_new_code", 422, "what went wrong")
                )
            }
            other => panic!("{other:?}"),
        }
        match answer("validation_failed", 422, None) {
            Error::Validation { field, detail } => {
                assert_eq!(field.as_deref(), Some("/x"));
                assert_eq!(detail, "what went wrong");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn retry_after_is_read() {
        match answer("rate_limited", 429, Some("7")) {
            Error::RateLimited { retry_after } => {
                assert_eq!(retry_after, Some(Duration::from_secs(7)))
            }
            other => panic!("{other:?}"),
        }
        match answer("storage_unavailable", 503, Some("2")) {
            Error::Unavailable { retry_after, .. } => {
                assert_eq!(retry_after, Some(Duration::from_secs(2)))
            }
            other => panic!("{other:?}"),
        }
        let bare = Error::from_response(429, &reqwest::header::HeaderMap::new(), b"slow down");
        assert!(matches!(bare, Error::RateLimited { retry_after: None }));
    }
}
