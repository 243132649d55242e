//! Request and response bodies of HTTP API v1 (docs/api.md). Requests are
//! strict (`deny_unknown_fields`); every field is a checked newtype, so a
//! body that deserialises is a body the vault can act on.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::domain::{check_ascii, IdType, Invalid, Purpose, ScopeSet};
use crate::ids::{CodeId, DepositId, RedemptionId, SubjectRef, TenantId};
use crate::records::{Applicant, Device, Risk, MAX_FEN};

/// An opaque printable-ASCII reference of 1–64 characters (external_ref, consent_id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Reference(String);

impl Reference {
    /// Parses a reference.
    pub fn parse(s: String) -> Result<Self, Invalid> {
        check_ascii(&s, 1, 64, false)?;
        Ok(Reference(s))
    }
    /// The reference.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Reference {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Reference::parse(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// SHA-256 of the signed consent text: 64 lowercase hex characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Sha256Hex(String);

impl<'de> Deserialize<'de> for Sha256Hex {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.len() == 64
            && s.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        {
            Ok(Sha256Hex(s))
        } else {
            Err(serde::de::Error::custom(Invalid(
                "evidence_sha256 must be 64 lowercase hex characters",
            )))
        }
    }
}

/// The applicant's consent, as the platform recorded it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Consent {
    /// The platform's id of the consent record.
    pub consent_id: Reference,
    /// When the applicant consented.
    pub granted_at: DateTime<Utc>,
    /// Until when the consent holds.
    pub expires_at: DateTime<Utc>,
    /// The groups consented to.
    pub scopes: ScopeSet,
    /// SHA-256 of the signed consent text.
    pub evidence_sha256: Sha256Hex,
}

/// Longest code lifetime any request may ask for (30 days); the vault's
/// configured maximum may be lower.
pub const MAX_TTL_SECONDS: u32 = 30 * 24 * 3600;

/// A request for a code for one funder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// The funder.
    pub funder_id: TenantId,
    /// The groups it may redeem.
    pub scopes: ScopeSet,
    /// Lifetime in seconds; the vault's default when absent.
    #[serde(
        default,
        deserialize_with = "crate::domain::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub ttl_seconds: Option<u32>,
}

/// At most this many grants in one deposit.
pub const MAX_GRANTS: usize = 16;

/// `POST /v1/deposits`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepositRequest {
    /// The platform's own reference, unique per platform.
    pub external_ref: Reference,
    /// Why the data is collected.
    pub purpose: Purpose,
    /// The applicant's consent.
    pub consent: Consent,
    /// Identity group (required).
    pub applicant: Applicant,
    /// Device group.
    #[serde(
        default,
        deserialize_with = "crate::domain::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub device: Option<Device>,
    /// Risk group.
    #[serde(
        default,
        deserialize_with = "crate::domain::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub risk: Option<Risk>,
    /// Codes to issue now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<Grant>,
}

impl DepositRequest {
    /// The groups this deposit carries (`applicant` always).
    pub fn groups(&self) -> ScopeSet {
        use crate::domain::Group;
        let mut g = ScopeSet::single(Group::Applicant);
        if self.device.is_some() {
            g = g.with(Group::Device);
        }
        if self.risk.is_some() {
            g = g.with(Group::Risk);
        }
        g
    }
}

/// An issued code, returned once.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct IssuedCode {
    /// The bearer code (`ac_…`), shown once and never stored in the clear.
    pub code: String,
    /// Its public id, for status and revocation.
    pub code_id: CodeId,
    /// The funder that may redeem it.
    pub funder_id: TenantId,
    /// The groups it releases.
    pub scopes: ScopeSet,
    /// The purpose it is bound to.
    pub purpose: Purpose,
    /// When it stops redeeming.
    pub expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for IssuedCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCode")
            .field("code_id", &self.code_id)
            .field("funder_id", &self.funder_id)
            .finish_non_exhaustive()
    }
}

