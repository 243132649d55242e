//! Failed authentications (a missing, malformed, stale, replayed or wrong
//! signature, a certificate that does not match its pin), counted in
//! one-minute windows per key id and per source address:
//!
//! * per source address (an IPv6 address by its /64): once the window's
//!   budget is spent, every signed request from it is answered 429 before
//!   its signature is checked, until the window ends;
//! * per key id (of a known tenant): once the budget is spent, further
//!   *failures* under it are answered 429 instead of 401; a valid signature
//!   still passes, so a forger who knows a key id cannot lock its tenant out.
//!
//! Each window that saw failures becomes one audit entry when it ends
//! ([`audit_closed`]): per tenant, with the count by problem code, and per
//! source for the failures that named no known key id. A flood of forged
//! requests costs the audit trail one entry per key id and source a
//! minute. The windows live in this process (with PostgreSQL, per replica).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use dzl_store::{Call, Store, StoreError};
use dzl_types::{ErrorCode, TenantId};

use crate::settings::LimitSettings;

/// Length of a window, in seconds.
pub const WINDOW_SECS: i64 = 60;

/// Most subjects tracked at once; past it new subjects are not throttled
/// (and their failures not counted) until windows end.
const MAX_SUBJECTS: usize = 65_536;

/// What failures are counted under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    /// The tenant whose key id the requests named.
    Key(TenantId),
    /// The source address (IPv6: its /64).
    Source(IpAddr),
}

#[derive(Default)]
struct Window {
    start: i64,
    count: u32,
    /// Failures to audit under this subject: all of a key's; a source's
    /// that named no known key id (the others are audited under the key).
    audited: BTreeMap<&'static str, u32>,
    warned: bool,
}

/// A window that ended with failures to audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// Whose failures.
    pub subject: Subject,
    /// When the window began (unix seconds).
    pub start: i64,
    /// Failures by problem code.
    pub codes: Vec<(&'static str, u32)>,
}

#[derive(Default)]
struct Windows {
    current: HashMap<Subject, Window>,
    /// Ended windows with failures to audit, replaced by a new one before
    /// [`AuthThrottle::take_closed`] took them.
    ended: Vec<Closed>,
}

fn close(subject: &Subject, w: &Window) -> Option<Closed> {
    (!w.audited.is_empty()).then(|| Closed {
        subject: subject.clone(),
        start: w.start,
        codes: w.audited.iter().map(|(c, n)| (*c, *n)).collect(),
    })
}

/// The windows of failed authentications.
pub struct AuthThrottle {
    windows: Mutex<Windows>,
    per_key: u32,
    per_source: u32,
}

/// The address failures from `ip` are counted under.
fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

fn retry_after(w: &Window, now: i64) -> u64 {
    (WINDOW_SECS - (now - w.start)).max(1) as u64
}

impl AuthThrottle {
    /// Windows with the configured budgets.
    pub fn new(s: &LimitSettings) -> Self {
        AuthThrottle {
            windows: Mutex::new(Windows::default()),
            per_key: s.auth_failures_per_key_per_minute,
            per_source: s.auth_failures_per_source_per_minute,
        }
    }

    /// `Err(seconds)` while `source` has spent its window's budget.
    pub fn check_source(&self, source: Option<IpAddr>, now: i64) -> Result<(), u64> {
        let Some(ip) = source else { return Ok(()) };
        let Ok(map) = self.windows.lock() else {
            return Ok(());
        };
        match map.current.get(&Subject::Source(source_of(ip))) {
            Some(w) if now - w.start < WINDOW_SECS && w.count >= self.per_source => {
                Err(retry_after(w, now))
            }
            _ => Ok(()),
        }
    }

    /// Counts one failure, refused with `code`, from `source` under
    /// `tenant` (the tenant of the key id the request named, if known).
    /// `Err(seconds)` when the tenant's key id has spent its budget: the
    /// failure is then answered 429.
    pub fn record(
        &self,
        tenant: Option<&TenantId>,
        source: Option<IpAddr>,
        code: ErrorCode,
        now: i64,
    ) -> Result<(), u64> {
        let Ok(mut guard) = self.windows.lock() else {
            return Ok(());
        };
        let Windows { current, ended } = &mut *guard;
        let mut count = |subject: Subject, audited: bool, budget: u32| -> Option<i64> {
            let full = current.len() >= MAX_SUBJECTS && !current.contains_key(&subject);
            if full {
                return None;
            }
            let w = current.entry(subject.clone()).or_insert_with(|| Window {
                start: now,
                ..Window::default()
            });
            if now - w.start >= WINDOW_SECS {
                ended.extend(close(&subject, w));
                *w = Window {
                    start: now,
                    ..Window::default()
                };
            }
            w.count = w.count.saturating_add(1);
            if audited {
                *w.audited.entry(code.as_str()).or_default() += 1;
            }
            let spent = w.count > budget;
            if spent && !w.warned {
                w.warned = true;
                match &subject {
                    Subject::Key(t) => log::warn!(
                        "more than {budget} failed authentications in a minute under the key id of tenant {t}: answering 429 until the minute ends"
                    ),
                    Subject::Source(ip) => log::warn!(
                        "more than {budget} failed authentications in a minute from {ip}: answering 429 until the minute ends"
                    ),
                }
            }
            spent.then_some(w.start)
        };
        if let Some(ip) = source {
            count(
                Subject::Source(source_of(ip)),
                tenant.is_none(),
                self.per_source,
            );
        }
        match tenant {
            Some(t) => match count(Subject::Key(t.clone()), true, self.per_key) {
                Some(start) => Err((WINDOW_SECS - (now - start)).max(1) as u64),
                None => Ok(()),
            },
            None => Ok(()),
        }
    }

