//! The dzl-vault client SDK. For now: [`Signer`], which signs requests
//! exactly as DESIGN §4 specifies, and [`RawClient`], which sends signed
//! requests and returns status, headers and body. Typed platform and funder
//! clients build on these.

use base64::Engine as _;
use dzl_types::signing;
use ring::rand::SecureRandom as _;

pub use dzl_types;

/// A tenant's signing credentials. `Debug` never prints the secret.
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
    /// `X-DZL-Timestamp`.
    pub timestamp: i64,
    /// `X-DZL-Nonce`.
    pub nonce: String,
    /// `X-DZL-Signature`.
    pub signature: String,
}

impl Signer {
    /// Credentials from `dzlctl tenant add`.
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

    /// Signs with an explicit timestamp and nonce.
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

    /// Signs now, with a fresh random nonce.
    pub fn sign(&self, method: &str, path_and_query: &str, body: &[u8]) -> SignedHeaders {
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        self.sign_with(method, path_and_query, body, timestamp, &fresh_nonce())
    }
}

/// 24 random URL-safe characters from the system's CSPRNG.
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

/// Transport failures.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The request could not be sent or the answer read.
    #[error("transport: {0}")]
    Http(#[from] reqwest::Error),
}

/// A raw answer.
#[derive(Debug)]
pub struct RawResponse {
    /// Status.
    pub status: u16,
    /// Headers.
    pub headers: reqwest::header::HeaderMap,
    /// Body.
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Sends signed requests to a vault.
#[derive(Debug, Clone)]
pub struct RawClient {
    base: String,
    http: reqwest::Client,
    signer: Option<Signer>,
}

impl RawClient {
    /// A client of `base` (e.g. `http://127.0.0.1:8080`) signing with `signer`.
    pub fn new(base: impl Into<String>, signer: Option<Signer>) -> Self {
        RawClient {
            base: base.into().trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            signer,
        }
    }

    /// Sends `method path` with `body` (JSON when not empty), signed.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<RawResponse, TransportError> {
        let headers = self.signer.as_ref().map(|s| s.sign(method, path, body));
        self.send_with(method, path, body, headers).await
    }

    /// Sends with explicit signature headers (or none).
    pub async fn send_with(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        headers: Option<SignedHeaders>,
    ) -> Result<RawResponse, TransportError> {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
        let mut req = self.http.request(m, format!("{}{path}", self.base));
        if let Some(h) = headers {
            req = req
                .header(signing::HEADER_KEY_ID, h.key_id)
                .header(signing::HEADER_TIMESTAMP, h.timestamp.to_string())
                .header(signing::HEADER_NONCE, h.nonce)
                .header(signing::HEADER_SIGNATURE, h.signature);
        }
        if !body.is_empty() {
            req = req
                .header("Content-Type", "application/json")
                .body(body.to_vec());
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await?.to_vec();
        Ok(RawResponse {
            status,
            headers,
            body,
        })
    }

    /// Signs as `signer` instead.
    pub fn with_signer(&self, signer: Signer) -> Self {
        RawClient {
            signer: Some(signer),
            ..self.clone()
        }
    }
}
