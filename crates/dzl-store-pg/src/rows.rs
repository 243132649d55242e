//! [`Tx`] on PostgreSQL: the SQL text of every row-level read and write,
//! with the row locks [`Lock`] asks for. A connection keeps its prepared
//! statements, so a statement costs one round trip after its first use;
//! the steps that touch several rows of one request (a deposit, a
//! redemption) are one statement each, with data-modifying CTEs.
//!
//! Usage counters carry the writer's chain in their key, so no two
//! writers ever update the same counter row.

mod reseal;

use std::collections::HashMap;
use std::ops::DerefMut;

use chrono::{DateTime, TimeZone, Utc};
use dzl_audit::{AuditEntry, AuditRecord, ChainHash, Head};
use dzl_store::rules::StoredCodeState;
use dzl_store::tx::{
    ChainId, ChainRow, ChainTip, CodeInsert, CodeRow, DepositInsert, DepositRow, DepositState,
    FailureWindow, Lock, RedemptionRow, Release, StoredOutcome, Tx, UsageKey,
};
use dzl_store::{
    AuditQuery, CertPin, DataKeyKind, DepositSeal, Filing, KekRow, KekState, KekVersion, KeyUsage,
    PreviousSecret, PurgeCounts, PurgePlan, ResealedDeposit, RewrappedDataKey, RewrappedSecret,
    Sealed, SealedDeposit, SealedSecret, SecretRef, StoreError, StoreResult, StoredDataKey, Suite,
    TenantKind, TenantRow, TenantState, UsageQuery, UsageRow,
};
use dzl_types::wire::Decision;
use dzl_types::{CodeId, DepositId, Group, Purpose, RedemptionId, ScopeSet, TenantId};
use postgres::types::{FromSql, ToSql};
use postgres::{Client, Row, Statement};

use crate::map_pg;

/// A connection as a [`Tx`], with its prepared statements.
pub(crate) struct PgConn<C> {
    pub(crate) client: C,
    stmts: HashMap<String, Statement>,
}

impl<C: DerefMut<Target = Client>> PgConn<C> {
    pub(crate) fn new(client: C) -> Self {
        PgConn {
            client,
            stmts: HashMap::new(),
        }
    }

