//! The store's conformance suite (`dzl_store::conformance`) on
//! PostgreSQL: each test on a fresh database, each of its stores a replica
//! with an audit chain of its own. Without `DZL_TEST_PG_URL` every test
//! says SKIPPED on stderr and returns.

mod common;

dzl_store::store_conformance_suite!(common::postgres(), several_chains);
