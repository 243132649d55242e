//! Domain newtypes. Each one is parsed once, at the edge, and is valid for
//! the rest of its life. Error messages name the rule that failed and never
//! contain the rejected value (it may be personal data).

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Why a value was refused. The text is fixed per rule, never the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub &'static str);

/// Gives a fieldless enum its wire names from one table: `as_str`,
/// `Serialize` (a string) and `Deserialize` (from a string only). serde's
/// derive would also take `{"name": null}` for a unit variant from JSON; the
/// schemas take a string and nothing else.
macro_rules! wire_enum {
    ($name:ident { $($variant:ident => $wire:literal),+ $(,)? }) => {
        impl $name {
            /// The wire name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $wire,)+
                }
            }
        }
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                const NAMES: &[&str] = &[$($wire),+];
                struct NameVisitor;
                impl serde::de::Visitor<'_> for NameVisitor {
                    type Value = $name;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(f, "a string, one of {}", NAMES.join(", "))
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$name, E> {
                        match v {
                            $($wire => Ok($name::$variant),)+
                            _ => Err(E::unknown_variant(v, NAMES)),
                        }
                    }
                }
                d.deserialize_str(NameVisitor)
            }
        }
    };
}
pub(crate) use wire_enum;

/// Deserialises `T` from a map (a JSON object) only. serde's derived struct
/// deserialiser also takes a sequence of the field values in declaration
/// order (`[712]` would make a risk record); the schemas take objects only.
pub(crate) fn object_only<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct ObjectVisitor<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for ObjectVisitor<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
        }
    }
    d.deserialize_map(ObjectVisitor(std::marker::PhantomData))
}

/// A record group: the unit of consent, of grants and of encryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Group {
    /// Identity fields (身份信息); stored apart from the others.
    Applicant,
    /// Device fields (设备信息).
    Device,
    /// Risk fields (风险信息).
    Risk,
}

wire_enum!(Group {
    Applicant => "applicant",
    Device => "device",
    Risk => "risk",
});

impl Group {
    /// Every group, in canonical order.
    pub const ALL: [Group; 3] = [Group::Applicant, Group::Device, Group::Risk];

    /// Parses a wire name.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        match s {
            "applicant" => Ok(Group::Applicant),
            "device" => Ok(Group::Device),
            "risk" => Ok(Group::Risk),
            _ => Err(Invalid("unknown group: expected applicant, device or risk")),
        }
    }

    fn bit(self) -> u8 {
        match self {
            Group::Applicant => 1,
            Group::Device => 2,
            Group::Risk => 4,
        }
    }
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A non-empty set of groups without repeats. On the wire a JSON array of
/// group names; always serialised in canonical order.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ScopeSet(u8);

impl ScopeSet {
    /// All three groups.
    pub const ALL: ScopeSet = ScopeSet(7);

    /// Builds a set from groups; `None` when empty.
    pub fn from_groups(groups: impl IntoIterator<Item = Group>) -> Option<Self> {
        let bits = groups.into_iter().fold(0u8, |acc, g| acc | g.bit());
        (bits != 0).then_some(ScopeSet(bits))
    }

    /// The set of one group.
    pub fn single(group: Group) -> Self {
        ScopeSet(group.bit())
    }

    /// The set with `group` added.
    pub fn with(self, group: Group) -> Self {
        ScopeSet(self.0 | group.bit())
    }

    /// Parses the stored form (a comma-separated list), e.g. `applicant,risk`.
    pub fn parse_list(s: &str) -> Result<Self, Invalid> {
        let mut groups = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            groups.push(Group::parse(part)?);
        }
        Self::from_vec(groups)
    }

    fn from_vec(groups: Vec<Group>) -> Result<Self, Invalid> {
        let mut bits = 0u8;
        for g in groups {
            if bits & g.bit() != 0 {
                return Err(Invalid("scopes must not repeat a group"));
            }
            bits |= g.bit();
        }
        if bits == 0 {
            return Err(Invalid("scopes must name at least one group"));
        }
        Ok(ScopeSet(bits))
    }

    /// Whether `group` is in the set.
    pub fn contains(self, group: Group) -> bool {
        self.0 & group.bit() != 0
    }

    /// Whether every group of `self` is in `other`.
    pub fn is_subset_of(self, other: ScopeSet) -> bool {
        self.0 & !other.0 == 0
    }

    /// The groups of `self` missing from `other`.
    pub fn missing_from(self, other: ScopeSet) -> Vec<Group> {
        self.iter().filter(|g| !other.contains(*g)).collect()
    }

    /// The groups in canonical order.
    pub fn iter(self) -> impl Iterator<Item = Group> {
        Group::ALL.into_iter().filter(move |g| self.contains(*g))
    }

    /// The stored form: comma-separated names in canonical order.
    pub fn to_list(self) -> String {
        self.iter().map(Group::as_str).collect::<Vec<_>>().join(",")
    }

    /// The names in canonical order.
    pub fn names(self) -> Vec<&'static str> {
        self.iter().map(Group::as_str).collect()
    }
}

