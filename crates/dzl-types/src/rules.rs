//! What a deposit and a grant may be: the consent covers what is
//! deposited, a grant lies within the consent and the deposit, the funder
//! is entitled to it, and a code's lifetime is within bounds. Pure and
//! shared: the store applies these in the transaction that stores a
//! deposit or a code, and the SDK applies the same functions before a
//! request leaves the platform.

use chrono::{DateTime, Duration, Utc};

use crate::wire::Consent;
use crate::{ErrorCode, Purpose, ScopeSet};

/// Why a deposit or grant is refused: the problem code, the JSON pointer of
/// the offending input, and a message that never repeats a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The stable problem code.
    pub code: ErrorCode,
    /// Where in the request body (a JSON pointer, `""` for the whole body).
    pub pointer: String,
    /// What is wrong, without the value.
    pub message: String,
}

impl Violation {
    fn new(code: ErrorCode, pointer: impl Into<String>, message: impl Into<String>) -> Self {
        Violation {
            code,
            pointer: pointer.into(),
            message: message.into(),
        }
    }

    fn invalid(pointer: impl Into<String>, message: impl Into<String>) -> Self {
        Violation::new(ErrorCode::ValidationFailed, pointer, message)
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at {}: {}", self.code, self.pointer, self.message)
    }
}

/// A consent is real and current, and covers every group deposited:
/// granted no later than `now + skew`, ending after it began and after
/// `now`.
pub fn check_consent(
    consent: &Consent,
    deposited: ScopeSet,
    now: DateTime<Utc>,
    skew: Duration,
) -> Result<(), Violation> {
    if consent.granted_at > now + skew {
        return Err(Violation::invalid(
            "/consent/granted_at",
            "consent cannot be granted in the future",
        ));
    }
    if consent.expires_at <= consent.granted_at {
        return Err(Violation::invalid(
            "/consent/expires_at",
            "must be after granted_at",
        ));
    }
    if consent.expires_at <= now {
        return Err(Violation::new(
            ErrorCode::ConsentExpired,
            "/consent/expires_at",
            ErrorCode::ConsentExpired.title(),
        ));
    }
    if !deposited.is_subset_of(consent.scopes) {
        return Err(Violation::new(
            ErrorCode::ConsentInsufficient,
            "/consent/scopes",
            format!(
                "The consent does not cover: {}",
                names(deposited.missing_from(consent.scopes))
            ),
        ));
    }
    Ok(())
}

/// How many grants one deposit may carry.
pub fn check_grant_count(grants: usize) -> Result<(), Violation> {
    if grants > crate::wire::MAX_GRANTS {
        return Err(Violation::invalid(
            "/grants",
            format!("at most {} grants", crate::wire::MAX_GRANTS),
        ));
    }
    Ok(())
}

/// A grant of `scopes` lies within the consent and the groups deposited.
/// `at` is the grant's pointer (`/grants/0`, or `""` for a new code).
pub fn check_grant_scopes(
    scopes: ScopeSet,
    consented: ScopeSet,
    deposited: ScopeSet,
    at: &str,
) -> Result<(), Violation> {
    if scopes.is_subset_of(consented) && scopes.is_subset_of(deposited) {
        Ok(())
    } else {
        Err(Violation::new(
            ErrorCode::GrantExceedsConsent,
            format!("{at}/scopes"),
            ErrorCode::GrantExceedsConsent.title(),
        ))
    }
}

/// What a funder is entitled to, as the vault records it.
#[derive(Debug, Clone, Copy)]
pub struct Entitlement<'a> {
    /// Whether the funder is active (a suspended one gets no new codes).
    pub active: bool,
    /// The groups it may receive (`None`: every group).
    pub scopes: Option<ScopeSet>,
    /// The purposes it may redeem for.
    pub purposes: &'a [Purpose],
}

