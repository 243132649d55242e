//! A platform's codes and deposits after the deposit: a code's status,
//! revocation, and erasure (crypto-shredding) of a deposit — by the
//! platform, by retention, or by the store mending a write a crash left
//! half done.

use chrono::{DateTime, Utc};
use dzl_audit::AuditRecord;
use dzl_types::wire::{CodeState, CodeStatus, Outcome};
use dzl_types::{CodeId, DepositId, ErrorCode};

use super::deposit::owned_deposit;
use super::{action, by_system, record};
use crate::rules::{self, StoredCodeState};
use crate::tx::{CodeRow, DepositState, Lock, Tx};
use crate::writer::Txn;
use crate::{Call, StoreError, StoreResult};

/// The outcome reported for a code's redemption, if any.
fn outcome_of(tx: &mut dyn Tx, c: &CodeRow) -> StoreResult<Option<Outcome>> {
    let Some(id) = &c.redemption_id else {
        return Ok(None);
    };
    Ok(tx
        .redemption(id, Lock::None)?
        .and_then(|r| r.outcome)
        .map(|o| Outcome {
            redemption_id: id.clone(),
            decision: o.decision,
            amount_fen: o.amount_fen,
            reported_at: o.reported_at,
        }))
}

/// A code's status as its platform sees it at `now`.
pub fn status_of(tx: &mut dyn Tx, c: &CodeRow, now: DateTime<Utc>) -> StoreResult<CodeStatus> {
    Ok(CodeStatus {
        code_id: c.code_id.clone(),
        deposit_id: c.deposit_id.clone(),
        state: rules::effective_state(c.state, c.expires_at, now),
        funder_id: c.funder_id.clone(),
        scopes: c.scopes,
        purpose: c.purpose,
        expires_at: c.expires_at,
        redeemed_at: c.redeemed_at,
        outcome: outcome_of(tx, c)?,
    })
}

/// The platform's own code, or `code_not_found` — audited, with the code's
/// id when it is another platform's.
fn owned_code(
    txn: &mut Txn<'_>,
    call: &Call,
    code: &CodeId,
) -> StoreResult<Result<CodeRow, ErrorCode>> {
    match txn.read().code_by_id(code)? {
        Some(c) if c.platform_id.as_str() == call.actor => Ok(Ok(c)),
        other => {
            let refused = ErrorCode::CodeNotFound;
            let mut rec = record(call, refused.as_str());
            if let Some(c) = other {
                rec.code_id = Some(c.code_id.to_string());
                rec.deposit_id = Some(c.deposit_id.to_string());
                rec.subject_tenant = Some(c.platform_id.to_string());
                rec.detail = Some("the code belongs to another platform".into());
            }
            txn.audit(rec)?;
            txn.meter(call, refused.as_str());
            Ok(Err(refused))
        }
    }
}

/// A code's status, for the platform that owns it; metered.
pub fn status(
    txn: &mut Txn<'_>,
    call: &Call,
    code: &CodeId,
) -> StoreResult<Result<CodeStatus, ErrorCode>> {
    let c = match owned_code(txn, call, code)? {
        Ok(c) => c,
        Err(refused) => return Ok(Err(refused)),
    };
    let status = status_of(txn.read(), &c, call.now)?;
    txn.meter(call, "ok");
    Ok(Ok(status))
}

