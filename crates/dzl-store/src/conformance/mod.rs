//! Test support: the one conformance suite every backend of [`crate::Store`]
//! passes. Compiled only with the `conformance` feature, which the
//! backends' dev-dependencies enable; the vault itself never links it.
//!
//! A backend is tested by a [`Factory`] over fresh backing data (a data
//! directory, a database): it opens stores on that data — the first, and
//! others beside it (another replica over PostgreSQL; another process's
//! store over SQLite, as `dzlctl` beside the server) — and gives a
//! [`Backdoor`], what someone with write access to the database can do
//! with SQL. [`store_conformance_suite!`](crate::store_conformance_suite)
//! expands every test of the suite into a `#[test]` for one factory:
//!
//! ```text
//! dzl_store::store_conformance_suite!(my_backend::fresh_factory());
//! // or, for a backend whose every store has an audit chain of its own:
//! dzl_store::store_conformance_suite!(my_backend::fresh_factory(), several_chains);
//! ```
//!
//! where `fresh_factory()` returns `Option<impl Factory>`: `None` skips the
//! test (the factory says so on stderr, e.g. without a database to test
//! against).
//!
//! The tests are grouped by what they cover: [`store`] (the operator
//! lifecycle and the request path), [`audit`] (the chains and what
//! tampering with them shows), [`replicas`] (several stores on one backing
//! store, and what survives a restart), [`tamper`] (stored ciphertext and
//! wrapped keys), [`model`] (exactly-once redemption against a model),
//! [`suites`] (a `gm` vault, a change of suite, and `keys reseal`).
//! [`fixture`] holds what they share.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod audit;
pub mod fixture;
pub mod model;
pub mod replicas;
pub mod store;
pub mod suites;
pub mod tamper;

use dzl_audit::{AuditEntry, Head};
use dzl_types::{DepositId, TenantId};

use crate::tx::ChainId;
use crate::{Backend, Vault};

pub use fixture::Fixture;

/// A backend under test, over one set of fresh backing data.
pub trait Factory: Send + Sync + Sized + 'static {
    /// The backend.
    type Backend: Backend;

    /// Opens a store on the backing data; called again, another store
    /// beside the open ones, or the same data again after a close.
    /// Panics if it cannot (test support).
    fn open(&self) -> Vault<Self::Backend>;

    /// Raw access to the backing data, past the store.
    fn backdoor(&self) -> Box<dyn Backdoor>;

    /// Whether each open store appends to an audit chain of its own
    /// (PostgreSQL's writers), rather than all to chain 1 (SQLite's one
    /// write lock orders every writer).
    fn chain_per_store(&self) -> bool;
}

