//! What the single-server integration tests share: a store provisioned with
//! a platform and a funder (rate limits high enough never to interfere) and
//! a deposit body.
#![allow(dead_code)]

use chrono::{Duration, Utc};
use dzl_crypto::RootKey;
use dzl_sdk::Signer;
use dzl_store::admin::{self, NewTenant};
use dzl_store::{SqliteStore, TenantKind};
use serde_json::json;

pub struct Tenant {
    pub id: String,
    pub signer: Signer,
}

pub fn provision(dir: &std::path::Path, root: &RootKey) -> (Tenant, Tenant) {
    let store = SqliteStore::open(dir).expect("open store");
    admin::init(&store, root, "test").expect("init");
    let keys = admin::load_keys(&store, root).expect("keys");
    let add = |kind, name: &str| {
        let c = admin::add_tenant(
            &store,
            &keys.keyring,
            "test",
            NewTenant {
                cert_pin: None,
                kind,
                name: name.into(),
                scopes: None,
                purposes: vec![],
                // High enough that the token bucket never answers 429 here.
                rate_limit: Some(1_000_000),
            },
        )
        .expect("tenant");
        Tenant {
            id: c.tenant_id.to_string(),
            signer: Signer::new(c.key_id.clone(), c.secret.as_str()),
        }
    };
    let t = (
        add(TenantKind::Platform, "Platform"),
        add(TenantKind::Funder, "Bank"),
    );
    store.close();
    t
}

pub fn deposit_body(external_ref: &str, funder: &str) -> serde_json::Value {
    let now = Utc::now();
    json!({
        "external_ref": external_ref,
        "purpose": "credit_application",
        "consent": {
            "consent_id": "CNS-1",
            "granted_at": (now - Duration::hours(1)).to_rfc3339(),
            "expires_at": (now + Duration::days(365)).to_rfc3339(),
            "scopes": ["applicant", "device", "risk"],
            "evidence_sha256": "a".repeat(64),
        },
        "applicant": {"name": "张三", "id_type": "resident_id", "id_number": "11010519491231002X",
                      "phone": "13912345678", "residence_address": "北京市朝阳区1号"},
        "device": {"device_id": "d-1", "os": "android", "ip": "203.0.113.7"},
        "risk": {"score": 712, "grade": "B+", "tags": ["thin_file"], "features": {"income_ratio": 0.42}},
        "grants": [{"funder_id": funder, "scopes": ["applicant", "risk"], "ttl_seconds": 3600}],
    })
}