/// `201` of `POST /v1/deposits`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DepositResponse {
    /// The deposit.
    pub deposit_id: DepositId,
    /// A pseudonym of the data subject, stable per platform.
    pub subject_ref: SubjectRef,
    /// One code per grant.
    pub codes: Vec<IssuedCode>,
}

/// `POST /v1/deposits/{deposit_id}/codes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueCodeRequest {
    /// The funder.
    pub funder_id: TenantId,
    /// The groups it may redeem.
    pub scopes: ScopeSet,
    /// Lifetime in seconds.
    #[serde(
        default,
        deserialize_with = "crate::domain::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub ttl_seconds: Option<u32>,
}

/// A code's life cycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeState {
    /// Redeemable.
    Issued,
    /// Redeemed once; never again.
    Redeemed,
    /// Past its deadline.
    Expired,
    /// Revoked by the platform, or its deposit erased.
    Revoked,
}

crate::domain::wire_enum!(CodeState {
    Issued => "issued",
    Redeemed => "redeemed",
    Expired => "expired",
    Revoked => "revoked",
});

/// The funder's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Credit granted / drawdown paid.
    Approved,
    /// Refused.
    Declined,
    /// The applicant withdrew.
    Withdrawn,
}

crate::domain::wire_enum!(Decision {
    Approved => "approved",
    Declined => "declined",
    Withdrawn => "withdrawn",
});

impl Decision {
    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "approved" => Some(Decision::Approved),
            "declined" => Some(Decision::Declined),
            "withdrawn" => Some(Decision::Withdrawn),
            _ => None,
        }
    }
}

/// An amount in fen, 0..=10^12.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct AmountFen(u64);

impl AmountFen {
    /// Parses an amount.
    pub fn new(v: u64) -> Result<Self, Invalid> {
        if v <= MAX_FEN {
            Ok(AmountFen(v))
        } else {
            Err(Invalid("amount_fen must be 0..=10^12"))
        }
    }
    /// The value.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl<'de> Deserialize<'de> for AmountFen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        AmountFen::new(u64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// `POST /v1/redemptions/{redemption_id}/outcome`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutcomeRequest {
    /// The decision.
    pub decision: Decision,
    /// The amount granted or drawn, in fen.
    #[serde(
        default,
        deserialize_with = "crate::domain::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub amount_fen: Option<AmountFen>,
}

/// A reported outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The redemption it concerns.
    pub redemption_id: RedemptionId,
    /// The decision.
    pub decision: Decision,
    /// The amount, if any.
    pub amount_fen: Option<u64>,
    /// When it was reported.
    pub reported_at: DateTime<Utc>,
}

/// `GET /v1/codes/{code_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CodeStatus {
    /// The code's id.
    pub code_id: CodeId,
    /// Its deposit.
    pub deposit_id: DepositId,
    /// Its state now.
    pub state: CodeState,
    /// The funder it is bound to.
    pub funder_id: TenantId,
    /// The groups it releases.
    pub scopes: ScopeSet,
    /// The purpose it is bound to.
    pub purpose: Purpose,
    /// Its deadline.
    pub expires_at: DateTime<Utc>,
    /// When it was redeemed.
    pub redeemed_at: Option<DateTime<Utc>>,
    /// The funder's reported outcome.
    pub outcome: Option<Outcome>,
}

/// `POST /v1/redemptions`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedemptionRequest {
    /// The bearer code (parsed by the server; kept as text here so a
    /// malformed code is indistinguishable from an unknown one).
    pub code: String,
    /// The purpose the funder redeems for.
    pub purpose: Purpose,
}

impl std::fmt::Debug for RedemptionRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedemptionRequest")
            .field("purpose", &self.purpose)
            .finish_non_exhaustive()
    }
}

/// The vault's signed receipt of a redemption.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// Which receipt key signed it.
    pub key_id: String,
    /// The exact UTF-8 text that was signed (RFC 8785 canonical JSON).
    pub signed: String,
    /// Ed25519 signature, base64url without padding.
    pub signature: String,
}

