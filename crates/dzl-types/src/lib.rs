//! The shared vocabulary of dzl-vault: everything the server, the SDK and the
//! operator CLI must agree on, and nothing that does IO.
//!
//! * [`domain`]: "parse, don't validate" newtypes — a resident id number with
//!   its GB 11643 check digit, a mainland mobile phone, an IP address, a
//!   purpose, a scope set, bounded texts. Invalid input fails while
//!   deserialising, with a message that names the rule and never echoes the
//!   value.
//! * [`records`]: the three record groups (`applicant`, `device`, `risk`),
//!   strict (unknown fields are refused), matching `schemas/*.schema.json`.
//! * [`code`]: the single-use authorization code (`ac_…`).
//! * [`ids`]: the public identifiers (`ten_`, `dep_`, `cod_`, `red_`, `sub_`).
//! * [`signing`]: the request signature (HMAC-SHA256, or HMAC-SM3 at a
//!   `gm` vault; docs/api.md).
//! * [`wire`]: request and response bodies of HTTP API v1.
//! * [`error`]: the stable problem `code`s and their HTTP statuses.
//! * [`input`]: how refused input is described (pointer, value-free message).
//! * [`rules`]: what a deposit and a grant may be (consent, grants,
//!   entitlements, code lifetimes), shared by the store and the SDK.

pub mod code;
pub mod domain;
pub mod error;
pub mod ids;
pub mod input;
pub mod records;
pub mod rules;
pub mod signing;
pub mod wire;

pub use code::AuthCode;
pub use domain::{Group, IdType, Purpose, ScopeSet};
pub use error::ErrorCode;
pub use ids::{CodeId, DepositId, RedemptionId, SubjectRef, TenantId};
pub use records::{Applicant, Device, Risk};
