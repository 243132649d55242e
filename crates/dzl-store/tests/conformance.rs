//! The store's conformance suite (`dzl_store::conformance`) on the
//! embedded SQLite backend.

mod common;

dzl_store::store_conformance_suite!(common::sqlite());
