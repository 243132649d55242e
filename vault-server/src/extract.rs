//! The front door of every `/v1/` route, in the order the OpenAPI document
//! states: body size (413) → signature (401) → tenant state and kind (403)
//! → rate limit (429) → media type (415) → JSON syntax (400) → schema (422).

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{web, HttpRequest};
use dzl_store::{TenantKind, TenantState};
use dzl_types::signing::{self, HEADER_KEY_ID, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP};
use dzl_types::ErrorCode;
use futures_util::StreamExt as _;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, Loaded, NotReady, Tenant};

/// Largest accepted body.
pub const MAX_BODY: usize = 64 * 1024;

/// Reads the body, refusing more than 64 KiB (413) before reading it all.
pub async fn read_body(req: &HttpRequest, mut payload: web::Payload) -> ApiResult<web::Bytes> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(ApiError::new(ErrorCode::PayloadTooLarge));
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| {
            ApiError::with_detail(ErrorCode::MalformedJson, "The body could not be read")
        })?;
        if body.len() + chunk.len() > MAX_BODY {
            return Err(ApiError::new(ErrorCode::PayloadTooLarge));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The front door of a signed route: the body (413), then the caller
/// (401, 403, 429).
pub async fn signed(
    state: &AppState,
    req: &HttpRequest,
    payload: web::Payload,
    kind: TenantKind,
) -> ApiResult<(web::Bytes, Caller)> {
    let body = read_body(req, payload).await?;
    let caller = authenticate(state, req, &body, kind).await?;
    Ok((body, caller))
}

/// An authenticated caller.
pub struct Caller {
    /// The tenant.
    pub tenant: Arc<Tenant>,
    /// The keys and tenants it was checked against.
    pub loaded: Arc<Loaded>,
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

/// [`authenticate`], then the tenant's rate limit.
pub async fn authenticate(
    state: &AppState,
    req: &HttpRequest,
    body: &[u8],
    kind: TenantKind,
) -> ApiResult<Caller> {
    let caller = authenticate_only(state, req, body, kind).await?;
    admit(state, &caller).await?;
    Ok(caller)
}

/// Takes one request token from the caller's bucket, or 429.
pub async fn admit(state: &AppState, caller: &Caller) -> ApiResult<()> {
    let now = state.now().timestamp_millis() as f64 / 1000.0;
    state
        .guards
        .admit(&caller.tenant.id, caller.tenant.rate_limit, now)
        .await?
        .map_err(|secs| ApiError::rate_limited(secs, "The tenant's request rate limit is exceeded"))
}

/// Checks the request signature (docs/api.md), the client certificate of a
/// pinned tenant, the nonce, and the tenant's state and kind.
pub async fn authenticate_only(
    state: &AppState,
    req: &HttpRequest,
    body: &[u8],
    kind: TenantKind,
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
    {
        use base64::Engine as _;
        if base64::engine::general_purpose::STANDARD
            .decode(sig)
            .is_err()
        {
            return Err(ApiError::with_detail(
                ErrorCode::InvalidHeader,
                "X-DZL-Signature must be standard base64",
            ));
        }
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
    let canonical = signing::canonical(req.method().as_str(), path, ts, nonce, body);
    // Unknown key and bad signature are deliberately the same answer. During
    // the overlap after a secret rotation, the previous secret also signs.
    let at = state.now();
    let tenant = loaded
        .by_key
        .get(key_id)
        .filter(|t| {
            signing::verify(&t.secret, &canonical, sig)
                || t.previous_secret.as_ref().is_some_and(|(previous, until)| {
                    dzl_store::rules::previous_secret_valid(*until, at)
                        && signing::verify(previous, &canonical, sig)
                })
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
    if !state.guards.nonce_fresh(key_id, nonce, now).await? {
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
    Ok(Caller { tenant, loaded })
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
