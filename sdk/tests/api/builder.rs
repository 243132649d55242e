//! The deposit builder refuses what the vault refuses — with the vault's
//! problem code and JSON pointer, and without echoing the value — and
//! nothing it refuses reaches the wire.

use chrono::{Duration, Utc};
use dzl_sdk::types::{ErrorCode, Group, IdType, Purpose, ScopeSet};
use dzl_sdk::{
    ApplicantBuilder, BuildError, ConsentBuilder, Deposit, DeviceBuilder, Error, RiskBuilder,
};
use serde_json::json;

use crate::assert_err;
use crate::helpers::*;

const FUNDER: &str = "ten_00000000000000000000000000000000";

fn check(result: Result<Deposit, BuildError>, code: ErrorCode, field: &str) -> BuildError {
    let e = result.expect_err("must be refused");
    assert_eq!((e.code(), e.field()), (code, field), "{e}");
    e
}

#[test]
fn a_complete_deposit_builds() {
    let d = base_deposit(Purpose::CreditApplication)
        .grant(FUNDER, applicant_and_risk(), Some(3600))
        .build()
        .unwrap();
    let r = d.request();
    assert_eq!(r.groups(), ScopeSet::ALL);
    assert_eq!(r.grants.len(), 1);
    // The evidence is hashed, never sent.
    let body = serde_json::to_string(r).unwrap();
    assert!(!body.contains("本人同意"));
    assert!(body.contains(&dzl_crypto::sha256_hex("本人同意……".as_bytes())));
}

#[test]
fn record_rules_are_the_vaults() {
    let bad_id = base_deposit(Purpose::CreditApplication)
        .applicant(ApplicantBuilder::new(
            NAME,
            IdType::ResidentId,
            "110105194912310021",
            PHONE,
        ))
        .build();
    let e = check(bad_id, ErrorCode::ValidationFailed, "/applicant/id_number");
    assert!(e.detail().contains("check digit"), "{e}");
    assert!(!e.to_string().contains("110105194912310021"));

    let bad_phone = base_deposit(Purpose::CreditApplication)
        .applicant(ApplicantBuilder::new(
            NAME,
            IdType::ResidentId,
            ID_NUMBER,
            "23800138000",
        ))
        .build();
    let e = check(bad_phone, ErrorCode::ValidationFailed, "/applicant/phone");
    assert!(!e.to_string().contains("23800138000"));

    let bad_ip = base_deposit(Purpose::CreditApplication)
        .device(DeviceBuilder::new(
            "d-1",
            dzl_sdk::types::Os::Ios,
            "300.1.1.1",
        ))
        .build();
    check(bad_ip, ErrorCode::ValidationFailed, "/device/ip");

    let repeated_tags = base_deposit(Purpose::CreditApplication)
        .risk(RiskBuilder::new(500).tag("a").tag("a"))
        .build();
    check(repeated_tags, ErrorCode::ValidationFailed, "/risk/tags");

    let score = RiskBuilder::new(1001).build().unwrap_err();
    assert_eq!(score.field(), "/score");

    let nan = base_deposit(Purpose::CreditApplication)
        .risk(RiskBuilder::new(500).feature("ratio", f64::NAN))
        .build();
    check(nan, ErrorCode::ValidationFailed, "/risk/features/ratio");

    let bad_grade = base_deposit(Purpose::CreditApplication)
        .risk(RiskBuilder::new(500).grade("b"))
        .build();
    check(bad_grade, ErrorCode::ValidationFailed, "/risk/grade");

    let long_name = ApplicantBuilder::new("名".repeat(65), IdType::Passport, "E12345678", PHONE)
        .build()
        .unwrap_err();
    assert_eq!(long_name.field(), "/name");

    let bad_ref = Deposit::builder("has space", Purpose::Drawdown)
        .consent(consent(ScopeSet::ALL))
        .applicant(ApplicantBuilder::new(
            NAME,
            IdType::ResidentId,
            ID_NUMBER,
            PHONE,
        ))
        .build();
    check(bad_ref, ErrorCode::ValidationFailed, "/external_ref");

    let bad_funder = base_deposit(Purpose::Drawdown)
        .grant("bank-a", applicant_and_risk(), None)
        .build();
    check(
        bad_funder,
        ErrorCode::ValidationFailed,
        "/grants/0/funder_id",
    );
}

