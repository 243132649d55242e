//! The store's library functions that `dzlctl` calls: init, tenants, key
//! rotation, audit verification — against a real SQLite store in a
//! temporary directory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use dzl_crypto::RootKey;
use dzl_store::admin::{self, NewTenant};
use dzl_store::{SqliteStore, Store, TenantKind, TenantState};

fn fresh() -> (tempfile::TempDir, SqliteStore, RootKey) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let root = RootKey::generate(&dzl_crypto::SystemRandom::new()).unwrap();
    admin::init(&store, &root, "cli:test").unwrap();
    (dir, store, root)
}

#[test]
fn init_then_tenants_and_a_verifiable_audit_chain() {
    let (_dir, store, root) = fresh();
    assert!(
        admin::init(&store, &root, "cli:test").is_err(),
        "a second init is refused"
    );
    let keys = admin::load_keys(&store, &root).unwrap();
    let creds = admin::add_tenant(
        &store,
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
}

#[test]
fn wrong_root_key_does_not_open_the_keyring() {
    let (_dir, store, _root) = fresh();
    let other = RootKey::generate(&dzl_crypto::SystemRandom::new()).unwrap();
    assert!(matches!(
        admin::load_keys(&store, &other),
        Err(admin::AdminError::WrongRootKey)
    ));
}

#[test]
fn rotation_keeps_old_versions_for_decryption() {
    let (_dir, store, root) = fresh();
    let before = admin::load_keyring(&store, &root).unwrap();
    let sealed = before.seal_secret("t", "x", b"payload").unwrap();
    let g0 = store.generation().unwrap();
    assert_eq!(admin::rotate_keys(&store, &root, "cli:test").unwrap(), 2);
    assert!(
        store.generation().unwrap() > g0,
        "a running server must notice"
    );
    let after = admin::load_keyring(&store, &root).unwrap();
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
}

#[test]
fn audit_verification_finds_an_altered_entry() {
    let (dir, store, root) = fresh();
    admin::rotate_keys(&store, &root, "cli:test").unwrap();
    admin::rotate_keys(&store, &root, "cli:test").unwrap();
    assert_eq!(store.verify_audit(&mut |_| {}).unwrap(), Ok(3));
    drop(store);
    // An attacker with write access to the file: drop the guard trigger, edit entry 2.
    let conn = rusqlite::Connection::open(dir.path().join("vault.db")).unwrap();
    conn.execute_batch(
        "DROP TRIGGER audit_no_update; UPDATE audit SET detail = 'version 9 active' WHERE seq = 2;",
    )
    .unwrap();
    drop(conn);
    let store = SqliteStore::open(dir.path()).unwrap();
    let err = store.verify_audit(&mut |_| {}).unwrap().unwrap_err();
    assert_eq!(err.seq(), 2, "{err}");
}

#[test]
fn the_audit_trail_refuses_updates_and_deletes() {
    let (dir, store, _root) = fresh();
    drop(store);
    let conn = rusqlite::Connection::open(dir.path().join("vault.db")).unwrap();
    assert!(conn.execute("DELETE FROM audit", []).is_err());
    assert!(conn.execute("UPDATE audit SET actor = 'x'", []).is_err());
}

// ---- the operator lifecycle ----

use chrono::{DateTime, Duration, TimeZone, Utc};
use dzl_store::{rules, Call, NewCode, NewDeposit, PurgeCounts, Sealed};
use dzl_types::{CodeId, DepositId, Purpose, ScopeSet, SubjectRef, TenantId};

fn call(op: &'static str, now: DateTime<Utc>) -> Call {
    Call {
        actor: "ten_p".into(),
        operation: op,
        now,
    }
}

/// Stores a deposit made at `at` with codes of the given lifetimes.
fn deposit(store: &SqliteStore, root: &RootKey, name: &str, at: DateTime<Utc>, ttls: &[u32]) {
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
            records: vec![(dzl_types::Group::Risk, vec![1, 2, 3])],
            identity_key: wrap("identity"),
            identity: vec![4, 5, 6],
            codes,
        })
        .unwrap();
}

