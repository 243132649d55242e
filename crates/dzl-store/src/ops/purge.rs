//! Retention: codes past their deadline are stored as expired, and
//! deposits past retention are crypto-shredded, in bounded steps so a
//! running server's writes never wait long.

use dzl_audit::AuditRecord;

use super::action;
use crate::tx::{DepositState, Lock};
use crate::writer::Txn;
use crate::{Call, PurgeCounts, PurgePlan, StoreResult};

/// One step of a purge under `plan`: stores up to `limit` issued codes
/// past their deadline as expired, then — once no such code is left —
/// crypto-shreds up to `limit` deposits past retention, revoking their
/// outstanding codes. Call until it returns counts below `limit`.
pub fn step(
    txn: &mut Txn<'_>,
    call: &Call,
    plan: &PurgePlan,
    limit: usize,
) -> StoreResult<PurgeCounts> {
    let mut counts = PurgeCounts {
        codes_expired: txn.write().expire_codes(plan.now, limit)?,
        ..PurgeCounts::default()
    };
    if counts.codes_expired > 0 {
        txn.audit(AuditRecord {
            operation: "codes.expire".into(),
            ..action(
                call,
                "ok",
                format!(
                    "{} codes past their deadline stored as expired",
                    counts.codes_expired
                ),
            )
        })?;
    }
    if counts.codes_expired as usize >= limit {
        // Every code expires first, so shredding revokes only codes still in time.
        return Ok(counts);
    }
    for dep in txn.read().deposits_past_retention(plan, limit)? {
        // Locked and read again: erased meanwhile by its platform?
        match txn.read().deposit(&dep.id, Lock::Update)? {
            Some(d) if d.state == DepositState::Active => {}
            _ => continue,
        }
        let revoked = txn.write().shred_deposit(&dep.id, plan.now)?;
        counts.deposits_shredded += 1;
        counts.codes_revoked += revoked;
        txn.audit(AuditRecord {
            operation: "deposit.purge".into(),
            purpose: Some(dep.purpose.as_str().into()),
            deposit_id: Some(dep.id.to_string()),
            subject_tenant: Some(dep.platform_id.to_string()),
            groups: Some(dep.groups.to_list()),
            ..action(
                call,
                "ok",
                format!(
                    "retention of {} days passed: data keys destroyed; {revoked} outstanding codes revoked",
                    plan.retention_days
                ),
            )
        })?;
    }
    Ok(counts)
}
