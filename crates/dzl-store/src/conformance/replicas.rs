//! Several stores on one backing store — replicas over PostgreSQL, the
//! server and `dzlctl` over SQLite — and what survives closing a store
//! and opening it again: exactly-once redemption under concurrent
//! attempts, valid chains under concurrent writes, tenant state, usage
//! counts, the guessing windows and the nonces.

use std::sync::{Arc, Barrier};

use chrono::{Duration, Utc};
use dzl_crypto::SystemRandom;
use dzl_types::code::CodeSecret;
use dzl_types::{DepositId, ErrorCode, Purpose, TenantId};

use super::fixture::{at_call, attempt, deposit, now_call, Parties};
use super::{Factory, Fixture};
use crate::rules::GuessLimits;
use crate::{Store, StoreError, TenantState, UsageQuery};

/// What a race of redemptions of one code came to.
#[derive(Debug)]
pub struct Race {
    /// The deposit whose code was raced for.
    pub deposit: DepositId,
    /// How many attempts succeeded.
    pub won: usize,
    /// The refusals of the others.
    pub refused: Vec<ErrorCode>,
}

/// `threads` threads, taking turns among `stores`, redeem one new code of
/// `p.funder` at once.
pub fn race_one_code(stores: &[Arc<dyn Store>], p: &Parties, threads: usize) -> Race {
    let d = deposit(&*stores[0], p, "APP-RACE", &["applicant,device,risk"]).unwrap();
    let code = d.codes[0].clone();
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let store = stores[i % stores.len()].clone();
            let (barrier, code, funder) =
                (barrier.clone(), code.clone(), p.funder.tenant_id.clone());
            std::thread::spawn(move || {
                barrier.wait();
                store.redeem(
                    &now_call(&funder, "redemption.create"),
                    attempt(&code, Purpose::CreditApplication),
                )
            })
        })
        .collect();
    let mut race = Race {
        deposit: d.id,
        won: 0,
        refused: Vec::new(),
    };
    for h in handles {
        match h.join().unwrap() {
            Ok(_) => race.won += 1,
            Err(StoreError::Refused(c)) => race.refused.push(c),
            Err(e) => panic!("a redemption failed instead of being refused: {e}"),
        }
    }
    race
}

/// 32 concurrent attempts on one code through two stores: one wins, 31
/// are refused as already redeemed, one redemption is stored, and every
/// attempt is on the trail.
pub fn exactly_one_of_32_concurrent_redemptions_across_two_stores_wins<F: Factory>(factory: F) {
    let f = Fixture::new(factory);
    let p = f.parties();
    let stores: [Arc<dyn Store>; 2] = [f.open(), f.open()];
    let marks = f.store.audit_chains().unwrap();
    let race = race_one_code(&stores, &p, 32);
    assert_eq!(race.won, 1, "refusals: {:?}", race.refused);
    assert_eq!(race.refused.len(), 31);
    assert!(
        race.refused
            .iter()
            .all(|c| *c == ErrorCode::CodeAlreadyRedeemed),
        "{:?}",
        race.refused
    );
    assert_eq!(f.backdoor().deposit_rows(&race.deposit).redemptions, 1);
    let attempts: Vec<String> = f
        .store
        .audit_after(&marks)
        .unwrap()
        .into_iter()
        .filter(|e| e.record.operation == "redemption.create")
        .map(|e| e.record.result)
        .collect();
    assert_eq!(attempts.len(), 32);
    assert_eq!(attempts.iter().filter(|r| *r == "ok").count(), 1);
    assert!(f.verified().is_ok());
}

