//! What the suite's tests share: an initialised store over a factory's
//! backing data, the tenants a test needs, and deposits of real sealed
//! groups made as the server makes them.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use dzl_crypto::{DataKey, RootKey, Suite, SystemRandom};
use dzl_types::code::CodeSecret;
use dzl_types::{
    AuthCode, CodeId, DepositId, Group, Purpose, RedemptionId, ScopeSet, SubjectRef, TenantId,
};

use super::{Backdoor, Factory};
use crate::admin::{self, NewTenant, TenantCredentials, VaultKeys};
use crate::tx::ChainId;
use crate::{
    Call, NewCode, NewDeposit, RedeemAttempt, Redeemed, Store, StoreResult, TenantKind, Vault,
};

/// An initialised store over `factory`'s backing data. `store` is declared
/// first so it closes before the backing data goes.
pub struct Fixture<F: Factory> {
    /// The store the test talks to.
    pub store: Vault<F::Backend>,
    /// The vault's root key.
    pub root: RootKey,
    /// The backend.
    pub factory: F,
}

impl<F: Factory> Fixture<F> {
    /// Opens a store and initialises an `intl` vault (`admin::init`).
    pub fn new(factory: F) -> Self {
        Self::with_suite(factory, Suite::Intl)
    }

    /// Opens a store and initialises a vault of `suite` (`admin::init_as`).
    pub fn with_suite(factory: F, suite: Suite) -> Self {
        let store = factory.open();
        let root = RootKey::generate(&SystemRandom::new()).unwrap();
        admin::init_as(&store, &root, "cli:test", suite).unwrap();
        Fixture {
            store,
            root,
            factory,
        }
    }

    /// Another store on the same backing data.
    pub fn open(&self) -> Arc<Vault<F::Backend>> {
        Arc::new(self.factory.open())
    }

    /// Closes the store, then opens it again, as a restart does.
    pub fn reopen(&mut self) {
        self.store.close();
        self.store = self.factory.open();
    }

    /// Raw access to the backing data.
    pub fn backdoor(&self) -> Box<dyn Backdoor> {
        self.factory.backdoor()
    }

    /// The vault's keys.
    pub fn keys(&self) -> VaultKeys {
        admin::load_keys(&self.store, &self.root).unwrap()
    }

    /// A platform and two funders entitled to everything.
    pub fn parties(&self) -> Parties {
        let keys = self.keys();
        let add = |kind, name: &str| {
            admin::add_tenant(
                &self.store,
                &keys.keyring,
                "cli:test",
                NewTenant::new(kind, name),
            )
            .unwrap()
        };
        let platform = add(TenantKind::Platform, "Platform");
        let funder = add(TenantKind::Funder, "Bank");
        let other_funder = add(TenantKind::Funder, "Other bank");
        Parties {
            keys,
            platform,
            funder,
            other_funder,
        }
    }

    /// Verifies the whole trail: the number of entries, or the store's or
    /// the trail's error.
    pub fn verified(&self) -> Result<u64, String> {
        verified(&self.store)
    }
}

/// [`Store::verify_audit`] as one result.
pub fn verified(store: &dyn Store) -> Result<u64, String> {
    match store.verify_audit(&mut |_| {}) {
        Ok(Ok(n)) => Ok(n),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("store error: {e}")),
    }
}

/// The opened keys and the tenants of a test.
pub struct Parties {
    /// The vault's keys.
    pub keys: VaultKeys,
    /// Deposits.
    pub platform: TenantCredentials,
    /// Redeems.
    pub funder: TenantCredentials,
    /// Redeems too, but no code is for it.
    pub other_funder: TenantCredentials,
}

/// A call by `actor` now.
pub fn now_call(actor: &TenantId, operation: &'static str) -> Call {
    at_call(actor, operation, Utc::now())
}

/// A call by `actor` at `now`.
pub fn at_call(actor: &TenantId, operation: &'static str, now: DateTime<Utc>) -> Call {
    Call {
        actor: actor.to_string(),
        operation,
        now,
    }
}

