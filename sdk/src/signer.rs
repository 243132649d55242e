//! Request signing, exactly as docs/api.md specifies (HMAC-SHA256 over the
//! canonical string, standard padded base64), with a fresh nonce per request
//! and the timestamp from the system clock.

use base64::Engine as _;
use dzl_types::signing;
use ring::rand::SecureRandom as _;

/// A tenant's signing credentials: the key id and secret `dzlctl tenant add`
/// printed once. `Debug` never prints the secret.
#[derive(Clone)]
pub struct Signer {
    key_id: String,
    secret: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("key_id", &self.key_id)
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
        }
    }

    /// The key id.
    pub fn key_id(&self) -> &str {
        &self.key_id
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
        let canonical = signing::canonical(method, path_and_query, timestamp, nonce, body);
        SignedHeaders {
            key_id: self.key_id.clone(),
            timestamp,
            nonce: nonce.to_owned(),
            signature: signing::sign(self.secret.as_bytes(), &canonical),
        }
    }

    /// Signs now (system clock), with a fresh random nonce.
    pub fn sign(&self, method: &str, path_and_query: &str, body: &[u8]) -> SignedHeaders {
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        self.sign_with(method, path_and_query, body, timestamp, &fresh_nonce())
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
