//! The Rust client of dzl-vault, the credit bureau's authorization-code
//! vault (信息层断直连), for both sides of a loan application and the
//! bureau's operators:
//!
//! * [`PlatformClient`] (资产方): [`deposit`](PlatformClient::deposit) an
//!   applicant's data with consent and get single-use codes (授权码),
//!   [`issue_code`](PlatformClient::issue_code),
//!   [`code_status`](PlatformClient::code_status),
//!   [`revoke_code`](PlatformClient::revoke_code),
//!   [`erase_deposit`](PlatformClient::erase_deposit).
//! * [`FunderClient`] (资金方): [`redeem`](FunderClient::redeem) a code once
//!   for typed [`Applicant`](types::Applicant), [`Device`](types::Device) and
//!   [`Risk`](types::Risk) groups with the consent and a signed receipt,
//!   [`verify_receipt`](FunderClient::verify_receipt),
//!   [`report_outcome`](FunderClient::report_outcome).
//! * [`OperatorClient`], for the bureau:
//!   [`subject_access`](OperatorClient::subject_access).
//!
//! Requests are signed as docs/api.md specifies, with the vault's suite
//! ([`Signer`]): HMAC-SHA256 at
//! an `intl` vault, HMAC-SM3 at a `gm` (国密) vault, the suite told to the
//! builder ([`VaultBuilder::suite`]) or learned from `GET /v1/receipt-keys`
//! ([`Vault::suite`]). Receipts are verified with the algorithm their key
//! is published with: Ed25519, or SM2 over SM3. Deposits are
//! built with [`Deposit::builder`], which refuses what the vault would
//! refuse, with the vault's own types. Failures are one [`Error`] enum whose
//! variants are the vault's problem codes. Idempotent calls are retried on
//! transport failures, `429` and `503` ([`RetryPolicy`]); `deposit` and
//! `redeem` never blindly.
//!
//! The clients are async (any tokio runtime). With the `blocking` feature,
//! [`blocking`] has the same API for callers without a runtime.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use dzl_sdk::{Signer, Vault};
//! use dzl_sdk::types::Purpose;
//!
//! let vault = Vault::new("http://127.0.0.1:8080")?;
//! let funder = vault.funder(Signer::new("k_…", "…secret…"));
//! let redemption = funder.redeem("ac_…", Purpose::CreditApplication).await?;
//! funder.verify_receipt(&redemption).await?;
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

mod builder;
mod client;
mod error;
mod ops;
mod raw;
mod redemption;
mod signer;

#[cfg(feature = "blocking")]
pub mod blocking;

pub use builder::{
    ApplicantBuilder, ConsentBuilder, Deposit, DepositBuilder, DeviceBuilder, IntoGroup,
    RiskBuilder,
};
pub use client::{FunderClient, OperatorClient, PlatformClient, Vault, VaultBuilder};
pub use error::{BuildError, Error, RawBody, ReceiptError, TransportError};
pub use ops::{RetryPolicy, DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT};
pub use raw::{RawClient, RawResponse};
pub use redemption::{verify_receipt, DecodeError, Redemption, VerifiedReceipt};
pub use signer::{fresh_nonce, SignedHeaders, Signer};

pub use chrono;
/// The vault's cipher suite (`intl` or `gm`).
pub use dzl_crypto::Suite;
pub use dzl_types;

/// The vault's vocabulary, re-exported from the shared types crate: ids,
/// groups and records, and the wire types the clients return.
pub mod types {
    pub use dzl_types::records::{
        Education, FeatureName, Gender, Grade, IdNumber, MaritalStatus, Name, Network, Os, Score,
        Tag,
    };
    pub use dzl_types::wire::{
        CodeState, CodeStatus, Consent, Decision, DepositRequest, DepositResponse, IssuedCode,
        Outcome, Receipt, ReceiptBody, ReceiptKey, SubjectAccessResponse, SubjectDeposit,
        SubjectRedemption,
    };
    pub use dzl_types::{
        Applicant, CodeId, DepositId, Device, ErrorCode, Group, IdType, Purpose, RedemptionId,
        Risk, ScopeSet, SubjectRef, TenantId,
    };
}
