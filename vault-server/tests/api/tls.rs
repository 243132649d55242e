//! TLS and mutual TLS with a throw-away CA: a signed round trip over TLS, a
//! client without a certificate refused, a certificate from another CA
//! refused.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;

use crate::helpers::*;

struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        Ca {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    /// A leaf certificate and key (PEM).
    fn leaf(&self, cn: &str, sans: &[&str]) -> (String, String) {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn tls_config(ca_pem: &str, identity: Option<&(String, String)>) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    match identity {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
                .map(|c| c.unwrap())
                .collect();
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    }
}

/// One HTTP/1.1 exchange over TLS; the response text, or the I/O error.
async fn exchange(
    port: u16,
    config: rustls::ClientConfig,
    request: Vec<u8>,
) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await?;
    tls.write_all(&request).await?;
    let mut out = Vec::new();
    tls.read_to_end(&mut out).await?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").into_bytes()
}

/// A vault serving mutual TLS: its certificate from `server_ca`, client
/// certificates required from `client_ca`.
struct MtlsVault {
    app: TestApp,
    server_ca: Ca,
    client_ca: Ca,
    _dir: tempfile::TempDir,
}

async fn mtls_vault() -> MtlsVault {
    mtls_vault_with(Options::default()).await
}

async fn mtls_vault_with(mut opts: Options) -> MtlsVault {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = Ca::new("dzl test server CA");
    let client_ca = Ca::new("dzl test client CA");
    let (cert, key) = server_ca.leaf("vault.test", &["localhost", "127.0.0.1"]);
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    opts.settings.tls.cert_file = Some(write("server.pem", &cert));
    opts.settings.tls.key_file = Some(write("server.key", &key));
    opts.settings.tls.client_ca_file = Some(write("clients.pem", &client_ca.issuer.pem()));
    MtlsVault {
        app: spawn_app_with(opts).await,
        server_ca,
        client_ca,
        _dir: dir,
    }
}

#[actix_web::test]
async fn mutual_tls_round_trip_and_refusals() {
    let v = mtls_vault().await;
    let (app, server_ca, client_ca) = (&v.app, &v.server_ca, &v.client_ca);
    let stranger_ca = Ca::new("someone else's CA");
    let port: u16 = app.base.rsplit(':').next().unwrap().parse().unwrap();

    // A platform with a certificate from the client CA: a signed deposit over TLS.
    let platform_cert = client_ca.leaf("platform-a", &[]);
    let body = serde_json::to_vec(&deposit_body("TLS-1", json!([]))).unwrap();
    let h = app.platform.signer.sign("POST", "/v1/deposits", &body);
    let mut request = format!(
        "POST /v1/deposits HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nX-DZL-Key-Id: {}\r\nX-DZL-Timestamp: {}\r\nX-DZL-Nonce: {}\r\nX-DZL-Signature: {}\r\n\r\n",
        body.len(),
        h.key_id,
        h.timestamp,
        h.nonce,
        h.signature
    )
    .into_bytes();
    request.extend_from_slice(&body);
    let answer = exchange(
        port,
        tls_config(&server_ca.issuer.pem(), Some(&platform_cert)),
        request,
    )
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert!(answer.contains("\"deposit_id\":\"dep_"), "{answer}");

    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = reqwest::get(format!("{}/healthz", app.base)).await;
    assert!(plain.is_err() || plain.is_ok_and(|r| r.status() != 200));
    // No client certificate: refused during or right after the handshake.
    let anonymous = exchange(
        port,
        tls_config(&server_ca.issuer.pem(), None),
        get("/healthz"),
    )
    .await;
    assert!(
        anonymous.as_ref().map_or(true, |t| !t.contains("200 OK")),
        "{anonymous:?}"
    );
    // A certificate from another CA: refused too.
    let intruder = stranger_ca.leaf("intruder", &[]);
    let stranger = exchange(
        port,
        tls_config(&server_ca.issuer.pem(), Some(&intruder)),
        get("/healthz"),
    )
    .await;
    assert!(
        stranger.as_ref().map_or(true, |t| !t.contains("200 OK")),
        "{stranger:?}"
    );
    // Through the SDK: custom root and client identity.
    let https = app
        .base
        .replace("http://", "https://")
        .replace("127.0.0.1", "localhost");
    let vault = dzl_sdk::Vault::builder(https.clone())
        .root_certificate_pem(server_ca.issuer.pem())
        .client_identity_pem(platform_cert.0.as_bytes(), platform_cert.1.as_bytes())
        .build()
        .unwrap();
    let request: dzl_types::wire::DepositRequest =
        serde_json::from_value(deposit_body("TLS-2", json!([]))).unwrap();
    let deposit = dzl_sdk::Deposit::try_from(request).unwrap();
    let created = vault
        .platform(app.platform.signer.clone())
        .deposit(&deposit)
        .await
        .unwrap();
    assert!(created.deposit_id.as_str().starts_with("dep_"));
    // The SDK without a client certificate cannot reach it.
    let no_identity = dzl_sdk::Vault::builder(https)
        .root_certificate_pem(server_ca.issuer.pem())
        .build()
        .unwrap();
    let request: dzl_types::wire::DepositRequest =
        serde_json::from_value(deposit_body("TLS-3", json!([]))).unwrap();
    let deposit = dzl_sdk::Deposit::try_from(request).unwrap();
    let refused = no_identity
        .platform(app.platform.signer.clone())
        .deposit(&deposit)
        .await;
    assert!(
        matches!(refused, Err(dzl_sdk::Error::Transport(_))),
        "{refused:?}"
    );

    // The same client with the right certificate is answered.
    let ok = exchange(
        port,
        tls_config(&server_ca.issuer.pem(), Some(&platform_cert)),
        get("/healthz"),
    )
    .await
    .unwrap();
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
}

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