#[test]
fn purge_in_small_steps_does_exactly_what_the_rules_and_the_preview_say() {
    let (_dir, store, root) = fresh();
    let now = Utc.with_ymd_and_hms(2030, 6, 1, 0, 0, 0).unwrap();
    let plan = rules::purge_plan(now, 10);
    let day = Duration::days(1);
    // Past retention by a millisecond: shredded; its code long expired.
    deposit(
        &store,
        &root,
        "old",
        plan.deposits_created_before - Duration::milliseconds(1),
        &[1],
    );
    // Past retention with a code still in time: shredded, code revoked.
    deposit(&store, &root, "older", now - day * 20, &[30 * 86_400]);
    // Exactly at the boundary: kept; its code still in time.
    deposit(
        &store,
        &root,
        "edge",
        plan.deposits_created_before,
        &[30 * 86_400],
    );
    // Recent: one code whose deadline is exactly now (expired), one a second later.
    deposit(&store, &root, "new", now - day, &[86_400, 86_401]);
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
    let (_dir, store, root) = fresh();
    let keys = admin::load_keys(&store, &root).unwrap();
    let creds = admin::add_tenant(
        &store,
        &keys.keyring,
        "cli:test",
        NewTenant::new(TenantKind::Platform, "P"),
    )
    .unwrap();
    let t0 = Utc::now();
    admin::rotate_tenant_secret(
        &store,
        &keys.keyring,
        &call("tenant.rotate_secret", t0),
        &creds.tenant_id,
        60,
    )
    .unwrap();
    admin::rotate_keys(&store, &root, "cli:test").unwrap();
    let keyring = admin::load_keyring(&store, &root).unwrap();
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
    let keys = admin::load_keys(&store, &root).unwrap();
    assert_eq!(keys.keyring.versions(), [2]);
    let secret = admin::open_tenant_secret(&keys.keyring, &store.tenants().unwrap()[0]).unwrap();
    assert_eq!(secret.len(), 43);
}

#[test]
fn a_rekey_against_a_changed_keyring_changes_nothing() {
    let (_dir, store, root) = fresh();
    let new = RootKey::generate(&dzl_crypto::SystemRandom::new()).unwrap();
    let g0 = store.generation().unwrap();
    let stale = vec![dzl_store::RekeyedKek {
        version: 1,
        old_wrapped: vec![0; 60],
        new_wrapped: vec![1; 60],
    }];

    let refused = store.rekey_root(&call("root.rekey", Utc::now()), stale, "test");
    let versions = admin::rekey_root(&store, &root, &new, &call("root.rekey", Utc::now())).unwrap();

    assert!(matches!(refused, Err(dzl_store::StoreError::Invalid(_))));
    assert_eq!(versions, [1]);
    assert!(store.generation().unwrap() > g0);
    assert!(matches!(
        admin::load_keys(&store, &root),
        Err(admin::AdminError::WrongRootKey)
    ));
    assert!(admin::load_keys(&store, &new).is_ok());
}

// ---- what a crash leaves half done between vault.db and identity.db ----

/// The store's audit entries after `after`, as (operation, actor, deposit id).
fn entries_after(store: &SqliteStore, after: i64) -> Vec<(String, String, Option<String>)> {
    store
        .audit_entries(after, 100)
        .unwrap()
        .into_iter()
        .map(|e| (e.record.operation, e.record.actor, e.record.deposit_id))
        .collect()
}

/// An entry the store wrote by itself about `deposit`, as [`entries_after`] lists it.
fn by_system(operation: &str, deposit: &str) -> (String, String, Option<String>) {
    (operation.into(), "system".into(), Some(deposit.into()))
}

/// Runs `sql` on one of the store's files directly (the store must be
/// closed), then dies with it open, as a crash would: the WAL keeps its
/// frames, so the next open knows the last writer did not close.
fn crash_after(dir: &std::path::Path, file: &str, sql: &str) {
    let conn = rusqlite::Connection::open(dir.join(file)).unwrap();
    conn.execute_batch(sql).unwrap();
    std::mem::forget(conn);
}

/// A crash that left every write whole.
const A_WHOLE_WRITE: &str = "UPDATE meta SET value = value WHERE key = 'generation'";

