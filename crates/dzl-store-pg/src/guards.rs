//! The request guards replicas must share: the SQLite server keeps them in
//! process memory (`vault-server`'s `limits`), which is the whole truth only
//! while one process serves. Over PostgreSQL every replica asks the
//! database instead, each guard in one short statement (or, for the
//! suspension verdict, one short transaction):
//!
//! * [`PgGuards::nonce_fresh`]: an `INSERT … ON CONFLICT` into the
//!   UNLOGGED table `dzl.nonces`; a nonce is fresh if no replica recorded it
//!   within the window. Old rows are deleted by whichever replica's call
//!   comes first after [`NONCE_SWEEP_SECONDS`].
//! * [`PgGuards::take_token`]: one token bucket row per tenant
//!   (`dzl.rate_buckets`), refilled and taken from in one atomic upsert.
//! * [`PgGuards::check_guessing`] and [`PgGuards::record_failure`]: the
//!   failed-redemption windows per funder (`dzl.failure_windows`), a minute
//!   (throttle) and an hour (suspend).
//!
//! The arithmetic is the in-memory guards' own, so both backends refuse
//! alike. Times are the calling replica's clock in seconds.
//!
//! Caveat: UNLOGGED tables are emptied when PostgreSQL recovers from a
//! crash. A crash of the database therefore forgets the nonces of the last
//! skew window (a request captured in it could be replayed once within that
//! window) and refills every bucket; failure windows are logged and survive.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use dzl_store::StoreResult;
use dzl_types::TenantId;

use crate::{with_client, Pool, TxResult};

/// The bucket's level at the call: refilled at the rate since its last
/// call (never backwards when replicas' clocks differ), capped at the rate.
const REFILLED: &str =
    "least(b.tokens + greatest(EXCLUDED.last_at - b.last_at, 0) * $2::float8, $2::float8)";

/// How often (seconds) expired nonces are deleted.
pub const NONCE_SWEEP_SECONDS: i64 = 60;

/// Attempts of a guard statement that conflicts (40001) on engines that
/// run SERIALIZABLE.
const ATTEMPTS: u32 = 8;

/// The shared guards, over a [`crate::PgStore`]'s pool
/// ([`crate::PgStore::guards`]). Cheap to clone.
#[derive(Clone)]
pub struct PgGuards {
    pool: Pool,
    target: Arc<str>,
    last_sweep: Arc<AtomicI64>,
}

