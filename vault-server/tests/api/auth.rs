//! Signed requests: every failure is refused before anything happens, and a
//! tenant touches only what it owns.

use serde_json::json;

use crate::helpers::*;

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[actix_web::test]
async fn signature_failures_replays_and_skew_are_refused() {
    let app = spawn_app().await;
    let body = serde_json::to_vec(&deposit_body("A-1", json!([]))).unwrap();
    let c = app.client(&app.platform);
    let s = &app.platform.signer;

    let r = app
        .anonymous()
        .send("POST", "/v1/deposits", &body)
        .await
        .unwrap();
    assert_problem(&r, 401, "missing_signature");

    let wrong = signer(s.key_id(), "not-the-secret");
    let r = c
        .send_with(
            "POST",
            "/v1/deposits",
            &body,
            Some(wrong.sign("POST", "/v1/deposits", &body)),
        )
        .await
        .unwrap();
    assert_problem(&r, 401, "invalid_signature");

    let unknown = signer("k_unknown", "whatever");
    let r = c
        .send_with(
            "POST",
            "/v1/deposits",
            &body,
            Some(unknown.sign("POST", "/v1/deposits", &body)),
        )
        .await
        .unwrap();
    assert_problem(&r, 401, "invalid_signature");

    // Signed over another body or path.
    let h = s.sign("POST", "/v1/deposits", b"{}");
    assert_problem(
        &c.send_with("POST", "/v1/deposits", &body, Some(h))
            .await
            .unwrap(),
        401,
        "invalid_signature",
    );
    let h = s.sign("POST", "/v1/deposits?x=1", &body);
    assert_problem(
        &c.send_with("POST", "/v1/deposits", &body, Some(h))
            .await
            .unwrap(),
        401,
        "invalid_signature",
    );

    // Past the 300 s skew by more than a second either way: the server
    // reads its clock after this one, and a second that turns between the
    // two let `now() + 301` through as exactly 300 s off (a CI run).
    for ts in [now() - 302, now() + 302] {
        let h = s.sign_with("POST", "/v1/deposits", &body, ts, &dzl_sdk::fresh_nonce());
        assert_problem(
            &c.send_with("POST", "/v1/deposits", &body, Some(h))
                .await
                .unwrap(),
            401,
            "stale_timestamp",
        );
    }
    let h = s.sign_with("POST", "/v1/deposits", &body, now(), "short");
    assert_problem(
        &c.send_with("POST", "/v1/deposits", &body, Some(h))
            .await
            .unwrap(),
        400,
        "invalid_header",
    );

    // A replay of an accepted request does nothing.
    let h = s.sign("POST", "/v1/deposits", &body);
    let r = c
        .send_with("POST", "/v1/deposits", &body, Some(h.clone()))
        .await
        .unwrap();
    assert_eq!(r.status, 201);
    let r = c
        .send_with("POST", "/v1/deposits", &body, Some(h))
        .await
        .unwrap();
    assert_problem(&r, 401, "nonce_replayed");

    // Wrong kind of tenant.
    let r = app
        .post(&app.funder, "/v1/deposits", &deposit_body("A-2", json!([])))
        .await;
    assert_problem(&r, 403, "forbidden");
    let r = app
        .post(
            &app.platform,
            "/v1/redemptions",
            &json!({"code": "ac_x", "purpose": "drawdown"}),
        )
        .await;
    assert_problem(&r, 403, "forbidden");
    let r = app
        .post(
            &app.platform,
            "/v1/subject-access",
            &json!({"id_type": "resident_id", "id_number": ID_NUMBER}),
        )
        .await;
    assert_problem(&r, 403, "forbidden");
}

