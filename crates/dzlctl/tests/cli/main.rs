//! Black-box tests of the `dzlctl` binary: each test runs the real binary on
//! its own temporary data directory and root key file, with every `DZL…`
//! variable of the test's own environment removed, and checks exit codes,
//! stdout (one JSON document with `--json`), stderr, and — with the real
//! server running in-process over the same directory — that the vault keeps
//! serving correctly while operators work on it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod audit;
mod basics;
mod helpers;
mod hsm;
mod keys;
mod postgres;
mod purge;
mod secrets;
mod suites;
mod usage;
