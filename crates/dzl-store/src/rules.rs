//! The vault's decisions, as pure functions every backend calls inside its
//! transaction, so SQLite and PostgreSQL decide alike: when a code may be
//! redeemed and when it expires, which KEK version may be retired, what a
//! purge removes, how long a rotated tenant secret keeps working.
//!
//! Where a backend selects rows in its query language (a purge), the
//! predicate it uses must be the one the function here states; the backend's
//! tests check the two agree.

use chrono::{DateTime, Duration, Utc};
use dzl_types::wire::CodeState;
use dzl_types::{ErrorCode, Purpose};

use crate::{KekState, KeyUsage, PurgePlan};

/// A code's state as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredCodeState {
    /// Not yet redeemed or revoked (may have expired).
    Issued,
    /// Redeemed.
    Redeemed,
    /// Revoked, or its deposit erased.
    Revoked,
    /// Found past its deadline by `purge` (see [`code_expirable`]).
    Expired,
}

impl StoredCodeState {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            StoredCodeState::Issued => "issued",
            StoredCodeState::Redeemed => "redeemed",
            StoredCodeState::Revoked => "revoked",
            StoredCodeState::Expired => "expired",
        }
    }

    /// Parses the stored text.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "issued" => Some(StoredCodeState::Issued),
            "redeemed" => Some(StoredCodeState::Redeemed),
            "revoked" => Some(StoredCodeState::Revoked),
            "expired" => Some(StoredCodeState::Expired),
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
        StoredCodeState::Expired => CodeState::Expired,
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

pub use dzl_types::rules::code_deadline;

/// Whether `purge` at `now` stores a code as expired: an issued code whose
/// deadline has come — exactly the codes [`effective_state`] already shows
/// as expired, so a purge changes no answer the API gives.
/// (SQL: `state = 'issued' AND expires_at <= now`.)
pub fn code_expirable(
    stored: StoredCodeState,
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> bool {
    stored == StoredCodeState::Issued && now >= expires_at
}

/// The purge to run at `now` with deposits kept `retention_days` days.
pub fn purge_plan(now: DateTime<Utc>, retention_days: u32) -> PurgePlan {
    PurgePlan {
        now,
        deposits_created_before: now - Duration::days(i64::from(retention_days)),
        retention_days,
    }
}

/// Whether `plan` crypto-shreds an active deposit created at `created_at`.
/// (SQL: `state = 'active' AND created_at < deposits_created_before`.)
pub fn deposit_past_retention(created_at: DateTime<Utc>, plan: &PurgePlan) -> bool {
    created_at < plan.deposits_created_before
}

/// Why a KEK version cannot be retired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RetireRefusal {
    /// The keyring has no such version.
    #[error("the keyring has no version {0}")]
    Unknown(u32),
    /// The active version wraps every new key; rotate first.
    #[error("version {0} is the active key: run `dzlctl keys rotate` first, then `keys rewrap`")]
    Active(u32),
    /// Something is still wrapped or sealed by it.
    #[error("version {version} still protects {}: run `dzlctl keys rewrap` first", .usage.describe())]
    InUse {
        /// The version.
        version: u32,
        /// What still needs it.
        usage: KeyUsage,
    },
}

impl RetireRefusal {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            RetireRefusal::Unknown(_) => "key_version_not_found",
            RetireRefusal::Active(_) => "key_active",
            RetireRefusal::InUse { .. } => "key_in_use",
        }
    }
}

/// Whether KEK `version` in `state` (None: no such version) may be retired
/// while `usage` still needs it. `Ok(false)`: already retired, nothing to do.
pub fn retire_decision(
    version: u32,
    state: Option<KekState>,
    usage: &KeyUsage,
) -> Result<bool, RetireRefusal> {
    match state {
        None => Err(RetireRefusal::Unknown(version)),
        Some(KekState::Retired) => Ok(false),
        Some(KekState::Active) => Err(RetireRefusal::Active(version)),
        Some(KekState::DecryptOnly) if usage.total() > 0 => Err(RetireRefusal::InUse {
            version,
            usage: *usage,
        }),
        Some(KekState::DecryptOnly) => Ok(true),
    }
}

/// How many redemptions of unknown codes a funder may make: in a minute
/// before it is throttled (429 until the minute ends), and in an hour
/// before it is suspended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuessLimits {
    /// In a minute.
    pub per_minute: u32,
    /// In an hour.
    pub per_hour: u32,
}

impl Default for GuessLimits {
    fn default() -> Self {
        GuessLimits {
            per_minute: 50,
            per_hour: 500,
        }
    }
}

/// Whether a funder with `window` is throttled for guessing at `now` (unix
/// seconds): `Some(seconds)` until the current minute's window ends, once
/// it holds `per_minute` failures.
pub fn guessing_throttle(
    window: Option<&crate::tx::FailureWindow>,
    now: i64,
    limits: GuessLimits,
) -> Option<u64> {
    match window {
        Some(w) if now - w.minute_start < 60 && w.minute_count >= limits.per_minute => {
            Some((60 - (now - w.minute_start)).max(1) as u64)
        }
        _ => None,
    }
}