/// Revokes a code the platform owns; revoking a revoked code changes
/// nothing. A redeemed or expired code cannot be revoked.
pub fn revoke(
    txn: &mut Txn<'_>,
    call: &Call,
    code: &CodeId,
) -> StoreResult<Result<CodeStatus, ErrorCode>> {
    let mut c = match owned_code(txn, call, code)? {
        Ok(c) => c,
        Err(refused) => return Ok(Err(refused)),
    };
    match rules::effective_state(c.state, c.expires_at, call.now) {
        CodeState::Redeemed => return Err(StoreError::Refused(ErrorCode::CodeAlreadyRedeemed)),
        CodeState::Expired => return Err(StoreError::Refused(ErrorCode::CodeExpired)),
        CodeState::Revoked => {}
        CodeState::Issued => {
            if !txn
                .write()
                .set_code_state(c.row, StoredCodeState::Revoked, call.now)?
            {
                // Redeemed (or revoked) since it was read: say what it is now.
                let now = txn
                    .read()
                    .code_by_row(c.row)?
                    .ok_or_else(|| StoreError::Corrupt("a code row vanished".into()))?;
                return match rules::effective_state(now.state, now.expires_at, call.now) {
                    CodeState::Redeemed => Err(StoreError::Refused(ErrorCode::CodeAlreadyRedeemed)),
                    _ => {
                        let status = status_of(txn.read(), &now, call.now)?;
                        txn.meter(call, "ok");
                        Ok(Ok(status))
                    }
                };
            }
            c.state = StoredCodeState::Revoked;
            txn.audit(AuditRecord {
                purpose: Some(c.purpose.as_str().into()),
                deposit_id: Some(c.deposit_id.to_string()),
                code_id: Some(c.code_id.to_string()),
                subject_tenant: Some(c.funder_id.to_string()),
                groups: Some(c.scopes.to_list()),
                ..record(call, "ok")
            })?;
        }
    }
    let status = status_of(txn.read(), &c, call.now)?;
    txn.meter(call, "ok");
    Ok(Ok(status))
}

/// Erases a deposit the platform owns (consent withdrawn): destroys its
/// data keys and ciphertexts, revokes its outstanding codes. Erasing an
/// erased deposit changes nothing.
pub fn erase(
    txn: &mut Txn<'_>,
    call: &Call,
    deposit: &DepositId,
) -> StoreResult<Result<(), ErrorCode>> {
    let dep = match owned_deposit(txn, call, deposit, Lock::Update)? {
        Ok(d) => d,
        Err(refused) => return Ok(Err(refused)),
    };
    if dep.state == DepositState::Active {
        let revoked = txn.write().shred_deposit(deposit, call.now)?;
        txn.audit(AuditRecord {
            purpose: Some(dep.purpose.as_str().into()),
            deposit_id: Some(deposit.to_string()),
            groups: Some(dep.groups.to_list()),
            detail: Some(format!(
                "data keys destroyed; {revoked} outstanding codes revoked"
            )),
            ..record(call, "ok")
        })?;
    }
    txn.meter(call, "ok");
    Ok(Ok(()))
}

/// Shreds an active deposit whose identity row is missing, audited with
/// `why`: one file committed the deposit and the other did not, so it was
/// never acknowledged and can never be redeemed; or one file committed a
/// shredding of it and the other did not. Does nothing if `id` is not an
/// active deposit.
pub fn void_deposit(
    txn: &mut Txn<'_>,
    id: &DepositId,
    why: &str,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let dep = match txn.read().deposit(id, Lock::Update)? {
        Some(d) if d.state == DepositState::Active => d,
        _ => return Ok(()),
    };
    let revoked = txn.write().shred_deposit(id, now)?;
    txn.audit(AuditRecord {
        purpose: Some(dep.purpose.as_str().into()),
        deposit_id: Some(id.to_string()),
        subject_tenant: Some(dep.platform_id.to_string()),
        groups: Some(dep.groups.to_list()),
        ..action(
            &by_system("deposit.void", now),
            "ok",
            format!("{why}: data keys destroyed; {revoked} outstanding codes revoked"),
        )
    })
}

/// Deletes the identity row of `id`, which has no active deposit: its
/// deposit was erased, or never reached the other file.
pub fn discard_identity(txn: &mut Txn<'_>, id: &DepositId, now: DateTime<Utc>) -> StoreResult<()> {
    let why = match txn.read().deposit(id, Lock::Update)? {
        Some(d) if d.state == DepositState::Erased => {
            "the deposit was erased, and the identity.db part of that erasure never \
             reached the disk before the vault stopped"
        }
        Some(_) => {
            return Err(StoreError::Invalid(format!(
                "deposit {id} is active; its identity stays"
            )))
        }
        None => {
            "its deposit never reached vault.db before the vault stopped, so it was never \
             acknowledged"
        }
    };
    txn.write().delete_identity(id)?;
    txn.audit(AuditRecord {
        deposit_id: Some(id.to_string()),
        ..action(
            &by_system("identity.discard", now),
            "ok",
            format!("identity row deleted: {why}"),
        )
    })
}
