//! `dzlctl root rekey`: replaces the root key. The new key is either a new
//! random key written to a new file (mode 0600, never overwriting
//! anything) or a key in a hardware module named by a `pkcs11:` URI (used
//! if the token holds one of that label, else generated there); the old one
//! is whatever opens the vault now (file, variable or module), so a vault
//! moves between a key file and a module in either direction, or between
//! two modules. Every non-retired KEK is rewrapped under the new key in one
//! transaction. From the commit on, only the new key opens the vault; the
//! old one opens nothing.
//!
//! Order matters: the new key exists (on disk and synced, or in the token)
//! before the keyring depends on it, and if the transaction fails a new
//! file is removed again, so there is never a keyring without a key that
//! opens it.

use std::fmt;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use dzl_crypto::RootKeyHolder;
use dzl_store::admin;
use serde::Serialize;

use crate::error::{from_admin, CliError};
use crate::output::Printer;
use crate::vault::{open_pkcs11, Context, Vault};

/// The `root` verbs.
#[derive(Debug, Clone, Subcommand)]
pub enum RootCommand {
    /// Replace the root key: new key file or module key, keyring rewrapped.
    ///
    /// With --new-root-key-file, writes a new random root key to FILE
    /// (created with mode 0600; an existing file is never overwritten: the
    /// command refuses). With --new-root-key pkcs11:…, uses the key of that
    /// label in the token, generating it there (sensitive, not extractable)
    /// when absent. Then rewraps every KEK version that is not retired under
    /// the new key, all in one transaction. The old root key
    /// (DZL_ROOT_KEY_FILE, DZL_ROOT_KEY or DZL__ROOT_KEY__PKCS11) must open
    /// the vault to start.
    ///
    /// Afterwards only the new key opens the vault. Point DZL_ROOT_KEY_FILE
    /// at FILE (or DZL__ROOT_KEY__PKCS11 at the URI, unsetting the other)
    /// for dzlctl and every server, and restart the servers: a running
    /// server stops being ready as soon as it reloads the rewrapped keyring
    /// with its old key. Then destroy every copy of the old key and back the
    /// new one up, apart from the data directory.
    ///
    /// Changes: the keyring's wrapped keys, and one audit entry (root.rekey)
    /// naming both keys' fingerprints. Nothing is changed if writing the new
    /// file or the transaction fails.
    #[command(
        verbatim_doc_comment,
        after_help = "\
Example:
  DZL_ROOT_KEY_FILE=/etc/dzl/root.key dzlctl root rekey --new-root-key-file /etc/dzl/root-2026.key
  # then: DZL_ROOT_KEY_FILE=/etc/dzl/root-2026.key, restart dzl-vault, shred /etc/dzl/root.key
  DZL_ROOT_KEY_FILE=/etc/dzl/root.key dzlctl root rekey --new-root-key \
    'pkcs11:token=dzl;object=root-2026?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/dzl/hsm.pin'"
    )]
    Rekey(RekeyArgs),
}

/// Arguments of `root rekey`: where the new root key goes, one of two.
#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = false)]
pub struct RekeyArgs {
    /// Where to write the new root key; must not exist yet.
    #[arg(long, value_name = "FILE")]
    pub new_root_key_file: Option<PathBuf>,
    /// The new root key in a hardware module, as a pkcs11: URI (see
    /// `dzlctl init --help`).
    #[arg(long, value_name = "PKCS11_URI")]
    pub new_root_key: Option<String>,
}

/// The result of `root rekey`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rekeyed {
    /// The new root key's file, when it is a file.
    pub new_root_key_file: Option<PathBuf>,
    /// The new root key's place in a hardware module, when it is there.
    pub new_root_key_pkcs11: Option<String>,
    /// Fingerprint of the new root key.
    pub root_key_fingerprint: String,
    /// Fingerprint of the key it replaces.
    pub previous_root_key_fingerprint: String,
    /// The KEK versions rewrapped.
    pub versions: Vec<u32>,
}