/// The windows after one more redemption of an unknown code at `now`, and
/// whether it reaches the hourly threshold: then the funder is suspended
/// and its windows start afresh.
pub fn count_guess(
    window: Option<&crate::tx::FailureWindow>,
    now: i64,
    limits: GuessLimits,
) -> (crate::tx::FailureWindow, bool) {
    let mut w = window.copied().unwrap_or_default();
    if now - w.minute_start >= 60 {
        w.minute_start = now;
        w.minute_count = 0;
    }
    if now - w.hour_start >= 3600 {
        w.hour_start = now;
        w.hour_count = 0;
    }
    w.minute_count += 1;
    w.hour_count += 1;
    if w.hour_count >= limits.per_hour {
        (crate::tx::FailureWindow::default(), true)
    } else {
        (w, false)
    }
}

/// Whether a tenant's previous secret still authenticates requests at `now`.
pub fn previous_secret_valid(valid_until: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    now < valid_until
}

/// Until when the previous secret works after a rotation at `now`.
pub fn previous_secret_deadline(now: DateTime<Utc>, overlap_seconds: u32) -> DateTime<Utc> {
    now + Duration::seconds(i64::from(overlap_seconds))
}

/// How long a running server may take to load a new KEK after
/// `keys rotate` (it polls the store's generation twice a second).
pub const KEY_PICKUP_GRACE: Duration = Duration::seconds(2);

/// How long `keys rewrap` waits before moving keys onto an active version
/// made at `active_since`, so no running server meets a key wrapped under
/// a version it has not loaded yet.
pub fn rewrap_wait(active_since: DateTime<Utc>, now: DateTime<Utc>) -> std::time::Duration {
    (active_since + KEY_PICKUP_GRACE - now)
        .to_std()
        .unwrap_or_default()
}

/// Whether a reseal of `read` may replace the deposit whose seal is now
/// `now` (`None`: no such deposit): only if nothing changed it since it
/// was read — still active (an erasure meanwhile is never undone), still
/// of the suite read, and its data keys still the ones read (a rewrap or
/// another reseal meanwhile is left alone; the next pass reads it again).
/// Redemption does not change a seal, so a code redeemed meanwhile does
/// not stop it.
pub fn reseal_applies(read: &crate::SealedDeposit, now: Option<&crate::DepositSeal>) -> bool {
    now.is_some_and(|now| {
        now.state == crate::tx::DepositState::Active
            && now.suite == read.suite
            && now.records_key.as_ref() == read.records.as_ref().map(|r| &r.key)
            && now.identity_key.as_ref() == read.identity.as_ref().map(|(k, _)| k)
    })
}

/// The audit detail of `tenant.add`: its kind, purposes and pin.
pub fn tenant_added_detail(t: &crate::TenantRow) -> String {
    let purposes: Vec<&str> = t.purposes.iter().map(|p| p.as_str()).collect();
    let mut detail = format!("kind {}; purposes {}", t.kind.as_str(), purposes.join(","));
    if let Some(pin) = &t.cert_pin {
        detail.push_str(&format!("; client certificate pinned to {pin}"));
    }
    detail
}