#[actix_web::test]
async fn a_pinned_tenant_is_answered_only_over_its_own_certificate() {
    let v = mtls_vault().await;
    let (app, server_ca, client_ca) = (&v.app, &v.server_ca, &v.client_ca);
    let https = app
        .base
        .replace("http://", "https://")
        .replace("127.0.0.1", "localhost");

    // Both certificates are from the client CA, so both pass the TLS layer.
    let cert_a = client_ca.leaf("platform-a", &[]);
    let cert_b = client_ca.leaf("platform-b", &[]);
    let renewed_b = client_ca.leaf("platform-b", &[]);
    assert_ne!(der(&cert_b.0), der(&renewed_b.0));
    // The platform is pinned to exactly cert A; the other platform to the
    // subject of B (so B's renewal keeps working).
    let a_id = dzl_types::TenantId::parse(&app.platform.id).unwrap();
    let b_id = dzl_types::TenantId::parse(&app.other_platform.id).unwrap();
    let pin_a =
        dzl_crypto::CertPin::Sha256(dzl_crypto::CertIdentity::from_der(&der(&cert_a.0)).sha256);
    let pin_b = dzl_crypto::CertPin::subject("CN=platform-b").unwrap();
    off_rt(|| {
        let store = &app.state.store;
        store.set_tenant_cert_pin("cli:test", &a_id, Some(pin_a))?;
        store.set_tenant_cert_pin("cli:test", &b_id, Some(pin_b))
    })
    .unwrap();
    off_rt(|| app.state.reload(true));

    let vault = |identity: &(String, String)| {
        dzl_sdk::Vault::builder(https.clone())
            .root_certificate_pem(server_ca.issuer.pem())
            .client_identity_pem(identity.0.as_bytes(), identity.1.as_bytes())
            .build()
            .unwrap()
    };
    let deposit = |external_ref: &str, grants: serde_json::Value| {
        let request: dzl_types::wire::DepositRequest =
            serde_json::from_value(deposit_body(external_ref, grants)).unwrap();
        dzl_sdk::Deposit::try_from(request).unwrap()
    };
    let mismatch = |r: Result<dzl_types::wire::DepositResponse, dzl_sdk::Error>| match r {
        Err(dzl_sdk::Error::Unauthorized { code, .. }) => {
            assert_eq!(code, dzl_types::ErrorCode::CertificateMismatch)
        }
        other => panic!("expected 401 certificate_mismatch, got {other:?}"),
    };

    // A's secret over B's certificate (a stolen secret): refused, nothing stored.
    mismatch(
        vault(&cert_b)
            .platform(app.platform.signer.clone())
            .deposit(&deposit("PIN-A", json!([])))
            .await,
    );
    // A's secret over A's certificate: served, the same external_ref is free.
    let grant = json!([{"funder_id": app.funder.id, "scopes": ["risk"], "ttl_seconds": 600}]);
    let created = vault(&cert_a)
        .platform(app.platform.signer.clone())
        .deposit(&deposit("PIN-A", grant))
        .await
        .unwrap();
    // B pinned by subject: its certificate and its renewal are served, A's is not.
    for (identity, external_ref) in [(&cert_b, "PIN-B1"), (&renewed_b, "PIN-B2")] {
        vault(identity)
            .platform(app.other_platform.signer.clone())
            .deposit(&deposit(external_ref, json!([])))
            .await
            .unwrap();
    }
    mismatch(
        vault(&cert_a)
            .platform(app.other_platform.signer.clone())
            .deposit(&deposit("PIN-B3", json!([])))
            .await,
    );
    // An unpinned funder may use any certificate the client CA issued.
    let redeemed = vault(&cert_b)
        .funder(app.funder.signer.clone())
        .redeem(
            &created.codes[0].code,
            dzl_types::Purpose::CreditApplication,
        )
        .await
        .unwrap();
    assert_eq!(redeemed.deposit_id(), &created.deposit_id);
}

