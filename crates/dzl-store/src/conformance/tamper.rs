//! Tamper evidence of what is stored: flip one byte of each kind of stored
//! ciphertext and wrapped key in the database, then open it the way the
//! server does (unwrap the data key with the keyring, `open_record`; open
//! sealed secrets through `admin`). Every flip must be an error — never
//! wrong plaintext. Each released ciphertext is also checked with every one
//! of its bytes flipped in turn.

use dzl_crypto::Keyring;
use dzl_types::{DepositId, Group, Purpose};

use super::fixture::{attempt, deposit, now_call, Parties, APPLICANT, RISK};
use super::{Blob, Factory, Fixture};
use crate::admin;
use crate::{Redeemed, Store};

/// Which byte of a blob to flip.
#[derive(Debug, Clone, Copy)]
enum Pos {
    First,
    Middle,
    Last,
}

const POSITIONS: [Pos; 3] = [Pos::First, Pos::Middle, Pos::Last];

/// `bytes` with one bit of the byte at `pos` flipped.
fn flipped(mut bytes: Vec<u8>, pos: Pos) -> Vec<u8> {
    assert!(!bytes.is_empty(), "nothing stored to flip");
    let i = match pos {
        Pos::First => 0,
        Pos::Middle => bytes.len() / 2,
        Pos::Last => bytes.len() - 1,
    };
    bytes[i] ^= 0x01;
    bytes
}

/// What the funder would receive, opened as the server opens it: the
/// applicant and risk groups.
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
    let (group, env) = r
        .records
        .iter()
        .find(|(g, _)| *g == Group::Risk)
        .ok_or("no risk group")?;
    let risk =
        dzl_crypto::open_record(&dk, deposit, group.as_str(), env).map_err(|e| e.to_string())?;
    Ok((identity.to_vec(), risk.to_vec()))
}

/// A deposit of the applicant and risk groups with one code; redeemed
/// after `tamper` has run on it.
fn redeemed_after(
    store: &dyn Store,
    p: &Parties,
    name: &str,
    tamper: impl FnOnce(&DepositId),
) -> Redeemed {
    let d = deposit(store, p, name, &["applicant,risk"]).unwrap();
    tamper(&d.id);
    store
        .redeem(
            &now_call(&p.funder.tenant_id, "redemption.create"),
            attempt(&d.codes[0], Purpose::CreditApplication),
        )
        .unwrap()
}

/// Every single-byte flip of every wrapped key and ciphertext in `r` fails
/// to open; how many were tried.
fn every_byte_of_released_fails(keyring: &Keyring, r: &Redeemed) -> usize {
    let mut tried = 0;
    let deposit = r.deposit_id.as_str();
    let (ikey, ienv) = r.identity.as_ref().unwrap();
    let rkey = r.records_key.as_ref().unwrap();
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
    let mut envelopes = vec![(&idk, Group::Applicant, ienv)];
    envelopes.extend(r.records.iter().map(|(g, env)| (&rdk, *g, env)));
    for (dk, g, env) in envelopes {
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

/// An untouched deposit opens to what was deposited; no single flipped
/// byte of what it releases does.
pub fn an_untampered_deposit_opens_and_no_single_byte_flip_of_it_does<F: Factory>(factory: F) {
    let f = Fixture::new(factory);
    let p = f.parties();
    let r = redeemed_after(&f.store, &p, "clean", |_| {});
    assert_eq!(
        open_released(&p.keys.keyring, &r).unwrap(),
        (APPLICANT.as_bytes().to_vec(), RISK.as_bytes().to_vec())
    );
    let tried = every_byte_of_released_fails(&p.keys.keyring, &r);
    assert!(tried > 200, "{tried}");
}

/// A byte flipped in the database in a sealed group or a wrapped data
/// key, at its start, middle or end: the release never opens.
pub fn a_flipped_byte_in_a_stored_ciphertext_or_data_key_never_opens<F: Factory>(factory: F) {
    let f = Fixture::new(factory);
    let p = f.parties();
    let mut db = f.backdoor();
    let blobs: [fn(&DepositId) -> Blob<'_>; 4] = [
        |d| Blob::Risk(d),
        |d| Blob::RecordsKey(d),
        |d| Blob::Identity(d),
        |d| Blob::IdentityKey(d),
    ];
    let mut n = 0;
    for blob in blobs {
        for pos in POSITIONS {
            n += 1;
            let r = redeemed_after(&f.store, &p, &format!("t{n}"), |d| {
                let stored = db.blob(blob(d));
                db.set_blob(blob(d), &flipped(stored, pos));
            });
            if let Ok((identity, risk)) = open_released(&p.keys.keyring, &r) {
                panic!(
                    "{:?} flipped at {pos:?} still opened (identity intact: {}, risk intact: {})",
                    blob(&r.deposit_id).location(),
                    identity == APPLICANT.as_bytes(),
                    risk == RISK.as_bytes()
                );
            }
        }
    }
    assert_eq!(n, 12);
}

/// A byte flipped in the database in a KEK, a vault secret or a tenant's
/// signing secret: the keyring, the vault's keys or the tenant's secret
/// no longer open; restored, they open again.
pub fn a_flipped_byte_in_a_kek_or_a_sealed_secret_never_opens<F: Factory>(factory: F) {
    let f = Fixture::new(factory);
    let p = f.parties();
    let mut db = f.backdoor();
    let receipt = f
        .store
        .receipt_keys()
        .unwrap()
        .into_iter()
        .next()
        .unwrap()
        .name;
    let targets = [
        Blob::Kek(1),
        Blob::VaultSecret(admin::SUBJECT_INDEX),
        Blob::VaultSecret(&receipt),
        Blob::TenantSecret(&p.platform.tenant_id),
    ];
    let mut checked = 0;
    for blob in targets {
        let original = db.blob(blob);
        for pos in POSITIONS {
            db.set_blob(blob, &flipped(original.clone(), pos));
            match blob {
                Blob::Kek(_) => assert!(
                    matches!(
                        admin::load_keyring(&f.store, &f.root),
                        Err(admin::AdminError::WrongRootKey)
                    ),
                    "the KEK flipped at {pos:?} still opened"
                ),
                Blob::VaultSecret(name) => assert!(
                    admin::load_keys(&f.store, &f.root).is_err(),
                    "{name} flipped at {pos:?} still opened"
                ),
                _ => {
                    let keys = f.keys();
                    let t = f
                        .store
                        .tenants()
                        .unwrap()
                        .into_iter()
                        .find(|t| t.id == p.platform.tenant_id)
                        .unwrap();
                    assert!(
                        admin::open_tenant_secret(&keys.keyring, &t).is_err(),
                        "the tenant secret flipped at {pos:?} still opened"
                    );
                }
            }
            db.set_blob(blob, &original);
            checked += 1;
        }
        // Restored: it opens again, so the failures above were the flips.
        let keys = f.keys();
        for t in f.store.tenants().unwrap() {
            admin::open_tenant_secret(&keys.keyring, &t).unwrap();
        }
    }
    assert_eq!(checked, 12);
}
