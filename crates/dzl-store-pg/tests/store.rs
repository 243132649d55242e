//! The behaviour of `dzl-store`'s own tests (`crates/dzl-store/tests/store.rs`)
//! against PostgreSQL — init, tenants, rotation, audit verification, the
//! append-only audit table, purge, retire, rekey — plus the request path
//! with real sealed data: deposit, redeem, status, outcome, subject access,
//! erasure. Each test gets its own fresh database; without
//! `DZL_TEST_PG_URL` each says SKIPPED and returns.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use chrono::{DateTime, Duration, TimeZone, Utc};
use common::{deposit, fresh, now_call, open, parties, APPLICANT, RISK};
use dzl_crypto::RootKey;
use dzl_store::admin::{self, NewTenant};
use dzl_store::{
    rules, Call, NewCode, NewDeposit, PurgeCounts, RedeemAttempt, Sealed, Store, StoreError,
    TenantKind, TenantState,
};
use dzl_types::wire::{CodeState, Decision, OutcomeRequest};
use dzl_types::{
    CodeId, DepositId, ErrorCode, Group, Purpose, RedemptionId, ScopeSet, SubjectRef, TenantId,
};

#[test]
fn init_then_tenants_and_a_verifiable_audit_chain() {
    let url = pg_url_or_skip!();
    let f = fresh(&url);
    let store = &f.store;
    assert!(
        admin::init(store, &f.root, "cli:test").is_err(),
        "a second init is refused"
    );
    let keys = admin::load_keys(store, &f.root).unwrap();
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
    // init, tenant.add, tenant.suspend
    assert_eq!(store.verify_audit(&mut |_| {}).unwrap(), Ok(3));
    assert_eq!(store.audit_head_seq().unwrap(), 3);
    store.ping().unwrap();
}

#[test]
fn wrong_root_key_does_not_open_the_keyring() {
    let url = pg_url_or_skip!();
    let f = fresh(&url);
    let other = RootKey::generate(&dzl_crypto::SystemRandom::new()).unwrap();
    assert!(matches!(
        admin::load_keys(&f.store, &other),
        Err(admin::AdminError::WrongRootKey)
    ));
}

#[test]
fn rotation_keeps_old_versions_for_decryption() {
    let url = pg_url_or_skip!();
    let f = fresh(&url);
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
    // Another replica sees the rotation.
    let replica = f.replica();
    assert_eq!(
        admin::load_keyring(&replica, root)
            .unwrap()
            .active_version(),
        2
    );
    // A stale rotation (someone else took version 3 first) is refused.
    assert_eq!(admin::rotate_keys(&replica, root, "cli:test").unwrap(), 3);
    assert!(matches!(
        store.rotate_kek("cli:test", 3, vec![0; 60]),
        Err(StoreError::Invalid(_))
    ));
}

#[test]
fn audit_verification_finds_an_altered_entry() {
    let url = pg_url_or_skip!();
    let f = fresh(&url);
    admin::rotate_keys(&f.store, &f.root, "cli:test").unwrap();
    admin::rotate_keys(&f.store, &f.root, "cli:test").unwrap();
    assert_eq!(f.store.verify_audit(&mut |_| {}).unwrap(), Ok(3));
    // An attacker with the owner's rights: disable the guard trigger, edit entry 2.
    let mut sql = f.sql();
    sql.batch_execute(
        "ALTER TABLE dzl.audit DISABLE TRIGGER audit_no_update;
         UPDATE dzl.audit SET detail = 'version 9 active' WHERE seq = 2;",
    )
    .unwrap();
    let err = f.store.verify_audit(&mut |_| {}).unwrap().unwrap_err();
    assert_eq!(err.seq(), 2, "{err}");
}

