//! The three record groups a platform deposits. Strict: unknown fields are
//! refused, every field is a checked newtype. The rules are the ones of
//! `schemas/{applicant,device,risk}.schema.json`; a corpus test holds the two
//! to the same verdicts.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::domain::{
    ascii_type, check_ascii, check_id_number, object_only, string_newtype_serde, text_type,
    wire_enum, IdType, Invalid, IpText, Phone,
};

text_type!(
    /// A person's name: 1–64 characters.
    Name, 1, 64
);
text_type!(
    /// A postal address: 1–200 characters.
    Address, 1, 200
);
text_type!(
    /// An employer's name: 1–100 characters.
    Employer, 1, 100
);
text_type!(
    /// A device model: 1–64 characters.
    DeviceModel, 1, 64
);
ascii_type!(
    /// A device identifier: 1–128 printable ASCII characters, no spaces.
    DeviceId, 1, 128, false
);
ascii_type!(
    /// An OS version: 1–32 printable ASCII characters.
    OsVersion, 1, 32, true
);
ascii_type!(
    /// An app version: 1–32 printable ASCII characters, no spaces.
    AppVersion, 1, 32, false
);
ascii_type!(
    /// A user agent: 1–512 printable ASCII characters.
    UserAgent, 1, 512, true
);
ascii_type!(
    /// A risk model version: 1–64 printable ASCII characters, no spaces.
    ModelVersion, 1, 64, false
);

/// An id number, valid for the id type it came with.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct IdNumber(String);

impl IdNumber {
    /// Parses `s` as an id number of type `id_type`, judging birth dates
    /// against today's date.
    pub fn parse(id_type: IdType, s: String) -> Result<Self, Invalid> {
        check_id_number(id_type, &s, crate::domain::today_in_china())?;
        Ok(IdNumber(s))
    }
    /// The number.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for IdNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdNumber(..)")
    }
}

/// Gender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Gender {
    Male,
    Female,
}

wire_enum!(Gender {
    Male => "male",
    Female => "female",
});

/// Highest education completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Education {
    Primary,
    JuniorHigh,
    SeniorHigh,
    Vocational,
    Associate,
    Bachelor,
    Master,
    Doctorate,
    Unknown,
}

wire_enum!(Education {
    Primary => "primary",
    JuniorHigh => "junior_high",
    SeniorHigh => "senior_high",
    Vocational => "vocational",
    Associate => "associate",
    Bachelor => "bachelor",
    Master => "master",
    Doctorate => "doctorate",
    Unknown => "unknown",
});

/// Marital status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum MaritalStatus {
    Single,
    Married,
    Divorced,
    Widowed,
    Unknown,
}

wire_enum!(MaritalStatus {
    Single => "single",
    Married => "married",
    Divorced => "divorced",
    Widowed => "widowed",
    Unknown => "unknown",
});

/// Upper bound of money amounts in fen (10^12 fen = 10 billion yuan).
pub const MAX_FEN: u64 = 1_000_000_000_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApplicant {
    name: Name,
    id_type: IdType,
    id_number: String,
    phone: Phone,
    #[serde(default, deserialize_with = "crate::domain::present")]
    id_address: Option<Address>,
    #[serde(default, deserialize_with = "crate::domain::present")]
    residence_address: Option<Address>,
    #[serde(default, deserialize_with = "crate::domain::present")]
    gender: Option<Gender>,
    #[serde(default, deserialize_with = "crate::domain::present")]
    education: Option<Education>,
    #[serde(default, deserialize_with = "crate::domain::present")]
    marital_status: Option<MaritalStatus>,
    #[serde(default, deserialize_with = "crate::domain::present")]
    employer: Option<Employer>,
    #[serde(default, deserialize_with = "crate::domain::present")]
    monthly_income_fen: Option<u64>,
}

/// The identity group (身份信息). Kept in its own store, under its own key.
#[derive(Clone, PartialEq, Serialize)]
#[allow(missing_docs)]
pub struct Applicant {
    pub name: Name,
    pub id_type: IdType,
    pub id_number: IdNumber,
    pub phone: Phone,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_address: Option<Address>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub residence_address: Option<Address>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gender: Option<Gender>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub education: Option<Education>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub marital_status: Option<MaritalStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub employer: Option<Employer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monthly_income_fen: Option<u64>,
}

impl<'de> Deserialize<'de> for Applicant {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw: RawApplicant = object_only(d)?;
        Applicant::try_from(raw).map_err(serde::de::Error::custom)
    }
}