/// An operator's call at `now`.
pub fn cli_call(operation: &'static str, now: DateTime<Utc>) -> Call {
    Call {
        actor: "cli:test".into(),
        operation,
        now,
    }
}

/// The applicant group deposited.
pub const APPLICANT: &str = r#"{"name":"张三","id_type":"resident_id","id_number":"11010519491231002X","phone":"13800138000"}"#;
/// The device group deposited.
pub const DEVICE: &str = r#"{"device_id":"d-1","os":"android","ip":"203.0.113.7"}"#;
/// The risk group deposited.
pub const RISK: &str = r#"{"score":712}"#;

/// A deposit as stored, with its codes.
pub struct Deposited {
    /// The deposit.
    pub id: DepositId,
    /// Its subject's blind index.
    pub subject_index: String,
    /// Each code as the funder holds it, in grant order.
    pub codes: Vec<AuthCode>,
    /// Each code's public id, in grant order.
    pub code_ids: Vec<CodeId>,
}

/// The deposit [`deposit`] would store for `p.platform` at `now`: the
/// three groups sealed as the server seals them (fresh data keys, the
/// applicant under its own), one code for `p.funder` per entry of
/// `grants` (a scope list each), and the codes' secrets.
pub fn new_deposit(
    p: &Parties,
    external_ref: &str,
    grants: &[&str],
    now: DateTime<Utc>,
) -> (NewDeposit, Vec<CodeSecret>) {
    let rng = SystemRandom::new();
    let suite = p.keys.suite();
    let id = DepositId::from_trusted(dzl_crypto::new_id("dep", &rng).unwrap());
    let groups = admin::seal_groups(
        &p.keys.keyring,
        &rng,
        &id,
        APPLICANT.as_bytes(),
        Some(DEVICE.as_bytes()),
        Some(RISK.as_bytes()),
    )
    .unwrap();
    let consent_end = now + Duration::days(365);
    let consent = serde_json::json!({
        "consent_id": "CNS-77", "granted_at": now, "expires_at": consent_end,
        "scopes": ["applicant", "device", "risk"], "evidence_sha256": "a".repeat(64),
    });
    let mut secrets = Vec::new();
    let mut codes = Vec::new();
    for g in grants {
        let secret = CodeSecret::generate(&rng).unwrap();
        codes.push(NewCode {
            code_id: CodeId::from_trusted(dzl_crypto::new_id("cod", &rng).unwrap()),
            secret_hash: secret.hash_for(suite),
            funder_id: p.funder.tenant_id.clone(),
            scopes: ScopeSet::parse_list(g).unwrap(),
            ttl_seconds: 3600,
        });
        secrets.push(secret);
    }
    let deposit = NewDeposit {
        call: at_call(&p.platform.tenant_id, "deposit.create", now),
        id: id.clone(),
        external_ref: external_ref.into(),
        purpose: Purpose::CreditApplication,
        consent_json: consent.to_string(),
        consent_scopes: ScopeSet::ALL,
        consent_expires: consent_end,
        groups: ScopeSet::ALL,
        suite,
        subject_index: subject_index(p),
        subject_ref: admin::subject_ref(
            suite,
            &p.keys.subject_index,
            &p.platform.tenant_id,
            SUBJECT.0,
            SUBJECT.1,
        ),
        records_key: groups.records_key,
        records: groups.records,
        identity_key: groups.identity_key,
        identity: groups.identity,
        codes,
    };
    (deposit, secrets)
}

/// The id type and number of [`APPLICANT`].
pub const SUBJECT: (&str, &str) = ("resident_id", "11010519491231002X");

/// The blind index every deposit of [`new_deposit`] is filed under, in the
/// vault's suite.
pub fn subject_index(p: &Parties) -> String {
    p.keys.subject_index(SUBJECT.0, SUBJECT.1)
}

