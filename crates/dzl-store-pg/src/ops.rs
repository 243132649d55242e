//! The [`Store`] operations on PostgreSQL: each method one transaction
//! ([`PgStore::tx`]), decisions by [`dzl_store::rules`], audit entries
//! appended last in the transaction (see the crate doc for the lock order).

use chrono::{DateTime, TimeZone, Utc};
use dzl_audit::{AuditEntry, AuditRecord, Head};
use dzl_store::rules::{self, StoredCodeState};
use dzl_store::{
    AuditQuery, Call, CertPin, CreatedCode, DataKeyKind, InitMaterial, KekRow, KekState,
    KekVersion, KeyUsage, NewCode, NewDeposit, PreviousSecret, PurgeCounts, PurgePlan,
    RedeemAttempt, Redeemed, RekeyedKek, RewrappedDataKey, RewrappedSecret, Sealed, SealedSecret,
    SecretRef, Store, StoreError, StoreResult, StoredDataKey, TenantKind, TenantRow, TenantState,
    UsageQuery, UsageRow,
};
use dzl_types::wire::{
    CodeState, CodeStatus, Decision, Outcome, OutcomeRequest, SubjectAccessResponse,
    SubjectDeposit, SubjectRedemption,
};
use dzl_types::{CodeId, DepositId, ErrorCode, Group, Purpose, RedemptionId, ScopeSet, TenantId};
use postgres::types::FromSql;
use postgres::{Row, Transaction};

use crate::{PgStore, TxResult};

// ---- conversions ----

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_ms(v: i64) -> StoreResult<DateTime<Utc>> {
    Utc.timestamp_millis_opt(v)
        .single()
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {v} out of range")))
}

fn corrupt(what: &str) -> StoreError {
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

fn scopes(s: &str) -> StoreResult<ScopeSet> {
    ScopeSet::parse_list(s).map_err(|_| corrupt("scope set"))
}

fn purpose(s: &str) -> StoreResult<Purpose> {
    Purpose::parse(s).map_err(|_| corrupt("purpose"))
}

fn at(now: DateTime<Utc>) -> String {
    now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn limit_of(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

// ---- the audit chain, usage, generation ----

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

/// The audit record of an operator action.
fn action(call: &Call, result: &str, detail: String) -> AuditRecord {
    AuditRecord {
        detail: Some(detail),
        ..record(call, result)
    }
}

/// Appends `records` to the chain, in order, inside the caller's
/// transaction. Callers do this last: the head row stays locked until the
/// commit, and every other lock of the transaction is taken before it.
fn append_audit(tx: &mut Transaction<'_>, records: Vec<AuditRecord>) -> TxResult<()> {
    if records.is_empty() {
        return Ok(());
    }
    let head = tx
        .query_opt(
            "SELECT seq, hash FROM dzl.audit_head WHERE id = 1 FOR UPDATE",
            &[],
        )?
        .ok_or_else(|| StoreError::Corrupt("the audit head is missing".into()))?;
    let (mut seq, mut hash): (i64, String) = (get(&head, 0)?, get(&head, 1)?);
    let insert = tx.prepare(
        "INSERT INTO dzl.audit (seq, at, actor, operation, result, purpose, deposit_id, code_id,
             redemption_id, subject_tenant, groups, detail, prev_hash, hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )?;
    for rec in records {
        let e = dzl_audit::chain(seq, &hash, rec);
        let r = &e.record;
        tx.execute(
            &insert,
            &[
                &e.seq,
                &r.at,
                &r.actor,
                &r.operation,
                &r.result,
                &r.purpose,
                &r.deposit_id,
                &r.code_id,
                &r.redemption_id,
                &r.subject_tenant,
                &r.groups,
                &r.detail,
                &e.prev_hash,
                &e.hash,
            ],
        )?;
        seq = e.seq;
        hash = e.hash;
    }
    tx.execute(
        "UPDATE dzl.audit_head SET seq = $1, hash = $2 WHERE id = 1",
        &[&seq, &hash],
    )?;
    Ok(())
}

/// Counts one call for billing, inside the caller's transaction (before its
/// audit entries).
fn meter(tx: &mut Transaction<'_>, call: &Call, outcome: &str) -> TxResult<()> {
    tx.execute(
        "INSERT INTO dzl.usage AS u (day, tenant_id, operation, outcome, calls)
         VALUES ($1, $2, $3, $4, 1)
         ON CONFLICT (day, tenant_id, operation, outcome) DO UPDATE SET calls = u.calls + 1",
        &[
            &call.now.format("%Y-%m-%d").to_string(),
            &call.actor,
            &call.operation,
            &outcome,
        ],
    )?;
    Ok(())
}

/// Serialises keyring and tenant changes across replicas: the first lock
/// such a transaction takes.
fn lock_config(tx: &mut Transaction<'_>) -> TxResult<()> {
    tx.query_opt(
        "SELECT value FROM dzl.meta WHERE key = 'generation' FOR UPDATE",
        &[],
    )?
    .ok_or_else(|| StoreError::Corrupt("the generation is missing".into()))?;
    Ok(())
}

fn bump_generation(tx: &mut Transaction<'_>) -> TxResult<()> {
    tx.execute(
        "UPDATE dzl.meta SET value = value + 1 WHERE key = 'generation'",
        &[],
    )?;
    Ok(())
}

/// Refuses to wrap under a KEK version that is retired or unknown (a
/// writer holding a keyring older than a `keys retire` reloads and
/// retries), and holds the version's row `FOR SHARE` until the commit, so a
/// concurrent `retire_kek` waits and then counts what this wrote.
fn ensure_wrappable(tx: &mut Transaction<'_>, version: u32) -> TxResult<()> {
    let row = tx.query_opt(
        "SELECT state FROM dzl.keks WHERE version = $1 FOR SHARE",
        &[&db_version(version)?],
    )?;
    let state: Option<String> = row.map(|r| get(&r, 0)).transpose()?;
    match state.as_deref() {
        Some("active") | Some("decrypt_only") => Ok(()),
        _ => Err(StoreError::Unavailable(format!(
            "key version {version} is retired or unknown; the keyring is being reloaded"
        ))
        .into()),
    }
}

// ---- deposits and codes ----

/// A deposit's row as the operations need it.
struct DepositRow {
    platform_id: String,
    purpose: Purpose,
    consent_scopes: ScopeSet,
    consent_expires: DateTime<Utc>,
    groups: ScopeSet,
    erased: bool,
}

/// How a read locks the row it reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lock {
    None,
    Share,
    Update,
}

impl Lock {
    fn clause(self) -> &'static str {
        match self {
            Lock::None => "",
            Lock::Share => " FOR SHARE",
            Lock::Update => " FOR UPDATE",
        }
    }
}

fn load_deposit(tx: &mut Transaction<'_>, id: &str, lock: Lock) -> TxResult<Option<DepositRow>> {
    let row = tx.query_opt(
        &format!(
            "SELECT platform_id, purpose, consent_scopes, consent_expires, groups, state
             FROM dzl.deposits WHERE id = $1{}",
            lock.clause()
        ),
        &[&id],
    )?;
    let Some(r) = row else { return Ok(None) };
    let state: String = get(&r, 5)?;
    Ok(Some(DepositRow {
        platform_id: get(&r, 0)?,
        purpose: purpose(get(&r, 1)?)?,
        consent_scopes: scopes(get(&r, 2)?)?,
        consent_expires: from_ms(get(&r, 3)?)?,
        groups: scopes(get(&r, 4)?)?,
        erased: state == "erased",
    }))
}

/// Inserts a code; returns it and its audit record (for the caller to append).
fn insert_code(
    tx: &mut Transaction<'_>,
    call: &Call,
    deposit: &DepositId,
    purpose: Purpose,
    consent_expires: DateTime<Utc>,
    code: &NewCode,
) -> TxResult<(CreatedCode, AuditRecord)> {
    let expires_at = rules::code_deadline(call.now, code.ttl_seconds, consent_expires);
    let row = tx.query_one(
        "INSERT INTO dzl.codes (code_id, secret_hash, deposit_id, platform_id, funder_id, scopes,
             purpose, state, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'issued', $8, $9)
         RETURNING row",
        &[
            &code.code_id.as_str(),
            &&code.secret_hash[..],
            &deposit.as_str(),
            &call.actor,
            &code.funder_id.as_str(),
            &code.scopes.to_list(),
            &purpose.as_str(),
            &ms(call.now),
            &ms(expires_at),
        ],
    )?;
    let row: i64 = get(&row, 0)?;
    let rec = AuditRecord {
        operation: "code.issue".into(),
        purpose: Some(purpose.as_str().into()),
        deposit_id: Some(deposit.to_string()),
        code_id: Some(code.code_id.to_string()),
        subject_tenant: Some(code.funder_id.to_string()),
        groups: Some(code.scopes.to_list()),
        ..record(call, "ok")
    };
    Ok((
        CreatedCode {
            code_id: code.code_id.clone(),
            row,
            funder_id: code.funder_id.clone(),
            scopes: code.scopes,
            purpose,
            expires_at,
        },
        rec,
    ))
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
}

