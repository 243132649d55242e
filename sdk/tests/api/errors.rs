//! Every error variant, each reached for real against the vault.

use std::time::Duration as StdDuration;

use chrono::{Duration, Utc};
use dzl_sdk::types::{
    CodeId, DepositId, ErrorCode, Group, Purpose, RedemptionId, ScopeSet, TenantId,
};
use dzl_sdk::{ConsentBuilder, Error, RetryPolicy, Signer};
use dzl_vault_server::settings::Settings;

use crate::assert_err;
use crate::helpers::*;

fn id<T>(parse: fn(&str) -> Result<T, dzl_sdk::dzl_types::domain::Invalid>, prefix: &str) -> T {
    parse(&format!("{prefix}_{}", "0".repeat(32))).unwrap()
}

#[tokio::test]
async fn code_already_redeemed_twice_and_on_revoke() {
    let v = start();
    let (platform, funder) = (v.platform(), v.funder());
    let created = platform
        .deposit(&v.deposit(applicant_and_risk(), 3600))
        .await
        .unwrap();
    let c = &created.codes[0];
    funder
        .redeem(&c.code, Purpose::CreditApplication)
        .await
        .unwrap();
    let again = funder.redeem(&c.code, Purpose::CreditApplication).await;
    assert_err!(again, Error::CodeAlreadyRedeemed);
    assert_eq!(
        again.unwrap_err().code(),
        Some(ErrorCode::CodeAlreadyRedeemed.as_str())
    );
    assert_err!(
        platform.revoke_code(&c.code_id).await,
        Error::CodeAlreadyRedeemed
    );
}

#[tokio::test]
async fn code_expired_on_redeem_and_revoke() {
    let v = start();
    let (platform, funder) = (v.platform(), v.funder());
    let created = platform
        .deposit(&v.deposit(applicant_and_risk(), 1))
        .await
        .unwrap();
    let c = &created.codes[0];
    v.advance(Duration::milliseconds(1100));
    assert_err!(
        funder.redeem(&c.code, Purpose::CreditApplication).await,
        Error::CodeExpired
    );
    assert_err!(platform.revoke_code(&c.code_id).await, Error::CodeExpired);
    assert_eq!(
        platform.code_status(&c.code_id).await.unwrap().state,
        dzl_sdk::types::CodeState::Expired
    );
}

#[tokio::test]
async fn not_found_in_every_form() {
    let v = start();
    let (platform, funder) = (v.platform(), v.funder());
    let created = platform
        .deposit(&v.deposit(applicant_and_risk(), 3600))
        .await
        .unwrap();
    let c = &created.codes[0];

    // A code nobody issued, and a code issued to another funder.
    assert_err!(
        funder
            .redeem(&unknown_code(), Purpose::CreditApplication)
            .await,
        Error::CodeNotFound
    );
    let other_funder = v.vault().funder(v.other_funder.signer.clone());
    assert_err!(
        other_funder
            .redeem(&c.code, Purpose::CreditApplication)
            .await,
        Error::CodeNotFound
    );
    // Another platform's code and deposit are not found either.
    let other_platform = v.vault().platform(v.other_platform.signer.clone());
    assert_err!(
        other_platform.code_status(&c.code_id).await,
        Error::CodeNotFound
    );
    assert_err!(
        platform.code_status(&id(CodeId::parse, "cod")).await,
        Error::CodeNotFound
    );
    assert_err!(
        other_platform.erase_deposit(&created.deposit_id).await,
        Error::DepositNotFound
    );
    assert_err!(
        platform
            .issue_code(
                &id(DepositId::parse, "dep"),
                &v.funder.id,
                applicant_and_risk(),
                None
            )
            .await,
        Error::DepositNotFound
    );
    // Redemptions: unknown, and another funder's.
    let r = funder
        .redeem(&c.code, Purpose::CreditApplication)
        .await
        .unwrap();
    assert_err!(
        funder
            .report_outcome(
                &id(RedemptionId::parse, "red"),
                dzl_sdk::types::Decision::Approved,
                None
            )
            .await,
        Error::RedemptionNotFound
    );
    assert_err!(
        other_funder
            .report_outcome(r.redemption_id(), dzl_sdk::types::Decision::Approved, None)
            .await,
        Error::RedemptionNotFound
    );
}

#[tokio::test]
async fn purpose_mismatch_releases_nothing() {
    let v = start();
    let created = v
        .platform()
        .deposit(&v.deposit(applicant_and_risk(), 3600))
        .await
        .unwrap();
    let funder = v.funder();
    let code = &created.codes[0].code;
    assert_err!(
        funder.redeem(code, Purpose::Drawdown).await,
        Error::PurposeMismatch
    );
    // Still redeemable for its purpose.
    funder
        .redeem(code, Purpose::CreditApplication)
        .await
        .unwrap();
}

