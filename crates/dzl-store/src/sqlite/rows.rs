//! [`Tx`] on SQLite: the SQL text of every row-level read and write, on
//! one connection (the writer's, inside its transaction, or a reader's).
//! SQLite holds one write lock for the whole database during a write
//! transaction, so [`Lock`] asks for nothing more here; and the store has
//! one audit chain, chain 1, since its one write lock already orders every
//! writer (the server and `dzlctl` alike).

use chrono::{DateTime, TimeZone, Utc};
use dzl_audit::{AuditEntry, AuditRecord, ChainHash, Head};
use dzl_types::wire::Decision;
use dzl_types::{CodeId, DepositId, Group, Purpose, RedemptionId, ScopeSet, TenantId};
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::ops::corrupt;
use crate::rules::StoredCodeState;
use crate::tx::{
    ChainId, ChainRow, ChainTip, CodeInsert, CodeRow, DepositInsert, DepositRow, DepositState,
    FailureWindow, Lock, RedemptionRow, Release, StoredOutcome, Tx, UsageKey, ROOT_CHAIN,
};
use crate::{
    AuditQuery, CertPin, DataKeyKind, DepositSeal, Filing, KekRow, KekState, KekVersion, KeyUsage,
    PreviousSecret, PurgeCounts, PurgePlan, ResealedDeposit, RewrappedDataKey, RewrappedSecret,
    Sealed, SealedDeposit, SealedRecords, SealedSecret, SecretRef, StoreError, StoreResult,
    StoredDataKey, Suite, TenantKind, TenantRow, TenantState, UsageQuery, UsageRow,
};

/// Milliseconds since the epoch, as timestamps are stored.
pub(crate) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn from_ms(v: i64) -> StoreResult<DateTime<Utc>> {
    Utc.timestamp_millis_opt(v)
        .single()
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {v} out of range")))
}

/// A sealed group as stored.
type Envelope = Vec<u8>;

fn suite(s: &str) -> StoreResult<Suite> {
    Suite::parse(s).map_err(|_| corrupt("suite"))
}

fn scopes(s: &str) -> StoreResult<ScopeSet> {
    ScopeSet::parse_list(s).map_err(|_| corrupt("scope set"))
}

fn purpose(s: &str) -> StoreResult<Purpose> {
    Purpose::parse(s).map_err(|_| corrupt("purpose"))
}

const DEPOSIT_COLUMNS: &str = "id, platform_id, external_ref, purpose, consent, consent_scopes,
    consent_expires, groups, state, created_at";

fn deposit_row(r: &Row<'_>) -> StoreResult<DepositRow> {
    Ok(DepositRow {
        id: DepositId::from_trusted(r.get::<_, String>(0)?),
        platform_id: TenantId::from_trusted(r.get::<_, String>(1)?),
        external_ref: r.get(2)?,
        purpose: purpose(&r.get::<_, String>(3)?)?,
        consent_json: r.get(4)?,
        consent_scopes: scopes(&r.get::<_, String>(5)?)?,
        consent_expires: from_ms(r.get(6)?)?,
        groups: scopes(&r.get::<_, String>(7)?)?,
        state: DepositState::parse(&r.get::<_, String>(8)?)
            .ok_or_else(|| corrupt("deposit state"))?,
        created_at: from_ms(r.get(9)?)?,
    })
}

const CODE_COLUMNS: &str = "row, code_id, secret_hash, deposit_id, platform_id, funder_id, scopes,
    purpose, state, expires_at, redeemed_at, redemption_id";

fn code_row(r: &Row<'_>) -> StoreResult<CodeRow> {
    Ok(CodeRow {
        row: r.get(0)?,
        code_id: CodeId::from_trusted(r.get::<_, String>(1)?),
        secret_hash: r.get(2)?,
        deposit_id: DepositId::from_trusted(r.get::<_, String>(3)?),
        platform_id: TenantId::from_trusted(r.get::<_, String>(4)?),
        funder_id: TenantId::from_trusted(r.get::<_, String>(5)?),
        scopes: scopes(&r.get::<_, String>(6)?)?,
        purpose: purpose(&r.get::<_, String>(7)?)?,
        state: StoredCodeState::parse(&r.get::<_, String>(8)?)
            .ok_or_else(|| corrupt("code state"))?,
        expires_at: from_ms(r.get(9)?)?,
        redeemed_at: r.get::<_, Option<i64>>(10)?.map(from_ms).transpose()?,
        redemption_id: r
            .get::<_, Option<String>>(11)?
            .map(RedemptionId::from_trusted),
    })
}

const REDEMPTION_COLUMNS: &str = "id, code_row, code_id, deposit_id, platform_id, funder_id,
    purpose, scopes, redeemed_at, decision, amount_fen, reported_at";

fn redemption_row(r: &Row<'_>) -> StoreResult<RedemptionRow> {
    let outcome = match r.get::<_, Option<String>>(9)? {
        Some(d) => Some(StoredOutcome {
            decision: Decision::parse(&d).ok_or_else(|| corrupt("decision"))?,
            amount_fen: r.get::<_, Option<i64>>(10)?.map(|a| a as u64),
            reported_at: from_ms(r.get::<_, Option<i64>>(11)?.unwrap_or(0))?,
        }),
        None => None,
    };
    Ok(RedemptionRow {
        id: RedemptionId::from_trusted(r.get::<_, String>(0)?),
        code_row: r.get(1)?,
        code_id: CodeId::from_trusted(r.get::<_, String>(2)?),
        deposit_id: DepositId::from_trusted(r.get::<_, String>(3)?),
        platform_id: TenantId::from_trusted(r.get::<_, String>(4)?),
        funder_id: TenantId::from_trusted(r.get::<_, String>(5)?),
        purpose: purpose(&r.get::<_, String>(6)?)?,
        scopes: scopes(&r.get::<_, String>(7)?)?,
        redeemed_at: from_ms(r.get(8)?)?,
        outcome,
    })
}

const TENANT_COLUMNS: &str = "id, kind, name, key_id, secret_kek_version, secret_sealed, scopes,
    purposes, rate_limit, state, created_at, previous_secret_kek_version, previous_secret_sealed,
    previous_secret_valid_until, cert_pin";

