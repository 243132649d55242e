//! Guards of the request path: the nonce cache (replay protection) and
//! per-tenant token buckets (request rate limits). The failed-redemption
//! windows that throttle and then suspend a guessing funder are the
//! store's, kept with the redemptions (`dzl_store::ops::redeem`).
//!
//! With SQLite one process serves one data directory (the server holds a
//! lock on it), so process memory is the whole truth: [`Guards::Local`].
//! A request signed ahead of the server's clock is also recorded in the
//! store before it is served, and the cache is loaded from the store at
//! start: a request signed at or before the start is refused anyway, so
//! these are the only nonces a restart could forget. With PostgreSQL
//! several replicas serve one database, so the guards live there, shared
//! and batched: [`Guards::Shared`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use dzl_store::{Store, StoreError};
use dzl_types::TenantId;

use crate::settings::LimitSettings;

/// Where the guards keep their state.
pub enum Guards {
    /// In this process (SQLite: one server per data directory).
    Local {
        /// Nonces seen.
        nonces: NonceCache,
        /// Buckets.
        limiter: Limiter,
        /// Where nonces of requests signed ahead of the clock are kept.
        store: Arc<dyn Store>,
        /// Accepted clock skew, seconds.
        skew: i64,
    },
    /// In PostgreSQL, shared by every replica.
    Shared {
        /// The shared guards.
        pg: dzl_store_pg::PgGuards,
        /// Seconds a nonce is remembered.
        window: i64,
    },
}

/// Awaits a guard's answer given to `reply`.
async fn answered<T: Send + 'static>(
    submit: impl FnOnce(Box<dyn FnOnce(Result<T, StoreError>) + Send>),
) -> Result<T, StoreError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    submit(Box::new(move |out| {
        let _ = tx.send(out);
    }));
    rx.await
        .map_err(|_| StoreError::Unavailable("a guard dropped a request unanswered".into()))?
}

impl Guards {
    /// In-process guards over `store`, loaded with the nonces it kept.
    pub fn local(s: &LimitSettings, store: Arc<dyn Store>, now: i64) -> Result<Self, StoreError> {
        let nonces = NonceCache::new(s.max_skew_seconds);
        for (key_id, nonce, until) in store.live_nonces(now)? {
            nonces.insert(&key_id, &nonce, until - nonces.window);
        }
        Ok(Guards::Local {
            nonces,
            limiter: Limiter::new(),
            store,
            skew: s.max_skew_seconds,
        })
    }

    /// Guards shared through PostgreSQL.
    pub fn shared(pg: dzl_store_pg::PgGuards, s: &LimitSettings) -> Self {
        Guards::Shared {
            pg,
            window: 2 * s.max_skew_seconds,
        }
    }

    /// Records `(key_id, nonce)` of a request signed at `signed` and
    /// received at `now`; `false` if it was seen within the window. With
    /// `admit`, also takes a request token from that tenant's bucket (rate
    /// per second, time in seconds), in the same round trip over
    /// PostgreSQL: `Err(seconds)` to wait when none is left.
    pub async fn check(
        &self,
        key_id: &str,
        nonce: &str,
        signed: i64,
        now: i64,
        admit: Option<(&TenantId, u32, f64)>,
    ) -> Result<(bool, Option<Result<(), u64>>), StoreError> {
        if let (Guards::Shared { pg, window }, Some((tenant, rate, at))) = (self, admit) {
            return answered(|reply| {
                pg.submit_nonce_and_token(key_id, nonce, now, *window, tenant, rate, at, reply)
            })
            .await
            .map(|(fresh, admitted)| (fresh, Some(admitted)));
        }
        let fresh = self.nonce_fresh(key_id, nonce, signed, now).await?;
        let admitted = match admit {
            Some((tenant, rate, at)) if fresh => Some(self.admit(tenant, rate, at).await?),
            _ => None,
        };
        Ok((fresh, admitted))
    }

    /// Records `(key_id, nonce)` of a request signed at `signed` and
    /// received at `now`; `false` if it was seen within the window.
    pub async fn nonce_fresh(
        &self,
        key_id: &str,
        nonce: &str,
        signed: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        match self {
            Guards::Local {
                nonces,
                store,
                skew,
                ..
            } => {
                if !nonces.insert(key_id, nonce, now) {
                    return Ok(false);
                }
                if signed <= now {
                    return Ok(true);
                }
                // Signed ahead of the clock: kept in the store before it is
                // served, so a restart cannot forget it.
                let until = signed + skew;
                let store = store.clone();
                let (k, n) = (key_id.to_owned(), nonce.to_owned());
                actix_web::web::block(move || store.remember_nonce(&k, &n, until, now))
                    .await
                    .map_err(|e| StoreError::Unavailable(format!("blocking pool: {e}")))?
            }
            Guards::Shared { pg, window } => {
                answered(|reply| pg.submit_nonce(key_id, nonce, now, *window, reply)).await
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
                answered(|reply| pg.submit_token(tenant, rate, now, reply)).await
            }
        }
    }
}

const SHARDS: usize = 16;

/// What the cache keeps of a nonce: the first 128 bits of SHA-256 over the
/// key id's length, the key id and the nonce — a fifth of the memory of
/// keeping the two strings, and half the time per insert
/// (`examples/nonce_memory.rs`, docs/performance.md). Two different nonces share a digest with probability about n²/2¹²⁹ for
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

/// Per-tenant request rate limits.
#[derive(Default)]
pub struct Limiter {
    buckets: Mutex<HashMap<TenantId, Bucket>>,
}

impl Limiter {
    /// A limiter with no bucket yet.
    pub fn new() -> Self {
        Limiter::default()
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
        let l = Limiter::new();
        let t = tenant();
        assert!(l.admit(&t, 2, 0.0).is_ok());
        assert!(l.admit(&t, 2, 0.0).is_ok());
        assert_eq!(l.admit(&t, 2, 0.0), Err(1));
        assert!(l.admit(&t, 2, 0.6).is_ok());
    }
}
