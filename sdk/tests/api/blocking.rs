//! The blocking clients: the same API, no runtime. Plain `#[test]`s.

use dzl_sdk::types::{CodeState, Decision, Group, IdType, Purpose, ScopeSet};
use dzl_sdk::Error;

use crate::assert_err;
use crate::helpers::*;

#[test]
fn every_method_without_a_runtime() {
    let v = start();
    let vault = v.blocking();
    let platform = vault.platform(v.platform.signer.clone());
    let funder = vault.funder(v.funder.signer.clone());
    let operator = vault.operator(v.operator.signer.clone());

    let created = platform
        .deposit(&v.deposit(applicant_and_risk(), 3600))
        .unwrap();
    let issued = &created.codes[0];
    assert_eq!(
        platform.code_status(&issued.code_id).unwrap().state,
        CodeState::Issued
    );

    let r = funder
        .redeem(&issued.code, Purpose::CreditApplication)
        .unwrap();
    assert_eq!(r.applicant().unwrap().id_number.as_str(), ID_NUMBER);
    let receipt = funder.verify_receipt(&r).unwrap();
    assert_eq!(&receipt.body.redemption_id, r.redemption_id());
    assert!(!funder.receipt_keys().unwrap().is_empty());
    assert_eq!(
        vault.receipt_keys().unwrap(),
        funder.receipt_keys().unwrap()
    );
    funder
        .report_outcome(r.redemption_id(), Decision::Approved, Some(1))
        .unwrap();
    let status = platform.code_status(&issued.code_id).unwrap();
    assert_eq!(status.state, CodeState::Redeemed);
    assert_eq!(status.outcome.unwrap().decision, Decision::Approved);

    let risk_only = ScopeSet::single(Group::Risk);
    let more = platform
        .issue_code(&created.deposit_id, &v.funder.id, risk_only, Some(60))
        .unwrap();
    assert_eq!(
        platform.revoke_code(&more.code_id).unwrap().state,
        CodeState::Revoked
    );
    platform.erase_deposit(&created.deposit_id).unwrap();
    platform.erase_deposit(&created.deposit_id).unwrap();

    let report = operator
        .subject_access(IdType::ResidentId, ID_NUMBER)
        .unwrap();
    assert_eq!(report.deposits.len(), 1);
    assert_eq!(report.deposits[0].state, "erased");
}

#[test]
fn errors_are_the_same_enum() {
    let v = start();
    let platform =
        dzl_sdk::blocking::PlatformClient::new(&v.url, v.platform.signer.clone()).unwrap();
    let funder = dzl_sdk::blocking::FunderClient::new(&v.url, v.funder.signer.clone()).unwrap();
    let created = platform
        .deposit(&v.deposit(applicant_and_risk(), 3600))
        .unwrap();
    let code = &created.codes[0].code;
    funder.redeem(code, Purpose::CreditApplication).unwrap();
    assert_err!(
        funder.redeem(code, Purpose::CreditApplication),
        Error::CodeAlreadyRedeemed
    );
    assert_err!(
        funder.redeem(&unknown_code(), Purpose::CreditApplication),
        Error::CodeNotFound
    );
    let operator = dzl_sdk::blocking::OperatorClient::new(&v.url, v.funder.signer.clone()).unwrap();
    assert_err!(
        operator.subject_access(IdType::ResidentId, ID_NUMBER),
        Error::Forbidden { .. }
    );
}
