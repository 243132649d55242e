//! The [`Store`] operations on SQLite. Writes go through the writer thread
//! (`SqliteStore::write`), one savepoint each; reads of configuration go to
//! the read connection.

use chrono::{DateTime, TimeZone, Utc};
use dzl_audit::{AuditEntry, AuditRecord, Head};
use dzl_types::wire::{
    CodeStatus, Decision, Outcome, OutcomeRequest, SubjectAccessResponse, SubjectDeposit,
    SubjectRedemption,
};
use dzl_types::{CodeId, DepositId, ErrorCode, Group, Purpose, RedemptionId, ScopeSet, TenantId};
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{wait_for, SqliteStore, WriteTx};
use crate::rules::{self, StoredCodeState};
use crate::{
    AuditQuery, Call, CertPin, CreatedCode, DataKeyKind, InitMaterial, KekRow, KekState,
    KekVersion, KeyUsage, NewCode, NewDeposit, PreviousSecret, PurgeCounts, PurgePlan,
    RedeemAttempt, Redeemed, RekeyedKek, Reply, RewrappedDataKey, RewrappedSecret, Sealed,
    SealedSecret, SecretRef, Store, StoreError, StoreResult, StoredDataKey, TenantKind, TenantRow,
    TenantState, UsageQuery, UsageRow,
};

pub(crate) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn from_ms(v: i64) -> StoreResult<DateTime<Utc>> {
    Utc.timestamp_millis_opt(v)
        .single()
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {v} out of range")))
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("unexpected stored {what}"))
}

fn scopes(s: &str) -> StoreResult<ScopeSet> {
    ScopeSet::parse_list(s).map_err(|_| corrupt("scope set"))
}

fn purpose(s: &str) -> StoreResult<Purpose> {
    Purpose::parse(s).map_err(|_| corrupt("purpose"))
}

fn at(now: DateTime<Utc>) -> String {
    now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The base audit record of a call.
fn record(call: &Call, result: &str) -> AuditRecord {
    AuditRecord {
        at: at(call.now),
        actor: call.actor.clone(),
        operation: call.operation.to_owned(),
        result: result.to_owned(),
        ..Default::default()
    }
}

/// The audit chain's head as stored.
pub(crate) fn stored_audit_head(conn: &Connection) -> rusqlite::Result<Head> {
    conn.prepare_cached("SELECT seq, hash FROM audit_head WHERE id = 1")?
        .query_row([], |r| {
            Ok(Head {
                seq: r.get(0)?,
                hash: r.get(1)?,
            })
        })
}

/// Appends `rec` to the chain, inside the caller's transaction. The head
/// row is written once per transaction ([`WriteTx::flush`]).
pub(crate) fn append_audit(tx: &WriteTx, rec: AuditRecord) -> StoreResult<()> {
    let head = tx.audit_head()?;
    let e = dzl_audit::chain(head.seq, &head.hash, rec);
    let r = &e.record;
    tx.prepare_cached(
        "INSERT INTO audit (seq, at, actor, operation, result, purpose, deposit_id, code_id,
             redemption_id, subject_tenant, groups, detail, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?
    .execute(params![
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
        e.hash
    ])?;
    tx.set_audit_head(Head {
        seq: e.seq,
        hash: e.hash,
    });
    Ok(())
}

/// Counts one call for billing, in the caller's transaction (written to
/// `usage` once per transaction, [`WriteTx::flush`]).
fn meter(tx: &WriteTx, call: &Call, outcome: &str) {
    tx.count_usage((
        call.now.format("%Y-%m-%d").to_string(),
        call.actor.clone(),
        call.operation,
        outcome.to_owned(),
    ));
}

fn bump_generation(conn: &Connection) -> StoreResult<()> {
    conn.execute(
        "UPDATE meta SET value = value + 1 WHERE key = 'generation'",
        [],
    )?;
    Ok(())
}

fn insert_code(
    conn: &WriteTx,
    call: &Call,
    deposit: &DepositId,
    purpose: Purpose,
    consent_expires: DateTime<Utc>,
    code: &NewCode,
) -> StoreResult<CreatedCode> {
    let expires_at = rules::code_deadline(call.now, code.ttl_seconds, consent_expires);
    conn.prepare_cached(
        "INSERT INTO codes (code_id, secret_hash, deposit_id, platform_id, funder_id, scopes, purpose,
             state, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'issued', ?8, ?9)",
    )?
    .execute(params![
        code.code_id.as_str(),
        &code.secret_hash[..],
        deposit.as_str(),
        call.actor,
        code.funder_id.as_str(),
        code.scopes.to_list(),
        purpose.as_str(),
        ms(call.now),
        ms(expires_at)
    ])?;
    let row = conn.last_insert_rowid();
    append_audit(
        conn,
        AuditRecord {
            operation: "code.issue".into(),
            purpose: Some(purpose.as_str().into()),
            deposit_id: Some(deposit.to_string()),
            code_id: Some(code.code_id.to_string()),
            subject_tenant: Some(code.funder_id.to_string()),
            groups: Some(code.scopes.to_list()),
            ..record(call, "ok")
        },
    )?;
    Ok(CreatedCode {
        code_id: code.code_id.clone(),
        row,
        funder_id: code.funder_id.clone(),
        scopes: code.scopes,
        purpose,
        expires_at,
    })
}

/// A deposit's row as the operations need it.
struct DepositRow {
    platform_id: String,
    purpose: Purpose,
    consent_scopes: ScopeSet,
    consent_expires: DateTime<Utc>,
    groups: ScopeSet,
    erased: bool,
}

fn load_deposit(conn: &Connection, id: &str) -> StoreResult<Option<DepositRow>> {
    let raw = conn
        .prepare_cached(
            "SELECT platform_id, purpose, consent_scopes, consent_expires, groups, state
             FROM deposits WHERE id = ?1",
        )?
        .query_row([id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
            ))
        })
        .optional()?;
    raw.map(|(platform_id, p, cs, ce, g, state)| {
        Ok(DepositRow {
            platform_id,
            purpose: purpose(&p)?,
            consent_scopes: scopes(&cs)?,
            consent_expires: from_ms(ce)?,
            groups: scopes(&g)?,
            erased: state == "erased",
        })
    })
    .transpose()
}

/// A code's row.
struct CodeRow {
    row: i64,
    code_id: String,
    secret_hash: Vec<u8>,
    deposit_id: String,
    platform_id: String,
    funder_id: String,
    scopes: ScopeSet,
    purpose: Purpose,
    state: StoredCodeState,
    expires_at: DateTime<Utc>,
    redeemed_at: Option<DateTime<Utc>>,
    /// Its redemption, once redeemed.
    redemption_id: Option<String>,
}

const CODE_COLUMNS: &str = "row, code_id, secret_hash, deposit_id, platform_id, funder_id, scopes,
    purpose, state, expires_at, redeemed_at, redemption_id";

/// A code's row, read from the columns [`CODE_COLUMNS`] names. The
/// rusqlite closure that calls it returns its result as is
/// (`|r| Ok(code_row(r))`), so the stored text parses into the types here.
fn code_row(r: &Row<'_>) -> StoreResult<CodeRow> {
    Ok(CodeRow {
        row: r.get(0)?,
        code_id: r.get(1)?,
        secret_hash: r.get(2)?,
        deposit_id: r.get(3)?,
        platform_id: r.get(4)?,
        funder_id: r.get(5)?,
        scopes: scopes(&r.get::<_, String>(6)?)?,
        purpose: purpose(&r.get::<_, String>(7)?)?,
        state: StoredCodeState::parse(&r.get::<_, String>(8)?)
            .ok_or_else(|| corrupt("code state"))?,
        expires_at: from_ms(r.get(9)?)?,
        redeemed_at: r.get::<_, Option<i64>>(10)?.map(from_ms).transpose()?,
        redemption_id: r.get(11)?,
    })
}

