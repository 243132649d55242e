//! What a funder receives: the released groups, typed, with the consent and
//! the vault's signed receipt; and the receipt's verification.

use chrono::{DateTime, Utc};
use dzl_types::wire::{Consent, Receipt, ReceiptBody, ReceiptKey};
use dzl_types::{
    Applicant, DepositId, Device, Group, Purpose, RedemptionId, Risk, ScopeSet, TenantId,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::ReceiptError;

/// A redeemed code's data: exactly the granted groups, once.
///
/// The groups are kept as released, too, so the receipt can be checked
/// against them ([`crate::FunderClient::verify_receipt`], [`verify_receipt`]).
/// A `Redemption` serialises to the vault's JSON and back, so a funder can
/// archive it and verify it again later. `Debug` shows ids only.
#[derive(Clone)]
pub struct Redemption {
    wire: WireRedemption,
    applicant: Option<Applicant>,
    device: Option<Device>,
    risk: Option<Risk>,
}

/// The `200` body of `POST /v1/redemptions`, groups as JSON values.
#[derive(Clone, Serialize, Deserialize)]
struct WireRedemption {
    redemption_id: RedemptionId,
    deposit_id: DepositId,
    platform_id: TenantId,
    external_ref: String,
    purpose: Purpose,
    consent: Consent,
    scopes: ScopeSet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    applicant: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    device: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    risk: Option<Value>,
    redeemed_at: DateTime<Utc>,
    receipt: Receipt,
}

impl Redemption {
    /// Reads a redemption from the vault's JSON (as received, or as
    /// serialised by this type). The message of the error names the rule
    /// that failed, never a value.
    pub fn from_json(json: &[u8]) -> Result<Redemption, DecodeError> {
        let wire: WireRedemption = serde_json::from_slice(json)
            .map_err(|e| DecodeError(crate::ops::decode_message(&e)))?;
        fn typed<T: serde::de::DeserializeOwned>(
            v: &Option<Value>,
            group: &str,
        ) -> Result<Option<T>, DecodeError> {
            v.as_ref()
                .map(|v| {
                    T::deserialize(v)
                        .map_err(|_| DecodeError(format!("the {group} group does not decode")))
                })
                .transpose()
        }
        Ok(Redemption {
            applicant: typed(&wire.applicant, "applicant")?,
            device: typed(&wire.device, "device")?,
            risk: typed(&wire.risk, "risk")?,
            wire,
        })
    }

    /// The redemption as the vault's JSON.
    pub fn to_json(&self) -> String {
        // Plain JSON values and wire types: serialising cannot fail.
        serde_json::to_string(&self.wire).unwrap_or_default()
    }

    /// The redemption's id (for [`crate::FunderClient::report_outcome`]).
    pub fn redemption_id(&self) -> &RedemptionId {
        &self.wire.redemption_id
    }

    /// The deposit the data came from.
    pub fn deposit_id(&self) -> &DepositId {
        &self.wire.deposit_id
    }

    /// The platform that deposited it.
    pub fn platform_id(&self) -> &TenantId {
        &self.wire.platform_id
    }

    /// The platform's reference of the application.
    pub fn external_ref(&self) -> &str {
        &self.wire.external_ref
    }

    /// The purpose the code was issued and redeemed for.
    pub fn purpose(&self) -> Purpose {
        self.wire.purpose
    }

    /// The applicant's consent, as the platform recorded it.
    pub fn consent(&self) -> &Consent {
        &self.wire.consent
    }

    /// The groups released.
    pub fn scopes(&self) -> ScopeSet {
        self.wire.scopes
    }

    /// The identity group, if granted.
    pub fn applicant(&self) -> Option<&Applicant> {
        self.applicant.as_ref()
    }

    /// The device group, if granted.
    pub fn device(&self) -> Option<&Device> {
        self.device.as_ref()
    }

    /// The risk group, if granted.
    pub fn risk(&self) -> Option<&Risk> {
        self.risk.as_ref()
    }

    /// When the code was redeemed.
    pub fn redeemed_at(&self) -> DateTime<Utc> {
        self.wire.redeemed_at
    }

    /// The vault's signed receipt.
    pub fn receipt(&self) -> &Receipt {
        &self.wire.receipt
    }

    /// The released `{group: fields}` object, as the vault released it (what
    /// the receipt's `groups_sha256` covers). Handle as personal data.
    pub fn released_groups(&self) -> Map<String, Value> {
        let mut m = Map::new();
        for (group, v) in [
            (Group::Applicant, &self.wire.applicant),
            (Group::Device, &self.wire.device),
            (Group::Risk, &self.wire.risk),
        ] {
            if let Some(v) = v {
                m.insert(group.as_str().to_owned(), v.clone());
            }
        }
        m
    }
}

impl std::fmt::Debug for Redemption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redemption")
            .field("redemption_id", &self.wire.redemption_id)
            .field("deposit_id", &self.wire.deposit_id)
            .field("scopes", &self.wire.scopes)
            .finish_non_exhaustive()
    }
}

