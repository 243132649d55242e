//! A replica's side of the write path ([`dzl_store::writer`]): the writer's
//! own connection, and the audit chain it owns. A chain is owned through a
//! session-level advisory lock taken on that connection: a writer claims
//! the first chain no live session holds, or opens a new one (recorded and
//! announced in chain 1, in one transaction). If its connection is lost,
//! the lock goes with it, and the writer claims a chain again when it
//! reconnects. Every transaction still locks its chain's head row, so two
//! writers could never interleave one chain even if a lock were lost.

use std::time::Duration;

use dzl_audit::Head;
use dzl_store::tx::{ChainId, ChainTip, Tx, ROOT_CHAIN};
use dzl_store::writer::{Completion, Opened, TxState, Txn, WriteConn};
use dzl_store::{Call, StoreError, StoreResult, Suite};
use postgres::{Client, SimpleQueryMessage};

use crate::rows::{corrupt, suite, PgConn, CHAIN_TIP};
use crate::{Connector, Isolation};

/// The first key of the advisory locks that own chains (`"dzlc"`).
const CHAIN_LOCK: i32 = 0x647a_6c63;

/// The writer's connection.
pub(crate) struct PgWriter {
    conn: Option<PgConn<Box<Client>>>,
    chain: ChainId,
    connector: Connector,
    begin: &'static str,
    max_attempts: u32,
    /// What the open transaction's BEGIN read and locked.
    opened: Option<Opened>,
}

impl PgWriter {
    /// Connects and claims a chain.
    pub(crate) fn start(
        connector: Connector,
        isolation: Isolation,
        max_attempts: u32,
    ) -> StoreResult<PgWriter> {
        let mut w = PgWriter {
            conn: None,
            chain: ROOT_CHAIN,
            connector,
            begin: match isolation {
                Isolation::ReadCommitted => "BEGIN ISOLATION LEVEL READ COMMITTED",
                Isolation::Serializable => "BEGIN ISOLATION LEVEL SERIALIZABLE",
            },
            max_attempts: max_attempts.max(1),
            opened: None,
        };
        w.connected()?;
        Ok(w)
    }

    /// The connection, made (and a chain claimed) if there is none.
    fn connected(&mut self) -> StoreResult<&mut PgConn<Box<Client>>> {
        if self.conn.as_ref().is_some_and(|c| c.client.is_closed()) {
            self.conn = None;
        }
        if self.conn.is_none() {
            let mut conn = PgConn::new(Box::new(self.connector.connect()?));
            self.chain = claim_chain(&mut conn, self.chain)?;
            log::info!(
                "writer appends to audit chain {} at {}",
                self.chain,
                self.connector.target
            );
            self.conn = Some(conn);
        }
        self.conn
            .as_mut()
            .ok_or_else(|| StoreError::Unavailable("the writer has no connection".into()))
    }
}

/// Takes the advisory lock of `chain` for the connection's session; whether
/// it did. `None` where the engine has no advisory locks (CockroachDB).
fn try_lock(conn: &mut PgConn<Box<Client>>, chain: ChainId) -> StoreResult<Option<bool>> {
    let key = i32::try_from(chain)
        .map_err(|_| StoreError::Corrupt(format!("audit chain {chain} out of range")))?;
    match conn
        .client
        .query_one("SELECT pg_try_advisory_lock($1, $2)", &[&CHAIN_LOCK, &key])
    {
        Ok(row) => row.try_get(0).map(Some).map_err(crate::map_pg),
        Err(e) if e.code() == Some(&postgres::error::SqlState::UNDEFINED_FUNCTION) => Ok(None),
        Err(e) => Err(crate::map_pg(e)),
    }
}

/// Claims `preferred` if no session holds it, else the first free chain,
/// else a new one. Without advisory locks, every writer opens a chain of
/// its own.
fn claim_chain(conn: &mut PgConn<Box<Client>>, preferred: ChainId) -> StoreResult<ChainId> {
    for _ in 0..8 {
        let mut chains: Vec<ChainId> = conn.chains()?.into_iter().map(|c| c.chain).collect();
        chains.sort_by_key(|c| (*c != preferred, *c));
        for chain in chains {
            match try_lock(conn, chain)? {
                Some(true) => return Ok(chain),
                Some(false) => {}
                None => return open_chain(conn),
            }
        }
        let opened = open_chain(conn)?;
        if try_lock(conn, opened)? != Some(false) {
            return Ok(opened);
        }
    }
    Err(StoreError::Unavailable(
        "no audit chain could be claimed for this writer".into(),
    ))
}