#[test]
fn a_truncated_audit_tail_is_found() {
    let url = pg_url_or_skip!();
    let f = fresh(&url);
    admin::rotate_keys(&f.store, &f.root, "cli:test").unwrap();
    let mut sql = f.sql();
    sql.batch_execute(
        "ALTER TABLE dzl.audit DISABLE TRIGGER audit_no_delete;
         DELETE FROM dzl.audit WHERE seq = 2;",
    )
    .unwrap();
    let err = f.store.verify_audit(&mut |_| {}).unwrap().unwrap_err();
    assert_eq!(err.seq(), 2, "{err}");
}

#[test]
fn the_audit_trail_refuses_updates_and_deletes() {
    let url = pg_url_or_skip!();
    let f = fresh(&url);
    let mut sql = f.sql();
    for statement in [
        "DELETE FROM dzl.audit",
        "UPDATE dzl.audit SET actor = 'x'",
        "TRUNCATE dzl.audit",
    ] {
        let err = sql.batch_execute(statement).unwrap_err();
        assert!(
            err.to_string().contains("append-only")
                || err
                    .as_db_error()
                    .is_some_and(|d| d.message().contains("append-only")),
            "{statement}: {err}"
        );
    }
    assert_eq!(f.store.verify_audit(&mut |_| {}).unwrap(), Ok(1));
}