impl fmt::Debug for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Serialize for ScopeSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for ScopeSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let groups = Vec::<Group>::deserialize(d)?;
        ScopeSet::from_vec(groups).map_err(serde::de::Error::custom)
    }
}

/// Why the funder wants the data: 授信 (credit application) or 用信 (drawdown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// 授信申请.
    CreditApplication,
    /// 用信申请.
    Drawdown,
}

wire_enum!(Purpose {
    CreditApplication => "credit_application",
    Drawdown => "drawdown",
});

impl Purpose {
    /// Every purpose.
    pub const ALL: [Purpose; 2] = [Purpose::CreditApplication, Purpose::Drawdown];

    /// Parses a wire name.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        match s {
            "credit_application" => Ok(Purpose::CreditApplication),
            "drawdown" => Ok(Purpose::Drawdown),
            _ => Err(Invalid(
                "unknown purpose: expected credit_application or drawdown",
            )),
        }
    }
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of purposes a funder is entitled to (stored comma-separated).
pub fn parse_purposes(s: &str) -> Result<Vec<Purpose>, Invalid> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let p = Purpose::parse(part)?;
        if !out.contains(&p) {
            out.push(p);
        }
    }
    Ok(out)
}

/// The kind of identity document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdType {
    /// 居民身份证 (18 characters, GB 11643 check digit).
    ResidentId,
    /// Passport.
    Passport,
    /// 港澳居民来往内地通行证.
    HkMacaoPermit,
    /// 台湾居民来往大陆通行证.
    TaiwanPermit,
    /// 外国人永久居留身份证.
    ForeignPermanentResident,
}

wire_enum!(IdType {
    ResidentId => "resident_id",
    Passport => "passport",
    HkMacaoPermit => "hk_macao_permit",
    TaiwanPermit => "taiwan_permit",
    ForeignPermanentResident => "foreign_permanent_resident",
});

const PROVINCES: [&str; 36] = [
    "11", "12", "13", "14", "15", "21", "22", "23", "31", "32", "33", "34", "35", "36", "37", "41",
    "42", "43", "44", "45", "46", "50", "51", "52", "53", "54", "61", "62", "63", "64", "65", "71",
    "81", "82", "83", "91",
];

/// Checks a resident id number (公民身份号码, GB 11643-1999): 17 digits and a
/// check character (digit or upper-case `X`), a known province code, a real
/// birth date between 1900-01-01 and `today`, and the mod-11 check digit.
pub fn check_resident_id(s: &str, today: chrono::NaiveDate) -> Result<(), Invalid> {
    let b = s.as_bytes();
    if b.len() != 18 {
        return Err(Invalid("resident id number must be 18 characters"));
    }
    if !b[..17].iter().all(u8::is_ascii_digit) || !(b[17].is_ascii_digit() || b[17] == b'X') {
        return Err(Invalid(
            "resident id number must be 17 digits and a digit or upper-case X",
        ));
    }
    if !PROVINCES.contains(&&s[..2]) {
        return Err(Invalid("resident id number has an unknown province code"));
    }
    let birth = chrono::NaiveDate::parse_from_str(&s[6..14], "%Y%m%d")
        .map_err(|_| Invalid("resident id number has an impossible birth date"))?;
    let earliest = chrono::NaiveDate::from_ymd_opt(1900, 1, 1).unwrap_or(chrono::NaiveDate::MIN);
    if birth < earliest || birth > today {
        return Err(Invalid("resident id number has a birth date out of range"));
    }
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = b[..17]
        .iter()
        .zip(WEIGHTS)
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum();
    let expected = b"10X98765432"[(sum % 11) as usize];
    if b[17] != expected {
        return Err(Invalid("resident id number check digit does not match"));
    }
    Ok(())
}

fn all_ascii(s: &str, pred: impl Fn(u8) -> bool) -> bool {
    s.bytes().all(pred)
}

