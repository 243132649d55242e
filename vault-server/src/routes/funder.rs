//! The funder's routes: redeem a code (exactly once, scoped, with a signed
//! receipt) and report the decision.

use actix_web::{web, HttpRequest, HttpResponse};
use dzl_store::admin::{wrapped, VaultKeys};
use dzl_store::rules::GuessLimits;
use dzl_store::{DataKeyKind, RedeemAttempt, Redeemed};
use dzl_types::wire::{
    Consent, OutcomeRequest, Receipt, ReceiptBody, RedemptionRequest, RedemptionResponse,
};
use dzl_types::{AuthCode, ErrorCode, Group, RedemptionId, TenantId};
use serde_json::value::RawValue;

use super::{block, call, path_id, submit, State};
use crate::error::{ApiError, ApiResult};
use crate::extract::{admit, parse_json, Authenticated, Caller, Funder, Signed};

const OPERATION: &str = "redemption.create";

/// `POST /v1/redemptions`.
pub async fn redeem(
    state: State,
    req: HttpRequest,
    signed: Authenticated<Funder>,
) -> ApiResult<HttpResponse> {
    let (body, caller) = signed.into_parts();
    match redeem_checked(&state, &req, &body, &caller).await {
        Ok(resp) => {
            state.metrics.redemption("ok");
            Ok(resp)
        }
        Err(e) => {
            state.metrics.redemption(e.code().as_str());
            Err(e)
        }
    }
}

/// Everything after authentication; every refusal here is audited.
async fn redeem_checked(
    state: &State,
    req: &HttpRequest,
    body: &[u8],
    caller: &Caller,
) -> ApiResult<HttpResponse> {
    let funder = caller.tenant.id.clone();
    let refused_before_store = async |e: ApiError| -> ApiResult<HttpResponse> {
        let c = call(state, &funder, OPERATION);
        let code = e.code();
        block(state, move |s| s.record_refusal(&c, code)).await?;
        Err(e)
    };
    if let Err(e) = admit(state, caller).await {
        return refused_before_store(e).await;
    }
    let r: RedemptionRequest = match parse_json(req, body) {
        Ok(r) => r,
        Err(e) => return refused_before_store(e).await,
    };
    let code = match AuthCode::parse(&r.code) {
        Ok(c) => c,
        Err(e) => {
            return refused_before_store(ApiError::invalid("/code", format!("/code: {e}"))).await
        }
    };
    let redemption_id = RedemptionId::from_trusted(dzl_crypto::new_ordered_id(
        "red",
        super::platform::unix_ms(state),
        &state.rng,
    )?);
    let c = call(state, &funder, OPERATION);
    let limits = &state.settings.limits;
    let attempt = RedeemAttempt {
        code,
        purpose: r.purpose,
        redemption_id,
        limits: GuessLimits {
            per_minute: limits.failed_redemptions_per_minute,
            per_hour: limits.failed_redemptions_per_hour,
        },
    };
    // Guessing is throttled, counted and punished in the store, in this
    // redemption's own transaction.
    let redeemed = submit(state, move |s, reply| s.submit_redeem(c, attempt, reply)).await?;
    // Committed and audited; now open what was released and sign for it.
    let resp = release(&caller.loaded.keys, &funder, redeemed)?;
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(resp))
}

fn raw(bytes: &[u8]) -> ApiResult<Box<RawValue>> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| ApiError::internal("stored group is not UTF-8", e))?;
    RawValue::from_string(text.to_owned())
        .map_err(|e| ApiError::internal("stored group is not JSON", e))
}

/// Opens the released groups and signs the receipt.
fn release(keys: &VaultKeys, funder: &TenantId, r: Redeemed) -> ApiResult<RedemptionResponse> {
    let keyring = &keys.keyring;
    let deposit = r.deposit_id.as_str();
    let mut groups = serde_json::Map::new();
    let mut applicant = None;
    let mut device = None;
    let mut risk = None;
    if let Some((key, env)) = &r.identity {
        let dk = keyring.unwrap_data_key(&wrapped(key), deposit, DataKeyKind::Identity.as_str())?;
        let plain = dzl_crypto::open_record(&dk, deposit, Group::Applicant.as_str(), env)?;
        let value = raw(&plain)?;
        groups.insert("applicant".into(), json_value(&value)?);
        applicant = Some(value);
    }
    if let Some(key) = &r.records_key {
        let dk = keyring.unwrap_data_key(&wrapped(key), deposit, DataKeyKind::Records.as_str())?;
        for (group, env) in &r.records {
            let plain = dzl_crypto::open_record(&dk, deposit, group.as_str(), env)?;
            let value = raw(&plain)?;
            groups.insert(group.as_str().into(), json_value(&value)?);
            match group {
                Group::Device => device = Some(value),
                Group::Risk => risk = Some(value),
                Group::Applicant => {}
            }
        }
    }
    let groups_jcs = crate::jcs::to_vec(&serde_json::Value::Object(groups));
    let body = ReceiptBody {
        v: 1,
        redemption_id: r.redemption_id.clone(),
        code_id: r.code_id.clone(),
        funder_id: funder.clone(),
        deposit_id: r.deposit_id.clone(),
        scopes: r.scopes,
        groups_sha256: dzl_crypto::sha256_hex(&groups_jcs),
        redeemed_at: r.redeemed_at,
    };
    let body = serde_json::to_value(&body).map_err(|e| ApiError::internal("receipt", e))?;
    let signed = String::from_utf8(crate::jcs::to_vec(&body))
        .map_err(|e| ApiError::internal("receipt", e))?;
    let signer = keys
        .receipt_signer()
        .ok_or_else(|| ApiError::internal("receipts", "no receipt signing key"))?;
    let receipt = Receipt {
        key_id: signer.key_id().to_owned(),
        signature: signer
            .try_sign_b64url(signed.as_bytes())
            .map_err(|e| ApiError::internal("signing a receipt", e))?,
        signed,
    };
    let consent: Consent = serde_json::from_str(&r.consent_json)
        .map_err(|e| ApiError::internal("stored consent", e))?;
    Ok(RedemptionResponse {
        redemption_id: r.redemption_id,
        deposit_id: r.deposit_id,
        platform_id: r.platform_id,
        external_ref: r.external_ref,
        purpose: r.purpose,
        consent,
        scopes: r.scopes,
        applicant,
        device,
        risk,
        redeemed_at: r.redeemed_at,
        receipt,
    })
}

fn json_value(raw: &RawValue) -> ApiResult<serde_json::Value> {
    serde_json::from_str(raw.get()).map_err(|e| ApiError::internal("stored group is not JSON", e))
}

/// `POST /v1/redemptions/{redemption_id}/outcome`.
pub async fn report_outcome(
    state: State,
    req: HttpRequest,
    path: web::Path<String>,
    signed: Signed<Funder>,
) -> ApiResult<HttpResponse> {
    let (body, caller) = signed.into_parts();
    let redemption = path_id(&path, RedemptionId::parse, ErrorCode::RedemptionNotFound)?;
    let o: OutcomeRequest = parse_json(&req, &body)?;
    let c = call(&state, &caller.tenant.id, "outcome.report");
    let outcome = block(&state, move |s| s.report_outcome(&c, &redemption, &o)).await?;
    Ok(HttpResponse::Ok().json(outcome))
}
