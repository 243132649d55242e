//! The SDK against a real vault (port 0, temporary store): every method of
//! every client, async and blocking; every error variant the vault can be
//! made to answer; the signing vectors; receipt verification; and the retry
//! rules against a scripted server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod blocking;
mod builder;
mod errors;
mod flow;
mod helpers;
mod receipts;
mod retry;
mod signing;