    /// Takes every window that ended by `now` and saw failures to audit.
    pub fn take_closed(&self, now: i64) -> Vec<Closed> {
        let Ok(mut guard) = self.windows.lock() else {
            return Vec::new();
        };
        let Windows { current, ended } = &mut *guard;
        let mut closed = std::mem::take(ended);
        current.retain(|subject, w| {
            if now - w.start < WINDOW_SECS {
                return true;
            }
            closed.extend(close(subject, w));
            false
        });
        closed.sort_by_key(|c| c.start);
        closed
    }
}

/// Writes one audit entry per ended window: operation `authenticate`, the
/// most frequent problem code as result, the counts in the detail.
/// Blocking: call on the blocking pool.
pub fn audit_closed(
    store: &dyn Store,
    closed: &[Closed],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    for c in closed {
        let total: u32 = c.codes.iter().map(|(_, n)| n).sum();
        let result = c
            .codes
            .iter()
            .max_by_key(|(_, n)| *n)
            .map_or("invalid_signature", |(code, _)| code);
        let counts: Vec<String> = c.codes.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let since = DateTime::from_timestamp(c.start, 0)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let (actor, whose) = match &c.subject {
            Subject::Key(t) => (t.to_string(), "under this tenant's key id".to_owned()),
            Subject::Source(ip) => (
                "system".to_owned(),
                format!("from {ip} naming no known key id"),
            ),
        };
        let call = Call {
            actor,
            operation: "authenticate",
            now,
        };
        let detail = format!(
            "{total} failed authentications {whose} in the minute from {since}: {}",
            counts.join(", ")
        );
        store.record_action(&call, result, &detail)?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn throttle(per_key: u32, per_source: u32) -> AuthThrottle {
        AuthThrottle::new(&LimitSettings {
            auth_failures_per_key_per_minute: per_key,
            auth_failures_per_source_per_minute: per_source,
            ..Default::default()
        })
    }

    fn tenant() -> TenantId {
        TenantId::parse(&format!("ten_{}", "1".repeat(32))).unwrap()
    }

    #[test]
    fn a_key_ids_failures_past_the_budget_are_429_until_the_window_ends() {
        let t = throttle(3, 1000);
        let ip = Some("203.0.113.9".parse().unwrap());
        for _ in 0..3 {
            assert_eq!(
                t.record(Some(&tenant()), ip, ErrorCode::InvalidSignature, 100),
                Ok(())
            );
        }
        assert_eq!(
            t.record(Some(&tenant()), ip, ErrorCode::InvalidSignature, 110),
            Err(50)
        );
        assert!(t.take_closed(159).is_empty(), "the window has not ended");
        let closed = t.take_closed(160);
        assert_eq!(
            closed,
            vec![Closed {
                subject: Subject::Key(tenant()),
                start: 100,
                codes: vec![("invalid_signature", 4)],
            }],
            "one entry for the key; the source's failures named a key"
        );
        assert_eq!(
            t.record(Some(&tenant()), ip, ErrorCode::StaleTimestamp, 161),
            Ok(())
        );
    }

    #[test]
    fn a_source_that_spends_its_budget_is_refused_before_anything_else() {
        let t = throttle(1000, 2);
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8::ffff:2".parse().unwrap();
        let other: IpAddr = "2001:db8:0:1::1".parse().unwrap();
        assert!(t.check_source(Some(a), 0).is_ok());
        t.record(None, Some(a), ErrorCode::InvalidSignature, 0)
            .unwrap();
        t.record(None, Some(same_64), ErrorCode::MissingSignature, 1)
            .unwrap();
        assert_eq!(t.check_source(Some(a), 10), Err(50));
        assert!(t.check_source(Some(other), 10).is_ok());
        assert!(t.check_source(Some(a), 60).is_ok(), "a new window");
        let closed = t.take_closed(60);
        assert_eq!(closed.len(), 1);
        assert_eq!(
            closed[0].subject,
            Subject::Source("2001:db8::".parse().unwrap())
        );
        assert_eq!(
            closed[0].codes,
            vec![("invalid_signature", 1), ("missing_signature", 1)]
        );
    }
}
