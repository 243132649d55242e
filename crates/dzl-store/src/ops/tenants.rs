//! Tenant administration: adding tenants, suspending and resuming them,
//! pinning them to client certificates, rotating their signing secrets.
//! Each change bumps the generation, so running servers reload tenants,
//! and is audited.

use chrono::{DateTime, Utc};
use dzl_audit::AuditRecord;
use dzl_types::TenantId;

use super::{at, record};
use crate::writer::Txn;
use crate::{
    rules, Call, CertPin, PreviousSecret, Sealed, StoreError, StoreResult, TenantRow, TenantState,
};

fn existing(txn: &mut Txn<'_>, id: &TenantId) -> StoreResult<TenantRow> {
    txn.read()
        .tenant(id, crate::tx::Lock::Update)?
        .ok_or_else(|| StoreError::Invalid(format!("no tenant {id}")))
}

fn save(txn: &mut Txn<'_>, t: &TenantRow, now: DateTime<Utc>) -> StoreResult<()> {
    txn.write().update_tenant(t, now)?;
    txn.forget_tenant(&t.id);
    txn.write().bump_generation()
}

/// Adds a tenant.
pub fn add(txn: &mut Txn<'_>, actor: &str, t: &TenantRow) -> StoreResult<()> {
    txn.ensure_wrappable(t.secret.kek_version)?;
    txn.write().insert_tenant(t)?;
    txn.forget_tenant(&t.id);
    txn.write().bump_generation()?;
    txn.audit(AuditRecord {
        at: at(t.created_at),
        actor: actor.to_owned(),
        operation: "tenant.add".into(),
        result: "ok".into(),
        subject_tenant: Some(t.id.to_string()),
        groups: t.scopes.map(|s| s.to_list()),
        detail: Some(rules::tenant_added_detail(t)),
        ..Default::default()
    })
}

/// Suspends or resumes a tenant; `false` when it already was so. Resuming
/// a funder forgets its failed redemptions.
pub fn set_state(
    txn: &mut Txn<'_>,
    actor: &str,
    id: &TenantId,
    state: TenantState,
    reason: &str,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    let mut t = existing(txn, id)?;
    if t.state == state {
        return Ok(false);
    }
    t.state = state;
    save(txn, &t, now)?;
    if state == TenantState::Active {
        txn.set_failure_window(id, None)?;
    }
    txn.audit(AuditRecord {
        at: at(now),
        actor: actor.to_owned(),
        operation: match state {
            TenantState::Suspended => "tenant.suspend".into(),
            TenantState::Active => "tenant.resume".into(),
        },
        result: "ok".into(),
        subject_tenant: Some(id.to_string()),
        detail: Some(reason.to_owned()),
        ..Default::default()
    })?;
    Ok(true)
}

/// Pins a tenant to a client certificate, or removes its pin; `false`
/// when it already was so.
pub fn set_pin(
    txn: &mut Txn<'_>,
    actor: &str,
    id: &TenantId,
    pin: Option<&CertPin>,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    let mut t = existing(txn, id)?;
    if t.cert_pin.as_ref().map(|p| p.to_string()) == pin.map(|p| p.to_string()) {
        return Ok(false);
    }
    t.cert_pin = pin.cloned();
    save(txn, &t, now)?;
    txn.audit(rules::cert_pin_audit(actor.to_owned(), id, pin, at(now)))?;
    Ok(true)
}

/// Gives a tenant a new signing secret; its current one becomes its
/// previous secret, accepted until `previous_valid_until`.
pub fn rotate_secret(
    txn: &mut Txn<'_>,
    call: &Call,
    id: &TenantId,
    secret: &Sealed,
    previous_valid_until: DateTime<Utc>,
) -> StoreResult<()> {
    txn.ensure_wrappable(secret.kek_version)?;
    let mut t = existing(txn, id)?;
    t.previous_secret = Some(PreviousSecret {
        secret: t.secret.clone(),
        valid_until: previous_valid_until,
    });
    t.secret = secret.clone();
    save(txn, &t, call.now)?;
    txn.audit(AuditRecord {
        subject_tenant: Some(id.to_string()),
        detail: Some(format!(
            "new signing secret; the previous one is accepted until {}",
            at(previous_valid_until)
        )),
        ..record(call, "ok")
    })
}