/// A grant's funder exists, is active, and is entitled to `scopes` and
/// `purpose`. `funder` is `None` when no funder has the id.
pub fn check_entitlement(
    funder: Option<Entitlement<'_>>,
    scopes: ScopeSet,
    purpose: Purpose,
    at: &str,
) -> Result<(), Violation> {
    let Some(f) = funder else {
        return Err(Violation::new(
            ErrorCode::UnknownFunder,
            format!("{at}/funder_id"),
            "No funder has this id",
        ));
    };
    if !f.active {
        return Err(Violation::new(
            ErrorCode::FunderNotEntitled,
            format!("{at}/funder_id"),
            "The funder is suspended",
        ));
    }
    let entitled = f.scopes.unwrap_or(ScopeSet::ALL);
    if !scopes.is_subset_of(entitled) {
        return Err(Violation::new(
            ErrorCode::FunderNotEntitled,
            format!("{at}/scopes"),
            format!(
                "The funder is not entitled to: {}",
                names(scopes.missing_from(entitled))
            ),
        ));
    }
    if !f.purposes.contains(&purpose) {
        return Err(Violation::new(
            ErrorCode::FunderNotEntitled,
            format!("{at}/funder_id"),
            format!("The funder is not entitled to the purpose {purpose}"),
        ));
    }
    Ok(())
}

/// The lifetimes codes may have: the default when a grant names none, and
/// the longest a grant may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TtlPolicy {
    /// Seconds, when the grant names none.
    pub default_seconds: u32,
    /// The longest, in seconds.
    pub max_seconds: u32,
}

impl Default for TtlPolicy {
    fn default() -> Self {
        TtlPolicy {
            default_seconds: 86_400,
            max_seconds: crate::wire::MAX_TTL_SECONDS,
        }
    }
}

/// The lifetime a grant gets: what it asks for within `1..=max`, or the
/// default.
pub fn resolve_ttl(policy: TtlPolicy, asked: Option<u32>, at: &str) -> Result<u32, Violation> {
    match asked {
        None => Ok(policy.default_seconds),
        Some(t) if (1..=policy.max_seconds).contains(&t) => Ok(t),
        Some(_) => Err(Violation::new(
            ErrorCode::InvalidTtl,
            format!("{at}/ttl_seconds"),
            format!("ttl_seconds must be 1..={}", policy.max_seconds),
        )),
    }
}

/// The checks of a deposit request that need nothing stored, in order:
/// the consent is current and covers every group deposited, there are at
/// most [`crate::wire::MAX_GRANTS`] grants, and each grant lies within the
/// consent and the deposit and asks for a lifetime in bounds. Returns each
/// grant's lifetime. The vault runs this before it seals a deposit; the
/// SDK before a deposit leaves the platform.
pub fn check_deposit(
    req: &crate::wire::DepositRequest,
    now: DateTime<Utc>,
    skew: Duration,
    ttl: TtlPolicy,
) -> Result<Vec<u32>, Violation> {
    let groups = req.groups();
    check_consent(&req.consent, groups, now, skew)?;
    check_grant_count(req.grants.len())?;
    req.grants
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let at = format!("/grants/{i}");
            check_grant_scopes(g.scopes, req.consent.scopes, groups, &at)?;
            resolve_ttl(ttl, g.ttl_seconds, &at)
        })
        .collect()
}

/// A code's deadline: `now + ttl`, never past the consent's end.
pub fn code_deadline(
    now: DateTime<Utc>,
    ttl_seconds: u32,
    consent_expires: DateTime<Utc>,
) -> DateTime<Utc> {
    (now + Duration::seconds(i64::from(ttl_seconds))).min(consent_expires)
}

