//! The real `dzl-vault` binary as a child process: finding it, starting it
//! on 127.0.0.1:0 over a data directory, waiting until it is ready, and
//! killing it with SIGKILL.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use dzl_crypto::RootKey;

/// Finds the `dzl-vault` binary to test, in this order:
///
/// 1. `DZL_VAULT_BIN`, when set;
/// 2. `cargo build -p dzl-vault-server --bin dzl-vault` in this workspace
///    (a no-op when it is fresh), taking the executable path from cargo's
///    JSON messages, so the profile and target directory are whatever cargo
///    uses and the binary is never stale;
/// 3. `dzl-vault` beside the running executable or its parent directory
///    (`target/<profile>/` for a test in `target/<profile>/deps/`), when
///    cargo cannot be run.
pub fn vault_binary() -> anyhow::Result<PathBuf> {
    workspace_binary("DZL_VAULT_BIN", "dzl-vault-server", "dzl-vault")
}

/// Finds the `dzlctl` binary as [`vault_binary`] finds `dzl-vault`
/// (`DZL_DZLCTL_BIN`, else `cargo build -p dzlctl --bin dzlctl`, else beside
/// this executable).
pub fn dzlctl_binary() -> anyhow::Result<PathBuf> {
    workspace_binary("DZL_DZLCTL_BIN", "dzlctl", "dzlctl")
}

fn workspace_binary(var: &str, package: &str, bin: &str) -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os(var) {
        let p = PathBuf::from(p);
        anyhow::ensure!(p.is_file(), "{var}={} is not a file", p.display());
        return Ok(p);
    }
    match build_with_cargo(package, bin) {
        Ok(p) => return Ok(p),
        Err(e) => {
            log::warn!("cargo build of {bin} failed ({e:#}); looking beside this executable")
        }
    }
    let exe = std::env::current_exe()?;
    for dir in exe.ancestors().skip(1).take(2) {
        let p = dir.join(bin);
        if p.is_file() {
            return Ok(p);
        }
    }
    anyhow::bail!("no {bin} binary: set {var} or build it (cargo build -p {package})")
}

fn build_with_cargo(package: &str, bin: &str) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    let out = Command::new(cargo)
        .args(["build", "--quiet", "-p", package, "--bin", bin])
        .args(["--message-format", "json"])
        .arg("--manifest-path")
        .arg(&manifest)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo")?;
    anyhow::ensure!(
        out.status.success(),
        "cargo build exited with {}",
        out.status
    );
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["reason"] == "compiler-artifact" && v["target"]["name"] == bin {
            if let Some(p) = v["executable"].as_str() {
                return Ok(PathBuf::from(p));
            }
        }
    }
    anyhow::bail!("cargo named no {bin} executable")
}

/// `dzl-vault` exited before it listened (a harness that kills it during
/// start-up finds this error with `downcast_ref`).
#[derive(Debug)]
pub struct ExitedEarly {
    /// How it exited.
    pub status: std::process::ExitStatus,
    /// What it logged meanwhile.
    pub log: String,
}

impl std::fmt::Display for ExitedEarly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "dzl-vault exited with {} before listening: {}",
            self.status, self.log
        )
    }
}

impl std::error::Error for ExitedEarly {}

/// A running `dzl-vault serve`.
pub struct VaultProcess {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

impl VaultProcess {
    /// Starts `bin serve --bind 127.0.0.1:0 --data-dir dir` with the root key
    /// in `DZL_ROOT_KEY`, appending its log (`RUST_LOG`, default `info`) to
    /// `log`, and waits until it names its port (at most `timeout`).
    pub fn start(
        bin: &Path,
        dir: &Path,
        root: &RootKey,
        log: &Path,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        Self::start_with::<&str>(bin, dir, root, log, timeout, &[])
    }

    /// As [`VaultProcess::start`], with extra environment variables
    /// (`DZL__SECTION__KEY` settings).
    pub fn start_with<V: AsRef<std::ffi::OsStr>>(
        bin: &Path,
        dir: &Path,
        root: &RootKey,
        log: &Path,
        timeout: Duration,
        env: &[(&str, V)],
    ) -> anyhow::Result<Self> {
        let already = std::fs::metadata(log).map(|m| m.len()).unwrap_or(0) as usize;
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let mut cmd = Command::new(bin);
        cmd.args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .env("DZL_ROOT_KEY", root.to_base64())
            .env_remove("DZL_ROOT_KEY_FILE")
            .env(
                "RUST_LOG",
                std::env::var("DZL_TESTKIT_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let deadline = Instant::now() + timeout;
        loop {
            let mut bytes = Vec::new();
            std::fs::File::open(log)?.read_to_end(&mut bytes)?;
            let text = String::from_utf8_lossy(&bytes[already.min(bytes.len())..]).into_owned();
            if let Some(port) = text
                .lines()
                .find_map(|l| l.split("dzl-vault listening on port ").nth(1))
                .and_then(|p| p.trim().parse::<u16>().ok())
            {
                return Ok(VaultProcess {
                    child,
                    base: format!("http://127.0.0.1:{port}"),
                });
            }
            if let Some(status) = child.try_wait()? {
                return Err(ExitedEarly { status, log: text }.into());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!("dzl-vault did not listen within {timeout:?}: {text}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it has exited (killed itself, or died).
    pub fn exited(&mut self) -> anyhow::Result<bool> {
        Ok(self.child.try_wait()?.is_some())
    }

    /// SIGKILL, now; [`VaultProcess::kill9`] or drop reaps it.
    pub fn sigkill(&mut self) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_none() {
            self.child.kill()?;
        }
        Ok(())
    }

    /// SIGKILL, and reap it.
    pub fn kill9(mut self) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// SIGTERM (a clean stop), and reap it; SIGKILL after `grace`.
    pub fn stop(mut self, grace: Duration) -> anyhow::Result<()> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for VaultProcess {
    fn drop(&mut self) {
        // Never leave a server behind (a panicking harness included).
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits until `GET /readyz` answers 200 (at most `timeout`).
pub async fn wait_ready(base: &str, timeout: Duration) -> anyhow::Result<()> {
    let c = dzl_sdk::RawClient::new(base, None);
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Ok(r)) =
            tokio::time::timeout(Duration::from_secs(2), c.send("GET", "/readyz", b"")).await
        {
            if r.status == 200 {
                return Ok(());
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{base} not ready within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