/// Stores [`new_deposit`] now through `store`.
pub fn deposit(
    store: &dyn Store,
    p: &Parties,
    external_ref: &str,
    grants: &[&str],
) -> StoreResult<Deposited> {
    let (d, secrets) = new_deposit(p, external_ref, grants, Utc::now());
    let (id, subject_index) = (d.id.clone(), d.subject_index.clone());
    let created = store.create_deposit(d)?;
    let code_ids = created.iter().map(|c| c.code_id.clone()).collect();
    let codes = created
        .into_iter()
        .zip(secrets)
        .map(|(c, s)| s.into_code(c.row))
        .collect();
    Ok(Deposited {
        id,
        subject_index,
        codes,
        code_ids,
    })
}

/// A redemption attempt of `code` for `purpose`, with a fresh id and the
/// default guessing limits.
pub fn attempt(code: &AuthCode, purpose: Purpose) -> RedeemAttempt {
    RedeemAttempt {
        code: code.clone(),
        purpose,
        redemption_id: RedemptionId::from_trusted(
            dzl_crypto::new_id("red", &SystemRandom::new()).unwrap(),
        ),
        limits: crate::rules::GuessLimits::default(),
    }
}

/// Opens what a redemption released, as the server does: `(group, json)`.
pub fn open(p: &Parties, r: &Redeemed) -> Vec<(Group, String)> {
    let keyring = &p.keys.keyring;
    let id = r.deposit_id.as_str();
    let mut out = Vec::new();
    if let Some((key, env)) = &r.identity {
        let dk = keyring
            .unwrap_data_key(&admin::wrapped(key), id, "identity")
            .unwrap();
        let plain = dzl_crypto::open_record(&dk, id, Group::Applicant.as_str(), env).unwrap();
        out.push((Group::Applicant, String::from_utf8(plain.to_vec()).unwrap()));
    }
    if let Some(key) = &r.records_key {
        let dk = keyring
            .unwrap_data_key(&admin::wrapped(key), id, "records")
            .unwrap();
        for (g, env) in &r.records {
            let plain = dzl_crypto::open_record(&dk, id, g.as_str(), env).unwrap();
            out.push((*g, String::from_utf8(plain.to_vec()).unwrap()));
        }
    }
    out
}

/// A deposit `dep_{name}` made at `at` by `p.platform` with codes
/// `cod_{name}{i}` for `p.funder` of the given lifetimes; its groups are
/// sealed under fresh data keys (their content is not read back).
pub fn deposit_at(store: &dyn Store, p: &Parties, name: &str, at: DateTime<Utc>, ttls: &[u32]) {
    let rng = SystemRandom::new();
    let id = DepositId::from_trusted(format!("dep_{name}"));
    let wrap = |kind: &str| {
        let dk = DataKey::generate(&rng).unwrap();
        admin::sealed(
            p.keys
                .keyring
                .wrap_data_key(&dk, id.as_str(), kind)
                .unwrap(),
        )
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
            secret_hash: vec![i as u8; 32],
            funder_id: p.funder.tenant_id.clone(),
            scopes: ScopeSet::parse_list("risk").unwrap(),
            ttl_seconds: *ttl,
        })
        .collect();
    store
        .create_deposit(NewDeposit {
            call: at_call(&p.platform.tenant_id, "deposit.create", at),
            id: id.clone(),
            external_ref: name.into(),
            purpose: Purpose::Drawdown,
            consent_json: consent.to_string(),
            consent_scopes: ScopeSet::parse_list("applicant,risk").unwrap(),
            consent_expires: consent_end,
            groups: ScopeSet::parse_list("applicant,risk").unwrap(),
            suite: p.keys.suite(),
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

/// The chain `store`'s writer appends to: found by the entry of an
/// action it records.
pub fn chain_of(store: &dyn Store) -> ChainId {
    let marks = store.audit_chains().unwrap();
    let rng = SystemRandom::new();
    let detail = dzl_crypto::new_id("which-chain", &rng).unwrap();
    store
        .record_action(&cli_call("audit.verify", Utc::now()), "ok", &detail)
        .unwrap();
    let entries = store.audit_after(&marks).unwrap();
    entries
        .iter()
        .find(|e| e.record.detail.as_deref() == Some(detail.as_str()))
        .map(|e| e.chain)
        .expect("the action's entry")
}
