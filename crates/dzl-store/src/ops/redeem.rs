//! Redemption: a funder presents a code and receives, once, the groups it
//! grants. Every attempt is audited and metered, refusals included, and a
//! funder that redeems unknown codes is throttled and then suspended.
//!
//! Exactly-once rests on one step, [`crate::tx::Tx::claim_code`]: the
//! code's row moves from issued to redeemed only if it is still issued,
//! in the transaction that records the redemption, reads the sealed
//! groups and appends the audit entry. Of two concurrent attempts on any
//! backend, one claims the code; the other finds it redeemed and is
//! refused `code_already_redeemed` (audited).

use dzl_audit::AuditRecord;
use dzl_types::{ErrorCode, Group, TenantId};

use super::record;
use crate::rules::{self, GuessLimits};
use crate::tx::{DepositState, FailureWindow, RedemptionRow};
use crate::writer::Txn;
use crate::{Call, RedeemAttempt, Redeemed, StoreError, StoreResult, TenantState};

/// The reason recorded when a funder is suspended for guessing.
pub const GUESSING_REASON: &str = "automatic: too many redemptions of unknown codes in an hour";

/// Counts a redemption of an unknown code against `funder`, suspending it
/// when the hour's threshold is reached.
fn count_guess(
    txn: &mut Txn<'_>,
    funder: &TenantId,
    window: Option<&FailureWindow>,
    call: &Call,
    limits: GuessLimits,
) -> StoreResult<()> {
    let (next, suspend) = rules::count_guess(window, call.now.timestamp(), limits);
    if !suspend {
        return txn.set_failure_window(funder, Some(next));
    }
    txn.set_failure_window(funder, None)?;
    super::tenants::set_state(
        txn,
        "system",
        funder,
        TenantState::Suspended,
        GUESSING_REASON,
        call.now,
    )?;
    log::warn!("funder {funder} suspended automatically: too many redemptions of unknown codes");
    Ok(())
}

/// Redeems a code exactly once. `Ok(Err(_))` is a refusal whose audit
/// entry (and count) commits; `Err` rolls everything back.
pub fn redeem(
    txn: &mut Txn<'_>,
    call: &Call,
    attempt: &RedeemAttempt,
) -> StoreResult<Result<Redeemed, StoreError>> {
    let funder = TenantId::from_trusted(call.actor.clone());
    let base = AuditRecord {
        purpose: Some(attempt.purpose.as_str().into()),
        ..record(call, "ok")
    };
    let refuse = |txn: &mut Txn<'_>, code: ErrorCode, rec: AuditRecord| {
        txn.audit(AuditRecord {
            result: code.as_str().into(),
            ..rec
        })?;
        txn.meter(call, code.as_str());
        Ok(Err(StoreError::Refused(code)))
    };
    // Read in the transaction: a funder suspended a moment ago (for
    // guessing, on any replica) is refused even if the caller's view of
    // tenants is older.
    let active = txn
        .tenant(&funder)?
        .is_some_and(|t| t.state == TenantState::Active);
    if !active {
        return refuse(txn, ErrorCode::TenantSuspended, base);
    }
    let window = txn.failure_window(&funder)?;
    if let Some(secs) =
        rules::guessing_throttle(window.as_ref(), call.now.timestamp(), attempt.limits)
    {
        let code = ErrorCode::RateLimited;
        txn.audit(AuditRecord {
            result: code.as_str().into(),
            detail: Some("too many redemptions of unknown codes this minute".into()),
            ..base
        })?;
        txn.meter(call, code.as_str());
        return Ok(Err(StoreError::Throttled(secs)));
    }
    let c = match txn.read().code_by_row(attempt.code.row())? {
        Some(c) if attempt.code.matches(&c.secret_hash) => c,
        // Unknown row or wrong secret: a guess. Nothing about the row is recorded.
        _ => {
            count_guess(txn, &funder, window.as_ref(), call, attempt.limits)?;
            return refuse(txn, ErrorCode::CodeNotFound, base);
        }
    };
    let with_code = AuditRecord {
        deposit_id: Some(c.deposit_id.to_string()),
        code_id: Some(c.code_id.to_string()),
        groups: Some(c.scopes.to_list()),
        ..base
    };
    if c.funder_id != funder {
        // A real code presented by the wrong funder: indistinguishable to the
        // caller, but recorded with the code id for investigation.
        count_guess(txn, &funder, window.as_ref(), call, attempt.limits)?;
        return refuse(
            txn,
            ErrorCode::CodeNotFound,
            AuditRecord {
                detail: Some("code belongs to another funder".into()),
                ..with_code
            },
        );
    }
    if let Err(code) =
        rules::redeem_decision(c.state, c.expires_at, call.now, c.purpose, attempt.purpose)
    {
        return refuse(txn, code, with_code);
    }
    let redemption = RedemptionRow {
        id: attempt.redemption_id.clone(),
        code_row: c.row,
        code_id: c.code_id.clone(),
        deposit_id: c.deposit_id.clone(),
        platform_id: c.platform_id.clone(),
        funder_id: c.funder_id.clone(),
        purpose: c.purpose,
        scopes: c.scopes,
        redeemed_at: super::to_ms(call.now),
        outcome: None,
    };
    // The one conditional step that makes redemption exactly-once.
    let Some(release) = txn.write().claim_code(&redemption)? else {
        return refuse(txn, ErrorCode::CodeAlreadyRedeemed, with_code);
    };
    if release.state != DepositState::Active {
        return Err(StoreError::Corrupt(
            "issued code on an erased deposit".into(),
        ));
    }
    if c.scopes.contains(Group::Applicant) && release.identity.is_none() {
        return Err(StoreError::Corrupt(
            "deposit without its identity row".into(),
        ));
    }
    let records_asked = [Group::Device, Group::Risk]
        .into_iter()
        .filter(|g| c.scopes.contains(*g))
        .count();
    if records_asked > 0
        && (release.records_key.is_none() || release.records.len() != records_asked)
    {
        return Err(StoreError::Corrupt(
            "granted group missing from its deposit".into(),
        ));
    }
    txn.audit(AuditRecord {
        redemption_id: Some(attempt.redemption_id.to_string()),
        subject_tenant: Some(release.platform_id.to_string()),
        ..with_code
    })?;
    txn.meter(call, "ok");
    Ok(Ok(Redeemed {
        redemption_id: attempt.redemption_id.clone(),
        code_id: c.code_id,
        deposit_id: c.deposit_id,
        platform_id: release.platform_id,
        external_ref: release.external_ref,
        purpose: c.purpose,
        consent_json: release.consent_json,
        scopes: c.scopes,
        redeemed_at: redemption.redeemed_at,
        records_key: release.records_key,
        records: release.records,
        identity: release.identity,
    }))
}

