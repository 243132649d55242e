//! Cipher suites in the store: a `gm` vault, a vault that moves from one
//! suite to the other by rotation, and `keys reseal`, which seals its old
//! deposits anew in its new suite while other stores keep serving.

use chrono::Utc;
use dzl_audit::ChainHash;
use dzl_crypto::{ReceiptAlgorithm, Suite, SystemRandom};
use dzl_types::{ErrorCode, Group, Purpose};

use super::fixture::{
    attempt, cli_call, deposit, now_call, open, subject_index, Deposited, Parties, APPLICANT,
    DEVICE, RISK, SUBJECT,
};
use super::{Blob, DepositRows, Factory, Fixture};
use crate::admin::{self, ResealOptions, ResealReport};
use crate::{DataKeyKind, RewrappedDataKey, Store, StoreError};

/// What a redemption of `code` opens, by `p.funder` through `store`.
fn redeem_open(store: &dyn Store, p: &Parties, code: &dzl_types::AuthCode) -> Vec<(Group, String)> {
    let r = store
        .redeem(
            &now_call(&p.funder.tenant_id, "redemption.create"),
            attempt(code, Purpose::CreditApplication),
        )
        .unwrap();
    open(p, &r)
}

fn applicant_and_risk() -> Vec<(Group, String)> {
    vec![
        (Group::Applicant, APPLICANT.to_owned()),
        (Group::Risk, RISK.to_owned()),
    ]
}

/// Active deposits per suite, sorted.
fn suites(store: &dyn Store) -> Vec<(Suite, u64)> {
    let mut s = store.deposit_suites().unwrap();
    s.sort();
    s
}

/// The algorithm tag of a stored envelope or wrapped key.
fn tag(f: &Fixture<impl Factory>, blob: Blob<'_>) -> u8 {
    f.backdoor().blob(blob)[0]
}

/// Reseals everything now, in batches of `batch_size`.
fn reseal(store: &dyn Store, p: &Parties, batch_size: usize) -> ResealReport {
    admin::reseal(
        store,
        &p.keys,
        &cli_call("keys.reseal", Utc::now()),
        ResealOptions {
            batch_size,
            wait_for_servers: false,
        },
        &mut |_, _| {},
    )
    .unwrap()
}

/// An `intl` vault with `n` deposits (`{prefix}-{i}`, two codes each: one
/// for applicant and risk, one for device), then rotated to `gm`; the
/// parties hold the `gm` keyring.
fn moved_to_gm<F: Factory>(
    factory: F,
    n: usize,
    prefix: &str,
) -> (Fixture<F>, Parties, Vec<Deposited>) {
    let f = Fixture::new(factory);
    let mut p = f.parties();
    let ds = (0..n)
        .map(|i| {
            deposit(
                &f.store,
                &p,
                &format!("{prefix}-{i}"),
                &["applicant,risk", "device"],
            )
            .unwrap()
        })
        .collect();
    admin::rotate_keys_to(&f.store, &f.root, "cli:test", Suite::Gm).unwrap();
    p.keys = f.keys();
    (f, p, ds)
}

/// A vault made `gm`: its KEK, data keys, groups and secrets are SM4-GCM,
/// it signs receipts with SM2, and every audit entry is chained with SM3.
pub fn a_gm_vault_seals_and_chains_in_gm<F: Factory>(factory: F) {
    let f = Fixture::with_suite(factory, Suite::Gm);
    let keks: Vec<_> = f
        .store
        .keks()
        .unwrap()
        .iter()
        .map(|k| (k.version, k.suite))
        .collect();
    assert_eq!(keks, [(1, Suite::Gm)]);
    let p = f.parties();
    assert_eq!(p.keys.suite(), Suite::Gm);
    let signers: Vec<_> = p
        .keys
        .receipt_signers
        .iter()
        .map(|s| s.algorithm())
        .collect();
    assert_eq!(signers, [ReceiptAlgorithm::Sm2]);
    let d = deposit(&f.store, &p, "GM-1", &["applicant,risk"]).unwrap();
    for blob in [
        Blob::Risk(&d.id),
        Blob::RecordsKey(&d.id),
        Blob::Identity(&d.id),
        Blob::IdentityKey(&d.id),
        Blob::VaultSecret(admin::SUBJECT_INDEX),
        Blob::TenantSecret(&p.funder.tenant_id),
    ] {
        assert_eq!(tag(&f, blob), 0x02, "{blob:?} is SM4-GCM");
    }
    assert_eq!(suites(&f.store), [(Suite::Gm, 1)]);
    assert_eq!(redeem_open(&f.store, &p, &d.codes[0]), applicant_and_risk());
    let report = f
        .store
        .subject_access(
            &now_call(&p.funder.tenant_id, "subject_access.query"),
            &p.keys.subject_indexes(SUBJECT.0, SUBJECT.1),
        )
        .unwrap();
    assert_eq!(report.deposits.len(), 1);
    let trail = f.store.audit_after(&[]).unwrap();
    assert!(trail.len() >= 6);
    assert!(
        trail.iter().all(|e| e.alg == ChainHash::Sm3),
        "every entry of a gm vault is SM3"
    );
    assert_eq!(f.verified(), Ok(trail.len() as u64));
}

