//! Unsigned routes: liveness, readiness, metrics, the OpenAPI document and
//! the receipt verification keys.

use actix_web::{HttpRequest, HttpResponse};
use dzl_types::wire::{ReceiptKey, ReceiptKeys};
use dzl_types::ErrorCode;

use super::{block, State};
use crate::error::{ApiError, ApiResult};
use crate::extract::ready;

/// `GET /healthz`: the process answers.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// `GET /readyz`: the store answers and the keyring is open.
pub async fn readyz(state: State) -> ApiResult<HttpResponse> {
    ready(&state)?;
    block(&state, |s| s.ping()).await.map_err(|e| {
        if e.code() == ErrorCode::StorageUnavailable {
            e
        } else {
            ApiError::with_detail(ErrorCode::NotReady, "The vault is not ready.")
        }
    })?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"status": "ready"})))
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics(state: State) -> HttpResponse {
    let ready = state.loaded().is_ok();
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render(ready))
}

/// `GET /v1/receipt-keys`.
pub async fn receipt_keys(state: State) -> ApiResult<HttpResponse> {
    let loaded = ready(&state)?;
    let keys = loaded
        .keys
        .receipt_signers
        .iter()
        .map(|s| ReceiptKey {
            key_id: s.key_id().to_owned(),
            algorithm: s.algorithm().as_str().into(),
            public_key: s.public_key_b64url(),
        })
        .collect();
    Ok(HttpResponse::Ok().json(ReceiptKeys {
        suite: Some(loaded.keys.suite()),
        keys,
    }))
}

/// `GET /v1/openapi.json`.
pub async fn openapi(_req: HttpRequest) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(crate::openapi::document())
}
