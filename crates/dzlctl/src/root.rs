//! `dzlctl root rekey`: replaces the root key. Writes a new random root key
//! to a new file (mode 0600, never overwriting anything), then rewraps every
//! non-retired KEK under it in one transaction. From the commit on, only the
//! new key opens the vault; the old one opens nothing.
//!
//! Order matters: the new key is on disk (and synced) before the keyring
//! depends on it, and if the transaction fails the new file is removed
//! again, so there is never a keyring without a key file that opens it.

use std::fmt;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use dzl_store::admin;
use serde::Serialize;

use crate::error::{from_admin, CliError};
use crate::output::Printer;
use crate::vault::{Context, Vault};

/// The `root` verbs.
#[derive(Debug, Clone, Subcommand)]
pub enum RootCommand {
    /// Replace the root key: new key file, keyring rewrapped under it.
    ///
    /// Writes a new random root key to FILE (created with mode 0600; an
    /// existing file is never overwritten: the command refuses), then
    /// rewraps every KEK version that is not retired under the new key, all
    /// in one transaction. The old root key (DZL_ROOT_KEY_FILE or
    /// DZL_ROOT_KEY) must open the vault to start.
    ///
    /// Afterwards only the new key opens the vault. Point DZL_ROOT_KEY_FILE
    /// at FILE for dzlctl and every server, and restart the servers: a
    /// running server stops being ready as soon as it reloads the rewrapped
    /// keyring with its old key. Then destroy every copy of the old key and
    /// back the new one up, apart from the data directory.
    ///
    /// Changes: the keyring's wrapped keys, and one audit entry (root.rekey)
    /// naming both keys' fingerprints. Nothing is changed if writing the new
    /// file or the transaction fails.
    #[command(
        verbatim_doc_comment,
        after_help = "\
Example:
  DZL_ROOT_KEY_FILE=/etc/dzl/root.key dzlctl root rekey --new-root-key-file /etc/dzl/root-2026.key
  # then: DZL_ROOT_KEY_FILE=/etc/dzl/root-2026.key, restart dzl-vault, shred /etc/dzl/root.key"
    )]
    Rekey(RekeyArgs),
}

/// Arguments of `root rekey`.
#[derive(Debug, Clone, Args)]
pub struct RekeyArgs {
    /// Where to write the new root key; must not exist yet.
    #[arg(long, value_name = "FILE")]
    pub new_root_key_file: PathBuf,
}

/// The result of `root rekey`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rekeyed {
    /// The new root key's file.
    pub new_root_key_file: PathBuf,
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
        writeln!(
            f,
            "  new root key file     {} (mode 0600)",
            self.new_root_key_file.display()
        )?;
        writeln!(f, "  fingerprint           {}", self.root_key_fingerprint)?;
        writeln!(
            f,
            "  replaced fingerprint  {}",
            self.previous_root_key_fingerprint
        )?;
        writeln!(f, "  key versions          {}", versions.join(", "))?;
        writeln!(f)?;
        writeln!(
            f,
            "The old root key no longer opens this vault. Set DZL_ROOT_KEY_FILE={} for\n\
             dzlctl and every server, restart the servers, back the new key up apart from\n\
             the data dir, and destroy every copy of the old one.",
            self.new_root_key_file.display()
        )
    }
}

/// Replaces the root key (see [`RootCommand::Rekey`]).
pub fn rekey(ctx: &Context, vault: &Vault, args: &RekeyArgs) -> Result<Rekeyed, CliError> {
    let path = &args.new_root_key_file;
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
    let new = admin::write_new_root_key(path).map_err(|e| CliError::NewRootKey(e.to_string()))?;
    let old = vault.root_key();
    match admin::rekey_root(vault.store(), old, &new, &ctx.call("root.rekey")) {
        Ok(versions) => Ok(Rekeyed {
            new_root_key_file: std::fs::canonicalize(path).unwrap_or_else(|_| path.clone()),
            root_key_fingerprint: new.fingerprint(),
            previous_root_key_fingerprint: old.fingerprint(),
            versions,
        }),
        Err(e) => {
            // Nothing depends on the new key: take it away again. If the
            // commit did happen after all (the proof read failed), the key
            // must stay: only remove it when the old key still opens the vault.
            if admin::load_keyring(vault.store(), old).is_ok() {
                let _ = std::fs::remove_file(path);
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
