//! The front door of every `/v1/` route, in the order the OpenAPI document
//! states: body size (413) and deadline (408) → the source address's budget
//! of failed authentications (429) → signature (401; 429 past the key id's
//! budget) → tenant state and kind (403) → rate limit (429) → media type
//! (415) → JSON syntax (400) → schema (422). [`Signed`] and [`Authenticated`] are the
//! extractors that run it up to the rate limit; handlers parse with
//! [`parse_json`].

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};
use dzl_store::{TenantKind, TenantState};
use dzl_types::signing::{self, HEADER_KEY_ID, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP};
use dzl_types::ErrorCode;
use futures_util::future::LocalBoxFuture;
use futures_util::StreamExt as _;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, Loaded, NotReady, Tenant};

/// Largest accepted body.
pub const MAX_BODY: usize = 64 * 1024;

/// Reads the body, refusing more than 64 KiB (413) before reading it all,
/// and a body not received within `deadline` (408; the connection is then
/// closed, so a client that sends a byte a second holds it no longer).
pub async fn read_body(
    req: &HttpRequest,
    mut payload: Payload,
    deadline: Duration,
) -> ApiResult<web::Bytes> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(ApiError::new(ErrorCode::PayloadTooLarge).closing());
    }
    let read = async {
        let mut body = web::BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|_| {
                ApiError::with_detail(ErrorCode::MalformedJson, "The body could not be read")
                    .closing()
            })?;
            if body.len() + chunk.len() > MAX_BODY {
                return Err(ApiError::new(ErrorCode::PayloadTooLarge).closing());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    };
    match tokio::time::timeout(deadline, read).await {
        Ok(body) => body,
        Err(_) => Err(ApiError::with_detail(
            ErrorCode::RequestTimeout,
            format!("The body did not arrive within {} ms", deadline.as_millis()),
        )
        .closing()),
    }
}

/// The kind of tenant a route serves, as a type: `Signed<Platform>`.
pub trait Kind: 'static {
    /// The tenant kind.
    const KIND: TenantKind;
}

/// Platforms: deposits and their codes.
pub struct Platform;
/// Funders: redemptions and outcomes.
pub struct Funder;
/// The bureau's operators: subject access.
pub struct Operator;

impl Kind for Platform {
    const KIND: TenantKind = TenantKind::Platform;
}
impl Kind for Funder {
    const KIND: TenantKind = TenantKind::Funder;
}
impl Kind for Operator {
    const KIND: TenantKind = TenantKind::Operator;
}

/// A request of a tenant of kind `K` whose signature, pin, nonce, state and
/// kind were checked, and, when `METERED`, that its rate limit admitted:
/// the caller and the body it signed. Handlers take [`Signed`] or
/// [`Authenticated`].
pub struct Checked<K, const METERED: bool> {
    /// The signed body (at most [`MAX_BODY`]).
    pub body: web::Bytes,
    /// Who signed it.
    pub caller: Caller,
    kind: PhantomData<K>,
}

/// A signed request its tenant's rate limit admitted.
pub type Signed<K> = Checked<K, true>;

/// A signed request not yet admitted by the rate limit: for the route that
/// audits its refusals (redemptions), which calls [`admit`] itself.
pub type Authenticated<K> = Checked<K, false>;

impl<K, const METERED: bool> Checked<K, METERED> {
    /// The body and the caller.
    pub fn into_parts(self) -> (web::Bytes, Caller) {
        (self.body, self.caller)
    }
}

fn app_state(req: &HttpRequest) -> ApiResult<web::Data<AppState>> {
    req.app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(|| ApiError::internal("extractor", "no application state"))
}

/// Refusals that say the request's credentials were not good: counted per
/// key id and source address ([`crate::throttle`]).
fn is_authentication_failure(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::MissingSignature
            | ErrorCode::InvalidSignature
            | ErrorCode::StaleTimestamp
            | ErrorCode::NonceReplayed
            | ErrorCode::CertificateMismatch
            | ErrorCode::InvalidHeader
    )
}

