//! The authorization matrix (issue 6, item 7): every signed endpoint ×
//! {no signature, bad signature, unknown key, stale and future timestamp,
//! replayed request, reused nonce, suspended tenant, other tenant's object,
//! wrong tenant kind} is refused with the documented status and problem
//! code, and nothing changes: every row of every table of `vault.db` and `identity.db` except
//! the audit trail and the usage counters is byte-for-byte the same after
//! the refusal, and whatever the refusal appended to the audit trail is a
//! refusal, never `ok`.
//!
//! Each row gets freshly made objects (a deposit with a code for the funder,
//! a redemption of another), so rows cannot mask each other.

use dzl_sdk::{RawResponse, SignedHeaders, Signer};
use dzl_store::admin::{self, NewTenant};
use dzl_store::{TenantKind, TenantState};
use serde_json::json;

use crate::helpers::*;

/// Who sends a request.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    Platform,
    OtherPlatform,
    Funder,
    OtherFunder,
    Operator,
}

/// The refusals of the matrix.
#[derive(Clone, Copy, Debug)]
enum Attack {
    NoSignature,
    BadSignature,
    UnknownKey,
    StaleTimestamp,
    FutureTimestamp,
    ReplayedRequest,
    ReusedNonce,
    SuspendedTenant,
    OtherTenantsObject,
    WrongTenantKind,
}

const ATTACKS: [Attack; 10] = [
    Attack::NoSignature,
    Attack::BadSignature,
    Attack::UnknownKey,
    Attack::StaleTimestamp,
    Attack::FutureTimestamp,
    Attack::ReplayedRequest,
    Attack::ReusedNonce,
    Attack::SuspendedTenant,
    Attack::OtherTenantsObject,
    Attack::WrongTenantKind,
];

/// One signed endpoint.
struct Endpoint {
    method: &'static str,
    /// The route pattern, as `dzl_vault_server::routes()` names it.
    pattern: &'static str,
    owner: Who,
    /// Who owns none of the objects but is of the right kind, and what it
    /// gets; `None` when the route has no object of another tenant
    /// (creating a deposit; subject access, which is the bureau's own).
    stranger: Option<(Who, u16, &'static str)>,
}

const ENDPOINTS: [Endpoint; 8] = [
    Endpoint {
        method: "POST",
        pattern: "/v1/deposits",
        owner: Who::Platform,
        stranger: None,
    },
    Endpoint {
        method: "POST",
        pattern: "/v1/deposits/{deposit_id}/codes",
        owner: Who::Platform,
        stranger: Some((Who::OtherPlatform, 404, "deposit_not_found")),
    },
    Endpoint {
        method: "DELETE",
        pattern: "/v1/deposits/{deposit_id}",
        owner: Who::Platform,
        stranger: Some((Who::OtherPlatform, 404, "deposit_not_found")),
    },
    Endpoint {
        method: "GET",
        pattern: "/v1/codes/{code_id}",
        owner: Who::Platform,
        stranger: Some((Who::OtherPlatform, 404, "code_not_found")),
    },
    Endpoint {
        method: "POST",
        pattern: "/v1/codes/{code_id}/revoke",
        owner: Who::Platform,
        stranger: Some((Who::OtherPlatform, 404, "code_not_found")),
    },
    Endpoint {
        method: "POST",
        pattern: "/v1/redemptions",
        owner: Who::Funder,
        stranger: Some((Who::OtherFunder, 404, "code_not_found")),
    },
    Endpoint {
        method: "POST",
        pattern: "/v1/redemptions/{redemption_id}/outcome",
        owner: Who::Funder,
        stranger: Some((Who::OtherFunder, 404, "redemption_not_found")),
    },
    Endpoint {
        method: "POST",
        pattern: "/v1/subject-access",
        owner: Who::Operator,
        stranger: None,
    },
];

/// The routes that carry no signature (docs/api.md, "Signed requests").
const UNSIGNED: [&str; 5] = [
    "/v1/openapi.json",
    "/v1/receipt-keys",
    "/healthz",
    "/readyz",
    "/metrics",
];

struct Matrix {
    app: TestApp,
    suspended: [(Who, Tenant); 3],
    seq: std::cell::Cell<u32>,
}

/// A concrete request: method, path, body.
struct Req {
    method: &'static str,
    path: String,
    body: Vec<u8>,
}

impl Matrix {
    fn tenant(&self, who: Who) -> &Tenant {
        match who {
            Who::Platform => &self.app.platform,
            Who::OtherPlatform => &self.app.other_platform,
            Who::Funder => &self.app.funder,
            Who::OtherFunder => &self.app.other_funder,
            Who::Operator => &self.app.operator,
        }
    }

