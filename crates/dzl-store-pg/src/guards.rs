//! The request guards replicas must share: the SQLite server keeps them in
//! process memory (`vault-server`'s `limits`), which is the whole truth only
//! while one process serves. Over PostgreSQL every replica asks the
//! database instead: nonces (`dzl.nonces`, a nonce is fresh if no replica
//! recorded it within the window) and token buckets (`dzl.rate_buckets`,
//! one row per tenant, refilled and taken from atomically).
//!
//! The guards are batched like the writes: requests queue to one thread
//! per replica, which answers every request that arrived meanwhile with one
//! statement on a connection of its own — one round trip for a batch of
//! requests, not one per request. Within a batch a repeated nonce is a
//! replay, and a tenant's requests draw their tokens together.
//!
//! The arithmetic is the in-memory guards' own, so both backends refuse
//! alike. Times are the calling replica's clock in seconds. The
//! failed-redemption windows live with the redemptions, in the store.
//!
//! Caveat: the guards' tables are UNLOGGED: no WAL flush per batch, and
//! emptied when PostgreSQL recovers from a crash (a clean restart keeps
//! them). A crash of the database therefore forgets the nonces of the last
//! skew window (a request captured in it could be replayed once within
//! that window) and refills every bucket.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use dzl_store::writer::next_for_batch;
use dzl_store::{StoreError, StoreResult};
use dzl_types::TenantId;
use postgres::Client;

use crate::rows::PgConn;
use crate::Connector;

/// How often (seconds) expired nonces are deleted.
pub const NONCE_SWEEP_SECONDS: i64 = 60;

/// Requests one batch answers at most.
const MAX_BATCH: usize = 1024;

/// How long a batch waits for more requests once its queue is empty, when
/// the previous batch had company: on loopback the statement answers so
/// fast that batches would stay small, each one a transaction of its own.
/// A request that comes alone is answered at once.
const LINGER: Duration = Duration::from_micros(300);

/// What a guard request is answered with.
type Answer<T> = Box<dyn FnOnce(StoreResult<T>) + Send>;

/// Whether a nonce is fresh, and whether the tenant's bucket had a token
/// (or the seconds to wait).
pub type Admission = (bool, Result<(), u64>);

enum Request {
    Nonce {
        key_id: String,
        nonce: String,
        now: i64,
        window: i64,
        reply: Answer<bool>,
    },
    Token {
        tenant: TenantId,
        rate: u32,
        now: f64,
        reply: Answer<Result<(), u64>>,
    },
}

/// The shared guards of one replica. Cheap to clone.
#[derive(Clone)]
pub struct PgGuards {
    queue: Arc<Mutex<mpsc::Sender<Request>>>,
    target: Arc<str>,
}

