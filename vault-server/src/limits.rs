//! Guards of the request path: the nonce cache (replay protection),
//! per-tenant token buckets (request rate limits), and the failed-redemption
//! windows that throttle and then suspend a guessing funder.
//!
//! With SQLite one process serves one data directory (the server holds a
//! lock on it), so process memory is the whole truth: [`Guards::Local`].
//! With PostgreSQL several replicas serve one database, so the guards live
//! there too, shared: [`Guards::Shared`], called on the blocking pool.

use std::collections::HashMap;
use std::sync::Mutex;

use dzl_types::TenantId;

use actix_web::web;
use dzl_store::StoreError;

use crate::settings::LimitSettings;

/// Where the guards keep their state.
pub enum Guards {
    /// In this process (SQLite: one server per data directory).
    Local {
        /// Nonces seen.
        nonces: NonceCache,
        /// Buckets and failure windows.
        limiter: Limiter,
    },
    /// In PostgreSQL, shared by every replica.
    Shared {
        /// The shared guards.
        pg: std::sync::Arc<dzl_store_pg::PgGuards>,
        /// Seconds a nonce is remembered.
        window: i64,
        /// Failed redemptions a minute before 429.
        per_minute: u32,
        /// Failed redemptions an hour before suspension.
        per_hour: u32,
    },
}

fn blocking_failed(e: actix_web::error::BlockingError) -> StoreError {
    StoreError::Unavailable(format!("blocking pool: {e}"))
}

impl Guards {
    /// In-process guards.
    pub fn local(s: &LimitSettings) -> Self {
        Guards::Local {
            nonces: NonceCache::new(s.max_skew_seconds),
            limiter: Limiter::new(s),
        }
    }

    /// Guards shared through PostgreSQL.
    pub fn shared(pg: dzl_store_pg::PgGuards, s: &LimitSettings) -> Self {
        Guards::Shared {
            pg: std::sync::Arc::new(pg),
            window: 2 * s.max_skew_seconds,
            per_minute: s.failed_redemptions_per_minute,
            per_hour: s.failed_redemptions_per_hour,
        }
    }

    /// Records `(key_id, nonce)`; `false` if it was seen within the window.
    pub async fn nonce_fresh(
        &self,
        key_id: &str,
        nonce: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        match self {
            Guards::Local { nonces, .. } => Ok(nonces.insert(key_id, nonce, now)),
            Guards::Shared { pg, window, .. } => {
                let (pg, k, n, w) = (pg.clone(), key_id.to_owned(), nonce.to_owned(), *window);
                web::block(move || pg.nonce_fresh(&k, &n, now, w))
                    .await
                    .map_err(blocking_failed)?
            }
        }
    }

    /// Takes one request token; `Ok(Err(seconds))` to wait when none is left.
    pub async fn admit(
        &self,
        tenant: &TenantId,
        rate: u32,
        now: f64,
    ) -> Result<Result<(), u64>, StoreError> {
        match self {
            Guards::Local { limiter, .. } => Ok(limiter.admit(tenant, rate, now)),
            Guards::Shared { pg, .. } => {
                let (pg, t) = (pg.clone(), tenant.clone());
                web::block(move || pg.take_token(&t, rate, now))
                    .await
                    .map_err(blocking_failed)?
            }
        }
    }

    /// Whether a funder is throttled for guessing.
    pub async fn check_guessing(
        &self,
        tenant: &TenantId,
        now: i64,
    ) -> Result<Result<(), u64>, StoreError> {
        match self {
            Guards::Local { limiter, .. } => Ok(limiter.check_guessing(tenant, now)),
            Guards::Shared { pg, per_minute, .. } => {
                let (pg, t, m) = (pg.clone(), tenant.clone(), *per_minute);
                web::block(move || pg.check_guessing(&t, now, m))
                    .await
                    .map_err(blocking_failed)?
            }
        }
    }

    /// Counts a redemption of an unknown code.
    pub async fn record_failure(
        &self,
        tenant: &TenantId,
        now: i64,
    ) -> Result<FailureVerdict, StoreError> {
        match self {
            Guards::Local { limiter, .. } => Ok(limiter.record_failure(tenant, now)),
            Guards::Shared { pg, per_hour, .. } => {
                let (pg, t, h) = (pg.clone(), tenant.clone(), *per_hour);
                let suspend = web::block(move || pg.record_failure(&t, now, h))
                    .await
                    .map_err(blocking_failed)??;
                Ok(if suspend {
                    FailureVerdict::Suspend
                } else {
                    FailureVerdict::Counted
                })
            }
        }
    }
}

