//! Request guards that must survive a restart of the server: nonces of
//! requests signed ahead of the server's clock (a request signed at or
//! before the server's start is refused anyway, so only these could be
//! replayed after a restart). The failed-redemption windows live with the
//! redemptions ([`super::redeem`]).

use crate::writer::Txn;
use crate::StoreResult;

/// Records a nonce until `until` (unix seconds); false if it was recorded.
/// Expired nonces are swept in the same transaction.
pub fn remember_nonce(
    txn: &mut Txn<'_>,
    key_id: &str,
    nonce: &str,
    until: i64,
    now: i64,
) -> StoreResult<bool> {
    txn.write().sweep_nonces(now)?;
    txn.write().insert_nonce(key_id, nonce, until)
}