impl std::fmt::Debug for PgGuards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgGuards")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl PgGuards {
    /// Starts the guards' thread on a connection of its own.
    pub(crate) fn start(connector: Connector) -> StoreResult<PgGuards> {
        let client = connector.connect()?;
        let (tx, rx) = mpsc::channel();
        let target = connector.target.clone();
        std::thread::Builder::new()
            .name("dzl-pg-guards".into())
            .spawn(move || batch_loop(client, connector, rx))
            .map_err(|e| StoreError::Unavailable(format!("starting the guards: {e}")))?;
        Ok(PgGuards {
            queue: Arc::new(Mutex::new(tx)),
            target,
        })
    }

    fn send(&self, r: Request) {
        let refused = match self.queue.lock() {
            Ok(q) => q.send(r).err().map(|mpsc::SendError(r)| r),
            Err(_) => Some(r),
        };
        if let Some(r) = refused {
            let e = StoreError::Unavailable("the guards have stopped".into());
            match r {
                Request::Nonce { reply, .. } => reply(Err(e)),
                Request::Token { reply, .. } => reply(Err(e)),
            }
        }
    }

    /// Records `(key_id, nonce)` as seen at `now` (seconds); `reply` gets
    /// `false` if any replica saw it within the last `window` seconds (a
    /// replay). A nonce last seen longer ago is fresh again. Callers pass
    /// twice the allowed clock skew.
    pub fn submit_nonce(
        &self,
        key_id: &str,
        nonce: &str,
        now: i64,
        window: i64,
        reply: Answer<bool>,
    ) {
        self.send(Request::Nonce {
            key_id: key_id.to_owned(),
            nonce: nonce.to_owned(),
            now,
            window,
            reply,
        })
    }

    /// Takes one request token from `tenant`'s bucket (capacity and refill
    /// `rate` per second, at least 1) at `now` (seconds, fractional);
    /// `reply` gets `Err(seconds)` to wait when none is left.
    pub fn submit_token(
        &self,
        tenant: &TenantId,
        rate: u32,
        now: f64,
        reply: Answer<Result<(), u64>>,
    ) {
        self.send(Request::Token {
            tenant: tenant.clone(),
            rate,
            now,
            reply,
        })
    }

    /// [`PgGuards::submit_nonce`] and [`PgGuards::submit_token`] as one
    /// request, answered together: what a signed request needs before it
    /// is served, in one round trip.
    #[allow(clippy::too_many_arguments)]
    pub fn submit_nonce_and_token(
        &self,
        key_id: &str,
        nonce: &str,
        now: i64,
        window: i64,
        tenant: &TenantId,
        rate: u32,
        at: f64,
        reply: Answer<Admission>,
    ) {
        type Halves = (
            Option<StoreResult<bool>>,
            Option<StoreResult<Result<(), u64>>>,
        );
        type Joined = Mutex<(Halves, Option<Answer<Admission>>)>;
        let joined: Arc<Joined> = Arc::new(Mutex::new(((None, None), Some(reply))));
        // Answers once both halves are in.
        fn settle(joined: &Joined, fill: impl FnOnce(&mut Halves)) {
            let Ok(mut j) = joined.lock() else { return };
            fill(&mut j.0);
            if let ((Some(_), Some(_)), Some(_)) = (&j.0, &j.1) {
                let (halves, reply) = (std::mem::take(&mut j.0), j.1.take());
                if let ((Some(n), Some(t)), Some(reply)) = (halves, reply) {
                    reply(n.and_then(|fresh| t.map(|admitted| (fresh, admitted))));
                }
            }
        }
        let (n, t) = (joined.clone(), joined);
        self.submit_nonce(
            key_id,
            nonce,
            now,
            window,
            Box::new(move |out| settle(&n, |h| h.0 = Some(out))),
        );
        self.submit_token(
            tenant,
            rate,
            at,
            Box::new(move |out| settle(&t, |h| h.1 = Some(out))),
        );
    }

    /// [`PgGuards::submit_nonce`], waiting for the answer.
    pub fn nonce_fresh(
        &self,
        key_id: &str,
        nonce: &str,
        now: i64,
        window: i64,
    ) -> StoreResult<bool> {
        wait(|reply| self.submit_nonce(key_id, nonce, now, window, reply))
    }

    /// [`PgGuards::submit_token`], waiting for the answer.
    pub fn take_token(
        &self,
        tenant: &TenantId,
        rate: u32,
        now: f64,
    ) -> StoreResult<Result<(), u64>> {
        wait(|reply| self.submit_token(tenant, rate, now, reply))
    }
}

fn wait<T: Send + 'static>(submit: impl FnOnce(Answer<T>)) -> StoreResult<T> {
    let (tx, rx) = mpsc::sync_channel(1);
    submit(Box::new(move |out| {
        let _ = tx.send(out);
    }));
    rx.recv()
        .map_err(|_| StoreError::Unavailable("the guards have stopped".into()))?
}