/// The body under the deadline, then the source's failure budget, the
/// signature and the tenant (failures counted), and the rate limit.
async fn body_and_caller(
    req: HttpRequest,
    payload: Payload,
    kind: TenantKind,
    metered: bool,
) -> ApiResult<(web::Bytes, Caller)> {
    let state = app_state(&req)?;
    let deadline = Duration::from_millis(state.settings.server.request_timeout_ms);
    let body = read_body(&req, payload, deadline).await?;
    let source = req.peer_addr().map(|a| a.ip());
    let now = state.now().timestamp();
    if let Err(secs) = state.auth_throttle.check_source(source, now) {
        return Err(ApiError::rate_limited(
            secs,
            "Too many failed authentications from this address; wait for the window to end",
        ));
    }
    let caller = match authenticate_only(&state, &req, &body, kind, metered).await {
        Ok(caller) => caller,
        Err(e) if is_authentication_failure(e.code()) => {
            let tenant = state.loaded().ok().and_then(|l| {
                let key_id = req.headers().get(HEADER_KEY_ID)?.to_str().ok()?;
                l.by_key.get(key_id).map(|t| t.id.clone())
            });
            if let Err(secs) = state
                .auth_throttle
                .record(tenant.as_ref(), source, e.code(), now)
            {
                return Err(ApiError::rate_limited(
                    secs,
                    "Too many failed authentications under this key id; wait for the window to end",
                ));
            }
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    if let Some(Err(secs)) = caller.admitted {
        return Err(rate_limited(secs));
    }
    Ok((body, caller))
}

impl<K: Kind, const METERED: bool> FromRequest for Checked<K, METERED> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, ApiResult<Self>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let fut = body_and_caller(req.clone(), payload.take(), K::KIND, METERED);
        Box::pin(async move {
            let (body, caller) = fut.await?;
            Ok(Checked {
                body,
                caller,
                kind: PhantomData,
            })
        })
    }
}

/// An authenticated caller.
pub struct Caller {
    /// The tenant.
    pub tenant: Arc<Tenant>,
    /// The keys and tenants it was checked against.
    pub loaded: Arc<Loaded>,
    /// Whether its rate limit admitted it, when that was asked with the
    /// nonce.
    admitted: Option<Result<(), u64>>,
}

fn rate_limited(secs: u64) -> ApiError {
    ApiError::rate_limited(secs, "The tenant's request rate limit is exceeded")
}

/// Keys and tenants, or 503.
pub fn ready(state: &AppState) -> ApiResult<Arc<Loaded>> {
    state.loaded().map_err(|why| match why {
        NotReady::Store(_) => {
            ApiError::with_detail(ErrorCode::StorageUnavailable, "The store is unavailable.")
        }
        other => ApiError::with_detail(ErrorCode::NotReady, other.detail()),
    })
}

fn header<'a>(req: &'a HttpRequest, name: &str) -> ApiResult<Option<&'a str>> {
    match req.headers().get(name) {
        None => Ok(None),
        Some(v) => v.to_str().map(Some).map_err(|_| {
            ApiError::with_detail(
                ErrorCode::InvalidHeader,
                format!("{name} is not visible ASCII"),
            )
        }),
    }
}

/// Takes one request token from the caller's bucket, or 429.
pub async fn admit(state: &AppState, caller: &Caller) -> ApiResult<()> {
    let now = state.now().timestamp_millis() as f64 / 1000.0;
    state
        .guards
        .admit(&caller.tenant.id, caller.tenant.rate_limit, now)
        .await?
        .map_err(rate_limited)
}

