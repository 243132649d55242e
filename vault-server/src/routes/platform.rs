//! The platform's routes: deposit, issue another code, code status, revoke,
//! erase.

use actix_web::{web, HttpRequest, HttpResponse};
use dzl_crypto::Suite;
use dzl_store::admin;
use dzl_store::{NewCode, NewDeposit};
use dzl_types::code::CodeSecret;
use dzl_types::rules::TtlPolicy;
use dzl_types::wire::{DepositRequest, DepositResponse, IssueCodeRequest, IssuedCode};
use dzl_types::{CodeId, DepositId, ErrorCode, ScopeSet, TenantId};
use serde::Deserialize;

use super::{block, call, path_id, submit, State};
use crate::error::{ApiError, ApiResult};
use crate::extract::{parse_json, Platform, Signed};
use crate::state::AppState;

/// The lifetimes codes may have, as configured.
fn ttl_policy(state: &AppState) -> TtlPolicy {
    TtlPolicy {
        default_seconds: state.settings.codes.default_ttl_seconds,
        max_seconds: state.settings.codes.max_ttl_seconds,
    }
}

/// The clock in unix milliseconds, for time-ordered ids.
pub fn unix_ms(state: &AppState) -> u64 {
    u64::try_from(state.now().timestamp_millis()).unwrap_or(0)
}

/// A fresh code for `funder`, its secret hashed as a vault of `suite`
/// hashes it.
fn new_code(
    state: &AppState,
    suite: Suite,
    funder: TenantId,
    scopes: ScopeSet,
    ttl: u32,
) -> ApiResult<(NewCode, CodeSecret)> {
    let secret = CodeSecret::generate(&state.rng)
        .map_err(|_| ApiError::internal("rng", "SystemRandom failed"))?;
    let code = NewCode {
        code_id: CodeId::from_trusted(dzl_crypto::new_ordered_id(
            "cod",
            unix_ms(state),
            &state.rng,
        )?),
        secret_hash: secret.hash_for(suite),
        funder_id: funder,
        scopes,
        ttl_seconds: ttl,
    };
    Ok((code, secret))
}

fn issued(created: dzl_store::CreatedCode, secret: CodeSecret) -> IssuedCode {
    IssuedCode {
        code: secret.into_code(created.row).expose(),
        code_id: created.code_id,
        funder_id: created.funder_id,
        scopes: created.scopes,
        purpose: created.purpose,
        expires_at: created.expires_at,
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> ApiResult<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| ApiError::internal("serialising a record", e))
}

/// `POST /v1/deposits`.
pub async fn create_deposit(
    state: State,
    req: HttpRequest,
    signed: Signed<Platform>,
) -> ApiResult<HttpResponse> {
    let (body, caller) = signed.into_parts();
    let d: DepositRequest = parse_json(&req, &body)?;
    let skew = chrono::Duration::seconds(state.settings.limits.max_skew_seconds);
    let ttls = dzl_store::ops::deposit::check_request(&d, state.now(), skew, ttl_policy(&state))
        .map_err(ApiError::violation)?;
    let groups = d.groups();
    let keys = &caller.loaded.keys;
    let suite = keys.suite();
    let mut codes = Vec::with_capacity(d.grants.len());
    let mut secrets = Vec::with_capacity(d.grants.len());
    for (g, ttl) in d.grants.iter().zip(ttls) {
        let (code, secret) = new_code(&state, suite, g.funder_id.clone(), g.scopes, ttl)?;
        codes.push(code);
        secrets.push(secret);
    }

    // Seal in the vault's suite: fresh data keys; applicant under its own,
    // kept apart.
    let rng = &state.rng;
    let id = DepositId::from_trusted(dzl_crypto::new_ordered_id("dep", unix_ms(&state), rng)?);
    let device = d.device.as_ref().map(to_json).transpose()?;
    let risk = d.risk.as_ref().map(to_json).transpose()?;
    let sealed = admin::seal_groups(
        &keys.keyring,
        rng,
        &id,
        &to_json(&d.applicant)?,
        device.as_deref(),
        risk.as_deref(),
    )?;
    let (id_type, id_number) = (d.applicant.id_type.as_str(), d.applicant.id_number.as_str());
    let subject_ref = admin::subject_ref(
        suite,
        &keys.subject_index,
        &caller.tenant.id,
        id_type,
        id_number,
    );
    let consent_json =
        serde_json::to_string(&d.consent).map_err(|e| ApiError::internal("consent", e))?;
    let new = NewDeposit {
        call: call(&state, &caller.tenant.id, "deposit.create"),
        id: id.clone(),
        external_ref: d.external_ref.as_str().to_owned(),
        purpose: d.purpose,
        consent_json,
        consent_scopes: d.consent.scopes,
        consent_expires: d.consent.expires_at,
        groups,
        suite,
        subject_index: keys.subject_index(id_type, id_number),
        subject_ref: subject_ref.clone(),
        records_key: sealed.records_key,
        records: sealed.records,
        identity_key: sealed.identity_key,
        identity: sealed.identity,
        codes,
    };
    let created = submit(&state, move |s, reply| s.submit_deposit(new, reply)).await?;
    let codes = created
        .into_iter()
        .zip(secrets)
        .map(|(c, s)| issued(c, s))
        .collect();
    Ok(HttpResponse::Created().json(DepositResponse {
        deposit_id: id,
        subject_ref,
        codes,
    }))
}

