//! Tamper evidence: flip one byte in each kind of stored ciphertext and
//! wrapped key, on the files with the store closed, then open it the way the
//! server does (unwrap the data key with the keyring, `open_record`; open
//! sealed secrets through `admin`). Every flip must be an error — never
//! wrong plaintext. Each released ciphertext is also checked with every one
//! of its bytes flipped in turn.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use std::path::Path;

use chrono::{Duration, Utc};
use dzl_crypto::{DataKey, Keyring, RootKey, SystemRandom, WrappedKey};
use dzl_store::admin;
use dzl_store::{
    Call, NewCode, NewDeposit, RedeemAttempt, Redeemed, Sealed, SqliteStore, Store, TenantKind,
};
use dzl_types::code::CodeSecret;
use dzl_types::{
    AuthCode, CodeId, DepositId, Group, Purpose, RedemptionId, ScopeSet, SubjectRef, TenantId,
};

const IDENTITY: &[u8] = br#"{"name":"tamper applicant","id_number":"11010519491231002X"}"#;
const RISK: &[u8] = br#"{"score":712,"grade":"B+"}"#;

struct Vault {
    dir: tempfile::TempDir,
    root: RootKey,
    platform: TenantId,
    funder: TenantId,
}

fn vault() -> Vault {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let root = RootKey::generate(&SystemRandom::new()).unwrap();
    admin::init(&store, &root, "test").unwrap();
    let keyring = admin::load_keyring(&store, &root).unwrap();
    let ids = common::tenants(
        &store,
        &keyring,
        &[(TenantKind::Platform, "P"), (TenantKind::Funder, "F")],
    );
    let [platform, funder] = <[TenantId; 2]>::try_from(ids).expect("tenants");
    store.close();
    Vault {
        dir,
        root,
        platform,
        funder,
    }
}

fn call(actor: &TenantId, op: &'static str) -> Call {
    Call {
        actor: actor.to_string(),
        operation: op,
        now: Utc::now(),
    }
}

/// Deposits the identity and risk groups, sealed as the server seals them,
/// with one code for the funder; returns the deposit and the code.
fn deposit(v: &Vault, name: &str) -> (DepositId, AuthCode) {
    let store = SqliteStore::open(v.dir.path()).unwrap();
    let keyring = admin::load_keyring(&store, &v.root).unwrap();
    let rng = SystemRandom::new();
    let id = DepositId::from_trusted(format!("dep_{name}"));
    let identity_dk = DataKey::generate(&rng).unwrap();
    let records_dk = DataKey::generate(&rng).unwrap();
    let seal = |w: WrappedKey| Sealed {
        kek_version: w.kek_version,
        bytes: w.bytes,
    };
    let now = Utc::now();
    let consent_end = now + Duration::days(365);
    let consent = serde_json::json!({
        "consent_id": "C", "granted_at": now, "expires_at": consent_end,
        "scopes": ["applicant", "risk"], "evidence_sha256": "a".repeat(64),
    });
    let secret = CodeSecret::generate(&rng).unwrap();
    let created = store
        .create_deposit(NewDeposit {
            call: call(&v.platform, "deposit.create"),
            id: id.clone(),
            external_ref: name.into(),
            purpose: Purpose::CreditApplication,
            consent_json: consent.to_string(),
            consent_expires: consent_end,
            groups: ScopeSet::parse_list("applicant,risk").unwrap(),
            subject_index: format!("subject-{name}"),
            subject_ref: SubjectRef::from_trusted(format!("sub_{name}")),
            records_key: seal(
                keyring
                    .wrap_data_key(&records_dk, id.as_str(), "records")
                    .unwrap(),
            ),
            records: vec![(
                Group::Risk,
                dzl_crypto::seal_record(&records_dk, id.as_str(), Group::Risk.as_str(), RISK, &rng)
                    .unwrap(),
            )],
            identity_key: seal(
                keyring
                    .wrap_data_key(&identity_dk, id.as_str(), "identity")
                    .unwrap(),
            ),
            identity: dzl_crypto::seal_record(
                &identity_dk,
                id.as_str(),
                Group::Applicant.as_str(),
                IDENTITY,
                &rng,
            )
            .unwrap(),
            codes: vec![NewCode {
                code_id: CodeId::from_trusted(format!("cod_{name}")),
                secret_hash: secret.hash(),
                funder_id: v.funder.clone(),
                scopes: ScopeSet::parse_list("applicant,risk").unwrap(),
                ttl_seconds: 3600,
            }],
        })
        .unwrap();
    store.close();
    (id, secret.into_code(created[0].row))
}