const SHARDS: usize = 16;

/// What the cache keeps of a nonce: the first 128 bits of SHA-256 over the
/// key id's length, the key id and the nonce. Keeping the two strings took
/// 160–200 bytes per nonce held and 0.8–0.9 µs per insert; the digest takes
/// 35–53 bytes and 0.4 µs (`examples/nonce_memory.rs`, 1 and 3 million
/// nonces). At 10,000 requests a second the cache holds 6,000,000 nonces
/// (a 600 s window): about a gigabyte before, a fifth of that now.
/// Two different nonces share a digest with probability about n²/2¹²⁹ for
/// n nonces held, and a shared digest can only refuse a request as a
/// replay, never admit one.
type NonceDigest = [u8; 16];

fn nonce_digest(key_id: &str, nonce: &str) -> NonceDigest {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(&(key_id.len() as u64).to_be_bytes());
    ctx.update(key_id.as_bytes());
    ctx.update(nonce.as_bytes());
    let mut digest = [0u8; 16];
    digest.copy_from_slice(&ctx.finish().as_ref()[..16]);
    digest
}

/// Nonces seen within the skew window, per key id.
pub struct NonceCache {
    shards: Vec<Mutex<HashMap<NonceDigest, i64>>>,
    window: i64,
}

impl NonceCache {
    /// A cache remembering nonces for twice `skew` seconds.
    pub fn new(skew: i64) -> Self {
        NonceCache {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            window: 2 * skew,
        }
    }

    /// Records `(key_id, nonce)` at `now`; `false` if it was seen before.
    pub fn insert(&self, key_id: &str, nonce: &str, now: i64) -> bool {
        let digest = nonce_digest(key_id, nonce);
        // The digest is uniform, so the shards fill evenly whatever the
        // clients' nonces look like.
        let Ok(mut map) = self.shards[usize::from(digest[0]) % SHARDS].lock() else {
            return false;
        };
        if map.len() > 4096 && map.len().is_power_of_two() {
            map.retain(|_, seen| now - *seen <= self.window);
        }
        match map.get(&digest) {
            Some(seen) if now - *seen <= self.window => false,
            _ => {
                map.insert(digest, now);
                true
            }
        }
    }

    /// Nonces held, expired ones not yet dropped included.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|m| m.len()).unwrap_or(0))
            .sum()
    }
}

struct Bucket {
    tokens: f64,
    last: f64,
}

#[derive(Default)]
struct Failures {
    minute_start: i64,
    minute: u32,
    hour_start: i64,
    hour: u32,
}

/// Per-tenant request rate limits and failed-redemption windows.
pub struct Limiter {
    buckets: Mutex<HashMap<TenantId, Bucket>>,
    failures: Mutex<HashMap<TenantId, Failures>>,
    per_minute: u32,
    per_hour: u32,
}

/// What a failed redemption leads to.
#[derive(Debug, PartialEq, Eq)]
pub enum FailureVerdict {
    /// Keep going.
    Counted,
    /// The hourly threshold is reached: suspend the funder.
    Suspend,
}

impl Limiter {
    /// A limiter with the configured thresholds.
    pub fn new(s: &LimitSettings) -> Self {
        Limiter {
            buckets: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            per_minute: s.failed_redemptions_per_minute,
            per_hour: s.failed_redemptions_per_hour,
        }
    }