/// Checks the request signature (docs/api.md), the client certificate of a
/// pinned tenant, the nonce, and the tenant's state and kind; with
/// `metered`, also takes a token of the tenant's rate limit, asked with the
/// nonce (see [`Caller`]).
pub async fn authenticate_only(
    state: &AppState,
    req: &HttpRequest,
    body: &[u8],
    kind: TenantKind,
    metered: bool,
) -> ApiResult<Caller> {
    let loaded = ready(state)?;
    let key_id = header(req, HEADER_KEY_ID)?;
    let ts = header(req, HEADER_TIMESTAMP)?;
    let nonce = header(req, HEADER_NONCE)?;
    let sig = header(req, HEADER_SIGNATURE)?;
    let (Some(key_id), Some(ts), Some(nonce), Some(sig)) = (key_id, ts, nonce, sig) else {
        return Err(ApiError::with_detail(
            ErrorCode::MissingSignature,
            "X-DZL-Key-Id, X-DZL-Timestamp, X-DZL-Nonce and X-DZL-Signature are all required",
        ));
    };
    // Digits only, as signed: `+17…` or `017…` would parse to the same
    // number and let the header change under a valid signature.
    let canonical_ts = !ts.is_empty()
        && ts.len() <= 18
        && ts.bytes().all(|c| c.is_ascii_digit())
        && !(ts.len() > 1 && ts.starts_with('0'));
    let ts: i64 = ts.parse().ok().filter(|_| canonical_ts).ok_or_else(|| {
        ApiError::with_detail(
            ErrorCode::InvalidHeader,
            "X-DZL-Timestamp must be unix seconds in decimal digits",
        )
    })?;
    if !signing::valid_nonce(nonce) {
        return Err(ApiError::with_detail(
            ErrorCode::InvalidHeader,
            "X-DZL-Nonce must be 16-64 characters of A-Z a-z 0-9 _ -",
        ));
    }
    // The algorithm the signature names must be the vault's own: a request
    // signed for the other suite is refused as such, never verified with
    // another function, while a vault moves between suites too.
    let suite = loaded.keys.suite();
    if let Err(e) = signing::check_algorithm(suite, sig) {
        return Err(ApiError::with_detail(
            e.code(),
            match e {
                signing::SignatureError::Malformed => {
                    "X-DZL-Signature must be standard base64, after the algorithm name if any"
                        .to_owned()
                }
                _ => format!(
                    "This vault accepts only {} request signatures",
                    signing::SignatureAlgorithm::for_suite(suite)
                ),
            },
        ));
    }
    let now = state.now().timestamp();
    let skew = state.settings.limits.max_skew_seconds;
    if (now - ts).abs() > skew {
        return Err(ApiError::with_detail(
            ErrorCode::StaleTimestamp,
            format!("X-DZL-Timestamp must be within {skew} s of the server clock"),
        ));
    }
    if ts < state.started_at {
        return Err(ApiError::with_detail(
            ErrorCode::StaleTimestamp,
            "The request was signed before the vault started; sign it again",
        ));
    }
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let parts = signing::SignedParts {
        method: req.method().as_str(),
        path_and_query: path,
        timestamp: ts,
        nonce,
        body,
    };
    // Unknown key and bad signature are deliberately the same answer. During
    // the overlap after a secret rotation, the previous secret also signs.
    let at = state.now();
    let tenant = loaded
        .by_key
        .get(key_id)
        .filter(|t| {
            let mut secrets: Vec<&[u8]> = vec![&t.secret];
            if let Some((previous, until)) = &t.previous_secret {
                if dzl_store::rules::previous_secret_valid(*until, at) {
                    secrets.push(previous);
                }
            }
            signing::verify_request(suite, &secrets, &parts, sig).is_ok()
        })
        .cloned()
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidSignature))?;
    if let Some(pin) = &tenant.cert_pin {
        let presented = req.conn_data::<crate::tls::PeerCertificate>();
        if !presented.is_some_and(|c| pin.matches(&c.0)) {
            // A valid signature from the wrong connection: the secret may
            // be stolen. Refused before the nonce is spent, and audited.
            let call = crate::routes::call(state, &tenant.id, "authenticate");
            let code = ErrorCode::CertificateMismatch;
            let store = state.store.clone();
            web::block(move || store.record_refusal(&call, code)).await??;
            return Err(ApiError::with_detail(
                code,
                "This tenant must connect over mutual TLS with the client certificate it is pinned to",
            ));
        }
    }
    let rate = metered.then(|| {
        let at = state.now().timestamp_millis() as f64 / 1000.0;
        (&tenant.id, tenant.rate_limit, at)
    });
    let (fresh, admitted) = state.guards.check(key_id, nonce, ts, now, rate).await?;
    if !fresh {
        return Err(ApiError::new(ErrorCode::NonceReplayed));
    }
    if tenant.state == TenantState::Suspended {
        return Err(ApiError::with_detail(
            ErrorCode::TenantSuspended,
            "This tenant is suspended; contact the bureau's operators",
        ));
    }
    if tenant.kind != kind {
        return Err(ApiError::with_detail(
            ErrorCode::Forbidden,
            format!("Only {} tenants may call this route", kind.as_str()),
        ));
    }
    Ok(Caller {
        tenant,
        loaded,
        admitted,
    })
}

/// Parses a JSON body strictly: 415 unless `application/json`, 400 for bad
/// syntax, 422 with the JSON pointer of the first schema violation. Details
/// never echo input values.
pub fn parse_json<T: DeserializeOwned>(req: &HttpRequest, body: &[u8]) -> ApiResult<T> {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::with_detail(
            ErrorCode::UnsupportedMediaType,
            "Content-Type must be application/json",
        ));
    }
    // Every request body is a JSON object; serde would also take a struct
    // from an array of its field values, which the schemas refuse.
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|b| *b != b'{')
        && serde_json::from_slice::<serde_json::Value>(body).is_ok()
    {
        return Err(ApiError::invalid("", "/: the body must be a JSON object"));
    }
    // Well-formed bodies take the plain parse; only a refused one is parsed
    // again, tracking the path, to say where it went wrong. Both parses run
    // the same checks, so they accept and refuse the same bodies, and the
    // cost of tracking the path is paid only by refused bodies.
    if let Ok(value) = serde_json::from_slice::<T>(body) {
        return Ok(value);
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let inner = e.inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::with_detail(
                ErrorCode::MalformedJson,
                format!(
                    "The body is not well-formed JSON (line {}, column {})",
                    inner.line(),
                    inner.column()
                ),
            );
        }
        let d = dzl_types::input::describe(e.path(), inner);
        let (pointer, message) = (d.pointer, d.message);
        ApiError::invalid(
            &pointer,
            format!(
                "{}: {message}",
                if pointer.is_empty() { "/" } else { &pointer }
            ),
        )
    })?;
    de.end().map_err(|_| {
        ApiError::with_detail(
            ErrorCode::MalformedJson,
            "Trailing characters after the JSON value",
        )
    })?;
    Ok(value)
}