#[test]
fn deposit_redeem_once_with_real_sealed_groups() {
    let url = pg_url_or_skip!();
    let f = fresh(&url);
    let p = parties(&f);
    let (dep, codes) = deposit(&f.store, &p, "APP-1", &["applicant,risk"]).unwrap();
    let funder = &p.funder.tenant_id;
    let attempt = |code: &dzl_types::AuthCode, purpose| RedeemAttempt {
        code: code.clone(),
        purpose,
        redemption_id: RedemptionId::from_trusted(
            dzl_crypto::new_id("red", &dzl_crypto::SystemRandom::new()).unwrap(),
        ),
    };

    // The wrong purpose is refused and audited; the code stays usable.
    let wrong = f.store.redeem(
        &now_call(funder, "redemption.create"),
        attempt(&codes[0], Purpose::Drawdown),
    );
    assert!(matches!(
        wrong,
        Err(StoreError::Refused(ErrorCode::PurposeMismatch))
    ));
    // Another funder presenting it: not found.
    let stranger = TenantId::from_trusted("ten_other".into());
    let stolen = f.store.redeem(
        &now_call(&stranger, "redemption.create"),
        attempt(&codes[0], Purpose::CreditApplication),
    );
    assert!(matches!(
        stolen,
        Err(StoreError::Refused(ErrorCode::CodeNotFound))
    ));

    let r = f
        .store
        .redeem(
            &now_call(funder, "redemption.create"),
            attempt(&codes[0], Purpose::CreditApplication),
        )
        .unwrap();
    assert_eq!(r.deposit_id, dep);
    assert_eq!(r.external_ref, "APP-1");
    let released = open(&p, &r);
    assert_eq!(
        released,
        [
            (Group::Applicant, APPLICANT.to_owned()),
            (Group::Risk, RISK.to_owned())
        ],
        "only the granted groups, decrypted"
    );

    let again = f.store.redeem(
        &now_call(funder, "redemption.create"),
        attempt(&codes[0], Purpose::CreditApplication),
    );
    assert!(matches!(
        again,
        Err(StoreError::Refused(ErrorCode::CodeAlreadyRedeemed))
    ));

    // The platform sees it redeemed, then the funder's decision.
    let platform = &p.platform.tenant_id;
    let outcome: OutcomeRequest =
        serde_json::from_str(r#"{"decision":"approved","amount_fen":500000}"#).unwrap();
    f.store
        .report_outcome(
            &now_call(funder, "redemption.outcome"),
            &r.redemption_id,
            &outcome,
        )
        .unwrap();
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
    let index = dzl_crypto::blind_index(
        &p.keys.subject_index,
        "subject",
        b"resident_id\n11010519491231002X",
    );
    let report = f
        .store
        .subject_access(
            &now_call(&TenantId::from_trusted("ten_op".into()), "subject.access"),
            &index,
        )
        .unwrap();
    assert_eq!(report.deposits.len(), 1);
    assert_eq!(report.redemptions.len(), 1);

    // Every attempt is on the chain; usage counts refusals by code.
    assert!(f.store.verify_audit(&mut |_| {}).unwrap().is_ok());
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
}

#[test]
fn identity_fields_live_in_their_own_schema() {
    let url = pg_url_or_skip!();
    let f = fresh(&url);
    let p = parties(&f);
    let (dep, _) = deposit(&f.store, &p, "APP-1", &[]).unwrap();
    let mut sql = f.sql();
    let groups: Vec<String> = sql
        .query(
            "SELECT grp FROM dzl.records WHERE deposit_id = $1 ORDER BY grp",
            &[&dep.as_str()],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(groups, ["device", "risk"]);
    let identities: i64 = sql
        .query_one(
            "SELECT count(*) FROM dzl_identity.identities WHERE deposit_id = $1",
            &[&dep.as_str()],
        )
        .unwrap()
        .get(0);
    assert_eq!(identities, 1);
    // The schema itself refuses an applicant group among the others.
    assert!(sql
        .execute(
            "INSERT INTO dzl.records (deposit_id, grp, envelope) VALUES ('dep_x', 'applicant', '\\x00')",
            &[],
        )
        .is_err());
}

#[test]
fn a_duplicate_external_ref_is_refused_and_stores_nothing() {
    let url = pg_url_or_skip!();
    let f = fresh(&url);
    let p = parties(&f);
    let (first, _) = deposit(&f.store, &p, "APP-1", &["risk"]).unwrap();
    let seq = f.store.audit_head_seq().unwrap();
    let dup = deposit(&f.store, &p, "APP-1", &["risk"]);
    // Refused, naming the platform's first deposit.
    assert!(
        matches!(&dup, Err(StoreError::DuplicateExternalRef(existing)) if *existing == first),
        "{dup:?}"
    );
    assert_eq!(f.store.audit_head_seq().unwrap(), seq, "no trace");
    let mut sql = f.sql();
    let n: i64 = sql
        .query_one("SELECT count(*) FROM dzl.codes", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

#[test]
fn revocation_and_erasure_stop_redemption() {
    let url = pg_url_or_skip!();
    let f = fresh(&url);
    let p = parties(&f);
    let (dep, codes) = deposit(&f.store, &p, "APP-1", &["risk", "device"]).unwrap();
    let platform = &p.platform.tenant_id;
    let funder = &p.funder.tenant_id;
    let redeem = |code: &dzl_types::AuthCode| {
        f.store.redeem(
            &now_call(funder, "redemption.create"),
            RedeemAttempt {
                code: code.clone(),
                purpose: Purpose::CreditApplication,
                redemption_id: RedemptionId::from_trusted(format!("red_{}", code.row())),
            },
        )
    };
    let first_id: CodeId = f
        .store
        .audit_entries(0, 100)
        .unwrap()
        .iter()
        .filter(|e| e.record.operation == "code.issue")
        .map(|e| CodeId::from_trusted(e.record.code_id.clone().unwrap()))
        .next()
        .unwrap();
    let revoked = f
        .store
        .revoke_code(&now_call(platform, "code.revoke"), &first_id)
        .unwrap();
    assert_eq!(revoked.state, CodeState::Revoked);
    assert!(matches!(
        redeem(&codes[0]),
        Err(StoreError::Refused(ErrorCode::CodeRevoked))
    ));

    f.store
        .erase_deposit(&now_call(platform, "deposit.erase"), &dep)
        .unwrap();
    assert!(matches!(
        redeem(&codes[1]),
        Err(StoreError::Refused(ErrorCode::CodeRevoked))
    ));
    let keks = f.store.keks().unwrap();
    assert_eq!(keks[0].data_keys, 0, "data keys destroyed");
    assert!(matches!(
        f.store.issue_code(
            &now_call(platform, "code.issue"),
            &dep,
            NewCode {
                code_id: CodeId::from_trusted("cod_late".into()),
                secret_hash: [0; 32],
                funder_id: funder.clone(),
                scopes: ScopeSet::single(Group::Risk),
                ttl_seconds: 60,
            },
            &[Purpose::CreditApplication],
        ),
        Err(StoreError::Refused(ErrorCode::DepositErased))
    ));
    assert!(f.store.verify_audit(&mut |_| {}).unwrap().is_ok());
}

// ---- the operator lifecycle ----

fn call(op: &'static str, now: DateTime<Utc>) -> Call {
    Call {
        actor: "ten_p".into(),
        operation: op,
        now,
    }
}

/// Stores a deposit made at `at` with codes of the given lifetimes.
fn deposit_at(store: &dyn Store, root: &RootKey, name: &str, at: DateTime<Utc>, ttls: &[u32]) {
    let keyring = admin::load_keyring(store, root).unwrap();
    let rng = dzl_crypto::SystemRandom::new();
    let id = DepositId::from_trusted(format!("dep_{name}"));
    let wrap = |kind: &str| {
        let w = keyring
            .wrap_data_key(
                &dzl_crypto::DataKey::generate(&rng).unwrap(),
                id.as_str(),
                kind,
            )
            .unwrap();
        Sealed {
            kek_version: w.kek_version,
            bytes: w.bytes,
        }
    };
    let consent_end = at + Duration::days(400);
    let consent = serde_json::json!({
        "consent_id": "C", "granted_at": at, "expires_at": consent_end,
        "scopes": ["applicant", "risk"], "evidence_sha256": "a".repeat(64),
    });
    let codes = ttls
        .iter()
        .enumerate()
        .map(|(i, ttl)| NewCode {
            code_id: CodeId::from_trusted(format!("cod_{name}{i}")),
            secret_hash: [i as u8; 32],
            funder_id: TenantId::from_trusted("ten_f".into()),
            scopes: ScopeSet::parse_list("risk").unwrap(),
            ttl_seconds: *ttl,
        })
        .collect();
    store
        .create_deposit(NewDeposit {
            call: call("deposit.create", at),
            id: id.clone(),
            external_ref: name.into(),
            purpose: Purpose::Drawdown,
            consent_json: consent.to_string(),
            consent_expires: consent_end,
            groups: ScopeSet::parse_list("applicant,risk").unwrap(),
            subject_index: name.into(),
            subject_ref: SubjectRef::from_trusted(format!("sub_{name}")),
            records_key: wrap("records"),
            records: vec![(Group::Risk, vec![1, 2, 3])],
            identity_key: wrap("identity"),
            identity: vec![4, 5, 6],
            codes,
        })
        .unwrap();
}

#[test]
fn purge_in_small_steps_does_exactly_what_the_rules_and_the_preview_say() {
    let url = pg_url_or_skip!();
    let f = fresh(&url);
    let (store, root) = (&f.store, &f.root);
    let now = Utc.with_ymd_and_hms(2030, 6, 1, 0, 0, 0).unwrap();
    let plan = rules::purge_plan(now, 10);
    let day = Duration::days(1);
    // Past retention by a millisecond: shredded; its code long expired.
    deposit_at(
        store,
        root,
        "old",
        plan.deposits_created_before - Duration::milliseconds(1),
        &[1],
    );
    // Past retention with a code still in time: shredded, code revoked.
    deposit_at(store, root, "older", now - day * 20, &[30 * 86_400]);
    // Exactly at the boundary: kept; its code still in time.
    deposit_at(
        store,
        root,
        "edge",
        plan.deposits_created_before,
        &[30 * 86_400],
    );
    // Recent: one code whose deadline is exactly now (expired), one a second later.
    deposit_at(store, root, "new", now - day, &[86_400, 86_401]);
    assert!(rules::deposit_past_retention(now - day * 20, &plan));
    assert!(!rules::deposit_past_retention(
        plan.deposits_created_before,
        &plan
    ));

    let preview = store.purge_preview(&plan).unwrap();
    let mut done = PurgeCounts::default();
    let mut steps = 0;
    loop {
        let step = store.purge(&call("vault.purge", now), &plan, 1).unwrap();
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
    assert!(store.verify_audit(&mut |_| {}).unwrap().is_ok());
}

#[test]
fn retire_counts_live_previous_secrets_and_drops_dead_ones() {
    let url = pg_url_or_skip!();
    let f = fresh(&url);
    let (store, root) = (&f.store, &f.root);
    let keys = admin::load_keys(store, root).unwrap();
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
        &call("tenant.rotate_secret", t0),
        &creds.tenant_id,
        60,
    )
    .unwrap();
    admin::rotate_keys(store, root, "cli:test").unwrap();
    let keyring = admin::load_keyring(store, root).unwrap();
    // Move everything but the previous secret, by hand.
    let tenant = store.tenants().unwrap().remove(0);
    let mut secrets = vec![dzl_store::RewrappedSecret {
        secret: dzl_store::SecretRef::Tenant(tenant.id.clone()),
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
        secrets.push(dzl_store::RewrappedSecret {
            sealed: Sealed {
                kek_version: 2,
                bytes: keyring
                    .rewrap_secret(admin::VAULT_SECRET, &s.name, &admin::wrapped(&s.sealed))
                    .unwrap()
                    .bytes,
            },
            secret: dzl_store::SecretRef::Vault(s.name),
            from_version: 1,
        });
    }
    store
        .rewrap_secrets(&call("keys.rewrap", t0), 2, secrets, "test")
        .unwrap();

    let during = store.retire_kek(&call("keys.retire", t0), 1).unwrap();
    let after = store
        .retire_kek(&call("keys.retire", t0 + Duration::seconds(61)), 1)
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
        &call("tenant.rotate_secret", t0),
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
}

#[test]
fn rewrap_moves_every_key_and_the_vault_still_opens() {
    let url = pg_url_or_skip!();
    let f = fresh(&url);
    let p = parties(&f);
    let (_, codes) = deposit(&f.store, &p, "APP-1", &["applicant,device"]).unwrap();
    admin::rotate_keys(&f.store, &f.root, "cli:test").unwrap();
    let keyring = admin::load_keyring(&f.store, &f.root).unwrap();
    let report = admin::rewrap(
        &f.store,
        &keyring,
        &call("keys.rewrap", Utc::now()),
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
            .retire_kek(&call("keys.retire", Utc::now()), 1)
            .unwrap(),
        Ok(true)
    );
    let p = common::Parties {
        keys: admin::load_keys(&f.store, &f.root).unwrap(),
        ..p
    };
    let r = f
        .store
        .redeem(
            &now_call(&p.funder.tenant_id, "redemption.create"),
            RedeemAttempt {
                code: codes[0].clone(),
                purpose: Purpose::CreditApplication,
                redemption_id: RedemptionId::from_trusted("red_1".into()),
            },
        )
        .unwrap();
    assert_eq!(open(&p, &r).len(), 2);
    assert!(f.store.verify_audit(&mut |_| {}).unwrap().is_ok());
}

#[test]
fn a_rekey_against_a_changed_keyring_changes_nothing() {
    let url = pg_url_or_skip!();
    let f = fresh(&url);
    let (store, root) = (&f.store, &f.root);
    let new = RootKey::generate(&dzl_crypto::SystemRandom::new()).unwrap();
    let g0 = store.generation().unwrap();
    let stale = vec![dzl_store::RekeyedKek {
        version: 1,
        old_wrapped: vec![0; 60],
        new_wrapped: vec![1; 60],
    }];

    let refused = store.rekey_root(&call("root.rekey", Utc::now()), stale, "test");
    let versions = admin::rekey_root(store, root, &new, &call("root.rekey", Utc::now())).unwrap();

    assert!(matches!(refused, Err(StoreError::Invalid(_))));
    assert_eq!(versions, [1]);
    assert!(store.generation().unwrap() > g0);
    assert!(matches!(
        admin::load_keys(store, root),
        Err(admin::AdminError::WrongRootKey)
    ));
    assert!(admin::load_keys(store, &new).is_ok());
}

#[test]
fn audit_and_usage_queries_filter_like_sqlite() {
    let url = pg_url_or_skip!();
    let f = fresh(&url);
    let t = Utc.with_ymd_and_hms(2030, 1, 2, 3, 4, 5).unwrap();
    for (i, op) in ["a.one", "a.two", "a.three"].into_iter().enumerate() {
        let c = Call {
            actor: "ten_x".into(),
            operation: op,
            now: t + Duration::days(i as i64),
        };
        f.store.record_refusal(&c, ErrorCode::RateLimited).unwrap();
    }
    let q = dzl_store::AuditQuery {
        after_seq: 0,
        since: Some(t + Duration::days(1)),
        until: Some(t + Duration::days(2)),
        limit: 10,
    };
    let hits = f.store.audit_query(&q).unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].record.operation, "a.two");
    let usage = f
        .store
        .usage_query(&dzl_store::UsageQuery {
            from: Some(chrono::NaiveDate::from_ymd_opt(2030, 1, 3).unwrap()),
            to: None,
            tenant: Some(TenantId::from_trusted("ten_x".into())),
        })
        .unwrap();
    assert_eq!(
        usage.iter().map(|u| u.day.as_str()).collect::<Vec<_>>(),
        ["2030-01-03", "2030-01-04"]
    );
    assert_eq!(f.store.audit_entries(1, 2).unwrap().len(), 2);
}

#[test]
fn a_long_chain_verifies_page_by_page() {
    let url = pg_url_or_skip!();
    let f = fresh(&url);
    // 12,000 well-chained entries written directly, more than two pages.
    let head = f.store.audit_entries(0, 10).unwrap().pop().unwrap();
    let (mut seq, mut hash) = (head.seq, head.hash);
    let mut sql = f.sql();
    let mut tx = sql.transaction().unwrap();
    let insert = tx
        .prepare(
            "INSERT INTO dzl.audit (seq, at, actor, operation, result, prev_hash, hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .unwrap();
    for i in 0..12_000 {
        let e = dzl_audit::chain(
            seq,
            &hash,
            dzl_audit::AuditRecord {
                at: "2030-01-01T00:00:00.000Z".into(),
                actor: format!("cli:{i}"),
                operation: "audit.verify".into(),
                result: "ok".into(),
                ..Default::default()
            },
        );
        let r = &e.record;
        tx.execute(
            &insert,
            &[
                &e.seq,
                &r.at,
                &r.actor,
                &r.operation,
                &r.result,
                &e.prev_hash,
                &e.hash,
            ],
        )
        .unwrap();
        (seq, hash) = (e.seq, e.hash);
    }
    tx.execute(
        "UPDATE dzl.audit_head SET seq = $1, hash = $2 WHERE id = 1",
        &[&seq, &hash],
    )
    .unwrap();
    tx.commit().unwrap();
    let mut seen = 0;
    assert_eq!(f.store.verify_audit(&mut |s| seen = s).unwrap(), Ok(12_001));
    assert_eq!(seen, 12_001);
    // One altered entry deep in the third page is found.
    sql.batch_execute(
        "ALTER TABLE dzl.audit DISABLE TRIGGER audit_no_update;
         UPDATE dzl.audit SET actor = 'cli:mallory' WHERE seq = 11000;",
    )
    .unwrap();
    let err = f.store.verify_audit(&mut |_| {}).unwrap().unwrap_err();
    assert_eq!(err.seq(), 11_000, "{err}");
}