/// The guards' thread: answers what queued, a batch at a time.
fn batch_loop(client: Client, connector: Connector, rx: mpsc::Receiver<Request>) {
    // Its statements are prepared once: unprepared, the guards' statement
    // would cost a second round trip and a second transaction per batch.
    let mut conn = Some(PgConn::new(Box::new(client)));
    let last_sweep = AtomicI64::new(0);
    let mut previous = 0;
    while let Ok(first) = rx.recv() {
        let deadline = Instant::now() + LINGER;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match next_for_batch(&rx, previous, deadline) {
                Some(r) => batch.push(r),
                None => break,
            }
        }
        previous = batch.len();
        let c = match conn.take().filter(|c| !c.client.is_closed()) {
            Some(c) => Ok(c),
            None => connector
                .connect()
                .map(|client| PgConn::new(Box::new(client))),
        };
        match c {
            Ok(mut c) => {
                answer(&mut c, batch, &last_sweep);
                conn = Some(c);
            }
            Err(e) => fail(batch, &e),
        }
    }
}

fn fail(batch: Vec<Request>, e: &StoreError) {
    for r in batch {
        match r {
            Request::Nonce { reply, .. } => reply(Err(e.clone())),
            Request::Token { reply, .. } => reply(Err(e.clone())),
        }
    }
}

/// One statement for the whole batch: the nonces it records, and each
/// tenant's tokens taken together.
const GUARDS: &str = "
WITH n AS (
    INSERT INTO dzl.nonces AS n (key_id, nonce, seen_at)
    SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])
    ON CONFLICT (key_id, nonce) DO UPDATE SET seen_at = EXCLUDED.seen_at
        WHERE n.seen_at < EXCLUDED.seen_at - $4
    RETURNING key_id, nonce
), b AS (
    INSERT INTO dzl.rate_buckets AS b (tenant_id, tokens, last_at, granted, rate, wanted, taken)
    SELECT t, r - least(w, floor(r)), at, true, r, w, least(w, floor(r))::int
    FROM unnest($5::text[], $6::float8[], $7::float8[], $8::int[]) AS x(t, r, at, w)
    ON CONFLICT (tenant_id) DO UPDATE SET
        taken = least(EXCLUDED.wanted, floor(least(b.tokens
            + greatest(EXCLUDED.last_at - b.last_at, 0) * EXCLUDED.rate, EXCLUDED.rate)))::int,
        tokens = least(b.tokens + greatest(EXCLUDED.last_at - b.last_at, 0) * EXCLUDED.rate,
            EXCLUDED.rate)
            - least(EXCLUDED.wanted, floor(least(b.tokens
                + greatest(EXCLUDED.last_at - b.last_at, 0) * EXCLUDED.rate, EXCLUDED.rate))),
        last_at = greatest(b.last_at, EXCLUDED.last_at),
        rate = EXCLUDED.rate,
        wanted = EXCLUDED.wanted
    RETURNING tenant_id, tokens, taken, rate
)
SELECT 0, key_id, nonce, 0::float8, 0, 0::float8 FROM n
UNION ALL
SELECT 1, tenant_id, '', tokens, taken, rate FROM b";

/// A tenant's token requests in one batch: its rate, the latest time
/// asked, and the replies in arrival order.
type Takers = (f64, f64, Vec<Answer<Result<(), u64>>>);

