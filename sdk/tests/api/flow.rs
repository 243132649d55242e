//! Every method of the three async clients, on the happy path.

use dzl_sdk::types::{CodeState, Decision, Group, IdType, Purpose, ScopeSet};
use dzl_sdk::Error;

use crate::assert_err;
use crate::helpers::*;

#[tokio::test]
async fn deposit_redeem_outcome_and_status() {
    let v = start();
    let (platform, funder) = (v.platform(), v.funder());

    let created = platform
        .deposit(&v.deposit(applicant_and_risk(), 3600))
        .await
        .unwrap();
    assert_eq!(created.codes.len(), 1);
    let issued = &created.codes[0];
    assert_eq!(issued.funder_id, v.funder.id);
    assert_eq!(issued.scopes, applicant_and_risk());
    assert_eq!(issued.purpose, Purpose::CreditApplication);
    assert!(issued.code.starts_with("ac_"));

    let status = platform.code_status(&issued.code_id).await.unwrap();
    assert_eq!(status.state, CodeState::Issued);
    assert_eq!(status.deposit_id, created.deposit_id);
    assert!(status.redeemed_at.is_none() && status.outcome.is_none());

    let r = funder
        .redeem(&issued.code, Purpose::CreditApplication)
        .await
        .unwrap();
    // Exactly the granted groups, typed.
    assert_eq!(r.scopes(), applicant_and_risk());
    assert_eq!(r.deposit_id(), &created.deposit_id);
    assert_eq!(r.purpose(), Purpose::CreditApplication);
    let a = r.applicant().expect("applicant released");
    assert_eq!(a.name.as_str(), NAME);
    assert_eq!(a.id_type, IdType::ResidentId);
    assert_eq!(a.id_number.as_str(), ID_NUMBER);
    assert_eq!(a.phone.as_str(), PHONE);
    assert_eq!(r.risk().expect("risk released").score.get(), 712);
    assert!(r.device().is_none(), "device was not granted");
    assert_eq!(r.consent().consent_id.as_str(), "CNS-77");
    assert_eq!(r.consent().scopes, ScopeSet::ALL);
    let groups = r.released_groups();
    assert_eq!(groups.keys().collect::<Vec<_>>(), ["applicant", "risk"]);
    // Debug shows no personal data.
    assert!(!format!("{r:?}").contains(NAME));

    let receipt = funder.verify_receipt(&r).await.unwrap();
    assert_eq!(&receipt.body.redemption_id, r.redemption_id());
    assert_eq!(receipt.body.code_id, issued.code_id);
    assert_eq!(receipt.body.funder_id, v.funder.id);

    let outcome = funder
        .report_outcome(r.redemption_id(), Decision::Approved, Some(500_000))
        .await
        .unwrap();
    assert_eq!(outcome.decision, Decision::Approved);
    assert_eq!(outcome.amount_fen, Some(500_000));

    let status = platform.code_status(&issued.code_id).await.unwrap();
    assert_eq!(status.state, CodeState::Redeemed);
    assert_eq!(status.redeemed_at, Some(r.redeemed_at()));
    let seen = status.outcome.expect("outcome visible to the platform");
    assert_eq!(seen.decision, Decision::Approved);
    assert_eq!(&seen.redemption_id, r.redemption_id());
}

#[tokio::test]
async fn codes_can_be_issued_after_the_deposit() {
    let v = start();
    let (platform, funder) = (v.platform(), v.funder());
    let created = platform
        .deposit(&base_deposit(Purpose::Drawdown).build().unwrap())
        .await
        .unwrap();
    assert!(created.codes.is_empty());

    let device_only = ScopeSet::single(Group::Device);
    let issued = platform
        .issue_code(&created.deposit_id, &v.funder.id, device_only, Some(60))
        .await
        .unwrap();
    assert_eq!(issued.scopes, device_only);
    assert_eq!(issued.purpose, Purpose::Drawdown);

    let r = funder
        .redeem(&issued.code, Purpose::Drawdown)
        .await
        .unwrap();
    assert!(r.applicant().is_none() && r.risk().is_none());
    assert_eq!(r.device().expect("device").device_id.as_str(), "d-1");
    funder.verify_receipt(&r).await.unwrap();

    // The vault's default lifetime when none is asked for.
    let default_ttl = platform
        .issue_code(&created.deposit_id, &v.funder.id, device_only, None)
        .await
        .unwrap();
    let hours = (default_ttl.expires_at - chrono::Utc::now()).num_minutes();
    assert!((23 * 60..=24 * 60).contains(&hours), "{hours} minutes");
}