fn names(groups: Vec<crate::Group>) -> String {
    groups
        .iter()
        .map(|g| g.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::Group;

    fn consent(scopes: ScopeSet, granted: i64, expires: i64) -> Consent {
        serde_json::from_value(serde_json::json!({
            "consent_id": "CNS-1",
            "granted_at": DateTime::from_timestamp(granted, 0).unwrap(),
            "expires_at": DateTime::from_timestamp(expires, 0).unwrap(),
            "scopes": scopes,
            "evidence_sha256": "0".repeat(64),
        }))
        .unwrap()
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    #[test]
    fn a_consent_must_be_current_and_cover_what_is_deposited() {
        let skew = Duration::seconds(300);
        let applicant = ScopeSet::single(Group::Applicant);
        let both = applicant.with(Group::Risk);
        let check = |c: &Consent, g, now| check_consent(c, g, at(now), skew).map_err(|v| v.code);
        let ok = consent(both, 1_000, 10_000);
        assert_eq!(check(&ok, both, 2_000), Ok(()));
        assert_eq!(
            check(&consent(both, 2_301, 10_000), both, 2_000),
            Err(ErrorCode::ValidationFailed),
            "granted beyond the skew"
        );
        assert_eq!(check(&consent(both, 2_300, 10_000), both, 2_000), Ok(()));
        assert_eq!(
            check(&consent(both, 5_000, 5_000), both, 2_000),
            Err(ErrorCode::ValidationFailed),
            "ends as it begins"
        );
        assert_eq!(check(&ok, both, 10_000), Err(ErrorCode::ConsentExpired));
        let narrow = consent(applicant, 1_000, 10_000);
        let v = check_consent(&narrow, both, at(2_000), skew).unwrap_err();
        assert_eq!(v.code, ErrorCode::ConsentInsufficient);
        assert_eq!(v.pointer, "/consent/scopes");
        assert_eq!(v.message, "The consent does not cover: risk");
    }

    #[test]
    fn a_grant_lies_within_consent_and_deposit_and_the_funders_entitlement() {
        let all = ScopeSet::ALL;
        let risk = ScopeSet::single(Group::Risk);
        let applicant = ScopeSet::single(Group::Applicant);
        assert!(check_grant_scopes(risk, all, all, "/grants/0").is_ok());
        let v = check_grant_scopes(risk, applicant, all, "/grants/1").unwrap_err();
        assert_eq!(
            (v.code, v.pointer.as_str()),
            (ErrorCode::GrantExceedsConsent, "/grants/1/scopes")
        );
        assert!(check_grant_scopes(risk, all, applicant, "").is_err());

        let purposes = [Purpose::Drawdown];
        let funder = Entitlement {
            active: true,
            scopes: Some(applicant),
            purposes: &purposes,
        };
        let code = |f: Option<Entitlement<'_>>, s, p| {
            check_entitlement(f, s, p, "/grants/0").map_err(|v| (v.code, v.pointer))
        };
        assert_eq!(code(Some(funder), applicant, Purpose::Drawdown), Ok(()));
        assert_eq!(
            code(None, applicant, Purpose::Drawdown),
            Err((ErrorCode::UnknownFunder, "/grants/0/funder_id".into()))
        );
        assert_eq!(
            code(
                Some(Entitlement {
                    active: false,
                    ..funder
                }),
                applicant,
                Purpose::Drawdown
            ),
            Err((ErrorCode::FunderNotEntitled, "/grants/0/funder_id".into()))
        );
        assert_eq!(
            code(Some(funder), risk, Purpose::Drawdown),
            Err((ErrorCode::FunderNotEntitled, "/grants/0/scopes".into()))
        );
        assert_eq!(
            code(Some(funder), applicant, Purpose::CreditApplication),
            Err((ErrorCode::FunderNotEntitled, "/grants/0/funder_id".into()))
        );
    }

    #[test]
    fn lifetimes_default_and_stay_in_bounds_and_end_with_the_consent() {
        let p = TtlPolicy {
            default_seconds: 60,
            max_seconds: 3_600,
        };
        assert_eq!(resolve_ttl(p, None, ""), Ok(60));
        assert_eq!(resolve_ttl(p, Some(3_600), ""), Ok(3_600));
        for bad in [0, 3_601] {
            let v = resolve_ttl(p, Some(bad), "/grants/2").unwrap_err();
            assert_eq!(
                (v.code, v.pointer.as_str()),
                (ErrorCode::InvalidTtl, "/grants/2/ttl_seconds")
            );
        }
        assert_eq!(code_deadline(at(100), 50, at(1_000)), at(150));
        assert_eq!(code_deadline(at(100), 5_000, at(1_000)), at(1_000));
    }
}