/// A rotation to the other suite: new deposits, receipts and audit entries
/// follow it at once; old deposits open as before; the chain verifies
/// across the change, and an entry whose hash name is changed is found.
pub fn a_vault_rotated_to_the_other_suite_follows_it_at_once<F: Factory>(factory: F) {
    let f = Fixture::new(factory);
    let mut p = f.parties();
    let old = deposit(&f.store, &p, "INTL-1", &["applicant,risk", "device"]).unwrap();
    let marks = f.store.audit_chains().unwrap();
    assert_eq!(
        admin::rotate_keys_to(&f.store, &f.root, "cli:test", Suite::Gm).unwrap(),
        2
    );
    p.keys = f.keys();
    assert_eq!(p.keys.suite(), Suite::Gm);
    // An SM2 receipt key came with the rotation, and signs from now on;
    // the Ed25519 one stays, for the receipts it signed.
    let signers: Vec<_> = p
        .keys
        .receipt_signers
        .iter()
        .map(|s| s.algorithm())
        .collect();
    assert_eq!(signers, [ReceiptAlgorithm::Ed25519, ReceiptAlgorithm::Sm2]);
    let signer = p.keys.receipt_signer().unwrap();
    assert_eq!(signer.algorithm(), ReceiptAlgorithm::Sm2);
    let new = deposit(&f.store, &p, "GM-1", &["applicant,risk"]).unwrap();
    assert_eq!(tag(&f, Blob::Risk(&old.id)), 0x01);
    assert_eq!(tag(&f, Blob::Risk(&new.id)), 0x02);
    assert_eq!(suites(&f.store), [(Suite::Intl, 1), (Suite::Gm, 1)]);
    for d in [&old, &new] {
        assert_eq!(redeem_open(&f.store, &p, &d.codes[0]), applicant_and_risk());
    }
    let entries = |marks: &[crate::ChainRow]| f.store.audit_after(marks).unwrap();
    let after = entries(&marks);
    assert!(after.len() >= 4);
    assert!(after.iter().all(|e| e.alg == ChainHash::Sm3));
    let all = entries(&[]);
    assert!(all
        .iter()
        .filter(|e| !after.contains(e))
        .all(|e| e.alg == ChainHash::Sha256));
    assert!(f.verified().is_ok());

    // And back: the Ed25519 key signs again, the entries are SHA-256.
    let marks = f.store.audit_chains().unwrap();
    admin::rotate_keys_to(&f.store, &f.root, "cli:test", Suite::Intl).unwrap();
    p.keys = f.keys();
    assert_eq!(p.keys.receipt_signers.len(), 2, "no third receipt key");
    let signer = p.keys.receipt_signer().unwrap();
    assert_eq!(signer.algorithm(), ReceiptAlgorithm::Ed25519);
    let back = entries(&marks);
    assert!(!back.is_empty() && back.iter().all(|e| e.alg == ChainHash::Sha256));
    assert!(f.verified().is_ok());

    // The hash an entry names is part of what it commits to.
    let sm3 = &after[1];
    f.backdoor().set_entry_alg(sm3.chain, sm3.seq, None);
    let broken = f.store.verify_audit(&mut |_| {}).unwrap().unwrap_err();
    assert_eq!((broken.chain, broken.seq()), (sm3.chain, sm3.seq));
    f.backdoor().set_entry_alg(sm3.chain, sm3.seq, Some("sm3"));
    assert!(f.verified().is_ok());
    let sha = &back[0];
    f.backdoor().set_entry_alg(sha.chain, sha.seq, Some("sm3"));
    let broken = f.store.verify_audit(&mut |_| {}).unwrap().unwrap_err();
    assert_eq!((broken.chain, broken.seq()), (sha.chain, sha.seq));
}

