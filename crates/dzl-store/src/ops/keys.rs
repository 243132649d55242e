//! The keyring's life cycle in the store: the first keyring, rotation
//! (within a suite or to the other one), rewrapping data keys and secrets
//! onto the active version, resealing deposits in the vault's suite,
//! retirement and root rekeying. The keys themselves are wrapped and
//! unwrapped, and deposits opened and sealed, by [`crate::admin`]; here
//! only wrapped bytes and ciphertext move.

use chrono::{DateTime, Utc};
use dzl_audit::AuditRecord;

use super::{action, at};
use crate::tx::Lock;
use crate::writer::Txn;
use crate::{
    rules, Call, InitMaterial, KekState, RekeyedKek, ResealedDeposit, RewrappedDataKey,
    RewrappedSecret, SealedSecret, StoreError, StoreResult, Suite,
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
        .insert_kek(1, init.suite, KekState::Active, &init.kek_wrapped, now)?;
    txn.keyring_changed()?;
    for s in &init.secrets {
        txn.write().insert_sealed_secret(s, now)?;
    }
    txn.write().bump_generation()?;
    txn.audit(AuditRecord {
        at: at(now),
        actor: actor.to_owned(),
        operation: "vault.init".into(),
        result: "ok".into(),
        detail: Some(format!("keyring version 1 created; suite {}", init.suite)),
        ..Default::default()
    })
}

/// Adds KEK `version` of `suite` as active, with `secrets` sealed under it
/// (the first receipt key of a suite the vault moves to); the previous
/// active one becomes decrypt-only. Refused unless `version` is the next
/// one.
pub fn rotate(
    txn: &mut Txn<'_>,
    actor: &str,
    version: u32,
    suite: Suite,
    wrapped: &[u8],
    secrets: &[SealedSecret],
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
    for s in secrets {
        if s.sealed.kek_version != version {
            return Err(StoreError::Invalid(format!(
                "a secret sealed under version {} in a rotation to {version}",
                s.sealed.kek_version
            )));
        }
    }
    let before = txn.read().kek_versions()?;
    let previous = before
        .iter()
        .find(|k| k.state == KekState::Active)
        .map(|k| k.suite);
    txn.write().demote_active_kek()?;
    txn.write()
        .insert_kek(version, suite, KekState::Active, wrapped, now)?;
    txn.keyring_changed()?;
    for s in secrets {
        txn.write().insert_sealed_secret(s, now)?;
    }
    let mut detail = format!("version {version} active");
    if previous.is_some_and(|p| p != suite) {
        detail.push_str(&format!("; the vault's suite is now {suite}"));
    }
    if !secrets.is_empty() {
        let names: Vec<&str> = secrets.iter().map(|s| s.name.as_str()).collect();
        detail.push_str(&format!("; added {}", names.join(", ")));
    }
    txn.audit(AuditRecord {
        at: at(now),
        actor: actor.to_owned(),
        operation: "keys.rotate".into(),
        result: "ok".into(),
        detail: Some(detail),
        ..Default::default()
    })
}

/// Replaces the seal of each deposit of `deposits` that is unchanged since
/// it was read ([`rules::reseal_applies`], checked under lock), and audits
/// the batch; how many were replaced. Refused (`Invalid`, nothing changed)
/// unless `suite` is the vault's suite now and every new data key is
/// wrapped by a version that still wraps.
pub fn reseal_deposits(
    txn: &mut Txn<'_>,
    call: &Call,
    suite: Suite,
    deposits: &[ResealedDeposit],
) -> StoreResult<u64> {
    let now_suite = txn.suite()?;
    if now_suite != suite {
        return Err(StoreError::Invalid(format!(
            "the vault's suite is {now_suite} now, not {suite} (a rotation ran): run the reseal again"
        )));
    }
    for d in deposits {
        if d.suite != suite {
            return Err(StoreError::Invalid(format!(
                "a deposit sealed in {} in a reseal to {suite}",
                d.suite
            )));
        }
        if let Some(r) = &d.records {
            txn.ensure_wrappable(r.key.kek_version)?;
        }
        txn.ensure_wrappable(d.identity.0.kek_version)?;
    }
    let mut replaced = 0u64;
    for d in deposits {
        let seal = txn
            .read()
            .deposit_seal(&d.read.filing.deposit_id, Lock::Update)?;
        if rules::reseal_applies(&d.read, seal.as_ref()) {
            txn.write().replace_seal(d)?;
            replaced += 1;
        }
    }
    if replaced > 0 {
        txn.audit(action(
            call,
            "ok",
            format!(
                "{replaced} deposits resealed in {suite}; {} changed since they were read and left",
                deposits.len() as u64 - replaced
            ),
        ))?;
    }
    Ok(replaced)
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
            txn.keyring_changed()?;
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
