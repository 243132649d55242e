//! Deposits and the codes issued on them.
//!
//! A deposit request is checked in two steps, both here: what needs
//! nothing stored ([`check_request`]: the consent, the grants' scopes and
//! lifetimes), before the server seals anything; then, in the transaction
//! that stores it, what depends on other rows ([`create`]: each grant's
//! funder exists, is active and is entitled; the platform has no deposit
//! under this reference; the KEK version still wraps).

use dzl_audit::AuditRecord;
use dzl_types::rules::{self as grant_rules, Entitlement};
use dzl_types::{DepositId, ErrorCode, TenantId};

use super::record;
use crate::tx::{CodeInsert, DepositInsert, DepositRow, DepositState, Lock};
use crate::writer::Txn;
use crate::{
    Call, CreatedCode, NewCode, NewDeposit, StoreError, StoreResult, TenantKind, TenantRow,
    TenantState,
};

/// Deposits are filed by subject in runs, keyed (run, subject_index,
/// deposit_id): a deposit goes into run `audit seq >> SUBJECT_RUN_SHIFT` of
/// its writer's chain, so runs follow one another and each holds at most
/// 8,192 audit entries' worth of deposits. A deposit's filing lands among
/// the few pages of the current run, instead of on a random page of one
/// index over every deposit (docs/performance.md). Finding a subject
/// probes each run.
pub const SUBJECT_RUN_SHIFT: u32 = 13;

/// The run a deposit filed now belongs to.
pub fn subject_run(txn: &mut Txn<'_>) -> StoreResult<i64> {
    Ok(txn.head()?.seq >> SUBJECT_RUN_SHIFT)
}

pub use dzl_types::rules::check_deposit as check_request;

/// What a funder row entitles, if `t` is a funder.
fn entitlement(t: &Option<TenantRow>) -> Option<Entitlement<'_>> {
    t.as_ref()
        .filter(|t| t.kind == TenantKind::Funder)
        .map(|t| Entitlement {
            active: t.state == TenantState::Active,
            scopes: t.scopes,
            purposes: &t.purposes,
        })
}

/// Checks that a code's funder is entitled to it, for a deposit of
/// `purpose`; `at` is the grant's pointer.
fn check_funder(
    txn: &mut Txn<'_>,
    code: &NewCode,
    purpose: dzl_types::Purpose,
    at: &str,
) -> StoreResult<()> {
    let funder = txn.tenant(&code.funder_id)?;
    grant_rules::check_entitlement(entitlement(&funder), code.scopes, purpose, at)
        .map_err(StoreError::Rule)
}

/// The row of `code` issued on `deposit` now.
fn code_row<'a>(call: &Call, deposit: &'a DepositRow, code: &'a NewCode) -> CodeInsert<'a> {
    CodeInsert {
        code_id: &code.code_id,
        secret_hash: &code.secret_hash,
        deposit_id: &deposit.id,
        platform_id: &deposit.platform_id,
        funder_id: &code.funder_id,
        scopes: code.scopes,
        purpose: deposit.purpose,
        created_at: call.now,
        expires_at: grant_rules::code_deadline(call.now, code.ttl_seconds, deposit.consent_expires),
    }
}

/// Audits a code inserted at `row`; what the caller learns of it.
fn issued(
    txn: &mut Txn<'_>,
    call: &Call,
    c: &CodeInsert<'_>,
    row: i64,
) -> StoreResult<CreatedCode> {
    txn.audit(AuditRecord {
        operation: "code.issue".into(),
        purpose: Some(c.purpose.as_str().into()),
        deposit_id: Some(c.deposit_id.to_string()),
        code_id: Some(c.code_id.to_string()),
        subject_tenant: Some(c.funder_id.to_string()),
        groups: Some(c.scopes.to_list()),
        ..record(call, "ok")
    })?;
    Ok(CreatedCode {
        code_id: c.code_id.clone(),
        row,
        funder_id: c.funder_id.clone(),
        scopes: c.scopes,
        purpose: c.purpose,
        expires_at: c.expires_at,
    })
}