/// `POST /v1/deposits/{deposit_id}/codes`.
pub async fn issue_code(
    state: State,
    req: HttpRequest,
    path: web::Path<String>,
    signed: Signed<Platform>,
) -> ApiResult<HttpResponse> {
    let (body, caller) = signed.into_parts();
    let deposit = path_id(&path, DepositId::parse, ErrorCode::DepositNotFound)?;
    let r: IssueCodeRequest = parse_json(&req, &body)?;
    let ttl = dzl_types::rules::resolve_ttl(ttl_policy(&state), r.ttl_seconds, "")
        .map_err(ApiError::violation)?;
    let suite = caller.loaded.keys.suite();
    let (code, secret) = new_code(&state, suite, r.funder_id.clone(), r.scopes, ttl)?;
    let c = call(&state, &caller.tenant.id, "code.issue");
    let created = block(&state, move |s| s.issue_code(&c, &deposit, code)).await?;
    Ok(HttpResponse::Created().json(issued(created, secret)))
}

/// `GET /v1/codes/{code_id}`.
pub async fn code_status(
    state: State,
    path: web::Path<String>,
    signed: Signed<Platform>,
) -> ApiResult<HttpResponse> {
    let (_body, caller) = signed.into_parts();
    let code = path_id(&path, CodeId::parse, ErrorCode::CodeNotFound)?;
    let c = call(&state, &caller.tenant.id, "code.status");
    let status = block(&state, move |s| s.code_status(&c, &code)).await?;
    Ok(HttpResponse::Ok().json(status))
}

/// An empty JSON object (the revoke body, if any).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

/// `POST /v1/codes/{code_id}/revoke`.
pub async fn revoke_code(
    state: State,
    req: HttpRequest,
    path: web::Path<String>,
    signed: Signed<Platform>,
) -> ApiResult<HttpResponse> {
    let (body, caller) = signed.into_parts();
    let code = path_id(&path, CodeId::parse, ErrorCode::CodeNotFound)?;
    if !body.is_empty() {
        let Empty {} = parse_json(&req, &body)?;
    }
    let c = call(&state, &caller.tenant.id, "code.revoke");
    let status = block(&state, move |s| s.revoke_code(&c, &code)).await?;
    Ok(HttpResponse::Ok().json(status))
}

/// `DELETE /v1/deposits/{deposit_id}`: consent withdrawn.
pub async fn erase_deposit(
    state: State,
    path: web::Path<String>,
    signed: Signed<Platform>,
) -> ApiResult<HttpResponse> {
    let (_body, caller) = signed.into_parts();
    let deposit = path_id(&path, DepositId::parse, ErrorCode::DepositNotFound)?;
    let c = call(&state, &caller.tenant.id, "deposit.erase");
    block(&state, move |s| s.erase_deposit(&c, &deposit)).await?;
    Ok(HttpResponse::NoContent().finish())
}