/// The code whose `column` (`code_id` or `row`) is `key`.
fn load_code(
    conn: &Connection,
    column: &str,
    key: impl rusqlite::ToSql,
) -> StoreResult<Option<CodeRow>> {
    conn.prepare_cached(&format!(
        "SELECT {CODE_COLUMNS} FROM codes WHERE {column} = ?1"
    ))?
    .query_row([key], |r| Ok(code_row(r)))
    .optional()?
    .transpose()
}

fn load_code_by_id(conn: &Connection, code_id: &str) -> StoreResult<Option<CodeRow>> {
    load_code(conn, "code_id", code_id)
}

fn load_code_by_row(conn: &Connection, row: i64) -> StoreResult<Option<CodeRow>> {
    load_code(conn, "row", row)
}

/// The outcome reported for the code's redemption, if any.
fn outcome_of(conn: &Connection, c: &CodeRow) -> StoreResult<Option<Outcome>> {
    let Some(redemption_id) = &c.redemption_id else {
        return Ok(None);
    };
    let raw = conn
        .prepare_cached(
            "SELECT id, decision, amount_fen, reported_at FROM redemptions
             WHERE id = ?1 AND decision IS NOT NULL",
        )?
        .query_row([redemption_id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<i64>>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })
        .optional()?;
    raw.map(|(id, d, amount, reported)| make_outcome(id, &d, amount, reported))
        .transpose()
}

fn make_outcome(
    id: String,
    decision: &str,
    amount: Option<i64>,
    reported: i64,
) -> StoreResult<Outcome> {
    Ok(Outcome {
        redemption_id: RedemptionId::from_trusted(id),
        decision: Decision::parse(decision).ok_or_else(|| corrupt("decision"))?,
        amount_fen: amount.map(|a| a as u64),
        reported_at: from_ms(reported)?,
    })
}

fn status_of(conn: &Connection, c: &CodeRow, now: DateTime<Utc>) -> StoreResult<CodeStatus> {
    Ok(CodeStatus {
        code_id: CodeId::from_trusted(c.code_id.clone()),
        deposit_id: DepositId::from_trusted(c.deposit_id.clone()),
        state: rules::effective_state(c.state, c.expires_at, now),
        funder_id: TenantId::from_trusted(c.funder_id.clone()),
        scopes: c.scopes,
        purpose: c.purpose,
        expires_at: c.expires_at,
        redeemed_at: c.redeemed_at,
        outcome: outcome_of(conn, c)?,
    })
}

