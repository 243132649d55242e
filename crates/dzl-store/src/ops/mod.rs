//! Every operation of the vault, written once over [`crate::tx::Tx`]: what
//! a request may do, in which order its rows are read and written, what it
//! audits and what it meters. Both backends run exactly this code; they
//! differ only in how a [`crate::tx::Tx`] method becomes SQL.
//!
//! A write operation runs inside the writer's transaction ([`Txn`]) and
//! may run more than once ([`crate::writer`]): it reads what it needs,
//! decides by the pure rules of [`crate::rules`] and `dzl_types::rules`,
//! and writes only once it has decided, so that a refusal leaves nothing
//! to undo. A read operation runs over a read snapshot.

pub mod audit;
pub mod codes;
pub mod deposit;
pub mod guards;
pub mod keys;
pub mod purge;
pub mod redeem;
pub mod subject;
pub mod tenants;

use chrono::{DateTime, Utc};
use dzl_audit::AuditRecord;

use crate::writer::Txn;
use crate::{Call, StoreError, StoreResult};

pub use crate::writer::TxState;

/// An audit timestamp: RFC 3339 UTC with milliseconds.
pub fn at(now: DateTime<Utc>) -> String {
    now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `t` to the millisecond, as stored.
pub fn to_ms(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

/// The base audit record of a call.
pub fn record(call: &Call, result: &str) -> AuditRecord {
    AuditRecord {
        at: at(call.now),
        actor: call.actor.clone(),
        operation: call.operation.to_owned(),
        result: result.to_owned(),
        ..Default::default()
    }
}

/// The audit record of an operator action with a fixed `detail`.
pub fn action(call: &Call, result: &str, detail: String) -> AuditRecord {
    AuditRecord {
        detail: Some(detail),
        ..record(call, result)
    }
}

/// The call of something the vault does by itself.
pub fn by_system(operation: &'static str, now: DateTime<Utc>) -> Call {
    Call {
        actor: "system".into(),
        operation,
        now,
    }
}

/// Appends an operator action that changes no other row (an export, a
/// verification) to the audit trail.
pub fn record_action(
    txn: &mut Txn<'_>,
    call: &Call,
    result: &str,
    detail: &str,
) -> StoreResult<()> {
    txn.audit(action(call, result, detail.to_owned()))
}

/// Audits and meters a refused call that changes nothing else (a throttled
/// redemption, a refused signature).
pub fn record_refusal(txn: &mut Txn<'_>, call: &Call, refusal: &str) -> StoreResult<()> {
    txn.audit(record(call, refusal))?;
    txn.meter(call, refusal);
    Ok(())
}

/// A stored value that does not parse.
pub(crate) fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("unexpected stored {what}"))
}
