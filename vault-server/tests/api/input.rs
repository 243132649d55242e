//! Bad input of every kind: a clear problem+json, nothing stored, the
//! server still healthy, and no value echoed back.

use serde_json::{json, Value};

use crate::helpers::*;

fn with(mut body: Value, pointer: &str, value: Value) -> Value {
    *body.pointer_mut(pointer).unwrap() = value;
    body
}

fn without(mut body: Value, parent: &str, field: &str) -> Value {
    body.pointer_mut(parent)
        .unwrap()
        .as_object_mut()
        .unwrap()
        .remove(field);
    body
}

#[actix_web::test]
async fn a_table_of_bad_deposits_is_refused_clearly() {
    let app = spawn_app().await;
    let ok = || deposit_body("BAD-1", json!([]));
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "malformed JSON",
            b"{\"external_ref\": ".to_vec(),
            400,
            "malformed_json",
        ),
        (
            "trailing garbage",
            [serde_json::to_vec(&ok()).unwrap(), b"}".to_vec()].concat(),
            400,
            "malformed_json",
        ),
        ("not an object", b"[]".to_vec(), 422, "validation_failed"),
        (
            "fields as an array",
            serde_json::to_vec(
                &ok()
                    .as_object()
                    .unwrap()
                    .values()
                    .cloned()
                    .collect::<Vec<_>>(),
            )
            .unwrap(),
            422,
            "validation_failed",
        ),
        (
            "unknown top-level field",
            serde_json::to_vec(&{
                let mut b = ok();
                b["nickname"] = json!("x");
                b
            })
            .unwrap(),
            422,
            "validation_failed",
        ),
        (
            "unknown applicant field",
            serde_json::to_vec(&{
                let mut b = ok();
                b["applicant"]["nickname"] = json!("x");
                b
            })
            .unwrap(),
            422,
            "validation_failed",
        ),
        (
            "bad check digit",
            serde_json::to_vec(&with(
                ok(),
                "/applicant/id_number",
                json!("110105194912310021"),
            ))
            .unwrap(),
            422,
            "validation_failed",
        ),
        (
            "impossible birth date",
            serde_json::to_vec(&with(
                ok(),
                "/applicant/id_number",
                json!("110105194902300020"),
            ))
            .unwrap(),
            422,
            "validation_failed",
        ),
        (
            "bad phone",
            serde_json::to_vec(&with(ok(), "/applicant/phone", json!("12800138000"))).unwrap(),
            422,
            "validation_failed",
        ),
        (
            "phone as a number",
            serde_json::to_vec(&with(ok(), "/applicant/phone", json!(13800138000u64))).unwrap(),
            422,
            "validation_failed",
        ),
        (
            "bad IP",
            serde_json::to_vec(&with(ok(), "/device/ip", json!("203.0.113.256"))).unwrap(),
            422,
            "validation_failed",
        ),
        (
            "missing consent",
            serde_json::to_vec(&without(ok(), "", "consent")).unwrap(),
            422,
            "validation_failed",
        ),
        (
            "bad purpose enum",
            serde_json::to_vec(&with(ok(), "/purpose", json!("mortgage"))).unwrap(),
            422,
            "validation_failed",
        ),
        (
            "bad os enum",
            serde_json::to_vec(&with(ok(), "/device/os", json!("beos"))).unwrap(),
            422,
            "validation_failed",
        ),
        (
            "negative TTL",
            serde_json::to_vec(&with(
                ok(),
                "/grants",
                json!([{"funder_id": app.funder.id, "scopes": ["risk"], "ttl_seconds": -5}]),
            ))
            .unwrap(),
            422,
            "validation_failed",
        ),
        (
            "score as string",
            serde_json::to_vec(&with(ok(), "/risk/score", json!("712"))).unwrap(),
            422,
            "validation_failed",
        ),
        (
            "score out of range",
            serde_json::to_vec(&with(ok(), "/risk/score", json!(1001))).unwrap(),
            422,
            "validation_failed",
        ),
        (
            "null optional",
            serde_json::to_vec(&with(ok(), "/device", json!(null))).unwrap(),
            422,
            "validation_failed",
        ),
        (
            "consent evidence not hex",
            serde_json::to_vec(&with(ok(), "/consent/evidence_sha256", json!("xyz"))).unwrap(),
            422,
            "validation_failed",
        ),
        (
            "empty scopes",
            serde_json::to_vec(&with(ok(), "/consent/scopes", json!([]))).unwrap(),
            422,
            "validation_failed",
        ),
        (
            "consent granted in the future",
            serde_json::to_vec(&with(
                ok(),
                "/consent/granted_at",
                json!("2099-01-01T00:00:00Z"),
            ))
            .unwrap(),
            422,
            "validation_failed",
        ),
        (
            "oversized body",
            serde_json::to_vec(&with(
                ok(),
                "/applicant/residence_address",
                json!("路".repeat(30000)),
            ))
            .unwrap(),
            413,
            "payload_too_large",
        ),
    ];
    for (why, body, status, code) in cases {
        let r = app
            .client(&app.platform)
            .send("POST", "/v1/deposits", &body)
            .await
            .unwrap();
        assert_eq!(
            r.status,
            status,
            "{why}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_problem(&r, status, code);
        let text = String::from_utf8_lossy(&r.body);
        for secret in [
            "110105194912310021",
            "12800138000",
            "13800138000",
            "203.0.113.256",
        ] {
            assert!(
                !text.contains(secret),
                "{why}: the error echoes a value: {text}"
            );
        }
    }
    // Wrong media type.
    let body = serde_json::to_vec(&ok()).unwrap();
    let h = app.platform.signer.sign("POST", "/v1/deposits", &body);
    let r = reqwest::Client::new()
        .post(format!("{}/v1/deposits", app.base))
        .header("X-DZL-Key-Id", h.key_id)
        .header("X-DZL-Timestamp", h.timestamp.to_string())
        .header("X-DZL-Nonce", h.nonce)
        .header("X-DZL-Signature", h.signature)
        .header("Content-Type", "text/plain")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    // A field pointer tells the caller where.
    let r = app
        .post(
            &app.platform,
            "/v1/deposits",
            &with(ok(), "/applicant/id_number", json!("110105194912310021")),
        )
        .await;
    assert_eq!(r.json()["field"], "/applicant/id_number");
    // Still healthy, and nothing was stored.
    let h = app.anonymous().send("GET", "/healthz", b"").await.unwrap();
    assert_eq!(h.status, 200);
    let sa = app
        .post(
            &app.operator,
            "/v1/subject-access",
            &json!({"id_type": "resident_id", "id_number": ID_NUMBER}),
        )
        .await
        .json();
    assert_eq!(sa["deposits"], json!([]));
}