fn answer(conn: &mut PgConn<Box<Client>>, batch: Vec<Request>, last_sweep: &AtomicI64) {
    let mut nonces: Vec<(String, String, i64)> = Vec::new();
    let mut window = 0i64;
    let mut seen: HashSet<(String, String)> = HashSet::new();
    let mut nonce_replies: Vec<((String, String), Answer<bool>)> = Vec::new();
    let mut replays: Vec<Answer<bool>> = Vec::new();
    // Per tenant: rate, latest time, the replies in arrival order.
    let mut tokens: HashMap<TenantId, Takers> = HashMap::new();
    let mut newest = 0i64;
    for r in batch {
        match r {
            Request::Nonce {
                key_id,
                nonce,
                now,
                window: w,
                reply,
            } => {
                let key = (key_id, nonce);
                if !seen.insert(key.clone()) {
                    replays.push(reply);
                    continue;
                }
                window = window.max(w);
                newest = newest.max(now);
                nonces.push((key.0.clone(), key.1.clone(), now));
                nonce_replies.push((key, reply));
            }
            Request::Token {
                tenant,
                rate,
                now,
                reply,
            } => {
                let e = tokens
                    .entry(tenant)
                    .or_insert_with(|| (f64::from(rate.max(1)), now, Vec::new()));
                e.0 = f64::from(rate.max(1));
                e.1 = e.1.max(now);
                e.2.push(reply);
            }
        }
    }
    for reply in replays {
        reply(Ok(false));
    }
    let keys: Vec<&str> = nonces.iter().map(|n| n.0.as_str()).collect();
    let values: Vec<&str> = nonces.iter().map(|n| n.1.as_str()).collect();
    let at: Vec<i64> = nonces.iter().map(|n| n.2).collect();
    let tenants: Vec<(&TenantId, &Takers)> = tokens.iter().collect();
    let ids: Vec<&str> = tenants.iter().map(|(t, _)| t.as_str()).collect();
    let rates: Vec<f64> = tenants.iter().map(|(_, e)| e.0).collect();
    let times: Vec<f64> = tenants.iter().map(|(_, e)| e.1).collect();
    let wanted: Vec<i32> = tenants
        .iter()
        .map(|(_, e)| i32::try_from(e.2.len()).unwrap_or(i32::MAX))
        .collect();
    let result = conn.query(
        GUARDS,
        &[&keys, &values, &at, &window, &ids, &rates, &times, &wanted],
    );
    let rows = match result {
        Ok(rows) => rows,
        Err(e) => {
            for (_, reply) in nonce_replies {
                reply(Err(e.clone()));
            }
            for (_, (_, _, replies)) in tokens {
                for reply in replies {
                    reply(Err(e.clone()));
                }
            }
            return;
        }
    };
    let mut fresh: HashSet<(String, String)> = HashSet::new();
    let mut granted: HashMap<String, (f64, i32, f64)> = HashMap::new();
    for r in &rows {
        let kind: i32 = r.try_get(0).unwrap_or(-1);
        let a: String = r.try_get(1).unwrap_or_default();
        if kind == 0 {
            fresh.insert((a, r.try_get(2).unwrap_or_default()));
        } else {
            granted.insert(
                a,
                (
                    r.try_get(3).unwrap_or(0.0),
                    r.try_get(4).unwrap_or(0),
                    r.try_get(5).unwrap_or(1.0),
                ),
            );
        }
    }
    for (key, reply) in nonce_replies {
        reply(Ok(fresh.contains(&key)));
    }
    for (tenant, (_, _, replies)) in tokens {
        let (left, taken, rate) = granted
            .get(tenant.as_str())
            .copied()
            .unwrap_or((0.0, 0, 1.0));
        let wait = ((1.0 - left) / rate.max(1.0)).ceil().max(1.0) as u64;
        for (i, reply) in replies.into_iter().enumerate() {
            if i64::try_from(i).unwrap_or(i64::MAX) < i64::from(taken) {
                reply(Ok(Ok(())));
            } else {
                reply(Ok(Err(wait)));
            }
        }
    }
    let last = last_sweep.load(Ordering::Relaxed);
    if newest > 0 && newest - last >= NONCE_SWEEP_SECONDS {
        last_sweep.store(newest, Ordering::Relaxed);
        // Housekeeping: a failure here does not make a nonce less fresh.
        // Rows are kept a second window, so a replica whose clock runs up
        // to a window behind this one's does not see its nonces swept while
        // it still accepts their timestamps.
        if let Err(e) = conn.exec(
            "DELETE FROM dzl.nonces WHERE seen_at < $1",
            &[&(newest - 2 * window)],
        ) {
            log::warn!("deleting expired nonces: {e}");
        }
    }
}
