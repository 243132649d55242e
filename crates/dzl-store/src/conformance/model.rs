//! Model-based test of exactly-once redemption: random sequences of
//! deposit, issue, redeem (right funder, wrong funder, wrong purpose),
//! revoke, erase and clock advances, each through one of two stores on the
//! same backing store, with an injected clock; a small in-memory model
//! predicts every result and every code's status.

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use dzl_crypto::{DataKey, SystemRandom};
use dzl_types::code::CodeSecret;
use dzl_types::wire::CodeState;
use dzl_types::{
    AuthCode, CodeId, DepositId, ErrorCode, Group, Purpose, RedemptionId, ScopeSet, SubjectRef,
    TenantId,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use super::{Factory, Fixture};
use crate::admin::{self, NewTenant};
use crate::{Call, NewCode, NewDeposit, RedeemAttempt, Store, StoreError, TenantKind};

#[derive(Debug, Clone)]
enum Op {
    Deposit { ttl: u32 },
    Issue { dep: usize, ttl: u32 },
    Redeem { code: usize, how: How },
    Revoke { code: usize },
    Erase { dep: usize },
    Advance { secs: i64 },
}

#[derive(Debug, Clone, Copy)]
enum How {
    Right,
    WrongFunder,
    WrongPurpose,
}

const TTLS: [u32; 3] = [30, 120, 600];

/// An operation, and which of the two stores it goes through.
fn op() -> impl Strategy<Value = (Op, bool)> {
    let op = prop_oneof![
        2 => prop::sample::select(&TTLS[..]).prop_map(|ttl| Op::Deposit { ttl }),
        2 => (any::<usize>(), prop::sample::select(&TTLS[..]))
            .prop_map(|(dep, ttl)| Op::Issue { dep, ttl }),
        5 => (any::<usize>(), prop_oneof![
                3 => Just(How::Right), 1 => Just(How::WrongFunder), 1 => Just(How::WrongPurpose)])
            .prop_map(|(code, how)| Op::Redeem { code, how }),
        1 => any::<usize>().prop_map(|code| Op::Revoke { code }),
        1 => any::<usize>().prop_map(|dep| Op::Erase { dep }),
        // Small steps, and occasionally a jump exactly onto or past a deadline.
        2 => prop_oneof![1i64..40, Just(30i64), Just(120i64), 100i64..700]
            .prop_map(|secs| Op::Advance { secs }),
    ];
    (op, any::<bool>())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stored {
    Issued,
    Redeemed,
    Revoked,
}

struct ModelCode {
    id: CodeId,
    code: AuthCode,
    dep: usize,
    stored: Stored,
    expires_at: DateTime<Utc>,
    redemptions: u32,
}

impl ModelCode {
    fn effective(&self, now: DateTime<Utc>) -> CodeState {
        match self.stored {
            Stored::Redeemed => CodeState::Redeemed,
            Stored::Revoked => CodeState::Revoked,
            Stored::Issued if now >= self.expires_at => CodeState::Expired,
            Stored::Issued => CodeState::Issued,
        }
    }
}

struct ModelDeposit {
    id: DepositId,
    purpose: Purpose,
    erased: bool,
    identity_plain: Vec<u8>,
}

/// One case: fresh tenants on the shared stores, and the model.
struct World<'a> {
    stores: [&'a dyn Store; 2],
    via: usize,
    keys: &'a admin::VaultKeys,
    case: u64,
    rng: SystemRandom,
    platform: TenantId,
    funder: TenantId,
    other_funder: TenantId,
    now: DateTime<Utc>,
    consent_end: DateTime<Utc>,
    deposits: Vec<ModelDeposit>,
    codes: Vec<ModelCode>,
    next: u64,
}

fn refused(r: &Result<impl std::fmt::Debug, StoreError>) -> Option<ErrorCode> {
    match r {
        Err(StoreError::Refused(c)) => Some(*c),
        Ok(_) => None,
        Err(e) => panic!("store error {e}"),
    }
}

impl<'a> World<'a> {
    fn new(stores: [&'a dyn Store; 2], keys: &'a admin::VaultKeys, case: u64) -> World<'a> {
        let add = |kind, name: &str| {
            admin::add_tenant(stores[0], &keys.keyring, "test", NewTenant::new(kind, name))
                .unwrap()
                .tenant_id
        };
        let platform = add(TenantKind::Platform, "P");
        let funder = add(TenantKind::Funder, "F");
        let other_funder = add(TenantKind::Funder, "G");
        let now = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
        World {
            stores,
            via: 0,
            keys,
            case,
            rng: SystemRandom::new(),
            platform,
            funder,
            other_funder,
            consent_end: now + Duration::days(400),
            now,
            deposits: vec![],
            codes: vec![],
            next: 0,
        }
    }

    fn store(&self) -> &'a dyn Store {
        self.stores[self.via]
    }

    fn call(&self, actor: &TenantId, op: &'static str) -> Call {
        Call {
            actor: actor.to_string(),
            operation: op,
            now: self.now,
        }
    }

    fn fresh(&mut self) -> String {
        self.next += 1;
        format!("{:04}{:08}", self.case, self.next)
    }

    fn new_code(&mut self, ttl: u32) -> (NewCode, CodeSecret) {
        let n = self.fresh();
        let secret = CodeSecret::generate(&self.rng).unwrap();
        (
            NewCode {
                code_id: CodeId::from_trusted(format!("cod_{n}")),
                secret_hash: secret.hash().to_vec(),
                funder_id: self.funder.clone(),
                scopes: ScopeSet::parse_list("applicant,risk").unwrap(),
                ttl_seconds: ttl,
            },
            secret,
        )
    }

    fn deposit(&mut self, ttl: u32) {
        let n = self.fresh();
        let id = DepositId::from_trusted(format!("dep_{n}"));
        let purpose = if self.next.is_multiple_of(2) {
            Purpose::CreditApplication
        } else {
            Purpose::Drawdown
        };
        let identity_dk = DataKey::generate(&self.rng).unwrap();
        let records_dk = DataKey::generate(&self.rng).unwrap();
        let identity_plain = format!("{{\"name\":\"applicant {n}\"}}").into_bytes();
        let identity = dzl_crypto::seal_record(
            &identity_dk,
            id.as_str(),
            Group::Applicant.as_str(),
            &identity_plain,
            &self.rng,
        )
        .unwrap();
        let risk = dzl_crypto::seal_record(
            &records_dk,
            id.as_str(),
            Group::Risk.as_str(),
            format!("{{\"score\":{}}}", self.next).as_bytes(),
            &self.rng,
        )
        .unwrap();
        let wrap = |dk: &DataKey, kind: &str| {
            admin::sealed(
                self.keys
                    .keyring
                    .wrap_data_key(dk, id.as_str(), kind)
                    .unwrap(),
            )
        };
        let consent = serde_json::json!({
            "consent_id": "C", "granted_at": self.now, "expires_at": self.consent_end,
            "scopes": ["applicant", "risk"], "evidence_sha256": "a".repeat(64),
        });
        let (code, secret) = self.new_code(ttl);
        let created = self
            .store()
            .create_deposit(NewDeposit {
                call: self.call(&self.platform, "deposit.create"),
                id: id.clone(),
                external_ref: format!("REF-{n}"),
                purpose,
                consent_json: consent.to_string(),
                consent_scopes: ScopeSet::parse_list("applicant,risk").unwrap(),
                consent_expires: self.consent_end,
                groups: ScopeSet::parse_list("applicant,risk").unwrap(),
                suite: dzl_crypto::Suite::Intl,
                subject_index: format!("subject-{n}"),
                subject_ref: SubjectRef::from_trusted(format!("sub_{n}")),
                records_key: wrap(&records_dk, "records"),
                records: vec![(Group::Risk, risk)],
                identity_key: wrap(&identity_dk, "identity"),
                identity,
                codes: vec![code],
            })
            .unwrap();
        assert_eq!(created.len(), 1);
        self.deposits.push(ModelDeposit {
            id,
            purpose,
            erased: false,
            identity_plain,
        });
        let dep = self.deposits.len() - 1;
        self.record_code(created.into_iter().next().unwrap(), secret, ttl, dep);
    }

    fn record_code(&mut self, c: crate::CreatedCode, secret: CodeSecret, ttl: u32, dep: usize) {
        let expires_at = self.now + Duration::seconds(i64::from(ttl));
        assert_eq!(c.expires_at, expires_at, "deadline = now + ttl");
        assert_eq!(c.funder_id, self.funder);
        self.codes.push(ModelCode {
            id: c.code_id,
            code: secret.into_code(c.row),
            dep,
            stored: Stored::Issued,
            expires_at,
            redemptions: 0,
        });
    }

    fn issue(&mut self, dep: usize, ttl: u32) {
        let (code, secret) = self.new_code(ttl);
        let d = &self.deposits[dep];
        let (dep_id, purpose, erased) = (d.id.clone(), d.purpose, d.erased);
        let r = self
            .store()
            .issue_code(&self.call(&self.platform, "code.create"), &dep_id, code);
        if erased {
            assert_eq!(refused(&r), Some(ErrorCode::DepositErased), "{r:?}");
        } else {
            let c = r.unwrap();
            assert_eq!(c.purpose, purpose);
            self.record_code(c, secret, ttl, dep);
        }
    }

    fn redeem(&mut self, i: usize, how: How) {
        let now = self.now;
        let n = self.fresh();
        let c = &self.codes[i];
        let d = &self.deposits[c.dep];
        let (actor, purpose) = match how {
            How::Right => (self.funder.clone(), d.purpose),
            How::WrongFunder => (self.other_funder.clone(), d.purpose),
            How::WrongPurpose => (
                self.funder.clone(),
                match d.purpose {
                    Purpose::Drawdown => Purpose::CreditApplication,
                    Purpose::CreditApplication => Purpose::Drawdown,
                },
            ),
        };
        let expected = match (how, c.effective(now)) {
            (How::WrongFunder, _) => Some(ErrorCode::CodeNotFound),
            (_, CodeState::Revoked) => Some(ErrorCode::CodeRevoked),
            (_, CodeState::Redeemed) => Some(ErrorCode::CodeAlreadyRedeemed),
            (_, CodeState::Expired) => Some(ErrorCode::CodeExpired),
            (How::WrongPurpose, CodeState::Issued) => Some(ErrorCode::PurposeMismatch),
            (_, CodeState::Issued) => None,
        };
        let r = self.store().redeem(
            &self.call(&actor, "redemption.create"),
            RedeemAttempt {
                code: c.code.clone(),
                purpose,
                redemption_id: RedemptionId::from_trusted(format!("red_{n}")),
                limits: crate::rules::GuessLimits::default(),
            },
        );
        assert_eq!(refused(&r), expected, "redeem {i} {how:?} at {now}: {r:?}");
        if let Ok(red) = r {
            let identity_plain = d.identity_plain.clone();
            let dep_id = d.id.clone();
            let c = &mut self.codes[i];
            c.redemptions += 1;
            assert_eq!(c.redemptions, 1, "a code redeemed twice");
            assert!(now < c.expires_at, "redeemed at or after its deadline");
            c.stored = Stored::Redeemed;
            assert_eq!(red.code_id, c.id);
            // The released identity opens to what was deposited.
            let (key, env) = red.identity.expect("applicant granted");
            let dk = self
                .keys
                .keyring
                .unwrap_data_key(&admin::wrapped(&key), dep_id.as_str(), "identity")
                .unwrap();
            let plain =
                dzl_crypto::open_record(&dk, dep_id.as_str(), Group::Applicant.as_str(), &env)
                    .unwrap();
            assert_eq!(&plain[..], &identity_plain[..]);
            assert_eq!(red.records.len(), 1);
        }
    }

    fn revoke(&mut self, i: usize) {
        let now = self.now;
        let call = self.call(&self.platform, "code.revoke");
        let store = self.store();
        let c = &mut self.codes[i];
        let expected = match c.effective(now) {
            CodeState::Redeemed => Some(ErrorCode::CodeAlreadyRedeemed),
            CodeState::Expired => Some(ErrorCode::CodeExpired),
            CodeState::Revoked | CodeState::Issued => None,
        };
        let r = store.revoke_code(&call, &c.id);
        assert_eq!(refused(&r), expected, "revoke {i}: {r:?}");
        if let Ok(s) = r {
            c.stored = Stored::Revoked;
            assert_eq!(s.state, CodeState::Revoked);
        }
    }

    fn erase(&mut self, dep: usize) {
        self.store()
            .erase_deposit(
                &self.call(&self.platform, "deposit.erase"),
                &self.deposits[dep].id,
            )
            .unwrap();
        if !self.deposits[dep].erased {
            self.deposits[dep].erased = true;
            for c in self.codes.iter_mut().filter(|c| c.dep == dep) {
                if c.stored == Stored::Issued {
                    c.stored = Stored::Revoked;
                }
            }
        }
    }

    /// Every code's status, as the platform sees it through either store.
    fn check_statuses(&self) {
        for (i, c) in self.codes.iter().enumerate() {
            let s = self.stores[i % 2]
                .code_status(&self.call(&self.platform, "code.status"), &c.id)
                .unwrap();
            assert_eq!(s.state, c.effective(self.now), "status of code {i}");
            assert_eq!(s.expires_at, c.expires_at);
            assert_eq!(s.deposit_id, self.deposits[c.dep].id);
        }
    }

    fn apply(&mut self, op: &Op, via: bool) {
        self.via = usize::from(via);
        match *op {
            Op::Deposit { ttl } => self.deposit(ttl),
            Op::Issue { dep, ttl } if !self.deposits.is_empty() => {
                self.issue(dep % self.deposits.len(), ttl)
            }
            Op::Redeem { code, how } if !self.codes.is_empty() => {
                self.redeem(code % self.codes.len(), how)
            }
            Op::Revoke { code } if !self.codes.is_empty() => self.revoke(code % self.codes.len()),
            Op::Erase { dep } if !self.deposits.is_empty() => self.erase(dep % self.deposits.len()),
            Op::Advance { secs } => self.now += Duration::seconds(secs),
            _ => {}
        }
        self.check_statuses();
    }
}

/// 64 random sequences of up to 30 operations over two stores: every
/// result and status is the model's, no code redeems twice, and the trail
/// verifies after each.
pub fn codes_redeem_exactly_once_and_statuses_follow_the_model<F: Factory>(factory: F) {
    let f = Fixture::new(factory);
    let other: Arc<crate::Vault<F::Backend>> = f.open();
    let keys = f.keys();
    let stores: [&dyn Store; 2] = [&f.store, &*other];
    let case = std::cell::Cell::new(0u64);
    let mut runner = TestRunner::new(Config {
        cases: 64,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&prop::collection::vec(op(), 1..30), |ops| {
        case.set(case.get() + 1);
        let mut w = World::new(stores, &keys, case.get());
        for (op, via) in &ops {
            w.apply(op, *via);
        }
        prop_assert!(w.codes.iter().all(|c| c.redemptions <= 1));
        let verified = f.store.verify_audit(&mut |_| ()).unwrap();
        prop_assert!(verified.is_ok(), "audit trail: {:?}", verified);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
