//! Subject access: everything the vault holds about one data subject — the
//! deposits filed under their blind index and every redemption of them —
//! for an operator answering the subject.

use dzl_types::wire::{Outcome, SubjectAccessResponse, SubjectDeposit, SubjectRedemption};

use crate::tx::Tx;
use crate::StoreResult;

/// The report, read from one snapshot: deposits by creation time, and
/// every redemption of them by redemption time. A subject has one blind
/// index per suite, and a vault that has changed suite holds deposits
/// filed under either (an erased one keeps the index it had): every
/// deposit filed under any of `subject_indexes` is reported, once.
pub fn report(tx: &mut dyn Tx, subject_indexes: &[String]) -> StoreResult<SubjectAccessResponse> {
    let mut deposits = Vec::new();
    let mut redemptions = Vec::new();
    let mut found = Vec::new();
    for index in subject_indexes {
        found.extend(tx.subject_deposits(index)?);
    }
    let mut seen = std::collections::HashSet::new();
    found.retain(|d| seen.insert(d.id.clone()));
    for d in found {
        for r in tx.deposit_redemptions(&d.id)? {
            redemptions.push(SubjectRedemption {
                outcome: r.outcome.map(|o| Outcome {
                    redemption_id: r.id.clone(),
                    decision: o.decision,
                    amount_fen: o.amount_fen,
                    reported_at: o.reported_at,
                }),
                redemption_id: r.id,
                deposit_id: d.id.clone(),
                funder_id: r.funder_id,
                redeemed_at: r.redeemed_at,
                purpose: r.purpose,
                scopes: r.scopes,
            });
        }
        deposits.push(SubjectDeposit {
            deposit_id: d.id,
            platform_id: d.platform_id,
            external_ref: d.external_ref,
            purpose: d.purpose,
            created_at: d.created_at,
            state: d.state.as_str().into(),
            groups: d.groups,
        });
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