impl Serialize for Redemption {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.wire.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Redemption {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        let bytes = serde_json::to_vec(&v).map_err(serde::de::Error::custom)?;
        Redemption::from_json(&bytes).map_err(serde::de::Error::custom)
    }
}

/// JSON that is not a redemption. The message names what failed, never a
/// value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a redemption: {0}")]
pub struct DecodeError(String);

/// A receipt that verified: who signed it, and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedReceipt {
    /// The receipt key that signed it.
    pub key_id: String,
    /// The signed statement: redemption, code, funder, deposit, scopes, the
    /// hash of the released groups, and the time.
    pub body: ReceiptBody,
}

/// Verifies a redemption's receipt against the vault's receipt keys
/// (`GET /v1/receipt-keys`), with no IO:
///
/// 1. the key the receipt names is published, with an algorithm this SDK
///    knows (`Ed25519`, or `SM2` over SM3 with the GB/T 35276 default user
///    id), and the signature verifies over the exact `signed` text;
/// 2. the SHA-256 of the released groups, as RFC 8785 canonical JSON, is the
///    receipt's `groups_sha256`;
/// 3. the receipt names this redemption, deposit, scope set and time.
pub fn verify_receipt(
    keys: &[ReceiptKey],
    redemption: &Redemption,
) -> Result<VerifiedReceipt, ReceiptError> {
    let receipt = redemption.receipt();
    let key = keys
        .iter()
        .find(|k| k.key_id == receipt.key_id)
        .ok_or_else(|| ReceiptError::UnknownKey {
            key_id: receipt.key_id.clone(),
        })?;
    let algorithm = dzl_crypto::ReceiptAlgorithm::parse(&key.algorithm).ok_or_else(|| {
        ReceiptError::BadKey {
            key_id: key.key_id.clone(),
        }
    })?;
    dzl_crypto::verify_receipt_signature_with(
        algorithm,
        &key.public_key,
        receipt.signed.as_bytes(),
        &receipt.signature,
    )
    .map_err(|e| match e {
        dzl_crypto::CryptoError::BadKeyMaterial => ReceiptError::BadKey {
            key_id: key.key_id.clone(),
        },
        _ => ReceiptError::BadSignature,
    })?;
    let body: ReceiptBody =
        serde_json::from_str(&receipt.signed).map_err(|e| ReceiptError::Malformed {
            detail: crate::ops::decode_message(&e),
        })?;
    if body.v != 1 {
        return Err(ReceiptError::Malformed {
            detail: format!("receipt version {} is not supported", body.v),
        });
    }
    let groups = Value::Object(redemption.released_groups());
    let canonical = serde_jcs::to_vec(&groups).map_err(|_| ReceiptError::GroupsMismatch)?;
    if dzl_crypto::sha256_hex(&canonical) != body.groups_sha256 {
        return Err(ReceiptError::GroupsMismatch);
    }
    let released = ScopeSet::parse_list(
        &redemption
            .released_groups()
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(","),
    )
    .ok();
    let checks = [
        (
            "redemption_id",
            body.redemption_id == *redemption.redemption_id(),
        ),
        ("deposit_id", body.deposit_id == *redemption.deposit_id()),
        (
            "scopes",
            body.scopes == redemption.scopes() && released == Some(body.scopes),
        ),
        ("redeemed_at", body.redeemed_at == redemption.redeemed_at()),
    ];
    if let Some((field, _)) = checks.iter().find(|(_, ok)| !ok) {
        return Err(ReceiptError::Mismatch { field });
    }
    Ok(VerifiedReceipt {
        key_id: key.key_id.clone(),
        body,
    })
}