impl fmt::Display for Rekeyed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let versions: Vec<String> = self.versions.iter().map(u32::to_string).collect();
        writeln!(f, "The keyring is now wrapped by a new root key.")?;
        if let Some(file) = &self.new_root_key_file {
            writeln!(f, "  new root key file     {} (mode 0600)", file.display())?;
        }
        if let Some(place) = &self.new_root_key_pkcs11 {
            writeln!(f, "  new root key          in the PKCS#11 {place}")?;
        }
        writeln!(f, "  fingerprint           {}", self.root_key_fingerprint)?;
        writeln!(
            f,
            "  replaced fingerprint  {}",
            self.previous_root_key_fingerprint
        )?;
        writeln!(f, "  key versions          {}", versions.join(", "))?;
        writeln!(f)?;
        match &self.new_root_key_file {
            Some(file) => writeln!(
                f,
                "The old root key no longer opens this vault. Set DZL_ROOT_KEY_FILE={} for\n\
                 dzlctl and every server, restart the servers, back the new key up apart from\n\
                 the data dir, and destroy every copy of the old one.",
                file.display()
            ),
            None => writeln!(
                f,
                "The old root key no longer opens this vault. Give dzlctl and every server the\n\
                 new pkcs11: URI (DZL__ROOT_KEY__PKCS11, or [root_key] pkcs11), unset\n\
                 DZL_ROOT_KEY_FILE / DZL_ROOT_KEY, restart the servers, and destroy the old key."
            ),
        }
    }
}

/// Replaces the root key (see [`RootCommand::Rekey`]).
pub fn rekey(ctx: &Context, vault: &Vault, args: &RekeyArgs) -> Result<Rekeyed, CliError> {
    let old = vault.root_key();
    let (new, file, place): (Box<dyn RootKeyHolder>, Option<&PathBuf>, Option<String>) =
        match (&args.new_root_key_file, &args.new_root_key) {
            (Some(path), None) => {
                match path.try_exists() {
                    Ok(false) => {}
                    Ok(true) => return Err(CliError::FileExists(path.clone())),
                    Err(e) => {
                        return Err(CliError::NewRootKey(format!(
                            "checking {}: {e}",
                            path.display()
                        )))
                    }
                }
                let new = admin::write_new_root_key(path)
                    .map_err(|e| CliError::NewRootKey(e.to_string()))?;
                (Box::new(new), Some(path), None)
            }
            (None, Some(uri)) => {
                let (new, _) =
                    open_pkcs11(uri, true).map_err(|e| CliError::NewRootKey(e.to_string()))?;
                if new.fingerprint() == old.fingerprint() {
                    return Err(CliError::NewRootKey(format!(
                        "the key in the PKCS#11 {} already is this vault's root key",
                        new.place()
                    )));
                }
                let place = new.place().to_owned();
                (Box::new(new), None, Some(place))
            }
            _ => {
                return Err(CliError::Usage(
                    "give exactly one of --new-root-key-file and --new-root-key".into(),
                ))
            }
        };
    match admin::rekey_root(vault.store(), old, &*new, &ctx.call("root.rekey")) {
        Ok(versions) => Ok(Rekeyed {
            new_root_key_file: file
                .map(|path| std::fs::canonicalize(path).unwrap_or_else(|_| path.clone())),
            new_root_key_pkcs11: place,
            root_key_fingerprint: new.fingerprint(),
            previous_root_key_fingerprint: old.fingerprint(),
            versions,
        }),
        Err(e) => {
            // Nothing depends on a new key file: take it away again. If the
            // commit did happen after all (the proof read failed), the key
            // must stay: only remove it when the old key still opens the vault.
            if let Some(path) = file {
                if admin::load_keyring(vault.store(), old).is_ok() {
                    let _ = std::fs::remove_file(path);
                }
            }
            Err(from_admin(e, vault.data_dir(), &old.fingerprint()))
        }
    }
}

/// Runs a `root` verb and prints its result.
pub fn run(ctx: &Context, cmd: &RootCommand, printer: &mut Printer<'_>) -> Result<(), CliError> {
    let vault = Vault::open(ctx)?;
    match cmd {
        RootCommand::Rekey(args) => printer.print(&rekey(ctx, &vault, args)?),
    }
}
