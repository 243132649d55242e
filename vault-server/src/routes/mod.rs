//! HTTP API v1 routes (docs/api.md) and the operational endpoints. Each
//! signed handler takes its body and caller from an extractor
//! ([`crate::extract::Signed`]: body under its deadline, signature, tenant,
//! rate limit), parses, then makes one store call: writes are queued to
//! the store's writer from the worker and awaited, reads run on the
//! blocking pool.

pub mod funder;
pub mod operator;
pub mod ops;
pub mod platform;

use actix_web::web;
use dzl_store::{Call, Reply, Store, StoreError};

use crate::error::ApiResult;
use crate::state::AppState;

/// The shared state as handlers receive it.
pub type State = web::Data<AppState>;

/// Runs a store operation on the blocking pool (never on an async worker).
pub async fn block<T, F>(state: &State, f: F) -> ApiResult<T>
where
    T: Send + 'static,
    F: FnOnce(&dyn Store) -> Result<T, dzl_store::StoreError> + Send + 'static,
{
    let store = state.store.clone();
    Ok(web::block(move || f(&*store)).await??)
}

/// Runs one of the store calls that can be submitted: queued to the store's
/// writer from this async worker, which awaits the reply, so no thread
/// waits for the writer.
pub async fn submit<T, F>(state: &State, f: F) -> ApiResult<T>
where
    T: Send + 'static,
    F: FnOnce(&dyn Store, Reply<T>) + Send + 'static,
{
    let store = state.store.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let reply: Reply<T> = Box::new(move |out| {
        // The request may have been dropped meanwhile; the call still
        // happened (or not) as a whole.
        let _ = tx.send(out);
    });
    f(&*store, reply);
    let out = rx
        .await
        .map_err(|_| StoreError::Unavailable("the store dropped a call unanswered".into()))?;
    Ok(out?)
}

/// The audit and metering context of a call by `actor`.
pub fn call(state: &AppState, actor: &dzl_types::TenantId, operation: &'static str) -> Call {
    Call {
        actor: actor.to_string(),
        operation,
        now: state.now(),
    }
}

/// Parses a path id; a malformed one is simply not found.
pub fn path_id<T>(
    raw: &str,
    parse: impl Fn(&str) -> Result<T, dzl_types::domain::Invalid>,
    not_found: dzl_types::ErrorCode,
) -> ApiResult<T> {
    parse(raw).map_err(|_| crate::error::ApiError::new(not_found))
}