#[actix_web::test]
async fn bad_redemption_and_outcome_bodies_are_refused() {
    let app = spawn_app().await;
    let r = app
        .post(
            &app.funder,
            "/v1/redemptions",
            &json!({"code": "ac_short", "purpose": "drawdown"}),
        )
        .await;
    assert_problem(&r, 422, "validation_failed");
    let r = app
        .post(
            &app.funder,
            "/v1/redemptions",
            &json!({"code": "ac_x", "purpose": "drawdown", "extra": 1}),
        )
        .await;
    assert_problem(&r, 422, "validation_failed");
    let r = app
        .post(
            &app.funder,
            "/v1/redemptions/red_00000000000000000000000000000000/outcome",
            &json!({"decision": "maybe"}),
        )
        .await;
    assert_problem(&r, 422, "validation_failed");
    let r = app
        .post(
            &app.operator,
            "/v1/subject-access",
            &json!({"id_type": "resident_id", "id_number": "110105194912310021"}),
        )
        .await;
    assert_problem(&r, 422, "validation_failed");
    // Refused redemptions are still audited.
    let entries = off_rt(|| app.state.store.audit_after(&[])).unwrap();
    assert_eq!(
        entries
            .iter()
            .filter(|e| e.record.result == "validation_failed")
            .count(),
        2
    );
}
