//! The harness: a vault on its own temporary directory driven through the
//! real `dzlctl` binary, and (for the lifecycle tests) the real server
//! running in-process on port 0 over the same data directory, with a
//! movable clock and tenants that sign with `dzl_sdk`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// One vault under test: a temp dir holding `data/` and `root.key`.
pub struct Vault {
    pub dir: tempfile::TempDir,
}

impl Vault {
    pub fn new() -> Self {
        Vault {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A vault that `init` has run on.
    pub fn initialised() -> Self {
        let v = Vault::new();
        let out = v.run(&["init"]);
        assert_eq!(code(&out), 0, "init: {}", stderr(&out));
        v
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn key_file(&self) -> PathBuf {
        self.dir.path().join("root.key")
    }

    /// The binary with a clean environment, `DZL_ROOT_KEY_FILE` set to this
    /// vault's key file, and no data dir given.
    pub fn bare(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dzlctl"));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("DZL") {
                cmd.env_remove(name);
            }
        }
        cmd.env("DZL_ROOT_KEY_FILE", self.key_file())
            .current_dir(self.dir.path());
        cmd
    }

    /// The binary on this vault's data dir.
    pub fn cmd(&self) -> Command {
        let mut cmd = self.bare();
        cmd.arg("--data-dir").arg(self.data());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// Runs with `--json`; returns the exit code and the one JSON document.
    pub fn json(&self, args: &[&str]) -> (i32, Value) {
        let out = self.cmd().arg("--json").args(args).output().unwrap();
        (code(&out), one_document(&out))
    }

    pub fn add(&self, args: &[&str]) -> Value {
        let mut all = vec!["tenant", "add"];
        all.extend_from_slice(args);
        let (code, doc) = self.json(&all);
        assert_eq!(code, 0, "{doc}");
        doc
    }

    pub fn tenants(&self) -> Vec<Value> {
        let (code, doc) = self.json(&["tenant", "list"]);
        assert_eq!(code, 0, "{doc}");
        doc["tenants"].as_array().unwrap().clone()
    }
}

pub fn code(out: &Output) -> i32 {
    out.status.code().expect("exited, not killed")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

/// Stdout must hold exactly one JSON document and nothing else.
pub fn one_document(out: &Output) -> Value {
    let docs: Vec<Value> = serde_json::Deserializer::from_slice(&out.stdout)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", stdout(out)));
    assert_eq!(docs.len(), 1, "expected one JSON document: {}", stdout(out));
    docs.into_iter().next().unwrap()
}

pub fn keys(doc: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = doc
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    k.sort_unstable();
    k
}

pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

// ---- the lifecycle harness: JSON verbs, tenants, and a real server ----

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use dzl_crypto::RootKey;
use dzl_sdk::{RawClient, RawResponse, Signer};
use dzl_vault_server::settings::Settings;
use dzl_vault_server::startup::Application;
use dzl_vault_server::AppState;
use serde_json::json;

/// Canary identity: searched for in exports.
pub const NAME: &str = "欧阳金丝雀";
pub const ID_NUMBER: &str = "11010519491231002X";
pub const PHONE: &str = "13912345678";

/// A tenant as `tenant add` made it.
#[derive(Clone)]
pub struct Tenant {
    pub id: String,
    pub signer: Signer,
}

impl Vault {
    /// Runs with `--json`, asserts exit 0, returns the document.
    pub fn ok(&self, args: &[&str]) -> Value {
        let (code, doc) = self.json(args);
        assert_eq!(code, 0, "dzlctl {args:?}: {doc}");
        doc
    }

    /// The binary with `--json` on a blocking thread, so an in-process
    /// server on this runtime keeps running; returns code and document.
    pub async fn json_async(&self, args: &[&str]) -> (i32, Value) {
        let mut cmd = self.cmd();
        cmd.arg("--json").args(args);
        let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap();
        (code(&out), one_document(&out))
    }

    /// [`Vault::json_async`], asserting exit 0.
    pub async fn ok_async(&self, args: &[&str]) -> Value {
        let (code, doc) = self.json_async(args).await;
        assert_eq!(code, 0, "dzlctl {args:?}: {doc}");
        doc
    }

    /// The root key in this vault's key file.
    pub fn root_key(&self) -> RootKey {
        RootKey::from_base64(&std::fs::read_to_string(self.key_file()).unwrap()).unwrap()
    }

    /// Adds a tenant of `kind` through the binary.
    pub fn tenant(&self, kind: &str, name: &str) -> Tenant {
        let doc = self.add(&["--kind", kind, "--name", name]);
        Tenant {
            id: doc["tenant_id"].as_str().unwrap().to_owned(),
            signer: Signer::new(
                doc["key_id"].as_str().unwrap(),
                doc["secret"].as_str().unwrap(),
            ),
        }
    }

    /// `keys list`, as (version, state, data_keys) triples.
    pub fn key_versions(&self) -> Vec<(u64, String, u64)> {
        self.ok(&["keys", "list"])["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| {
                (
                    k["version"].as_u64().unwrap(),
                    k["state"].as_str().unwrap().to_owned(),
                    k["data_keys"].as_u64().unwrap(),
                )
            })
            .collect()
    }
}

/// RFC 3339 with seconds, for `--now` and bounds.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The real server over a vault's data directory, on port 0, with a clock
/// that tests move forward.
pub struct Server {
    pub base: String,
    pub state: actix_web::web::Data<AppState>,
    offset_ms: Arc<AtomicI64>,
}

impl Server {
    /// Builds and starts the server on the current actix runtime.
    pub fn start(data: &Path, root: impl dzl_crypto::RootKeyHolder + 'static) -> Server {
        let mut settings = Settings::default();
        settings.store.data_dir = data.to_owned();
        settings.server.bind = "127.0.0.1:0".into();
        settings.server.workers = 2;
        let offset_ms = Arc::new(AtomicI64::new(0));
        let off = offset_ms.clone();
        let clock =
            Arc::new(move || Utc::now() + Duration::milliseconds(off.load(Ordering::SeqCst)));
        let app = Application::build_with_clock(settings, root, clock).expect("build");
        let base = format!("http://127.0.0.1:{}", app.port());
        let state = app.state();
        actix_web::rt::spawn(app.run());
        Server {
            base,
            state,
            offset_ms,
        }
    }

    /// The server's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.state.now()
    }

    /// Moves the server's clock forward.
    pub fn advance(&self, d: Duration) {
        self.offset_ms
            .fetch_add(d.num_milliseconds(), Ordering::SeqCst);
    }

    /// Sends a request signed by `t` at the server's clock.
    pub async fn send(&self, t: &Tenant, method: &str, path: &str, body: &Value) -> RawResponse {
        let bytes = if body.is_null() {
            Vec::new()
        } else {
            serde_json::to_vec(body).unwrap()
        };
        let headers = t.signer.sign_with(
            method,
            path,
            &bytes,
            self.now().timestamp(),
            &dzl_sdk::fresh_nonce(),
        );
        RawClient::new(self.base.clone(), None)
            .send_with(method, path, &bytes, Some(headers))
            .await
            .expect("transport")
    }

    /// An unsigned GET.
    pub async fn get(&self, path: &str) -> RawResponse {
        RawClient::new(self.base.clone(), None)
            .send("GET", path, b"")
            .await
            .expect("transport")
    }

    /// Deposits all three groups with one code per `(funder, ttl)` grant;
    /// returns the response.
    pub async fn deposit(
        &self,
        platform: &Tenant,
        external_ref: &str,
        grants: &[(&Tenant, u32)],
    ) -> Value {
        let now = self.now();
        let grants: Vec<Value> = grants
            .iter()
            .map(|(f, ttl)| json!({"funder_id": f.id, "scopes": ["applicant", "device", "risk"], "ttl_seconds": ttl}))
            .collect();
        let body = json!({
            "external_ref": external_ref,
            "purpose": "credit_application",
            "consent": {
                "consent_id": "CNS-77",
                "granted_at": rfc3339(now - Duration::hours(1)),
                "expires_at": rfc3339(now + Duration::days(365)),
                "scopes": ["applicant", "device", "risk"],
                "evidence_sha256": "a".repeat(64),
            },
            "applicant": {"name": NAME, "id_type": "resident_id", "id_number": ID_NUMBER, "phone": PHONE},
            "device": {"device_id": "d-1", "os": "android", "ip": "203.0.113.7"},
            "risk": {"score": 712},
            "grants": grants,
        });
        let r = self.send(platform, "POST", "/v1/deposits", &body).await;
        assert_eq!(
            r.status,
            201,
            "deposit: {}",
            String::from_utf8_lossy(&r.body)
        );
        r.json()
    }

    /// Deposits with one code for `funder`; returns the code.
    pub async fn deposit_code(
        &self,
        platform: &Tenant,
        funder: &Tenant,
        external_ref: &str,
    ) -> String {
        let d = self
            .deposit(platform, external_ref, &[(funder, 3600)])
            .await;
        d["codes"][0]["code"].as_str().unwrap().to_owned()
    }

    /// Redeems `code` as `funder` for credit_application.
    pub async fn redeem(&self, funder: &Tenant, code: &str) -> RawResponse {
        self.send(
            funder,
            "POST",
            "/v1/redemptions",
            &json!({"code": code, "purpose": "credit_application"}),
        )
        .await
    }

    /// Redeems `code` and asserts the applicant comes back whole.
    pub async fn assert_redeems(&self, funder: &Tenant, code: &str) {
        let r = self.redeem(funder, code).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let v = r.json();
        assert_eq!(v["applicant"]["name"], NAME);
        assert_eq!(v["risk"]["score"], 712);
    }

    /// Waits until the server has loaded the store's current generation.
    pub async fn wait_reloaded(&self) {
        for _ in 0..100 {
            let current = self.state.store.generation().unwrap();
            if self.state.loaded().is_ok_and(|l| l.generation == current) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the server did not reload");
    }

    /// The key versions the server holds, once reloaded.
    pub async fn loaded_versions(&self) -> Vec<u32> {
        self.wait_reloaded().await;
        self.state.loaded().unwrap().keys.keyring.versions()
    }
}

/// Asserts a problem+json answer with `status` and `code`.
pub fn assert_problem(r: &RawResponse, status: u16, code: &str) {
    let body = String::from_utf8_lossy(&r.body);
    assert_eq!(r.status, status, "expected {status} {code}, got {body}");
    assert_eq!(r.json()["code"], code, "{body}");
}