/// Deposits (three entries in one transaction) and single actions from 8
/// threads through two stores: every chain verifies, and holds every entry
/// once.
pub fn concurrent_writes_from_two_stores_keep_every_chain_valid<F: Factory>(factory: F) {
    let f = Fixture::new(factory);
    let p = Arc::new(f.parties());
    let stores = [f.open(), f.open()];
    let marks = f.store.audit_chains().unwrap();
    let threads = 8;
    let per_thread: usize = 15;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let store = stores[i % 2].clone();
            let (barrier, p) = (barrier.clone(), p.clone());
            std::thread::spawn(move || {
                barrier.wait();
                for j in 0..per_thread {
                    if j % 3 == 0 {
                        deposit(&*store, &p, &format!("APP-{i}-{j}"), &["risk", "device"]).unwrap();
                    } else {
                        let c = at_call(
                            &TenantId::from_trusted(format!("cli:t{i}")),
                            "audit.verify",
                            Utc::now(),
                        );
                        store.record_action(&c, "ok", &format!("{i}-{j}")).unwrap();
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let deposits = threads * per_thread.div_ceil(3);
    let actions = threads * per_thread - deposits;
    let after = f.store.audit_after(&marks).unwrap();
    let count = |op: &str| after.iter().filter(|e| e.record.operation == op).count();
    assert_eq!(count("deposit.create"), deposits);
    assert_eq!(count("code.issue"), deposits * 2);
    assert_eq!(count("audit.verify"), actions);
    let mut details: Vec<_> = after
        .iter()
        .filter(|e| e.record.operation == "audit.verify")
        .map(|e| e.record.detail.clone())
        .collect();
    details.sort();
    details.dedup();
    assert_eq!(details.len(), actions, "each action once");
    let total = f.store.audit_head_seq().unwrap();
    assert_eq!(
        stores[1].verify_audit(&mut |_| {}).unwrap(),
        Ok(total as u64)
    );
}

/// A funder suspended through one store is refused at once by the other.
pub fn a_suspension_by_one_store_stops_redemption_on_the_other<F: Factory>(factory: F) {
    let f = Fixture::new(factory);
    let p = f.parties();
    let other = f.open();
    let d = deposit(&f.store, &p, "APP-1", &["risk"]).unwrap();
    let g0 = other.generation().unwrap();
    f.store
        .set_tenant_state(
            "system",
            &p.funder.tenant_id,
            TenantState::Suspended,
            "guessing",
        )
        .unwrap();
    assert!(other.generation().unwrap() > g0, "the other store reloads");
    let refused = other.redeem(
        &now_call(&p.funder.tenant_id, "redemption.create"),
        attempt(&d.codes[0], Purpose::CreditApplication),
    );
    assert!(
        matches!(
            refused,
            Err(StoreError::Refused(ErrorCode::TenantSuspended))
        ),
        "{refused:?}"
    );
    assert!(f.verified().is_ok());
}

/// Calls counted by several stores read as one counter per tenant,
/// operation, day and outcome, summed.
pub fn usage_is_counted_once_summed_over_writers<F: Factory>(factory: F) {
    let f = Fixture::new(factory);
    let p = f.parties();
    let (a, b) = (f.open(), f.open());
    let x = TenantId::from_trusted("ten_x".into());
    let day = Utc::now();
    let stores: [&dyn Store; 3] = [&f.store, &*a, &*b];
    for (i, store) in stores.iter().enumerate() {
        for _ in 0..=i {
            store
                .record_refusal(
                    &at_call(&x, "redemption.create", day),
                    ErrorCode::RateLimited,
                )
                .unwrap();
        }
        deposit(*store, &p, &format!("APP-{i}"), &["risk"]).unwrap();
    }
    let usage = b
        .usage_query(&UsageQuery {
            tenant: Some(x.clone()),
            ..UsageQuery::default()
        })
        .unwrap();
    assert_eq!(
        usage
            .iter()
            .map(|u| (u.operation.as_str(), u.outcome.as_str(), u.calls))
            .collect::<Vec<_>>(),
        [("redemption.create", "rate_limited", 6)]
    );
    let deposits: Vec<_> = f
        .store
        .usage()
        .unwrap()
        .into_iter()
        .filter(|u| u.operation == "deposit.create")
        .collect();
    assert_eq!(deposits.len(), 1, "{deposits:?}");
    assert_eq!(deposits[0].calls, 3);
    assert_eq!(deposits[0].tenant_id, p.platform.tenant_id.as_str());
}

/// Redemptions of unknown codes are counted per funder whichever store
/// takes them: a minute's limit throttles every store, the hour's
/// suspends the funder, and both hold after every store closes and opens
/// again. Resuming the funder clears them.
pub fn guessing_is_throttled_then_suspended_across_stores_and_restarts<F: Factory>(factory: F) {
    let mut f = Fixture::new(factory);
    let p = f.parties();
    let d = deposit(&f.store, &p, "APP-1", &["risk"]).unwrap();
    let funder = p.funder.tenant_id.clone();
    let limits = GuessLimits {
        per_minute: 3,
        per_hour: 5,
    };
    let t0 = Utc::now();
    let rng = SystemRandom::new();
    let redeem = |store: &dyn Store, secs: i64, real: bool| {
        let code = if real {
            d.codes[0].clone()
        } else {
            CodeSecret::generate(&rng).unwrap().into_code(987_654_321)
        };
        store.redeem(
            &at_call(&funder, "redemption.create", t0 + Duration::seconds(secs)),
            crate::RedeemAttempt {
                limits,
                ..attempt(&code, Purpose::CreditApplication)
            },
        )
    };
    let not_found = |r: Result<crate::Redeemed, StoreError>| {
        assert!(
            matches!(r, Err(StoreError::Refused(ErrorCode::CodeNotFound))),
            "{r:?}"
        )
    };
    let throttled = |r: Result<crate::Redeemed, StoreError>| {
        assert!(
            matches!(r, Err(StoreError::Throttled(s)) if (1..=60).contains(&s)),
            "{r:?}"
        )
    };
    let suspended = |r: Result<crate::Redeemed, StoreError>| {
        assert!(
            matches!(r, Err(StoreError::Refused(ErrorCode::TenantSuspended))),
            "{r:?}"
        )
    };
    {
        let (a, b) = (f.open(), f.open());
        not_found(redeem(&*a, 0, false));
        not_found(redeem(&*b, 0, false));
        not_found(redeem(&f.store, 1, false));
        // The minute's limit: even a real code waits, on every store.
        throttled(redeem(&*a, 2, true));
        throttled(redeem(&*b, 3, true));
    }
    f.reopen();
    throttled(redeem(&f.store, 4, true));
    // A new minute: one more guess, then the hour's limit suspends.
    not_found(redeem(&f.store, 61, false));
    f.reopen();
    not_found(redeem(&f.store, 62, false));
    suspended(redeem(&*f.open(), 63, true));
    f.reopen();
    suspended(redeem(&f.store, 64, true));
    let t = f
        .store
        .tenants()
        .unwrap()
        .into_iter()
        .find(|t| t.id == funder)
        .unwrap();
    assert_eq!(t.state, TenantState::Suspended);
    let suspensions: Vec<_> = f
        .store
        .audit_after(&[])
        .unwrap()
        .into_iter()
        .filter(|e| e.record.operation == "tenant.suspend")
        .map(|e| (e.record.actor, e.record.detail))
        .collect();
    assert_eq!(
        suspensions,
        [(
            "system".to_owned(),
            Some(crate::ops::redeem::GUESSING_REASON.to_owned())
        )]
    );
    // Resumed, the funder starts afresh.
    assert!(f
        .store
        .set_tenant_state("cli:test", &funder, TenantState::Active, "resumed")
        .unwrap());
    f.reopen();
    assert!(redeem(&f.store, 65, true).is_ok());
    let refusals: u64 = f
        .store
        .usage()
        .unwrap()
        .iter()
        .filter(|u| u.tenant_id == funder.as_str())
        .map(|u| (u.outcome.as_str(), u.calls))
        .filter(|(o, _)| *o != "ok")
        .map(|(_, c)| c)
        .sum();
    assert_eq!(refusals, 5 + 3 + 2, "every refusal counted");
    assert!(f.verified().is_ok());
}

/// A nonce recorded through one store is a replay through any other and
/// after a restart, until its deadline; other keys' nonces are apart.
pub fn nonces_are_shared_by_stores_and_survive_a_restart<F: Factory>(factory: F) {
    let mut f = Fixture::new(factory);
    let now = Utc::now().timestamp();
    let until = now + 600;
    let other = f.open();
    assert!(f
        .store
        .remember_nonce("k_1", "n0nce-1", until, now)
        .unwrap());
    assert!(!other
        .remember_nonce("k_1", "n0nce-1", until, now + 1)
        .unwrap());
    assert!(
        other.remember_nonce("k_2", "n0nce-1", until, now).unwrap(),
        "per key id"
    );
    drop(other);
    f.reopen();
    assert!(!f
        .store
        .remember_nonce("k_1", "n0nce-1", until, now + 2)
        .unwrap());
    let mut live = f.store.live_nonces(now).unwrap();
    live.sort();
    assert_eq!(
        live,
        [
            ("k_1".to_owned(), "n0nce-1".to_owned(), until),
            ("k_2".to_owned(), "n0nce-1".to_owned(), until)
        ]
    );
    assert!(f.store.live_nonces(until).unwrap().is_empty());
    // Past its deadline it is forgotten, and fresh again.
    assert!(f
        .store
        .remember_nonce("k_1", "n0nce-1", until + 600, until)
        .unwrap());
    assert_eq!(
        f.store.live_nonces(until).unwrap(),
        [("k_1".to_owned(), "n0nce-1".to_owned(), until + 600)]
    );
}