/// `keys reseal` after a rotation to `gm`: every active deposit is sealed
/// anew in SM4 and filed under its SM3 index, its codes still redeem, the
/// erased one keeps its old filing, every secret moves, the `intl`
/// version retires, and a second run finds nothing to do.
pub fn a_reseal_moves_every_deposit_and_the_old_suite_retires<F: Factory>(factory: F) {
    let (f, mut p, ds) = moved_to_gm(factory, 7, "R");
    let intl_index = ds[0].subject_index.clone();
    assert_eq!(
        redeem_open(&f.store, &p, &ds[0].codes[0]),
        applicant_and_risk()
    );
    f.store
        .erase_deposit(&now_call(&p.platform.tenant_id, "deposit.erase"), &ds[1].id)
        .unwrap();
    let made_gm = deposit(&f.store, &p, "GM-1", &["risk"]).unwrap();
    assert_eq!(suites(&f.store), [(Suite::Intl, 6), (Suite::Gm, 1)]);

    let report = reseal(&f.store, &p, 2);
    assert_eq!(
        (
            report.deposits_found,
            report.deposits_resealed,
            report.deposits_remaining,
            report.failed
        ),
        (6, 6, 0, 0)
    );
    assert!(report.secrets_rewrapped >= 5, "tenant and vault secrets");
    assert_eq!(suites(&f.store), [(Suite::Gm, 7)]);
    for blob in [
        Blob::Risk(&ds[2].id),
        Blob::RecordsKey(&ds[2].id),
        Blob::Identity(&ds[2].id),
        Blob::IdentityKey(&ds[2].id),
    ] {
        assert_eq!(tag(&f, blob), 0x02, "{blob:?} is SM4-GCM now");
    }
    let v1 = f.store.keks().unwrap()[0].clone();
    assert_eq!((v1.data_keys, v1.secrets), (0, 0));
    assert_eq!(
        f.store
            .retire_kek(&cli_call("keys.retire", Utc::now()), 1)
            .unwrap(),
        Ok(true)
    );
    p.keys = f.keys();
    // The codes issued before redeem, and open what was deposited.
    assert_eq!(
        redeem_open(&f.store, &p, &ds[0].codes[1]),
        [(Group::Device, DEVICE.to_owned())]
    );
    for d in &ds[2..] {
        assert_eq!(redeem_open(&f.store, &p, &d.codes[0]), applicant_and_risk());
    }
    assert!(matches!(
        f.store.redeem(
            &now_call(&p.funder.tenant_id, "redemption.create"),
            attempt(&ds[1].codes[0], Purpose::CreditApplication),
        ),
        Err(StoreError::Refused(ErrorCode::CodeRevoked))
    ));
    // Every active deposit is filed under the SM3 index; the erased one
    // keeps the index it had; subject access looks up both.
    let access = |indexes: &[String]| {
        f.store
            .subject_access(
                &now_call(&p.funder.tenant_id, "subject_access.query"),
                indexes,
            )
            .unwrap()
            .deposits
            .len()
    };
    assert_eq!(access(&[subject_index(&p)]), 7);
    assert_eq!(access(std::slice::from_ref(&intl_index)), 1);
    assert_eq!(access(&p.keys.subject_indexes(SUBJECT.0, SUBJECT.1)), 8);
    assert_ne!(made_gm.subject_index, intl_index);

    let again = reseal(&f.store, &p, 2);
    assert_eq!((again.deposits_found, again.deposits_resealed), (0, 0));
    let resealed_entries = f
        .store
        .audit_after(&[])
        .unwrap()
        .into_iter()
        .filter(|e| e.record.operation == "keys.reseal")
        .count();
    // Started, three batches, secrets; then started and secrets again.
    assert_eq!(resealed_entries, 1 + 3 + 1 + 2);
    assert!(f.verified().is_ok());
}