#[derive(Debug, Clone, Copy)]
enum Pos {
    First,
    Middle,
    Last,
}

/// Flips one byte of one stored blob, straight in the database file.
fn flip(file: &Path, table: &str, column: &str, filter: &str, pos: Pos) {
    let conn = rusqlite::Connection::open(file).unwrap();
    let select = format!("SELECT {column} FROM {table} WHERE {filter}");
    let mut blob: Vec<u8> = conn.query_row(&select, [], |r| r.get(0)).unwrap();
    assert!(!blob.is_empty(), "{table}.{column} is empty");
    let i = match pos {
        Pos::First => 0,
        Pos::Middle => blob.len() / 2,
        Pos::Last => blob.len() - 1,
    };
    blob[i] ^= 0x01;
    let update = format!("UPDATE {table} SET {column} = ?1 WHERE {filter}");
    assert_eq!(conn.execute(&update, [&blob]).unwrap(), 1);
}

/// What a funder would receive, opened as the server opens it.
fn open_released(keyring: &Keyring, r: &Redeemed) -> Result<(Vec<u8>, Vec<u8>), String> {
    let deposit = r.deposit_id.as_str();
    let (key, env) = r.identity.as_ref().ok_or("no identity")?;
    let dk = keyring
        .unwrap_data_key(&admin::wrapped(key), deposit, "identity")
        .map_err(|e| e.to_string())?;
    let identity = dzl_crypto::open_record(&dk, deposit, Group::Applicant.as_str(), env)
        .map_err(|e| e.to_string())?;
    let key = r.records_key.as_ref().ok_or("no records key")?;
    let dk = keyring
        .unwrap_data_key(&admin::wrapped(key), deposit, "records")
        .map_err(|e| e.to_string())?;
    let (group, env) = r.records.first().ok_or("no records")?;
    let risk =
        dzl_crypto::open_record(&dk, deposit, group.as_str(), env).map_err(|e| e.to_string())?;
    Ok((identity.to_vec(), risk.to_vec()))
}

fn redeem(v: &Vault, code: AuthCode, n: &str) -> (SqliteStore, Redeemed) {
    let store = SqliteStore::open(v.dir.path()).unwrap();
    let r = store
        .redeem(
            &call(&v.funder, "redemption.create"),
            RedeemAttempt {
                code,
                purpose: Purpose::CreditApplication,
                redemption_id: RedemptionId::from_trusted(format!("red_{n}")),
            },
        )
        .unwrap();
    (store, r)
}

/// Every single-byte flip of every ciphertext in `r` fails to open.
fn every_byte_of_released_fails(keyring: &Keyring, r: &Redeemed) -> usize {
    let mut tried = 0;
    let deposit = r.deposit_id.as_str();
    let (ikey, ienv) = r.identity.as_ref().unwrap();
    let rkey = r.records_key.as_ref().unwrap();
    let (group, renv) = &r.records[0];
    let idk = keyring
        .unwrap_data_key(&admin::wrapped(ikey), deposit, "identity")
        .unwrap();
    let rdk = keyring
        .unwrap_data_key(&admin::wrapped(rkey), deposit, "records")
        .unwrap();
    for (kind, key) in [("identity", ikey), ("records", rkey)] {
        for i in 0..key.bytes.len() {
            let mut k = admin::wrapped(key);
            k.bytes[i] ^= 0x80;
            assert!(
                keyring.unwrap_data_key(&k, deposit, kind).is_err(),
                "{kind} key byte {i}"
            );
            tried += 1;
        }
    }
    for (dk, g, env) in [(&idk, Group::Applicant, ienv), (&rdk, *group, renv)] {
        for i in 0..env.len() {
            let mut e = env.clone();
            e[i] ^= 0x80;
            assert!(
                dzl_crypto::open_record(dk, deposit, g.as_str(), &e).is_err(),
                "{} envelope byte {i}",
                g.as_str()
            );
            tried += 1;
        }
    }
    tried
}

#[test]
fn an_untampered_deposit_opens_and_every_single_byte_flip_of_it_does_not() {
    let v = vault();
    let (_, code) = deposit(&v, "clean");
    let (store, r) = redeem(&v, code, "clean");
    let keyring = admin::load_keyring(&store, &v.root).unwrap();
    assert_eq!(
        open_released(&keyring, &r).unwrap(),
        (IDENTITY.to_vec(), RISK.to_vec())
    );
    let tried = every_byte_of_released_fails(&keyring, &r);
    assert!(tried > 200, "{tried}");
}