fn tenant_row(r: &Row<'_>) -> StoreResult<TenantRow> {
    let kind: String = r.get(1)?;
    let sc: Option<String> = r.get(6)?;
    let pu: String = r.get(7)?;
    let state: String = r.get(9)?;
    let previous = match (
        r.get::<_, Option<u32>>(11)?,
        r.get::<_, Option<Vec<u8>>>(12)?,
        r.get::<_, Option<i64>>(13)?,
    ) {
        (Some(kek_version), Some(bytes), Some(until)) => Some(PreviousSecret {
            secret: Sealed { kek_version, bytes },
            valid_until: from_ms(until)?,
        }),
        (None, None, None) => None,
        _ => return Err(corrupt("previous tenant secret")),
    };
    Ok(TenantRow {
        id: TenantId::from_trusted(r.get::<_, String>(0)?),
        kind: TenantKind::parse(&kind).ok_or_else(|| corrupt("tenant kind"))?,
        name: r.get(2)?,
        key_id: r.get(3)?,
        secret: Sealed {
            kek_version: r.get(4)?,
            bytes: r.get(5)?,
        },
        scopes: sc.map(|s| scopes(&s)).transpose()?,
        purposes: dzl_types::domain::parse_purposes(&pu).map_err(|_| corrupt("purposes"))?,
        rate_limit: r.get(8)?,
        state: TenantState::parse(&state).ok_or_else(|| corrupt("tenant state"))?,
        created_at: from_ms(r.get(10)?)?,
        previous_secret: previous,
        cert_pin: r
            .get::<_, Option<String>>(14)?
            .map(|p| CertPin::parse(&p).map_err(|_| corrupt("tenant certificate pin")))
            .transpose()?,
    })
}

fn purposes_text(purposes: &[Purpose]) -> String {
    let p: Vec<&str> = purposes.iter().map(|p| p.as_str()).collect();
    p.join(",")
}

pub(crate) const AUDIT_COLUMNS: &str = "seq, at, actor, operation, result, purpose, deposit_id,
    code_id, redemption_id, subject_tenant, groups, detail, prev_hash, hash, alg";

pub(crate) fn audit_row(r: &Row<'_>) -> rusqlite::Result<AuditEntry> {
    let alg: Option<String> = r.get(14)?;
    Ok(AuditEntry {
        chain: ROOT_CHAIN,
        seq: r.get(0)?,
        alg: ChainHash::from_stored(alg.as_deref()).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                14,
                rusqlite::types::Type::Text,
                "unknown audit hash".into(),
            )
        })?,
        record: AuditRecord {
            at: r.get(1)?,
            actor: r.get(2)?,
            operation: r.get(3)?,
            result: r.get(4)?,
            purpose: r.get(5)?,
            deposit_id: r.get(6)?,
            code_id: r.get(7)?,
            redemption_id: r.get(8)?,
            subject_tenant: r.get(9)?,
            groups: r.get(10)?,
            detail: r.get(11)?,
        },
        prev_hash: r.get(12)?,
        hash: r.get(13)?,
    })
}

fn sealed_row(r: &Row<'_>) -> rusqlite::Result<SealedSecret> {
    Ok(SealedSecret {
        name: r.get(0)?,
        sealed: Sealed {
            kek_version: r.get(1)?,
            bytes: r.get(2)?,
        },
        public: r.get(3)?,
    })
}

/// Collects a statement's rows through `f`.
fn all<T>(
    conn: &Connection,
    sql: &str,
    p: impl rusqlite::Params,
    f: impl Fn(&Row<'_>) -> StoreResult<T>,
) -> StoreResult<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(p)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(f(r)?);
    }
    Ok(out)
}

