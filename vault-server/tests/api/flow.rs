//! The core flow: deposit → code → scoped redemption → receipt → outcome.

use serde_json::json;

use crate::helpers::*;

#[actix_web::test]
async fn deposit_redeem_verify_receipt_and_report_outcome() {
    let app = spawn_app().await;
    let dep = app.deposit("APP-1", &["applicant", "risk"], 3600).await;
    let deposit_id = dep["deposit_id"].as_str().unwrap();
    assert!(dep["subject_ref"].as_str().unwrap().starts_with("sub_"));
    let code = dep["codes"][0]["code"].as_str().unwrap();
    let code_id = dep["codes"][0]["code_id"].as_str().unwrap();
    assert!(code.starts_with("ac_") && code.len() == 35);
    assert_eq!(dep["codes"][0]["scopes"], json!(["applicant", "risk"]));

    let r = app.redeem(&app.funder, code, "credit_application").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    // Exactly the granted groups, exactly as deposited.
    assert_eq!(v["applicant"], applicant());
    assert_eq!(v["risk"]["score"], 712);
    assert_eq!(v["risk"]["features"]["age_months"], 17);
    assert!(v.get("device").is_none(), "device was not granted");
    assert_eq!(v["deposit_id"], deposit_id);
    assert_eq!(v["platform_id"], app.platform.id);
    assert_eq!(v["external_ref"], "APP-1");
    assert_eq!(v["consent"]["consent_id"], "CNS-77");

    // The receipt verifies under the published key and commits to the groups.
    let keys = app
        .anonymous()
        .send("GET", "/v1/receipt-keys", b"")
        .await
        .unwrap()
        .json();
    let receipt = &v["receipt"];
    let key = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key_id"] == receipt["key_id"])
        .unwrap();
    assert_eq!(keys["suite"], suite().as_str());
    assert_eq!(key["algorithm"], receipt_algorithm().as_str());
    let signed = receipt["signed"].as_str().unwrap();
    dzl_crypto::verify_receipt_signature_with(
        receipt_algorithm(),
        key["public_key"].as_str().unwrap(),
        signed.as_bytes(),
        receipt["signature"].as_str().unwrap(),
    )
    .expect("receipt verifies");
    let mut tampered = signed.replace("applicant", "applicanT");
    tampered.push(' ');
    assert!(dzl_crypto::verify_receipt_signature_with(
        receipt_algorithm(),
        key["public_key"].as_str().unwrap(),
        tampered.as_bytes(),
        receipt["signature"].as_str().unwrap()
    )
    .is_err());
    let body: serde_json::Value = serde_json::from_str(signed).unwrap();
    assert_eq!(body["redemption_id"], v["redemption_id"]);
    assert_eq!(body["code_id"], code_id);
    assert_eq!(body["funder_id"], app.funder.id);
    let released = json!({"applicant": v["applicant"], "risk": v["risk"]});
    let jcs = serde_jcs::to_vec(&released).unwrap();
    assert_eq!(body["groups_sha256"], dzl_crypto::sha256_hex(&jcs));
    assert_eq!(
        serde_jcs::to_string(&body).unwrap(),
        signed,
        "signed text is canonical JSON"
    );

    // Outcome, then the platform sees it.
    let rid = v["redemption_id"].as_str().unwrap();
    let r = app
        .post(
            &app.funder,
            &format!("/v1/redemptions/{rid}/outcome"),
            &json!({"decision": "approved", "amount_fen": 500000}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = app
        .post(
            &app.funder,
            &format!("/v1/redemptions/{rid}/outcome"),
            &json!({"decision": "declined"}),
        )
        .await;
    assert_problem(&r, 409, "outcome_already_reported");
    let s = app
        .get(&app.platform, &format!("/v1/codes/{code_id}"))
        .await
        .json();
    assert_eq!(s["state"], "redeemed");
    assert_eq!(s["outcome"]["decision"], "approved");
    assert_eq!(s["outcome"]["amount_fen"], 500000);
    assert!(s["redeemed_at"].is_string());

    // Subject access shows the deposit and the redemption.
    let r = app
        .post(
            &app.operator,
            "/v1/subject-access",
            &json!({"id_type": "resident_id", "id_number": ID_NUMBER}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let sa = r.json();
    assert_eq!(sa["deposits"][0]["deposit_id"], deposit_id);
    assert_eq!(sa["redemptions"][0]["funder_id"], app.funder.id);
    assert_eq!(sa["redemptions"][0]["scopes"], json!(["applicant", "risk"]));
    assert_eq!(sa["redemptions"][0]["outcome"]["decision"], "approved");

    // The audit chain holds, and usage was metered.
    let verified = off_rt(|| app.state.store.verify_audit(&mut |_| {})).unwrap();
    assert!(verified.is_ok(), "{verified:?}");
    let usage = off_rt(|| app.state.store.usage()).unwrap();
    let calls = |op: &str| {
        usage
            .iter()
            .filter(|u| u.operation == op && u.outcome == "ok")
            .map(|u| u.calls)
            .sum::<u64>()
    };
    assert_eq!(calls("deposit.create"), 1);
    assert_eq!(calls("redemption.create"), 1);
    assert_eq!(calls("outcome.report"), 1);
}

#[actix_web::test]
async fn codes_can_be_issued_later_and_deposits_need_no_grants() {
    let app = spawn_app().await;
    let r = app
        .post(
            &app.platform,
            "/v1/deposits",
            &deposit_body("APP-2", json!([])),
        )
        .await;
    assert_eq!(r.status, 201);
    let dep = r.json();
    assert_eq!(dep["codes"], json!([]));
    let id = dep["deposit_id"].as_str().unwrap();
    let r = app
        .post(
            &app.platform,
            &format!("/v1/deposits/{id}/codes"),
            &json!({"funder_id": app.funder.id, "scopes": ["device"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let code = r.json()["code"].as_str().unwrap().to_owned();
    let v = app
        .redeem(&app.funder, &code, "credit_application")
        .await
        .json();
    assert_eq!(v["device"]["device_id"], "d-1");
    assert!(v.get("applicant").is_none() && v.get("risk").is_none());
    // A second funder code for another purpose the funder lacks: refused.
    let r = app
        .post(
            &app.platform,
            &format!("/v1/deposits/{id}/codes"),
            &json!({"funder_id": app.other_funder.id, "scopes": ["risk"]}),
        )
        .await;
    assert_problem(&r, 422, "funder_not_entitled");
}