#[actix_web::test]
async fn tenants_touch_only_what_they_own_and_suspended_ones_nothing() {
    let app = spawn_app().await;
    let dep = app.deposit("ISO-1", &["applicant"], 3600).await;
    let deposit_id = dep["deposit_id"].as_str().unwrap();
    let code_id = dep["codes"][0]["code_id"].as_str().unwrap();
    let other = &app.other_platform;
    assert_problem(
        &app.get(other, &format!("/v1/codes/{code_id}")).await,
        404,
        "code_not_found",
    );
    assert_problem(
        &app.post(other, &format!("/v1/codes/{code_id}/revoke"), &json!({}))
            .await,
        404,
        "code_not_found",
    );
    assert_problem(
        &app.delete(other, &format!("/v1/deposits/{deposit_id}"))
            .await,
        404,
        "deposit_not_found",
    );
    let r = app
        .post(
            other,
            &format!("/v1/deposits/{deposit_id}/codes"),
            &json!({"funder_id": app.funder.id, "scopes": ["applicant"]}),
        )
        .await;
    assert_problem(&r, 404, "deposit_not_found");
    // The code is untouched.
    assert_eq!(
        app.get(&app.platform, &format!("/v1/codes/{code_id}"))
            .await
            .json()["state"],
        "issued"
    );

    // Another funder cannot report on this funder's redemption.
    let code = dep["codes"][0]["code"].as_str().unwrap();
    let rid = app
        .redeem(&app.funder, code, "credit_application")
        .await
        .json()["redemption_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app
        .post(
            &app.other_funder,
            &format!("/v1/redemptions/{rid}/outcome"),
            &json!({"decision": "approved"}),
        )
        .await;
    assert_problem(&r, 404, "redemption_not_found");

    // Malformed ids are simply not found.
    assert_problem(
        &app.get(&app.platform, "/v1/codes/cod_XYZ").await,
        404,
        "code_not_found",
    );

    // Suspension by an operator takes effect without a restart.
    let id = dzl_types::TenantId::parse(&app.platform.id).unwrap();
    off_rt(|| {
        app.state
            .store
            .set_tenant_state("cli:test", &id, dzl_store::TenantState::Suspended, "test")
    })
    .unwrap();
    let mut refused = false;
    for _ in 0..40 {
        let r = app
            .get(&app.platform, &format!("/v1/codes/{code_id}"))
            .await;
        if r.status == 403 {
            assert_problem(&r, 403, "tenant_suspended");
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(refused, "the suspension was not picked up");
}

#[actix_web::test]
async fn rate_limits_answer_429_with_retry_after() {
    let app = spawn_app().await;
    let keys = off_rt(|| dzl_store::admin::load_keys(&*app.state.store, &app.root)).unwrap();
    let slow = off_rt(|| {
        dzl_store::admin::add_tenant(
            &*app.state.store,
            &keys.keyring,
            "cli:test",
            dzl_store::admin::NewTenant {
                rate_limit: Some(3),
                ..dzl_store::admin::NewTenant::new(dzl_store::TenantKind::Platform, "Slow")
            },
        )
    })
    .unwrap();
    off_rt(|| app.state.reload(true));
    let slow = Tenant {
        id: slow.tenant_id.to_string(),
        signer: signer(&slow.key_id, slow.secret.as_str()),
    };
    // A burst of 12 at once against 3 tokens (refilling 3/s): whatever the
    // latency of one request, most of the burst finds the bucket empty.
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let client = app.client(&slow);
        tasks.push(tokio::spawn(async move {
            client
                .send("GET", "/v1/codes/cod_00000000000000000000000000000000", b"")
                .await
                .unwrap()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        if r.status == 429 {
            assert_problem(&r, 429, "rate_limited");
            assert!(r.headers.get("retry-after").is_some());
        } else {
            assert_problem(&r, 404, "code_not_found");
        }
        statuses.push(r.status);
    }
    assert!(
        statuses.iter().filter(|s| **s == 429).count() >= 5,
        "{statuses:?}"
    );
    // Other tenants are not affected.
    assert_problem(
        &app.get(
            &app.platform,
            "/v1/codes/cod_00000000000000000000000000000000",
        )
        .await,
        404,
        "code_not_found",
    );
}

#[actix_web::test]
async fn a_pinned_tenant_is_refused_without_its_certificate_and_the_refusal_is_audited() {
    // Plain HTTP: no connection can present a certificate, so a tenant
    // pinned to one is refused whatever it signs, and nothing happens.
    let app = spawn_app().await;
    let id = dzl_types::TenantId::parse(&app.platform.id).unwrap();
    let pin = dzl_crypto::CertPin::subject("CN=platform-a").unwrap();
    let before = off_rt(|| app.state.store.audit_chains()).unwrap();
    assert!(off_rt(|| app
        .state
        .store
        .set_tenant_cert_pin("cli:test", &id, Some(pin.clone())))
    .unwrap());
    // Pinning again to the same certificate changes nothing.
    assert!(!off_rt(|| app
        .state
        .store
        .set_tenant_cert_pin("cli:test", &id, Some(pin.clone())))
    .unwrap());
    off_rt(|| app.state.reload(true));

    let r = app
        .post(
            &app.platform,
            "/v1/deposits",
            &deposit_body("PINNED-1", json!([])),
        )
        .await;
    assert_problem(&r, 401, "certificate_mismatch");
    // Other tenants are not affected.
    let other = app
        .post(
            &app.other_platform,
            "/v1/deposits",
            &deposit_body("PINNED-2", json!([])),
        )
        .await;
    assert_eq!(other.status, 201, "{:?}", other.json());

    let entries = off_rt(|| app.state.store.audit_after(&before)).unwrap();
    let ops: Vec<(String, String, String)> = entries
        .iter()
        .map(|e| {
            (
                e.record.operation.clone(),
                e.record.result.clone(),
                e.record.actor.clone(),
            )
        })
        .collect();
    assert!(
        ops.contains(&("tenant.pin".into(), "ok".into(), "cli:test".into())),
        "{ops:?}"
    );
    assert!(
        ops.contains(&(
            "authenticate".into(),
            "certificate_mismatch".into(),
            app.platform.id.clone()
        )),
        "{ops:?}"
    );
    assert_eq!(
        entries
            .iter()
            .filter(|e| e.record.operation == "tenant.pin")
            .count(),
        1,
        "the no-op pin is not audited"
    );
    assert!(
        !ops.iter()
            .any(|(op, _, actor)| op == "deposit.create" && actor == &app.platform.id),
        "{ops:?}"
    );

    // Unpinned, the same tenant deposits the same external_ref: the refused
    // request left nothing behind.
    assert!(off_rt(|| app.state.store.set_tenant_cert_pin("cli:test", &id, None)).unwrap());
    off_rt(|| app.state.reload(true));
    let r = app
        .post(
            &app.platform,
            "/v1/deposits",
            &deposit_body("PINNED-1", json!([])),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.json());
}

/// The other suite of the vault under test.
fn other_suite() -> dzl_crypto::Suite {
    match suite() {
        dzl_crypto::Suite::Intl => dzl_crypto::Suite::Gm,
        dzl_crypto::Suite::Gm => dzl_crypto::Suite::Intl,
    }
}

/// A vault accepts only its own suite's request signature: the other
/// suite's, or an algorithm nobody knows, is refused as such, before the
/// signature is even checked, and nothing happens.
#[actix_web::test]
async fn a_request_signed_with_another_suites_algorithm_is_refused_as_such() {
    let app = spawn_app().await;
    let body = serde_json::to_vec(&deposit_body("ALG-1", json!([]))).unwrap();
    let c = app.client(&app.platform);
    let s = &app.platform.signer;
    let send = |h| c.send_with("POST", "/v1/deposits", &body, Some(h));

    let other = s.clone().for_suite(other_suite());
    let r = send(other.sign("POST", "/v1/deposits", &body))
        .await
        .unwrap();
    assert_problem(&r, 401, "unsupported_signature_algorithm");
    let expected = dzl_types::signing::SignatureAlgorithm::for_suite(suite()).as_str();
    assert_eq!(
        r.json()["detail"],
        format!("This vault accepts only {expected} request signatures")
    );

    let mut h = s.sign("POST", "/v1/deposits", &body);
    let tag = h.signature.rsplit(' ').next().unwrap().to_owned();
    h.signature = format!("HMAC-MD5 {tag}");
    assert_problem(
        &send(h).await.unwrap(),
        401,
        "unsupported_signature_algorithm",
    );

    let mut h = s.sign("POST", "/v1/deposits", &body);
    h.signature = format!("{expected} not base64!");
    assert_problem(&send(h).await.unwrap(), 400, "invalid_header");

    // The vault's own algorithm, named explicitly, is accepted; nothing
    // refused above was stored.
    let mut h = s.sign("POST", "/v1/deposits", &body);
    let own = h.signature.rsplit(' ').next().unwrap().to_owned();
    h.signature = format!("{expected} {own}");
    let r = send(h).await.unwrap();
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
}