    fn suspended(&self, who: Who) -> &Tenant {
        &self
            .suspended
            .iter()
            .find(|(w, _)| *w == who)
            .expect("a suspended tenant of each kind")
            .1
    }

    fn next(&self) -> u32 {
        let n = self.seq.get() + 1;
        self.seq.set(n);
        n
    }

    /// Fresh objects and the valid request of `e` on them.
    async fn request(&self, e: &Endpoint) -> Req {
        let app = &self.app;
        let n = self.next();
        let dep = app
            .deposit(&format!("MX-{n}"), &["applicant", "risk"], 3600)
            .await;
        let deposit_id = dep["deposit_id"].as_str().unwrap().to_owned();
        let code_id = dep["codes"][0]["code_id"].as_str().unwrap().to_owned();
        let code = dep["codes"][0]["code"].as_str().unwrap().to_owned();
        let json = |v: serde_json::Value| serde_json::to_vec(&v).unwrap();
        let (path, body) = match e.pattern {
            "/v1/deposits" => (
                e.pattern.to_owned(),
                json(deposit_body(
                    &format!("MX-NEW-{n}"),
                    json!([{"funder_id": app.funder.id, "scopes": ["risk"]}]),
                )),
            ),
            "/v1/deposits/{deposit_id}/codes" => (
                format!("/v1/deposits/{deposit_id}/codes"),
                json(json!({"funder_id": app.funder.id, "scopes": ["risk"]})),
            ),
            "/v1/deposits/{deposit_id}" => (format!("/v1/deposits/{deposit_id}"), vec![]),
            "/v1/codes/{code_id}" => (format!("/v1/codes/{code_id}"), vec![]),
            "/v1/codes/{code_id}/revoke" => {
                (format!("/v1/codes/{code_id}/revoke"), json(json!({})))
            }
            "/v1/redemptions" => (
                e.pattern.to_owned(),
                json(json!({"code": code, "purpose": "credit_application"})),
            ),
            "/v1/redemptions/{redemption_id}/outcome" => {
                let other = app.deposit(&format!("MX-R-{n}"), &["risk"], 3600).await;
                let r = app
                    .redeem(
                        &app.funder,
                        other["codes"][0]["code"].as_str().unwrap(),
                        "credit_application",
                    )
                    .await;
                assert_eq!(r.status, 200);
                let rid = r.json()["redemption_id"].as_str().unwrap().to_owned();
                (
                    format!("/v1/redemptions/{rid}/outcome"),
                    json(json!({"decision": "approved", "amount_fen": 500000})),
                )
            }
            "/v1/subject-access" => (
                e.pattern.to_owned(),
                json(json!({"id_type": "resident_id", "id_number": ID_NUMBER})),
            ),
            other => panic!("no request for {other}"),
        };
        Req {
            method: e.method,
            path,
            body,
        }
    }

    async fn send(&self, r: &Req, headers: Option<SignedHeaders>) -> RawResponse {
        self.app
            .anonymous()
            .send_with(r.method, &r.path, &r.body, headers)
            .await
            .unwrap()
    }

    fn sign(&self, signer: &Signer, r: &Req) -> SignedHeaders {
        signer.sign(r.method, &r.path, &r.body)
    }