impl std::fmt::Debug for PgGuards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgGuards")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl PgGuards {
    pub(crate) fn new(pool: Pool, target: Arc<str>) -> Self {
        PgGuards {
            pool,
            target,
            last_sweep: Arc::new(AtomicI64::new(0)),
        }
    }

    fn client<R>(&self, f: impl FnMut(&mut postgres::Client) -> TxResult<R>) -> StoreResult<R> {
        with_client(&self.pool, &self.target, ATTEMPTS, f)
    }

    /// Records `(key_id, nonce)` as seen at `now_secs` (the server's clock);
    /// `false` if any replica saw it within the last `window_secs` (a
    /// replay). A nonce last seen longer ago than that is fresh again, as in
    /// the in-memory cache. Callers pass twice the allowed clock skew.
    pub fn nonce_fresh(
        &self,
        key_id: &str,
        nonce: &str,
        now_secs: i64,
        window_secs: i64,
    ) -> StoreResult<bool> {
        let fresh = self.client(|c| {
            Ok(c.execute(
                "INSERT INTO dzl.nonces AS n (key_id, nonce, seen_at) VALUES ($1, $2, $3)
                 ON CONFLICT (key_id, nonce) DO UPDATE SET seen_at = EXCLUDED.seen_at
                 WHERE n.seen_at < EXCLUDED.seen_at - $4",
                &[&key_id, &nonce, &now_secs, &window_secs],
            )? == 1)
        })?;
        let last = self.last_sweep.load(Ordering::Relaxed);
        if now_secs - last >= NONCE_SWEEP_SECONDS
            && self
                .last_sweep
                .compare_exchange(last, now_secs, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            // Housekeeping: a failure here does not make the nonce less fresh.
            if let Err(e) = self.sweep_nonces(now_secs - window_secs) {
                log::warn!("deleting expired nonces: {e}");
            }
        }
        Ok(fresh)
    }

    /// Deletes nonces seen before `before_secs`; returns how many.
    pub fn sweep_nonces(&self, before_secs: i64) -> StoreResult<u64> {
        self.client(
            |c| Ok(c.execute("DELETE FROM dzl.nonces WHERE seen_at < $1", &[&before_secs])?),
        )
    }

    /// Takes one request token from `tenant`'s bucket (capacity and refill
    /// `rate_per_sec`, at least 1) at `now` (seconds, fractional);
    /// `Ok(Err(seconds))` to wait when none is left. One atomic upsert, so
    /// every replica draws from the same bucket.
    pub fn take_token(
        &self,
        tenant: &TenantId,
        rate_per_sec: u32,
        now: f64,
    ) -> StoreResult<Result<(), u64>> {
        let rate = f64::from(rate_per_sec.max(1));
        let (tokens, granted): (f64, bool) = self.client(|c| {
            let row = c.query_one(
                &format!(
                    "INSERT INTO dzl.rate_buckets AS b (tenant_id, tokens, last_at, granted)
                     VALUES ($1, $2::float8 - 1, $3::float8, true)
                     ON CONFLICT (tenant_id) DO UPDATE SET
                         tokens = CASE WHEN {REFILLED} >= 1 THEN {REFILLED} - 1 ELSE {REFILLED} END,
                         granted = {REFILLED} >= 1,
                         last_at = greatest(b.last_at, EXCLUDED.last_at)
                     RETURNING tokens, granted"
                ),
                &[&tenant.as_str(), &rate, &now],
            )?;
            Ok((row.try_get(0)?, row.try_get(1)?))
        })?;
        if granted {
            Ok(Ok(()))
        } else {
            Ok(Err(((1.0 - tokens) / rate).ceil().max(1.0) as u64))
        }
    }

    /// Whether a funder is throttled for guessing at `now` (seconds):
    /// `Ok(Err(seconds))` until the current minute's window ends, once it has
    /// `per_minute` failed redemptions in it.
    pub fn check_guessing(
        &self,
        tenant: &TenantId,
        now: i64,
        per_minute: u32,
    ) -> StoreResult<Result<(), u64>> {
        let window: Option<(i64, i32)> = self.client(|c| {
            let row = c.query_opt(
                "SELECT minute_start, minute_count FROM dzl.failure_windows WHERE tenant_id = $1",
                &[&tenant.as_str()],
            )?;
            Ok(row
                .map(|r| -> Result<_, postgres::Error> { Ok((r.try_get(0)?, r.try_get(1)?)) })
                .transpose()?)
        })?;
        Ok(match window {
            Some((start, count))
                if now - start < 60 && i64::from(count) >= i64::from(per_minute) =>
            {
                Err((60 - (now - start)).max(1) as u64)
            }
            _ => Ok(()),
        })
    }

    /// Counts a redemption of an unknown code at `now` (seconds); `true`
    /// when this failure reaches `per_hour` in the hour: suspend the funder
    /// now. The windows then start afresh, so exactly one caller — on
    /// whichever replica — is told to suspend.
    pub fn record_failure(&self, tenant: &TenantId, now: i64, per_hour: u32) -> StoreResult<bool> {
        self.client(|c| {
            let mut tx = c.transaction()?;
            let row = tx.query_one(
                "INSERT INTO dzl.failure_windows AS f
                     (tenant_id, minute_start, minute_count, hour_start, hour_count)
                 VALUES ($1, $2, 1, $2, 1)
                 ON CONFLICT (tenant_id) DO UPDATE SET
                     minute_start = CASE WHEN $2 - f.minute_start >= 60 THEN $2 ELSE f.minute_start END,
                     minute_count = CASE WHEN $2 - f.minute_start >= 60 THEN 1 ELSE f.minute_count + 1 END,
                     hour_start = CASE WHEN $2 - f.hour_start >= 3600 THEN $2 ELSE f.hour_start END,
                     hour_count = CASE WHEN $2 - f.hour_start >= 3600 THEN 1 ELSE f.hour_count + 1 END
                 RETURNING hour_count",
                &[&tenant.as_str(), &now],
            )?;
            let hour: i32 = row.try_get(0)?;
            let suspend = i64::from(hour) >= i64::from(per_hour);
            if suspend {
                tx.execute(
                    "DELETE FROM dzl.failure_windows WHERE tenant_id = $1",
                    &[&tenant.as_str()],
                )?;
            }
            tx.commit()?;
            Ok(suspend)
        })
    }

    /// Forgets a funder's failure windows (e.g. when an operator resumes it).
    pub fn clear_failures(&self, tenant: &TenantId) -> StoreResult<()> {
        self.client(|c| {
            c.execute(
                "DELETE FROM dzl.failure_windows WHERE tenant_id = $1",
                &[&tenant.as_str()],
            )?;
            Ok(())
        })
    }
}