/// Checks an id number against the rules of its type.
pub fn check_id_number(id_type: IdType, s: &str, today: chrono::NaiveDate) -> Result<(), Invalid> {
    if id_type == IdType::ResidentId {
        return check_resident_id(s, today);
    }
    // Every other format is ASCII; checking that first makes the slicing below safe.
    let n = s.len();
    let digits = |t: &str| all_ascii(t, |c| c.is_ascii_digit());
    let ok = s.is_ascii()
        && match id_type {
            IdType::ResidentId => false,
            IdType::Passport => {
                (5..=17).contains(&n)
                    && all_ascii(s, |c| c.is_ascii_uppercase() || c.is_ascii_digit())
            }
            IdType::HkMacaoPermit => {
                (9..=11).contains(&n)
                    && (s.starts_with('H') || s.starts_with('M'))
                    && digits(&s[1..])
            }
            IdType::TaiwanPermit => (n == 8 || n == 10) && digits(s),
            IdType::ForeignPermanentResident => {
                (n == 15 && all_ascii(&s[..3], |c| c.is_ascii_uppercase()) && digits(&s[3..]))
                    || (n == 18 && s.starts_with('9') && digits(s))
            }
        };
    if ok {
        Ok(())
    } else {
        Err(Invalid(
            "id number does not match the format of its id_type",
        ))
    }
}

/// A mainland China mobile number: 11 digits, `1[3-9]…`.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Phone(String);

impl Phone {
    /// Parses a phone number.
    pub fn parse(s: String) -> Result<Self, Invalid> {
        let b = s.as_bytes();
        if b.len() == 11
            && b[0] == b'1'
            && (b'3'..=b'9').contains(&b[1])
            && b.iter().all(u8::is_ascii_digit)
        {
            Ok(Phone(s))
        } else {
            Err(Invalid(
                "phone must be a mainland mobile number: 11 digits starting 13-19",
            ))
        }
    }
    /// The number.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An IPv4 (dotted quad, no leading zeros) or IPv6 (no zone id) address, kept
/// as the client wrote it.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct IpText(String);

impl IpText {
    /// Parses an address.
    pub fn parse(s: String) -> Result<Self, Invalid> {
        match s.parse::<IpAddr>() {
            Ok(_) => Ok(IpText(s)),
            Err(_) => Err(Invalid("ip must be an IPv4 or IPv6 address")),
        }
    }
    /// The address as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Characters no free text may hold anywhere, as ranges: controls (C0,
/// DEL, C1 with U+0085 and U+009B), the line and paragraph separators,
/// bidirectional controls (U+061C, U+200E/F, U+202A–U+202E,
/// U+2066–U+2069), zero-width and other invisible characters (U+00AD,
/// U+034F, U+115F/U+1160, U+17B4/U+17B5, U+180E, U+200B–U+200D,
/// U+2060–U+2064, U+2800, U+3164, U+FEFF, U+FFA0, U+FFF9–U+FFFB, tags
/// U+E0000–U+E007F) and noncharacters (U+FDD0–U+FDEF and the last two of
/// every plane). `schemas/*.schema.json` spell out the same set (its
/// supplementary-plane part in their descriptions).
const FORBIDDEN: &[(char, char)] = &[
    ('\u{0}', '\u{1f}'),
    ('\u{7f}', '\u{9f}'),
    ('\u{ad}', '\u{ad}'),
    ('\u{34f}', '\u{34f}'),
    ('\u{61c}', '\u{61c}'),
    ('\u{115f}', '\u{1160}'),
    ('\u{17b4}', '\u{17b5}'),
    ('\u{180e}', '\u{180e}'),
    ('\u{200b}', '\u{200f}'),
    ('\u{2028}', '\u{202e}'),
    ('\u{2060}', '\u{2064}'),
    ('\u{2066}', '\u{2069}'),
    ('\u{2800}', '\u{2800}'),
    ('\u{3164}', '\u{3164}'),
    ('\u{fdd0}', '\u{fdef}'),
    ('\u{feff}', '\u{feff}'),
    ('\u{ffa0}', '\u{ffa0}'),
    ('\u{fff9}', '\u{fffb}'),
    ('\u{e0000}', '\u{e007f}'),
];

/// Characters that may follow a visible one but not come first: combining
/// marks and variation selectors (alone they show nothing).
const NOT_FIRST: &[(char, char)] = &[
    ('\u{300}', '\u{36f}'),
    ('\u{1ab0}', '\u{1aff}'),
    ('\u{1dc0}', '\u{1dff}'),
    ('\u{20d0}', '\u{20ff}'),
    ('\u{fe00}', '\u{fe0f}'),
    ('\u{fe20}', '\u{fe2f}'),
    ('\u{e0100}', '\u{e01ef}'),
];

fn in_ranges(c: char, ranges: &[(char, char)]) -> bool {
    ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c))
}