/// A deposit erased or rewrapped after the reseal read it is left as it
/// is; one whose code was redeemed meanwhile is resealed; a reseal into a
/// suite that is not the vault's is refused.
pub fn a_reseal_leaves_alone_a_deposit_changed_since_it_was_read<F: Factory>(factory: F) {
    let (f, p, ds) = moved_to_gm(factory, 3, "M");
    let read = f.store.deposits_to_reseal(Suite::Gm, None, 10).unwrap();
    assert_eq!(read.len(), 3);
    let rng = SystemRandom::new();
    let resealed: Vec<_> = read
        .iter()
        .map(|d| admin::reseal_deposit(&p.keys, &rng, d).unwrap())
        .collect();
    // Meanwhile: the first is erased, the second's records key rewrapped,
    // the third's first code redeemed.
    f.store
        .erase_deposit(&now_call(&p.platform.tenant_id, "deposit.erase"), &ds[0].id)
        .unwrap();
    let key = f
        .store
        .data_keys_on(DataKeyKind::Records, 1, None, 10)
        .unwrap();
    let second = key.iter().find(|k| k.deposit_id == ds[1].id).unwrap();
    let moved = p
        .keys
        .keyring
        .rewrap_data_key(
            &admin::wrapped(&second.wrapped),
            ds[1].id.as_str(),
            "records",
        )
        .unwrap();
    assert_eq!(
        f.store
            .rewrap_data_keys(
                2,
                vec![RewrappedDataKey {
                    kind: DataKeyKind::Records,
                    deposit_id: ds[1].id.clone(),
                    from_version: 1,
                    wrapped: admin::sealed(moved),
                }],
            )
            .unwrap(),
        1
    );
    assert_eq!(
        redeem_open(&f.store, &p, &ds[2].codes[0]),
        applicant_and_risk()
    );

    let call = cli_call("keys.reseal", Utc::now());
    assert!(matches!(
        f.store.reseal_deposits(&call, Suite::Intl, Vec::new()),
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(
        f.store.reseal_deposits(&call, Suite::Gm, resealed).unwrap(),
        1
    );
    assert_eq!(
        f.backdoor().deposit_rows(&ds[0].id),
        DepositRows {
            deposits: 1,
            subject_filings: 1,
            codes: 2,
            ..DepositRows::default()
        },
        "the erasure stands"
    );
    assert_eq!(suites(&f.store), [(Suite::Intl, 1), (Suite::Gm, 1)]);
    assert_eq!(tag(&f, Blob::Risk(&ds[1].id)), 0x01, "left as it was");
    assert_eq!(tag(&f, Blob::Risk(&ds[2].id)), 0x02);
    assert_eq!(
        redeem_open(&f.store, &p, &ds[1].codes[0]),
        applicant_and_risk()
    );
    assert_eq!(
        redeem_open(&f.store, &p, &ds[2].codes[1]),
        [(Group::Device, DEVICE.to_owned())]
    );
    // The next run reseals the one left.
    let report = reseal(&f.store, &p, 10);
    assert_eq!(
        (report.deposits_resealed, report.deposits_remaining),
        (1, 0)
    );
    assert!(f.verified().is_ok());
}

/// A reseal in small batches on one store while another redeems every
/// deposit's first code and erases every fourth deposit: every redemption
/// succeeds with the deposited groups, every erasure stands, every active
/// deposit ends sealed in `gm`, and the trail verifies.
pub fn a_reseal_runs_while_another_store_redeems_and_erases<F: Factory>(factory: F) {
    let (f, p, ds) = moved_to_gm(factory, 24, "C");
    let server = f.open();
    let erased = |i: usize| i % 4 == 3;
    let report = std::thread::scope(|s| {
        let resealer = s.spawn(|| reseal(&f.store, &p, 3));
        for (i, d) in ds.iter().enumerate() {
            assert_eq!(redeem_open(&*server, &p, &d.codes[0]), applicant_and_risk());
            if erased(i) {
                server
                    .erase_deposit(&now_call(&p.platform.tenant_id, "deposit.erase"), &d.id)
                    .unwrap();
            }
        }
        resealer.join().unwrap()
    });
    assert_eq!(report.failed, 0);
    // A deposit erased before its batch was read was never counted.
    let remaining = reseal(&f.store, &p, 3);
    assert_eq!(remaining.deposits_resealed, 0);
    assert_eq!(suites(&f.store), [(Suite::Gm, 18)]);
    let mut db = f.backdoor();
    for (i, d) in ds.iter().enumerate() {
        if erased(i) {
            let rows = db.deposit_rows(&d.id);
            assert_eq!((rows.records, rows.identities), (0, 0), "{i} stays erased");
            assert!(f
                .store
                .redeem(
                    &now_call(&p.funder.tenant_id, "redemption.create"),
                    attempt(&d.codes[1], Purpose::CreditApplication),
                )
                .is_err());
        } else {
            assert_eq!(
                redeem_open(&f.store, &p, &d.codes[1]),
                [(Group::Device, DEVICE.to_owned())]
            );
        }
    }
    let found = f
        .store
        .subject_access(
            &now_call(&p.funder.tenant_id, "subject_access.query"),
            &p.keys.subject_indexes(SUBJECT.0, SUBJECT.1),
        )
        .unwrap();
    assert_eq!(found.deposits.len(), 24);
    assert!(f.verified().is_ok());
}