    fn stmt(&mut self, sql: &str) -> StoreResult<Statement> {
        if let Some(s) = self.stmts.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql).map_err(map_pg)?;
        self.stmts.insert(sql.to_owned(), s.clone());
        Ok(s)
    }

    pub(crate) fn query(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> StoreResult<Vec<Row>> {
        let s = self.stmt(sql)?;
        self.client.query(&s, params).map_err(map_pg)
    }

    fn opt(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<Option<Row>> {
        let s = self.stmt(sql)?;
        self.client.query_opt(&s, params).map_err(map_pg)
    }

    fn one(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<Row> {
        let s = self.stmt(sql)?;
        self.client.query_one(&s, params).map_err(map_pg)
    }

    pub(crate) fn exec(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<u64> {
        let s = self.stmt(sql)?;
        self.client.execute(&s, params).map_err(map_pg)
    }

    /// Runs statements without parameters (transaction control).
    pub(crate) fn batch(&mut self, sql: &str) -> StoreResult<()> {
        self.client.batch_execute(sql).map_err(map_pg)
    }
}

/// Usage counts as the columns `unnest` takes.
struct UsageColumns<'a> {
    days: Vec<&'a str>,
    tenants: Vec<&'a str>,
    ops: Vec<&'a str>,
    outcomes: Vec<&'a str>,
    calls: Vec<i64>,
}

impl<'a> UsageColumns<'a> {
    fn of(counts: &'a [(UsageKey, u64)]) -> Self {
        UsageColumns {
            days: counts.iter().map(|((d, ..), _)| d.as_str()).collect(),
            tenants: counts.iter().map(|((_, t, ..), _)| t.as_str()).collect(),
            ops: counts.iter().map(|((_, _, o, _), _)| *o).collect(),
            outcomes: counts.iter().map(|((.., r), _)| r.as_str()).collect(),
            calls: counts
                .iter()
                .map(|(_, c)| i64::try_from(*c).unwrap_or(i64::MAX))
                .collect(),
        }
    }
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_ms(v: i64) -> StoreResult<DateTime<Utc>> {
    Utc.timestamp_millis_opt(v)
        .single()
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {v} out of range")))
}

/// A chain's head and the vault's suite, as [`ChainTip`] reads them; the
/// chain's number follows.
pub(crate) const CHAIN_TIP: &str = "SELECT seq, hash, (SELECT suite FROM dzl.keks \
    WHERE state = 'active') FROM dzl.audit_chains WHERE chain = ";

pub(crate) fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("unexpected stored {what}"))
}

/// Column `i` of `r`; a value that does not decode is `Corrupt`.
fn get<'a, T: FromSql<'a>>(r: &'a Row, i: usize) -> StoreResult<T> {
    r.try_get(i)
        .map_err(|e| StoreError::Corrupt(format!("unexpected stored value: {e}")))
}

/// A KEK version as stored (INTEGER).
fn db_version(v: u32) -> StoreResult<i32> {
    i32::try_from(v).map_err(|_| StoreError::Invalid(format!("key version {v} out of range")))
}

fn version_of(v: i32) -> StoreResult<u32> {
    u32::try_from(v).map_err(|_| corrupt("key version"))
}

fn count_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn limit_of(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn scopes(s: &str) -> StoreResult<ScopeSet> {
    ScopeSet::parse_list(s).map_err(|_| corrupt("scope set"))
}

pub(crate) fn suite(s: &str) -> StoreResult<Suite> {
    Suite::parse(s).map_err(|_| corrupt("suite"))
}

fn purpose(s: &str) -> StoreResult<Purpose> {
    Purpose::parse(s).map_err(|_| corrupt("purpose"))
}

fn lock_clause(lock: Lock) -> &'static str {
    match lock {
        Lock::None => "",
        Lock::Share => " FOR SHARE",
        Lock::Update => " FOR UPDATE",
    }
}

const DEPOSIT_COLUMNS: &str = "id, platform_id, external_ref, purpose, consent, consent_scopes,
    consent_expires, groups, state, created_at";

fn deposit_row(r: &Row) -> StoreResult<DepositRow> {
    Ok(DepositRow {
        id: DepositId::from_trusted(get::<String>(r, 0)?),
        platform_id: TenantId::from_trusted(get::<String>(r, 1)?),
        external_ref: get(r, 2)?,
        purpose: purpose(get(r, 3)?)?,
        consent_json: get(r, 4)?,
        consent_scopes: scopes(get(r, 5)?)?,
        consent_expires: from_ms(get(r, 6)?)?,
        groups: scopes(get(r, 7)?)?,
        state: DepositState::parse(get(r, 8)?).ok_or_else(|| corrupt("deposit state"))?,
        created_at: from_ms(get(r, 9)?)?,
    })
}

const CODE_COLUMNS: &str = "row, code_id, secret_hash, deposit_id, platform_id, funder_id, scopes,
    purpose, state, expires_at, redeemed_at, redemption_id";

fn code_row(r: &Row) -> StoreResult<CodeRow> {
    Ok(CodeRow {
        row: get(r, 0)?,
        code_id: CodeId::from_trusted(get::<String>(r, 1)?),
        secret_hash: get(r, 2)?,
        deposit_id: DepositId::from_trusted(get::<String>(r, 3)?),
        platform_id: TenantId::from_trusted(get::<String>(r, 4)?),
        funder_id: TenantId::from_trusted(get::<String>(r, 5)?),
        scopes: scopes(get(r, 6)?)?,
        purpose: purpose(get(r, 7)?)?,
        state: StoredCodeState::parse(get(r, 8)?).ok_or_else(|| corrupt("code state"))?,
        expires_at: from_ms(get(r, 9)?)?,
        redeemed_at: get::<Option<i64>>(r, 10)?.map(from_ms).transpose()?,
        redemption_id: get::<Option<String>>(r, 11)?.map(RedemptionId::from_trusted),
    })
}

const REDEMPTION_COLUMNS: &str = "r.id, r.code_row, r.code_id, r.deposit_id, r.platform_id,
    r.funder_id, r.purpose, r.scopes, r.redeemed_at, r.decision, r.amount_fen, r.reported_at";

fn redemption_row(r: &Row) -> StoreResult<RedemptionRow> {
    let outcome = match get::<Option<String>>(r, 9)? {
        Some(d) => Some(StoredOutcome {
            decision: Decision::parse(&d).ok_or_else(|| corrupt("decision"))?,
            amount_fen: get::<Option<i64>>(r, 10)?.map(count_of),
            reported_at: from_ms(get::<Option<i64>>(r, 11)?.unwrap_or(0))?,
        }),
        None => None,
    };
    Ok(RedemptionRow {
        id: RedemptionId::from_trusted(get::<String>(r, 0)?),
        code_row: get(r, 1)?,
        code_id: CodeId::from_trusted(get::<String>(r, 2)?),
        deposit_id: DepositId::from_trusted(get::<String>(r, 3)?),
        platform_id: TenantId::from_trusted(get::<String>(r, 4)?),
        funder_id: TenantId::from_trusted(get::<String>(r, 5)?),
        purpose: purpose(get(r, 6)?)?,
        scopes: scopes(get(r, 7)?)?,
        redeemed_at: from_ms(get(r, 8)?)?,
        outcome,
    })
}

const TENANT_COLUMNS: &str = "id, kind, name, key_id, secret_kek_version, secret_sealed, scopes,
    purposes, rate_limit, state, created_at, previous_secret_kek_version, previous_secret_sealed,
    previous_secret_valid_until, cert_pin";

fn tenant_row(r: &Row) -> StoreResult<TenantRow> {
    let previous = match (
        get::<Option<i32>>(r, 11)?,
        get::<Option<Vec<u8>>>(r, 12)?,
        get::<Option<i64>>(r, 13)?,
    ) {
        (Some(v), Some(bytes), Some(until)) => Some(PreviousSecret {
            secret: Sealed {
                kek_version: version_of(v)?,
                bytes,
            },
            valid_until: from_ms(until)?,
        }),
        (None, None, None) => None,
        _ => return Err(corrupt("previous tenant secret")),
    };
    Ok(TenantRow {
        id: TenantId::from_trusted(get::<String>(r, 0)?),
        kind: TenantKind::parse(get(r, 1)?).ok_or_else(|| corrupt("tenant kind"))?,
        name: get(r, 2)?,
        key_id: get(r, 3)?,
        secret: Sealed {
            kek_version: version_of(get(r, 4)?)?,
            bytes: get(r, 5)?,
        },
        scopes: get::<Option<&str>>(r, 6)?.map(scopes).transpose()?,
        purposes: dzl_types::domain::parse_purposes(get(r, 7)?).map_err(|_| corrupt("purposes"))?,
        rate_limit: u32::try_from(get::<i64>(r, 8)?).map_err(|_| corrupt("rate limit"))?,
        state: TenantState::parse(get(r, 9)?).ok_or_else(|| corrupt("tenant state"))?,
        created_at: from_ms(get(r, 10)?)?,
        previous_secret: previous,
        cert_pin: get::<Option<&str>>(r, 14)?
            .map(|p| CertPin::parse(p).map_err(|_| corrupt("tenant certificate pin")))
            .transpose()?,
    })
}

fn purposes_text(purposes: &[Purpose]) -> String {
    let p: Vec<&str> = purposes.iter().map(|p| p.as_str()).collect();
    p.join(",")
}

const AUDIT_COLUMNS: &str = "chain, seq, at, actor, operation, result, purpose, deposit_id,
    code_id, redemption_id, subject_tenant, groups, detail, prev_hash, hash, alg";

fn audit_row(r: &Row) -> StoreResult<AuditEntry> {
    Ok(AuditEntry {
        chain: get(r, 0)?,
        seq: get(r, 1)?,
        alg: ChainHash::from_stored(get::<Option<&str>>(r, 15)?)
            .ok_or_else(|| corrupt("audit hash"))?,
        record: AuditRecord {
            at: get(r, 2)?,
            actor: get(r, 3)?,
            operation: get(r, 4)?,
            result: get(r, 5)?,
            purpose: get(r, 6)?,
            deposit_id: get(r, 7)?,
            code_id: get(r, 8)?,
            redemption_id: get(r, 9)?,
            subject_tenant: get(r, 10)?,
            groups: get(r, 11)?,
            detail: get(r, 12)?,
        },
        prev_hash: get(r, 13)?,
        hash: get(r, 14)?,
    })
}

fn sealed_row(r: &Row) -> StoreResult<SealedSecret> {
    Ok(SealedSecret {
        name: get(r, 0)?,
        sealed: Sealed {
            kek_version: version_of(get(r, 1)?)?,
            bytes: get(r, 2)?,
        },
        public: get(r, 3)?,
    })
}

fn rows<T>(rows: Vec<Row>, f: impl Fn(&Row) -> StoreResult<T>) -> StoreResult<Vec<T>> {
    rows.iter().map(f).collect()
}

/// Selects issued codes past their deadline ([`dzl_store::rules::code_expirable`]).
const EXPIRABLE_CODES: &str = "FROM dzl.codes WHERE state = 'issued' AND expires_at <= $1";
/// Selects deposits past retention ([`dzl_store::rules::deposit_past_retention`]).
const DEPOSITS_PAST_RETENTION: &str =
    "FROM dzl.deposits WHERE state = 'active' AND created_at < $1";

impl<C: DerefMut<Target = Client>> Tx for PgConn<C> {
    fn savepoint(&mut self, name: &str) -> StoreResult<()> {
        self.batch(&format!("SAVEPOINT {name}"))
    }

    fn release(&mut self, name: &str) -> StoreResult<()> {
        self.batch(&format!("RELEASE SAVEPOINT {name}"))
    }

    fn rollback_to(&mut self, name: &str) -> StoreResult<()> {
        self.batch(&format!(
            "ROLLBACK TO SAVEPOINT {name}; RELEASE SAVEPOINT {name}"
        ))
    }

    fn generation(&mut self) -> StoreResult<i64> {
        let r = self.one("SELECT value FROM dzl.meta WHERE key = 'generation'", &[])?;
        get(&r, 0)
    }

    fn bump_generation(&mut self) -> StoreResult<()> {
        self.exec(
            "UPDATE dzl.meta SET value = value + 1 WHERE key = 'generation'",
            &[],
        )?;
        Ok(())
    }

    fn ping(&mut self) -> StoreResult<()> {
        self.one(
            "SELECT (SELECT count(*) FROM dzl.meta) + (SELECT count(*) FROM dzl_identity.identities WHERE false)",
            &[],
        )?;
        Ok(())
    }

    fn kek_state(&mut self, version: u32, lock: Lock) -> StoreResult<Option<KekState>> {
        let v = db_version(version)?;
        let sql = format!(
            "SELECT state FROM dzl.keks WHERE version = $1{}",
            lock_clause(lock)
        );
        self.opt(&sql, &[&v])?
            .map(|r| KekState::parse(get(&r, 0)?).ok_or_else(|| corrupt("kek state")))
            .transpose()
    }

    fn kek_versions(&mut self) -> StoreResult<Vec<KekVersion>> {
        let found = self.query(
            "SELECT version, state, wrapped, suite FROM dzl.keks ORDER BY version",
            &[],
        )?;
        rows(found, |r| {
            Ok(KekVersion {
                version: version_of(get(r, 0)?)?,
                suite: suite(get(r, 3)?)?,
                state: KekState::parse(get(r, 1)?).ok_or_else(|| corrupt("kek state"))?,
                wrapped: get(r, 2)?,
            })
        })
    }

    fn keks(&mut self) -> StoreResult<Vec<KekRow>> {
        let found = self.query(
            "SELECT k.version, k.state, k.wrapped, k.created_at, k.retired_at,
                    (SELECT count(*) FROM dzl.deposit_records d WHERE d.kek_version = k.version)
                  + (SELECT count(*) FROM dzl_identity.identities i WHERE i.kek_version = k.version),
                    (SELECT count(*) FROM dzl.tenants t WHERE t.secret_kek_version = k.version)
                  + (SELECT count(*) FROM dzl.tenants t WHERE t.previous_secret_kek_version = k.version)
                  + (SELECT count(*) FROM dzl.sealed_secrets s WHERE s.kek_version = k.version),
                    k.suite
             FROM dzl.keks k ORDER BY k.version",
            &[],
        )?;
        rows(found, |r| {
            Ok(KekRow {
                version: version_of(get(r, 0)?)?,
                suite: suite(get(r, 7)?)?,
                state: KekState::parse(get(r, 1)?).ok_or_else(|| corrupt("kek state"))?,
                wrapped: get(r, 2)?,
                created_at: from_ms(get(r, 3)?)?,
                retired_at: get::<Option<i64>>(r, 4)?.map(from_ms).transpose()?,
                data_keys: count_of(get(r, 5)?),
                secrets: count_of(get(r, 6)?),
            })
        })
    }

    fn key_usage(&mut self, version: u32, now: DateTime<Utc>) -> StoreResult<KeyUsage> {
        let v = db_version(version)?;
        let r = self.one(
            "SELECT
                (SELECT count(*) FROM dzl.deposit_records WHERE kek_version = $1),
                (SELECT count(*) FROM dzl_identity.identities WHERE kek_version = $1),
                (SELECT count(*) FROM dzl.tenants WHERE secret_kek_version = $1),
                (SELECT count(*) FROM dzl.tenants WHERE previous_secret_kek_version = $1
                     AND previous_secret_valid_until > $2),
                (SELECT count(*) FROM dzl.sealed_secrets WHERE kek_version = $1)",
            &[&v, &ms(now)],
        )?;
        Ok(KeyUsage {
            records_keys: count_of(get(&r, 0)?),
            identity_keys: count_of(get(&r, 1)?),
            tenant_secrets: count_of(get(&r, 2)?),
            previous_tenant_secrets: count_of(get(&r, 3)?),
            vault_secrets: count_of(get(&r, 4)?),
        })
    }

    fn max_kek_version(&mut self) -> StoreResult<u32> {
        let r = self.one("SELECT coalesce(max(version), 0) FROM dzl.keks", &[])?;
        version_of(get(&r, 0)?)
    }

    fn insert_kek(
        &mut self,
        version: u32,
        suite: Suite,
        state: KekState,
        wrapped: &[u8],
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.exec(
            "INSERT INTO dzl.keks (version, state, wrapped, created_at, suite)
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &db_version(version)?,
                &state.as_str(),
                &wrapped,
                &ms(at),
                &suite.as_str(),
            ],
        )?;
        Ok(())
    }

    fn demote_active_kek(&mut self) -> StoreResult<()> {
        self.exec(
            "UPDATE dzl.keks SET state = 'decrypt_only' WHERE state = 'active'",
            &[],
        )?;
        Ok(())
    }

    fn retire_kek(&mut self, version: u32, at: DateTime<Utc>) -> StoreResult<()> {
        self.exec(
            "UPDATE dzl.keks SET state = 'retired', wrapped = ''::bytea, retired_at = $1
             WHERE version = $2",
            &[&ms(at), &db_version(version)?],
        )?;
        Ok(())
    }

    fn set_kek_wrapped(&mut self, version: u32, wrapped: &[u8]) -> StoreResult<()> {
        self.exec(
            "UPDATE dzl.keks SET wrapped = $1 WHERE version = $2",
            &[&wrapped, &db_version(version)?],
        )?;
        Ok(())
    }

    fn sealed_secrets(&mut self, prefix: &str) -> StoreResult<Vec<SealedSecret>> {
        let found = self.query(
            "SELECT name, kek_version, sealed, public FROM dzl.sealed_secrets
             WHERE left(name, length($1)) = $1 ORDER BY created_at, name",
            &[&prefix],
        )?;
        rows(found, sealed_row)
    }

    fn sealed_secret(&mut self, name: &str) -> StoreResult<Option<SealedSecret>> {
        self.opt(
            "SELECT name, kek_version, sealed, public FROM dzl.sealed_secrets WHERE name = $1",
            &[&name],
        )?
        .map(|r| sealed_row(&r))
        .transpose()
    }

    fn insert_sealed_secret(&mut self, s: &SealedSecret, at: DateTime<Utc>) -> StoreResult<()> {
        self.exec(
            "INSERT INTO dzl.sealed_secrets (name, kek_version, sealed, public, created_at)
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &s.name,
                &db_version(s.sealed.kek_version)?,
                &s.sealed.bytes,
                &s.public,
                &ms(at),
            ],
        )?;
        Ok(())
    }

    fn rewrap_secret(&mut self, s: &RewrappedSecret) -> StoreResult<bool> {
        let (sql, id) = match &s.secret {
            SecretRef::Tenant(t) => (
                "UPDATE dzl.tenants SET secret_kek_version = $1, secret_sealed = $2
                 WHERE id = $3 AND secret_kek_version = $4",
                t.as_str(),
            ),
            SecretRef::PreviousTenant(t) => (
                "UPDATE dzl.tenants SET previous_secret_kek_version = $1, previous_secret_sealed = $2
                 WHERE id = $3 AND previous_secret_kek_version = $4",
                t.as_str(),
            ),
            SecretRef::Vault(name) => (
                "UPDATE dzl.sealed_secrets SET kek_version = $1, sealed = $2
                 WHERE name = $3 AND kek_version = $4",
                name.as_str(),
            ),
        };
        Ok(self.exec(
            sql,
            &[
                &db_version(s.sealed.kek_version)?,
                &s.sealed.bytes,
                &id,
                &db_version(s.from_version)?,
            ],
        )? == 1)
    }

    fn drop_previous_secrets(&mut self, version: u32) -> StoreResult<u64> {
        self.exec(
            "UPDATE dzl.tenants SET previous_secret_kek_version = NULL,
                 previous_secret_sealed = NULL, previous_secret_valid_until = NULL
             WHERE previous_secret_kek_version = $1",
            &[&db_version(version)?],
        )
    }

    fn tenants(&mut self) -> StoreResult<Vec<TenantRow>> {
        let found = self.query(
            &format!("SELECT {TENANT_COLUMNS} FROM dzl.tenants ORDER BY created_at, id"),
            &[],
        )?;
        rows(found, tenant_row)
    }

    fn tenant(&mut self, id: &TenantId, lock: Lock) -> StoreResult<Option<TenantRow>> {
        let sql = format!(
            "SELECT {TENANT_COLUMNS} FROM dzl.tenants WHERE id = $1{}",
            lock_clause(lock)
        );
        self.opt(&sql, &[&id.as_str()])?
            .map(|r| tenant_row(&r))
            .transpose()
    }

    fn insert_tenant(&mut self, t: &TenantRow) -> StoreResult<()> {
        let previous = t.previous_secret.as_ref();
        let previous_version = previous
            .map(|p| db_version(p.secret.kek_version))
            .transpose()?;
        self.exec(
            "INSERT INTO dzl.tenants (id, kind, name, key_id, secret_kek_version, secret_sealed,
                 scopes, purposes, rate_limit, state, created_at, updated_at, cert_pin,
                 previous_secret_kek_version, previous_secret_sealed, previous_secret_valid_until)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12, $13, $14, $15)",
            &[
                &t.id.as_str(),
                &t.kind.as_str(),
                &t.name,
                &t.key_id,
                &db_version(t.secret.kek_version)?,
                &t.secret.bytes,
                &t.scopes.map(|s| s.to_list()),
                &purposes_text(&t.purposes),
                &i64::from(t.rate_limit),
                &t.state.as_str(),
                &ms(t.created_at),
                &t.cert_pin.as_ref().map(|p| p.to_string()),
                &previous_version,
                &previous.map(|p| p.secret.bytes.clone()),
                &previous.map(|p| ms(p.valid_until)),
            ],
        )?;
        Ok(())
    }

    fn update_tenant(&mut self, t: &TenantRow, at: DateTime<Utc>) -> StoreResult<()> {
        let previous = t.previous_secret.as_ref();
        let previous_version = previous
            .map(|p| db_version(p.secret.kek_version))
            .transpose()?;
        let changed = self.exec(
            "UPDATE dzl.tenants SET state = $1, secret_kek_version = $2, secret_sealed = $3,
                 previous_secret_kek_version = $4, previous_secret_sealed = $5,
                 previous_secret_valid_until = $6, cert_pin = $7, updated_at = $8
             WHERE id = $9",
            &[
                &t.state.as_str(),
                &db_version(t.secret.kek_version)?,
                &t.secret.bytes,
                &previous_version,
                &previous.map(|p| p.secret.bytes.clone()),
                &previous.map(|p| ms(p.valid_until)),
                &t.cert_pin.as_ref().map(|p| p.to_string()),
                &ms(at),
                &t.id.as_str(),
            ],
        )?;
        if changed == 1 {
            Ok(())
        } else {
            Err(StoreError::Invalid(format!("no tenant {}", t.id)))
        }
    }

    fn insert_deposit(
        &mut self,
        d: &DepositInsert<'_>,
        codes: &[CodeInsert<'_>],
    ) -> StoreResult<Result<Vec<i64>, DepositId>> {
        let row = d.row;
        let code_ids: Vec<&str> = codes.iter().map(|c| c.code_id.as_str()).collect();
        let hashes: Vec<&[u8]> = codes.iter().map(|c| c.secret_hash).collect();
        let funders: Vec<&str> = codes.iter().map(|c| c.funder_id.as_str()).collect();
        let code_scopes: Vec<String> = codes.iter().map(|c| c.scopes.to_list()).collect();
        let expiries: Vec<i64> = codes.iter().map(|c| ms(c.expires_at)).collect();
        // One statement: the deposit, its records, its identity row and its
        // codes, or nothing if the platform already used the reference.
        let r = self.one(
            "WITH d AS (
                 INSERT INTO dzl.deposits (id, platform_id, external_ref, purpose, consent,
                     consent_scopes, consent_expires, groups, subject_index, subject_ref, state,
                     created_at, suite)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'active', $11, $24)
                 ON CONFLICT (platform_id, external_ref) DO NOTHING
                 RETURNING id
             ), r AS (
                 INSERT INTO dzl.deposit_records (deposit_id, kek_version, wrapped_key, device, risk)
                 SELECT id, $12, $13, $14, $15 FROM d
             ), i AS (
                 INSERT INTO dzl_identity.identities (deposit_id, kek_version, wrapped_key, envelope)
                 SELECT id, $16, $17, $18 FROM d
             ), c AS (
                 INSERT INTO dzl.codes (code_id, secret_hash, deposit_id, platform_id, funder_id,
                     scopes, purpose, state, created_at, expires_at)
                 SELECT x.code_id, x.secret_hash, d.id, $2, x.funder_id, x.scopes, $4, 'issued',
                     $11, x.expires_at
                 FROM d, unnest($19::text[], $20::bytea[], $21::text[], $22::text[], $23::bigint[])
                     AS x(code_id, secret_hash, funder_id, scopes, expires_at)
                 RETURNING code_id, row
             )
             SELECT EXISTS (SELECT 1 FROM d),
                    coalesce((SELECT array_agg(code_id) FROM c), '{}'),
                    coalesce((SELECT array_agg(row) FROM c), '{}')",
            &[
                &row.id.as_str(),
                &row.platform_id.as_str(),
                &row.external_ref,
                &row.purpose.as_str(),
                &row.consent_json,
                &row.consent_scopes.to_list(),
                &ms(row.consent_expires),
                &row.groups.to_list(),
                &d.subject_index,
                &d.subject_ref.as_str(),
                &ms(row.created_at),
                &db_version(d.records_key.kek_version)?,
                &d.records_key.bytes,
                &d.device,
                &d.risk,
                &db_version(d.identity_key.kek_version)?,
                &d.identity_key.bytes,
                &d.identity,
                &code_ids,
                &hashes,
                &funders,
                &code_scopes,
                &expiries,
                &d.suite.as_str(),
            ],
        )?;
        if get::<bool>(&r, 0)? {
            let ids: Vec<String> = get(&r, 1)?;
            let rows: Vec<i64> = get(&r, 2)?;
            return codes
                .iter()
                .map(|c| {
                    ids.iter()
                        .position(|id| id == c.code_id.as_str())
                        .and_then(|i| rows.get(i).copied())
                        .ok_or_else(|| StoreError::Corrupt("a code was not inserted".into()))
                })
                .collect::<StoreResult<Vec<i64>>>()
                .map(Ok);
        }
        let existing = self.one(
            "SELECT id FROM dzl.deposits WHERE platform_id = $1 AND external_ref = $2",
            &[&row.platform_id.as_str(), &row.external_ref],
        )?;
        Ok(Err(DepositId::from_trusted(get::<String>(&existing, 0)?)))
    }

    fn deposit(&mut self, id: &DepositId, lock: Lock) -> StoreResult<Option<DepositRow>> {
        let sql = format!(
            "SELECT {DEPOSIT_COLUMNS} FROM dzl.deposits WHERE id = $1{}",
            lock_clause(lock)
        );
        self.opt(&sql, &[&id.as_str()])?
            .map(|r| deposit_row(&r))
            .transpose()
    }

    fn shred_deposit(&mut self, id: &DepositId, at: DateTime<Utc>) -> StoreResult<u64> {
        let r = self.one(
            "WITH k AS (
                 DELETE FROM dzl.deposit_records WHERE deposit_id = $1
             ), i AS (
                 DELETE FROM dzl_identity.identities WHERE deposit_id = $1
             ), c AS (
                 UPDATE dzl.codes SET state = 'revoked', revoked_at = $2
                 WHERE deposit_id = $1 AND state = 'issued' RETURNING 1
             ), d AS (
                 UPDATE dzl.deposits SET state = 'erased', erased_at = $2 WHERE id = $1
             )
             SELECT count(*) FROM c",
            &[&id.as_str(), &ms(at)],
        )?;
        Ok(count_of(get(&r, 0)?))
    }

    fn delete_identity(&mut self, id: &DepositId) -> StoreResult<bool> {
        Ok(self.exec(
            "DELETE FROM dzl_identity.identities WHERE deposit_id = $1",
            &[&id.as_str()],
        )? == 1)
    }

    fn insert_code(&mut self, c: &CodeInsert<'_>) -> StoreResult<i64> {
        let r = self.one(
            "INSERT INTO dzl.codes (code_id, secret_hash, deposit_id, platform_id, funder_id,
                 scopes, purpose, state, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'issued', $8, $9)
             RETURNING row",
            &[
                &c.code_id.as_str(),
                &c.secret_hash,
                &c.deposit_id.as_str(),
                &c.platform_id.as_str(),
                &c.funder_id.as_str(),
                &c.scopes.to_list(),
                &c.purpose.as_str(),
                &ms(c.created_at),
                &ms(c.expires_at),
            ],
        )?;
        get(&r, 0)
    }

    fn code_by_id(&mut self, id: &CodeId) -> StoreResult<Option<CodeRow>> {
        self.opt(
            &format!("SELECT {CODE_COLUMNS} FROM dzl.codes WHERE code_id = $1"),
            &[&id.as_str()],
        )?
        .map(|r| code_row(&r))
        .transpose()
    }

    fn code_by_row(&mut self, row: i64) -> StoreResult<Option<CodeRow>> {
        self.opt(
            &format!("SELECT {CODE_COLUMNS} FROM dzl.codes WHERE row = $1"),
            &[&row],
        )?
        .map(|r| code_row(&r))
        .transpose()
    }

    fn set_code_state(
        &mut self,
        row: i64,
        to: StoredCodeState,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let changed = match to {
            StoredCodeState::Revoked => self.exec(
                "UPDATE dzl.codes SET state = 'revoked', revoked_at = $1
                 WHERE row = $2 AND state = 'issued'",
                &[&ms(at), &row],
            )?,
            StoredCodeState::Expired => self.exec(
                "UPDATE dzl.codes SET state = 'expired' WHERE row = $1 AND state = 'issued'",
                &[&row],
            )?,
            other => {
                return Err(StoreError::Invalid(format!(
                    "an issued code is not moved to {}",
                    other.as_str()
                )))
            }
        };
        Ok(changed == 1)
    }

    fn claim_code(&mut self, r: &RedemptionRow) -> StoreResult<Option<Release>> {
        // The conditional UPDATE makes redemption exactly-once: a
        // concurrent redeemer blocks on the row, re-reads it once the
        // first commits, matches nothing, and reads no row here.
        let identity = r.scopes.contains(Group::Applicant);
        let device = r.scopes.contains(Group::Device);
        let risk = r.scopes.contains(Group::Risk);
        let found = self.opt(
            "WITH c AS (
                 UPDATE dzl.codes SET state = 'redeemed', redeemed_at = $2, redemption_id = $3
                 WHERE row = $1 AND state = 'issued'
                 RETURNING row
             ), r AS (
                 INSERT INTO dzl.redemptions (id, code_row, code_id, deposit_id, platform_id,
                     funder_id, purpose, scopes, redeemed_at)
                 SELECT $3, row, $4, $5, $6, $7, $8, $9, $2 FROM c
             )
             SELECT d.platform_id, d.external_ref, d.consent, d.state,
                    k.kek_version, k.wrapped_key,
                    CASE WHEN $10 THEN k.device END, CASE WHEN $11 THEN k.risk END,
                    i.kek_version, i.wrapped_key, i.envelope
             FROM c
             LEFT JOIN dzl.deposits d ON d.id = $5
             LEFT JOIN dzl.deposit_records k ON ($10 OR $11) AND k.deposit_id = $5
             LEFT JOIN dzl_identity.identities i ON $12 AND i.deposit_id = $5",
            &[
                &r.code_row,
                &ms(r.redeemed_at),
                &r.id.as_str(),
                &r.code_id.as_str(),
                &r.deposit_id.as_str(),
                &r.platform_id.as_str(),
                &r.funder_id.as_str(),
                &r.purpose.as_str(),
                &r.scopes.to_list(),
                &device,
                &risk,
                &identity,
            ],
        )?;
        let Some(x) = found else {
            return Ok(None);
        };
        let Some(platform_id) = get::<Option<String>>(&x, 0)? else {
            return Err(StoreError::Corrupt("code without deposit".into()));
        };
        let mut release = Release {
            platform_id: TenantId::from_trusted(platform_id),
            external_ref: get(&x, 1)?,
            consent_json: get(&x, 2)?,
            state: DepositState::parse(get(&x, 3)?).ok_or_else(|| corrupt("deposit state"))?,
            records_key: None,
            records: Vec::new(),
            identity: None,
        };
        if let (Some(v), Some(key)) = (get::<Option<i32>>(&x, 4)?, get::<Option<Vec<u8>>>(&x, 5)?) {
            release.records_key = Some(Sealed {
                kek_version: version_of(v)?,
                bytes: key,
            });
            if let Some(e) = get::<Option<Vec<u8>>>(&x, 6)? {
                release.records.push((Group::Device, e));
            }
            if let Some(e) = get::<Option<Vec<u8>>>(&x, 7)? {
                release.records.push((Group::Risk, e));
            }
        }
        if let (Some(v), Some(key), Some(env)) = (
            get::<Option<i32>>(&x, 8)?,
            get::<Option<Vec<u8>>>(&x, 9)?,
            get::<Option<Vec<u8>>>(&x, 10)?,
        ) {
            release.identity = Some((
                Sealed {
                    kek_version: version_of(v)?,
                    bytes: key,
                },
                env,
            ));
        }
        Ok(Some(release))
    }

    fn expire_codes(&mut self, now: DateTime<Utc>, limit: usize) -> StoreResult<u64> {
        self.exec(
            &format!(
                "UPDATE dzl.codes SET state = 'expired'
                 WHERE row IN (SELECT row {EXPIRABLE_CODES} ORDER BY expires_at LIMIT $2
                               FOR UPDATE SKIP LOCKED)"
            ),
            &[&ms(now), &limit_of(limit)],
        )
    }

    fn redemption(&mut self, id: &RedemptionId, lock: Lock) -> StoreResult<Option<RedemptionRow>> {
        let sql = format!(
            "SELECT {REDEMPTION_COLUMNS} FROM dzl.redemptions r WHERE r.id = $1{}",
            lock_clause(lock)
        );
        self.opt(&sql, &[&id.as_str()])?
            .map(|r| redemption_row(&r))
            .transpose()
    }

    fn set_outcome(&mut self, id: &RedemptionId, o: &StoredOutcome) -> StoreResult<bool> {
        let amount = o.amount_fen.map(|a| i64::try_from(a).unwrap_or(i64::MAX));
        Ok(self.exec(
            "UPDATE dzl.redemptions SET decision = $1, amount_fen = $2, reported_at = $3
             WHERE id = $4 AND decision IS NULL",
            &[
                &o.decision.as_str(),
                &amount,
                &ms(o.reported_at),
                &id.as_str(),
            ],
        )? == 1)
    }

    fn subject_deposits(&mut self, subject_index: &str) -> StoreResult<Vec<DepositRow>> {
        let found = self.query(
            &format!(
                "SELECT {DEPOSIT_COLUMNS} FROM dzl.deposits WHERE subject_index = $1
                 ORDER BY created_at, id"
            ),
            &[&subject_index],
        )?;
        rows(found, deposit_row)
    }

    fn deposit_redemptions(&mut self, deposit: &DepositId) -> StoreResult<Vec<RedemptionRow>> {
        let found = self.query(
            &format!(
                "SELECT {REDEMPTION_COLUMNS}
                 FROM dzl.codes c JOIN dzl.redemptions r ON r.id = c.redemption_id
                 WHERE c.deposit_id = $1"
            ),
            &[&deposit.as_str()],
        )?;
        rows(found, redemption_row)
    }

    fn deposits_past_retention(
        &mut self,
        plan: &PurgePlan,
        limit: usize,
    ) -> StoreResult<Vec<DepositRow>> {
        let found = self.query(
            &format!(
                "SELECT {DEPOSIT_COLUMNS} {DEPOSITS_PAST_RETENTION} ORDER BY created_at LIMIT $2"
            ),
            &[&ms(plan.deposits_created_before), &limit_of(limit)],
        )?;
        rows(found, deposit_row)
    }

    fn purge_counts(&mut self, plan: &PurgePlan) -> StoreResult<PurgeCounts> {
        let r = self.one(
            &format!(
                "SELECT (SELECT count(*) {EXPIRABLE_CODES}),
                        (SELECT count(*) {}),
                        (SELECT count(*) FROM dzl.codes WHERE state = 'issued' AND expires_at > $1
                             AND deposit_id IN (SELECT id {}))",
                DEPOSITS_PAST_RETENTION.replace("$1", "$2"),
                DEPOSITS_PAST_RETENTION.replace("$1", "$2"),
            ),
            &[&ms(plan.now), &ms(plan.deposits_created_before)],
        )?;
        Ok(PurgeCounts {
            codes_expired: count_of(get(&r, 0)?),
            deposits_shredded: count_of(get(&r, 1)?),
            codes_revoked: count_of(get(&r, 2)?),
        })
    }

    fn data_keys_on(
        &mut self,
        kind: DataKeyKind,
        version: u32,
        after: Option<&DepositId>,
        limit: usize,
    ) -> StoreResult<Vec<StoredDataKey>> {
        let sql = match kind {
            DataKeyKind::Records => {
                "SELECT deposit_id, wrapped_key FROM dzl.deposit_records
                 WHERE kek_version = $1 AND deposit_id > $2 ORDER BY deposit_id LIMIT $3"
            }
            DataKeyKind::Identity => {
                "SELECT deposit_id, wrapped_key FROM dzl_identity.identities
                 WHERE kek_version = $1 AND deposit_id > $2 ORDER BY deposit_id LIMIT $3"
            }
        };
        let after = after.map(|d| d.as_str()).unwrap_or("");
        let found = self.query(sql, &[&db_version(version)?, &after, &limit_of(limit)])?;
        rows(found, |r| {
            Ok(StoredDataKey {
                kind,
                deposit_id: DepositId::from_trusted(get::<String>(r, 0)?),
                wrapped: Sealed {
                    kek_version: version,
                    bytes: get(r, 1)?,
                },
            })
        })
    }

    fn rewrap_data_key(&mut self, k: &RewrappedDataKey) -> StoreResult<bool> {
        let sql = match k.kind {
            DataKeyKind::Records => {
                "UPDATE dzl.deposit_records SET kek_version = $1, wrapped_key = $2
                 WHERE deposit_id = $3 AND kek_version = $4"
            }
            DataKeyKind::Identity => {
                "UPDATE dzl_identity.identities SET kek_version = $1, wrapped_key = $2
                 WHERE deposit_id = $3 AND kek_version = $4"
            }
        };
        Ok(self.exec(
            sql,
            &[
                &db_version(k.wrapped.kek_version)?,
                &k.wrapped.bytes,
                &k.deposit_id.as_str(),
                &db_version(k.from_version)?,
            ],
        )? == 1)
    }

    fn chain_head(&mut self, chain: ChainId, lock: Lock) -> StoreResult<Option<ChainTip>> {
        let sql = format!("{CHAIN_TIP}$1{}", lock_clause(lock));
        self.opt(&sql, &[&chain])?
            .map(|r| {
                Ok(ChainTip {
                    head: Head {
                        seq: get(&r, 0)?,
                        hash: get(&r, 1)?,
                    },
                    suite: get::<Option<&str>>(&r, 2)?.map_or(Ok(Suite::Intl), suite)?,
                })
            })
            .transpose()
    }

    fn deposit_suites(&mut self) -> StoreResult<Vec<(Suite, u64)>> {
        reseal::deposit_suites(self)
    }

    fn deposits_to_reseal(
        &mut self,
        to: Suite,
        after: Option<&Filing>,
        limit: usize,
    ) -> StoreResult<Vec<SealedDeposit>> {
        reseal::deposits_to_reseal(self, to, after, limit)
    }

    fn deposit_seal(&mut self, id: &DepositId, lock: Lock) -> StoreResult<Option<DepositSeal>> {
        reseal::deposit_seal(self, id, lock)
    }

    fn replace_seal(&mut self, d: &ResealedDeposit) -> StoreResult<()> {
        reseal::replace_seal(self, d)
    }

    fn append_audit(
        &mut self,
        chain: ChainId,
        entries: &[AuditEntry],
        head: &Head,
    ) -> StoreResult<()> {
        self.append_trail(chain, Some((entries, head)), &[])
    }

    /// The entries, the head and the counts in one statement.
    fn append_trail(
        &mut self,
        chain: ChainId,
        entries: Option<(&[AuditEntry], &Head)>,
        counts: &[(UsageKey, u64)],
    ) -> StoreResult<()> {
        let Some((entries, head)) = entries else {
            return if counts.is_empty() {
                Ok(())
            } else {
                self.add_usage(chain, counts)
            };
        };
        let col = |f: fn(&AuditEntry) -> Option<String>| -> Vec<Option<String>> {
            entries.iter().map(f).collect()
        };
        let seqs: Vec<i64> = entries.iter().map(|e| e.seq).collect();
        let u = UsageColumns::of(counts);
        let updated = self.one(
            "WITH a AS (
                 INSERT INTO dzl.audit (chain, seq, at, actor, operation, result, purpose,
                     deposit_id, code_id, redemption_id, subject_tenant, groups, detail,
                     prev_hash, hash, alg)
                 SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[],
                     $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[],
                     $12::text[], $13::text[], $14::text[], $15::text[], $18::text[])
             ), m AS (
                 INSERT INTO dzl.usage AS u (day, tenant_id, operation, outcome, chain, calls)
                 SELECT d, t, o, r, $1, c
                 FROM unnest($19::text[], $20::text[], $21::text[], $22::text[], $23::bigint[])
                      AS x(d, t, o, r, c)
                 ON CONFLICT (day, tenant_id, operation, outcome, chain)
                 DO UPDATE SET calls = u.calls + EXCLUDED.calls
             )
             UPDATE dzl.audit_chains SET seq = $16, hash = $17 WHERE chain = $1
             RETURNING 1",
            &[
                &chain,
                &seqs,
                &col(|e| Some(e.record.at.clone())),
                &col(|e| Some(e.record.actor.clone())),
                &col(|e| Some(e.record.operation.clone())),
                &col(|e| Some(e.record.result.clone())),
                &col(|e| e.record.purpose.clone()),
                &col(|e| e.record.deposit_id.clone()),
                &col(|e| e.record.code_id.clone()),
                &col(|e| e.record.redemption_id.clone()),
                &col(|e| e.record.subject_tenant.clone()),
                &col(|e| e.record.groups.clone()),
                &col(|e| e.record.detail.clone()),
                &col(|e| Some(e.prev_hash.clone())),
                &col(|e| Some(e.hash.clone())),
                &head.seq,
                &head.hash,
                &col(|e| e.alg.stored().map(str::to_owned)),
                &u.days,
                &u.tenants,
                &u.ops,
                &u.outcomes,
                &u.calls,
            ],
        );
        match updated {
            Ok(_) => Ok(()),
            Err(StoreError::Corrupt(_)) => Err(StoreError::Corrupt(format!(
                "audit chain {chain} has no recorded head"
            ))),
            Err(e) => Err(e),
        }
    }

    fn insert_chain(&mut self, chain: ChainId) -> StoreResult<()> {
        let g = dzl_audit::empty_head(chain);
        self.exec(
            "INSERT INTO dzl.audit_chains (chain, seq, hash, created_at)
             VALUES ($1, $2, $3, $4)",
            &[&chain, &g.seq, &g.hash, &ms(Utc::now())],
        )?;
        Ok(())
    }

    fn chains(&mut self) -> StoreResult<Vec<ChainRow>> {
        let found = self.query(
            "SELECT chain, seq, hash FROM dzl.audit_chains ORDER BY chain",
            &[],
        )?;
        rows(found, |r| {
            Ok(ChainRow {
                chain: get(r, 0)?,
                head: Head {
                    seq: get(r, 1)?,
                    hash: get(r, 2)?,
                },
            })
        })
    }

    fn chains_with_entries(&mut self) -> StoreResult<Vec<ChainId>> {
        // One index probe per chain (a loose index scan), not a scan of the trail.
        let found = self.query(
            "WITH RECURSIVE c AS (
                 (SELECT chain FROM dzl.audit ORDER BY chain LIMIT 1)
                 UNION ALL
                 SELECT (SELECT a.chain FROM dzl.audit a WHERE a.chain > c.chain
                         ORDER BY a.chain LIMIT 1)
                 FROM c WHERE c.chain IS NOT NULL
             )
             SELECT chain FROM c WHERE chain IS NOT NULL",
            &[],
        )?;
        rows(found, |r| get(r, 0))
    }

    fn audit_entries(
        &mut self,
        chain: ChainId,
        after: i64,
        limit: usize,
    ) -> StoreResult<Vec<AuditEntry>> {
        let found = self.query(
            &format!(
                "SELECT {AUDIT_COLUMNS} FROM dzl.audit WHERE chain = $1 AND seq > $2
                 ORDER BY seq LIMIT $3"
            ),
            &[&chain, &after, &limit_of(limit)],
        )?;
        rows(found, audit_row)
    }

    fn audit_query(&mut self, q: &AuditQuery) -> StoreResult<Vec<AuditEntry>> {
        let since = q.since.map(dzl_store::ops::at);
        let until = q.until.map(dzl_store::ops::at);
        let found = self.query(
            &format!(
                "SELECT {AUDIT_COLUMNS} FROM dzl.audit
                 WHERE chain = $1 AND seq > $2 AND ($3::text IS NULL OR at >= $3)
                   AND ($4::text IS NULL OR at < $4)
                 ORDER BY seq LIMIT $5"
            ),
            &[&q.chain, &q.after_seq, &since, &until, &limit_of(q.limit)],
        )?;
        rows(found, audit_row)
    }

    fn add_usage(&mut self, chain: ChainId, counts: &[(UsageKey, u64)]) -> StoreResult<()> {
        let u = UsageColumns::of(counts);
        self.exec(
            "INSERT INTO dzl.usage AS u (day, tenant_id, operation, outcome, chain, calls)
             SELECT d, t, o, r, $1, c
             FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[])
                  AS x(d, t, o, r, c)
             ON CONFLICT (day, tenant_id, operation, outcome, chain)
             DO UPDATE SET calls = u.calls + EXCLUDED.calls",
            &[&chain, &u.days, &u.tenants, &u.ops, &u.outcomes, &u.calls],
        )?;
        Ok(())
    }

    fn usage_query(&mut self, q: &UsageQuery) -> StoreResult<Vec<UsageRow>> {
        let day = |d: chrono::NaiveDate| d.format("%Y-%m-%d").to_string();
        let (from, to) = (q.from.map(day), q.to.map(day));
        let tenant = q.tenant.as_ref().map(|t| t.as_str().to_owned());
        let found = self.query(
            "SELECT day, tenant_id, operation, outcome, sum(calls)::bigint FROM dzl.usage
             WHERE ($1::text IS NULL OR day >= $1) AND ($2::text IS NULL OR day <= $2)
               AND ($3::text IS NULL OR tenant_id = $3)
             GROUP BY day, tenant_id, operation, outcome
             ORDER BY day, tenant_id, operation, outcome",
            &[&from, &to, &tenant],
        )?;
        rows(found, |r| {
            Ok(UsageRow {
                day: get(r, 0)?,
                tenant_id: get(r, 1)?,
                operation: get(r, 2)?,
                outcome: get(r, 3)?,
                calls: count_of(get(r, 4)?),
            })
        })
    }

    fn failure_window(&mut self, tenant: &TenantId) -> StoreResult<Option<FailureWindow>> {
        self.opt(
            "SELECT minute_start, minute_count, hour_start, hour_count
             FROM dzl.failure_windows WHERE tenant_id = $1",
            &[&tenant.as_str()],
        )?
        .map(|r| {
            Ok(FailureWindow {
                minute_start: get(&r, 0)?,
                minute_count: u32::try_from(get::<i32>(&r, 1)?).unwrap_or(0),
                hour_start: get(&r, 2)?,
                hour_count: u32::try_from(get::<i32>(&r, 3)?).unwrap_or(0),
            })
        })
        .transpose()
    }

    fn set_failure_window(
        &mut self,
        tenant: &TenantId,
        window: Option<&FailureWindow>,
    ) -> StoreResult<()> {
        match window {
            None => self.exec(
                "DELETE FROM dzl.failure_windows WHERE tenant_id = $1",
                &[&tenant.as_str()],
            )?,
            Some(w) => {
                let count = |c: u32| i32::try_from(c).unwrap_or(i32::MAX);
                self.exec(
                    "INSERT INTO dzl.failure_windows
                         (tenant_id, minute_start, minute_count, hour_start, hour_count)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (tenant_id) DO UPDATE SET
                         minute_start = EXCLUDED.minute_start,
                         minute_count = EXCLUDED.minute_count,
                         hour_start = EXCLUDED.hour_start,
                         hour_count = EXCLUDED.hour_count",
                    &[
                        &tenant.as_str(),
                        &w.minute_start,
                        &count(w.minute_count),
                        &w.hour_start,
                        &count(w.hour_count),
                    ],
                )?
            }
        };
        Ok(())
    }

    fn insert_nonce(&mut self, key_id: &str, nonce: &str, until: i64) -> StoreResult<bool> {
        Ok(self.exec(
            "INSERT INTO dzl.nonces_ahead (key_id, nonce, until) VALUES ($1, $2, $3)
             ON CONFLICT (key_id, nonce) DO NOTHING",
            &[&key_id, &nonce, &until],
        )? == 1)
    }

    fn live_nonces(&mut self, now: i64) -> StoreResult<Vec<(String, String, i64)>> {
        let found = self.query(
            "SELECT key_id, nonce, until FROM dzl.nonces_ahead WHERE until > $1",
            &[&now],
        )?;
        rows(found, |r| Ok((get(r, 0)?, get(r, 1)?, get(r, 2)?)))
    }

    fn sweep_nonces(&mut self, now: i64) -> StoreResult<u64> {
        self.exec("DELETE FROM dzl.nonces_ahead WHERE until <= $1", &[&now])
    }
}