#[tokio::test]
async fn duplicate_external_ref_and_outcome_already_reported() {
    let v = start();
    let (platform, funder) = (v.platform(), v.funder());
    let deposit = v.deposit(applicant_and_risk(), 3600);
    let created = platform.deposit(&deposit).await.unwrap();
    // The second attempt names the first deposit: a platform whose first
    // answer was lost issues a new code for it and the funder redeems it.
    let existing = match platform.deposit(&deposit).await {
        Err(Error::DuplicateExternalRef {
            deposit_id: Some(existing),
        }) => existing,
        other => panic!("expected duplicate_external_ref naming a deposit, got {other:?}"),
    };
    assert_eq!(existing, created.deposit_id);
    let again = platform
        .issue_code(&existing, &v.funder.id, applicant_and_risk(), None)
        .await
        .unwrap();
    funder
        .redeem(&again.code, Purpose::CreditApplication)
        .await
        .unwrap();

    let r = funder
        .redeem(&created.codes[0].code, Purpose::CreditApplication)
        .await
        .unwrap();
    use dzl_sdk::types::Decision;
    funder
        .report_outcome(r.redemption_id(), Decision::Withdrawn, None)
        .await
        .unwrap();
    assert_err!(
        funder
            .report_outcome(r.redemption_id(), Decision::Approved, Some(1))
            .await,
        Error::OutcomeAlreadyReported
    );
}

#[tokio::test]
async fn validation_failed_from_the_vault() {
    // The SDK checks consent times against this machine's clock; a vault
    // whose clock is 200 s behind still refuses a consent "granted" 150 s
    // from now, with its own validation_failed.
    let v = start();
    v.advance(Duration::seconds(-200));
    let now = Utc::now();
    let deposit = base_deposit(Purpose::CreditApplication)
        .consent(
            ConsentBuilder::new(
                "CNS-1",
                ScopeSet::ALL,
                now + Duration::seconds(150),
                now + Duration::days(30),
            )
            .evidence("text"),
        )
        .build()
        .expect("acceptable to this machine's clock");
    match v.platform().deposit(&deposit).await {
        Err(Error::Validation { field, detail }) => {
            assert_eq!(field.as_deref(), Some("/consent/granted_at"));
            assert!(detail.contains("future"), "{detail}");
        }
        other => panic!("expected validation_failed, got {other:?}"),
    }
}

#[tokio::test]
async fn consent_expired_by_the_vaults_clock() {
    let v = start();
    v.advance(Duration::seconds(60));
    let now = Utc::now();
    let deposit = base_deposit(Purpose::CreditApplication)
        .consent(
            ConsentBuilder::new(
                "CNS-1",
                ScopeSet::ALL,
                now - Duration::days(1),
                now + Duration::seconds(30),
            )
            .evidence("text"),
        )
        .build()
        .unwrap();
    assert_err!(v.platform().deposit(&deposit).await, Error::ConsentExpired);
}

#[tokio::test]
async fn grants_refused_for_entitlements_unknown_funders_and_ttl() {
    let mut settings = Settings::default();
    settings.codes.max_ttl_seconds = 3600;
    settings.codes.default_ttl_seconds = 600;
    let v = start_with(settings);
    let platform = v.platform();

    // Bank B may only have `risk`, and only for drawdowns.
    let applicant_only = ScopeSet::single(Group::Applicant);
    let d = base_deposit(Purpose::Drawdown)
        .grant(v.other_funder.id.as_str(), applicant_only, None)
        .build()
        .unwrap();
    match platform.deposit(&d).await {
        Err(Error::FunderNotEntitled { field, .. }) => {
            assert_eq!(field.as_deref(), Some("/grants/0/scopes"))
        }
        other => panic!("expected funder_not_entitled, got {other:?}"),
    }
    let d = base_deposit(Purpose::CreditApplication)
        .grant(
            v.other_funder.id.as_str(),
            ScopeSet::single(Group::Risk),
            None,
        )
        .build()
        .unwrap();
    assert_err!(platform.deposit(&d).await, Error::FunderNotEntitled { .. });

    let nobody = TenantId::parse(&format!("ten_{}", "1".repeat(32))).unwrap();
    let d = base_deposit(Purpose::CreditApplication)
        .grant(nobody.as_str(), applicant_only, None)
        .build()
        .unwrap();
    match platform.deposit(&d).await {
        Err(Error::UnknownFunder { field }) => {
            assert_eq!(field.as_deref(), Some("/grants/0/funder_id"))
        }
        other => panic!("expected unknown_funder, got {other:?}"),
    }

    // Within the SDK's 30 days, beyond this vault's 1 hour.
    let d = v.deposit(applicant_only, 7200);
    match platform.deposit(&d).await {
        Err(Error::InvalidTtl { field, detail }) => {
            assert_eq!(field.as_deref(), Some("/grants/0/ttl_seconds"));
            assert!(detail.contains("3600"), "{detail}");
        }
        other => panic!("expected invalid_ttl, got {other:?}"),
    }
    let created = platform
        .deposit(&v.deposit(applicant_only, 60))
        .await
        .unwrap();
    assert_err!(
        platform
            .issue_code(
                &created.deposit_id,
                &v.funder.id,
                applicant_only,
                Some(7200)
            )
            .await,
        Error::InvalidTtl { .. }
    );
    assert_err!(
        platform
            .issue_code(&created.deposit_id, &nobody, applicant_only, None)
            .await,
        Error::UnknownFunder { .. }
    );
}