const CODE_COLUMNS: &str = "row, code_id, secret_hash, deposit_id, platform_id, funder_id, scopes,
    purpose, state, expires_at, redeemed_at";

fn parse_code(r: &Row) -> StoreResult<CodeRow> {
    let state: String = get(r, 8)?;
    Ok(CodeRow {
        row: get(r, 0)?,
        code_id: get(r, 1)?,
        secret_hash: get(r, 2)?,
        deposit_id: get(r, 3)?,
        platform_id: get(r, 4)?,
        funder_id: get(r, 5)?,
        scopes: scopes(get(r, 6)?)?,
        purpose: purpose(get(r, 7)?)?,
        state: StoredCodeState::parse(&state).ok_or_else(|| corrupt("code state"))?,
        expires_at: from_ms(get(r, 9)?)?,
        redeemed_at: get::<Option<i64>>(r, 10)?.map(from_ms).transpose()?,
    })
}

fn load_code_by_id(
    tx: &mut Transaction<'_>,
    code_id: &str,
    lock: Lock,
) -> TxResult<Option<CodeRow>> {
    let row = tx.query_opt(
        &format!(
            "SELECT {CODE_COLUMNS} FROM dzl.codes WHERE code_id = $1{}",
            lock.clause()
        ),
        &[&code_id],
    )?;
    Ok(row.as_ref().map(parse_code).transpose()?)
}

