//! Black-box tests of the `dzl-crypto` public API, in one test binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod envelope;
mod gm;
mod helpers;
mod ids;
mod keyring;
mod receipts;
mod records;
mod sm2_receipts;
