//! The SQL of `keys reseal`: finding the deposits of another suite than
//! the vault's, reading one's seal again under lock, and replacing it. A
//! deposit is filed for subject access by the indexed `subject_index` of
//! its own row, so its filing has no run and deposits are walked in id
//! order.

use std::ops::DerefMut;

use dzl_store::tx::{DepositState, Lock};
use dzl_store::{
    DepositSeal, Filing, ResealedDeposit, Sealed, SealedDeposit, SealedRecords, StoreResult, Suite,
};
use dzl_types::{DepositId, TenantId};
use postgres::{Client, Row};

use super::{corrupt, count_of, db_version, get, limit_of, rows, suite, version_of, PgConn};

/// A wrapped key from its version and bytes columns (both NULL: no row).
fn sealed(r: &Row, version: usize, bytes: usize) -> StoreResult<Option<Sealed>> {
    get::<Option<i32>>(r, version)?
        .map(|v| {
            Ok(Sealed {
                kek_version: version_of(v)?,
                bytes: get(r, bytes)?,
            })
        })
        .transpose()
}

pub(super) fn deposit_suites<C: DerefMut<Target = Client>>(
    c: &mut PgConn<C>,
) -> StoreResult<Vec<(Suite, u64)>> {
    let found = c.query(
        "SELECT suite, count(*) FROM dzl.deposits WHERE state = 'active'
         GROUP BY suite ORDER BY suite",
        &[],
    )?;
    rows(found, |r| Ok((suite(get(r, 0)?)?, count_of(get(r, 1)?))))
}

pub(super) fn deposits_to_reseal<C: DerefMut<Target = Client>>(
    c: &mut PgConn<C>,
    to: Suite,
    after: Option<&Filing>,
    limit: usize,
) -> StoreResult<Vec<SealedDeposit>> {
    let after = after.map_or("", |f| f.deposit_id.as_str());
    let found = c.query(
        "SELECT d.subject_index, d.id, d.suite, d.platform_id,
                r.kek_version, r.wrapped_key, r.device, r.risk,
                i.kek_version, i.wrapped_key, i.envelope
         FROM dzl.deposits d
         LEFT JOIN dzl.deposit_records r ON r.deposit_id = d.id
         LEFT JOIN dzl_identity.identities i ON i.deposit_id = d.id
         WHERE d.id > $1 AND d.state = 'active' AND d.suite <> $2
         ORDER BY d.id LIMIT $3",
        &[&after, &to.as_str(), &limit_of(limit)],
    )?;
    rows(found, |r| {
        let records = sealed(r, 4, 5)?
            .map(|key| {
                Ok::<_, dzl_store::StoreError>(SealedRecords {
                    key,
                    device: get(r, 6)?,
                    risk: get(r, 7)?,
                })
            })
            .transpose()?;
        let identity = sealed(r, 8, 9)?
            .map(|key| Ok::<_, dzl_store::StoreError>((key, get(r, 10)?)))
            .transpose()?;
        Ok(SealedDeposit {
            filing: Filing {
                run: 0,
                subject_index: get(r, 0)?,
                deposit_id: DepositId::from_trusted(get::<String>(r, 1)?),
            },
            suite: suite(get(r, 2)?)?,
            platform_id: TenantId::from_trusted(get::<String>(r, 3)?),
            records,
            identity,
        })
    })
}

pub(super) fn deposit_seal<C: DerefMut<Target = Client>>(
    c: &mut PgConn<C>,
    id: &DepositId,
    lock: Lock,
) -> StoreResult<Option<DepositSeal>> {
    // The deposit's row is the one locked: an erasure locks it too.
    let sql = format!(
        "SELECT d.state, d.suite, r.kek_version, r.wrapped_key, i.kek_version, i.wrapped_key
         FROM dzl.deposits d
         LEFT JOIN dzl.deposit_records r ON r.deposit_id = d.id
         LEFT JOIN dzl_identity.identities i ON i.deposit_id = d.id
         WHERE d.id = $1{}",
        match lock {
            Lock::None => "",
            Lock::Share => " FOR SHARE OF d",
            Lock::Update => " FOR UPDATE OF d",
        }
    );
    c.opt(&sql, &[&id.as_str()])?
        .map(|r| {
            Ok(DepositSeal {
                state: DepositState::parse(get(&r, 0)?).ok_or_else(|| corrupt("deposit state"))?,
                suite: suite(get(&r, 1)?)?,
                records_key: sealed(&r, 2, 3)?,
                identity_key: sealed(&r, 4, 5)?,
            })
        })
        .transpose()
}

pub(super) fn replace_seal<C: DerefMut<Target = Client>>(
    c: &mut PgConn<C>,
    d: &ResealedDeposit,
) -> StoreResult<()> {
    let id = d.read.filing.deposit_id.as_str();
    let (identity_key, identity) = &d.identity;
    let records = d.records.as_ref();
    // One statement; the records row is left alone when the deposit has none.
    c.one(
        "WITH d AS (
             UPDATE dzl.deposits SET suite = $2, subject_index = $3, subject_ref = $4
             WHERE id = $1
         ), r AS (
             UPDATE dzl.deposit_records SET kek_version = $5, wrapped_key = $6, device = $7,
                 risk = $8
             WHERE deposit_id = $1 AND $9
         ), i AS (
             UPDATE dzl_identity.identities SET kek_version = $10, wrapped_key = $11,
                 envelope = $12
             WHERE deposit_id = $1
         )
         SELECT 1",
        &[
            &id,
            &d.suite.as_str(),
            &d.subject_index,
            &d.subject_ref.as_str(),
            &records.map_or(Ok(0), |r| db_version(r.key.kek_version))?,
            &records.map(|r| r.key.bytes.as_slice()),
            &records.and_then(|r| r.device.as_deref()),
            &records.and_then(|r| r.risk.as_deref()),
            &records.is_some(),
            &db_version(identity_key.kek_version)?,
            &identity_key.bytes,
            identity,
        ],
    )?;
    Ok(())
}