fn load_code_by_row(tx: &mut Transaction<'_>, row: i64) -> TxResult<Option<CodeRow>> {
    let row = tx.query_opt(
        &format!("SELECT {CODE_COLUMNS} FROM dzl.codes WHERE row = $1"),
        &[&row],
    )?;
    Ok(row.as_ref().map(parse_code).transpose()?)
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

fn outcome_of(tx: &mut Transaction<'_>, code_row: i64) -> TxResult<Option<Outcome>> {
    let row = tx.query_opt(
        "SELECT id, decision, amount_fen, reported_at FROM dzl.redemptions
         WHERE code_row = $1 AND decision IS NOT NULL",
        &[&code_row],
    )?;
    let Some(r) = row else { return Ok(None) };
    let decision: String = get(&r, 1)?;
    Ok(Some(make_outcome(
        get(&r, 0)?,
        &decision,
        get(&r, 2)?,
        get(&r, 3)?,
    )?))
}

fn status_of(tx: &mut Transaction<'_>, c: &CodeRow, now: DateTime<Utc>) -> TxResult<CodeStatus> {
    Ok(CodeStatus {
        code_id: CodeId::from_trusted(c.code_id.clone()),
        deposit_id: DepositId::from_trusted(c.deposit_id.clone()),
        state: rules::effective_state(c.state, c.expires_at, now),
        funder_id: TenantId::from_trusted(c.funder_id.clone()),
        scopes: c.scopes,
        purpose: c.purpose,
        expires_at: c.expires_at,
        redeemed_at: c.redeemed_at,
        outcome: outcome_of(tx, c.row)?,
    })
}

/// The platform's own code, or `code_not_found`.
fn owned_code(
    tx: &mut Transaction<'_>,
    call: &Call,
    code: &CodeId,
    lock: Lock,
) -> TxResult<CodeRow> {
    match load_code_by_id(tx, code.as_str(), lock)? {
        Some(c) if c.platform_id == call.actor => Ok(c),
        _ => Err(StoreError::Refused(ErrorCode::CodeNotFound).into()),
    }
}

/// Crypto-shreds a deposit whose row the caller has locked `FOR UPDATE`:
/// destroys its data keys and ciphertexts, revokes its outstanding codes
/// and marks it erased. Returns the codes revoked.
fn shred_deposit(tx: &mut Transaction<'_>, id: &str, now: DateTime<Utc>) -> TxResult<u64> {
    tx.execute("DELETE FROM dzl.data_keys WHERE deposit_id = $1", &[&id])?;
    tx.execute("DELETE FROM dzl.records WHERE deposit_id = $1", &[&id])?;
    tx.execute(
        "DELETE FROM dzl_identity.identities WHERE deposit_id = $1",
        &[&id],
    )?;
    let revoked = tx.execute(
        "UPDATE dzl.codes SET state = 'revoked', revoked_at = $1
         WHERE deposit_id = $2 AND state = 'issued'",
        &[&ms(now), &id],
    )?;
    tx.execute(
        "UPDATE dzl.deposits SET state = 'erased', erased_at = $1 WHERE id = $2",
        &[&ms(now), &id],
    )?;
    Ok(revoked)
}

// ---- tenants, keys ----

const TENANT_COLUMNS: &str = "id, kind, name, key_id, secret_kek_version, secret_sealed, scopes,
    purposes, rate_limit, state, created_at, previous_secret_kek_version, previous_secret_sealed,
    previous_secret_valid_until, cert_pin";

fn tenant_row(r: &Row) -> StoreResult<TenantRow> {
    let kind: String = get(r, 1)?;
    let sc: Option<String> = get(r, 6)?;
    let pu: String = get(r, 7)?;
    let state: String = get(r, 9)?;
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
    let rate: i64 = get(r, 8)?;
    Ok(TenantRow {
        id: TenantId::from_trusted(get::<String>(r, 0)?),
        kind: TenantKind::parse(&kind).ok_or_else(|| corrupt("tenant kind"))?,
        name: get(r, 2)?,
        key_id: get(r, 3)?,
        secret: Sealed {
            kek_version: version_of(get(r, 4)?)?,
            bytes: get(r, 5)?,
        },
        scopes: sc.map(|s| scopes(&s)).transpose()?,
        purposes: dzl_types::domain::parse_purposes(&pu).map_err(|_| corrupt("purposes"))?,
        rate_limit: u32::try_from(rate).map_err(|_| corrupt("rate limit"))?,
        state: TenantState::parse(&state).ok_or_else(|| corrupt("tenant state"))?,
        created_at: from_ms(get(r, 10)?)?,
        previous_secret: previous,
        cert_pin: get::<Option<String>>(r, 14)?
            .map(|p| CertPin::parse(&p).map_err(|_| corrupt("tenant certificate pin")))
            .transpose()?,
    })
}

/// What still needs KEK `version` at `now`.
fn key_usage(tx: &mut Transaction<'_>, version: u32, now: DateTime<Utc>) -> TxResult<KeyUsage> {
    let v = db_version(version)?;
    let row = tx.query_one(
        "SELECT
            (SELECT count(*) FROM dzl.data_keys WHERE kek_version = $1),
            (SELECT count(*) FROM dzl_identity.identities WHERE kek_version = $1),
            (SELECT count(*) FROM dzl.tenants WHERE secret_kek_version = $1),
            (SELECT count(*) FROM dzl.tenants WHERE previous_secret_kek_version = $1
                AND previous_secret_valid_until > $2),
            (SELECT count(*) FROM dzl.sealed_secrets WHERE kek_version = $1)",
        &[&v, &ms(now)],
    )?;
    Ok(KeyUsage {
        records_keys: count_of(get(&row, 0)?),
        identity_keys: count_of(get(&row, 1)?),
        tenant_secrets: count_of(get(&row, 2)?),
        previous_tenant_secrets: count_of(get(&row, 3)?),
        vault_secrets: count_of(get(&row, 4)?),
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

const AUDIT_COLUMNS: &str = "seq, at, actor, operation, result, purpose, deposit_id, code_id,
    redemption_id, subject_tenant, groups, detail, prev_hash, hash";

fn audit_row(r: &Row) -> StoreResult<AuditEntry> {
    Ok(AuditEntry {
        seq: get(r, 0)?,
        record: AuditRecord {
            at: get(r, 1)?,
            actor: get(r, 2)?,
            operation: get(r, 3)?,
            result: get(r, 4)?,
            purpose: get(r, 5)?,
            deposit_id: get(r, 6)?,
            code_id: get(r, 7)?,
            redemption_id: get(r, 8)?,
            subject_tenant: get(r, 9)?,
            groups: get(r, 10)?,
            detail: get(r, 11)?,
        },
        prev_hash: get(r, 12)?,
        hash: get(r, 13)?,
    })
}

fn consent_scopes_of(consent_json: &str) -> StoreResult<String> {
    let c: dzl_types::wire::Consent = serde_json::from_str(consent_json)
        .map_err(|_| StoreError::Invalid("consent is not a consent object".into()))?;
    Ok(c.scopes.to_list())
}

/// Selects issued codes past their deadline ([`rules::code_expirable`]).
const EXPIRABLE_CODES: &str = "state = 'issued' AND expires_at <= $1";
/// Selects deposits past retention ([`rules::deposit_past_retention`]).
const DEPOSITS_PAST_RETENTION: &str = "state = 'active' AND created_at < $1";

/// Audit entries read per statement when walking the chain.
const AUDIT_PAGE: i64 = 5000;

impl Store for PgStore {
    fn create_deposit(&self, d: NewDeposit) -> StoreResult<Vec<CreatedCode>> {
        let consent_scopes = consent_scopes_of(&d.consent_json)?;
        self.tx(|tx| {
            let inserted = tx.execute(
                "INSERT INTO dzl.deposits (id, platform_id, external_ref, purpose, consent,
                     consent_scopes, consent_expires, groups, subject_index, subject_ref, state,
                     created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'active', $11)
                 ON CONFLICT (platform_id, external_ref) DO NOTHING",
                &[
                    &d.id.as_str(),
                    &d.call.actor,
                    &d.external_ref,
                    &d.purpose.as_str(),
                    &d.consent_json,
                    &consent_scopes,
                    &ms(d.consent_expires),
                    &d.groups.to_list(),
                    &d.subject_index,
                    &d.subject_ref.as_str(),
                    &ms(d.call.now),
                ],
            )?;
            if inserted == 0 {
                let existing: String = tx
                    .query_one(
                        "SELECT id FROM dzl.deposits WHERE platform_id = $1 AND external_ref = $2",
                        &[&d.call.actor, &d.external_ref],
                    )?
                    .get(0);
                return Err(StoreError::DuplicateExternalRef(DepositId::from_trusted(existing)).into());
            }
            ensure_wrappable(tx, d.records_key.kek_version)?;
            if d.identity_key.kek_version != d.records_key.kek_version {
                ensure_wrappable(tx, d.identity_key.kek_version)?;
            }
            tx.execute(
                "INSERT INTO dzl.data_keys (deposit_id, kek_version, wrapped) VALUES ($1, $2, $3)",
                &[
                    &d.id.as_str(),
                    &db_version(d.records_key.kek_version)?,
                    &d.records_key.bytes,
                ],
            )?;
            for (group, envelope) in &d.records {
                tx.execute(
                    "INSERT INTO dzl.records (deposit_id, grp, envelope) VALUES ($1, $2, $3)",
                    &[&d.id.as_str(), &group.as_str(), envelope],
                )?;
            }
            tx.execute(
                "INSERT INTO dzl_identity.identities (deposit_id, kek_version, wrapped_key, envelope)
                 VALUES ($1, $2, $3, $4)",
                &[
                    &d.id.as_str(),
                    &db_version(d.identity_key.kek_version)?,
                    &d.identity_key.bytes,
                    &d.identity,
                ],
            )?;
            let mut audit = vec![AuditRecord {
                purpose: Some(d.purpose.as_str().into()),
                deposit_id: Some(d.id.to_string()),
                groups: Some(d.groups.to_list()),
                ..record(&d.call, "ok")
            }];
            let mut created = Vec::with_capacity(d.codes.len());
            for code in &d.codes {
                let (c, rec) =
                    insert_code(tx, &d.call, &d.id, d.purpose, d.consent_expires, code)?;
                created.push(c);
                audit.push(rec);
            }
            meter(tx, &d.call, "ok")?;
            append_audit(tx, audit)?;
            Ok(created)
        })
    }

    fn issue_code(
        &self,
        call: &Call,
        deposit: &DepositId,
        code: NewCode,
        funder_purposes: &[Purpose],
    ) -> StoreResult<CreatedCode> {
        self.tx(|tx| {
            // FOR SHARE: an erasure waits for this code, then revokes it.
            let dep = match load_deposit(tx, deposit.as_str(), Lock::Share)? {
                Some(d) if d.platform_id == call.actor => d,
                _ => return Err(StoreError::Refused(ErrorCode::DepositNotFound).into()),
            };
            if dep.erased {
                return Err(StoreError::Refused(ErrorCode::DepositErased).into());
            }
            rules::check_grant(code.scopes, dep.consent_scopes, dep.groups)
                .map_err(StoreError::Refused)?;
            if !funder_purposes.contains(&dep.purpose) {
                return Err(StoreError::Refused(ErrorCode::FunderNotEntitled).into());
            }
            if call.now >= dep.consent_expires {
                return Err(StoreError::Refused(ErrorCode::ConsentExpired).into());
            }
            let (created, rec) =
                insert_code(tx, call, deposit, dep.purpose, dep.consent_expires, &code)?;
            meter(tx, call, "ok")?;
            append_audit(tx, vec![rec])?;
            Ok(created)
        })
    }

    fn code_status(&self, call: &Call, code: &CodeId) -> StoreResult<CodeStatus> {
        self.tx(|tx| {
            let c = owned_code(tx, call, code, Lock::None)?;
            let status = status_of(tx, &c, call.now)?;
            meter(tx, call, "ok")?;
            Ok(status)
        })
    }

    fn revoke_code(&self, call: &Call, code: &CodeId) -> StoreResult<CodeStatus> {
        self.tx(|tx| {
            // FOR UPDATE: a concurrent redemption either went first (and is
            // seen here) or waits and finds the code revoked.
            let mut c = owned_code(tx, call, code, Lock::Update)?;
            let mut audit = Vec::new();
            match rules::effective_state(c.state, c.expires_at, call.now) {
                CodeState::Redeemed => {
                    return Err(StoreError::Refused(ErrorCode::CodeAlreadyRedeemed).into())
                }
                CodeState::Expired => {
                    return Err(StoreError::Refused(ErrorCode::CodeExpired).into())
                }
                CodeState::Revoked => {}
                CodeState::Issued => {
                    tx.execute(
                        "UPDATE dzl.codes SET state = 'revoked', revoked_at = $1
                         WHERE row = $2 AND state = 'issued'",
                        &[&ms(call.now), &c.row],
                    )?;
                    c.state = StoredCodeState::Revoked;
                    audit.push(AuditRecord {
                        purpose: Some(c.purpose.as_str().into()),
                        deposit_id: Some(c.deposit_id.clone()),
                        code_id: Some(c.code_id.clone()),
                        subject_tenant: Some(c.funder_id.clone()),
                        groups: Some(c.scopes.to_list()),
                        ..record(call, "ok")
                    });
                }
            }
            let status = status_of(tx, &c, call.now)?;
            meter(tx, call, "ok")?;
            append_audit(tx, audit)?;
            Ok(status)
        })
    }

    fn erase_deposit(&self, call: &Call, deposit: &DepositId) -> StoreResult<()> {
        self.tx(|tx| {
            let dep = match load_deposit(tx, deposit.as_str(), Lock::Update)? {
                Some(d) if d.platform_id == call.actor => d,
                _ => return Err(StoreError::Refused(ErrorCode::DepositNotFound).into()),
            };
            let mut audit = Vec::new();
            if !dep.erased {
                let id = deposit.as_str();
                let revoked = shred_deposit(tx, id, call.now)?;
                audit.push(AuditRecord {
                    purpose: Some(dep.purpose.as_str().into()),
                    deposit_id: Some(id.to_owned()),
                    groups: Some(dep.groups.to_list()),
                    detail: Some(format!(
                        "data keys destroyed; {revoked} outstanding codes revoked"
                    )),
                    ..record(call, "ok")
                });
            }
            meter(tx, call, "ok")?;
            append_audit(tx, audit)?;
            Ok(())
        })
    }

    fn redeem(&self, call: &Call, attempt: RedeemAttempt) -> StoreResult<Redeemed> {
        let result = self.tx(|tx| redeem_in_tx(tx, call, &attempt))?;
        result.map_err(StoreError::Refused)
    }

    fn report_outcome(
        &self,
        call: &Call,
        redemption: &RedemptionId,
        outcome: &OutcomeRequest,
    ) -> StoreResult<Outcome> {
        self.tx(|tx| {
            let row = tx.query_opt(
                "SELECT funder_id, decision, deposit_id, code_id, purpose FROM dzl.redemptions
                 WHERE id = $1 FOR UPDATE",
                &[&redemption.as_str()],
            )?;
            let (funder, decision, deposit_id, code_id, purpose): (
                String,
                Option<String>,
                String,
                String,
                String,
            ) = match row {
                Some(r) => (
                    get(&r, 0)?,
                    get(&r, 1)?,
                    get(&r, 2)?,
                    get(&r, 3)?,
                    get(&r, 4)?,
                ),
                None => return Err(StoreError::Refused(ErrorCode::RedemptionNotFound).into()),
            };
            if funder != call.actor {
                return Err(StoreError::Refused(ErrorCode::RedemptionNotFound).into());
            }
            if decision.is_some() {
                return Err(StoreError::Refused(ErrorCode::OutcomeAlreadyReported).into());
            }
            let amount = outcome.amount_fen.map(|a| a.get() as i64);
            tx.execute(
                "UPDATE dzl.redemptions SET decision = $1, amount_fen = $2, reported_at = $3
                 WHERE id = $4 AND decision IS NULL",
                &[
                    &outcome.decision.as_str(),
                    &amount,
                    &ms(call.now),
                    &redemption.as_str(),
                ],
            )?;
            meter(tx, call, "ok")?;
            append_audit(
                tx,
                vec![AuditRecord {
                    purpose: Some(purpose),
                    deposit_id: Some(deposit_id),
                    code_id: Some(code_id),
                    redemption_id: Some(redemption.to_string()),
                    detail: Some(format!("decision {}", outcome.decision.as_str())),
                    ..record(call, "ok")
                }],
            )?;
            Ok(Outcome {
                redemption_id: redemption.clone(),
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
        self.tx(|tx| {
            let mut deposits = Vec::new();
            for r in tx.query(
                "SELECT id, platform_id, external_ref, purpose, created_at, state, groups
                 FROM dzl.deposits WHERE subject_index = $1 ORDER BY created_at, id",
                &[&subject_index],
            )? {
                deposits.push(SubjectDeposit {
                    deposit_id: DepositId::from_trusted(get(&r, 0)?),
                    platform_id: TenantId::from_trusted(get(&r, 1)?),
                    external_ref: get(&r, 2)?,
                    purpose: purpose(get(&r, 3)?)?,
                    created_at: from_ms(get(&r, 4)?)?,
                    state: get(&r, 5)?,
                    groups: scopes(get(&r, 6)?)?,
                });
            }
            let mut redemptions = Vec::new();
            for r in tx.query(
                "SELECT r.id, r.deposit_id, r.funder_id, r.redeemed_at, r.purpose, r.scopes,
                        r.decision, r.amount_fen, r.reported_at
                 FROM dzl.redemptions r JOIN dzl.deposits d ON d.id = r.deposit_id
                 WHERE d.subject_index = $1 ORDER BY r.redeemed_at, r.id",
                &[&subject_index],
            )? {
                let id: String = get(&r, 0)?;
                let decision: Option<String> = get(&r, 6)?;
                let outcome = match decision {
                    Some(d) => Some(make_outcome(
                        id.clone(),
                        &d,
                        get(&r, 7)?,
                        get::<Option<i64>>(&r, 8)?.unwrap_or(0),
                    )?),
                    None => None,
                };
                redemptions.push(SubjectRedemption {
                    redemption_id: RedemptionId::from_trusted(id),
                    deposit_id: DepositId::from_trusted(get(&r, 1)?),
                    funder_id: TenantId::from_trusted(get(&r, 2)?),
                    redeemed_at: from_ms(get(&r, 3)?)?,
                    purpose: purpose(get(&r, 4)?)?,
                    scopes: scopes(get(&r, 5)?)?,
                    outcome,
                });
            }
            meter(tx, call, "ok")?;
            append_audit(
                tx,
                vec![AuditRecord {
                    detail: Some(format!(
                        "{} deposits, {} redemptions reported",
                        deposits.len(),
                        redemptions.len()
                    )),
                    ..record(call, "ok")
                }],
            )?;
            Ok(SubjectAccessResponse {
                deposits,
                redemptions,
            })
        })
    }

    fn record_refusal(&self, call: &Call, refusal: ErrorCode) -> StoreResult<()> {
        self.tx(|tx| {
            meter(tx, call, refusal.as_str())?;
            append_audit(tx, vec![record(call, refusal.as_str())])
        })
    }

    fn tenants(&self) -> StoreResult<Vec<TenantRow>> {
        self.read(|c| {
            let rows = c.query(
                &format!("SELECT {TENANT_COLUMNS} FROM dzl.tenants ORDER BY created_at, id"),
                &[],
            )?;
            Ok(rows.iter().map(tenant_row).collect::<StoreResult<_>>()?)
        })
    }

    fn add_tenant(&self, actor: &str, t: TenantRow) -> StoreResult<()> {
        self.tx(|tx| {
            lock_config(tx)?;
            ensure_wrappable(tx, t.secret.kek_version)?;
            let purposes: Vec<&str> = t.purposes.iter().map(|p| p.as_str()).collect();
            tx.execute(
                "INSERT INTO dzl.tenants (id, kind, name, key_id, secret_kek_version, secret_sealed,
                     scopes, purposes, rate_limit, state, created_at, updated_at, cert_pin)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12)",
                &[
                    &t.id.as_str(),
                    &t.kind.as_str(),
                    &t.name,
                    &t.key_id,
                    &db_version(t.secret.kek_version)?,
                    &t.secret.bytes,
                    &t.scopes.map(|s| s.to_list()),
                    &purposes.join(","),
                    &i64::from(t.rate_limit),
                    &t.state.as_str(),
                    &ms(t.created_at),
                    &t.cert_pin.as_ref().map(|p| p.to_string()),
                ],
            )?;
            bump_generation(tx)?;
            append_audit(
                tx,
                vec![AuditRecord {
                    at: at(t.created_at),
                    actor: actor.to_owned(),
                    operation: "tenant.add".into(),
                    result: "ok".into(),
                    subject_tenant: Some(t.id.to_string()),
                    groups: t.scopes.map(|s| s.to_list()),
                    detail: Some(rules::tenant_added_detail(&t)),
                    ..Default::default()
                }],
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
        self.tx(|tx| {
            lock_config(tx)?;
            let now = Utc::now();
            let row = tx.query_opt(
                "SELECT state FROM dzl.tenants WHERE id = $1 FOR UPDATE",
                &[&tenant.as_str()],
            )?;
            let current: Option<String> = row.map(|r| get(&r, 0)).transpose()?;
            match current {
                None => return Err(StoreError::Invalid(format!("no tenant {tenant}")).into()),
                Some(s) if s == state.as_str() => return Ok(false),
                Some(_) => {}
            }
            tx.execute(
                "UPDATE dzl.tenants SET state = $1, updated_at = $2 WHERE id = $3",
                &[&state.as_str(), &ms(now), &tenant.as_str()],
            )?;
            bump_generation(tx)?;
            append_audit(
                tx,
                vec![AuditRecord {
                    at: at(now),
                    actor: actor.to_owned(),
                    operation: match state {
                        TenantState::Suspended => "tenant.suspend".into(),
                        TenantState::Active => "tenant.resume".into(),
                    },
                    result: "ok".into(),
                    subject_tenant: Some(tenant.to_string()),
                    detail: Some(reason.to_owned()),
                    ..Default::default()
                }],
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
        self.tx(|tx| {
            lock_config(tx)?;
            let now = Utc::now();
            let row = tx.query_opt(
                "SELECT cert_pin FROM dzl.tenants WHERE id = $1 FOR UPDATE",
                &[&tenant.as_str()],
            )?;
            let current: Option<Option<String>> = row.map(|r| get(&r, 0)).transpose()?;
            let wanted = pin.as_ref().map(|p| p.to_string());
            match current {
                None => return Err(StoreError::Invalid(format!("no tenant {tenant}")).into()),
                Some(c) if c == wanted => return Ok(false),
                Some(_) => {}
            }
            tx.execute(
                "UPDATE dzl.tenants SET cert_pin = $1, updated_at = $2 WHERE id = $3",
                &[&wanted, &ms(now), &tenant.as_str()],
            )?;
            bump_generation(tx)?;
            append_audit(
                tx,
                vec![rules::cert_pin_audit(
                    actor.to_owned(),
                    tenant,
                    pin.as_ref(),
                    at(now),
                )],
            )?;
            Ok(true)
        })
    }

    fn rotate_tenant_secret(
        &self,
        call: &Call,
        tenant: &TenantId,
        secret: Sealed,
        previous_valid_until: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.tx(|tx| {
            lock_config(tx)?;
            ensure_wrappable(tx, secret.kek_version)?;
            let changed = tx.execute(
                "UPDATE dzl.tenants SET
                     previous_secret_kek_version = secret_kek_version,
                     previous_secret_sealed = secret_sealed,
                     previous_secret_valid_until = $1,
                     secret_kek_version = $2, secret_sealed = $3, updated_at = $4
                 WHERE id = $5",
                &[
                    &ms(previous_valid_until),
                    &db_version(secret.kek_version)?,
                    &secret.bytes,
                    &ms(call.now),
                    &tenant.as_str(),
                ],
            )?;
            if changed == 0 {
                return Err(StoreError::Invalid(format!("no tenant {tenant}")).into());
            }
            bump_generation(tx)?;
            append_audit(
                tx,
                vec![AuditRecord {
                    subject_tenant: Some(tenant.to_string()),
                    detail: Some(format!(
                        "new signing secret; the previous one is accepted until {}",
                        at(previous_valid_until)
                    )),
                    ..record(call, "ok")
                }],
            )
        })
    }

    fn kek_versions(&self) -> StoreResult<Vec<KekVersion>> {
        self.read(|c| {
            let rows = c.query(
                "SELECT version, state, wrapped FROM dzl.keks ORDER BY version",
                &[],
            )?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                let state: String = get(r, 1)?;
                out.push(KekVersion {
                    version: version_of(get(r, 0)?)?,
                    state: KekState::parse(&state).ok_or_else(|| corrupt("kek state"))?,
                    wrapped: get(r, 2)?,
                });
            }
            Ok(out)
        })
    }

    fn keks(&self) -> StoreResult<Vec<KekRow>> {
        self.read(|c| {
            let rows = c.query(
                "SELECT k.version, k.state, k.wrapped, k.created_at, k.retired_at,
                        (SELECT count(*) FROM dzl.data_keys d WHERE d.kek_version = k.version)
                      + (SELECT count(*) FROM dzl_identity.identities i
                         WHERE i.kek_version = k.version),
                        (SELECT count(*) FROM dzl.tenants t WHERE t.secret_kek_version = k.version)
                      + (SELECT count(*) FROM dzl.tenants t
                         WHERE t.previous_secret_kek_version = k.version)
                      + (SELECT count(*) FROM dzl.sealed_secrets s WHERE s.kek_version = k.version)
                 FROM dzl.keks k ORDER BY k.version",
                &[],
            )?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                let state: String = get(r, 1)?;
                out.push(KekRow {
                    version: version_of(get(r, 0)?)?,
                    state: KekState::parse(&state).ok_or_else(|| corrupt("kek state"))?,
                    wrapped: get(r, 2)?,
                    created_at: from_ms(get(r, 3)?)?,
                    retired_at: get::<Option<i64>>(r, 4)?.map(from_ms).transpose()?,
                    data_keys: count_of(get::<i64>(r, 5)?),
                    secrets: count_of(get::<i64>(r, 6)?),
                });
            }
            Ok(out)
        })
    }

    fn rotate_kek(&self, actor: &str, version: u32, wrapped: Vec<u8>) -> StoreResult<()> {
        self.tx(|tx| {
            lock_config(tx)?;
            let max: Option<i32> =
                get(&tx.query_one("SELECT max(version) FROM dzl.keks", &[])?, 0)?;
            let expected = version_of(max.unwrap_or(0))? + 1;
            if version != expected {
                return Err(StoreError::Invalid(format!(
                    "the next key version is {expected}, not {version} (another rotation ran first)"
                ))
                .into());
            }
            let now = Utc::now();
            tx.execute(
                "UPDATE dzl.keks SET state = 'decrypt_only' WHERE state = 'active'",
                &[],
            )?;
            tx.execute(
                "INSERT INTO dzl.keks (version, state, wrapped, created_at)
                 VALUES ($1, 'active', $2, $3)",
                &[&db_version(version)?, &wrapped, &ms(now)],
            )?;
            bump_generation(tx)?;
            append_audit(
                tx,
                vec![AuditRecord {
                    at: at(now),
                    actor: actor.to_owned(),
                    operation: "keys.rotate".into(),
                    result: "ok".into(),
                    detail: Some(format!("version {version} active")),
                    ..Default::default()
                }],
            )
        })
    }

    fn sealed_secret(&self, name: &str) -> StoreResult<Option<SealedSecret>> {
        self.read(|c| {
            let row = c.query_opt(
                "SELECT name, kek_version, sealed, public FROM dzl.sealed_secrets WHERE name = $1",
                &[&name],
            )?;
            Ok(row.as_ref().map(sealed_row).transpose()?)
        })
    }

    fn sealed_secrets(&self) -> StoreResult<Vec<SealedSecret>> {
        self.read(|c| {
            let rows = c.query(
                "SELECT name, kek_version, sealed, public FROM dzl.sealed_secrets ORDER BY name",
                &[],
            )?;
            Ok(rows.iter().map(sealed_row).collect::<StoreResult<_>>()?)
        })
    }

    fn receipt_keys(&self) -> StoreResult<Vec<SealedSecret>> {
        self.read(|c| {
            let rows = c.query(
                "SELECT name, kek_version, sealed, public FROM dzl.sealed_secrets
                 WHERE name LIKE 'receipt:%' ORDER BY created_at, name",
                &[],
            )?;
            Ok(rows.iter().map(sealed_row).collect::<StoreResult<_>>()?)
        })
    }

    fn initialise(&self, actor: &str, init: InitMaterial) -> StoreResult<()> {
        self.tx(|tx| {
            lock_config(tx)?;
            let n: i64 = get(&tx.query_one("SELECT count(*) FROM dzl.keks", &[])?, 0)?;
            if n > 0 {
                return Err(StoreError::Invalid("the vault is already initialised".into()).into());
            }
            let now = Utc::now();
            tx.execute(
                "INSERT INTO dzl.keks (version, state, wrapped, created_at)
                 VALUES (1, 'active', $1, $2)",
                &[&init.kek_wrapped, &ms(now)],
            )?;
            for s in &init.secrets {
                tx.execute(
                    "INSERT INTO dzl.sealed_secrets (name, kek_version, sealed, public, created_at)
                     VALUES ($1, $2, $3, $4, $5)",
                    &[
                        &s.name,
                        &db_version(s.sealed.kek_version)?,
                        &s.sealed.bytes,
                        &s.public,
                        &ms(now),
                    ],
                )?;
            }
            bump_generation(tx)?;
            append_audit(
                tx,
                vec![AuditRecord {
                    at: at(now),
                    actor: actor.to_owned(),
                    operation: "vault.init".into(),
                    result: "ok".into(),
                    detail: Some("keyring version 1 created".into()),
                    ..Default::default()
                }],
            )
        })
    }

    fn is_initialised(&self) -> StoreResult<bool> {
        self.read(|c| {
            let n: i64 = get(&c.query_one("SELECT count(*) FROM dzl.keks", &[])?, 0)?;
            Ok(n > 0)
        })
    }

    fn data_keys_on(
        &self,
        kind: DataKeyKind,
        version: u32,
        after: Option<&DepositId>,
        limit: usize,
    ) -> StoreResult<Vec<StoredDataKey>> {
        let sql = match kind {
            DataKeyKind::Records => {
                "SELECT deposit_id, wrapped FROM dzl.data_keys
                 WHERE kek_version = $1 AND deposit_id > $2 ORDER BY deposit_id LIMIT $3"
            }
            DataKeyKind::Identity => {
                "SELECT deposit_id, wrapped_key FROM dzl_identity.identities
                 WHERE kek_version = $1 AND deposit_id > $2 ORDER BY deposit_id LIMIT $3"
            }
        };
        let after = after.map(|d| d.as_str().to_owned()).unwrap_or_default();
        let v = db_version(version)?;
        self.read(|c| {
            let rows = c.query(sql, &[&v, &after, &limit_of(limit)])?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                out.push(StoredDataKey {
                    kind,
                    deposit_id: DepositId::from_trusted(get::<String>(r, 0)?),
                    wrapped: Sealed {
                        kek_version: version,
                        bytes: get(r, 1)?,
                    },
                });
            }
            Ok(out)
        })
    }

    fn rewrap_data_keys(
        &self,
        target_version: u32,
        keys: Vec<RewrappedDataKey>,
    ) -> StoreResult<u64> {
        let target = db_version(target_version)?;
        self.tx(|tx| {
            ensure_wrappable(tx, target_version)?;
            let records = tx.prepare(
                "UPDATE dzl.data_keys SET kek_version = $1, wrapped = $2
                 WHERE deposit_id = $3 AND kek_version = $4",
            )?;
            let identity = tx.prepare(
                "UPDATE dzl_identity.identities SET kek_version = $1, wrapped_key = $2
                 WHERE deposit_id = $3 AND kek_version = $4",
            )?;
            let mut changed = 0u64;
            for k in &keys {
                if k.wrapped.kek_version != target_version {
                    return Err(StoreError::Invalid(format!(
                        "a key wrapped under version {} in a rewrap onto {target_version}",
                        k.wrapped.kek_version
                    ))
                    .into());
                }
                let stmt = match k.kind {
                    DataKeyKind::Records => &records,
                    DataKeyKind::Identity => &identity,
                };
                changed += tx.execute(
                    stmt,
                    &[
                        &target,
                        &k.wrapped.bytes,
                        &k.deposit_id.as_str(),
                        &db_version(k.from_version)?,
                    ],
                )?;
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
        let target = db_version(target_version)?;
        self.tx(|tx| {
            lock_config(tx)?;
            ensure_wrappable(tx, target_version)?;
            let mut changed = 0u64;
            for s in &secrets {
                if s.sealed.kek_version != target_version {
                    return Err(StoreError::Invalid(format!(
                        "a secret sealed under version {} in a rewrap onto {target_version}",
                        s.sealed.kek_version
                    ))
                    .into());
                }
                let (sql, id) = match &s.secret {
                    SecretRef::Tenant(t) => (
                        "UPDATE dzl.tenants SET secret_kek_version = $1, secret_sealed = $2
                         WHERE id = $3 AND secret_kek_version = $4",
                        t.as_str(),
                    ),
                    SecretRef::PreviousTenant(t) => (
                        "UPDATE dzl.tenants SET previous_secret_kek_version = $1,
                             previous_secret_sealed = $2
                         WHERE id = $3 AND previous_secret_kek_version = $4",
                        t.as_str(),
                    ),
                    SecretRef::Vault(name) => (
                        "UPDATE dzl.sealed_secrets SET kek_version = $1, sealed = $2
                         WHERE name = $3 AND kek_version = $4",
                        name.as_str(),
                    ),
                };
                changed += tx.execute(
                    sql,
                    &[&target, &s.sealed.bytes, &id, &db_version(s.from_version)?],
                )?;
            }
            bump_generation(tx)?;
            append_audit(tx, vec![action(call, "ok", detail.to_owned())])?;
            Ok(changed)
        })
    }

    fn retire_kek(
        &self,
        call: &Call,
        version: u32,
    ) -> StoreResult<Result<bool, rules::RetireRefusal>> {
        let v = db_version(version)?;
        self.tx(|tx| {
            lock_config(tx)?;
            // FOR UPDATE: writers wrapping under this version hold it FOR
            // SHARE; once they commit, the count below sees their keys.
            let row = tx.query_opt(
                "SELECT state FROM dzl.keks WHERE version = $1 FOR UPDATE",
                &[&v],
            )?;
            let state = row
                .map(|r| {
                    let s: String = get(&r, 0)?;
                    KekState::parse(&s).ok_or_else(|| corrupt("kek state"))
                })
                .transpose()?;
            let usage = key_usage(tx, version, call.now)?;
            match rules::retire_decision(version, state, &usage) {
                Err(refusal) => {
                    append_audit(
                        tx,
                        vec![action(
                            call,
                            refusal.code(),
                            format!("version {version} not retired: {refusal}"),
                        )],
                    )?;
                    Ok(Err(refusal))
                }
                Ok(false) => Ok(Ok(false)),
                Ok(true) => {
                    // Previous tenant secrets past their overlap are dead;
                    // they go with the key that sealed them.
                    let dropped = tx.execute(
                        "UPDATE dzl.tenants SET previous_secret_kek_version = NULL,
                             previous_secret_sealed = NULL, previous_secret_valid_until = NULL
                         WHERE previous_secret_kek_version = $1",
                        &[&v],
                    )?;
                    tx.execute(
                        "UPDATE dzl.keks SET state = 'retired', wrapped = '\\x'::bytea,
                             retired_at = $1
                         WHERE version = $2",
                        &[&ms(call.now), &v],
                    )?;
                    bump_generation(tx)?;
                    append_audit(
                        tx,
                        vec![action(
                            call,
                            "ok",
                            format!(
                                "version {version} retired; its wrapped key deleted; \
                                 {dropped} expired previous tenant secrets dropped"
                            ),
                        )],
                    )?;
                    Ok(Ok(true))
                }
            }
        })
    }

    fn rekey_root(&self, call: &Call, keks: Vec<RekeyedKek>, detail: &str) -> StoreResult<()> {
        self.tx(|tx| {
            lock_config(tx)?;
            let stored: Vec<(u32, Vec<u8>)> = tx
                .query(
                    "SELECT version, wrapped FROM dzl.keks WHERE state <> 'retired'
                     ORDER BY version FOR UPDATE",
                    &[],
                )?
                .iter()
                .map(|r| Ok((version_of(get(r, 0)?)?, get(r, 1)?)))
                .collect::<StoreResult<_>>()?;
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
                )
                .into());
            }
            for k in &keks {
                tx.execute(
                    "UPDATE dzl.keks SET wrapped = $1 WHERE version = $2",
                    &[&k.new_wrapped, &db_version(k.version)?],
                )?;
            }
            bump_generation(tx)?;
            append_audit(tx, vec![action(call, "ok", detail.to_owned())])
        })
    }

    fn generation(&self) -> StoreResult<i64> {
        self.read(|c| {
            let row = c
                .query_opt("SELECT value FROM dzl.meta WHERE key = 'generation'", &[])?
                .ok_or_else(|| StoreError::Corrupt("the generation is missing".into()))?;
            Ok(get(&row, 0)?)
        })
    }

    fn verify_audit(
        &self,
        progress: &mut dyn FnMut(i64),
    ) -> StoreResult<Result<u64, dzl_audit::ChainError>> {
        // One snapshot, so the head and the entries agree; read in pages so
        // no statement outlives the statement timeout.
        self.snapshot(|tx| {
            let row = tx
                .query_opt("SELECT seq, hash FROM dzl.audit_head WHERE id = 1", &[])?
                .ok_or_else(|| StoreError::Corrupt("the audit head is missing".into()))?;
            let head = Head {
                seq: get(&row, 0)?,
                hash: get(&row, 1)?,
            };
            let page = tx.prepare(&format!(
                "SELECT {AUDIT_COLUMNS} FROM dzl.audit WHERE seq > $1 ORDER BY seq LIMIT $2"
            ))?;
            let mut failure: Option<postgres::Error> = None;
            let mut buffer = std::collections::VecDeque::new();
            let mut last = i64::MIN;
            let mut done = false;
            let entries = std::iter::from_fn(|| {
                if buffer.is_empty() && !done {
                    match tx.query(&page, &[&last, &AUDIT_PAGE]) {
                        Ok(rows) => {
                            done = (rows.len() as i64) < AUDIT_PAGE;
                            for r in &rows {
                                buffer.push_back(audit_row(r).map_err(|e| e.to_string()));
                            }
                            if let Some(Ok(e)) = buffer.back() {
                                last = e.seq;
                            } else if let Some(r) = rows.last() {
                                last = r.try_get(0).unwrap_or(i64::MAX);
                            }
                        }
                        Err(e) => {
                            let message = e.to_string();
                            failure = Some(e);
                            done = true;
                            return Some(Err(message));
                        }
                    }
                }
                buffer.pop_front()
            });
            let verdict = dzl_audit::verify_chain(entries, &head, &mut *progress);
            if let Some(e) = failure {
                return Err(e.into());
            }
            Ok(verdict)
        })
    }

    fn audit_head_seq(&self) -> StoreResult<i64> {
        self.read(|c| {
            let row = c
                .query_opt("SELECT seq FROM dzl.audit_head WHERE id = 1", &[])?
                .ok_or_else(|| StoreError::Corrupt("the audit head is missing".into()))?;
            Ok(get(&row, 0)?)
        })
    }

    fn audit_entries(&self, after: i64, limit: usize) -> StoreResult<Vec<AuditEntry>> {
        self.read(|c| {
            let rows = c.query(
                &format!(
                    "SELECT {AUDIT_COLUMNS} FROM dzl.audit WHERE seq > $1 ORDER BY seq LIMIT $2"
                ),
                &[&after, &limit_of(limit)],
            )?;
            Ok(rows.iter().map(audit_row).collect::<StoreResult<_>>()?)
        })
    }

    fn audit_query(&self, q: &AuditQuery) -> StoreResult<Vec<AuditEntry>> {
        let since = q.since.map(at);
        let until = q.until.map(at);
        self.read(|c| {
            let rows = c.query(
                &format!(
                    "SELECT {AUDIT_COLUMNS} FROM dzl.audit
                     WHERE seq > $1 AND ($2::text IS NULL OR at >= $2::text)
                       AND ($3::text IS NULL OR at < $3::text)
                     ORDER BY seq LIMIT $4"
                ),
                &[&q.after_seq, &since, &until, &limit_of(q.limit)],
            )?;
            Ok(rows.iter().map(audit_row).collect::<StoreResult<_>>()?)
        })
    }

    fn record_action(&self, call: &Call, result: &str, detail: &str) -> StoreResult<()> {
        self.tx(|tx| append_audit(tx, vec![action(call, result, detail.to_owned())]))
    }

    fn usage_query(&self, q: &UsageQuery) -> StoreResult<Vec<UsageRow>> {
        let day = |d: chrono::NaiveDate| d.format("%Y-%m-%d").to_string();
        let (from, to) = (q.from.map(day), q.to.map(day));
        let tenant = q.tenant.as_ref().map(|t| t.as_str().to_owned());
        self.read(|c| {
            let rows = c.query(
                "SELECT day, tenant_id, operation, outcome, calls FROM dzl.usage
                 WHERE ($1::text IS NULL OR day >= $1::text) AND ($2::text IS NULL OR day <= $2::text)
                   AND ($3::text IS NULL OR tenant_id = $3::text)
                 ORDER BY day, tenant_id, operation, outcome",
                &[&from, &to, &tenant],
            )?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                out.push(UsageRow {
                    day: get(r, 0)?,
                    tenant_id: get(r, 1)?,
                    operation: get(r, 2)?,
                    outcome: get(r, 3)?,
                    calls: count_of(get(r, 4)?),
                });
            }
            Ok(out)
        })
    }

    fn purge_preview(&self, plan: &PurgePlan) -> StoreResult<PurgeCounts> {
        let (now, cutoff) = (ms(plan.now), ms(plan.deposits_created_before));
        self.snapshot(|tx| {
            let row = tx.query_one(
                &format!(
                    "SELECT
                        (SELECT count(*) FROM dzl.codes WHERE {EXPIRABLE_CODES}),
                        (SELECT count(*) FROM dzl.deposits WHERE {}),
                        -- Expiry runs first, so only codes still in time are revoked.
                        (SELECT count(*) FROM dzl.codes WHERE state = 'issued' AND expires_at > $1
                            AND deposit_id IN (SELECT id FROM dzl.deposits WHERE {}))",
                    DEPOSITS_PAST_RETENTION.replace("$1", "$2"),
                    DEPOSITS_PAST_RETENTION.replace("$1", "$2"),
                ),
                &[&now, &cutoff],
            )?;
            Ok(PurgeCounts {
                codes_expired: count_of(get(&row, 0)?),
                deposits_shredded: count_of(get(&row, 1)?),
                codes_revoked: count_of(get(&row, 2)?),
            })
        })
    }

    fn purge(&self, call: &Call, plan: &PurgePlan, limit: usize) -> StoreResult<PurgeCounts> {
        let lim = limit_of(limit);
        self.tx(|tx| {
            let mut audit = Vec::new();
            // The outer predicate repeats the inner one, so a row changed by
            // a concurrent transaction is re-checked after its lock wait.
            let expired = tx.execute(
                &format!(
                    "UPDATE dzl.codes SET state = 'expired'
                     WHERE {EXPIRABLE_CODES} AND row IN (
                         SELECT row FROM dzl.codes WHERE {EXPIRABLE_CODES}
                         ORDER BY expires_at LIMIT $2)"
                ),
                &[&ms(plan.now), &lim],
            )?;
            let mut counts = PurgeCounts {
                codes_expired: expired,
                ..PurgeCounts::default()
            };
            if counts.codes_expired > 0 {
                audit.push(AuditRecord {
                    operation: "codes.expire".into(),
                    ..action(
                        call,
                        "ok",
                        format!(
                            "{} codes past their deadline stored as expired",
                            counts.codes_expired
                        ),
                    )
                });
            }
            if counts.codes_expired >= limit as u64 {
                // Expire every code first, so shredding revokes only codes still in time.
                append_audit(tx, audit)?;
                return Ok(counts);
            }
            let ids: Vec<String> = tx
                .query(
                    &format!(
                        "SELECT id FROM dzl.deposits WHERE {DEPOSITS_PAST_RETENTION}
                         ORDER BY created_at LIMIT $2 FOR UPDATE"
                    ),
                    &[&ms(plan.deposits_created_before), &lim],
                )?
                .iter()
                .map(|r| get(r, 0))
                .collect::<StoreResult<_>>()?;
            for id in ids {
                let dep = load_deposit(tx, &id, Lock::Update)?.ok_or_else(|| corrupt("deposit"))?;
                let revoked = shred_deposit(tx, &id, plan.now)?;
                counts.deposits_shredded += 1;
                counts.codes_revoked += revoked;
                audit.push(AuditRecord {
                    operation: "deposit.purge".into(),
                    purpose: Some(dep.purpose.as_str().into()),
                    deposit_id: Some(id.clone()),
                    subject_tenant: Some(dep.platform_id.clone()),
                    groups: Some(dep.groups.to_list()),
                    ..action(
                        call,
                        "ok",
                        format!(
                            "retention of {} days passed: data keys destroyed; {revoked} outstanding codes revoked",
                            plan.retention_days
                        ),
                    )
                });
            }
            append_audit(tx, audit)?;
            Ok(counts)
        })
    }

    fn ping(&self) -> StoreResult<()> {
        self.read(|c| {
            c.query_one(
                "SELECT (SELECT count(*) FROM dzl.meta WHERE key = 'generation')
                      + (SELECT count(*) FROM dzl_identity.identities WHERE false)",
                &[],
            )?;
            Ok(())
        })
    }
}

/// The redemption transaction. `Ok(Err(code))` is a refusal whose audit entry
/// must commit; `Err` rolls everything back.
fn redeem_in_tx(
    tx: &mut Transaction<'_>,
    call: &Call,
    attempt: &RedeemAttempt,
) -> TxResult<Result<Redeemed, ErrorCode>> {
    let refuse = |tx: &mut Transaction<'_>,
                  code: ErrorCode,
                  rec: AuditRecord|
     -> TxResult<Result<Redeemed, ErrorCode>> {
        meter(tx, call, code.as_str())?;
        append_audit(tx, vec![rec])?;
        Ok(Err(code))
    };
    let base = AuditRecord {
        purpose: Some(attempt.purpose.as_str().into()),
        ..record(call, "ok")
    };
    let c = match load_code_by_row(tx, attempt.code.row())? {
        Some(c) if attempt.code.matches(&c.secret_hash) => c,
        // Unknown row or wrong secret: a guess. Nothing about the row is recorded.
        _ => {
            let code = ErrorCode::CodeNotFound;
            return refuse(
                tx,
                code,
                AuditRecord {
                    result: code.as_str().into(),
                    ..base
                },
            );
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
        let code = ErrorCode::CodeNotFound;
        return refuse(
            tx,
            code,
            AuditRecord {
                result: code.as_str().into(),
                detail: Some("code belongs to another funder".into()),
                ..with_code
            },
        );
    }
    let funder_state: Option<String> = tx
        .query_opt(
            "SELECT state FROM dzl.tenants WHERE id = $1",
            &[&call.actor],
        )?
        .map(|r| get(&r, 0))
        .transpose()?;
    if funder_state.as_deref() != Some("active") {
        let code = ErrorCode::TenantSuspended;
        return refuse(
            tx,
            code,
            AuditRecord {
                result: code.as_str().into(),
                ..with_code
            },
        );
    }
    if let Err(code) =
        rules::redeem_decision(c.state, c.expires_at, call.now, c.purpose, attempt.purpose)
    {
        return refuse(
            tx,
            code,
            AuditRecord {
                result: code.as_str().into(),
                ..with_code
            },
        );
    }
    // The one conditional update that makes redemption exactly-once: a
    // concurrent redeemer waits for this row, re-reads it, and matches nothing.
    let won = tx.execute(
        "UPDATE dzl.codes SET state = 'redeemed', redeemed_at = $1
         WHERE row = $2 AND state = 'issued'",
        &[&ms(call.now), &c.row],
    )?;
    if won != 1 {
        // Someone else changed the code since it was read (a redemption, a
        // revocation, a purge): decide again on what they committed.
        let now_stored = load_code_by_row(tx, c.row)?
            .map(|n| n.state)
            .unwrap_or(StoredCodeState::Redeemed);
        let code = rules::redeem_decision(
            now_stored,
            c.expires_at,
            call.now,
            c.purpose,
            attempt.purpose,
        )
        .err()
        .unwrap_or(ErrorCode::CodeAlreadyRedeemed);
        return refuse(
            tx,
            code,
            AuditRecord {
                result: code.as_str().into(),
                ..with_code
            },
        );
    }
    let row = tx
        .query_opt(
            "SELECT platform_id, external_ref, consent, state FROM dzl.deposits WHERE id = $1",
            &[&c.deposit_id],
        )?
        .ok_or_else(|| StoreError::Corrupt("code without deposit".into()))?;
    let (platform_id, external_ref, consent_json, dep_state): (String, String, String, String) =
        (get(&row, 0)?, get(&row, 1)?, get(&row, 2)?, get(&row, 3)?);
    if dep_state != "active" {
        return Err(StoreError::Corrupt("issued code on an erased deposit".into()).into());
    }
    tx.execute(
        "INSERT INTO dzl.redemptions (id, code_row, code_id, deposit_id, platform_id, funder_id,
             purpose, scopes, redeemed_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            &attempt.redemption_id.as_str(),
            &c.row,
            &c.code_id,
            &c.deposit_id,
            &platform_id,
            &c.funder_id,
            &c.purpose.as_str(),
            &c.scopes.to_list(),
            &ms(call.now),
        ],
    )?;
    let identity = if c.scopes.contains(Group::Applicant) {
        let r = tx
            .query_opt(
                "SELECT kek_version, wrapped_key, envelope FROM dzl_identity.identities
                 WHERE deposit_id = $1",
                &[&c.deposit_id],
            )?
            .ok_or_else(|| StoreError::Corrupt("deposit without its identity row".into()))?;
        Some((
            Sealed {
                kek_version: version_of(get(&r, 0)?)?,
                bytes: get(&r, 1)?,
            },
            get(&r, 2)?,
        ))
    } else {
        None
    };
    let mut records = Vec::new();
    let mut records_key = None;
    if c.scopes.contains(Group::Device) || c.scopes.contains(Group::Risk) {
        let r = tx
            .query_opt(
                "SELECT kek_version, wrapped FROM dzl.data_keys WHERE deposit_id = $1",
                &[&c.deposit_id],
            )?
            .ok_or_else(|| StoreError::Corrupt("deposit without its data key".into()))?;
        records_key = Some(Sealed {
            kek_version: version_of(get(&r, 0)?)?,
            bytes: get(&r, 1)?,
        });
        for g in [Group::Device, Group::Risk] {
            if c.scopes.contains(g) {
                let r = tx
                    .query_opt(
                        "SELECT envelope FROM dzl.records WHERE deposit_id = $1 AND grp = $2",
                        &[&c.deposit_id, &g.as_str()],
                    )?
                    .ok_or_else(|| {
                        StoreError::Corrupt("granted group missing from its deposit".into())
                    })?;
                records.push((g, get(&r, 0)?));
            }
        }
    }
    meter(tx, call, "ok")?;
    append_audit(
        tx,
        vec![AuditRecord {
            redemption_id: Some(attempt.redemption_id.to_string()),
            subject_tenant: Some(platform_id.clone()),
            ..with_code
        }],
    )?;
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