#[test]
fn a_flipped_byte_in_any_stored_deposit_ciphertext_or_data_key_never_opens() {
    let v = vault();
    let vault_db = v.dir.path().join("vault.db");
    let identity_db = dzl_store::sqlite::identity_db(v.dir.path());
    let targets: [(&Path, &str, &str, &str); 4] = [
        (&vault_db, "records", "envelope", "grp = 'risk'"),
        (&vault_db, "data_keys", "wrapped", "1 = 1"),
        (&identity_db, "identities", "envelope", "1 = 1"),
        (&identity_db, "identities", "wrapped_key", "1 = 1"),
    ];
    let mut n = 0;
    for (file, table, column, filter) in targets {
        for pos in [Pos::First, Pos::Middle, Pos::Last] {
            n += 1;
            let name = format!("t{n}");
            let (dep, code) = deposit(&v, &name);
            flip(
                file,
                table,
                column,
                &format!("deposit_id = '{}' AND {filter}", dep.as_str()),
                pos,
            );
            let (store, r) = redeem(&v, code, &name);
            let keyring = admin::load_keyring(&store, &v.root).unwrap();
            match open_released(&keyring, &r) {
                Err(_) => {}
                Ok((identity, risk)) => panic!(
                    "{table}.{column} flipped at {pos:?} still opened (identity intact: {}, risk intact: {})",
                    identity == IDENTITY,
                    risk == RISK
                ),
            }
            store.close();
        }
    }
}

#[test]
fn a_flipped_byte_in_a_kek_a_vault_secret_or_a_tenant_secret_never_opens() {
    let v = vault();
    let vault_db = v.dir.path().join("vault.db");
    // Saved to restore between flips.
    let snapshot = |table: &str, column: &str, filter: &str| -> Vec<u8> {
        let conn = rusqlite::Connection::open(&vault_db).unwrap();
        conn.query_row(
            &format!("SELECT {column} FROM {table} WHERE {filter}"),
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    let restore = |table: &str, column: &str, filter: &str, bytes: &[u8]| {
        let conn = rusqlite::Connection::open(&vault_db).unwrap();
        conn.execute(
            &format!("UPDATE {table} SET {column} = ?1 WHERE {filter}"),
            [bytes],
        )
        .unwrap();
    };
    let platform_filter = format!("id = '{}'", v.platform.as_str());
    let targets: [(&str, &str, &str); 4] = [
        ("keks", "wrapped", "version = 1"),
        ("sealed_secrets", "sealed", "name = 'subject-index'"),
        ("sealed_secrets", "sealed", "name LIKE 'receipt:%'"),
        ("tenants", "secret_sealed", platform_filter.as_str()),
    ];
    let mut checked = 0;
    for (table, column, filter) in targets {
        let original = snapshot(table, column, filter);
        for pos in [Pos::First, Pos::Middle, Pos::Last] {
            flip(&vault_db, table, column, filter, pos);
            let store = SqliteStore::open(v.dir.path()).unwrap();
            match table {
                "keks" => {
                    assert!(
                        matches!(
                            admin::load_keyring(&store, &v.root),
                            Err(admin::AdminError::WrongRootKey)
                        ),
                        "keks.wrapped flipped at {pos:?} still opened"
                    );
                }
                "sealed_secrets" => {
                    assert!(
                        admin::load_keys(&store, &v.root).is_err(),
                        "{filter} flipped at {pos:?} still opened"
                    );
                }
                _ => {
                    let keys = admin::load_keys(&store, &v.root).unwrap();
                    let t = store
                        .tenants()
                        .unwrap()
                        .into_iter()
                        .find(|t| t.id == v.platform)
                        .unwrap();
                    assert!(
                        admin::open_tenant_secret(&keys.keyring, &t).is_err(),
                        "tenant secret flipped at {pos:?} still opened"
                    );
                }
            }
            store.close();
            restore(table, column, filter, &original);
            checked += 1;
        }
        // Restored: it opens again, so the failures above were the flips.
        let store = SqliteStore::open(v.dir.path()).unwrap();
        let keys = admin::load_keys(&store, &v.root).unwrap();
        for t in store.tenants().unwrap() {
            admin::open_tenant_secret(&keys.keyring, &t).unwrap();
        }
        store.close();
    }
    assert_eq!(checked, 12);
}