fn consent(scopes: ScopeSet) -> ConsentBuilder {
    let now = Utc::now();
    ConsentBuilder::new("CNS-1", scopes, now, now + Duration::days(1)).evidence("text")
}

#[test]
fn missing_parts_are_named() {
    let no_applicant = Deposit::builder("APP-1", Purpose::Drawdown)
        .consent(consent(ScopeSet::ALL))
        .build();
    let e = check(no_applicant, ErrorCode::ValidationFailed, "");
    assert!(e.detail().contains("applicant"), "{e}");

    let now = Utc::now();
    let no_evidence = Deposit::builder("APP-1", Purpose::Drawdown)
        .consent(ConsentBuilder::new(
            "CNS-1",
            ScopeSet::ALL,
            now,
            now + Duration::days(1),
        ))
        .applicant(ApplicantBuilder::new(
            NAME,
            IdType::ResidentId,
            ID_NUMBER,
            PHONE,
        ))
        .build();
    let e = check(no_evidence, ErrorCode::ValidationFailed, "/consent");
    assert!(e.detail().contains("evidence_sha256"), "{e}");

    let bad_hash = Deposit::builder("APP-1", Purpose::Drawdown)
        .consent(consent(ScopeSet::ALL).evidence_sha256("ABC"))
        .applicant(ApplicantBuilder::new(
            NAME,
            IdType::ResidentId,
            ID_NUMBER,
            PHONE,
        ))
        .build();
    check(
        bad_hash,
        ErrorCode::ValidationFailed,
        "/consent/evidence_sha256",
    );
}

#[test]
fn consent_and_grant_rules_are_the_vaults() {
    let applicant_only = ScopeSet::single(Group::Applicant);
    let uncovered = base_deposit(Purpose::CreditApplication)
        .consent(consent(applicant_only))
        .build();
    let e = check(uncovered, ErrorCode::ConsentInsufficient, "/consent/scopes");
    assert!(
        e.detail().contains("device") && e.detail().contains("risk"),
        "{e}"
    );

    let now = Utc::now();
    let expired = base_deposit(Purpose::CreditApplication)
        .consent(
            ConsentBuilder::new(
                "CNS-1",
                ScopeSet::ALL,
                now - Duration::days(2),
                now - Duration::days(1),
            )
            .evidence("text"),
        )
        .build();
    check(expired, ErrorCode::ConsentExpired, "/consent/expires_at");

    let future = base_deposit(Purpose::CreditApplication)
        .consent(
            ConsentBuilder::new(
                "CNS-1",
                ScopeSet::ALL,
                now + Duration::hours(1),
                now + Duration::days(1),
            )
            .evidence("text"),
        )
        .build();
    check(future, ErrorCode::ValidationFailed, "/consent/granted_at");

    let backwards = base_deposit(Purpose::CreditApplication)
        .consent(ConsentBuilder::new("CNS-1", ScopeSet::ALL, now, now).evidence("text"))
        .build();
    check(
        backwards,
        ErrorCode::ValidationFailed,
        "/consent/expires_at",
    );

    // Applicant only deposited: a grant of risk exceeds it.
    let only = Deposit::builder("APP-1", Purpose::Drawdown)
        .consent(consent(ScopeSet::ALL))
        .applicant(ApplicantBuilder::new(
            NAME,
            IdType::ResidentId,
            ID_NUMBER,
            PHONE,
        ))
        .grant(FUNDER, applicant_only, None)
        .grant(FUNDER, applicant_and_risk(), None)
        .build();
    check(only, ErrorCode::GrantExceedsConsent, "/grants/1/scopes");

    let ttl = base_deposit(Purpose::CreditApplication)
        .grant(FUNDER, applicant_only, Some(0))
        .build();
    check(ttl, ErrorCode::InvalidTtl, "/grants/0/ttl_seconds");
    let ttl = base_deposit(Purpose::CreditApplication)
        .grant(FUNDER, applicant_only, Some(30 * 24 * 3600 + 1))
        .build();
    check(ttl, ErrorCode::InvalidTtl, "/grants/0/ttl_seconds");

    let mut many = base_deposit(Purpose::CreditApplication);
    for _ in 0..17 {
        many = many.grant(FUNDER, applicant_only, None);
    }
    check(many.build(), ErrorCode::ValidationFailed, "/grants");
}

