//! Request signing as docs/api.md and `dzl_types::signing` specify —
//! HMAC-SHA256 for an `intl` vault, HMAC-SM3 (named in the header) for a
//! `gm` vault — with a fresh nonce per request and the timestamp from the
//! system clock.

use base64::Engine as _;
use dzl_crypto::Suite;
use dzl_types::signing::{self, SignatureAlgorithm};
use ring::rand::SecureRandom as _;

/// A tenant's signing credentials: the key id and secret `dzlctl tenant add`
/// printed once. `Debug` never prints the secret.
///
/// A signer signs with HMAC-SHA256 unless told the vault's suite
/// ([`Signer::for_suite`]); the clients of a [`crate::Vault`] sign with the
/// vault's suite whatever the signer says, as the vault accepts no other.
#[derive(Clone)]
pub struct Signer {
    key_id: String,
    secret: String,
    algorithm: SignatureAlgorithm,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("key_id", &self.key_id)
            .field("algorithm", &self.algorithm.as_str())
            .finish_non_exhaustive()
    }
}

/// The four signature headers of one request.
#[derive(Debug, Clone)]
pub struct SignedHeaders {
    /// `X-DZL-Key-Id`.
    pub key_id: String,
    /// `X-DZL-Timestamp`: unix seconds.
    pub timestamp: i64,
    /// `X-DZL-Nonce`.
    pub nonce: String,
    /// `X-DZL-Signature`.
    pub signature: String,
}

impl Signer {
    /// Credentials from `dzlctl tenant add` (its `key_id` and `secret`).
    pub fn new(key_id: impl Into<String>, secret: impl Into<String>) -> Self {
        Signer {
            key_id: key_id.into(),
            secret: secret.into(),
            algorithm: SignatureAlgorithm::HmacSha256,
        }
    }

    /// The same credentials, signing for a vault of `suite`.
    pub fn for_suite(mut self, suite: Suite) -> Self {
        self.algorithm = SignatureAlgorithm::for_suite(suite);
        self
    }

    /// The key id.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The algorithm this signer signs with.
    pub fn algorithm(&self) -> SignatureAlgorithm {
        self.algorithm
    }

    /// Signs with an explicit timestamp and nonce (test vectors, replays in
    /// tests). Requests should use [`Signer::sign`].
    pub fn sign_with(
        &self,
        method: &str,
        path_and_query: &str,
        body: &[u8],
        timestamp: i64,
        nonce: &str,
    ) -> SignedHeaders {
        self.sign_as(
            self.algorithm,
            method,
            path_and_query,
            body,
            timestamp,
            nonce,
        )
    }

    fn sign_as(
        &self,
        algorithm: SignatureAlgorithm,
        method: &str,
        path_and_query: &str,
        body: &[u8],
        timestamp: i64,
        nonce: &str,
    ) -> SignedHeaders {
        let canonical =
            signing::canonical_for(algorithm, method, path_and_query, timestamp, nonce, body);
        SignedHeaders {
            key_id: self.key_id.clone(),
            timestamp,
            nonce: nonce.to_owned(),
            signature: signing::sign_with(algorithm, self.secret.as_bytes(), &canonical),
        }
    }

    /// Signs now (system clock), with a fresh random nonce.
    pub fn sign(&self, method: &str, path_and_query: &str, body: &[u8]) -> SignedHeaders {
        self.sign_now(self.algorithm, method, path_and_query, body)
    }

    /// Signs now with `algorithm` (the vault's), with a fresh random nonce.
    pub(crate) fn sign_now(
        &self,
        algorithm: SignatureAlgorithm,
        method: &str,
        path_and_query: &str,
        body: &[u8],
    ) -> SignedHeaders {
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        self.sign_as(
            algorithm,
            method,
            path_and_query,
            body,
            timestamp,
            &fresh_nonce(),
        )
    }
}

/// 24 random URL-safe characters from the system's CSPRNG: a valid, never
/// repeated `X-DZL-Nonce`.
pub fn fresh_nonce() -> String {
    let mut b = [0u8; 18];
    // SystemRandom only fails if the OS has no randomness at all.
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        b = std::process::id().to_be_bytes().repeat(5)[..18]
            .try_into()
            .unwrap_or([7u8; 18]);
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// A uniformly random fraction in `[0, 1)`, for backoff jitter.
pub(crate) fn random_fraction() -> f64 {
    let mut b = [0u8; 4];
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        return 0.5;
    }
    f64::from(u32::from_be_bytes(b)) / (f64::from(u32::MAX) + 1.0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use dzl_types::signing::{verify_request, SignatureError, SignedParts};

    fn parts(body: &[u8]) -> SignedParts<'_> {
        SignedParts {
            method: "POST",
            path_and_query: "/v1/deposits",
            timestamp: 1_795_334_400,
            nonce: "nonce-0123456789ab",
            body,
        }
    }

    /// What the SDK signs, the vault of the same suite accepts and the vault
    /// of the other suite refuses as the wrong algorithm.
    #[test]
    fn signatures_follow_the_suite_and_the_vaults_check_accepts_them() {
        for suite in Suite::ALL {
            let signer = Signer::new("k_1", "s3cr3t").for_suite(suite);
            assert_eq!(signer.algorithm(), SignatureAlgorithm::for_suite(suite));
            let p = parts(b"{}");
            let h = signer.sign_with(p.method, p.path_and_query, p.body, p.timestamp, p.nonce);
            assert_eq!(h.signature.starts_with("HMAC-SM3 "), suite == Suite::Gm);
            assert_eq!(
                verify_request(suite, &[b"s3cr3t".as_slice()], &p, &h.signature),
                Ok(())
            );
            let other = Suite::ALL.into_iter().find(|o| *o != suite).unwrap();
            assert!(matches!(
                verify_request(other, &[b"s3cr3t".as_slice()], &p, &h.signature),
                Err(SignatureError::AlgorithmRefused { .. })
            ));
        }
        let dbg = format!("{:?}", Signer::new("k_1", "s3cr3t").for_suite(Suite::Gm));
        assert!(dbg.contains("HMAC-SM3") && !dbg.contains("s3cr3t"), "{dbg}");
    }
}