/// Whether `c` is a noncharacter of a supplementary plane or the BMP's
/// U+FFFE/U+FFFF (U+FDD0–U+FDEF are in [`FORBIDDEN`]).
fn is_plane_noncharacter(c: char) -> bool {
    (u32::from(c) & 0xfffe) == 0xfffe
}

/// Checks a free text (a name, an address, an employer, a device model):
/// `min..=max` characters; none of the controls, bidirectional controls,
/// invisible characters and noncharacters of [`FORBIDDEN`]; not starting or
/// ending with whitespace; and starting with a visible character, so a text
/// never consists only of characters that show nothing.
pub fn check_text(s: &str, min: usize, max: usize) -> Result<(), Invalid> {
    let n = s.chars().count();
    if n < min || n > max {
        return Err(Invalid("text length out of range"));
    }
    if let Some(c) = s
        .chars()
        .find(|c| in_ranges(*c, FORBIDDEN) || is_plane_noncharacter(*c))
    {
        return Err(Invalid(match c {
            '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}' | '\u{2028}' | '\u{2029}' => {
                "text must not contain control characters"
            }
            '\u{61c}'
            | '\u{200e}'
            | '\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}' => "text must not contain bidirectional controls",
            c if is_plane_noncharacter(c) || ('\u{fdd0}'..='\u{fdef}').contains(&c) => {
                "text must not contain noncharacters"
            }
            _ => "text must not contain zero-width or invisible characters",
        }));
    }
    let first = s.chars().next();
    let last = s.chars().next_back();
    if first.is_some_and(char::is_whitespace) || last.is_some_and(char::is_whitespace) {
        return Err(Invalid("text must not start or end with whitespace"));
    }
    if first.is_some_and(|c| in_ranges(c, NOT_FIRST)) {
        return Err(Invalid(
            "text must start with a visible character, not a combining mark or variation selector",
        ));
    }
    Ok(())
}

/// Checks a printable-ASCII token of `min..=max` bytes; `space` allows U+0020.
pub fn check_ascii(s: &str, min: usize, max: usize, space: bool) -> Result<(), Invalid> {
    let lo = if space { 0x20 } else { 0x21 };
    if s.len() < min || s.len() > max {
        return Err(Invalid("token length out of range"));
    }
    if !s.bytes().all(|c| (lo..=0x7e).contains(&c)) {
        return Err(Invalid("token must be printable ASCII"));
    }
    Ok(())
}

/// For optional fields: absent is `None` (with `#[serde(default)]`), but an
/// explicit `null` is refused, as the schemas refuse it.
pub fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// Today's date in China (UTC+8), against which birth dates are judged.
pub fn today_in_china() -> chrono::NaiveDate {
    (chrono::Utc::now() + chrono::Duration::hours(8)).date_naive()
}

/// Declares a `String` newtype checked by `check_text`.
macro_rules! text_type {
    ($(#[$m:meta])* $name:ident, $min:expr, $max:expr) => {
        $(#[$m])*
        #[derive(Clone, PartialEq, Eq, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);
        impl $name {
            /// Parses the text.
            pub fn parse(s: String) -> Result<Self, $crate::domain::Invalid> {
                $crate::domain::check_text(&s, $min, $max)?;
                Ok($name(s))
            }
            /// The text.
            pub fn as_str(&self) -> &str { &self.0 }
        }
        $crate::domain::string_newtype_serde!($name);
    };
}

/// Declares a `String` newtype checked by `check_ascii`.
macro_rules! ascii_type {
    ($(#[$m:meta])* $name:ident, $min:expr, $max:expr, $space:expr) => {
        $(#[$m])*
        #[derive(Clone, PartialEq, Eq, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);
        impl $name {
            /// Parses the token.
            pub fn parse(s: String) -> Result<Self, $crate::domain::Invalid> {
                $crate::domain::check_ascii(&s, $min, $max, $space)?;
                Ok($name(s))
            }
            /// The token.
            pub fn as_str(&self) -> &str { &self.0 }
        }
        $crate::domain::string_newtype_serde!($name);
    };
}

/// `Deserialize` through `parse` and a `Debug` that hides the value.
macro_rules! string_newtype_serde {
    ($name:ident) => {
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $name::parse(s).map_err(serde::de::Error::custom)
            }
        }
        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, concat!(stringify!($name), "(..)"))
            }
        }
    };
}

