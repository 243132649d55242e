//! The vault's decisions, as pure functions every backend calls inside its
//! transaction, so SQLite and PostgreSQL decide alike.

use chrono::{DateTime, Duration, Utc};
use dzl_types::wire::CodeState;
use dzl_types::{ErrorCode, Purpose, ScopeSet};

/// A code's state as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredCodeState {
    /// Not yet redeemed or revoked (may have expired).
    Issued,
    /// Redeemed.
    Redeemed,
    /// Revoked, or its deposit erased.
    Revoked,
}

impl StoredCodeState {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            StoredCodeState::Issued => "issued",
            StoredCodeState::Redeemed => "redeemed",
            StoredCodeState::Revoked => "revoked",
        }
    }

    /// Parses the stored text.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "issued" => Some(StoredCodeState::Issued),
            "redeemed" => Some(StoredCodeState::Redeemed),
            "revoked" => Some(StoredCodeState::Revoked),
            _ => None,
        }
    }
}

/// The state a caller sees at `now`.
pub fn effective_state(
    stored: StoredCodeState,
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> CodeState {
    match stored {
        StoredCodeState::Redeemed => CodeState::Redeemed,
        StoredCodeState::Revoked => CodeState::Revoked,
        StoredCodeState::Issued if now >= expires_at => CodeState::Expired,
        StoredCodeState::Issued => CodeState::Issued,
    }
}

/// Whether a code found and owned by the caller may be redeemed now, for
/// `purpose`. Order: revoked (or erased), redeemed, expired, purpose.
pub fn redeem_decision(
    stored: StoredCodeState,
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
    code_purpose: Purpose,
    asked: Purpose,
) -> Result<(), ErrorCode> {
    match effective_state(stored, expires_at, now) {
        CodeState::Revoked => Err(ErrorCode::CodeRevoked),
        CodeState::Redeemed => Err(ErrorCode::CodeAlreadyRedeemed),
        CodeState::Expired => Err(ErrorCode::CodeExpired),
        CodeState::Issued if code_purpose != asked => Err(ErrorCode::PurposeMismatch),
        CodeState::Issued => Ok(()),
    }
}

/// A code's deadline: `now + ttl`, never past the consent's end.
pub fn code_deadline(
    now: DateTime<Utc>,
    ttl_seconds: u32,
    consent_expires: DateTime<Utc>,
) -> DateTime<Utc> {
    (now + Duration::seconds(i64::from(ttl_seconds))).min(consent_expires)
}

/// Whether a grant of `scopes` fits the consent and the deposited groups.
pub fn check_grant(
    scopes: ScopeSet,
    consented: ScopeSet,
    deposited: ScopeSet,
) -> Result<(), ErrorCode> {
    if scopes.is_subset_of(consented) && scopes.is_subset_of(deposited) {
        Ok(())
    } else {
        Err(ErrorCode::GrantExceedsConsent)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use dzl_types::Group;

    #[test]
    fn redemption_order_of_refusals() {
        let now = Utc::now();
        let later = now + Duration::seconds(10);
        let earlier = now - Duration::seconds(1);
        let cp = Purpose::CreditApplication;
        let dd = Purpose::Drawdown;
        let check = |s, e, asked| redeem_decision(s, e, now, cp, asked);
        assert_eq!(check(StoredCodeState::Issued, later, cp), Ok(()));
        assert_eq!(
            check(StoredCodeState::Issued, later, dd),
            Err(ErrorCode::PurposeMismatch)
        );
        assert_eq!(
            check(StoredCodeState::Issued, earlier, dd),
            Err(ErrorCode::CodeExpired)
        );
        assert_eq!(
            check(StoredCodeState::Issued, now, cp),
            Err(ErrorCode::CodeExpired)
        );
        assert_eq!(
            check(StoredCodeState::Redeemed, earlier, dd),
            Err(ErrorCode::CodeAlreadyRedeemed)
        );
        assert_eq!(
            check(StoredCodeState::Revoked, later, cp),
            Err(ErrorCode::CodeRevoked)
        );
    }

    #[test]
    fn deadlines_never_outlive_consent() {
        let now = Utc::now();
        let consent_end = now + Duration::seconds(60);
        assert_eq!(
            code_deadline(now, 30, consent_end),
            now + Duration::seconds(30)
        );
        assert_eq!(code_deadline(now, 3600, consent_end), consent_end);
    }

    #[test]
    fn grants_stay_within_consent_and_deposit() {
        let a = ScopeSet::single(Group::Applicant);
        let ar = a.with(Group::Risk);
        let all = ar.with(Group::Device);
        assert_eq!(check_grant(ar, all, all), Ok(()));
        assert_eq!(check_grant(ar, a, all), Err(ErrorCode::GrantExceedsConsent));
        assert_eq!(check_grant(ar, all, a), Err(ErrorCode::GrantExceedsConsent));
    }
}
