//! Fixture shared by the store's integration tests.
#![allow(dead_code)]

use dzl_crypto::Keyring;
use dzl_store::admin::{self, NewTenant};
use dzl_store::{Store, TenantKind};
use dzl_types::TenantId;

/// Adds one tenant per `(kind, name)` with default entitlements; their ids in order.
pub fn tenants(
    store: &dyn Store,
    keyring: &Keyring,
    kinds: &[(TenantKind, &str)],
) -> Vec<TenantId> {
    kinds
        .iter()
        .map(|(kind, name)| {
            admin::add_tenant(store, keyring, "test", NewTenant::new(*kind, *name))
                .expect("tenant")
                .tenant_id
        })
        .collect()
}