pub(crate) use ascii_type;
pub(crate) use string_newtype_serde;
pub(crate) use text_type;

string_newtype_serde!(Phone);
string_newtype_serde!(IpText);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn today() -> chrono::NaiveDate {
        chrono::NaiveDate::from_ymd_opt(2026, 11, 22).unwrap()
    }

    #[test]
    fn resident_id_rules() {
        let cases = [
            ("11010519491231002X", true),
            ("440301199001011234", true),
            ("11010519491231002x", false),
            ("110105194912310021", false),
            ("11010519490230002X", false),
            ("00010519491231002X", false),
            ("1101051949123100", false),
        ];
        for (id, ok) in cases {
            assert_eq!(check_resident_id(id, today()).is_ok(), ok, "{id}");
        }
    }

    #[test]
    fn scope_sets_are_canonical_and_reject_repeats() {
        let s: ScopeSet = serde_json::from_str(r#"["risk","applicant"]"#).unwrap();
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"["applicant","risk"]"#
        );
        assert!(serde_json::from_str::<ScopeSet>(r#"["risk","risk"]"#).is_err());
        assert!(serde_json::from_str::<ScopeSet>("[]").is_err());
        assert_eq!(ScopeSet::parse_list("applicant,risk").unwrap(), s);
    }

    #[test]
    fn wire_enums_are_strings_only() {
        for g in Group::ALL {
            let json = serde_json::to_string(&g).unwrap();
            assert_eq!(json, format!("\"{}\"", g.as_str()));
            assert_eq!(serde_json::from_str::<Group>(&json).unwrap(), g);
        }
        for p in Purpose::ALL {
            let v = serde_json::to_value(p).unwrap();
            assert_eq!(serde_json::from_value::<Purpose>(v).unwrap(), p);
        }
        // serde's derive took `{"variant": null}` as the unit variant.
        assert!(serde_json::from_str::<Group>(r#"{"risk":null}"#).is_err());
        assert!(serde_json::from_str::<ScopeSet>(r#"[{"risk":null}]"#).is_err());
        assert!(serde_json::from_str::<Purpose>(r#"{"drawdown":null}"#).is_err());
        assert!(serde_json::from_str::<IdType>(r#"{"passport":null}"#).is_err());
        assert!(serde_json::from_str::<IdType>(r#""Passport""#).is_err());
        assert!(serde_json::from_str::<IdType>("0").is_err());
    }

    #[test]
    fn free_text_holds_only_visible_unicode() {
        for ok in [
            "张三",
            "阿卜杜拉·买买提",
            "O'Brien Smith",
            "张\u{3000}三",
            "Zoë 😀 Li",
            "e\u{301}",
            "葛\u{e0100}",
            "𠀀",
            "\u{e000}",
        ] {
            assert!(check_text(ok, 1, 64).is_ok(), "{ok:?}");
        }
        for (bad, why) in [
            ("a\u{85}b", "control"),
            ("a\u{9b}b", "control"),
            ("a\u{1}b", "control"),
            ("a\u{2028}b", "control"),
            ("a\u{202e}b", "bidirectional"),
            ("a\u{200f}b", "bidirectional"),
            ("a\u{61c}b", "bidirectional"),
            ("a\u{2067}b", "bidirectional"),
            ("a\u{ffff}", "noncharacter"),
            ("a\u{fffe}", "noncharacter"),
            ("a\u{fdd0}", "noncharacter"),
            ("a\u{10ffff}", "noncharacter"),
            ("a\u{1fffe}", "noncharacter"),
            ("\u{feff}张三", "invisible"),
            ("\u{200b}", "invisible"),
            ("a\u{200d}b", "invisible"),
            ("a\u{2060}b", "invisible"),
            ("\u{3164}", "invisible"),
            ("a\u{e0041}", "invisible"),
            ("\u{301}", "visible character"),
            ("\u{fe0f}", "visible character"),
            (" 张三", "whitespace"),
            ("\u{3000}", "whitespace"),
        ] {
            let e = check_text(bad, 1, 64).err();
            assert!(
                e.as_ref().is_some_and(|e| e.0.contains(why)),
                "{bad:?}: {e:?}"
            );
        }
    }

    #[test]
    fn messages_never_echo_the_value() {
        let err = Phone::parse("23800138000".into()).err().unwrap();
        assert!(!err.to_string().contains("23800138000"));
    }
}
