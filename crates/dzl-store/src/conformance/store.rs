//! The operator lifecycle (init, tenants, key rotation, purge, retirement,
//! rewrap, root rekey) and the request path with real sealed groups
//! (deposit, redeem, status, outcome, subject access, revocation,
//! erasure), on one store.

use std::sync::mpsc;

use chrono::{Duration, TimeZone, Utc};
use dzl_crypto::{RootKey, SystemRandom};
use dzl_types::wire::{CodeState, Decision, OutcomeRequest};
use dzl_types::{CodeId, DepositId, ErrorCode, Group, Purpose, RedemptionId, ScopeSet, TenantId};

use super::fixture::{
    at_call, attempt, cli_call, deposit, deposit_at, new_deposit, now_call, open, APPLICANT, RISK,
};
use super::{DepositRows, Factory, Fixture};
use crate::admin::{self, NewTenant};
use crate::{
    rules, AuditQuery, NewCode, PurgeCounts, RewrappedSecret, Sealed, SecretRef, Store, StoreError,
    TenantKind, TenantState, UsageQuery,
};

/// Init, a tenant, a suspension: three entries that verify.
pub fn init_then_tenants_and_a_verifiable_audit_chain<F: Factory>(factory: F) {
    let f = Fixture::new(factory);
    let store = &f.store;
    assert!(
        admin::init(store, &f.root, "cli:test").is_err(),
        "a second init is refused"
    );
    let keys = f.keys();
    let creds = admin::add_tenant(
        store,
        &keys.keyring,
        "cli:test",
        NewTenant::new(TenantKind::Funder, "Bank"),
    )
    .unwrap();
    let tenants = store.tenants().unwrap();
    assert_eq!(tenants.len(), 1);
    let secret = admin::open_tenant_secret(&keys.keyring, &tenants[0]).unwrap();
    assert_eq!(&secret[..], creds.secret.as_bytes());
    assert!(store
        .set_tenant_state("cli:test", &creds.tenant_id, TenantState::Suspended, "test")
        .unwrap());
    assert!(!store
        .set_tenant_state("cli:test", &creds.tenant_id, TenantState::Suspended, "test")
        .unwrap());
    // vault.init, tenant.add, tenant.suspend
    assert_eq!(store.verify_audit(&mut |_| {}).unwrap(), Ok(3));
    assert_eq!(store.audit_head_seq().unwrap(), 3);
    store.ping().unwrap();
}

/// Another root key opens nothing.
pub fn a_wrong_root_key_does_not_open_the_keyring<F: Factory>(factory: F) {
    let f = Fixture::new(factory);
    let other = RootKey::generate(&SystemRandom::new()).unwrap();
    assert!(matches!(
        admin::load_keys(&f.store, &other),
        Err(admin::AdminError::WrongRootKey)
    ));
}

