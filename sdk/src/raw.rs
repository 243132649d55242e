//! The raw transport: signed requests out, status, headers and body back.
//! The typed clients send through it; the server's black-box tests use it
//! directly to send what the typed clients never would.

use dzl_types::signing;

use crate::error::TransportError;
use crate::signer::{SignedHeaders, Signer};

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
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Sends signed requests to a vault and returns what came back, whatever it
/// is. Prefer the typed clients ([`crate::PlatformClient`],
/// [`crate::FunderClient`], [`crate::OperatorClient`]).
#[derive(Debug, Clone)]
pub struct RawClient {
    base: String,
    http: reqwest::Client,
    signer: Option<Signer>,
}

impl RawClient {
    /// A client of `base` (e.g. `http://127.0.0.1:8080`) signing with `signer`.
    pub fn new(base: impl Into<String>, signer: Option<Signer>) -> Self {
        RawClient::with_http(base, reqwest::Client::new(), signer)
    }

    /// A client over an existing connection pool.
    pub(crate) fn with_http(
        base: impl Into<String>,
        http: reqwest::Client,
        signer: Option<Signer>,
    ) -> Self {
        RawClient {
            base: base.into().trim_end_matches('/').to_owned(),
            http,
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
                .header(reqwest::header::CONTENT_TYPE, "application/json")
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