impl TryFrom<RawApplicant> for Applicant {
    type Error = Invalid;
    fn try_from(r: RawApplicant) -> Result<Self, Invalid> {
        let id_number =
            IdNumber::parse(r.id_type, r.id_number).map_err(|e| Invalid(id_number_message(e)))?;
        if r.monthly_income_fen.is_some_and(|v| v > MAX_FEN) {
            return Err(Invalid("monthly_income_fen: must be at most 10^12"));
        }
        Ok(Applicant {
            name: r.name,
            id_type: r.id_type,
            id_number,
            phone: r.phone,
            id_address: r.id_address,
            residence_address: r.residence_address,
            gender: r.gender,
            education: r.education,
            marital_status: r.marital_status,
            employer: r.employer,
            monthly_income_fen: r.monthly_income_fen,
        })
    }
}

fn id_number_message(e: Invalid) -> &'static str {
    // Prefix the field so the caller learns where, still without the value.
    match e.0 {
        "resident id number must be 18 characters" => {
            "id_number: resident id must be 18 characters"
        }
        "resident id number check digit does not match" => {
            "id_number: resident id check digit does not match"
        }
        "resident id number has an impossible birth date" => {
            "id_number: resident id birth date is not a real date"
        }
        "resident id number has a birth date out of range" => {
            "id_number: resident id birth date is out of range"
        }
        "resident id number has an unknown province code" => {
            "id_number: resident id province code is unknown"
        }
        "id number does not match the format of its id_type" => {
            "id_number: does not match the format of its id_type"
        }
        _ => "id_number: resident id must be 17 digits and a digit or upper-case X",
    }
}

impl std::fmt::Debug for Applicant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Applicant(..)")
    }
}

/// Operating system family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Os {
    Android,
    Ios,
    Harmonyos,
    Windows,
    Macos,
    Linux,
    Other,
}

wire_enum!(Os {
    Android => "android",
    Ios => "ios",
    Harmonyos => "harmonyos",
    Windows => "windows",
    Macos => "macos",
    Linux => "linux",
    Other => "other",
});

/// Network type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Network {
    Wifi,
    Cellular,
    Ethernet,
    Other,
}

wire_enum!(Network {
    Wifi => "wifi",
    Cellular => "cellular",
    Ethernet => "ethernet",
    Other => "other",
});

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevice {
    device_id: DeviceId,
    os: Os,
    ip: IpText,
    #[serde(default, deserialize_with = "crate::domain::present")]
    os_version: Option<OsVersion>,
    #[serde(default, deserialize_with = "crate::domain::present")]
    model: Option<DeviceModel>,
    #[serde(default, deserialize_with = "crate::domain::present")]
    app_version: Option<AppVersion>,
    #[serde(default, deserialize_with = "crate::domain::present")]
    network: Option<Network>,
    #[serde(default, deserialize_with = "crate::domain::present")]
    user_agent: Option<UserAgent>,
}

/// The device group (设备信息).
#[derive(Clone, PartialEq, Serialize)]
#[allow(missing_docs)]
pub struct Device {
    pub device_id: DeviceId,
    pub os: Os,
    pub ip: IpText,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os_version: Option<OsVersion>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<DeviceModel>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_version: Option<AppVersion>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<UserAgent>,
}

impl<'de> Deserialize<'de> for Device {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r: RawDevice = object_only(d)?;
        Ok(Device {
            device_id: r.device_id,
            os: r.os,
            ip: r.ip,
            os_version: r.os_version,
            model: r.model,
            app_version: r.app_version,
            network: r.network,
            user_agent: r.user_agent,
        })
    }
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Device(..)")
    }
}

/// A risk score, 0–1000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Score(u16);

impl Score {
    /// Parses a score.
    pub fn new(v: u16) -> Result<Self, Invalid> {
        if v <= 1000 {
            Ok(Score(v))
        } else {
            Err(Invalid("score must be an integer 0..=1000"))
        }
    }
    /// The value.
    pub fn get(self) -> u16 {
        self.0
    }
}

impl<'de> Deserialize<'de> for Score {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = u64::deserialize(d)?;
        u16::try_from(v)
            .map_err(|_| Invalid("score must be an integer 0..=1000"))
            .and_then(Score::new)
            .map_err(serde::de::Error::custom)
    }
}

/// A risk grade: an upper-case letter and up to 7 of `A-Z0-9+-`.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Grade(String);

impl Grade {
    /// Parses a grade.
    pub fn parse(s: String) -> Result<Self, Invalid> {
        let b = s.as_bytes();
        let ok = (1..=8).contains(&b.len())
            && b[0].is_ascii_uppercase()
            && b[1..]
                .iter()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'+' || *c == b'-');
        if ok {
            Ok(Grade(s))
        } else {
            Err(Invalid(
                "grade must be an upper-case letter and up to 7 of A-Z0-9+-",
            ))
        }
    }
}
string_newtype_serde!(Grade);

/// A risk tag: `[a-z0-9][a-z0-9_:.-]{0,63}`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Tag(String);