#[tokio::test]
async fn revoke_is_idempotent_and_stops_redemption() {
    let v = start();
    let (platform, funder) = (v.platform(), v.funder());
    let created = platform
        .deposit(&v.deposit(applicant_and_risk(), 3600))
        .await
        .unwrap();
    let issued = &created.codes[0];

    let s = platform.revoke_code(&issued.code_id).await.unwrap();
    assert_eq!(s.state, CodeState::Revoked);
    let again = platform.revoke_code(&issued.code_id).await.unwrap();
    assert_eq!(again.state, CodeState::Revoked);

    assert_err!(
        funder
            .redeem(&issued.code, Purpose::CreditApplication)
            .await,
        Error::CodeRevoked
    );
}

#[tokio::test]
async fn erase_is_idempotent_and_kills_the_codes() {
    let v = start();
    let (platform, funder) = (v.platform(), v.funder());
    let created = platform
        .deposit(&v.deposit(applicant_and_risk(), 3600))
        .await
        .unwrap();
    platform.erase_deposit(&created.deposit_id).await.unwrap();
    platform.erase_deposit(&created.deposit_id).await.unwrap();

    let issued = &created.codes[0];
    assert_eq!(
        platform.code_status(&issued.code_id).await.unwrap().state,
        CodeState::Revoked
    );
    assert_err!(
        funder
            .redeem(&issued.code, Purpose::CreditApplication)
            .await,
        Error::CodeRevoked
    );
    assert_err!(
        platform
            .issue_code(
                &created.deposit_id,
                &v.funder.id,
                applicant_and_risk(),
                None
            )
            .await,
        Error::DepositErased
    );
}

#[tokio::test]
async fn subject_access_lists_deposits_and_redemptions() {
    let v = start();
    let (platform, funder, operator) = (v.platform(), v.funder(), v.operator());
    let created = platform
        .deposit(&v.deposit(applicant_and_risk(), 3600))
        .await
        .unwrap();
    let r = funder
        .redeem(&created.codes[0].code, Purpose::CreditApplication)
        .await
        .unwrap();
    funder
        .report_outcome(r.redemption_id(), Decision::Declined, None)
        .await
        .unwrap();

    let report = operator
        .subject_access(IdType::ResidentId, ID_NUMBER)
        .await
        .unwrap();
    assert_eq!(report.deposits.len(), 1);
    assert_eq!(report.deposits[0].deposit_id, created.deposit_id);
    assert_eq!(report.deposits[0].platform_id, v.platform.id);
    assert_eq!(report.redemptions.len(), 1);
    let red = &report.redemptions[0];
    assert_eq!(&red.redemption_id, r.redemption_id());
    assert_eq!(red.funder_id, v.funder.id);
    assert_eq!(red.scopes, applicant_and_risk());
    assert_eq!(
        red.outcome.as_ref().map(|o| o.decision),
        Some(Decision::Declined)
    );

    let nobody = operator
        .subject_access(IdType::Passport, "E12345678")
        .await
        .unwrap();
    assert!(nobody.deposits.is_empty() && nobody.redemptions.is_empty());
}

#[tokio::test]
async fn receipt_keys_are_published() {
    let v = start();
    let keys = v.funder().receipt_keys().await.unwrap();
    assert!(!keys.is_empty());
    assert!(keys.iter().all(|k| k.algorithm == "Ed25519"));
    assert_eq!(v.vault().receipt_keys().await.unwrap(), keys);
}
