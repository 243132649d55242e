//! Test support: a SoftHSM2 of its own in a directory — a generated
//! `softhsm2.conf` with its own token directory, and tokens initialised by
//! `softhsm2-util` — for the tests of this crate, `dzlctl` and the server.
//! Nothing here is used by the vault itself.
//!
//! A process talks to one SoftHSM2 configuration (`SOFTHSM2_CONF` is read
//! when the module is initialised), so in-process tests share one
//! [`SoftHsm`] and child processes are given theirs through
//! [`SoftHsm::env`].

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The user PIN of every test token.
pub const TEST_PIN: &str = "20261207";
/// The security officer PIN of every test token.
const SO_PIN: &str = "59991231";

/// Where Debian (and others) install SoftHSM2's PKCS#11 library.
const MODULE_PATHS: [&str; 4] = [
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
];

/// A SoftHSM2 configuration with initialised tokens.
#[derive(Debug, Clone)]
pub struct SoftHsm {
    /// The generated `softhsm2.conf`.
    pub conf: PathBuf,
    /// The PKCS#11 library.
    pub module: PathBuf,
    /// A file holding [`TEST_PIN`].
    pub pin_file: PathBuf,
}

/// SoftHSM2's library, if installed.
pub fn module_path() -> Option<PathBuf> {
    MODULE_PATHS.iter().map(PathBuf::from).find(|p| p.is_file())
}

impl SoftHsm {
    /// Sets up SoftHSM2 in `dir` with a token per label, each with
    /// [`TEST_PIN`]. `Ok(None)` when SoftHSM2 is not installed (the caller
    /// skips, and says so on stderr: see [`skip_notice`]).
    pub fn create(dir: &Path, tokens: &[&str]) -> Result<Option<SoftHsm>, String> {
        let Some(module) = module_path() else {
            return Ok(None);
        };
        if Command::new("softhsm2-util")
            .arg("--version")
            .output()
            .is_err()
        {
            return Ok(None);
        }
        let token_dir = dir.join("tokens");
        std::fs::create_dir_all(&token_dir).map_err(|e| format!("creating the token dir: {e}"))?;
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                token_dir.display()
            ),
        )
        .map_err(|e| format!("writing softhsm2.conf: {e}"))?;
        let pin_file = dir.join("hsm.pin");
        std::fs::write(&pin_file, format!("{TEST_PIN}\n"))
            .map_err(|e| format!("writing the PIN file: {e}"))?;
        let hsm = SoftHsm {
            conf,
            module,
            pin_file,
        };
        for label in tokens {
            hsm.init_token(label)?;
        }
        Ok(Some(hsm))
    }

    /// Initialises one more token (visible to modules initialised after).
    pub fn init_token(&self, label: &str) -> Result<(), String> {
        let out = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &self.conf)
            .args(["--init-token", "--free", "--label", label])
            .args(["--so-pin", SO_PIN, "--pin", TEST_PIN])
            .output()
            .map_err(|e| format!("running softhsm2-util: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "softhsm2-util --init-token {label}: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// The environment a process needs to use this SoftHSM2.
    pub fn env(&self) -> (&'static str, &Path) {
        ("SOFTHSM2_CONF", &self.conf)
    }

    /// The `pkcs11:` URI of the key `object` in `token`, the PIN from
    /// [`SoftHsm::pin_file`].
    pub fn uri(&self, token: &str, object: &str) -> String {
        format!(
            "pkcs11:token={token};object={object}?module-path={}&pin-source=file:{}",
            self.module.display(),
            self.pin_file.display()
        )
    }
}

/// What a test prints, loudly, when it skips for want of SoftHSM2.
pub fn skip_notice(test: &str) -> String {
    format!(
        "!! SKIPPED {test}: SoftHSM2 is not installed (apt-get install softhsm2; .ci/run does). \
         The PKCS#11 root key is untested in this run."
    )
}

/// The SoftHSM2 of this process, made on first use with the `tokens` of
/// that first call, `SOFTHSM2_CONF` set to it before any module is
/// initialised (and never changed), kept until the process ends. `None`
/// after printing [`skip_notice`] for `test` when SoftHSM2 is not
/// installed. Panics if it is installed but cannot be set up: a test that
/// can run must not skip.
pub fn shared(tokens: &[&str], test: &str) -> Option<&'static SoftHsm> {
    static HSM: OnceLock<Option<(tempfile::TempDir, SoftHsm)>> = OnceLock::new();
    let found = HSM.get_or_init(|| {
        let dir = match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => panic!("a temp dir for SoftHSM2: {e}"),
        };
        let hsm = match SoftHsm::create(dir.path(), tokens) {
            Ok(h) => h?,
            Err(e) => panic!("setting up SoftHSM2: {e}"),
        };
        std::env::set_var("SOFTHSM2_CONF", &hsm.conf);
        Some((dir, hsm))
    });
    match found {
        Some((_, hsm)) => Some(hsm),
        None => {
            eprintln!("{}", skip_notice(test));
            None
        }
    }
}