    /// Everything but the audit trail and usage counters, as text. On
    /// PostgreSQL (no files to read) only the audit-head check guards a row.
    fn snapshot(&self) -> Vec<String> {
        let dir = self.app._dir.path();
        let mut out = Vec::new();
        if crate::helpers::postgres_url().is_some() {
            return out;
        }
        for db in [
            dzl_store::sqlite::vault_db(dir),
            dzl_store::sqlite::identity_db(dir),
        ] {
            let conn = rusqlite::Connection::open_with_flags(
                &db,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .unwrap();
            let tables: Vec<String> = conn
                .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            for t in tables {
                // What a refusal records: its audit entry and count, and
                // for a guessed code the funder's failure window.
                if t.starts_with("audit") || t == "usage" || t == "failure_windows" {
                    continue;
                }
                let mut stmt = conn.prepare(&format!("SELECT * FROM \"{t}\"")).unwrap();
                let cols = stmt.column_count();
                let mut rows: Vec<String> = stmt
                    .query_map([], |r| {
                        let mut row = format!("{t}:");
                        for i in 0..cols {
                            let v: rusqlite::types::Value = r.get(i)?;
                            row.push_str(&format!("{v:?}|"));
                        }
                        Ok(row)
                    })
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap();
                rows.sort();
                out.extend(rows);
            }
        }
        out
    }

    fn audit_head(&self) -> Vec<dzl_store::ChainRow> {
        let state = self.app.state.clone();
        off_rt(move || state.store.audit_chains()).unwrap()
    }

    /// Sends one attack on `e`; asserts the refusal and that nothing changed.
    async fn attack(&self, e: &Endpoint, a: Attack) -> Option<String> {
        let owner = self.tenant(e.owner);
        let r = self.request(e).await;
        let (expected, sent) = match a {
            Attack::NoSignature => {
                let before = (self.snapshot(), self.audit_head());
                let resp = self.send(&r, None).await;
                ((401, "missing_signature"), (resp, before))
            }
            Attack::BadSignature => {
                let s = signer(owner.signer.key_id(), "not-the-secret");
                let before = (self.snapshot(), self.audit_head());
                let resp = self.send(&r, Some(self.sign(&s, &r))).await;
                ((401, "invalid_signature"), (resp, before))
            }
            Attack::UnknownKey => {
                let s = signer("k_000000000000000000000000", "whatever");
                let before = (self.snapshot(), self.audit_head());
                let resp = self.send(&r, Some(self.sign(&s, &r))).await;
                ((401, "invalid_signature"), (resp, before))
            }
            Attack::StaleTimestamp | Attack::FutureTimestamp => {
                // Well past the 300 s window: a request signed at the
                // boundary second may arrive a second later and be in it.
                let skew = if matches!(a, Attack::StaleTimestamp) {
                    -330
                } else {
                    330
                };
                let ts = chrono::Utc::now().timestamp() + skew;
                let h =
                    owner
                        .signer
                        .sign_with(r.method, &r.path, &r.body, ts, &dzl_sdk::fresh_nonce());
                let before = (self.snapshot(), self.audit_head());
                let resp = self.send(&r, Some(h)).await;
                ((401, "stale_timestamp"), (resp, before))
            }
            Attack::ReplayedRequest => {
                // The request once, as its owner sent it…
                let h = self.sign(&owner.signer, &r);
                let first = self.send(&r, Some(h.clone())).await;
                assert!(
                    (200..300).contains(&first.status),
                    "{} {}: the valid request failed: {}",
                    e.method,
                    e.pattern,
                    String::from_utf8_lossy(&first.body)
                );
                // …then captured and sent again, byte for byte.
                let before = (self.snapshot(), self.audit_head());
                let resp = self.send(&r, Some(h)).await;
                ((401, "nonce_replayed"), (resp, before))
            }
            Attack::ReusedNonce => {
                // A nonce the tenant already used on another request…
                let nonce = dzl_sdk::fresh_nonce();
                let ts = chrono::Utc::now().timestamp();
                let probe = "/v1/codes/cod_00000000000000000000000000000000";
                let h = owner.signer.sign_with("GET", probe, b"", ts, &nonce);
                let first = self
                    .app
                    .anonymous()
                    .send_with("GET", probe, b"", Some(h))
                    .await
                    .unwrap();
                assert!(
                    first.status == 404 || first.status == 403,
                    "{}",
                    first.status
                );
                // …on a fresh, validly signed request.
                let h = owner
                    .signer
                    .sign_with(r.method, &r.path, &r.body, ts, &nonce);
                let before = (self.snapshot(), self.audit_head());
                let resp = self.send(&r, Some(h)).await;
                ((401, "nonce_replayed"), (resp, before))
            }
            Attack::SuspendedTenant => {
                let s = self.suspended(e.owner);
                let before = (self.snapshot(), self.audit_head());
                let resp = self.send(&r, Some(self.sign(&s.signer, &r))).await;
                ((403, "tenant_suspended"), (resp, before))
            }
            Attack::OtherTenantsObject => {
                let (who, status, code) = e.stranger?;
                let before = (self.snapshot(), self.audit_head());
                let resp = self
                    .send(&r, Some(self.sign(&self.tenant(who).signer, &r)))
                    .await;
                ((status, code), (resp, before))
            }
            Attack::WrongTenantKind => {
                // Every tenant of another kind.
                let others: Vec<Who> = [Who::Platform, Who::Funder, Who::Operator]
                    .into_iter()
                    .filter(|w| kind(*w) != kind(e.owner))
                    .collect();
                for w in &others[1..] {
                    let before = (self.snapshot(), self.audit_head());
                    let resp = self
                        .send(&r, Some(self.sign(&self.tenant(*w).signer, &r)))
                        .await;
                    self.check(e, a, &resp, (403, "forbidden"), before);
                }
                let before = (self.snapshot(), self.audit_head());
                let resp = self
                    .send(&r, Some(self.sign(&self.tenant(others[0]).signer, &r)))
                    .await;
                ((403, "forbidden"), (resp, before))
            }
        };
        let (resp, before) = sent;
        self.check(e, a, &resp, expected, before);
        Some(format!(
            "{:<7}{:<42}{:<20}{} {}",
            e.method,
            e.pattern,
            format!("{a:?}"),
            expected.0,
            expected.1
        ))
    }

    fn check(
        &self,
        e: &Endpoint,
        a: Attack,
        resp: &RawResponse,
        (status, code): (u16, &str),
        (snapshot, head): (Vec<String>, Vec<dzl_store::ChainRow>),
    ) {
        let what = format!("{} {} × {a:?}", e.method, e.pattern);
        let body = String::from_utf8_lossy(&resp.body);
        assert_eq!(resp.status, status, "{what}: {body}");
        assert_eq!(resp.json()["code"], code, "{what}: {body}");
        assert_problem(resp, status, code);
        assert!(
            snapshot == self.snapshot(),
            "{what}: the refusal changed stored state"
        );
        let state = self.app.state.clone();
        let entries = off_rt(move || state.store.audit_after(&head)).unwrap();
        for entry in entries {
            assert_ne!(
                entry.record.result, "ok",
                "{what}: the refusal was audited as a success: {:?}",
                entry.record
            );
        }
    }
}

fn kind(w: Who) -> TenantKind {
    match w {
        Who::Platform | Who::OtherPlatform => TenantKind::Platform,
        Who::Funder | Who::OtherFunder => TenantKind::Funder,
        Who::Operator => TenantKind::Operator,
    }
}

#[actix_web::test]
async fn every_signed_endpoint_refuses_every_attack_and_changes_nothing() {
    let app = spawn_app().await;
    // A suspended tenant of each kind.
    let keys = off_rt(|| admin::load_keys(&*app.state.store, &app.root)).unwrap();
    let add = |kind: TenantKind, who: Who| {
        off_rt(|| {
            let c = admin::add_tenant(
                &*app.state.store,
                &keys.keyring,
                "cli:test",
                NewTenant::new(kind, format!("Suspended {who:?}")),
            )
            .unwrap();
            app.state
                .store
                .set_tenant_state("cli:test", &c.tenant_id, TenantState::Suspended, "test")
                .unwrap();
            (
                who,
                Tenant {
                    id: c.tenant_id.to_string(),
                    signer: signer(&c.key_id, c.secret.as_str()),
                },
            )
        })
    };
    let suspended = [
        add(TenantKind::Platform, Who::Platform),
        add(TenantKind::Funder, Who::Funder),
        add(TenantKind::Operator, Who::Operator),
    ];
    off_rt(|| app.state.reload(true));
    let m = Matrix {
        app,
        suspended,
        seq: std::cell::Cell::new(0),
    };

    // The table covers every signed route of the router.
    let mut signed: Vec<(String, String)> = dzl_vault_server::routes()
        .into_iter()
        .filter(|(_, p, _)| !UNSIGNED.contains(p))
        .map(|(method, p, _)| (method.to_owned(), p.to_owned()))
        .collect();
    signed.sort();
    let mut covered: Vec<(String, String)> = ENDPOINTS
        .iter()
        .map(|e| (e.method.to_owned(), e.pattern.to_owned()))
        .collect();
    covered.sort();
    assert_eq!(covered, signed, "the matrix must cover every signed route");

    let mut rows = Vec::new();
    for e in &ENDPOINTS {
        for a in ATTACKS {
            if let Some(row) = m.attack(e, a).await {
                rows.push(row);
            }
        }
    }
    // 8 endpoints × 10 attacks, less "other tenant's object" where the
    // route has no object of another tenant (2).
    assert_eq!(rows.len(), 8 * 10 - 2, "{rows:#?}");
    eprintln!(
        "authorization matrix, {} rows:\n{}",
        rows.len(),
        rows.join("\n")
    );
}

/// The signature covers the timestamp exactly as sent (docs/api.md: TIMESTAMP
/// is the X-DZL-Timestamp value). A header spelled differently from the
/// signed decimal (`+N`, leading zeros) must not pass as that decimal.
#[actix_web::test]
async fn the_signature_covers_the_timestamp_header_as_sent() {
    let app = spawn_app().await;
    let path = "/v1/codes/cod_00000000000000000000000000000000";
    let ts = chrono::Utc::now().timestamp();
    for spelled in [format!("+{ts}"), format!("0{ts}"), format!("00{ts}")] {
        // Signed over the canonical decimal, sent as another spelling.
        let h = app
            .platform
            .signer
            .sign_with("GET", path, b"", ts, &dzl_sdk::fresh_nonce());
        let r = reqwest::Client::new()
            .get(format!("{}{path}", app.base))
            .header("X-DZL-Key-Id", h.key_id)
            .header("X-DZL-Timestamp", &spelled)
            .header("X-DZL-Nonce", h.nonce)
            .header("X-DZL-Signature", h.signature)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        assert!(
            status == 400 || status == 401,
            "X-DZL-Timestamp {spelled:?} passed with a signature over {ts}: {status}"
        );
    }
}