#[test]
fn requests_made_elsewhere_are_checked_too() {
    let d = base_deposit(Purpose::CreditApplication).build().unwrap();
    let mut request = d.into_request();
    request.device = None;
    request.consent.scopes = ScopeSet::single(Group::Device);
    let e = Deposit::try_from(request).unwrap_err();
    assert_eq!(e.code(), ErrorCode::ConsentInsufficient);
}

#[tokio::test]
async fn other_calls_refuse_bad_input_before_sending() {
    // Nothing listens here: an attempt to send would fail as transport.
    let vault = dzl_sdk::Vault::new("http://127.0.0.1:9").unwrap();
    let signer = dzl_sdk::Signer::new("k", "s");
    let funder = vault.funder(signer.clone());
    match funder.redeem("ac_short", Purpose::CreditApplication).await {
        Err(Error::Invalid(e)) => {
            assert_eq!(
                (e.code(), e.field()),
                (ErrorCode::ValidationFailed, "/code")
            )
        }
        other => panic!("expected a local refusal, got {other:?}"),
    }
    let red = dzl_sdk::types::RedemptionId::parse(&format!("red_{}", "0".repeat(32))).unwrap();
    assert_err!(
        funder
            .report_outcome(
                &red,
                dzl_sdk::types::Decision::Approved,
                Some(10u64.pow(13))
            )
            .await,
        Error::Invalid(_)
    );
    let operator = vault.operator(signer.clone());
    assert_err!(
        operator
            .subject_access(IdType::ResidentId, "110105194912310021")
            .await,
        Error::Invalid(_)
    );
    let platform = vault.platform(signer);
    let dep = dzl_sdk::types::DepositId::parse(&format!("dep_{}", "0".repeat(32))).unwrap();
    let funder_id = dzl_sdk::types::TenantId::parse(FUNDER).unwrap();
    let e = platform
        .issue_code(&dep, &funder_id, ScopeSet::ALL, Some(0))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("invalid_ttl"));
}

#[tokio::test]
async fn the_vault_gives_the_same_verdicts() {
    // The same invalid bodies, sent raw: the vault's code and pointer are
    // the builder's.
    let v = start();
    let raw = dzl_sdk::RawClient::new(v.url.clone(), Some(v.platform.signer.clone()));
    let now = Utc::now();
    let body = |applicant: serde_json::Value, risk: serde_json::Value, scopes: &[&str]| {
        json!({
            "external_ref": reference(),
            "purpose": "credit_application",
            "consent": {"consent_id": "CNS-1", "granted_at": now.to_rfc3339(),
                        "expires_at": (now + Duration::days(1)).to_rfc3339(),
                        "scopes": scopes, "evidence_sha256": "a".repeat(64)},
            "applicant": applicant,
            "risk": risk,
        })
    };
    let good_applicant =
        json!({"name": NAME, "id_type": "resident_id", "id_number": ID_NUMBER, "phone": PHONE});
    let cases = [
        (
            body(
                json!({"name": NAME, "id_type": "resident_id", "id_number": "110105194912310021", "phone": PHONE}),
                json!({"score": 1}),
                &["applicant", "risk"],
            ),
            base_deposit(Purpose::CreditApplication)
                .applicant(ApplicantBuilder::new(
                    NAME,
                    IdType::ResidentId,
                    "110105194912310021",
                    PHONE,
                ))
                .build(),
        ),
        (
            body(
                good_applicant.clone(),
                json!({"score": 1, "tags": ["a", "a"]}),
                &["applicant", "risk"],
            ),
            base_deposit(Purpose::CreditApplication)
                .risk(RiskBuilder::new(1).tag("a").tag("a"))
                .build(),
        ),
        (
            body(good_applicant, json!({"score": 1}), &["applicant"]),
            Deposit::builder("APP-1", Purpose::CreditApplication)
                .consent(consent(ScopeSet::single(Group::Applicant)))
                .applicant(ApplicantBuilder::new(
                    NAME,
                    IdType::ResidentId,
                    ID_NUMBER,
                    PHONE,
                ))
                .risk(RiskBuilder::new(1))
                .build(),
        ),
    ];
    for (raw_body, built) in cases {
        let e = built.unwrap_err();
        let r = raw
            .send("POST", "/v1/deposits", raw_body.to_string().as_bytes())
            .await
            .unwrap();
        let p = r.json();
        assert_eq!(p["code"], e.code().as_str(), "{p}");
        assert_eq!(p["field"], e.field(), "{p}");
    }
}
