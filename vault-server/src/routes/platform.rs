//! The platform's routes: deposit, issue another code, code status, revoke,
//! erase.

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use dzl_crypto::DataKey;
use dzl_store::admin::sealed;
use dzl_store::{DataKeyKind, NewCode, NewDeposit, TenantKind, TenantState};
use dzl_types::code::CodeSecret;
use dzl_types::wire::{DepositRequest, DepositResponse, IssueCodeRequest, IssuedCode};
use dzl_types::{CodeId, DepositId, ErrorCode, Group, Purpose, ScopeSet, SubjectRef, TenantId};
use serde::Deserialize;

use super::{block, call, path_id, submit, State};
use crate::error::{ApiError, ApiResult};
use crate::extract::{parse_json, Platform, Signed};
use crate::state::{AppState, Loaded, Tenant};

/// The funder of a grant: a known, active funder entitled to `scopes`.
fn entitled_funder(
    loaded: &Loaded,
    funder: &TenantId,
    scopes: ScopeSet,
    at: &str,
) -> ApiResult<Arc<Tenant>> {
    let f = loaded
        .by_id
        .get(funder)
        .filter(|t| t.kind == TenantKind::Funder)
        .ok_or_else(|| {
            ApiError::with_detail(ErrorCode::UnknownFunder, "No funder has this id")
                .at(&format!("{at}/funder_id"))
        })?;
    if f.state == TenantState::Suspended {
        return Err(
            ApiError::with_detail(ErrorCode::FunderNotEntitled, "The funder is suspended")
                .at(&format!("{at}/funder_id")),
        );
    }
    let entitled = f.scopes.unwrap_or(ScopeSet::ALL);
    if !scopes.is_subset_of(entitled) {
        let missing: Vec<_> = scopes
            .missing_from(entitled)
            .iter()
            .map(|g| g.as_str())
            .collect();
        return Err(ApiError::with_detail(
            ErrorCode::FunderNotEntitled,
            format!("The funder is not entitled to: {}", missing.join(", ")),
        )
        .at(&format!("{at}/scopes")));
    }
    Ok(f.clone())
}

/// The purpose check of a grant.
fn entitled_purpose(f: &Tenant, purpose: Purpose, at: &str) -> ApiResult<()> {
    if f.purposes.contains(&purpose) {
        Ok(())
    } else {
        Err(ApiError::with_detail(
            ErrorCode::FunderNotEntitled,
            format!("The funder is not entitled to the purpose {purpose}"),
        )
        .at(&format!("{at}/funder_id")))
    }
}

/// The code lifetime asked for, or the default; 422 `invalid_ttl` outside 1..=max.
fn resolve_ttl(state: &AppState, ttl: Option<u32>, at: &str) -> ApiResult<u32> {
    let codes = &state.settings.codes;
    match ttl {
        None => Ok(codes.default_ttl_seconds),
        Some(t) if (1..=codes.max_ttl_seconds).contains(&t) => Ok(t),
        Some(_) => Err(ApiError::with_detail(
            ErrorCode::InvalidTtl,
            format!("ttl_seconds must be 1..={}", codes.max_ttl_seconds),
        )
        .at(&format!("{at}/ttl_seconds"))),
    }
}

/// The clock in unix milliseconds, for time-ordered ids.
pub fn unix_ms(state: &AppState) -> u64 {
    u64::try_from(state.now().timestamp_millis()).unwrap_or(0)
}