/// A rotation keeps the old version for decryption, another store sees
/// it, and a rotation that lost the race to another store is refused.
pub fn rotation_keeps_old_versions_and_another_store_sees_it<F: Factory>(factory: F) {
    let f = Fixture::new(factory);
    let (store, root) = (&f.store, &f.root);
    let before = admin::load_keyring(store, root).unwrap();
    let sealed = before.seal_secret("t", "x", b"payload").unwrap();
    let g0 = store.generation().unwrap();
    assert_eq!(admin::rotate_keys(store, root, "cli:test").unwrap(), 2);
    assert!(
        store.generation().unwrap() > g0,
        "a running server must notice"
    );
    let after = admin::load_keyring(store, root).unwrap();
    assert_eq!(after.active_version(), 2);
    assert_eq!(
        &after.open_secret("t", "x", &sealed).unwrap()[..],
        b"payload"
    );
    let states: Vec<_> = store
        .keks()
        .unwrap()
        .iter()
        .map(|k| k.state.as_str())
        .collect();
    assert_eq!(states, ["decrypt_only", "active"]);
    // What loading the keyring reads: the same versions, without counting.
    let versions: Vec<_> = store
        .kek_versions()
        .unwrap()
        .into_iter()
        .map(|k| (k.version, k.state.as_str(), k.wrapped))
        .collect();
    let full: Vec<_> = store
        .keks()
        .unwrap()
        .into_iter()
        .map(|k| (k.version, k.state.as_str(), k.wrapped))
        .collect();
    assert_eq!(versions, full);
    // Another store sees the rotation, and rotates first.
    let other = f.open();
    assert_eq!(
        admin::load_keyring(&*other, root).unwrap().active_version(),
        2
    );
    assert_eq!(admin::rotate_keys(&*other, root, "cli:test").unwrap(), 3);
    assert!(matches!(
        store.rotate_kek("cli:test", 3, dzl_crypto::Suite::Intl, vec![0; 60], vec![]),
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(
        admin::load_keyring(store, root).unwrap().active_version(),
        3
    );
    assert!(f.verified().is_ok());
}

/// The request path: a wrong purpose and another funder are refused, the
/// right funder gets exactly the granted groups once, the outcome is
/// recorded once, the platform and subject access see it all, and usage
/// counts every attempt by its result.
pub fn a_deposit_redeems_once_with_real_sealed_groups<F: Factory>(factory: F) {
    let f = Fixture::new(factory);
    let p = f.parties();
    let d = deposit(&f.store, &p, "APP-1", &["applicant,risk"]).unwrap();
    let funder = &p.funder.tenant_id;
    let redeem = |actor: &TenantId, purpose| {
        f.store.redeem(
            &now_call(actor, "redemption.create"),
            attempt(&d.codes[0], purpose),
        )
    };

    // The wrong purpose is refused and audited; the code stays usable.
    assert!(matches!(
        redeem(funder, Purpose::Drawdown),
        Err(StoreError::Refused(ErrorCode::PurposeMismatch))
    ));
    // Another funder presenting it: not found.
    assert!(matches!(
        redeem(&p.other_funder.tenant_id, Purpose::CreditApplication),
        Err(StoreError::Refused(ErrorCode::CodeNotFound))
    ));
    let r = redeem(funder, Purpose::CreditApplication).unwrap();
    assert_eq!(r.deposit_id, d.id);
    assert_eq!(r.external_ref, "APP-1");
    assert_eq!(r.platform_id, p.platform.tenant_id);
    assert_eq!(
        open(&p, &r),
        [
            (Group::Applicant, APPLICANT.to_owned()),
            (Group::Risk, RISK.to_owned())
        ],
        "only the granted groups, decrypted"
    );
    assert!(matches!(
        redeem(funder, Purpose::CreditApplication),
        Err(StoreError::Refused(ErrorCode::CodeAlreadyRedeemed))
    ));

    // The platform sees it redeemed, then the funder's decision.
    let platform = &p.platform.tenant_id;
    let outcome: OutcomeRequest =
        serde_json::from_str(r#"{"decision":"approved","amount_fen":500000}"#).unwrap();
    let reported = f
        .store
        .report_outcome(
            &now_call(funder, "redemption.outcome"),
            &r.redemption_id,
            &outcome,
        )
        .unwrap();
    assert_eq!(reported.decision, Decision::Approved);
    assert!(matches!(
        f.store.report_outcome(
            &now_call(funder, "redemption.outcome"),
            &r.redemption_id,
            &outcome
        ),
        Err(StoreError::Refused(ErrorCode::OutcomeAlreadyReported))
    ));
    let status = f
        .store
        .code_status(&now_call(platform, "code.status"), &r.code_id)
        .unwrap();
    assert_eq!(status.state, CodeState::Redeemed);
    assert_eq!(
        status.outcome.map(|o| (o.decision, o.amount_fen)),
        Some((Decision::Approved, Some(500_000)))
    );

    // Subject access finds the deposit and its redemption.
    let report = f
        .store
        .subject_access(
            &now_call(&TenantId::from_trusted("ten_op".into()), "subject.access"),
            std::slice::from_ref(&d.subject_index),
        )
        .unwrap();
    assert_eq!(report.deposits.len(), 1);
    assert_eq!(report.deposits[0].deposit_id, d.id);
    assert_eq!(report.redemptions.len(), 1);
    assert_eq!(report.redemptions[0].redemption_id, r.redemption_id);
    assert_eq!(
        report.redemptions[0].outcome.as_ref().map(|o| o.decision),
        Some(Decision::Approved)
    );

    // Every attempt is on the trail; usage counts refusals by code.
    assert!(f.verified().is_ok());
    let usage = f.store.usage().unwrap();
    let calls = |op: &str, outcome: &str| {
        usage
            .iter()
            .filter(|u| u.operation == op && u.outcome == outcome)
            .map(|u| u.calls)
            .sum::<u64>()
    };
    assert_eq!(calls("redemption.create", "ok"), 1);
    assert_eq!(calls("redemption.create", "purpose_mismatch"), 1);
    assert_eq!(calls("redemption.create", "code_not_found"), 1);
    assert_eq!(calls("redemption.create", "code_already_redeemed"), 1);
    assert_eq!(calls("redemption.outcome", "ok"), 1);
    assert_eq!(calls("deposit.create", "ok"), 1);
}

/// A deposit writes its row, its subject filing, one records row, one
/// identity row and its codes, and a redemption one more row; a job that
/// fails after writing a deposit leaves none of it, in a batch of jobs that
/// succeed or alone.
pub fn a_deposit_writes_its_rows_and_a_failed_job_leaves_none<F: Factory>(factory: F) {
    let f = Fixture::new(factory);
    let p = f.parties();
    let mut db = f.backdoor();
    let d = deposit(&f.store, &p, "APP-1", &["risk", "applicant,device"]).unwrap();
    let whole = DepositRows {
        deposits: 1,
        subject_filings: 1,
        records: 1,
        identities: 1,
        codes: 2,
        redemptions: 0,
    };
    assert_eq!(db.deposit_rows(&d.id), whole);
    f.store
        .redeem(
            &now_call(&p.funder.tenant_id, "redemption.create"),
            attempt(&d.codes[1], Purpose::CreditApplication),
        )
        .unwrap();
    assert_eq!(
        db.deposit_rows(&d.id),
        DepositRows {
            redemptions: 1,
            ..whole
        }
    );

    // Alone: the deposit's writes, entries and count are undone.
    let seq = f.store.audit_head_seq().unwrap();
    let usage = f.store.usage().unwrap();
    let (doomed, _) = new_deposit(&p, "APP-DOOMED", &["risk"], Utc::now());
    let doomed_id = doomed.id.clone();
    let failed = f.store.write(move |txn| {
        crate::ops::deposit::create(txn, &doomed)?;
        Err::<(), _>(StoreError::Invalid("the job fails after writing".into()))
    });
    assert!(matches!(failed, Err(StoreError::Invalid(_))), "{failed:?}");
    assert_eq!(db.deposit_rows(&doomed_id), DepositRows::default());
    assert_eq!(f.store.audit_head_seq().unwrap(), seq);
    assert_eq!(f.store.usage().unwrap(), usage);

    // Among jobs that succeed, queued at once so they share transactions.
    let (tx, rx) = mpsc::channel();
    let mut ids = Vec::new();
    for i in 0..12 {
        let (d, _) = new_deposit(&p, &format!("APP-BATCH-{i}"), &["risk"], Utc::now());
        let fails = i % 3 == 1;
        ids.push((d.id.clone(), fails));
        let tx = tx.clone();
        f.store.writer().submit(
            move |txn| {
                let created = crate::ops::deposit::create(txn, &d)?;
                if fails {
                    return Err(StoreError::Invalid("the job fails after writing".into()));
                }
                Ok(created.len())
            },
            Box::new(move |out| tx.send((i, out)).unwrap()),
        );
    }
    drop(tx);
    let answers: Vec<_> = rx.iter().collect();
    assert_eq!(answers.len(), 12, "every job is answered");
    for (i, out) in answers {
        match (&ids[i].1, out) {
            (false, Ok(1)) | (true, Err(StoreError::Invalid(_))) => {}
            (fails, out) => panic!("job {i} (fails: {fails}) answered {out:?}"),
        }
    }
    for (id, fails) in &ids {
        let rows = db.deposit_rows(id);
        if *fails {
            assert_eq!(rows, DepositRows::default(), "{id}");
        } else {
            assert_eq!(rows, DepositRows { codes: 1, ..whole }, "{id}");
        }
    }
    // Eight deposits of one code each: two entries apiece, one count.
    assert_eq!(f.store.audit_head_seq().unwrap(), seq + 16);
    assert!(f.verified().is_ok());
    let deposits: u64 = f
        .store
        .usage()
        .unwrap()
        .iter()
        .filter(|u| u.operation == "deposit.create")
        .map(|u| u.calls)
        .sum();
    assert_eq!(deposits, 1 + 8);
}

/// A second deposit under the same `external_ref` is refused, naming the
/// first, and stores nothing.
pub fn a_duplicate_external_ref_is_refused_and_stores_nothing<F: Factory>(factory: F) {
    let f = Fixture::new(factory);
    let p = f.parties();
    let mut db = f.backdoor();
    let first = deposit(&f.store, &p, "APP-1", &["risk"]).unwrap();
    let seq = f.store.audit_head_seq().unwrap();
    let (dup, _) = new_deposit(&p, "APP-1", &["risk"], Utc::now());
    let dup_id = dup.id.clone();
    let refused = f.store.create_deposit(dup);
    assert!(
        matches!(&refused, Err(StoreError::DuplicateExternalRef(existing)) if *existing == first.id),
        "{refused:?}"
    );
    assert_eq!(f.store.audit_head_seq().unwrap(), seq, "no trace");
    assert_eq!(db.deposit_rows(&dup_id), DepositRows::default());
    assert_eq!(db.deposit_rows(&first.id).codes, 1);
}

/// A revoked code and the codes of an erased deposit are refused; an
/// erased deposit keeps no key or ciphertext and takes no new code.
pub fn revocation_and_erasure_stop_redemption<F: Factory>(factory: F) {
    let f = Fixture::new(factory);
    let p = f.parties();
    let mut db = f.backdoor();
    let d = deposit(&f.store, &p, "APP-1", &["risk", "device"]).unwrap();
    let platform = &p.platform.tenant_id;
    let funder = &p.funder.tenant_id;
    let redeem = |code| {
        f.store.redeem(
            &now_call(funder, "redemption.create"),
            attempt(code, Purpose::CreditApplication),
        )
    };
    let revoked = f
        .store
        .revoke_code(&now_call(platform, "code.revoke"), &d.code_ids[0])
        .unwrap();
    assert_eq!(revoked.state, CodeState::Revoked);
    let again = f
        .store
        .revoke_code(&now_call(platform, "code.revoke"), &d.code_ids[0])
        .unwrap();
    assert_eq!(
        again.state,
        CodeState::Revoked,
        "revoking again changes nothing"
    );
    assert!(matches!(
        redeem(&d.codes[0]),
        Err(StoreError::Refused(ErrorCode::CodeRevoked))
    ));

    f.store
        .erase_deposit(&now_call(platform, "deposit.erase"), &d.id)
        .unwrap();
    f.store
        .erase_deposit(&now_call(platform, "deposit.erase"), &d.id)
        .unwrap();
    assert!(matches!(
        redeem(&d.codes[1]),
        Err(StoreError::Refused(ErrorCode::CodeRevoked))
    ));
    assert_eq!(
        f.store.keks().unwrap()[0].data_keys,
        0,
        "data keys destroyed"
    );
    assert_eq!(
        db.deposit_rows(&d.id),
        DepositRows {
            deposits: 1,
            subject_filings: 1,
            codes: 2,
            ..DepositRows::default()
        }
    );
    assert!(matches!(
        f.store.issue_code(
            &now_call(platform, "code.issue"),
            &d.id,
            NewCode {
                code_id: CodeId::from_trusted("cod_late".into()),
                secret_hash: vec![0; 32],
                funder_id: funder.clone(),
                scopes: ScopeSet::single(Group::Risk),
                ttl_seconds: 60,
            },
        ),
        Err(StoreError::Refused(ErrorCode::DepositErased))
    ));
    let erasures = f
        .store
        .audit_after(&[])
        .unwrap()
        .iter()
        .filter(|e| e.record.operation == "deposit.erase")
        .count();
    assert_eq!(erasures, 1, "erasing an erased deposit is not an erasure");
    assert!(f.verified().is_ok());
}

/// Another platform's code (status, revoke), deposit (issue a code,
/// erase) or another funder's redemption (outcome) is refused as not
/// found, changes nothing, and is audited with the object's id and its
/// owner; an unknown id is refused and audited too.
pub fn refused_cross_tenant_operations_are_audited_with_the_object<F: Factory>(factory: F) {
    let f = Fixture::new(factory);
    let p = f.parties();
    let stranger = admin::add_tenant(
        &f.store,
        &p.keys.keyring,
        "cli:test",
        NewTenant::new(TenantKind::Platform, "Stranger"),
    )
    .unwrap()
    .tenant_id;
    let owner = &p.platform.tenant_id;
    let funder = &p.funder.tenant_id;
    let other_funder = &p.other_funder.tenant_id;
    let d = deposit(&f.store, &p, "APP-1", &["risk", "risk"]).unwrap();
    let r = f
        .store
        .redeem(
            &now_call(funder, "redemption.create"),
            attempt(&d.codes[1], Purpose::CreditApplication),
        )
        .unwrap();
    let code = &d.code_ids[0];
    let new_code = || NewCode {
        code_id: CodeId::from_trusted("cod_probe".into()),
        secret_hash: vec![0; 32],
        funder_id: funder.clone(),
        scopes: ScopeSet::single(Group::Risk),
        ttl_seconds: 60,
    };
    let outcome: OutcomeRequest = serde_json::from_str(r#"{"decision":"declined"}"#).unwrap();
    let unknown_code = CodeId::from_trusted("cod_unknown".into());
    let unknown_deposit = DepositId::from_trusted("dep_unknown".into());
    let unknown_redemption = RedemptionId::from_trusted("red_unknown".into());
    let marks = f.store.audit_chains().unwrap();

    let refused = |r: Result<(), StoreError>| match r {
        Err(StoreError::Refused(c)) => c,
        other => panic!("not refused: {other:?}"),
    };
    let s = &f.store;
    let probes: Vec<(&str, ErrorCode)> = vec![
        (
            "code.status",
            refused(
                s.code_status(&now_call(&stranger, "code.status"), code)
                    .map(drop),
            ),
        ),
        (
            "code.revoke",
            refused(
                s.revoke_code(&now_call(&stranger, "code.revoke"), code)
                    .map(drop),
            ),
        ),
        (
            "code.issue",
            refused(
                s.issue_code(&now_call(&stranger, "code.issue"), &d.id, new_code())
                    .map(drop),
            ),
        ),
        (
            "deposit.erase",
            refused(s.erase_deposit(&now_call(&stranger, "deposit.erase"), &d.id)),
        ),
        (
            "redemption.outcome",
            refused(
                s.report_outcome(
                    &now_call(other_funder, "redemption.outcome"),
                    &r.redemption_id,
                    &outcome,
                )
                .map(drop),
            ),
        ),
        (
            "code.status",
            refused(
                s.code_status(&now_call(owner, "code.status"), &unknown_code)
                    .map(drop),
            ),
        ),
        (
            "code.revoke",
            refused(
                s.revoke_code(&now_call(owner, "code.revoke"), &unknown_code)
                    .map(drop),
            ),
        ),
        (
            "code.issue",
            refused(
                s.issue_code(&now_call(owner, "code.issue"), &unknown_deposit, new_code())
                    .map(drop),
            ),
        ),
        (
            "deposit.erase",
            refused(s.erase_deposit(&now_call(owner, "deposit.erase"), &unknown_deposit)),
        ),
        (
            "redemption.outcome",
            refused(
                s.report_outcome(
                    &now_call(funder, "redemption.outcome"),
                    &unknown_redemption,
                    &outcome,
                )
                .map(drop),
            ),
        ),
    ];
    let expected = [
        ErrorCode::CodeNotFound,
        ErrorCode::CodeNotFound,
        ErrorCode::DepositNotFound,
        ErrorCode::DepositNotFound,
        ErrorCode::RedemptionNotFound,
    ];
    for (i, (op, code)) in probes.iter().enumerate() {
        assert_eq!(*code, expected[i % 5], "probe {i} ({op})");
    }

    // One refusal entry per probe, in order, with the object and its owner
    // when it exists.
    let entries = f.store.audit_after(&marks).unwrap();
    let got: Vec<_> = entries
        .iter()
        .map(|e| {
            let r = &e.record;
            (
                r.operation.as_str(),
                r.actor.as_str(),
                r.result.as_str(),
                r.code_id.as_deref(),
                r.deposit_id.as_deref(),
                r.redemption_id.as_deref(),
                r.subject_tenant.as_deref(),
            )
        })
        .collect();
    let (st, ow, fu, of) = (
        stranger.as_str(),
        owner.as_str(),
        funder.as_str(),
        other_funder.as_str(),
    );
    let (c, dp, rd) = (code.as_str(), d.id.as_str(), r.redemption_id.as_str());
    assert_eq!(
        got,
        [
            (
                "code.status",
                st,
                "code_not_found",
                Some(c),
                Some(dp),
                None,
                Some(ow)
            ),
            (
                "code.revoke",
                st,
                "code_not_found",
                Some(c),
                Some(dp),
                None,
                Some(ow)
            ),
            (
                "code.issue",
                st,
                "deposit_not_found",
                None,
                Some(dp),
                None,
                Some(ow)
            ),
            (
                "deposit.erase",
                st,
                "deposit_not_found",
                None,
                Some(dp),
                None,
                Some(ow)
            ),
            (
                "redemption.outcome",
                of,
                "redemption_not_found",
                None,
                None,
                Some(rd),
                Some(fu)
            ),
            ("code.status", ow, "code_not_found", None, None, None, None),
            ("code.revoke", ow, "code_not_found", None, None, None, None),
            (
                "code.issue",
                ow,
                "deposit_not_found",
                None,
                None,
                None,
                None
            ),
            (
                "deposit.erase",
                ow,
                "deposit_not_found",
                None,
                None,
                None,
                None
            ),
            (
                "redemption.outcome",
                fu,
                "redemption_not_found",
                None,
                None,
                None,
                None
            ),
        ]
    );

    // Nothing changed, and each refusal is counted.
    let status = s
        .code_status(&now_call(owner, "code.status"), code)
        .unwrap();
    assert_eq!(status.state, CodeState::Issued);
    let mut db = f.backdoor();
    assert_eq!(db.deposit_rows(&d.id).records, 1, "not erased");
    assert_eq!(db.deposit_rows(&d.id).codes, 2, "no code issued");
    let redeemed = s
        .code_status(&now_call(owner, "code.status"), &d.code_ids[1])
        .unwrap();
    assert_eq!(redeemed.outcome, None, "no outcome recorded");
    let usage = s.usage().unwrap();
    let calls = |tenant: &str, outcome: &str| {
        usage
            .iter()
            .filter(|u| u.tenant_id == tenant && u.outcome == outcome)
            .map(|u| u.calls)
            .sum::<u64>()
    };
    assert_eq!(calls(st, "code_not_found"), 2);
    assert_eq!(calls(st, "deposit_not_found"), 2);
    assert_eq!(calls(of, "redemption_not_found"), 1);
    assert_eq!(calls(ow, "code_not_found"), 2);
    assert_eq!(calls(ow, "deposit_not_found"), 2);
    assert_eq!(calls(fu, "redemption_not_found"), 1);
    assert!(f.verified().is_ok());
}

/// Purging one code or deposit at a time expires exactly the codes past
/// their deadline and shreds exactly the deposits past retention, as the
/// rules and the preview say.
pub fn purge_in_small_steps_does_what_the_rules_and_the_preview_say<F: Factory>(factory: F) {
    let f = Fixture::new(factory);
    let p = f.parties();
    let store = &f.store;
    let now = Utc.with_ymd_and_hms(2030, 6, 1, 0, 0, 0).unwrap();
    let plan = rules::purge_plan(now, 10);
    let day = Duration::days(1);
    // Past retention by a millisecond: shredded; its code long expired.
    deposit_at(
        store,
        &p,
        "old",
        plan.deposits_created_before - Duration::milliseconds(1),
        &[1],
    );
    // Past retention with a code still in time: shredded, code revoked.
    deposit_at(store, &p, "older", now - day * 20, &[30 * 86_400]);
    // Exactly at the boundary: kept; its code still in time.
    deposit_at(
        store,
        &p,
        "edge",
        plan.deposits_created_before,
        &[30 * 86_400],
    );
    // Recent: one code whose deadline is exactly now (expired), one a second later.
    deposit_at(store, &p, "new", now - day, &[86_400, 86_401]);
    assert!(rules::deposit_past_retention(now - day * 20, &plan));
    assert!(!rules::deposit_past_retention(
        plan.deposits_created_before,
        &plan
    ));

    let preview = store.purge_preview(&plan).unwrap();
    let mut done = PurgeCounts::default();
    let mut steps = 0;
    loop {
        let step = store
            .purge(&cli_call("vault.purge", now), &plan, 1)
            .unwrap();
        steps += 1;
        done.codes_expired += step.codes_expired;
        done.deposits_shredded += step.deposits_shredded;
        done.codes_revoked += step.codes_revoked;
        if step.codes_expired < 1 && step.deposits_shredded < 1 {
            break;
        }
    }

    assert_eq!(
        preview,
        PurgeCounts {
            codes_expired: 2,
            deposits_shredded: 2,
            codes_revoked: 1
        }
    );
    assert_eq!(done, preview);
    assert!(steps >= 4, "{steps}");
    assert_eq!(store.purge_preview(&plan).unwrap(), PurgeCounts::default());
    let keks = store.keks().unwrap();
    assert_eq!(
        keks[0].data_keys, 4,
        "edge and new keep their two keys each"
    );
    let mut db = f.backdoor();
    for (name, kept) in [
        ("old", false),
        ("older", false),
        ("edge", true),
        ("new", true),
    ] {
        let rows = db.deposit_rows(&DepositId::from_trusted(format!("dep_{name}")));
        assert_eq!(rows.records == 1 && rows.identities == 1, kept, "{name}");
    }
    let status = |code: &str| {
        store
            .code_status(
                &at_call(&p.platform.tenant_id, "code.status", now),
                &CodeId::from_trusted(code.into()),
            )
            .unwrap()
            .state
    };
    assert_eq!(status("cod_older0"), CodeState::Revoked);
    assert_eq!(status("cod_new0"), CodeState::Expired);
    assert_eq!(status("cod_new1"), CodeState::Issued);
    assert!(f.verified().is_ok());
}

/// Retirement counts a previous tenant secret still inside its overlap,
/// and drops it once past; nothing can be wrapped under the retired
/// version afterwards.
pub fn retire_counts_live_previous_secrets_and_drops_dead_ones<F: Factory>(factory: F) {
    let f = Fixture::new(factory);
    let (store, root) = (&f.store, &f.root);
    let keys = f.keys();
    let creds = admin::add_tenant(
        store,
        &keys.keyring,
        "cli:test",
        NewTenant::new(TenantKind::Platform, "P"),
    )
    .unwrap();
    let t0 = Utc::now();
    admin::rotate_tenant_secret(
        store,
        &keys.keyring,
        &cli_call("tenant.rotate_secret", t0),
        &creds.tenant_id,
        60,
    )
    .unwrap();
    admin::rotate_keys(store, root, "cli:test").unwrap();
    let keyring = admin::load_keyring(store, root).unwrap();
    // Move everything but the previous secret, by hand.
    let tenant = store.tenants().unwrap().remove(0);
    let mut secrets = vec![RewrappedSecret {
        secret: SecretRef::Tenant(tenant.id.clone()),
        from_version: 1,
        sealed: Sealed {
            kek_version: 2,
            bytes: keyring
                .rewrap_secret(
                    admin::TENANT_SECRET,
                    tenant.id.as_str(),
                    &admin::wrapped(&tenant.secret),
                )
                .unwrap()
                .bytes,
        },
    }];
    for s in store.sealed_secrets().unwrap() {
        secrets.push(RewrappedSecret {
            sealed: Sealed {
                kek_version: 2,
                bytes: keyring
                    .rewrap_secret(admin::VAULT_SECRET, &s.name, &admin::wrapped(&s.sealed))
                    .unwrap()
                    .bytes,
            },
            secret: SecretRef::Vault(s.name),
            from_version: 1,
        });
    }
    store
        .rewrap_secrets(&cli_call("keys.rewrap", t0), 2, secrets, "test")
        .unwrap();

    let during = store.retire_kek(&cli_call("keys.retire", t0), 1).unwrap();
    let after = store
        .retire_kek(&cli_call("keys.retire", t0 + Duration::seconds(61)), 1)
        .unwrap();

    let refusal = during.unwrap_err();
    assert_eq!(refusal.code(), "key_in_use");
    assert!(
        refusal.to_string().contains("1 previous tenant secret"),
        "{refusal}"
    );
    assert_eq!(after, Ok(true));
    assert!(store.tenants().unwrap()[0].previous_secret.is_none());
    assert!(store.keks().unwrap()[0].wrapped.is_empty());
    // The vault still opens with what is left.
    let keys = admin::load_keys(store, root).unwrap();
    assert_eq!(keys.keyring.versions(), [2]);
    let secret = admin::open_tenant_secret(&keys.keyring, &store.tenants().unwrap()[0]).unwrap();
    assert_eq!(secret.len(), 43);
    // Nothing can be wrapped under the retired version any more.
    let stale = store.rotate_tenant_secret(
        &cli_call("tenant.rotate_secret", t0),
        &creds.tenant_id,
        Sealed {
            kek_version: 1,
            bytes: vec![0; 40],
        },
        t0,
    );
    assert!(
        matches!(stale, Err(StoreError::Unavailable(_))),
        "{stale:?}"
    );
    assert!(f.verified().is_ok());
}

/// A rewrap in batches of one moves every data key onto the active
/// version; the old one retires and every deposit still opens.
pub fn rewrap_moves_every_key_and_the_vault_still_opens<F: Factory>(factory: F) {
    let f = Fixture::new(factory);
    let p = f.parties();
    let d = deposit(&f.store, &p, "APP-1", &["applicant,device"]).unwrap();
    admin::rotate_keys(&f.store, &f.root, "cli:test").unwrap();
    let keyring = admin::load_keyring(&f.store, &f.root).unwrap();
    let report = admin::rewrap(
        &f.store,
        &keyring,
        &cli_call("keys.rewrap", Utc::now()),
        admin::RewrapOptions {
            batch_size: 1,
            wait_for_servers: false,
        },
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(report.data_keys_rewrapped, 2);
    assert_eq!(report.data_keys_remaining, 0);
    assert_eq!(
        f.store
            .retire_kek(&cli_call("keys.retire", Utc::now()), 1)
            .unwrap(),
        Ok(true)
    );
    let p = super::fixture::Parties {
        keys: f.keys(),
        ..p
    };
    let r = f
        .store
        .redeem(
            &now_call(&p.funder.tenant_id, "redemption.create"),
            attempt(&d.codes[0], Purpose::CreditApplication),
        )
        .unwrap();
    assert_eq!(open(&p, &r).len(), 2);
    assert!(f.verified().is_ok());
}

/// A rekey that names a keyring no longer stored changes nothing; one
/// that matches moves the keyring under the new root key.
pub fn a_rekey_against_a_changed_keyring_changes_nothing<F: Factory>(factory: F) {
    let f = Fixture::new(factory);
    let (store, root) = (&f.store, &f.root);
    let new = RootKey::generate(&SystemRandom::new()).unwrap();
    let g0 = store.generation().unwrap();
    let stale = vec![crate::RekeyedKek {
        version: 1,
        old_wrapped: vec![0; 60],
        new_wrapped: vec![1; 60],
    }];

    let refused = store.rekey_root(&cli_call("root.rekey", Utc::now()), stale, "test");
    assert!(matches!(refused, Err(StoreError::Invalid(_))));
    assert_eq!(store.generation().unwrap(), g0, "nothing changed");
    assert!(admin::load_keys(store, root).is_ok());

    let versions =
        admin::rekey_root(store, root, &new, &cli_call("root.rekey", Utc::now())).unwrap();
    assert_eq!(versions, [1]);
    assert!(store.generation().unwrap() > g0);
    assert!(matches!(
        admin::load_keys(store, root),
        Err(admin::AdminError::WrongRootKey)
    ));
    assert!(admin::load_keys(store, &new).is_ok());
}

/// Audit queries filter by time and page by seq; usage queries by day and
/// tenant.
pub fn audit_and_usage_queries_filter<F: Factory>(factory: F) {
    let f = Fixture::new(factory);
    let chain = super::fixture::chain_of(&f.store);
    let t = Utc.with_ymd_and_hms(2030, 1, 2, 3, 4, 5).unwrap();
    let x = TenantId::from_trusted("ten_x".into());
    for (i, op) in ["a.one", "a.two", "a.three"].into_iter().enumerate() {
        let c = at_call(&x, op, t + Duration::days(i as i64));
        f.store.record_refusal(&c, ErrorCode::RateLimited).unwrap();
    }
    let q = AuditQuery {
        chain,
        after_seq: 0,
        since: Some(t + Duration::days(1)),
        until: Some(t + Duration::days(2)),
        limit: 10,
    };
    let hits = f.store.audit_query(&q).unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].record.operation, "a.two");
    assert_eq!(hits[0].chain, chain);
    let all = f
        .store
        .audit_query(&AuditQuery {
            chain,
            limit: 100,
            ..AuditQuery::default()
        })
        .unwrap();
    let after_first = f
        .store
        .audit_query(&AuditQuery {
            chain,
            after_seq: all[0].seq,
            limit: 2,
            ..AuditQuery::default()
        })
        .unwrap();
    assert_eq!(after_first, all[1..3], "pages by seq");
    let usage = f
        .store
        .usage_query(&UsageQuery {
            from: Some(chrono::NaiveDate::from_ymd_opt(2030, 1, 3).unwrap()),
            to: None,
            tenant: Some(x.clone()),
        })
        .unwrap();
    assert_eq!(
        usage
            .iter()
            .map(|u| (
                u.day.as_str(),
                u.operation.as_str(),
                u.outcome.as_str(),
                u.calls
            ))
            .collect::<Vec<_>>(),
        [
            ("2030-01-03", "a.two", "rate_limited", 1),
            ("2030-01-04", "a.three", "rate_limited", 1)
        ]
    );
    let until = f
        .store
        .usage_query(&UsageQuery {
            from: None,
            to: Some(chrono::NaiveDate::from_ymd_opt(2030, 1, 2).unwrap()),
            tenant: None,
        })
        .unwrap();
    assert_eq!(until.len(), 1);
    assert_eq!(until[0].operation, "a.one");
    assert_eq!(f.store.audit_entries(chain, 1, 2).unwrap().len(), 2);
}