/// Records a funder's decision on its own redemption, once.
pub fn report_outcome(
    txn: &mut Txn<'_>,
    call: &Call,
    redemption: &dzl_types::RedemptionId,
    outcome: &dzl_types::wire::OutcomeRequest,
) -> StoreResult<Result<dzl_types::wire::Outcome, ErrorCode>> {
    let row = txn.read().redemption(redemption, crate::tx::Lock::Update)?;
    let r = match row {
        Some(r) if r.funder_id.as_str() == call.actor => r,
        other => {
            let code = ErrorCode::RedemptionNotFound;
            let mut rec = record(call, code.as_str());
            if let Some(r) = other {
                rec.redemption_id = Some(r.id.to_string());
                rec.subject_tenant = Some(r.funder_id.to_string());
                rec.detail = Some("the redemption belongs to another funder".into());
            }
            txn.audit(rec)?;
            txn.meter(call, code.as_str());
            return Ok(Err(code));
        }
    };
    if r.outcome.is_some() {
        return Err(StoreError::Refused(ErrorCode::OutcomeAlreadyReported));
    }
    let stored = crate::tx::StoredOutcome {
        decision: outcome.decision,
        amount_fen: outcome.amount_fen.map(|a| a.get()),
        reported_at: super::to_ms(call.now),
    };
    if !txn.write().set_outcome(redemption, &stored)? {
        return Err(StoreError::Refused(ErrorCode::OutcomeAlreadyReported));
    }
    txn.audit(AuditRecord {
        purpose: Some(r.purpose.as_str().into()),
        deposit_id: Some(r.deposit_id.to_string()),
        code_id: Some(r.code_id.to_string()),
        redemption_id: Some(redemption.to_string()),
        detail: Some(format!("decision {}", outcome.decision.as_str())),
        ..record(call, "ok")
    })?;
    txn.meter(call, "ok");
    Ok(Ok(dzl_types::wire::Outcome {
        redemption_id: redemption.clone(),
        decision: stored.decision,
        amount_fen: stored.amount_fen,
        reported_at: stored.reported_at,
    }))
}