fn new_code(
    state: &AppState,
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
        secret_hash: secret.hash(),
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

fn seal_group(
    rng: &dzl_crypto::SystemRandom,
    deposit: &DepositId,
    group: Group,
    dk: &DataKey,
    json: &[u8],
) -> ApiResult<Vec<u8>> {
    Ok(dzl_crypto::seal_record(
        dk,
        deposit.as_str(),
        group.as_str(),
        json,
        rng,
    )?)
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
    let now = state.now();
    let skew = chrono::Duration::seconds(state.settings.limits.max_skew_seconds);

    // Consent: real, current, and covering every group deposited.
    let consent = &d.consent;
    if consent.granted_at > now + skew {
        return Err(ApiError::invalid(
            "/consent/granted_at",
            "/consent/granted_at: consent cannot be granted in the future",
        ));
    }
    if consent.expires_at <= consent.granted_at {
        return Err(ApiError::invalid(
            "/consent/expires_at",
            "/consent/expires_at: must be after granted_at",
        ));
    }
    if consent.expires_at <= now {
        return Err(ApiError::new(ErrorCode::ConsentExpired).at("/consent/expires_at"));
    }
    let groups = d.groups();
    if !groups.is_subset_of(consent.scopes) {
        let missing: Vec<_> = groups
            .missing_from(consent.scopes)
            .iter()
            .map(|g| g.as_str())
            .collect();
        return Err(ApiError::with_detail(
            ErrorCode::ConsentInsufficient,
            format!("The consent does not cover: {}", missing.join(", ")),
        )
        .at("/consent/scopes"));
    }
    if d.grants.len() > dzl_types::wire::MAX_GRANTS {
        return Err(ApiError::invalid("/grants", "/grants: at most 16 grants"));
    }
    let mut codes = Vec::with_capacity(d.grants.len());
    let mut secrets = Vec::with_capacity(d.grants.len());
    for (i, g) in d.grants.iter().enumerate() {
        let at = format!("/grants/{i}");
        dzl_store::rules::check_grant(g.scopes, consent.scopes, groups)
            .map_err(|code| ApiError::new(code).at(&format!("{at}/scopes")))?;
        let f = entitled_funder(&caller.loaded, &g.funder_id, g.scopes, &at)?;
        entitled_purpose(&f, d.purpose, &at)?;
        let ttl = resolve_ttl(&state, g.ttl_seconds, &at)?;
        let (code, secret) = new_code(&state, g.funder_id.clone(), g.scopes, ttl)?;
        codes.push(code);
        secrets.push(secret);
    }

    // Seal: fresh data keys; applicant under its own key, kept apart.
    let keys = &caller.loaded.keys;
    let rng = &state.rng;
    let id = DepositId::from_trusted(dzl_crypto::new_ordered_id("dep", unix_ms(&state), rng)?);
    let identity_dk = DataKey::generate(rng)?;
    let records_dk = DataKey::generate(rng)?;
    let identity = seal_group(
        rng,
        &id,
        Group::Applicant,
        &identity_dk,
        &to_json(&d.applicant)?,
    )?;
    let mut records = Vec::new();
    if let Some(device) = &d.device {
        records.push((
            Group::Device,
            seal_group(rng, &id, Group::Device, &records_dk, &to_json(device)?)?,
        ));
    }
    if let Some(risk) = &d.risk {
        records.push((
            Group::Risk,
            seal_group(rng, &id, Group::Risk, &records_dk, &to_json(risk)?)?,
        ));
    }
    let subject = subject_key(d.applicant.id_type.as_str(), d.applicant.id_number.as_str());
    let subject_index = dzl_crypto::blind_index(&keys.subject_index, "subject", subject.as_bytes());
    let platform_ref = format!("{}\n{subject}", caller.tenant.id);
    let subject_ref = SubjectRef::from_trusted(format!(
        "sub_{}",
        &dzl_crypto::blind_index(&keys.subject_index, "subject-ref", platform_ref.as_bytes())[..32]
    ));
    let consent_json =
        serde_json::to_string(&d.consent).map_err(|e| ApiError::internal("consent", e))?;
    let new = NewDeposit {
        call: call(&state, &caller.tenant.id, "deposit.create"),
        id: id.clone(),
        external_ref: d.external_ref.as_str().to_owned(),
        purpose: d.purpose,
        consent_json,
        consent_expires: d.consent.expires_at,
        groups,
        subject_index,
        subject_ref: subject_ref.clone(),
        records_key: sealed(keys.keyring.wrap_data_key(
            &records_dk,
            id.as_str(),
            DataKeyKind::Records.as_str(),
        )?),
        records,
        identity_key: sealed(keys.keyring.wrap_data_key(
            &identity_dk,
            id.as_str(),
            DataKeyKind::Identity.as_str(),
        )?),
        identity,
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

/// The subject key of the blind index: id type and number.
pub fn subject_key(id_type: &str, id_number: &str) -> String {
    format!("{id_type}\n{id_number}")
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
    // The purpose is the deposit's, so the store checks it against these.
    let f = entitled_funder(&caller.loaded, &r.funder_id, r.scopes, "")?;
    let ttl = resolve_ttl(&state, r.ttl_seconds, "")?;
    let (code, secret) = new_code(&state, r.funder_id.clone(), r.scopes, ttl)?;
    let purposes = f.purposes.clone();
    let c = call(&state, &caller.tenant.id, "code.issue");
    let created = block(&state, move |s| s.issue_code(&c, &deposit, code, &purposes)).await?;
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