    /// Takes one request token; `Err(seconds)` to wait when none is left.
    /// `now` is in seconds (fractional).
    pub fn admit(&self, tenant: &TenantId, rate: u32, now: f64) -> Result<(), u64> {
        let rate = f64::from(rate.max(1));
        let Ok(mut map) = self.buckets.lock() else {
            return Ok(());
        };
        let b = map.entry(tenant.clone()).or_insert(Bucket {
            tokens: rate,
            last: now,
        });
        b.tokens = (b.tokens + (now - b.last).max(0.0) * rate).min(rate);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / rate).ceil().max(1.0) as u64)
        }
    }

    /// Whether a funder is throttled for guessing: `Err(seconds)` until the
    /// current minute's window ends.
    pub fn check_guessing(&self, tenant: &TenantId, now: i64) -> Result<(), u64> {
        let Ok(map) = self.failures.lock() else {
            return Ok(());
        };
        match map.get(tenant) {
            Some(f) if now - f.minute_start < 60 && f.minute >= self.per_minute => {
                Err((60 - (now - f.minute_start)).max(1) as u64)
            }
            _ => Ok(()),
        }
    }

    /// Counts a redemption of an unknown code.
    pub fn record_failure(&self, tenant: &TenantId, now: i64) -> FailureVerdict {
        let Ok(mut map) = self.failures.lock() else {
            return FailureVerdict::Counted;
        };
        let f = map.entry(tenant.clone()).or_default();
        if now - f.minute_start >= 60 {
            f.minute_start = now;
            f.minute = 0;
        }
        if now - f.hour_start >= 3600 {
            f.hour_start = now;
            f.hour = 0;
        }
        f.minute += 1;
        f.hour += 1;
        if f.hour >= self.per_hour {
            // Start afresh once an operator resumes the funder.
            *f = Failures::default();
            FailureVerdict::Suspend
        } else {
            FailureVerdict::Counted
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn tenant() -> TenantId {
        TenantId::parse(&format!("ten_{}", "0".repeat(32))).unwrap()
    }

    #[test]
    fn nonces_are_refused_the_second_time_within_the_window() {
        let c = NonceCache::new(300);
        assert!(c.insert("k", "n0nce-0000000001", 1000));
        assert!(!c.insert("k", "n0nce-0000000001", 1100));
        assert!(c.insert("other", "n0nce-0000000001", 1100));
        // The key id and the nonce are kept apart: moving a character
        // from one to the other makes another pair.
        assert!(c.insert("k", "n0nce-0000000002", 1100));
        assert!(c.insert("kn", "0nce-0000000002", 1100));
    }

    #[test]
    fn a_nonce_is_forgotten_after_the_window_and_its_memory_reclaimed() {
        let c = NonceCache::new(300);
        assert!(c.insert("k", "early-nonce-0001", 1000));
        assert!(
            !c.insert("k", "early-nonce-0001", 1600),
            "600 s later: still the window"
        );
        assert!(
            c.insert("k", "early-nonce-0001", 1601),
            "past it: a fresh request"
        );
        // 100,000 nonces, then 100,000 more once the first have expired:
        // every shard passes 8,192 entries and drops the expired ones.
        for i in 0..100_000 {
            assert!(c.insert("k", &format!("early-nonce-{i:08}"), 2000));
        }
        for i in 0..100_000 {
            assert!(c.insert("k", &format!("late-nonce-{i:08}"), 5000));
        }
        assert_eq!(c.len(), 100_000, "only the late nonces are held");
        assert!(!c.insert("k", "late-nonce-00000007", 5100));
        assert!(c.insert("k", "late-nonce-00000007", 5601));
    }

    #[test]
    fn buckets_refill_at_the_rate() {
        let l = Limiter::new(&LimitSettings::default());
        let t = tenant();
        assert!(l.admit(&t, 2, 0.0).is_ok());
        assert!(l.admit(&t, 2, 0.0).is_ok());
        assert_eq!(l.admit(&t, 2, 0.0), Err(1));
        assert!(l.admit(&t, 2, 0.6).is_ok());
    }

    #[test]
    fn guessing_throttles_then_suspends() {
        let s = LimitSettings {
            failed_redemptions_per_minute: 3,
            failed_redemptions_per_hour: 5,
            ..Default::default()
        };
        let l = Limiter::new(&s);
        let t = tenant();
        for _ in 0..3 {
            assert_eq!(l.record_failure(&t, 100), FailureVerdict::Counted);
        }
        assert_eq!(l.check_guessing(&t, 110), Err(50));
        assert!(l.check_guessing(&t, 160).is_ok(), "a new minute");
        assert_eq!(l.record_failure(&t, 161), FailureVerdict::Counted);
        assert_eq!(l.record_failure(&t, 162), FailureVerdict::Suspend);
    }
}
