//! The authorization code (授权码): `ac_` + 32 URL-safe base64 characters
//! encoding 24 bytes — the code row's 64-bit key and a 128-bit secret from
//! `SystemRandom`. The vault stores only a hash of the secret; the row key
//! lets a redemption find its row without a random-keyed index.
//!
//! The hash follows the vault's suite: `intl` stores the 32 bytes of
//! SHA-256(`dzl/code/v1\0` || secret); `gm` stores 33 bytes, the tag
//! [`GM_HASH_TAG`] then SM3 over the same input. The lengths tell the two
//! apart, so a vault that moves between suites checks every code it has
//! issued, whichever suite hashed it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::SecureRandom;
use zeroize::Zeroize;

use dzl_crypto::Suite;

use crate::domain::Invalid;

/// Length of the secret part, in bytes (128 bits).
pub const SECRET_LEN: usize = 16;
/// The first byte of a `gm` code hash (SM3); an `intl` hash (SHA-256) has
/// no tag.
pub const GM_HASH_TAG: u8 = 0x02;
/// What the hash covers before the secret.
const HASH_DOMAIN: &[u8] = b"dzl/code/v1\0";

/// A parsed code. Its `Debug` never prints the secret.
#[derive(Clone)]
pub struct AuthCode {
    row: i64,
    secret: [u8; SECRET_LEN],
}

impl Drop for AuthCode {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

impl std::fmt::Debug for AuthCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthCode(..)")
    }
}

/// A code's secret, freshly drawn, before its row exists.
pub struct CodeSecret([u8; SECRET_LEN]);

impl Drop for CodeSecret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl CodeSecret {
    /// Draws 128 bits from `rng`.
    pub fn generate(rng: &dyn SecureRandom) -> Result<Self, ring::error::Unspecified> {
        let mut b = [0u8; SECRET_LEN];
        rng.fill(&mut b)?;
        Ok(CodeSecret(b))
    }

    /// The `intl` hash stored in place of the secret (32 bytes, SHA-256).
    pub fn hash(&self) -> [u8; 32] {
        hash_secret(Suite::Intl, &self.0)
    }

    /// The hash stored in place of the secret by a vault of `suite`: 32
    /// bytes of SHA-256, or [`GM_HASH_TAG`] and 32 bytes of SM3.
    pub fn hash_for(&self, suite: Suite) -> Vec<u8> {
        tagged_hash(suite, &self.0)
    }

    /// The code once its row key is known.
    pub fn into_code(self, row: i64) -> AuthCode {
        AuthCode {
            row,
            secret: self.0,
        }
    }
}

fn hash_secret(suite: Suite, secret: &[u8; SECRET_LEN]) -> [u8; 32] {
    dzl_crypto::digest_parts(suite, &[HASH_DOMAIN, secret])
}

fn tagged_hash(suite: Suite, secret: &[u8; SECRET_LEN]) -> Vec<u8> {
    let digest = hash_secret(suite, secret);
    match suite {
        Suite::Intl => digest.to_vec(),
        Suite::Gm => [&[GM_HASH_TAG][..], &digest].concat(),
    }
}

impl AuthCode {
    /// Parses `ac_…`. The message never contains the input.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let body = s
            .strip_prefix("ac_")
            .ok_or(Invalid("code must start with ac_"))?;
        if body.len() != 32 {
            return Err(Invalid(
                "code must be ac_ and 32 URL-safe base64 characters",
            ));
        }
        let mut bytes = [0u8; 24];
        let n = URL_SAFE_NO_PAD
            .decode_slice(body, &mut bytes)
            .map_err(|_| Invalid("code must be ac_ and 32 URL-safe base64 characters"))?;
        if n != 24 {
            return Err(Invalid(
                "code must be ac_ and 32 URL-safe base64 characters",
            ));
        }
        let mut row = [0u8; 8];
        row.copy_from_slice(&bytes[..8]);
        let mut secret = [0u8; SECRET_LEN];
        secret.copy_from_slice(&bytes[8..]);
        bytes.zeroize();
        Ok(AuthCode {
            row: i64::from_be_bytes(row),
            secret,
        })
    }

    /// The row key the code names.
    pub fn row(&self) -> i64 {
        self.row
    }

    /// Whether this code's secret hashes to `stored` (an `intl` or a `gm`
    /// hash, told apart by length), compared in constant time.
    pub fn matches(&self, stored: &[u8]) -> bool {
        use subtle::ConstantTimeEq as _;
        let suite = match stored.len() {
            32 => Suite::Intl,
            33 if stored[0] == GM_HASH_TAG => Suite::Gm,
            _ => return false,
        };
        bool::from(tagged_hash(suite, &self.secret).as_slice().ct_eq(stored))
    }

    /// The wire form. Handle with care: it is a bearer credential.
    pub fn expose(&self) -> String {
        let mut bytes = [0u8; 24];
        bytes[..8].copy_from_slice(&self.row.to_be_bytes());
        bytes[8..].copy_from_slice(&self.secret);
        let s = format!("ac_{}", URL_SAFE_NO_PAD.encode(bytes));
        bytes.zeroize();
        s
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_hash_check() {
        let rng = ring::rand::SystemRandom::new();
        let secret = CodeSecret::generate(&rng).unwrap();
        let stored = secret.hash();
        let code = secret.into_code(42);
        let text = code.expose();
        assert!(text.starts_with("ac_") && text.len() == 35);
        assert!(text[3..]
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        let parsed = AuthCode::parse(&text).unwrap();
        assert_eq!(parsed.row(), 42);
        assert!(parsed.matches(&stored));
        let other = CodeSecret::generate(&rng).unwrap().into_code(42);
        assert!(!other.matches(&stored));
        assert!(!format!("{parsed:?}").contains(&text[3..]));
    }

    /// Known answers computed independently (Python `hashlib`, OpenSSL's
    /// SM3): a secret of 16 bytes 0x01..0x10.
    #[test]
    fn hashes_of_both_suites_are_pinned_and_told_apart() {
        let secret: [u8; SECRET_LEN] = core::array::from_fn(|i| i as u8 + 1);
        let s = CodeSecret(secret);
        assert_eq!(
            hex::encode(s.hash()),
            "a80c541f4ff5a2f79d849a7b5212b87da54a63c7347125001af4df2e2d2ae70e"
        );
        assert_eq!(s.hash_for(Suite::Intl), s.hash().to_vec());
        let gm = s.hash_for(Suite::Gm);
        assert_eq!(
            hex::encode(&gm),
            "0282f18d3e052938501725440de74f1c807041600e9d753ae0c7f560c6c752eda3"
        );
        let code = s.into_code(7);
        assert!(code.matches(&code_hash(&secret, Suite::Intl)));
        assert!(code.matches(&gm));
        // A gm hash without its tag, or with another, matches nothing; nor
        // does the SM3 digest passed off as an intl hash.
        assert!(!code.matches(&gm[1..]));
        let mut retagged = gm.clone();
        retagged[0] = 0x01;
        assert!(!code.matches(&retagged));
        assert!(!code.matches(&[]));
        let other = CodeSecret([0xee; SECRET_LEN]).into_code(7);
        assert!(!other.matches(&gm));
    }

    fn code_hash(secret: &[u8; SECRET_LEN], suite: Suite) -> Vec<u8> {
        CodeSecret(*secret).hash_for(suite)
    }

    #[test]
    fn malformed_codes_are_refused() {
        for bad in [
            "",
            "ac_",
            "ac_x",
            "xx_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "ac_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            "ac_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "ac_ÄAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert!(AuthCode::parse(bad).is_err(), "{bad:?}");
        }
    }
}