/// What a receipt's `signed` text contains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptBody {
    /// Format version, 1.
    pub v: u32,
    /// The redemption.
    pub redemption_id: RedemptionId,
    /// The code redeemed.
    pub code_id: CodeId,
    /// Who redeemed it.
    pub funder_id: TenantId,
    /// Whose data.
    pub deposit_id: DepositId,
    /// The groups released.
    pub scopes: ScopeSet,
    /// Lowercase hex SHA-256 of the released `{group: fields}` object in RFC 8785 JSON.
    pub groups_sha256: String,
    /// When.
    pub redeemed_at: DateTime<Utc>,
}

/// `200` of `POST /v1/redemptions`. The groups are raw JSON exactly as
/// stored, so nothing is re-encoded on the way out.
#[derive(Serialize, Deserialize)]
pub struct RedemptionResponse {
    /// The redemption.
    pub redemption_id: RedemptionId,
    /// The deposit.
    pub deposit_id: DepositId,
    /// The platform that deposited.
    pub platform_id: TenantId,
    /// The platform's reference.
    pub external_ref: String,
    /// The purpose.
    pub purpose: Purpose,
    /// The consent the deposit came with.
    pub consent: Consent,
    /// The groups released.
    pub scopes: ScopeSet,
    /// Identity group, if granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applicant: Option<Box<RawValue>>,
    /// Device group, if granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<Box<RawValue>>,
    /// Risk group, if granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk: Option<Box<RawValue>>,
    /// When.
    pub redeemed_at: DateTime<Utc>,
    /// The vault's signature over what was released.
    pub receipt: Receipt,
}

impl std::fmt::Debug for RedemptionResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedemptionResponse")
            .field("redemption_id", &self.redemption_id)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// `POST /v1/subject-access`: the id number travels in the body, never a URL.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectAccessRequest {
    /// The id type.
    pub id_type: IdType,
    /// The id number.
    pub id_number: String,
}

impl std::fmt::Debug for SubjectAccessRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SubjectAccessRequest(..)")
    }
}

/// A deposit as the subject-access report shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubjectDeposit {
    /// The deposit.
    pub deposit_id: DepositId,
    /// Who deposited.
    pub platform_id: TenantId,
    /// The platform's reference.
    pub external_ref: String,
    /// Why.
    pub purpose: Purpose,
    /// When.
    pub created_at: DateTime<Utc>,
    /// `active` or `erased`.
    pub state: String,
    /// The groups deposited.
    pub groups: ScopeSet,
}

/// A redemption as the subject-access report shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubjectRedemption {
    /// The redemption.
    pub redemption_id: RedemptionId,
    /// Of which deposit.
    pub deposit_id: DepositId,
    /// Who redeemed.
    pub funder_id: TenantId,
    /// When.
    pub redeemed_at: DateTime<Utc>,
    /// Why.
    pub purpose: Purpose,
    /// The groups released.
    pub scopes: ScopeSet,
    /// The funder's decision, if reported.
    pub outcome: Option<Outcome>,
}

/// `200` of `POST /v1/subject-access`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubjectAccessResponse {
    /// Every deposit about the subject.
    pub deposits: Vec<SubjectDeposit>,
    /// Every redemption of them.
    pub redemptions: Vec<SubjectRedemption>,
}

/// One receipt verification key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptKey {
    /// Its id, as named in receipts.
    pub key_id: String,
    /// `Ed25519` or `SM2` (`dzl_crypto::ReceiptAlgorithm`).
    pub algorithm: String,
    /// base64url (no padding) of the public key: 32 bytes (Ed25519) or
    /// the 65-byte uncompressed point (SM2).
    pub public_key: String,
}

/// `GET /v1/receipt-keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptKeys {
    /// The vault's cipher suite: the request signatures it accepts and the
    /// receipts it signs (absent from a vault that predates suites: `intl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suite: Option<dzl_crypto::Suite>,
    /// The keys.
    pub keys: Vec<ReceiptKey>,
}