fn one<T: rusqlite::types::FromSql>(dir: &std::path::Path, file: &str, sql: &str) -> T {
    let conn = rusqlite::Connection::open(dir.join(file)).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[test]
fn a_deposit_whose_identity_never_committed_is_voided_as_the_store_opens() {
    let (dir, store, root) = fresh();
    let now = Utc::now();
    deposit(&store, &root, "kept", now, &[3600]);
    deposit(&store, &root, "half", now, &[3600, 7200]);
    let head = store.audit_head_seq().unwrap();
    drop(store);
    // Killed between the two commits: vault.db has the deposit, identity.db not.
    crash_after(
        dir.path(),
        "identity.db",
        "DELETE FROM identities WHERE deposit_id = 'dep_half'",
    );

    let store = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(
        entries_after(&store, head),
        [by_system("deposit.void", "dep_half")]
    );
    assert!(store.verify_audit(&mut |_| {}).unwrap().is_ok());
    let head = store.audit_head_seq().unwrap();
    drop(store);
    let state = |id: &str| -> String {
        one(
            dir.path(),
            "vault.db",
            &format!("SELECT state FROM deposits WHERE id = '{id}'"),
        )
    };
    assert_eq!(state("dep_half"), "erased");
    assert_eq!(state("dep_kept"), "active");
    let left: i64 = one(
        dir.path(),
        "vault.db",
        "SELECT (SELECT count(*) FROM data_keys WHERE deposit_id = 'dep_half')
              + (SELECT count(*) FROM records WHERE deposit_id = 'dep_half')
              + (SELECT count(*) FROM codes WHERE deposit_id = 'dep_half' AND state <> 'revoked')",
    );
    assert_eq!(left, 0, "no key, ciphertext or live code of it is left");
    let kept: i64 = one(
        dir.path(),
        "identity.db",
        "SELECT count(*) FROM identities WHERE deposit_id = 'dep_kept'",
    );
    assert_eq!(kept, 1);

    // Mended once: after another crash, opening finds nothing and writes nothing.
    crash_after(dir.path(), "vault.db", A_WHOLE_WRITE);
    let store = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(store.audit_head_seq().unwrap(), head);
}

#[test]
fn an_erasure_a_power_cut_kept_only_in_identity_db_is_finished_however_old_the_deposit() {
    let (dir, store, root) = fresh();
    let now = Utc::now();
    deposit(&store, &root, "old", now, &[3600, 7200]);
    deposit(&store, &root, "kept", now, &[3600]);
    // More entries since than mending reads of the audit trail: nothing
    // there names the deposits any more.
    let store = std::sync::Arc::new(store);
    let writers: Vec<_> = (0..32)
        .map(|_| {
            let store = store.clone();
            std::thread::spawn(move || {
                for _ in 0..520 {
                    store
                        .record_action(&call("test.fill", now), "ok", "")
                        .unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let store = std::sync::Arc::into_inner(store).unwrap();
    let head = store.audit_head_seq().unwrap();
    assert!(head > 16_384 + 6);
    store
        .erase_deposit(
            &call("deposit.erase", now),
            &DepositId::from_trusted("dep_kept".into()),
        )
        .unwrap();
    let head = store.audit_head_seq().unwrap();
    drop(store);
    // A power cut kept identity.db's half of an erasure of dep_old (its
    // identity row deleted, the deletion noted) and lost vault.db's half.
    crash_after(
        dir.path(),
        "identity.db",
        "DELETE FROM identities WHERE deposit_id = 'dep_old';
         INSERT INTO shredded (deposit_id) VALUES ('dep_old');",
    );

    let store = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(
        entries_after(&store, head),
        [by_system("deposit.void", "dep_old")]
    );
    assert!(store.verify_audit(&mut |_| {}).unwrap().is_ok());
    let head = store.audit_head_seq().unwrap();
    drop(store);
    let state: String = one(
        dir.path(),
        "vault.db",
        "SELECT state FROM deposits WHERE id = 'dep_old'",
    );
    assert_eq!(state, "erased");
    let left: i64 = one(
        dir.path(),
        "vault.db",
        "SELECT (SELECT count(*) FROM data_keys WHERE deposit_id = 'dep_old')
              + (SELECT count(*) FROM codes WHERE deposit_id = 'dep_old' AND state <> 'revoked')",
    );
    assert_eq!(left, 0, "no key or live code of it is left");
    let noted: i64 = one(
        dir.path(),
        "identity.db",
        "SELECT count(*) FROM shredded WHERE deposit_id = 'dep_kept'",
    );
    assert_eq!(noted, 1, "a whole erasure notes its deposit in identity.db");

    // Mended once: after another crash, opening finds nothing and writes nothing.
    crash_after(dir.path(), "vault.db", A_WHOLE_WRITE);
    let store = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(store.audit_head_seq().unwrap(), head);
}

#[test]
fn identity_rows_a_crash_left_behind_are_deleted_as_the_store_opens() {
    let (dir, store, root) = fresh();
    let now = Utc::now();
    deposit(&store, &root, "erased", now, &[3600]);
    deposit(&store, &root, "kept", now, &[3600]);
    store
        .erase_deposit(
            &call("deposit.erase", now),
            &DepositId::from_trusted("dep_erased".into()),
        )
        .unwrap();
    let head = store.audit_head_seq().unwrap();
    drop(store);
    // An erasure whose identity.db half was lost, and a deposit whose
    // vault.db half was lost (the identity WAL is synced first).
    crash_after(
        dir.path(),
        "identity.db",
        "INSERT INTO identities (deposit_id, kek_version, wrapped_key, envelope)
             SELECT 'dep_erased', kek_version, wrapped_key, envelope FROM identities
             WHERE deposit_id = 'dep_kept';
         INSERT INTO identities (deposit_id, kek_version, wrapped_key, envelope)
             SELECT 'dep_lost', kek_version, wrapped_key, envelope FROM identities
             WHERE deposit_id = 'dep_kept';",
    );

    let store = SqliteStore::open(dir.path()).unwrap();
    let mut mended = entries_after(&store, head);
    mended.sort();
    assert_eq!(
        mended,
        [
            by_system("identity.discard", "dep_erased"),
            by_system("identity.discard", "dep_lost")
        ]
    );
    assert!(store.verify_audit(&mut |_| {}).unwrap().is_ok());
    let head = store.audit_head_seq().unwrap();
    drop(store);
    let identities: Vec<String> = rusqlite::Connection::open(dir.path().join("identity.db"))
        .unwrap()
        .prepare("SELECT deposit_id FROM identities ORDER BY deposit_id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(identities, ["dep_kept"]);

    crash_after(dir.path(), "vault.db", A_WHOLE_WRITE);
    let store = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(store.audit_head_seq().unwrap(), head);
}