/// One row through `f`, if any.
fn one<T>(
    conn: &Connection,
    sql: &str,
    p: impl rusqlite::Params,
    f: impl Fn(&Row<'_>) -> StoreResult<T>,
) -> StoreResult<Option<T>> {
    conn.prepare_cached(sql)?
        .query_row(p, |r| Ok(f(r)))
        .optional()?
        .transpose()
}

fn count(conn: &Connection, sql: &str, p: impl rusqlite::Params) -> StoreResult<u64> {
    Ok(conn
        .prepare_cached(sql)?
        .query_row(p, |r| r.get::<_, i64>(0))? as u64)
}

/// Selects issued codes past their deadline ([`crate::rules::code_expirable`]).
const EXPIRABLE_CODES: &str = "FROM codes WHERE state = 'issued' AND expires_at <= ?1";
/// Selects deposits past retention ([`crate::rules::deposit_past_retention`]).
const DEPOSITS_PAST_RETENTION: &str = "FROM deposits WHERE state = 'active' AND created_at < ?1";

impl Tx for Connection {
    fn savepoint(&mut self, name: &str) -> StoreResult<()> {
        self.prepare_cached(&format!("SAVEPOINT {name}"))?
            .execute([])?;
        Ok(())
    }

    fn release(&mut self, name: &str) -> StoreResult<()> {
        self.prepare_cached(&format!("RELEASE {name}"))?
            .execute([])?;
        Ok(())
    }

    fn rollback_to(&mut self, name: &str) -> StoreResult<()> {
        self.execute_batch(&format!("ROLLBACK TO {name}; RELEASE {name}"))?;
        Ok(())
    }

    fn generation(&mut self) -> StoreResult<i64> {
        Ok(self
            .prepare_cached("SELECT value FROM meta WHERE key = 'generation'")?
            .query_row([], |r| r.get(0))?)
    }

    fn bump_generation(&mut self) -> StoreResult<()> {
        self.prepare_cached("UPDATE meta SET value = value + 1 WHERE key = 'generation'")?
            .execute([])?;
        Ok(())
    }

    fn ping(&mut self) -> StoreResult<()> {
        self.query_row("SELECT count(*) FROM ident.identities WHERE 0", [], |r| {
            r.get::<_, i64>(0)
        })?;
        Ok(())
    }

    fn kek_state(&mut self, version: u32, _lock: Lock) -> StoreResult<Option<KekState>> {
        let state: Option<String> = self
            .prepare_cached("SELECT state FROM keks WHERE version = ?1")?
            .query_row([version], |r| r.get(0))
            .optional()?;
        state
            .map(|s| KekState::parse(&s).ok_or_else(|| corrupt("kek state")))
            .transpose()
    }

    fn kek_versions(&mut self) -> StoreResult<Vec<KekVersion>> {
        all(
            self,
            "SELECT version, state, wrapped, suite FROM keks ORDER BY version",
            [],
            |r| {
                Ok(KekVersion {
                    version: r.get(0)?,
                    suite: suite(&r.get::<_, String>(3)?)?,
                    state: KekState::parse(&r.get::<_, String>(1)?)
                        .ok_or_else(|| corrupt("kek state"))?,
                    wrapped: r.get(2)?,
                })
            },
        )
    }

    fn keks(&mut self) -> StoreResult<Vec<KekRow>> {
        all(
            self,
            "SELECT k.version, k.state, k.wrapped, k.created_at, k.retired_at,
                    (SELECT count(*) FROM deposit_records d WHERE d.kek_version = k.version)
                  + (SELECT count(*) FROM ident.identities i WHERE i.kek_version = k.version),
                    (SELECT count(*) FROM tenants t WHERE t.secret_kek_version = k.version)
                  + (SELECT count(*) FROM tenants t WHERE t.previous_secret_kek_version = k.version)
                  + (SELECT count(*) FROM sealed_secrets s WHERE s.kek_version = k.version),
                    k.suite
             FROM keks k ORDER BY k.version",
            [],
            |r| {
                Ok(KekRow {
                    version: r.get(0)?,
                    suite: suite(&r.get::<_, String>(7)?)?,
                    state: KekState::parse(&r.get::<_, String>(1)?)
                        .ok_or_else(|| corrupt("kek state"))?,
                    wrapped: r.get(2)?,
                    created_at: from_ms(r.get(3)?)?,
                    retired_at: r.get::<_, Option<i64>>(4)?.map(from_ms).transpose()?,
                    data_keys: r.get::<_, i64>(5)? as u64,
                    secrets: r.get::<_, i64>(6)? as u64,
                })
            },
        )
    }

    fn key_usage(&mut self, version: u32, now: DateTime<Utc>) -> StoreResult<KeyUsage> {
        let c: &Connection = self;
        Ok(KeyUsage {
            records_keys: count(
                c,
                "SELECT count(*) FROM deposit_records WHERE kek_version = ?1",
                [version],
            )?,
            identity_keys: count(
                c,
                "SELECT count(*) FROM ident.identities WHERE kek_version = ?1",
                [version],
            )?,
            tenant_secrets: count(
                c,
                "SELECT count(*) FROM tenants WHERE secret_kek_version = ?1",
                [version],
            )?,
            previous_tenant_secrets: count(
                c,
                "SELECT count(*) FROM tenants WHERE previous_secret_kek_version = ?1
                 AND previous_secret_valid_until > ?2",
                params![version, ms(now)],
            )?,
            vault_secrets: count(
                c,
                "SELECT count(*) FROM sealed_secrets WHERE kek_version = ?1",
                [version],
            )?,
        })
    }

    fn max_kek_version(&mut self) -> StoreResult<u32> {
        let max: Option<u32> = self.query_row("SELECT max(version) FROM keks", [], |r| r.get(0))?;
        Ok(max.unwrap_or(0))
    }

    fn insert_kek(
        &mut self,
        version: u32,
        suite: Suite,
        state: KekState,
        wrapped: &[u8],
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.execute(
            "INSERT INTO keks (version, state, wrapped, created_at, suite)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![version, state.as_str(), wrapped, ms(at), suite.as_str()],
        )?;
        Ok(())
    }

    fn demote_active_kek(&mut self) -> StoreResult<()> {
        self.execute(
            "UPDATE keks SET state = 'decrypt_only' WHERE state = 'active'",
            [],
        )?;
        Ok(())
    }

    fn retire_kek(&mut self, version: u32, at: DateTime<Utc>) -> StoreResult<()> {
        self.execute(
            "UPDATE keks SET state = 'retired', wrapped = X'', retired_at = ?1 WHERE version = ?2",
            params![ms(at), version],
        )?;
        Ok(())
    }

    fn set_kek_wrapped(&mut self, version: u32, wrapped: &[u8]) -> StoreResult<()> {
        self.execute(
            "UPDATE keks SET wrapped = ?1 WHERE version = ?2",
            params![wrapped, version],
        )?;
        Ok(())
    }

    fn sealed_secrets(&mut self, prefix: &str) -> StoreResult<Vec<SealedSecret>> {
        let mut stmt = self.prepare_cached(
            "SELECT name, kek_version, sealed, public FROM sealed_secrets
             WHERE substr(name, 1, length(?1)) = ?1 ORDER BY created_at, name",
        )?;
        let rows = stmt
            .query_map([prefix], sealed_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn sealed_secret(&mut self, name: &str) -> StoreResult<Option<SealedSecret>> {
        Ok(self
            .prepare_cached(
                "SELECT name, kek_version, sealed, public FROM sealed_secrets WHERE name = ?1",
            )?
            .query_row([name], sealed_row)
            .optional()?)
    }

    fn insert_sealed_secret(&mut self, s: &SealedSecret, at: DateTime<Utc>) -> StoreResult<()> {
        self.execute(
            "INSERT INTO sealed_secrets (name, kek_version, sealed, public, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                s.name,
                s.sealed.kek_version,
                s.sealed.bytes,
                s.public,
                ms(at)
            ],
        )?;
        Ok(())
    }

    fn rewrap_secret(&mut self, s: &RewrappedSecret) -> StoreResult<bool> {
        let (sql, id) = match &s.secret {
            SecretRef::Tenant(t) => (
                "UPDATE tenants SET secret_kek_version = ?1, secret_sealed = ?2
                 WHERE id = ?3 AND secret_kek_version = ?4",
                t.as_str(),
            ),
            SecretRef::PreviousTenant(t) => (
                "UPDATE tenants SET previous_secret_kek_version = ?1, previous_secret_sealed = ?2
                 WHERE id = ?3 AND previous_secret_kek_version = ?4",
                t.as_str(),
            ),
            SecretRef::Vault(name) => (
                "UPDATE sealed_secrets SET kek_version = ?1, sealed = ?2
                 WHERE name = ?3 AND kek_version = ?4",
                name.as_str(),
            ),
        };
        Ok(self.prepare_cached(sql)?.execute(params![
            s.sealed.kek_version,
            s.sealed.bytes,
            id,
            s.from_version
        ])? == 1)
    }

    fn drop_previous_secrets(&mut self, version: u32) -> StoreResult<u64> {
        Ok(self.execute(
            "UPDATE tenants SET previous_secret_kek_version = NULL,
                 previous_secret_sealed = NULL, previous_secret_valid_until = NULL
             WHERE previous_secret_kek_version = ?1",
            [version],
        )? as u64)
    }

    fn tenants(&mut self) -> StoreResult<Vec<TenantRow>> {
        all(
            self,
            &format!("SELECT {TENANT_COLUMNS} FROM tenants ORDER BY created_at, id"),
            [],
            tenant_row,
        )
    }

    fn tenant(&mut self, id: &TenantId, _lock: Lock) -> StoreResult<Option<TenantRow>> {
        one(
            self,
            &format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = ?1"),
            [id.as_str()],
            tenant_row,
        )
    }

    fn insert_tenant(&mut self, t: &TenantRow) -> StoreResult<()> {
        let previous = t.previous_secret.as_ref();
        self.execute(
            "INSERT INTO tenants (id, kind, name, key_id, secret_kek_version, secret_sealed, scopes,
                 purposes, rate_limit, state, created_at, updated_at, cert_pin,
                 previous_secret_kek_version, previous_secret_sealed, previous_secret_valid_until)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11, ?12, ?13, ?14, ?15)",
            params![
                t.id.as_str(),
                t.kind.as_str(),
                t.name,
                t.key_id,
                t.secret.kek_version,
                t.secret.bytes,
                t.scopes.map(|s| s.to_list()),
                purposes_text(&t.purposes),
                t.rate_limit,
                t.state.as_str(),
                ms(t.created_at),
                t.cert_pin.as_ref().map(|p| p.to_string()),
                previous.map(|p| p.secret.kek_version),
                previous.map(|p| &p.secret.bytes),
                previous.map(|p| ms(p.valid_until)),
            ],
        )?;
        Ok(())
    }

    fn update_tenant(&mut self, t: &TenantRow, at: DateTime<Utc>) -> StoreResult<()> {
        let previous = t.previous_secret.as_ref();
        let changed = self
            .prepare_cached(
                "UPDATE tenants SET state = ?1, secret_kek_version = ?2, secret_sealed = ?3,
                 previous_secret_kek_version = ?4, previous_secret_sealed = ?5,
                 previous_secret_valid_until = ?6, cert_pin = ?7, updated_at = ?8
             WHERE id = ?9",
            )?
            .execute(params![
                t.state.as_str(),
                t.secret.kek_version,
                t.secret.bytes,
                previous.map(|p| p.secret.kek_version),
                previous.map(|p| &p.secret.bytes),
                previous.map(|p| ms(p.valid_until)),
                t.cert_pin.as_ref().map(|p| p.to_string()),
                ms(at),
                t.id.as_str(),
            ])?;
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
        let c: &Connection = self;
        let row = d.row;
        let inserted = c
            .prepare_cached(
                "INSERT INTO deposits (id, platform_id, external_ref, purpose, consent, consent_scopes,
                     consent_expires, groups, subject_index, subject_ref, state, created_at, suite)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'active', ?11, ?12)
                 ON CONFLICT (platform_id, external_ref) DO NOTHING",
            )?
            .execute(params![
                row.id.as_str(),
                row.platform_id.as_str(),
                row.external_ref,
                row.purpose.as_str(),
                row.consent_json,
                row.consent_scopes.to_list(),
                ms(row.consent_expires),
                row.groups.to_list(),
                d.subject_index,
                d.subject_ref.as_str(),
                ms(row.created_at),
                d.suite.as_str()
            ])?;
        if inserted == 0 {
            let existing: String = c
                .prepare_cached(
                    "SELECT id FROM deposits WHERE platform_id = ?1 AND external_ref = ?2",
                )?
                .query_row(params![row.platform_id.as_str(), row.external_ref], |r| {
                    r.get(0)
                })?;
            return Ok(Err(DepositId::from_trusted(existing)));
        }
        c.prepare_cached(
            "INSERT INTO deposit_subjects (run, subject_index, deposit_id) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![d.subject_run, d.subject_index, row.id.as_str()])?;
        c.prepare_cached(
            "INSERT INTO deposit_records (deposit_id, kek_version, wrapped_key, device, risk)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            row.id.as_str(),
            d.records_key.kek_version,
            d.records_key.bytes,
            d.device,
            d.risk
        ])?;
        c.prepare_cached(
            "INSERT INTO ident.identities (deposit_id, kek_version, wrapped_key, envelope)
             VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![
            row.id.as_str(),
            d.identity_key.kek_version,
            d.identity_key.bytes,
            d.identity
        ])?;
        codes
            .iter()
            .map(|c| self.insert_code(c))
            .collect::<StoreResult<_>>()
            .map(Ok)
    }

    fn deposit(&mut self, id: &DepositId, _lock: Lock) -> StoreResult<Option<DepositRow>> {
        one(
            self,
            &format!("SELECT {DEPOSIT_COLUMNS} FROM deposits WHERE id = ?1"),
            [id.as_str()],
            deposit_row,
        )
    }

    fn shred_deposit(&mut self, id: &DepositId, at: DateTime<Utc>) -> StoreResult<u64> {
        let c: &Connection = self;
        c.prepare_cached("DELETE FROM deposit_records WHERE deposit_id = ?1")?
            .execute([id.as_str()])?;
        let identity = c
            .prepare_cached("DELETE FROM ident.identities WHERE deposit_id = ?1")?
            .execute([id.as_str()])?;
        if identity > 0 {
            // identity.db's half of this transaction names the deposit, for
            // `recover` to find if a power cut loses vault.db's half.
            c.prepare_cached("INSERT INTO ident.shredded (deposit_id) VALUES (?1)")?
                .execute([id.as_str()])?;
            c.prepare_cached("DELETE FROM ident.shredded WHERE seq <= ?1")?
                .execute([c.last_insert_rowid() - super::recover::SHREDDED_TAIL])?;
        }
        let revoked = c
            .prepare_cached(
                "UPDATE codes SET state = 'revoked', revoked_at = ?1
                 WHERE deposit_id = ?2 AND state = 'issued'",
            )?
            .execute(params![ms(at), id.as_str()])?;
        c.prepare_cached("UPDATE deposits SET state = 'erased', erased_at = ?1 WHERE id = ?2")?
            .execute(params![ms(at), id.as_str()])?;
        Ok(revoked as u64)
    }

    fn delete_identity(&mut self, id: &DepositId) -> StoreResult<bool> {
        Ok(self
            .prepare_cached("DELETE FROM ident.identities WHERE deposit_id = ?1")?
            .execute([id.as_str()])?
            == 1)
    }

    fn insert_code(&mut self, c: &CodeInsert<'_>) -> StoreResult<i64> {
        self.prepare_cached(
            "INSERT INTO codes (code_id, secret_hash, deposit_id, platform_id, funder_id,
                     scopes, purpose, state, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'issued', ?8, ?9)",
        )?
        .execute(params![
            c.code_id.as_str(),
            c.secret_hash,
            c.deposit_id.as_str(),
            c.platform_id.as_str(),
            c.funder_id.as_str(),
            c.scopes.to_list(),
            c.purpose.as_str(),
            ms(c.created_at),
            ms(c.expires_at)
        ])?;
        Ok(self.last_insert_rowid())
    }

    fn code_by_id(&mut self, id: &CodeId) -> StoreResult<Option<CodeRow>> {
        one(
            self,
            &format!("SELECT {CODE_COLUMNS} FROM codes WHERE code_id = ?1"),
            [id.as_str()],
            code_row,
        )
    }

    fn code_by_row(&mut self, row: i64) -> StoreResult<Option<CodeRow>> {
        one(
            self,
            &format!("SELECT {CODE_COLUMNS} FROM codes WHERE row = ?1"),
            [row],
            code_row,
        )
    }

    fn set_code_state(
        &mut self,
        row: i64,
        to: StoredCodeState,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let changed = match to {
            StoredCodeState::Revoked => self
                .prepare_cached(
                    "UPDATE codes SET state = 'revoked', revoked_at = ?1
                     WHERE row = ?2 AND state = 'issued'",
                )?
                .execute(params![ms(at), row])?,
            StoredCodeState::Expired => self
                .prepare_cached(
                    "UPDATE codes SET state = 'expired' WHERE row = ?1 AND state = 'issued'",
                )?
                .execute([row])?,
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
        let c: &Connection = self;
        let won = c
            .prepare_cached(
                "UPDATE codes SET state = 'redeemed', redeemed_at = ?1, redemption_id = ?2
                 WHERE row = ?3 AND state = 'issued'",
            )?
            .execute(params![ms(r.redeemed_at), r.id.as_str(), r.code_row])?;
        if won != 1 {
            return Ok(None);
        }
        c.prepare_cached(
            "INSERT INTO redemptions (id, code_row, code_id, deposit_id, platform_id, funder_id,
                 purpose, scopes, redeemed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(params![
            r.id.as_str(),
            r.code_row,
            r.code_id.as_str(),
            r.deposit_id.as_str(),
            r.platform_id.as_str(),
            r.funder_id.as_str(),
            r.purpose.as_str(),
            r.scopes.to_list(),
            ms(r.redeemed_at)
        ])?;
        let (platform_id, external_ref, consent_json, state): (String, String, String, String) = c
            .prepare_cached(
                "SELECT platform_id, external_ref, consent, state FROM deposits WHERE id = ?1",
            )?
            .query_row([r.deposit_id.as_str()], |x| {
                Ok((x.get(0)?, x.get(1)?, x.get(2)?, x.get(3)?))
            })
            .optional()?
            .ok_or_else(|| StoreError::Corrupt("code without deposit".into()))?;
        let mut release = Release {
            platform_id: TenantId::from_trusted(platform_id),
            external_ref,
            consent_json,
            state: DepositState::parse(&state).ok_or_else(|| corrupt("deposit state"))?,
            records_key: None,
            records: Vec::new(),
            identity: None,
        };
        if r.scopes.contains(Group::Applicant) {
            release.identity = c
                .prepare_cached(
                    "SELECT kek_version, wrapped_key, envelope FROM ident.identities
                     WHERE deposit_id = ?1",
                )?
                .query_row([r.deposit_id.as_str()], |x| {
                    Ok((
                        Sealed {
                            kek_version: x.get(0)?,
                            bytes: x.get(1)?,
                        },
                        x.get::<_, Vec<u8>>(2)?,
                    ))
                })
                .optional()?;
        }
        let device = r.scopes.contains(Group::Device);
        let risk = r.scopes.contains(Group::Risk);
        if device || risk {
            let found: Option<(Sealed, Option<Envelope>, Option<Envelope>)> = c
                .prepare_cached(
                    "SELECT kek_version, wrapped_key, device, risk FROM deposit_records
                     WHERE deposit_id = ?1",
                )?
                .query_row([r.deposit_id.as_str()], |x| {
                    Ok((
                        Sealed {
                            kek_version: x.get(0)?,
                            bytes: x.get(1)?,
                        },
                        x.get(2)?,
                        x.get(3)?,
                    ))
                })
                .optional()?;
            if let Some((key, dev, rsk)) = found {
                release.records_key = Some(key);
                if let (true, Some(e)) = (device, dev) {
                    release.records.push((Group::Device, e));
                }
                if let (true, Some(e)) = (risk, rsk) {
                    release.records.push((Group::Risk, e));
                }
            }
        }
        Ok(Some(release))
    }

    fn expire_codes(&mut self, now: DateTime<Utc>, limit: usize) -> StoreResult<u64> {
        Ok(self
            .prepare_cached(&format!(
                "UPDATE codes SET state = 'expired'
                 WHERE row IN (SELECT row {EXPIRABLE_CODES} ORDER BY expires_at LIMIT ?2)"
            ))?
            .execute(params![ms(now), limit as i64])? as u64)
    }

    fn redemption(&mut self, id: &RedemptionId, _lock: Lock) -> StoreResult<Option<RedemptionRow>> {
        one(
            self,
            &format!("SELECT {REDEMPTION_COLUMNS} FROM redemptions WHERE id = ?1"),
            [id.as_str()],
            redemption_row,
        )
    }

    fn set_outcome(&mut self, id: &RedemptionId, o: &StoredOutcome) -> StoreResult<bool> {
        Ok(self
            .prepare_cached(
                "UPDATE redemptions SET decision = ?1, amount_fen = ?2, reported_at = ?3
                 WHERE id = ?4 AND decision IS NULL",
            )?
            .execute(params![
                o.decision.as_str(),
                o.amount_fen.map(|a| a as i64),
                ms(o.reported_at),
                id.as_str()
            ])?
            == 1)
    }

    fn subject_deposits(&mut self, subject_index: &str) -> StoreResult<Vec<DepositRow>> {
        let ids = subject_deposit_ids(self, subject_index)?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.extend(self.deposit(&DepositId::from_trusted(id), Lock::None)?);
        }
        Ok(out)
    }

    fn deposit_redemptions(&mut self, deposit: &DepositId) -> StoreResult<Vec<RedemptionRow>> {
        // Through its codes: no index is kept in redemption order.
        all(
            self,
            "SELECT r.id, r.code_row, r.code_id, r.deposit_id, r.platform_id, r.funder_id,
                    r.purpose, r.scopes, r.redeemed_at, r.decision, r.amount_fen, r.reported_at
             FROM codes AS c JOIN redemptions AS r ON r.id = c.redemption_id
             WHERE c.deposit_id = ?1",
            [deposit.as_str()],
            redemption_row,
        )
    }

    fn deposits_past_retention(
        &mut self,
        plan: &PurgePlan,
        limit: usize,
    ) -> StoreResult<Vec<DepositRow>> {
        all(
            self,
            &format!(
                "SELECT {DEPOSIT_COLUMNS} {DEPOSITS_PAST_RETENTION} ORDER BY created_at LIMIT ?2"
            ),
            params![ms(plan.deposits_created_before), limit as i64],
            deposit_row,
        )
    }

    fn purge_counts(&mut self, plan: &PurgePlan) -> StoreResult<PurgeCounts> {
        let c: &Connection = self;
        let (now, cutoff) = (ms(plan.now), ms(plan.deposits_created_before));
        Ok(PurgeCounts {
            codes_expired: count(c, &format!("SELECT count(*) {EXPIRABLE_CODES}"), [now])?,
            deposits_shredded: count(
                c,
                &format!("SELECT count(*) {DEPOSITS_PAST_RETENTION}"),
                [cutoff],
            )?,
            // Expiry runs first, so only codes still in time are revoked.
            codes_revoked: count(
                c,
                &format!(
                    "SELECT count(*) FROM codes WHERE state = 'issued' AND expires_at > ?1
                     AND deposit_id IN (SELECT id {})",
                    DEPOSITS_PAST_RETENTION.replace("?1", "?2")
                ),
                params![now, cutoff],
            )?,
        })
    }

    fn data_keys_on(
        &mut self,
        kind: DataKeyKind,
        version: u32,
        after: Option<&DepositId>,
        limit: usize,
    ) -> StoreResult<Vec<StoredDataKey>> {
        // The version index finds exactly the keys still to move, so a
        // resumed run or a second pass costs only what is left.
        let sql = match kind {
            DataKeyKind::Records => {
                "SELECT deposit_id, wrapped_key FROM deposit_records
                 WHERE kek_version = ?1 AND deposit_id > ?2 ORDER BY deposit_id LIMIT ?3"
            }
            DataKeyKind::Identity => {
                "SELECT deposit_id, wrapped_key FROM ident.identities
                 WHERE kek_version = ?1 AND deposit_id > ?2 ORDER BY deposit_id LIMIT ?3"
            }
        };
        let after = after.map(|d| d.as_str().to_owned()).unwrap_or_default();
        all(self, sql, params![version, after, limit as i64], |r| {
            Ok(StoredDataKey {
                kind,
                deposit_id: DepositId::from_trusted(r.get::<_, String>(0)?),
                wrapped: Sealed {
                    kek_version: version,
                    bytes: r.get(1)?,
                },
            })
        })
    }

    fn rewrap_data_key(&mut self, k: &RewrappedDataKey) -> StoreResult<bool> {
        let sql = match k.kind {
            DataKeyKind::Records => {
                "UPDATE deposit_records SET kek_version = ?1, wrapped_key = ?2
                 WHERE deposit_id = ?3 AND kek_version = ?4"
            }
            DataKeyKind::Identity => {
                "UPDATE ident.identities SET kek_version = ?1, wrapped_key = ?2
                 WHERE deposit_id = ?3 AND kek_version = ?4"
            }
        };
        Ok(self.prepare_cached(sql)?.execute(params![
            k.wrapped.kek_version,
            k.wrapped.bytes,
            k.deposit_id.as_str(),
            k.from_version
        ])? == 1)
    }

    fn deposit_suites(&mut self) -> StoreResult<Vec<(Suite, u64)>> {
        all(
            self,
            "SELECT suite, count(*) FROM deposits WHERE state = 'active'
             GROUP BY suite ORDER BY suite",
            [],
            |r| Ok((suite(&r.get::<_, String>(0)?)?, r.get::<_, i64>(1)? as u64)),
        )
    }

    fn deposits_to_reseal(
        &mut self,
        to: Suite,
        after: Option<&Filing>,
        limit: usize,
    ) -> StoreResult<Vec<SealedDeposit>> {
        // Walked by filing, so each deposit comes with the filing that has
        // to move to its new index: a deposit's run is known only there.
        let (run, index, id) = after.map_or((i64::MIN, "", ""), |f| {
            (f.run, f.subject_index.as_str(), f.deposit_id.as_str())
        });
        all(
            self,
            "SELECT s.run, s.subject_index, d.id, d.suite, d.platform_id,
                    r.kek_version, r.wrapped_key, r.device, r.risk,
                    i.kek_version, i.wrapped_key, i.envelope
             FROM deposit_subjects s
             JOIN deposits d ON d.id = s.deposit_id
             LEFT JOIN deposit_records r ON r.deposit_id = d.id
             LEFT JOIN ident.identities i ON i.deposit_id = d.id
             WHERE (s.run, s.subject_index, s.deposit_id) > (?1, ?2, ?3)
               AND d.state = 'active' AND d.suite <> ?4
             ORDER BY s.run, s.subject_index, s.deposit_id LIMIT ?5",
            params![run, index, id, to.as_str(), limit as i64],
            |r| {
                let records = match r.get::<_, Option<u32>>(5)? {
                    Some(kek_version) => Some(SealedRecords {
                        key: Sealed {
                            kek_version,
                            bytes: r.get(6)?,
                        },
                        device: r.get(7)?,
                        risk: r.get(8)?,
                    }),
                    None => None,
                };
                let identity = match r.get::<_, Option<u32>>(9)? {
                    Some(kek_version) => Some((
                        Sealed {
                            kek_version,
                            bytes: r.get(10)?,
                        },
                        r.get(11)?,
                    )),
                    None => None,
                };
                Ok(SealedDeposit {
                    filing: Filing {
                        run: r.get(0)?,
                        subject_index: r.get(1)?,
                        deposit_id: DepositId::from_trusted(r.get(2)?),
                    },
                    suite: suite(&r.get::<_, String>(3)?)?,
                    platform_id: TenantId::from_trusted(r.get(4)?),
                    records,
                    identity,
                })
            },
        )
    }

    fn deposit_seal(&mut self, id: &DepositId, _lock: Lock) -> StoreResult<Option<DepositSeal>> {
        one(
            self,
            "SELECT d.state, d.suite, r.kek_version, r.wrapped_key, i.kek_version, i.wrapped_key
             FROM deposits d
             LEFT JOIN deposit_records r ON r.deposit_id = d.id
             LEFT JOIN ident.identities i ON i.deposit_id = d.id
             WHERE d.id = ?1",
            [id.as_str()],
            |r| {
                let key = |v: usize, b: usize| -> StoreResult<Option<Sealed>> {
                    Ok(match r.get::<_, Option<u32>>(v)? {
                        Some(kek_version) => Some(Sealed {
                            kek_version,
                            bytes: r.get(b)?,
                        }),
                        None => None,
                    })
                };
                Ok(DepositSeal {
                    state: DepositState::parse(&r.get::<_, String>(0)?)
                        .ok_or_else(|| corrupt("deposit state"))?,
                    suite: suite(&r.get::<_, String>(1)?)?,
                    records_key: key(2, 3)?,
                    identity_key: key(4, 5)?,
                })
            },
        )
    }

    fn replace_seal(&mut self, d: &ResealedDeposit) -> StoreResult<()> {
        let c: &Connection = self;
        let f = &d.read.filing;
        let id = f.deposit_id.as_str();
        c.prepare_cached(
            "UPDATE deposits SET suite = ?1, subject_index = ?2, subject_ref = ?3 WHERE id = ?4",
        )?
        .execute(params![
            d.suite.as_str(),
            d.subject_index,
            d.subject_ref.as_str(),
            id
        ])?;
        c.prepare_cached(
            "UPDATE deposit_subjects SET subject_index = ?1
             WHERE run = ?2 AND subject_index = ?3 AND deposit_id = ?4",
        )?
        .execute(params![d.subject_index, f.run, f.subject_index, id])?;
        if let Some(r) = &d.records {
            c.prepare_cached(
                "UPDATE deposit_records SET kek_version = ?1, wrapped_key = ?2, device = ?3,
                     risk = ?4
                 WHERE deposit_id = ?5",
            )?
            .execute(params![
                r.key.kek_version,
                r.key.bytes,
                r.device,
                r.risk,
                id
            ])?;
        }
        let (key, envelope) = &d.identity;
        c.prepare_cached(
            "UPDATE ident.identities SET kek_version = ?1, wrapped_key = ?2, envelope = ?3
             WHERE deposit_id = ?4",
        )?
        .execute(params![key.kek_version, key.bytes, envelope, id])?;
        Ok(())
    }

    fn chain_head(&mut self, chain: ChainId, _lock: Lock) -> StoreResult<Option<ChainTip>> {
        if chain != ROOT_CHAIN {
            return Ok(None);
        }
        let tip = self
            .prepare_cached(
                "SELECT seq, hash, (SELECT suite FROM keks WHERE state = 'active')
                 FROM audit_head WHERE id = 1",
            )?
            .query_row([], |r| {
                Ok((
                    Head {
                        seq: r.get(0)?,
                        hash: r.get(1)?,
                    },
                    r.get::<_, Option<String>>(2)?,
                ))
            })
            .optional()?;
        tip.map(|(head, s)| {
            Ok(ChainTip {
                head,
                suite: s.as_deref().map_or(Ok(Suite::Intl), suite)?,
            })
        })
        .transpose()
    }

    fn append_audit(
        &mut self,
        chain: ChainId,
        entries: &[AuditEntry],
        head: &Head,
    ) -> StoreResult<()> {
        if chain != ROOT_CHAIN {
            return Err(StoreError::Invalid(format!(
                "the embedded store has one audit chain, not chain {chain}"
            )));
        }
        let mut insert = self.prepare_cached(
            "INSERT INTO audit (seq, at, actor, operation, result, purpose, deposit_id, code_id,
                 redemption_id, subject_tenant, groups, detail, prev_hash, hash, alg)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
        )?;
        for e in entries {
            let r = &e.record;
            insert.execute(params![
                e.seq,
                r.at,
                r.actor,
                r.operation,
                r.result,
                r.purpose,
                r.deposit_id,
                r.code_id,
                r.redemption_id,
                r.subject_tenant,
                r.groups,
                r.detail,
                e.prev_hash,
                e.hash,
                e.alg.stored()
            ])?;
        }
        self.prepare_cached("UPDATE audit_head SET seq = ?1, hash = ?2 WHERE id = 1")?
            .execute(params![head.seq, head.hash])?;
        Ok(())
    }

    fn insert_chain(&mut self, chain: ChainId) -> StoreResult<()> {
        Err(StoreError::Invalid(format!(
            "the embedded store has one audit chain; chain {chain} cannot be opened"
        )))
    }

    fn chains(&mut self) -> StoreResult<Vec<ChainRow>> {
        // A deleted head row is a removed chain, for verification to name.
        Ok(stored_audit_head(self)?
            .map(|head| ChainRow {
                chain: ROOT_CHAIN,
                head,
            })
            .into_iter()
            .collect())
    }

    fn chains_with_entries(&mut self) -> StoreResult<Vec<ChainId>> {
        let any: bool = self.query_row("SELECT EXISTS (SELECT 1 FROM audit)", [], |r| r.get(0))?;
        Ok(if any { vec![ROOT_CHAIN] } else { Vec::new() })
    }

    fn audit_entries(
        &mut self,
        chain: ChainId,
        after: i64,
        limit: usize,
    ) -> StoreResult<Vec<AuditEntry>> {
        if chain != ROOT_CHAIN {
            return Ok(Vec::new());
        }
        let mut stmt = self.prepare_cached(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit WHERE seq > ?1 ORDER BY seq LIMIT ?2"
        ))?;
        let rows = stmt
            .query_map(params![after, limit as i64], audit_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn audit_query(&mut self, q: &AuditQuery) -> StoreResult<Vec<AuditEntry>> {
        if q.chain != ROOT_CHAIN {
            return Ok(Vec::new());
        }
        let since = q.since.map(crate::ops::at);
        let until = q.until.map(crate::ops::at);
        let mut stmt = self.prepare_cached(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit
             WHERE seq > ?1 AND (?2 IS NULL OR at >= ?2) AND (?3 IS NULL OR at < ?3)
             ORDER BY seq LIMIT ?4"
        ))?;
        let rows = stmt
            .query_map(
                params![q.after_seq, since, until, q.limit as i64],
                audit_row,
            )?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn add_usage(&mut self, _chain: ChainId, counts: &[(UsageKey, u64)]) -> StoreResult<()> {
        let mut upsert = self.prepare_cached(
            "INSERT INTO usage (day, tenant_id, operation, outcome, calls) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (day, tenant_id, operation, outcome) DO UPDATE SET calls = calls + excluded.calls",
        )?;
        for ((day, tenant, operation, outcome), calls) in counts {
            upsert.execute(params![day, tenant, operation, outcome, *calls as i64])?;
        }
        Ok(())
    }

    fn usage_query(&mut self, q: &UsageQuery) -> StoreResult<Vec<UsageRow>> {
        let day = |d: chrono::NaiveDate| d.format("%Y-%m-%d").to_string();
        let (from, to) = (q.from.map(day), q.to.map(day));
        let tenant = q.tenant.as_ref().map(|t| t.as_str().to_owned());
        all(
            self,
            "SELECT day, tenant_id, operation, outcome, calls FROM usage
             WHERE (?1 IS NULL OR day >= ?1) AND (?2 IS NULL OR day <= ?2)
               AND (?3 IS NULL OR tenant_id = ?3)
             ORDER BY day, tenant_id, operation, outcome",
            params![from, to, tenant],
            |r| {
                Ok(UsageRow {
                    day: r.get(0)?,
                    tenant_id: r.get(1)?,
                    operation: r.get(2)?,
                    outcome: r.get(3)?,
                    calls: r.get::<_, i64>(4)? as u64,
                })
            },
        )
    }

    fn failure_window(&mut self, tenant: &TenantId) -> StoreResult<Option<FailureWindow>> {
        one(
            self,
            "SELECT minute_start, minute_count, hour_start, hour_count FROM failure_windows
             WHERE tenant_id = ?1",
            [tenant.as_str()],
            |r| {
                Ok(FailureWindow {
                    minute_start: r.get(0)?,
                    minute_count: r.get(1)?,
                    hour_start: r.get(2)?,
                    hour_count: r.get(3)?,
                })
            },
        )
    }

    fn set_failure_window(
        &mut self,
        tenant: &TenantId,
        window: Option<&FailureWindow>,
    ) -> StoreResult<()> {
        match window {
            None => {
                self.prepare_cached("DELETE FROM failure_windows WHERE tenant_id = ?1")?
                    .execute([tenant.as_str()])?;
            }
            Some(w) => {
                self.prepare_cached(
                    "INSERT INTO failure_windows
                             (tenant_id, minute_start, minute_count, hour_start, hour_count)
                         VALUES (?1, ?2, ?3, ?4, ?5)
                         ON CONFLICT (tenant_id) DO UPDATE SET
                             minute_start = excluded.minute_start,
                             minute_count = excluded.minute_count,
                             hour_start = excluded.hour_start,
                             hour_count = excluded.hour_count",
                )?
                .execute(params![
                    tenant.as_str(),
                    w.minute_start,
                    w.minute_count,
                    w.hour_start,
                    w.hour_count
                ])?;
            }
        }
        Ok(())
    }

    fn insert_nonce(&mut self, key_id: &str, nonce: &str, until: i64) -> StoreResult<bool> {
        Ok(self
            .prepare_cached(
                "INSERT INTO nonces (key_id, nonce, until) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key_id, nonce) DO NOTHING",
            )?
            .execute(params![key_id, nonce, until])?
            == 1)
    }

    fn live_nonces(&mut self, now: i64) -> StoreResult<Vec<(String, String, i64)>> {
        all(
            self,
            "SELECT key_id, nonce, until FROM nonces WHERE until > ?1",
            [now],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
    }

    fn sweep_nonces(&mut self, now: i64) -> StoreResult<u64> {
        Ok(self
            .prepare_cached("DELETE FROM nonces WHERE until <= ?1")?
            .execute([now])? as u64)
    }
}

/// The ids of every deposit filed under `subject_index`, run by run: one
/// seek to the next run, one probe for the subject in it
/// ([`crate::ops::deposit::SUBJECT_RUN_SHIFT`]).
fn subject_deposit_ids(conn: &Connection, subject_index: &str) -> StoreResult<Vec<String>> {
    let mut next_run = conn
        .prepare_cached("SELECT run FROM deposit_subjects WHERE run >= ?1 ORDER BY run LIMIT 1")?;
    let mut in_run = conn.prepare_cached(
        "SELECT deposit_id FROM deposit_subjects WHERE run = ?1 AND subject_index = ?2",
    )?;
    let mut ids = Vec::new();
    let mut from = i64::MIN;
    while let Some(run) = next_run
        .query_row([from], |r| r.get::<_, i64>(0))
        .optional()?
    {
        let mut rows = in_run.query(params![run, subject_index])?;
        while let Some(r) = rows.next()? {
            ids.push(r.get(0)?);
        }
        match run.checked_add(1) {
            Some(next) => from = next,
            None => break,
        }
    }
    Ok(ids)
}

/// The audit chain's head as stored (`None`: its row was deleted).
pub(crate) fn stored_audit_head(conn: &Connection) -> StoreResult<Option<Head>> {
    Ok(conn
        .prepare_cached("SELECT seq, hash FROM audit_head WHERE id = 1")?
        .query_row([], |r| {
            Ok(Head {
                seq: r.get(0)?,
                hash: r.get(1)?,
            })
        })
        .optional()?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_subject_is_found_in_every_run_and_only_that_subject() {
        let dir = tempfile::tempdir().unwrap();
        let conn = super::super::conn::open_connection(dir.path()).unwrap();
        super::super::schema::migrate(&conn).unwrap();
        let file = |run: i64, subject: &str, deposit: &str| {
            conn.execute(
                "INSERT INTO deposit_subjects (run, subject_index, deposit_id) VALUES (?1, ?2, ?3)",
                params![run, subject, deposit],
            )
            .unwrap();
        };
        file(0, "s", "dep_a");
        file(1, "t", "dep_b");
        file(5, "s", "dep_d");
        file(5, "s", "dep_c");
        file(5, "s0", "dep_e");
        file(1000, "t", "dep_f");
        file(i64::MAX, "s", "dep_g");
        assert_eq!(
            subject_deposit_ids(&conn, "s").unwrap(),
            ["dep_a", "dep_c", "dep_d", "dep_g"]
        );
        assert_eq!(subject_deposit_ids(&conn, "t").unwrap(), ["dep_b", "dep_f"]);
        assert!(subject_deposit_ids(&conn, "u").unwrap().is_empty());
    }
}