impl Tag {
    /// Parses a tag.
    pub fn parse(s: String) -> Result<Self, Invalid> {
        let b = s.as_bytes();
        let ok = (1..=64).contains(&b.len())
            && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
            && b[1..].iter().all(|c| {
                c.is_ascii_lowercase()
                    || c.is_ascii_digit()
                    || matches!(c, b'_' | b':' | b'.' | b'-')
            });
        if ok {
            Ok(Tag(s))
        } else {
            Err(Invalid("tag must match [a-z0-9][a-z0-9_:.-]{0,63}"))
        }
    }
}
string_newtype_serde!(Tag);

/// A feature name: `[a-z][a-z0-9_]{0,63}`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct FeatureName(String);

impl FeatureName {
    /// Parses a feature name.
    pub fn parse(s: String) -> Result<Self, Invalid> {
        let b = s.as_bytes();
        let ok = (1..=64).contains(&b.len())
            && b[0].is_ascii_lowercase()
            && b[1..]
                .iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_');
        if ok {
            Ok(FeatureName(s))
        } else {
            Err(Invalid("feature name must match [a-z][a-z0-9_]{0,63}"))
        }
    }
}
string_newtype_serde!(FeatureName);

/// At most this many tags.
pub const MAX_TAGS: usize = 32;
/// At most this many named features.
pub const MAX_FEATURES: usize = 256;

/// Named model features: a JSON object of at most [`MAX_FEATURES`] members
/// named `[a-z][a-z0-9_]{0,63}`, each once, whose values are numbers a
/// 64-bit integer or an IEEE-754 double holds exactly. Kept as the exact
/// JSON text the platform sent, so the funder reads the same digits; a
/// number that would change on the way (`1e-401`, a 30-digit integer) is
/// refused instead.
#[derive(Clone)]
pub struct Features(Box<RawValue>);

impl Features {
    /// The JSON text, as deposited.
    pub fn as_json(&self) -> &str {
        self.0.get()
    }
}