#[tokio::test]
async fn unauthorized_forbidden_and_stale() {
    let v = start();
    let vault = v.vault();
    let deposit = v.deposit(applicant_and_risk(), 60);

    let wrong_secret = vault.platform(Signer::new(v.platform.signer.key_id(), "not-the-secret"));
    match wrong_secret.deposit(&deposit).await {
        Err(Error::Unauthorized { code, .. }) => assert_eq!(code, ErrorCode::InvalidSignature),
        other => panic!("expected unauthorized, got {other:?}"),
    }
    let unknown_key = vault.platform(Signer::new("k_nobody", "secret"));
    assert_err!(
        unknown_key.deposit(&deposit).await,
        Error::Unauthorized { .. }
    );

    // A funder's credentials on the platform's routes.
    let funder_as_platform = vault.platform(v.funder.signer.clone());
    assert_err!(
        funder_as_platform.deposit(&deposit).await,
        Error::Forbidden { .. }
    );

    // The vault's clock runs 400 s ahead of ours.
    v.advance(Duration::seconds(400));
    match v.platform().deposit(&deposit).await {
        Err(Error::Unauthorized { code, .. }) => assert_eq!(code, ErrorCode::StaleTimestamp),
        other => panic!("expected stale_timestamp, got {other:?}"),
    }
}

#[tokio::test]
async fn rate_limited_with_retry_after() {
    let v = start();
    v.freeze(); // no refill: the third request in this "second" is refused
    let platform = v
        .vault_with(RetryPolicy::none())
        .platform(v.limited_platform.signer.clone());
    let code = id(CodeId::parse, "cod");
    for _ in 0..2 {
        assert_err!(platform.code_status(&code).await, Error::CodeNotFound);
    }
    match platform.code_status(&code).await {
        Err(Error::RateLimited { retry_after }) => {
            assert_eq!(retry_after, Some(StdDuration::from_secs(1)))
        }
        other => panic!("expected rate_limited, got {other:?}"),
    }
    // Not idempotent, not retried, whatever the policy.
    let retrying = v.vault().platform(v.limited_platform.signer.clone());
    assert_err!(
        retrying.deposit(&v.deposit(applicant_and_risk(), 60)).await,
        Error::RateLimited { .. }
    );
}

#[tokio::test]
async fn idempotent_calls_wait_out_the_rate_limit() {
    let v = start();
    let platform = v.vault().platform(v.limited_platform.signer.clone());
    let created = platform
        .deposit(&v.deposit(applicant_and_risk(), 3600))
        .await
        .unwrap();
    let code = &created.codes[0].code_id;
    // Two a second allowed; six in a row all succeed, waiting Retry-After.
    let started = std::time::Instant::now();
    for _ in 0..6 {
        platform.code_status(code).await.unwrap();
    }
    assert!(started.elapsed() >= StdDuration::from_millis(900));
}

#[tokio::test]
async fn guessing_funders_are_throttled_then_suspended() {
    let mut settings = Settings::default();
    settings.limits.failed_redemptions_per_minute = 2;
    settings.limits.failed_redemptions_per_hour = 3;
    let v = start_with(settings);
    let funder = v.funder();
    for _ in 0..2 {
        assert_err!(
            funder
                .redeem(&unknown_code(), Purpose::CreditApplication)
                .await,
            Error::CodeNotFound
        );
    }
    match funder
        .redeem(&unknown_code(), Purpose::CreditApplication)
        .await
    {
        Err(Error::RateLimited { retry_after }) => {
            let wait = retry_after.expect("Retry-After");
            assert!(wait >= StdDuration::from_secs(1) && wait <= StdDuration::from_secs(60));
        }
        other => panic!("expected rate_limited, got {other:?}"),
    }
    // The next minute: the third unknown code suspends the funder.
    v.advance(Duration::seconds(61));
    assert_err!(
        funder
            .redeem(&unknown_code(), Purpose::CreditApplication)
            .await,
        Error::CodeNotFound
    );
    assert_err!(
        funder
            .redeem(&unknown_code(), Purpose::CreditApplication)
            .await,
        Error::TenantSuspended { .. }
    );
}
