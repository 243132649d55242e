//! Black-box tests of HTTP API v1: a real server on port 0 over a fresh
//! temporary store, driven through the SDK's signer (and, in `binary`, the
//! real `dzl-vault` binary).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod auth;
mod binary;
#[path = "../common/mod.rs"]
mod common;
mod contract;
mod flow;
mod helpers;
mod hostile;
mod input;
mod keys;
mod matrix;
mod pii;
mod redemption;
mod replicas;
mod restart;
mod tls;
