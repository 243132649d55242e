//! The authorization code (授权码): `ac_` + 32 URL-safe base64 characters
//! encoding 24 bytes — the code row's 64-bit key and a 128-bit secret from
//! `SystemRandom`. The vault stores only a hash of the secret; the row key
//! lets a redemption find its row without a random-keyed index.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::SecureRandom;
use zeroize::Zeroize;

use crate::domain::Invalid;

/// Length of the secret part, in bytes (128 bits).
pub const SECRET_LEN: usize = 16;

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

    /// The hash stored in place of the secret.
    pub fn hash(&self) -> [u8; 32] {
        hash_secret(&self.0)
    }

    /// The code once its row key is known.
    pub fn into_code(self, row: i64) -> AuthCode {
        AuthCode {
            row,
            secret: self.0,
        }
    }
}

fn hash_secret(secret: &[u8; SECRET_LEN]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"dzl/code/v1\0");
    ctx.update(secret);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
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

    /// Whether this code's secret hashes to `stored`, in constant time.
    pub fn matches(&self, stored: &[u8]) -> bool {
        use subtle::ConstantTimeEq as _;
        bool::from(hash_secret(&self.secret).as_slice().ct_eq(stored))
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
