//! Exactly-once redemption and every way a code stops redeeming.

use chrono::Duration;
use serde_json::json;

use crate::helpers::*;

#[actix_web::test]
async fn thirty_two_concurrent_redemptions_of_one_code_succeed_once() {
    let app = spawn_app().await;
    let dep = app.deposit("APP-C", &["applicant"], 3600).await;
    let code = dep["codes"][0]["code"].as_str().unwrap().to_owned();
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let client = app.client(&app.funder);
        let body =
            serde_json::to_vec(&json!({"code": code, "purpose": "credit_application"})).unwrap();
        tasks.push(tokio::spawn(async move {
            client
                .send("POST", "/v1/redemptions", &body)
                .await
                .unwrap()
                .status
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        31,
        "{statuses:?}"
    );
    // And the audit trail has all 32 attempts.
    let entries = off_rt(|| app.state.store.audit_after(&[])).unwrap();
    assert_eq!(
        entries
            .iter()
            .filter(|e| e.record.operation == "redemption.create")
            .count(),
        32
    );
}

#[actix_web::test]
async fn expired_revoked_erased_and_foreign_codes_do_not_redeem() {
    let app = spawn_app().await;
    // Expiry: TTL 1 s, clock moved 2 s.
    let dep = app.deposit("APP-E", &["applicant"], 1).await;
    let expiring = dep["codes"][0]["code"].as_str().unwrap().to_owned();
    let expiring_id = dep["codes"][0]["code_id"].as_str().unwrap().to_owned();
    // Revoke.
    let dep = app.deposit("APP-R", &["applicant"], 3600).await;
    let revoked = dep["codes"][0]["code"].as_str().unwrap().to_owned();
    let revoked_id = dep["codes"][0]["code_id"].as_str().unwrap().to_owned();
    let r = app
        .post(
            &app.platform,
            &format!("/v1/codes/{revoked_id}/revoke"),
            &json!({}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["state"], "revoked");
    assert_problem(
        &app.redeem(&app.funder, &revoked, "credit_application")
            .await,
        410,
        "code_revoked",
    );
    // Erasure.
    let dep = app.deposit("APP-X", &["applicant", "risk"], 3600).await;
    let erased = dep["codes"][0]["code"].as_str().unwrap().to_owned();
    let erased_dep = dep["deposit_id"].as_str().unwrap().to_owned();
    let r = app
        .delete(&app.platform, &format!("/v1/deposits/{erased_dep}"))
        .await;
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
    assert_problem(
        &app.redeem(&app.funder, &erased, "credit_application").await,
        410,
        "code_revoked",
    );
    let r = app
        .post(
            &app.platform,
            &format!("/v1/deposits/{erased_dep}/codes"),
            &json!({"funder_id": app.funder.id, "scopes": ["risk"]}),
        )
        .await;
    assert_problem(&r, 410, "deposit_erased");
    // Wrong funder, unknown code, purpose mismatch.
    let dep = app.deposit("APP-W", &["applicant"], 3600).await;
    let good = dep["codes"][0]["code"].as_str().unwrap().to_owned();
    assert_problem(
        &app.redeem(&app.other_funder, &good, "credit_application")
            .await,
        404,
        "code_not_found",
    );
    let mut unknown = good.clone();
    unknown.replace_range(20..21, if &good[20..21] == "A" { "B" } else { "A" });
    assert_problem(
        &app.redeem(&app.funder, &unknown, "credit_application")
            .await,
        404,
        "code_not_found",
    );
    assert_problem(
        &app.redeem(&app.funder, &good, "drawdown").await,
        403,
        "purpose_mismatch",
    );
    // After all that, the right funder and purpose still redeem it, once.
    assert_eq!(
        app.redeem(&app.funder, &good, "credit_application")
            .await
            .status,
        200
    );
    assert_problem(
        &app.redeem(&app.funder, &good, "credit_application").await,
        409,
        "code_already_redeemed",
    );

    app.advance(Duration::seconds(2));
    assert_problem(
        &app.redeem(&app.funder, &expiring, "credit_application")
            .await,
        410,
        "code_expired",
    );
    assert_eq!(
        app.get(&app.platform, &format!("/v1/codes/{expiring_id}"))
            .await
            .json()["state"],
        "expired"
    );
    assert_problem(
        &app.post(
            &app.platform,
            &format!("/v1/codes/{expiring_id}/revoke"),
            &json!({}),
        )
        .await,
        410,
        "code_expired",
    );
}

#[actix_web::test]
async fn concurrent_deposits_under_one_reference_store_one_and_name_it_to_the_rest() {
    // A platform that retries a deposit whose answer it lost, many times at
    // once: one deposit is stored, and every refusal names it, so the
    // platform can issue a code for it or erase it.
    let app = spawn_app().await;
    let body = serde_json::to_vec(&deposit_body(
        "APP-RETRY",
        json!([{"funder_id": app.funder.id, "scopes": ["applicant"], "ttl_seconds": 600}]),
    ))
    .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (client, body) = (app.client(&app.platform), body.clone());
        tasks.push(tokio::spawn(async move {
            client.send("POST", "/v1/deposits", &body).await.unwrap()
        }));
    }
    let mut stored = Vec::new();
    let mut named = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        if r.status == 201 {
            stored.push(r.json()["deposit_id"].clone());
        } else {
            assert_problem(&r, 409, "duplicate_external_ref");
            named.push(r.json()["deposit_id"].clone());
        }
    }
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(named.len(), 15);
    assert!(named.iter().all(|id| *id == stored[0]), "{named:?}");
    let entries = off_rt(|| app.state.store.audit_after(&[])).unwrap();
    let deposits: Vec<_> = entries
        .iter()
        .filter(|e| e.record.operation == "deposit.create")
        .collect();
    assert_eq!(deposits.len(), 1);
    assert_eq!(deposits[0].record.deposit_id.as_deref(), stored[0].as_str());

    // The platform recovers: a new code for the deposit it was told of,
    // which the funder redeems; after erasure the refusal still names it,
    // and the deposit refuses new codes.
    let id = stored[0].as_str().unwrap().to_owned();
    let grant = json!({"funder_id": app.funder.id, "scopes": ["applicant"], "ttl_seconds": 600});
    let issued = app
        .post(&app.platform, &format!("/v1/deposits/{id}/codes"), &grant)
        .await;
    assert_eq!(
        issued.status,
        201,
        "{}",
        String::from_utf8_lossy(&issued.body)
    );
    let code = issued.json()["code"].as_str().unwrap().to_owned();
    let r = app.redeem(&app.funder, &code, "credit_application").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        app.delete(&app.platform, &format!("/v1/deposits/{id}"))
            .await
            .status,
        204
    );
    let r = app
        .client(&app.platform)
        .send("POST", "/v1/deposits", &body)
        .await
        .unwrap();
    assert_problem(&r, 409, "duplicate_external_ref");
    assert_eq!(r.json()["deposit_id"], id.as_str());
    assert_problem(
        &app.post(&app.platform, &format!("/v1/deposits/{id}/codes"), &grant)
            .await,
        410,
        "deposit_erased",
    );
}