/// The platform's own code, or `code_not_found`.
fn owned_code(conn: &Connection, call: &Call, code: &CodeId) -> StoreResult<CodeRow> {
    match load_code_by_id(conn, code.as_str())? {
        Some(c) if c.platform_id == call.actor => Ok(c),
        _ => Err(StoreError::Refused(ErrorCode::CodeNotFound)),
    }
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

/// Refuses to wrap under a KEK version that is retired or unknown: a writer
/// holding a keyring older than a `keys retire` must not store keys nobody
/// can unwrap any more. It reloads and retries.
fn ensure_wrappable(conn: &Connection, version: u32) -> StoreResult<()> {
    let state: Option<String> = conn
        .prepare_cached("SELECT state FROM keks WHERE version = ?1")?
        .query_row([version], |r| r.get(0))
        .optional()?;
    match state.as_deref() {
        Some("active") | Some("decrypt_only") => Ok(()),
        _ => Err(StoreError::Unavailable(format!(
            "key version {version} is retired or unknown; the keyring is being reloaded"
        ))),
    }
}

/// Crypto-shreds a deposit inside the caller's transaction: destroys its
/// data keys and ciphertexts (secure_delete overwrites them), revokes its
/// outstanding codes and marks it erased. Returns the codes revoked.
fn shred_deposit(conn: &Connection, id: &str, now: DateTime<Utc>) -> StoreResult<usize> {
    conn.prepare_cached("DELETE FROM data_keys WHERE deposit_id = ?1")?
        .execute([id])?;
    conn.prepare_cached("DELETE FROM records WHERE deposit_id = ?1")?
        .execute([id])?;
    let identity = conn
        .prepare_cached("DELETE FROM ident.identities WHERE deposit_id = ?1")?
        .execute([id])?;
    if identity > 0 {
        // identity.db's half of this transaction names the deposit, for
        // `recover` to find if a power cut loses vault.db's half.
        conn.prepare_cached("INSERT INTO ident.shredded (deposit_id) VALUES (?1)")?
            .execute([id])?;
        conn.prepare_cached("DELETE FROM ident.shredded WHERE seq <= ?1")?
            .execute([conn.last_insert_rowid() - super::recover::SHREDDED_TAIL])?;
    }
    let revoked = conn
        .prepare_cached(
            "UPDATE codes SET state = 'revoked', revoked_at = ?1 WHERE deposit_id = ?2 AND state = 'issued'",
        )?
        .execute(params![ms(now), id])?;
    conn.prepare_cached("UPDATE deposits SET state = 'erased', erased_at = ?1 WHERE id = ?2")?
        .execute(params![ms(now), id])?;
    Ok(revoked)
}

/// The call of something the store does by itself, as it opens.
fn by_system(operation: &'static str, now: DateTime<Utc>) -> Call {
    Call {
        actor: "system".into(),
        operation,
        now,
    }
}

/// Shreds an active deposit whose identity row is missing
/// ([`super::recover`]), audited with `why`: `vault.db` committed the
/// deposit and `identity.db` did not, so it was never acknowledged and can
/// never be redeemed; or `identity.db` committed a shredding of it and
/// `vault.db` did not. Does nothing if `id` is not an active deposit.
pub(super) fn void_deposit(
    tx: &WriteTx,
    id: &str,
    why: &str,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let dep = match load_deposit(tx, id)? {
        Some(d) if !d.erased => d,
        _ => return Ok(()),
    };
    let revoked = shred_deposit(tx, id, now)?;
    append_audit(
        tx,
        AuditRecord {
            purpose: Some(dep.purpose.as_str().into()),
            deposit_id: Some(id.to_owned()),
            subject_tenant: Some(dep.platform_id),
            groups: Some(dep.groups.to_list()),
            ..action(
                &by_system("deposit.void", now),
                "ok",
                format!("{why}: data keys destroyed; {revoked} outstanding codes revoked"),
            )
        },
    )
}

/// Deletes the identity row of `id` ([`super::recover`]), which has no
/// active deposit: its deposit was erased, or never reached `vault.db`.
pub(super) fn discard_identity(tx: &WriteTx, id: &str, now: DateTime<Utc>) -> StoreResult<()> {
    let why = match load_deposit(tx, id)? {
        Some(d) if d.erased => "the deposit was erased, and the identity.db part of that erasure never \
             reached the disk before the vault stopped",
        Some(_) => return Err(StoreError::Invalid(format!("deposit {id} is active; its identity stays"))),
        None => "its deposit never reached vault.db before the vault stopped, so it was never acknowledged",
    };
    tx.prepare_cached("DELETE FROM ident.identities WHERE deposit_id = ?1")?
        .execute([id])?;
    append_audit(
        tx,
        AuditRecord {
            deposit_id: Some(id.to_owned()),
            ..action(
                &by_system("identity.discard", now),
                "ok",
                format!("identity row deleted: {why}"),
            )
        },
    )
}

/// What still needs KEK `version` at `now`.
fn key_usage(conn: &Connection, version: u32, now: DateTime<Utc>) -> StoreResult<KeyUsage> {
    let count = |sql: &str, p: &[&dyn rusqlite::ToSql]| -> StoreResult<u64> {
        Ok(conn
            .prepare_cached(sql)?
            .query_row(p, |r| r.get::<_, i64>(0))? as u64)
    };
    Ok(KeyUsage {
        records_keys: count(
            "SELECT count(*) FROM data_keys WHERE kek_version = ?1",
            &[&version],
        )?,
        identity_keys: count(
            "SELECT count(*) FROM ident.identities WHERE kek_version = ?1",
            &[&version],
        )?,
        tenant_secrets: count(
            "SELECT count(*) FROM tenants WHERE secret_kek_version = ?1",
            &[&version],
        )?,
        previous_tenant_secrets: count(
            "SELECT count(*) FROM tenants WHERE previous_secret_kek_version = ?1
             AND previous_secret_valid_until > ?2",
            &[&version, &ms(now)],
        )?,
        vault_secrets: count(
            "SELECT count(*) FROM sealed_secrets WHERE kek_version = ?1",
            &[&version],
        )?,
    })
}

/// The audit record of an operator action.
fn action(call: &Call, result: &str, detail: String) -> AuditRecord {
    AuditRecord {
        detail: Some(detail),
        ..record(call, result)
    }
}

/// Deposits are filed by subject in runs, keyed (run, subject_index,
/// deposit_id): a deposit goes into run `audit seq >> SUBJECT_RUN_SHIFT`,
/// so runs follow one another and each holds at most 8,192 audit entries'
/// worth of deposits. A deposit's entry lands among the few hundred pages
/// of the current run, which stay in the writer's cache, instead of on a
/// random page of one index over every deposit: with ten million stored,
/// that index no longer fits in memory and each deposit read and wrote a
/// page of it (docs/performance.md). Finding a subject probes each run
/// ([`subject_deposit_ids`]).
const SUBJECT_RUN_SHIFT: u32 = 13;

/// The run a deposit filed now belongs to.
fn subject_run(tx: &WriteTx) -> StoreResult<i64> {
    Ok(tx.audit_head()?.seq >> SUBJECT_RUN_SHIFT)
}

/// The ids of every deposit filed under `subject_index`, run by run: one
/// seek to the next run, one probe for the subject in it.
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

/// What the vault holds about one subject: their deposits, by creation
/// time, and every redemption of them, by redemption time.
fn subject_report(conn: &Connection, subject_index: &str) -> StoreResult<SubjectAccessResponse> {
    let ids = subject_deposit_ids(conn, subject_index)?;
    let mut deposits = Vec::with_capacity(ids.len());
    let mut redemptions = Vec::new();
    for id in &ids {
        let mut stmt = conn.prepare_cached(
            "SELECT platform_id, external_ref, purpose, created_at, state, groups
             FROM deposits WHERE id = ?1",
        )?;
        let mut rows = stmt.query([id])?;
        while let Some(r) = rows.next()? {
            deposits.push(SubjectDeposit {
                deposit_id: DepositId::from_trusted(id.clone()),
                platform_id: TenantId::from_trusted(r.get(0)?),
                external_ref: r.get(1)?,
                purpose: purpose(&r.get::<_, String>(2)?)?,
                created_at: from_ms(r.get(3)?)?,
                state: r.get(4)?,
                groups: scopes(&r.get::<_, String>(5)?)?,
            });
        }
        // A deposit's redemptions, through its codes (schema migration 5).
        let mut stmt = conn.prepare_cached(
            "SELECT r.id, r.funder_id, r.redeemed_at, r.purpose, r.scopes, r.decision,
                    r.amount_fen, r.reported_at
             FROM codes AS c JOIN redemptions AS r ON r.id = c.redemption_id
             WHERE c.deposit_id = ?1",
        )?;
        let mut rows = stmt.query([id])?;
        while let Some(r) = rows.next()? {
            let redemption: String = r.get(0)?;
            let decision: Option<String> = r.get(5)?;
            let outcome = match decision {
                Some(d) => Some(make_outcome(
                    redemption.clone(),
                    &d,
                    r.get(6)?,
                    r.get::<_, Option<i64>>(7)?.unwrap_or(0),
                )?),
                None => None,
            };
            redemptions.push(SubjectRedemption {
                redemption_id: RedemptionId::from_trusted(redemption),
                deposit_id: DepositId::from_trusted(id.clone()),
                funder_id: TenantId::from_trusted(r.get(1)?),
                redeemed_at: from_ms(r.get(2)?)?,
                purpose: purpose(&r.get::<_, String>(3)?)?,
                scopes: scopes(&r.get::<_, String>(4)?)?,
                outcome,
            });
        }
    }
    deposits.sort_by(|a, b| {
        (a.created_at, a.deposit_id.as_str()).cmp(&(b.created_at, b.deposit_id.as_str()))
    });
    redemptions.sort_by(|a, b| {
        (a.redeemed_at, a.redemption_id.as_str()).cmp(&(b.redeemed_at, b.redemption_id.as_str()))
    });
    Ok(SubjectAccessResponse {
        deposits,
        redemptions,
    })
}

/// Selects issued codes past their deadline ([`rules::code_expirable`]).
const EXPIRABLE_CODES: &str = "FROM codes WHERE state = 'issued' AND expires_at <= ?1";
/// Selects deposits past retention ([`rules::deposit_past_retention`]).
const DEPOSITS_PAST_RETENTION: &str = "FROM deposits WHERE state = 'active' AND created_at < ?1";

impl Store for SqliteStore {
    fn create_deposit(&self, d: NewDeposit) -> StoreResult<Vec<CreatedCode>> {
        wait_for(|reply| self.submit_deposit(d, reply))
    }

    fn submits_without_waiting(&self) -> bool {
        true
    }

    fn submit_deposit(&self, d: NewDeposit, reply: Reply<Vec<CreatedCode>>) {
        // Parsed on the caller's thread, not the writer's.
        let consent_scopes = match consent_scopes_of(&d.consent_json) {
            Ok(s) => s,
            Err(e) => return reply(Err(e)),
        };
        // Rerunnable: it only reads what it captured.
        self.submit_rerunnable(move |conn| {
            let inserted = conn
                .prepare_cached(
                    "INSERT INTO deposits (id, platform_id, external_ref, purpose, consent, consent_scopes,
                         consent_expires, groups, subject_index, subject_ref, state, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'active', ?11)
                     ON CONFLICT (platform_id, external_ref) DO NOTHING",
                )?
                .execute(params![
                    d.id.as_str(),
                    d.call.actor,
                    d.external_ref,
                    d.purpose.as_str(),
                    d.consent_json,
                    consent_scopes,
                    ms(d.consent_expires),
                    d.groups.to_list(),
                    d.subject_index,
                    d.subject_ref.as_str(),
                    ms(d.call.now)
                ])?;
            if inserted == 0 {
                let existing: String = conn
                    .prepare_cached("SELECT id FROM deposits WHERE platform_id = ?1 AND external_ref = ?2")?
                    .query_row(params![d.call.actor, d.external_ref], |r| r.get(0))?;
                return Err(StoreError::DuplicateExternalRef(DepositId::from_trusted(existing)));
            }
            ensure_wrappable(conn, d.records_key.kek_version)?;
            if d.identity_key.kek_version != d.records_key.kek_version {
                ensure_wrappable(conn, d.identity_key.kek_version)?;
            }
            conn.prepare_cached(
                "INSERT INTO deposit_subjects (run, subject_index, deposit_id) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![subject_run(conn)?, d.subject_index, d.id.as_str()])?;
            conn.prepare_cached("INSERT INTO data_keys (deposit_id, kek_version, wrapped) VALUES (?1, ?2, ?3)")?
                .execute(params![d.id.as_str(), d.records_key.kek_version, d.records_key.bytes])?;
            for (group, envelope) in &d.records {
                conn.prepare_cached("INSERT INTO records (deposit_id, grp, envelope) VALUES (?1, ?2, ?3)")?
                    .execute(params![d.id.as_str(), group.as_str(), envelope])?;
            }
            conn.prepare_cached(
                "INSERT INTO ident.identities (deposit_id, kek_version, wrapped_key, envelope)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![d.id.as_str(), d.identity_key.kek_version, d.identity_key.bytes, d.identity])?;
            append_audit(
                conn,
                AuditRecord {
                    purpose: Some(d.purpose.as_str().into()),
                    deposit_id: Some(d.id.to_string()),
                    groups: Some(d.groups.to_list()),
                    ..record(&d.call, "ok")
                },
            )?;
            let mut created = Vec::with_capacity(d.codes.len());
            for code in &d.codes {
                created.push(insert_code(conn, &d.call, &d.id, d.purpose, d.consent_expires, code)?);
            }
            meter(conn, &d.call, "ok");
            Ok(created)
        }, reply)
    }

    fn issue_code(
        &self,
        call: &Call,
        deposit: &DepositId,
        code: NewCode,
        funder_purposes: &[Purpose],
    ) -> StoreResult<CreatedCode> {
        let (call, deposit, funder_purposes) =
            (call.clone(), deposit.clone(), funder_purposes.to_vec());
        self.write(move |conn| {
            let dep = match load_deposit(conn, deposit.as_str())? {
                Some(d) if d.platform_id == call.actor => d,
                _ => return Err(StoreError::Refused(ErrorCode::DepositNotFound)),
            };
            if dep.erased {
                return Err(StoreError::Refused(ErrorCode::DepositErased));
            }
            rules::check_grant(code.scopes, dep.consent_scopes, dep.groups)
                .map_err(StoreError::Refused)?;
            if !funder_purposes.contains(&dep.purpose) {
                return Err(StoreError::Refused(ErrorCode::FunderNotEntitled));
            }
            if call.now >= dep.consent_expires {
                return Err(StoreError::Refused(ErrorCode::ConsentExpired));
            }
            let created = insert_code(
                conn,
                &call,
                &deposit,
                dep.purpose,
                dep.consent_expires,
                &code,
            )?;
            meter(conn, &call, "ok");
            Ok(created)
        })
    }

    fn code_status(&self, call: &Call, code: &CodeId) -> StoreResult<CodeStatus> {
        let (call, code) = (call.clone(), code.clone());
        self.write(move |conn| {
            let c = owned_code(conn, &call, &code)?;
            let status = status_of(conn, &c, call.now)?;
            meter(conn, &call, "ok");
            Ok(status)
        })
    }

    fn revoke_code(&self, call: &Call, code: &CodeId) -> StoreResult<CodeStatus> {
        let (call, code) = (call.clone(), code.clone());
        self.write(move |conn| {
            let mut c = owned_code(conn, &call, &code)?;
            match rules::effective_state(c.state, c.expires_at, call.now) {
                dzl_types::wire::CodeState::Redeemed => return Err(StoreError::Refused(ErrorCode::CodeAlreadyRedeemed)),
                dzl_types::wire::CodeState::Expired => return Err(StoreError::Refused(ErrorCode::CodeExpired)),
                dzl_types::wire::CodeState::Revoked => {}
                dzl_types::wire::CodeState::Issued => {
                    conn.prepare_cached("UPDATE codes SET state = 'revoked', revoked_at = ?1 WHERE row = ?2 AND state = 'issued'")?
                        .execute(params![ms(call.now), c.row])?;
                    c.state = StoredCodeState::Revoked;
                    append_audit(
                        conn,
                        AuditRecord {
                            purpose: Some(c.purpose.as_str().into()),
                            deposit_id: Some(c.deposit_id.clone()),
                            code_id: Some(c.code_id.clone()),
                            subject_tenant: Some(c.funder_id.clone()),
                            groups: Some(c.scopes.to_list()),
                            ..record(&call, "ok")
                        },
                    )?;
                }
            }
            let status = status_of(conn, &c, call.now)?;
            meter(conn, &call, "ok");
            Ok(status)
        })
    }

    fn erase_deposit(&self, call: &Call, deposit: &DepositId) -> StoreResult<()> {
        let (call, deposit) = (call.clone(), deposit.clone());
        self.write(move |conn| {
            let dep = match load_deposit(conn, deposit.as_str())? {
                Some(d) if d.platform_id == call.actor => d,
                _ => return Err(StoreError::Refused(ErrorCode::DepositNotFound)),
            };
            if !dep.erased {
                let id = deposit.as_str();
                let revoked = shred_deposit(conn, id, call.now)?;
                append_audit(
                    conn,
                    AuditRecord {
                        purpose: Some(dep.purpose.as_str().into()),
                        deposit_id: Some(id.to_owned()),
                        groups: Some(dep.groups.to_list()),
                        detail: Some(format!(
                            "data keys destroyed; {revoked} outstanding codes revoked"
                        )),
                        ..record(&call, "ok")
                    },
                )?;
            }
            meter(conn, &call, "ok");
            Ok(())
        })
    }

    fn redeem(&self, call: &Call, attempt: RedeemAttempt) -> StoreResult<Redeemed> {
        wait_for(|reply| self.submit_redeem(call.clone(), attempt, reply))
    }

    fn submit_redeem(&self, call: Call, attempt: RedeemAttempt, reply: Reply<Redeemed>) {
        self.submit_rerunnable(
            move |conn| redeem_in_tx(conn, &call, &attempt),
            Box::new(move |out: StoreResult<Result<Redeemed, ErrorCode>>| {
                reply(out.and_then(|r| r.map_err(StoreError::Refused)))
            }),
        )
    }

    fn report_outcome(
        &self,
        call: &Call,
        redemption: &RedemptionId,
        outcome: &OutcomeRequest,
    ) -> StoreResult<Outcome> {
        let (call, redemption, outcome) = (call.clone(), redemption.clone(), outcome.clone());
        self.write(move |conn| {
            let row = conn
                .prepare_cached("SELECT funder_id, decision, deposit_id, code_id, purpose FROM redemptions WHERE id = ?1")?
                .query_row([redemption.as_str()], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                    ))
                })
                .optional()?;
            let (deposit_id, code_id, purpose) = match row {
                Some((funder, None, d, c, p)) if funder == call.actor => (d, c, p),
                Some((funder, Some(_), ..)) if funder == call.actor => {
                    return Err(StoreError::Refused(ErrorCode::OutcomeAlreadyReported))
                }
                _ => return Err(StoreError::Refused(ErrorCode::RedemptionNotFound)),
            };
            let amount = outcome.amount_fen.map(|a| a.get() as i64);
            conn.prepare_cached(
                "UPDATE redemptions SET decision = ?1, amount_fen = ?2, reported_at = ?3
                 WHERE id = ?4 AND decision IS NULL",
            )?
            .execute(params![outcome.decision.as_str(), amount, ms(call.now), redemption.as_str()])?;
            append_audit(
                conn,
                AuditRecord {
                    purpose: Some(purpose),
                    deposit_id: Some(deposit_id),
                    code_id: Some(code_id),
                    redemption_id: Some(redemption.to_string()),
                    detail: Some(format!("decision {}", outcome.decision.as_str())),
                    ..record(&call, "ok")
                },
            )?;
            meter(conn, &call, "ok");
            Ok(Outcome {
                redemption_id: redemption,
                decision: outcome.decision,
                amount_fen: outcome.amount_fen.map(|a| a.get()),
                reported_at: from_ms(ms(call.now))?,
            })
        })
    }

    fn subject_access(
        &self,
        call: &Call,
        subject_index: &str,
    ) -> StoreResult<SubjectAccessResponse> {
        // Read from a snapshot, off the writer and off the shared read
        // connection: finding a subject probes every run of the subject
        // index, which neither should wait for. The report is released
        // only once its audit entry commits.
        let report = self.read_snapshot_apart(|conn| subject_report(conn, subject_index))?;
        let detail = format!(
            "{} deposits, {} redemptions reported",
            report.deposits.len(),
            report.redemptions.len()
        );
        let call = call.clone();
        self.write(move |conn| {
            append_audit(
                conn,
                AuditRecord {
                    detail: Some(detail),
                    ..record(&call, "ok")
                },
            )?;
            meter(conn, &call, "ok");
            Ok(())
        })?;
        Ok(report)
    }

    fn record_refusal(&self, call: &Call, refusal: ErrorCode) -> StoreResult<()> {
        let call = call.clone();
        self.write(move |conn| {
            append_audit(conn, record(&call, refusal.as_str()))?;
            meter(conn, &call, refusal.as_str());
            Ok(())
        })
    }

    fn tenants(&self) -> StoreResult<Vec<TenantRow>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {TENANT_COLUMNS} FROM tenants ORDER BY created_at, id"
            ))?;
            let mut rows = stmt.query([])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(tenant_row(r)?);
            }
            Ok(out)
        })
    }

    fn add_tenant(&self, actor: &str, t: TenantRow) -> StoreResult<()> {
        let actor = actor.to_owned();
        self.write(move |conn| {
            ensure_wrappable(conn, t.secret.kek_version)?;
            let purposes: Vec<&str> = t.purposes.iter().map(|p| p.as_str()).collect();
            conn.execute(
                "INSERT INTO tenants (id, kind, name, key_id, secret_kek_version, secret_sealed, scopes,
                     purposes, rate_limit, state, created_at, updated_at, cert_pin)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11, ?12)",
                params![
                    t.id.as_str(),
                    t.kind.as_str(),
                    t.name,
                    t.key_id,
                    t.secret.kek_version,
                    t.secret.bytes,
                    t.scopes.map(|s| s.to_list()),
                    purposes.join(","),
                    t.rate_limit,
                    t.state.as_str(),
                    ms(t.created_at),
                    t.cert_pin.as_ref().map(|p| p.to_string())
                ],
            )?;
            bump_generation(conn)?;
            append_audit(
                conn,
                AuditRecord {
                    at: at(t.created_at),
                    actor,
                    operation: "tenant.add".into(),
                    result: "ok".into(),
                    subject_tenant: Some(t.id.to_string()),
                    groups: t.scopes.map(|s| s.to_list()),
                    detail: Some(rules::tenant_added_detail(&t)),
                    ..Default::default()
                },
            )
        })
    }

    fn set_tenant_state(
        &self,
        actor: &str,
        tenant: &TenantId,
        state: TenantState,
        reason: &str,
    ) -> StoreResult<bool> {
        let (actor, tenant, reason) = (actor.to_owned(), tenant.clone(), reason.to_owned());
        self.write(move |conn| {
            let now = Utc::now();
            let exists: Option<String> = conn
                .query_row(
                    "SELECT state FROM tenants WHERE id = ?1",
                    [tenant.as_str()],
                    |r| r.get(0),
                )
                .optional()?;
            match exists {
                None => return Err(StoreError::Invalid(format!("no tenant {tenant}"))),
                Some(s) if s == state.as_str() => return Ok(false),
                Some(_) => {}
            }
            conn.execute(
                "UPDATE tenants SET state = ?1, updated_at = ?2 WHERE id = ?3",
                params![state.as_str(), ms(now), tenant.as_str()],
            )?;
            bump_generation(conn)?;
            append_audit(
                conn,
                AuditRecord {
                    at: at(now),
                    actor,
                    operation: match state {
                        TenantState::Suspended => "tenant.suspend".into(),
                        TenantState::Active => "tenant.resume".into(),
                    },
                    result: "ok".into(),
                    subject_tenant: Some(tenant.to_string()),
                    detail: Some(reason),
                    ..Default::default()
                },
            )?;
            Ok(true)
        })
    }

    fn set_tenant_cert_pin(
        &self,
        actor: &str,
        tenant: &TenantId,
        pin: Option<CertPin>,
    ) -> StoreResult<bool> {
        let (actor, tenant) = (actor.to_owned(), tenant.clone());
        self.write(move |conn| {
            let now = Utc::now();
            let current: Option<Option<String>> = conn
                .query_row(
                    "SELECT cert_pin FROM tenants WHERE id = ?1",
                    [tenant.as_str()],
                    |r| r.get(0),
                )
                .optional()?;
            let wanted = pin.as_ref().map(|p| p.to_string());
            match current {
                None => return Err(StoreError::Invalid(format!("no tenant {tenant}"))),
                Some(c) if c == wanted => return Ok(false),
                Some(_) => {}
            }
            conn.execute(
                "UPDATE tenants SET cert_pin = ?1, updated_at = ?2 WHERE id = ?3",
                params![wanted, ms(now), tenant.as_str()],
            )?;
            bump_generation(conn)?;
            append_audit(
                conn,
                rules::cert_pin_audit(actor, &tenant, pin.as_ref(), at(now)),
            )?;
            Ok(true)
        })
    }

    fn keks(&self) -> StoreResult<Vec<KekRow>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT k.version, k.state, k.wrapped, k.created_at, k.retired_at,
                        (SELECT count(*) FROM data_keys d WHERE d.kek_version = k.version)
                      + (SELECT count(*) FROM ident.identities i WHERE i.kek_version = k.version),
                        (SELECT count(*) FROM tenants t WHERE t.secret_kek_version = k.version)
                      + (SELECT count(*) FROM tenants t WHERE t.previous_secret_kek_version = k.version)
                      + (SELECT count(*) FROM sealed_secrets s WHERE s.kek_version = k.version)
                 FROM keks k ORDER BY k.version",
            )?;
            let mut rows = stmt.query([])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let state: String = r.get(1)?;
                out.push(KekRow {
                    version: r.get(0)?,
                    state: KekState::parse(&state).ok_or_else(|| corrupt("kek state"))?,
                    wrapped: r.get(2)?,
                    created_at: from_ms(r.get(3)?)?,
                    retired_at: r.get::<_, Option<i64>>(4)?.map(from_ms).transpose()?,
                    data_keys: r.get::<_, i64>(5)? as u64,
                    secrets: r.get::<_, i64>(6)? as u64,
                });
            }
            Ok(out)
        })
    }

    fn kek_versions(&self) -> StoreResult<Vec<KekVersion>> {
        self.read(|conn| {
            let mut stmt =
                conn.prepare_cached("SELECT version, state, wrapped FROM keks ORDER BY version")?;
            let mut rows = stmt.query([])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let state: String = r.get(1)?;
                out.push(KekVersion {
                    version: r.get(0)?,
                    state: KekState::parse(&state).ok_or_else(|| corrupt("kek state"))?,
                    wrapped: r.get(2)?,
                });
            }
            Ok(out)
        })
    }

    fn rotate_kek(&self, actor: &str, version: u32, wrapped: Vec<u8>) -> StoreResult<()> {
        let actor = actor.to_owned();
        self.write(move |conn| {
            let max: Option<u32> = conn.query_row("SELECT max(version) FROM keks", [], |r| r.get(0))?;
            let expected = max.unwrap_or(0) + 1;
            if version != expected {
                return Err(StoreError::Invalid(format!(
                    "the next key version is {expected}, not {version} (another rotation ran first)"
                )));
            }
            let now = Utc::now();
            conn.execute("UPDATE keks SET state = 'decrypt_only' WHERE state = 'active'", [])?;
            conn.execute(
                "INSERT INTO keks (version, state, wrapped, created_at) VALUES (?1, 'active', ?2, ?3)",
                params![version, wrapped, ms(now)],
            )?;
            bump_generation(conn)?;
            append_audit(
                conn,
                AuditRecord {
                    at: at(now),
                    actor,
                    operation: "keys.rotate".into(),
                    result: "ok".into(),
                    detail: Some(format!("version {version} active")),
                    ..Default::default()
                },
            )
        })
    }

    fn sealed_secret(&self, name: &str) -> StoreResult<Option<SealedSecret>> {
        self.read(|conn| {
            conn.prepare_cached(
                "SELECT name, kek_version, sealed, public FROM sealed_secrets WHERE name = ?1",
            )?
            .query_row([name], sealed_row)
            .optional()
            .map_err(StoreError::from)
        })
    }

    fn receipt_keys(&self) -> StoreResult<Vec<SealedSecret>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT name, kek_version, sealed, public FROM sealed_secrets
                 WHERE name LIKE 'receipt:%' ORDER BY created_at, name",
            )?;
            let rows = stmt
                .query_map([], sealed_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    fn sealed_secrets(&self) -> StoreResult<Vec<SealedSecret>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT name, kek_version, sealed, public FROM sealed_secrets ORDER BY name",
            )?;
            let rows = stmt
                .query_map([], sealed_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    fn initialise(&self, actor: &str, init: InitMaterial) -> StoreResult<()> {
        let actor = actor.to_owned();
        self.write(move |conn| {
            let n: i64 = conn.query_row("SELECT count(*) FROM keks", [], |r| r.get(0))?;
            if n > 0 {
                return Err(StoreError::Invalid("the vault is already initialised".into()));
            }
            let now = Utc::now();
            conn.execute(
                "INSERT INTO keks (version, state, wrapped, created_at) VALUES (1, 'active', ?1, ?2)",
                params![init.kek_wrapped, ms(now)],
            )?;
            for s in &init.secrets {
                conn.execute(
                    "INSERT INTO sealed_secrets (name, kek_version, sealed, public, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![s.name, s.sealed.kek_version, s.sealed.bytes, s.public, ms(now)],
                )?;
            }
            bump_generation(conn)?;
            append_audit(
                conn,
                AuditRecord {
                    at: at(now),
                    actor,
                    operation: "vault.init".into(),
                    result: "ok".into(),
                    detail: Some("keyring version 1 created".into()),
                    ..Default::default()
                },
            )
        })
    }

    fn is_initialised(&self) -> StoreResult<bool> {
        self.read(|conn| {
            let n: i64 = conn.query_row("SELECT count(*) FROM keks", [], |r| r.get(0))?;
            Ok(n > 0)
        })
    }

    fn rotate_tenant_secret(
        &self,
        call: &Call,
        tenant: &TenantId,
        secret: Sealed,
        previous_valid_until: DateTime<Utc>,
    ) -> StoreResult<()> {
        let (call, tenant) = (call.clone(), tenant.clone());
        self.write(move |conn| {
            ensure_wrappable(conn, secret.kek_version)?;
            let changed = conn
                .prepare_cached(
                    "UPDATE tenants SET
                         previous_secret_kek_version = secret_kek_version,
                         previous_secret_sealed = secret_sealed,
                         previous_secret_valid_until = ?1,
                         secret_kek_version = ?2, secret_sealed = ?3, updated_at = ?4
                     WHERE id = ?5",
                )?
                .execute(params![
                    ms(previous_valid_until),
                    secret.kek_version,
                    secret.bytes,
                    ms(call.now),
                    tenant.as_str()
                ])?;
            if changed == 0 {
                return Err(StoreError::Invalid(format!("no tenant {tenant}")));
            }
            bump_generation(conn)?;
            append_audit(
                conn,
                AuditRecord {
                    subject_tenant: Some(tenant.to_string()),
                    detail: Some(format!(
                        "new signing secret; the previous one is accepted until {}",
                        at(previous_valid_until)
                    )),
                    ..record(&call, "ok")
                },
            )
        })
    }

    fn data_keys_on(
        &self,
        kind: DataKeyKind,
        version: u32,
        after: Option<&DepositId>,
        limit: usize,
    ) -> StoreResult<Vec<StoredDataKey>> {
        // The version index finds exactly the keys still to move, so a
        // resumed run or a second pass costs only what is left.
        let sql = match kind {
            DataKeyKind::Records => {
                "SELECT deposit_id, wrapped FROM data_keys
                 WHERE kek_version = ?1 AND deposit_id > ?2 ORDER BY deposit_id LIMIT ?3"
            }
            DataKeyKind::Identity => {
                "SELECT deposit_id, wrapped_key FROM ident.identities
                 WHERE kek_version = ?1 AND deposit_id > ?2 ORDER BY deposit_id LIMIT ?3"
            }
        };
        let after = after.map(|d| d.as_str().to_owned()).unwrap_or_default();
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(sql)?;
            let rows = stmt
                .query_map(params![version, after, limit as i64], |r| {
                    Ok(StoredDataKey {
                        kind,
                        deposit_id: DepositId::from_trusted(r.get::<_, String>(0)?),
                        wrapped: Sealed {
                            kek_version: version,
                            bytes: r.get(1)?,
                        },
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    fn rewrap_data_keys(
        &self,
        target_version: u32,
        keys: Vec<RewrappedDataKey>,
    ) -> StoreResult<u64> {
        self.write(move |conn| {
            ensure_wrappable(conn, target_version)?;
            let mut records = conn.prepare_cached(
                "UPDATE data_keys SET kek_version = ?1, wrapped = ?2
                 WHERE deposit_id = ?3 AND kek_version = ?4",
            )?;
            let mut identity = conn.prepare_cached(
                "UPDATE ident.identities SET kek_version = ?1, wrapped_key = ?2
                 WHERE deposit_id = ?3 AND kek_version = ?4",
            )?;
            let mut changed = 0u64;
            for k in keys {
                if k.wrapped.kek_version != target_version {
                    return Err(StoreError::Invalid(format!(
                        "a key wrapped under version {} in a rewrap onto {target_version}",
                        k.wrapped.kek_version
                    )));
                }
                let stmt = match k.kind {
                    DataKeyKind::Records => &mut records,
                    DataKeyKind::Identity => &mut identity,
                };
                changed += stmt.execute(params![
                    target_version,
                    k.wrapped.bytes,
                    k.deposit_id.as_str(),
                    k.from_version
                ])? as u64;
            }
            Ok(changed)
        })
    }

    fn rewrap_secrets(
        &self,
        call: &Call,
        target_version: u32,
        secrets: Vec<RewrappedSecret>,
        detail: &str,
    ) -> StoreResult<u64> {
        let (call, detail) = (call.clone(), detail.to_owned());
        self.write(move |conn| {
            ensure_wrappable(conn, target_version)?;
            let mut changed = 0u64;
            for s in secrets {
                if s.sealed.kek_version != target_version {
                    return Err(StoreError::Invalid(format!(
                        "a secret sealed under version {} in a rewrap onto {target_version}",
                        s.sealed.kek_version
                    )));
                }
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
                changed += conn.prepare_cached(sql)?.execute(params![
                    target_version,
                    s.sealed.bytes,
                    id,
                    s.from_version
                ])? as u64;
            }
            bump_generation(conn)?;
            append_audit(conn, action(&call, "ok", detail))?;
            Ok(changed)
        })
    }

    fn retire_kek(
        &self,
        call: &Call,
        version: u32,
    ) -> StoreResult<Result<bool, rules::RetireRefusal>> {
        let call = call.clone();
        self.write(move |conn| {
            let state: Option<String> = conn
                .prepare_cached("SELECT state FROM keks WHERE version = ?1")?
                .query_row([version], |r| r.get(0))
                .optional()?;
            let state = state
                .map(|s| KekState::parse(&s).ok_or_else(|| corrupt("kek state")))
                .transpose()?;
            let usage = key_usage(conn, version, call.now)?;
            match rules::retire_decision(version, state, &usage) {
                Err(refusal) => {
                    append_audit(
                        conn,
                        action(
                            &call,
                            refusal.code(),
                            format!("version {version} not retired: {refusal}"),
                        ),
                    )?;
                    Ok(Err(refusal))
                }
                Ok(false) => Ok(Ok(false)),
                Ok(true) => {
                    // Previous tenant secrets past their overlap are dead;
                    // they go with the key that sealed them.
                    let dropped = conn.execute(
                        "UPDATE tenants SET previous_secret_kek_version = NULL,
                             previous_secret_sealed = NULL, previous_secret_valid_until = NULL
                         WHERE previous_secret_kek_version = ?1",
                        [version],
                    )?;
                    conn.execute(
                        "UPDATE keks SET state = 'retired', wrapped = X'', retired_at = ?1
                         WHERE version = ?2",
                        params![ms(call.now), version],
                    )?;
                    bump_generation(conn)?;
                    append_audit(
                        conn,
                        action(
                            &call,
                            "ok",
                            format!(
                                "version {version} retired; its wrapped key deleted; \
                                 {dropped} expired previous tenant secrets dropped"
                            ),
                        ),
                    )?;
                    Ok(Ok(true))
                }
            }
        })
    }

    fn rekey_root(&self, call: &Call, keks: Vec<RekeyedKek>, detail: &str) -> StoreResult<()> {
        let (call, detail) = (call.clone(), detail.to_owned());
        self.write(move |conn| {
            let stored: Vec<(u32, Vec<u8>)> = conn
                .prepare("SELECT version, wrapped FROM keks WHERE state != 'retired' ORDER BY version")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            let mut given: Vec<&RekeyedKek> = keks.iter().collect();
            given.sort_by_key(|k| k.version);
            let matches = stored.len() == given.len()
                && stored
                    .iter()
                    .zip(&given)
                    .all(|((v, w), k)| *v == k.version && *w == k.old_wrapped);
            if !matches {
                return Err(StoreError::Invalid(
                    "the keyring changed while it was being rekeyed; nothing was changed, run it again"
                        .into(),
                ));
            }
            for k in &keks {
                conn.execute(
                    "UPDATE keks SET wrapped = ?1 WHERE version = ?2",
                    params![k.new_wrapped, k.version],
                )?;
            }
            bump_generation(conn)?;
            append_audit(conn, action(&call, "ok", detail))
        })
    }

    fn generation(&self) -> StoreResult<i64> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached("SELECT value FROM meta WHERE key = 'generation'")?
                .query_row([], |r| r.get(0))?)
        })
    }

    fn verify_audit(
        &self,
        progress: &mut dyn FnMut(i64),
    ) -> StoreResult<Result<u64, dzl_audit::ChainError>> {
        // One snapshot, so the head and the entries agree.
        self.read_snapshot(|conn| {
            let head = stored_audit_head(conn)?;
            let mut stmt =
                conn.prepare(&format!("SELECT {AUDIT_COLUMNS} FROM audit ORDER BY seq"))?;
            let rows = stmt.query_map([], audit_row)?;
            Ok(dzl_audit::verify_chain(rows, &head, &mut *progress))
        })
    }

    fn audit_entries(&self, after: i64, limit: usize) -> StoreResult<Vec<AuditEntry>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {AUDIT_COLUMNS} FROM audit WHERE seq > ?1 ORDER BY seq LIMIT ?2"
            ))?;
            let rows = stmt
                .query_map(params![after, limit as i64], audit_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    fn audit_head_seq(&self) -> StoreResult<i64> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached("SELECT seq FROM audit_head WHERE id = 1")?
                .query_row([], |r| r.get(0))?)
        })
    }

    fn audit_query(&self, q: &AuditQuery) -> StoreResult<Vec<AuditEntry>> {
        let since = q.since.map(at);
        let until = q.until.map(at);
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
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
        })
    }

    fn record_action(&self, call: &Call, result: &str, detail: &str) -> StoreResult<()> {
        let (call, result, detail) = (call.clone(), result.to_owned(), detail.to_owned());
        self.write(move |conn| append_audit(conn, action(&call, &result, detail)))
    }

    fn usage_query(&self, q: &UsageQuery) -> StoreResult<Vec<UsageRow>> {
        let day = |d: chrono::NaiveDate| d.format("%Y-%m-%d").to_string();
        let (from, to) = (q.from.map(day), q.to.map(day));
        let tenant = q.tenant.as_ref().map(|t| t.as_str().to_owned());
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT day, tenant_id, operation, outcome, calls FROM usage
                 WHERE (?1 IS NULL OR day >= ?1) AND (?2 IS NULL OR day <= ?2)
                   AND (?3 IS NULL OR tenant_id = ?3)
                 ORDER BY day, tenant_id, operation, outcome",
            )?;
            let rows = stmt
                .query_map(params![from, to, tenant], |r| {
                    Ok(UsageRow {
                        day: r.get(0)?,
                        tenant_id: r.get(1)?,
                        operation: r.get(2)?,
                        outcome: r.get(3)?,
                        calls: r.get::<_, i64>(4)? as u64,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    fn purge_preview(&self, plan: &PurgePlan) -> StoreResult<PurgeCounts> {
        let plan = *plan;
        // One snapshot, so the three counts agree.
        self.read_snapshot(|conn| {
            let count = |sql: &str, p: &[&dyn rusqlite::ToSql]| -> StoreResult<u64> {
                Ok(conn.prepare(sql)?.query_row(p, |r| r.get::<_, i64>(0))? as u64)
            };
            let (now, cutoff) = (ms(plan.now), ms(plan.deposits_created_before));
            Ok(PurgeCounts {
                codes_expired: count(&format!("SELECT count(*) {EXPIRABLE_CODES}"), &[&now])?,
                deposits_shredded: count(
                    &format!("SELECT count(*) {DEPOSITS_PAST_RETENTION}"),
                    &[&cutoff],
                )?,
                // Expiry runs first, so only codes still in time are revoked.
                codes_revoked: count(
                    &format!(
                        "SELECT count(*) FROM codes WHERE state = 'issued' AND expires_at > ?1
                         AND deposit_id IN (SELECT id {})",
                        DEPOSITS_PAST_RETENTION.replace("?1", "?2")
                    ),
                    &[&now, &cutoff],
                )?,
            })
        })
    }

    fn purge(&self, call: &Call, plan: &PurgePlan, limit: usize) -> StoreResult<PurgeCounts> {
        let (call, plan) = (call.clone(), *plan);
        self.write(move |conn| {
            let expired = conn
                .prepare_cached(&format!(
                    "UPDATE codes SET state = 'expired'
                     WHERE row IN (SELECT row {EXPIRABLE_CODES} ORDER BY expires_at LIMIT ?2)"
                ))?
                .execute(params![ms(plan.now), limit as i64])? as u64;
            let mut counts = PurgeCounts {
                codes_expired: expired,
                ..PurgeCounts::default()
            };
            if counts.codes_expired > 0 {
                append_audit(
                    conn,
                    AuditRecord {
                        operation: "codes.expire".into(),
                        ..action(
                            &call,
                            "ok",
                            format!("{} codes past their deadline stored as expired", counts.codes_expired),
                        )
                    },
                )?;
            }
            if counts.codes_expired as usize >= limit {
                // Expire every code first, so shredding revokes only codes still in time.
                return Ok(counts);
            }
            let ids: Vec<String> = conn
                .prepare_cached(&format!(
                    "SELECT id {DEPOSITS_PAST_RETENTION} ORDER BY created_at LIMIT ?2"
                ))?
                .query_map(params![ms(plan.deposits_created_before), limit as i64], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            for id in ids {
                let dep = load_deposit(conn, &id)?.ok_or_else(|| corrupt("deposit"))?;
                let revoked = shred_deposit(conn, &id, plan.now)?;
                counts.deposits_shredded += 1;
                counts.codes_revoked += revoked as u64;
                append_audit(
                    conn,
                    AuditRecord {
                        operation: "deposit.purge".into(),
                        purpose: Some(dep.purpose.as_str().into()),
                        deposit_id: Some(id.clone()),
                        subject_tenant: Some(dep.platform_id.clone()),
                        groups: Some(dep.groups.to_list()),
                        ..action(
                            &call,
                            "ok",
                            format!(
                                "retention of {} days passed: data keys destroyed; {revoked} outstanding codes revoked",
                                plan.retention_days
                            ),
                        )
                    },
                )?;
            }
            Ok(counts)
        })
    }

    fn ping(&self) -> StoreResult<()> {
        self.read(|conn| {
            conn.query_row("SELECT count(*) FROM ident.identities WHERE 0", [], |r| {
                r.get::<_, i64>(0)
            })?;
            Ok(())
        })?;
        self.write(|conn| {
            conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?;
            Ok(())
        })
    }
}

pub(super) const AUDIT_COLUMNS: &str =
    "seq, at, actor, operation, result, purpose, deposit_id, code_id,
    redemption_id, subject_tenant, groups, detail, prev_hash, hash";

pub(super) fn audit_row(r: &Row<'_>) -> rusqlite::Result<AuditEntry> {
    Ok(AuditEntry {
        seq: r.get(0)?,
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

fn consent_scopes_of(consent_json: &str) -> StoreResult<String> {
    let c: dzl_types::wire::Consent = serde_json::from_str(consent_json)
        .map_err(|_| StoreError::Invalid("consent is not a consent object".into()))?;
    Ok(c.scopes.to_list())
}

/// The redemption transaction. `Ok(Err(code))` is a refusal whose audit entry
/// must commit; `Err` rolls everything back.
fn redeem_in_tx(
    conn: &WriteTx,
    call: &Call,
    attempt: &RedeemAttempt,
) -> StoreResult<Result<Redeemed, ErrorCode>> {
    let refuse = |code: ErrorCode, rec: AuditRecord| -> StoreResult<Result<Redeemed, ErrorCode>> {
        append_audit(conn, rec)?;
        meter(conn, call, code.as_str());
        Ok(Err(code))
    };
    let base = AuditRecord {
        purpose: Some(attempt.purpose.as_str().into()),
        ..record(call, "ok")
    };
    let found = load_code_by_row(conn, attempt.code.row())?;
    let c = match found {
        Some(c) if attempt.code.matches(&c.secret_hash) => c,
        // Unknown row or wrong secret: a guess. Nothing about the row is recorded.
        _ => {
            return refuse(
                ErrorCode::CodeNotFound,
                AuditRecord {
                    result: ErrorCode::CodeNotFound.as_str().into(),
                    ..base
                },
            )
        }
    };
    let with_code = AuditRecord {
        deposit_id: Some(c.deposit_id.clone()),
        code_id: Some(c.code_id.clone()),
        groups: Some(c.scopes.to_list()),
        ..base
    };
    if c.funder_id != call.actor {
        // A real code presented by the wrong funder: indistinguishable to the
        // caller, but recorded with the code id for investigation.
        return refuse(
            ErrorCode::CodeNotFound,
            AuditRecord {
                result: ErrorCode::CodeNotFound.as_str().into(),
                detail: Some("code belongs to another funder".into()),
                ..with_code
            },
        );
    }
    let funder_state: Option<String> = conn
        .prepare_cached("SELECT state FROM tenants WHERE id = ?1")?
        .query_row([&call.actor], |r| r.get(0))
        .optional()?;
    if funder_state.as_deref() != Some("active") {
        return refuse(
            ErrorCode::TenantSuspended,
            AuditRecord {
                result: ErrorCode::TenantSuspended.as_str().into(),
                ..with_code
            },
        );
    }
    if let Err(code) =
        rules::redeem_decision(c.state, c.expires_at, call.now, c.purpose, attempt.purpose)
    {
        return refuse(
            code,
            AuditRecord {
                result: code.as_str().into(),
                ..with_code
            },
        );
    }
    // The one conditional update that makes redemption exactly-once.
    let won = conn
        .prepare_cached(
            "UPDATE codes SET state = 'redeemed', redeemed_at = ?1, redemption_id = ?2
             WHERE row = ?3 AND state = 'issued'",
        )?
        .execute(params![ms(call.now), attempt.redemption_id.as_str(), c.row])?;
    if won != 1 {
        let code = ErrorCode::CodeAlreadyRedeemed;
        return refuse(
            code,
            AuditRecord {
                result: code.as_str().into(),
                ..with_code
            },
        );
    }
    let (platform_id, external_ref, consent_json, dep_state): (String, String, String, String) =
        conn.prepare_cached(
            "SELECT platform_id, external_ref, consent, state FROM deposits WHERE id = ?1",
        )?
        .query_row([&c.deposit_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()?
        .ok_or_else(|| StoreError::Corrupt("code without deposit".into()))?;
    if dep_state != "active" {
        return Err(StoreError::Corrupt(
            "issued code on an erased deposit".into(),
        ));
    }
    conn.prepare_cached(
        "INSERT INTO redemptions (id, code_row, code_id, deposit_id, platform_id, funder_id, purpose, scopes, redeemed_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        attempt.redemption_id.as_str(),
        c.row,
        c.code_id,
        c.deposit_id,
        platform_id,
        c.funder_id,
        c.purpose.as_str(),
        c.scopes.to_list(),
        ms(call.now)
    ])?;
    let identity = if c.scopes.contains(Group::Applicant) {
        let (v, key, env): (u32, Vec<u8>, Vec<u8>) = conn
            .prepare_cached("SELECT kek_version, wrapped_key, envelope FROM ident.identities WHERE deposit_id = ?1")?
            .query_row([&c.deposit_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?
            .ok_or_else(|| StoreError::Corrupt("deposit without its identity row".into()))?;
        Some((
            Sealed {
                kek_version: v,
                bytes: key,
            },
            env,
        ))
    } else {
        None
    };
    let mut records = Vec::new();
    let mut records_key = None;
    if c.scopes.contains(Group::Device) || c.scopes.contains(Group::Risk) {
        let (v, key): (u32, Vec<u8>) = conn
            .prepare_cached("SELECT kek_version, wrapped FROM data_keys WHERE deposit_id = ?1")?
            .query_row([&c.deposit_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?
            .ok_or_else(|| StoreError::Corrupt("deposit without its data key".into()))?;
        records_key = Some(Sealed {
            kek_version: v,
            bytes: key,
        });
        for g in [Group::Device, Group::Risk] {
            if c.scopes.contains(g) {
                let env: Vec<u8> = conn
                    .prepare_cached(
                        "SELECT envelope FROM records WHERE deposit_id = ?1 AND grp = ?2",
                    )?
                    .query_row(params![c.deposit_id, g.as_str()], |r| r.get(0))
                    .optional()?
                    .ok_or_else(|| {
                        StoreError::Corrupt("granted group missing from its deposit".into())
                    })?;
                records.push((g, env));
            }
        }
    }
    append_audit(
        conn,
        AuditRecord {
            redemption_id: Some(attempt.redemption_id.to_string()),
            subject_tenant: Some(platform_id.clone()),
            ..with_code
        },
    )?;
    meter(conn, call, "ok");
    Ok(Ok(Redeemed {
        redemption_id: attempt.redemption_id.clone(),
        code_id: CodeId::from_trusted(c.code_id),
        deposit_id: DepositId::from_trusted(c.deposit_id),
        platform_id: TenantId::from_trusted(platform_id),
        external_ref,
        purpose: c.purpose,
        consent_json,
        scopes: c.scopes,
        redeemed_at: from_ms(ms(call.now))?,
        records_key,
        records,
        identity,
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_subject_is_found_in_every_run_and_only_that_subject() {
        let dir = tempfile::tempdir().unwrap();
        let conn = super::super::open_connection(dir.path()).unwrap();
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