/// Opens a new chain, in a transaction of chain 1's.
fn open_chain(conn: &mut PgConn<Box<Client>>) -> StoreResult<ChainId> {
    let call = Call {
        actor: "system".into(),
        operation: "audit.chain_open",
        now: chrono::Utc::now(),
    };
    conn.batch("BEGIN ISOLATION LEVEL READ COMMITTED")?;
    let mut st = TxState::new(ROOT_CHAIN);
    let opened =
        dzl_store::ops::audit::open_chain(&mut Txn::new(conn, &mut st), &call).and_then(|chain| {
            st.flush(conn)?;
            conn.batch("COMMIT")?;
            Ok(chain)
        });
    if opened.is_err() {
        let _ = conn.batch("ROLLBACK");
    }
    opened
}

impl WriteConn for PgWriter {
    fn chain(&self) -> ChainId {
        self.chain
    }

    /// None: jobs gather while a COMMIT is in flight, which on PostgreSQL
    /// waits for the WAL flush.
    fn linger(&self) -> Duration {
        Duration::ZERO
    }

    fn begin(&mut self) -> StoreResult<()> {
        self.opened = None;
        let opened = match self.open() {
            Ok(o) => o,
            Err(_) => {
                // It fails on a connection the database dropped (a
                // failover, a terminated backend) that the client has not
                // noticed yet: nothing was written, so start over once on
                // a new one.
                self.conn = None;
                self.open()?
            }
        };
        self.opened = Some(opened);
        Ok(())
    }

    fn opened(&mut self) -> Option<Opened> {
        self.opened.take()
    }

    fn tx(&mut self) -> StoreResult<&mut dyn Tx> {
        match &mut self.conn {
            Some(conn) => Ok(conn),
            None => Err(disconnected()),
        }
    }

    fn commit(&mut self) -> StoreResult<()> {
        match &mut self.conn {
            Some(conn) => conn.batch("COMMIT"),
            None => Err(disconnected()),
        }
    }

    fn rollback(&mut self) {
        if let Some(conn) = &mut self.conn {
            if conn.batch("ROLLBACK").is_err() && conn.client.is_closed() {
                self.conn = None;
            }
        }
    }

    fn answer(&mut self, done: Vec<Completion>) {
        // COMMIT returned: the transaction is durable.
        done.into_iter().for_each(|c| c(None));
    }

    fn max_attempts(&self) -> u32 {
        self.max_attempts
    }
}

impl PgWriter {
    /// BEGIN, the chain's head locked, the key versions that wrap
    /// share-locked, and the group savepoint after them: one round trip.
    fn open(&mut self) -> StoreResult<Opened> {
        let chain = self.chain;
        let sql = format!(
            "{}; {CHAIN_TIP}{chain} FOR UPDATE;
             SELECT version FROM dzl.keks WHERE state IN ('active', 'decrypt_only') FOR SHARE;
             SAVEPOINT grp",
            self.begin
        );
        let conn = self.connected()?;
        let messages = conn.client.simple_query(&sql).map_err(crate::map_pg);
        let messages = match messages {
            Ok(m) => m,
            Err(e) => {
                if !conn.client.is_closed() {
                    let _ = conn.batch("ROLLBACK");
                }
                return Err(e);
            }
        };
        let mut tip = None;
        let mut wrappable = Vec::new();
        for m in &messages {
            let SimpleQueryMessage::Row(r) = m else {
                continue;
            };
            if r.len() == 3 {
                let seq = r.get(0).and_then(|v| v.parse().ok());
                let hash = r.get(1).map(str::to_owned);
                let suite = r.get(2).map_or(Ok(Suite::Intl), suite)?;
                match (seq, hash) {
                    (Some(seq), Some(hash)) => {
                        tip = Some(ChainTip {
                            head: Head { seq, hash },
                            suite,
                        })
                    }
                    _ => return Err(corrupt("audit chain head")),
                }
            } else {
                let v = r.get(0).and_then(|v| v.parse().ok());
                wrappable.push(v.ok_or_else(|| corrupt("key version"))?);
            }
        }
        match tip {
            Some(tip) => Ok(Opened { tip, wrappable }),
            None => {
                let _ = conn.batch("ROLLBACK");
                Err(StoreError::Corrupt(format!(
                    "audit chain {chain} has no recorded head"
                )))
            }
        }
    }
}

fn disconnected() -> StoreError {
    StoreError::Unavailable("the writer lost its connection to PostgreSQL".into())
}