/// Slow TLS clients: a handshake that does not finish within
/// `server.tls_handshake_timeout_ms`, and a request head sent a byte at a
/// time after a finished handshake, are both cut, while a proper client
/// keeps being answered.
#[actix_web::test]
async fn slow_tls_handshakes_and_heads_are_cut_while_others_are_answered() {
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut opts = Options::default();
    opts.settings.server.tls_handshake_timeout_ms = 500;
    opts.settings.server.request_timeout_ms = 1000;
    let v = mtls_vault_with(opts).await;
    let port: u16 = v.app.base.rsplit(':').next().unwrap().parse().unwrap();
    // 40 connections that start a handshake (a TLS record header) and stop.
    let stalled: Vec<_> = (0..40)
        .map(|_| {
            tokio::spawn(async move {
                let start = Instant::now();
                let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .unwrap();
                s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).await.unwrap();
                let mut buf = [0u8; 64];
                let closed = tokio::time::timeout(Duration::from_secs(10), async {
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {}
                        }
                    }
                })
                .await
                .is_ok();
                (closed, start.elapsed())
            })
        })
        .collect();
    // A client with a certificate, a finished handshake, and a head that
    // never ends.
    let identity = v.client_ca.leaf("platform-a", &[]);
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_config(
        &v.server_ca.issuer.pem(),
        Some(&identity),
    )));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut slow = connector.connect(name, tcp).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    let start = Instant::now();
    let mut cut = false;
    while start.elapsed() < Duration::from_secs(10) {
        if slow.write_all(b"X-Slow: 1\r\n").await.is_err() {
            cut = true;
            break;
        }
        let mut buf = [0u8; 256];
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(100), slow.read(&mut buf)).await {
            if matches!(r, Ok(0) | Err(_)) {
                cut = true;
                break;
            }
        }
    }
    assert!(
        cut,
        "a TLS client sending its head a byte at a time was held"
    );
    // Meanwhile a proper client is answered.
    let ok = exchange(
        port,
        tls_config(&v.server_ca.issuer.pem(), Some(&identity)),
        get("/healthz"),
    )
    .await
    .unwrap();
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    for s in stalled {
        let (closed, after) = s.await.unwrap();
        assert!(
            closed && after < Duration::from_secs(3),
            "closed {closed} after {after:?}"
        );
    }
}

#[actix_web::test]
#[allow(clippy::zombie_processes)] // killed and waited for below
async fn a_refused_client_certificate_leaves_a_line_in_the_server_log() {
    let dir = tempfile::tempdir().unwrap();
    let root = new_root();
    provision(dir.path(), &root, None);
    let server_ca = Ca::new("dzl test server CA");
    let client_ca = Ca::new("dzl test client CA");
    let (cert, key) = server_ca.leaf("vault.test", &["localhost", "127.0.0.1"]);
    let files = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = files.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.into_os_string()
    };
    let (cert, key, clients) = (
        write("server.pem", &cert),
        write("server.key", &key),
        write("clients.pem", &client_ca.issuer.pem()),
    );
    let log = files.path().join("server.log");
    let mut server = crate::common::start(
        dir.path(),
        &root,
        &log,
        &[
            ("DZL__TLS__CERT_FILE", cert.as_os_str()),
            ("DZL__TLS__KEY_FILE", key.as_os_str()),
            ("DZL__TLS__CLIENT_CA_FILE", clients.as_os_str()),
        ],
    );
    let port: u16 = server.base.rsplit(':').next().unwrap().parse().unwrap();

    let intruder = Ca::new("someone else's CA").leaf("intruder", &[]);
    let refused = exchange(
        port,
        tls_config(&server_ca.issuer.pem(), Some(&intruder)),
        get("/healthz"),
    )
    .await;
    let fingerprint = hex::encode_upper(ring::digest::digest(
        &ring::digest::SHA256,
        &der(&intruder.0),
    ));
    let mut text = String::new();
    for _ in 0..100 {
        text = std::fs::read_to_string(&log).unwrap();
        if text.contains("refused a client certificate") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();

    assert!(
        refused.as_ref().map_or(true, |t| !t.contains("200 OK")),
        "{refused:?}"
    );
    let line = text
        .lines()
        .find(|l| l.contains("refused a client certificate"))
        .unwrap_or_else(|| panic!("no line for the refused certificate in:\n{text}"));
    assert!(line.contains(&fingerprint), "{line}");
    assert!(!line.contains("intruder"), "{line}");
}
