//! TLS for the listener (rustls on ring): a certificate chain and key, and
//! optionally a client CA — with it, every client must present a
//! certificate that CA issued (mutual TLS), so a stolen signing secret alone
//! is not enough to call the vault.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use serde::Deserialize;

/// `[tls]` settings. Without `cert_file` the server speaks plain HTTP (for
/// loopback behind a TLS-terminating proxy only).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// PEM CA certificates that issue client certificates; when set, clients
    /// must present one.
    pub client_ca_file: Option<PathBuf>,
}

impl TlsSettings {
    /// Whether TLS is configured.
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing certificates in {}", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{} holds no certificate", path.display());
    Ok(certs)
}

/// The rustls server configuration for `s` (TLS 1.2 and 1.3, ring).
pub fn server_config(s: &TlsSettings) -> anyhow::Result<rustls::ServerConfig> {
    let cert_file = s
        .cert_file
        .as_deref()
        .context("tls.cert_file is required for TLS")?;
    let key_file = s
        .key_file
        .as_deref()
        .context("tls.key_file is required with tls.cert_file")?;
    let chain = certs(cert_file)?;
    let key = PrivateKeyDer::from_pem_file(key_file)
        .with_context(|| format!("reading the key in {}", key_file.display()))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match &s.client_ca_file {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs(ca)? {
                roots
                    .add(c)
                    .with_context(|| format!("adding a client CA from {}", ca.display()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .context("building the client certificate verifier")?;
            builder.with_client_cert_verifier(Arc::new(LoggedRefusals(verifier)))
        }
        None => builder.with_no_client_auth(),
    };
    builder
        .with_single_cert(chain, key)
        .context("the certificate and key do not match")
}

/// The client certificate verifier, with a log line for every certificate
/// it refuses: the handshake's failure reaches no other log, so without it
/// an operator cannot tell why a client's connections are dropped. The line
/// names the reason and the certificate's SHA-256 fingerprint, nothing from
/// inside the certificate.
#[derive(Debug)]
struct LoggedRefusals(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for LoggedRefusals {
    fn offer_client_auth(&self) -> bool {
        self.0.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.0.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0
            .verify_client_cert(end_entity, intermediates, now)
            .inspect_err(|e| {
                let fingerprint = ring::digest::digest(&ring::digest::SHA256, end_entity);
                log::warn!(
                    "TLS: refused a client certificate (SHA-256 {}): {e}",
                    hex::encode_upper(fingerprint.as_ref())
                );
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The verified client certificate of a mutual-TLS connection, taken once
/// per connection ([`on_connect`]) and read by the signature
/// check when the tenant is pinned (`HttpRequest::conn_data`).
#[derive(Debug, Clone)]
pub struct PeerCertificate(pub dzl_crypto::CertIdentity);

/// Stores the leaf certificate of a TLS connection in the connection's
/// data (plain TCP connections get none).
pub fn on_connect(
    tls: &actix_tls::accept::rustls_0_23::TlsStream<actix_web::rt::net::TcpStream>,
    data: &mut actix_web::dev::Extensions,
) {
    if let Some(leaf) = tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
        data.insert(PeerCertificate(dzl_crypto::CertIdentity::from_der(leaf)));
    }
}