/// The audit entry of a tenant's certificate pin set (`tenant.pin`) or
/// removed (`tenant.unpin`) at `at`.
pub fn cert_pin_audit(
    actor: String,
    tenant: &dzl_types::TenantId,
    pin: Option<&crate::CertPin>,
    at: String,
) -> dzl_audit::AuditRecord {
    dzl_audit::AuditRecord {
        at,
        actor,
        operation: if pin.is_some() {
            "tenant.pin"
        } else {
            "tenant.unpin"
        }
        .into(),
        result: "ok".into(),
        subject_tenant: Some(tenant.to_string()),
        detail: Some(match pin {
            Some(pin) => format!("client certificate pinned to {pin}"),
            None => "client certificate pin removed".into(),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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
    fn a_reseal_replaces_only_a_deposit_unchanged_since_it_was_read() {
        use crate::tx::DepositState;
        use crate::{DepositSeal, Filing, Sealed, SealedDeposit, SealedRecords, Suite};
        let key = |v: u32, b: u8| Sealed {
            kek_version: v,
            bytes: vec![b; 40],
        };
        let read = SealedDeposit {
            filing: Filing {
                run: 0,
                subject_index: "s".into(),
                deposit_id: dzl_types::DepositId::from_trusted("dep_1".into()),
            },
            suite: Suite::Intl,
            platform_id: dzl_types::TenantId::from_trusted("ten_p".into()),
            records: Some(SealedRecords {
                key: key(1, 1),
                device: None,
                risk: Some(vec![9]),
            }),
            identity: Some((key(1, 2), vec![8])),
        };
        let unchanged = DepositSeal {
            state: DepositState::Active,
            suite: Suite::Intl,
            records_key: Some(key(1, 1)),
            identity_key: Some(key(1, 2)),
        };
        assert!(reseal_applies(&read, Some(&unchanged)));
        assert!(!reseal_applies(&read, None), "gone");
        let changed = [
            DepositSeal {
                state: DepositState::Erased,
                records_key: None,
                identity_key: None,
                ..unchanged.clone()
            },
            DepositSeal {
                state: DepositState::Erased,
                ..unchanged.clone()
            },
            DepositSeal {
                suite: Suite::Gm,
                ..unchanged.clone()
            },
            DepositSeal {
                records_key: Some(key(2, 1)),
                ..unchanged.clone()
            },
            DepositSeal {
                identity_key: Some(key(1, 3)),
                ..unchanged.clone()
            },
        ];
        for now in &changed {
            assert!(!reseal_applies(&read, Some(now)), "{now:?}");
        }
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
    fn guessing_throttles_for_the_rest_of_the_minute_then_suspends_in_the_hour() {
        let limits = GuessLimits {
            per_minute: 3,
            per_hour: 5,
        };
        let mut w = None;
        for _ in 0..3 {
            let (next, suspend) = count_guess(w.as_ref(), 100, limits);
            assert!(!suspend);
            w = Some(next);
        }
        assert_eq!(guessing_throttle(w.as_ref(), 110, limits), Some(50));
        assert_eq!(
            guessing_throttle(w.as_ref(), 160, limits),
            None,
            "a new minute"
        );
        let (next, suspend) = count_guess(w.as_ref(), 161, limits);
        assert!(!suspend);
        assert_eq!((next.minute_count, next.hour_count), (1, 4));
        let (next, suspend) = count_guess(Some(&next), 162, limits);
        assert!(suspend, "the fifth in the hour");
        assert_eq!(
            next,
            crate::tx::FailureWindow::default(),
            "afresh once resumed"
        );
        let (next, _) = count_guess(w.as_ref(), 100 + 3600, limits);
        assert_eq!((next.minute_count, next.hour_count), (1, 1), "a new hour");
    }

    #[test]
    fn purge_expires_exactly_what_callers_already_see_as_expired() {
        let now = Utc::now();
        for stored in [
            StoredCodeState::Issued,
            StoredCodeState::Redeemed,
            StoredCodeState::Revoked,
            StoredCodeState::Expired,
        ] {
            for exp in [now - Duration::seconds(1), now, now + Duration::seconds(1)] {
                let expirable = code_expirable(stored, exp, now);
                let seen = effective_state(stored, exp, now);
                assert_eq!(
                    expirable,
                    stored == StoredCodeState::Issued && seen == CodeState::Expired,
                    "{stored:?} {exp} {now}"
                );
                if expirable {
                    assert_eq!(effective_state(StoredCodeState::Expired, exp, now), seen);
                }
            }
        }
        assert_eq!(
            redeem_decision(
                StoredCodeState::Expired,
                now + Duration::days(1),
                now,
                Purpose::Drawdown,
                Purpose::Drawdown
            ),
            Err(ErrorCode::CodeExpired)
        );
    }

    #[test]
    fn retention_cuts_strictly_before_the_boundary() {
        let now = Utc::now();
        let plan = purge_plan(now, 365);
        let boundary = now - Duration::days(365);
        assert_eq!(plan.deposits_created_before, boundary);
        assert!(deposit_past_retention(
            boundary - Duration::milliseconds(1),
            &plan
        ));
        assert!(!deposit_past_retention(boundary, &plan));
        assert!(!deposit_past_retention(now, &plan));
    }

    #[test]
    fn retirement_needs_a_decrypt_only_version_nothing_uses() {
        let idle = KeyUsage::default();
        let used = KeyUsage {
            previous_tenant_secrets: 1,
            ..KeyUsage::default()
        };
        assert_eq!(
            retire_decision(1, Some(KekState::DecryptOnly), &idle),
            Ok(true)
        );
        assert_eq!(
            retire_decision(1, Some(KekState::Retired), &idle),
            Ok(false)
        );
        assert_eq!(
            retire_decision(2, Some(KekState::Active), &idle),
            Err(RetireRefusal::Active(2))
        );
        assert_eq!(
            retire_decision(9, None, &idle),
            Err(RetireRefusal::Unknown(9))
        );
        let refused = retire_decision(1, Some(KekState::DecryptOnly), &used).unwrap_err();
        assert_eq!(refused.code(), "key_in_use");
        assert!(
            refused.to_string().contains("1 previous tenant secret"),
            "{refused}"
        );
    }

    #[test]
    fn previous_secrets_work_until_their_deadline_only() {
        let now = Utc::now();
        let until = previous_secret_deadline(now, 86_400);
        assert!(previous_secret_valid(until, now));
        assert!(previous_secret_valid(
            until,
            until - Duration::milliseconds(1)
        ));
        assert!(!previous_secret_valid(until, until));
        assert!(!previous_secret_valid(
            previous_secret_deadline(now, 0),
            now
        ));
    }

    #[test]
    fn rewrap_waits_for_servers_to_load_a_fresh_version() {
        let now = Utc::now();
        assert_eq!(
            rewrap_wait(now - Duration::seconds(10), now),
            std::time::Duration::ZERO
        );
        let wait = rewrap_wait(now - Duration::milliseconds(500), now);
        assert_eq!(wait, std::time::Duration::from_millis(1500));
    }
}