impl PartialEq for Features {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

impl Serialize for Features {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Features {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        check_features(raw.get()).map_err(serde::de::Error::custom)?;
        Ok(Features(raw))
    }
}

/// The rules of [`Features`] over its JSON text.
fn check_features(text: &str) -> Result<(), Invalid> {
    struct FeaturesVisitor;
    impl<'de> serde::de::Visitor<'de> for FeaturesVisitor {
        type Value = Result<(), Invalid>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object of named numbers")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Result<(), Invalid>, A::Error> {
            let mut seen = BTreeSet::new();
            while let Some(name) = map.next_key::<String>()? {
                let value: &RawValue = map.next_value()?;
                if seen.len() == MAX_FEATURES {
                    return Ok(Err(Invalid("at most 256 features")));
                }
                let name = match FeatureName::parse(name) {
                    Ok(n) => n,
                    Err(e) => return Ok(Err(e)),
                };
                if !seen.insert(name) {
                    return Ok(Err(Invalid("a feature name must not repeat")));
                }
                if let Err(e) = check_exact_number(value.get()) {
                    return Ok(Err(e));
                }
            }
            Ok(Ok(()))
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    serde::Deserializer::deserialize_map(&mut de, FeaturesVisitor)
        .map_err(|_| Invalid("features must be a JSON object of named numbers"))?
}

const INEXACT: Invalid =
    Invalid("a feature value must be a JSON number that a 64-bit integer or double holds exactly");

/// Whether the JSON number `text` is a value an `i64`, a `u64` or an `f64`
/// holds exactly, so that no reader of it gets another value.
pub fn check_exact_number(text: &str) -> Result<(), Invalid> {
    let Some(value) = Decimal::parse(text) else {
        return Err(Invalid("a feature value must be a JSON number"));
    };
    if text.bytes().all(|c| c.is_ascii_digit() || c == b'-')
        && (text.parse::<i64>().is_ok() || text.parse::<u64>().is_ok())
    {
        return Ok(());
    }
    let f: f64 = text.parse().map_err(|_| INEXACT)?;
    // Rust prints the shortest text that reads back as the same double; if
    // it is not the same decimal value as the text, the double is not it.
    match Decimal::parse(&format!("{f:e}")) {
        Some(d) if f.is_finite() && d == value => Ok(()),
        _ => Err(INEXACT),
    }
}

/// A JSON number's decimal value: sign, significant digits (no leading or
/// trailing zeros) and the power of ten of the last one; zero has no digits.
#[derive(Debug, PartialEq, Eq)]
struct Decimal {
    negative: bool,
    digits: String,
    exponent: i64,
}

impl Decimal {
    fn parse(text: &str) -> Option<Decimal> {
        let (negative, rest) = match text.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, text),
        };
        let (mantissa, exp) = match rest.find(['e', 'E']) {
            Some(i) => (&rest[..i], rest[i + 1..].parse::<i64>().ok()?),
            None => (rest, 0),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        if int.is_empty() || !int.bytes().chain(frac.bytes()).all(|c| c.is_ascii_digit()) {
            return None;
        }
        let all = format!("{int}{frac}");
        let frac_len = i64::try_from(frac.len()).ok()?;
        let trimmed = all.trim_start_matches('0');
        let digits = trimmed.trim_end_matches('0');
        if digits.is_empty() {
            return Some(Decimal {
                negative: false,
                digits: String::new(),
                exponent: 0,
            });
        }
        let trailing = i64::try_from(trimmed.len() - digits.len()).ok()?;
        Some(Decimal {
            negative,
            digits: digits.to_owned(),
            exponent: exp.checked_sub(frac_len)?.checked_add(trailing)?,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRisk {
    score: Score,
    #[serde(default, deserialize_with = "crate::domain::present")]
    grade: Option<Grade>,
    #[serde(default, deserialize_with = "crate::domain::present")]
    tags: Option<Vec<Tag>>,
    #[serde(default, deserialize_with = "crate::domain::present")]
    features: Option<Features>,
    #[serde(default, deserialize_with = "crate::domain::present")]
    model_version: Option<ModelVersion>,
}

/// The risk group (风险信息): a score, a grade, tags and named features.
#[derive(Clone, PartialEq, Serialize)]
#[allow(missing_docs)]
pub struct Risk {
    pub score: Score,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grade: Option<Grade>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<Tag>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub features: Option<Features>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_version: Option<ModelVersion>,
}

impl<'de> Deserialize<'de> for Risk {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw: RawRisk = object_only(d)?;
        Risk::try_from(raw).map_err(serde::de::Error::custom)
    }
}

impl TryFrom<RawRisk> for Risk {
    type Error = Invalid;
    fn try_from(r: RawRisk) -> Result<Self, Invalid> {
        if let Some(tags) = &r.tags {
            if tags.len() > MAX_TAGS {
                return Err(Invalid("tags: at most 32"));
            }
            let mut sorted: Vec<&Tag> = tags.iter().collect();
            sorted.sort();
            if sorted.windows(2).any(|w| w[0] == w[1]) {
                return Err(Invalid("tags: must not repeat"));
            }
        }
        Ok(Risk {
            score: r.score,
            grade: r.grade,
            tags: r.tags,
            features: r.features,
            model_version: r.model_version,
        })
    }
}

impl std::fmt::Debug for Risk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Risk(..)")
    }
}

/// Checks an external reference or consent id: 1–64 printable ASCII, no spaces.
pub fn check_reference(s: &str) -> Result<(), Invalid> {
    check_ascii(s, 1, 64, false)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn risk(features: &str) -> Result<Risk, String> {
        serde_json::from_str(&format!(r#"{{"score":1,"features":{features}}}"#))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn features_are_kept_as_sent_or_refused() {
        for text in [
            r#"{"a":1e3,"b":0.10,"c":12345678901234567,"d":-0,"e":-9223372036854775808}"#,
            r#"{"f":18446744073709551615,"g":0.1,"h":1.7976931348623157e308,"i":5e-324}"#,
            r#"{"z":1,"a":2}"#,
            "{}",
        ] {
            let r = risk(text).unwrap();
            assert_eq!(r.features.as_ref().unwrap().as_json(), text);
            let again = serde_json::to_string(&r).unwrap();
            assert!(again.contains(text), "{again}");
        }
        for (text, why) in [
            (r#"{"big":123456789012345678901234567890}"#, "exactly"),
            (r#"{"tiny":0.1e-400}"#, "exactly"),
            (r#"{"huge":1e400}"#, "exactly"),
            (r#"{"p":9007199254740993.0}"#, "exactly"),
            (r#"{"p":18446744073709551616}"#, "exactly"),
            (r#"{"a":1,"a":2}"#, "must not repeat"),
            (r#"{"Age":1}"#, "feature name"),
            (r#"{"a":"1"}"#, "must be a JSON number"),
            (r#"{"a":null}"#, "must be a JSON number"),
            ("[1]", "object of named numbers"),
        ] {
            let e = risk(text)
                .err()
                .unwrap_or_else(|| panic!("{text} accepted"));
            assert!(e.contains(why), "{text}: {e}");
        }
        let many: Vec<String> = (0..=MAX_FEATURES)
            .map(|i| format!(r#""f{i}":{i}"#))
            .collect();
        let e = risk(&format!("{{{}}}", many.join(","))).err().unwrap();
        assert!(e.contains("at most 256"), "{e}");
        assert!(risk(&format!("{{{}}}", many[1..].join(","))).is_ok());
    }
}
