//! Public identifiers: a fixed prefix and 32 lowercase hex characters
//! (128 random bits), e.g. `dep_3f0c…`. They name things; they grant nothing.

use serde::{Deserialize, Serialize};

use crate::domain::Invalid;

/// Whether `s` is `prefix` + `_` + 32 lowercase hex characters.
pub fn is_id(prefix: &str, s: &str) -> bool {
    s.len() == prefix.len() + 33
        && s.starts_with(prefix)
        && s.as_bytes()[prefix.len()] == b'_'
        && s.as_bytes()[prefix.len() + 1..]
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

macro_rules! id_type {
    ($(#[$m:meta])* $name:ident, $prefix:literal) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The prefix of this kind of id.
            pub const PREFIX: &'static str = $prefix;

            /// Parses an id.
            pub fn parse(s: &str) -> Result<Self, Invalid> {
                if is_id($prefix, s) {
                    Ok($name(s.to_owned()))
                } else {
                    Err(Invalid(concat!("must be ", $prefix, "_ and 32 lowercase hex characters")))
                }
            }

            /// Wraps an id the vault made itself (from storage).
            pub fn from_trusted(s: String) -> Self {
                $name(s)
            }

            /// The id.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $name::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// A tenant (platform, funder or operator).
    TenantId, "ten"
);
id_type!(
    /// A deposit.
    DepositId, "dep"
);
id_type!(
    /// An authorization code's public id (not the code).
    CodeId, "cod"
);
id_type!(
    /// A redemption.
    RedemptionId, "red"
);
id_type!(
    /// A pseudonymous reference to the data subject, per platform.
    SubjectRef, "sub"
);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ids_need_prefix_and_lowercase_hex() {
        let good = format!("dep_{}", "a1".repeat(16));
        assert!(DepositId::parse(&good).is_ok());
        assert!(DepositId::parse(&good.to_uppercase()).is_err());
        assert!(DepositId::parse(&good.replace("dep_", "cod_")).is_err());
        assert!(DepositId::parse(&good[..good.len() - 1]).is_err());
        assert!(DepositId::parse("dep_ä1a1a1a1a1a1a1a1a1a1a1a1a1a1a1").is_err());
    }
}