/// Stores a deposit with its sealed groups and its first codes, each
/// grant's funder checked in this transaction.
pub fn create(txn: &mut Txn<'_>, d: &NewDeposit) -> StoreResult<Vec<CreatedCode>> {
    for (i, code) in d.codes.iter().enumerate() {
        check_funder(txn, code, d.purpose, &format!("/grants/{i}"))?;
    }
    txn.ensure_wrappable(d.records_key.kek_version)?;
    txn.ensure_wrappable(d.identity_key.kek_version)?;
    let row = DepositRow {
        id: d.id.clone(),
        platform_id: TenantId::from_trusted(d.call.actor.clone()),
        external_ref: d.external_ref.clone(),
        purpose: d.purpose,
        consent_json: d.consent_json.clone(),
        consent_scopes: d.consent_scopes,
        consent_expires: d.consent_expires,
        groups: d.groups,
        state: DepositState::Active,
        created_at: d.call.now,
    };
    let sealed = |g: dzl_types::Group| {
        d.records
            .iter()
            .find(|(group, _)| *group == g)
            .map(|(_, e)| e.as_slice())
    };
    let codes: Vec<CodeInsert<'_>> = d.codes.iter().map(|c| code_row(&d.call, &row, c)).collect();
    let subject_run = subject_run(txn)?;
    let inserted = txn.write().insert_deposit(
        &DepositInsert {
            row: &row,
            suite: d.suite,
            subject_index: &d.subject_index,
            subject_ref: &d.subject_ref,
            subject_run,
            records_key: &d.records_key,
            device: sealed(dzl_types::Group::Device),
            risk: sealed(dzl_types::Group::Risk),
            identity_key: &d.identity_key,
            identity: &d.identity,
        },
        &codes,
    )?;
    let rows = match inserted {
        Ok(rows) => rows,
        Err(existing) => return Err(StoreError::DuplicateExternalRef(existing)),
    };
    txn.audit(AuditRecord {
        purpose: Some(d.purpose.as_str().into()),
        deposit_id: Some(d.id.to_string()),
        groups: Some(d.groups.to_list()),
        ..record(&d.call, "ok")
    })?;
    let mut created = Vec::with_capacity(codes.len());
    for (c, row) in codes.iter().zip(rows) {
        created.push(issued(txn, &d.call, c, row)?);
    }
    txn.meter(&d.call, "ok");
    Ok(created)
}

/// The platform's own deposit, or `deposit_not_found` — audited when the
/// id is unknown or another platform's, since that is a probe.
pub(crate) fn owned_deposit(
    txn: &mut Txn<'_>,
    call: &Call,
    id: &DepositId,
    lock: Lock,
) -> StoreResult<Result<DepositRow, ErrorCode>> {
    match txn.read().deposit(id, lock)? {
        Some(d) if d.platform_id.as_str() == call.actor => Ok(Ok(d)),
        other => {
            let code = ErrorCode::DepositNotFound;
            let mut rec = record(call, code.as_str());
            if let Some(d) = other {
                rec.deposit_id = Some(d.id.to_string());
                rec.subject_tenant = Some(d.platform_id.to_string());
                rec.detail = Some("the deposit belongs to another platform".into());
            }
            txn.audit(rec)?;
            txn.meter(call, code.as_str());
            Ok(Err(code))
        }
    }
}

/// Issues one more code on a deposit the platform owns.
pub fn issue_code(
    txn: &mut Txn<'_>,
    call: &Call,
    deposit: &DepositId,
    code: &NewCode,
) -> StoreResult<Result<CreatedCode, ErrorCode>> {
    let dep = match owned_deposit(txn, call, deposit, Lock::Share)? {
        Ok(d) => d,
        Err(refused) => return Ok(Err(refused)),
    };
    if dep.state == DepositState::Erased {
        return Err(StoreError::Refused(ErrorCode::DepositErased));
    }
    grant_rules::check_grant_scopes(code.scopes, dep.consent_scopes, dep.groups, "")
        .map_err(StoreError::Rule)?;
    check_funder(txn, code, dep.purpose, "")?;
    if call.now >= dep.consent_expires {
        return Err(StoreError::Refused(ErrorCode::ConsentExpired));
    }
    let c = code_row(call, &dep, code);
    let row = txn.write().insert_code(&c)?;
    let created = issued(txn, call, &c, row)?;
    txn.meter(call, "ok");
    Ok(Ok(created))
}