#[actix_web::test]
async fn duplicate_refs_and_grants_beyond_consent_or_entitlement_store_nothing() {
    let app = spawn_app().await;
    let first = app.deposit("APP-D", &["applicant"], 60).await;
    let r = app
        .post(
            &app.platform,
            "/v1/deposits",
            &deposit_body("APP-D", json!([])),
        )
        .await;
    assert_problem(&r, 409, "duplicate_external_ref");
    // It names the platform's own deposit, and the reference as the field.
    assert_eq!(r.json()["deposit_id"], first["deposit_id"]);
    assert_eq!(r.json()["field"], "/external_ref");
    // Another platform may use the same reference.
    let r = app
        .post(
            &app.other_platform,
            "/v1/deposits",
            &deposit_body("APP-D", json!([])),
        )
        .await;
    assert_eq!(r.status, 201);

    let cases = [
        // Grant scope not consented.
        (
            {
                let mut b = deposit_body(
                    "G-1",
                    json!([{"funder_id": app.funder.id, "scopes": ["risk"]}]),
                );
                b["consent"]["scopes"] = json!(["applicant", "device", "risk"]);
                b.as_object_mut().unwrap().remove("risk");
                b
            },
            "grant_exceeds_consent",
        ),
        (
            {
                let mut b = deposit_body(
                    "G-2",
                    json!([{"funder_id": app.funder.id, "scopes": ["applicant"]}]),
                );
                b["consent"]["scopes"] = json!(["device", "risk"]);
                b
            },
            "consent_insufficient",
        ),
        // Funder B is entitled to risk only, and drawdown only.
        (
            deposit_body(
                "G-3",
                json!([{"funder_id": app.other_funder.id, "scopes": ["applicant"]}]),
            ),
            "funder_not_entitled",
        ),
        (
            deposit_body(
                "G-4",
                json!([{"funder_id": app.other_funder.id, "scopes": ["risk"]}]),
            ),
            "funder_not_entitled",
        ),
        (
            deposit_body(
                "G-5",
                json!([{"funder_id": app.platform.id, "scopes": ["risk"]}]),
            ),
            "unknown_funder",
        ),
        (
            deposit_body(
                "G-6",
                json!([{"funder_id": app.funder.id, "scopes": ["risk"], "ttl_seconds": 0}]),
            ),
            "invalid_ttl",
        ),
        (
            deposit_body(
                "G-7",
                json!([{"funder_id": app.funder.id, "scopes": ["risk"], "ttl_seconds": 2592001}]),
            ),
            "invalid_ttl",
        ),
        (
            {
                let mut b = deposit_body("G-8", json!([]));
                b["consent"]["expires_at"] =
                    json!((chrono::Utc::now() - Duration::minutes(1)).to_rfc3339());
                b["consent"]["granted_at"] =
                    json!((chrono::Utc::now() - Duration::days(2)).to_rfc3339());
                b
            },
            "consent_expired",
        ),
    ];
    for (body, code) in cases {
        let r = app.post(&app.platform, "/v1/deposits", &body).await;
        assert_problem(&r, 422, code);
    }
    // Nothing of those was stored: only the two accepted deposits exist.
    let sa = app
        .post(
            &app.operator,
            "/v1/subject-access",
            &json!({"id_type": "resident_id", "id_number": ID_NUMBER}),
        )
        .await
        .json();
    assert_eq!(sa["deposits"].as_array().unwrap().len(), 2, "{sa}");
}