/// One stored ciphertext, wrapped key or sealed secret.
#[derive(Debug, Clone, Copy)]
pub enum Blob<'a> {
    /// A deposit's sealed `risk` group.
    Risk(&'a DepositId),
    /// The wrapped data key of a deposit's non-identity groups.
    RecordsKey(&'a DepositId),
    /// A deposit's sealed `applicant` group.
    Identity(&'a DepositId),
    /// The wrapped data key of a deposit's `applicant` group.
    IdentityKey(&'a DepositId),
    /// A KEK version, wrapped by the root key.
    Kek(u32),
    /// A sealed vault secret, by name.
    VaultSecret(&'a str),
    /// A tenant's sealed signing secret.
    TenantSecret(&'a TenantId),
}

impl Blob<'_> {
    /// Where it is stored: the table (unqualified; `identities` is the
    /// identity store's), the column, the key column and the key.
    pub fn location(&self) -> (&'static str, &'static str, &'static str, String) {
        match *self {
            Blob::Risk(d) => ("deposit_records", "risk", "deposit_id", d.to_string()),
            Blob::RecordsKey(d) => (
                "deposit_records",
                "wrapped_key",
                "deposit_id",
                d.to_string(),
            ),
            Blob::Identity(d) => ("identities", "envelope", "deposit_id", d.to_string()),
            Blob::IdentityKey(d) => ("identities", "wrapped_key", "deposit_id", d.to_string()),
            Blob::Kek(v) => ("keks", "wrapped", "version", v.to_string()),
            Blob::VaultSecret(name) => ("sealed_secrets", "sealed", "name", name.to_owned()),
            Blob::TenantSecret(t) => ("tenants", "secret_sealed", "id", t.to_string()),
        }
    }
}

/// The rows a deposit has, as counted in the database.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DepositRows {
    /// Its row in `deposits`.
    pub deposits: u64,
    /// What files it under its subject index (SQLite: its
    /// `deposit_subjects` row; PostgreSQL: its `deposits` row holds the
    /// indexed `subject_index`).
    pub subject_filings: u64,
    /// Its `deposit_records` row: the data key and the non-identity groups.
    pub records: u64,
    /// Its row in the identity store.
    pub identities: u64,
    /// Its codes.
    pub codes: u64,
    /// Its redemptions.
    pub redemptions: u64,
}

/// What someone with write access to the database can do: change the
/// audit trail past its append-only guard (the guard is put back after
/// each change), and read and overwrite stored bytes. Panics on failure
/// (test support).
pub trait Backdoor {
    /// Sets the `actor` of entry `seq` of `chain`, leaving its hash.
    fn alter_entry(&mut self, chain: ChainId, seq: i64, actor: &str);
    /// Sets the stored hash name (`alg`) of entry `seq` of `chain`
    /// (`None`: SHA-256), leaving its hash.
    fn set_entry_alg(&mut self, chain: ChainId, seq: i64, alg: Option<&str>);
    /// Deletes entry `seq` of `chain`.
    fn delete_entry(&mut self, chain: ChainId, seq: i64);
    /// Swaps the places (seqs) of entries `a` and `b` of `chain`.
    fn swap_entries(&mut self, chain: ChainId, a: i64, b: i64);
    /// Deletes every entry of `chain` after `seq`.
    fn cut_after(&mut self, chain: ChainId, seq: i64);
    /// Sets `chain`'s recorded head, or (`None`) deletes it.
    fn set_head(&mut self, chain: ChainId, head: Option<&Head>);
    /// Inserts entries as they are (their chain, seq and hashes), leaving
    /// the heads.
    fn insert_entries(&mut self, entries: &[AuditEntry]);
    /// Tries to update, delete (and truncate, where the database has it)
    /// the audit trail with its guard in place: each statement and what
    /// the database answered.
    fn try_changing_the_trail(&mut self) -> Vec<(String, Result<(), String>)>;
    /// Counts a deposit's rows.
    fn deposit_rows(&mut self, deposit: &DepositId) -> DepositRows;
    /// Reads a stored blob.
    fn blob(&mut self, blob: Blob<'_>) -> Vec<u8>;
    /// Overwrites a stored blob.
    fn set_blob(&mut self, blob: Blob<'_>, bytes: &[u8]);
}

/// Expands every test of the conformance suite into a `#[test]` over the
/// factory `$fresh` (an expression of type `Option<impl Factory>`,
/// evaluated afresh by each test; `None` skips it). With `several_chains`
/// (a backend whose stores append to chains of their own), also the tests
/// of what only such a trail holds: chain announcements, and where a
/// forged chain could hide.
#[macro_export]
macro_rules! store_conformance_suite {
    ($fresh:expr) => {
        $crate::store_conformance_suite!(@tests $fresh;
            store::init_then_tenants_and_a_verifiable_audit_chain,
            store::a_wrong_root_key_does_not_open_the_keyring,
            store::rotation_keeps_old_versions_and_another_store_sees_it,
            store::a_deposit_redeems_once_with_real_sealed_groups,
            store::a_deposit_writes_its_rows_and_a_failed_job_leaves_none,
            store::a_duplicate_external_ref_is_refused_and_stores_nothing,
            store::revocation_and_erasure_stop_redemption,
            store::refused_cross_tenant_operations_are_audited_with_the_object,
            store::purge_in_small_steps_does_what_the_rules_and_the_preview_say,
            store::retire_counts_live_previous_secrets_and_drops_dead_ones,
            store::rewrap_moves_every_key_and_the_vault_still_opens,
            store::a_rekey_against_a_changed_keyring_changes_nothing,
            store::audit_and_usage_queries_filter,
            audit::the_trail_refuses_plain_updates_and_deletes,
            audit::an_intact_trail_of_several_writers_verifies_and_reads_whole,
            audit::an_altered_entry_is_found,
            audit::a_deleted_entry_is_found,
            audit::reordered_entries_are_found,
            audit::a_tail_cut_below_its_head_is_found,
            audit::a_chain_cut_with_its_head_deleted_is_found,
            audit::a_removed_chain_is_found,
            audit::a_long_chain_verifies_page_by_page,
            replicas::exactly_one_of_32_concurrent_redemptions_across_two_stores_wins,
            replicas::concurrent_writes_from_two_stores_keep_every_chain_valid,
            replicas::a_suspension_by_one_store_stops_redemption_on_the_other,
            replicas::usage_is_counted_once_summed_over_writers,
            replicas::guessing_is_throttled_then_suspended_across_stores_and_restarts,
            replicas::nonces_are_shared_by_stores_and_survive_a_restart,
            tamper::an_untampered_deposit_opens_and_no_single_byte_flip_of_it_does,
            tamper::a_flipped_byte_in_a_stored_ciphertext_or_data_key_never_opens,
            tamper::a_flipped_byte_in_a_kek_or_a_sealed_secret_never_opens,
            model::codes_redeem_exactly_once_and_statuses_follow_the_model,
            suites::a_gm_vault_seals_and_chains_in_gm,
            suites::a_vault_rotated_to_the_other_suite_follows_it_at_once,
            suites::a_reseal_moves_every_deposit_and_the_old_suite_retires,
            suites::a_reseal_leaves_alone_a_deposit_changed_since_it_was_read,
            suites::a_reseal_runs_while_another_store_redeems_and_erases,
        );
    };
    ($fresh:expr, several_chains) => {
        $crate::store_conformance_suite!($fresh);
        $crate::store_conformance_suite!(@tests $fresh;
            audit::a_root_chain_rewound_past_an_announcement_is_found,
            audit::a_chain_nobody_announced_is_found,
        );
    };
    (@tests $fresh:expr; $($module:ident :: $name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                if let Some(factory) = $fresh {
                    $crate::conformance::$module::$name(factory);
                }
            }
        )*
    };
}
