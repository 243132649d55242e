//! The keyring's life cycle in the store: the first keyring, rotation,
//! rewrapping data keys and secrets onto the active version, retirement
//! and root rekeying. The keys themselves are wrapped and unwrapped by
//! [`crate::admin`]; here only wrapped bytes move.

use chrono::{DateTime, Utc};
use dzl_audit::AuditRecord;

use super::{action, at};
use crate::tx::Lock;
use crate::writer::Txn;
use crate::{
    rules, Call, InitMaterial, KekState, RekeyedKek, RewrappedDataKey, RewrappedSecret, StoreError,
    StoreResult,
};

/// Creates the first keyring and the vault's secrets; refused if the vault
/// is initialised.
pub fn initialise(
    txn: &mut Txn<'_>,
    actor: &str,
    init: &InitMaterial,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    if txn.read().max_kek_version()? > 0 {
        return Err(StoreError::Invalid(
            "the vault is already initialised".into(),
        ));
    }
    txn.write()
        .insert_kek(1, KekState::Active, &init.kek_wrapped, now)?;
    for s in &init.secrets {
        txn.write().insert_sealed_secret(s, now)?;
    }
    txn.write().bump_generation()?;
    txn.audit(AuditRecord {
        at: at(now),
        actor: actor.to_owned(),
        operation: "vault.init".into(),
        result: "ok".into(),
        detail: Some("keyring version 1 created".into()),
        ..Default::default()
    })
}

/// Adds KEK `version` as active; the previous active one becomes
/// decrypt-only. Refused unless `version` is the next one.
pub fn rotate(
    txn: &mut Txn<'_>,
    actor: &str,
    version: u32,
    wrapped: &[u8],
    now: DateTime<Utc>,
) -> StoreResult<()> {
    // First, so concurrent keyring changes queue behind each other.
    txn.write().bump_generation()?;
    let expected = txn.read().max_kek_version()? + 1;
    if version != expected {
        return Err(StoreError::Invalid(format!(
            "the next key version is {expected}, not {version} (another rotation ran first)"
        )));
    }
    txn.write().demote_active_kek()?;
    txn.write()
        .insert_kek(version, KekState::Active, wrapped, now)?;
    txn.audit(AuditRecord {
        at: at(now),
        actor: actor.to_owned(),
        operation: "keys.rotate".into(),
        result: "ok".into(),
        detail: Some(format!("version {version} active")),
        ..Default::default()
    })
}

/// Checks that every key of a rewrap is wrapped under `target`.
fn onto(target: u32, versions: impl IntoIterator<Item = u32>, what: &str) -> StoreResult<()> {
    for v in versions {
        if v != target {
            return Err(StoreError::Invalid(format!(
                "a {what} wrapped under version {v} in a rewrap onto {target}"
            )));
        }
    }
    Ok(())
}

/// Replaces wrapped data keys still wrapped by their `from_version`;
/// how many changed. Not audited per batch (the caller records the run).
pub fn rewrap_data_keys(
    txn: &mut Txn<'_>,
    target: u32,
    keys: &[RewrappedDataKey],
) -> StoreResult<u64> {
    txn.ensure_wrappable(target)?;
    onto(target, keys.iter().map(|k| k.wrapped.kek_version), "key")?;
    let mut changed = 0;
    for k in keys {
        changed += u64::from(txn.write().rewrap_data_key(k)?);
    }
    Ok(changed)
}

/// Replaces sealed secrets still sealed by their `from_version`, and
/// records the rewrap's summary; how many changed.
pub fn rewrap_secrets(
    txn: &mut Txn<'_>,
    call: &Call,
    target: u32,
    secrets: &[RewrappedSecret],
    detail: &str,
) -> StoreResult<u64> {
    txn.write().bump_generation()?;
    txn.ensure_wrappable(target)?;
    onto(
        target,
        secrets.iter().map(|s| s.sealed.kek_version),
        "secret",
    )?;
    let mut changed = 0;
    for s in secrets {
        changed += u64::from(txn.write().rewrap_secret(s)?);
    }
    txn.audit(action(call, "ok", detail.to_owned()))?;
    Ok(changed)
}

/// Retires KEK `version` if nothing needs it any more; refusals audited.
pub fn retire(
    txn: &mut Txn<'_>,
    call: &Call,
    version: u32,
) -> StoreResult<Result<bool, rules::RetireRefusal>> {
    txn.write().bump_generation()?;
    let state = txn.read().kek_state(version, Lock::Update)?;
    let usage = txn.read().key_usage(version, call.now)?;
    match rules::retire_decision(version, state, &usage) {
        Err(refusal) => {
            txn.audit(action(
                call,
                refusal.code(),
                format!("version {version} not retired: {refusal}"),
            ))?;
            Ok(Err(refusal))
        }
        Ok(false) => Ok(Ok(false)),
        Ok(true) => {
            // Previous tenant secrets past their overlap are dead; they go
            // with the key that sealed them.
            let dropped = txn.write().drop_previous_secrets(version)?;
            txn.write().retire_kek(version, call.now)?;
            txn.audit(action(
                call,
                "ok",
                format!(
                    "version {version} retired; its wrapped key deleted; \
                     {dropped} expired previous tenant secrets dropped"
                ),
            ))?;
            Ok(Ok(true))
        }
    }
}

/// Replaces the root-key wrap of every non-retired KEK at once; refused
/// unless `keks` names exactly those versions, each still as stored.
pub fn rekey_root(
    txn: &mut Txn<'_>,
    call: &Call,
    keks: &[RekeyedKek],
    detail: &str,
) -> StoreResult<()> {
    txn.write().bump_generation()?;
    let stored: Vec<_> = txn
        .read()
        .kek_versions()?
        .into_iter()
        .filter(|k| k.state != KekState::Retired)
        .collect();
    let mut given: Vec<&RekeyedKek> = keks.iter().collect();
    given.sort_by_key(|k| k.version);
    let matches = stored.len() == given.len()
        && stored
            .iter()
            .zip(&given)
            .all(|(s, k)| s.version == k.version && s.wrapped == k.old_wrapped);
    if !matches {
        return Err(StoreError::Invalid(
            "the keyring changed while it was being rekeyed; nothing was changed, run it again"
                .into(),
        ));
    }
    for k in keks {
        txn.write().set_kek_wrapped(k.version, &k.new_wrapped)?;
    }
    txn.audit(action(call, "ok", detail.to_owned()))
}