#[actix_web::test]
async fn guessing_funders_are_throttled_then_suspended() {
    let mut opts = Options::default();
    opts.settings.limits.failed_redemptions_per_minute = 3;
    opts.settings.limits.failed_redemptions_per_hour = 5;
    let app = spawn_app_with(opts).await;
    let dep = app.deposit("APP-G", &["applicant"], 3600).await;
    let good = dep["codes"][0]["code"].as_str().unwrap().to_owned();
    let guess = |i: usize| format!("ac_{}", format!("{i:0>32}").replace('0', "A"));
    for i in 0..3 {
        assert_problem(
            &app.redeem(&app.funder, &guess(i), "credit_application")
                .await,
            404,
            "code_not_found",
        );
    }
    let r = app.redeem(&app.funder, &good, "credit_application").await;
    assert_problem(&r, 429, "rate_limited");
    assert!(r.headers.get("retry-after").is_some());
    // Already redeemed and expired codes do not count: the next minute is clean.
    app.advance(Duration::seconds(61));
    for i in 3..5 {
        assert_problem(
            &app.redeem(&app.funder, &guess(i), "credit_application")
                .await,
            404,
            "code_not_found",
        );
    }
    // The fifth failure in the hour suspended the funder.
    let r = app.redeem(&app.funder, &good, "credit_application").await;
    assert_problem(&r, 403, "tenant_suspended");
    let entries = off_rt(|| app.state.store.audit_after(&[])).unwrap();
    assert!(entries
        .iter()
        .any(|e| e.record.operation == "tenant.suspend" && e.record.actor == "system"));
    // An operator resumes it; the code still redeems.
    let funder_id = dzl_types::TenantId::parse(&app.funder.id).unwrap();
    off_rt(|| {
        app.state.store.set_tenant_state(
            "cli:test",
            &funder_id,
            dzl_store::TenantState::Active,
            "resumed",
        )
    })
    .unwrap();
    off_rt(|| app.state.reload(true));
    assert_eq!(
        app.redeem(&app.funder, &good, "credit_application")
            .await
            .status,
        200
    );
}
