//! `dzlctl init`: creates a vault — the store in the data directory, the
//! keyring (KEK version 1, wrapped by the root key), the receipt signing key
//! and the subject-index key — and, when `DZL_ROOT_KEY_FILE` names a file
//! that does not exist yet, a new root key in that file (mode 0600).
//!
//! It refuses a vault that is already initialised before touching any key
//! file, so running it twice changes nothing; and it reads (or writes) the
//! root key before creating the store, so a missing or malformed key leaves
//! nothing behind. The root key itself is never
//! printed; only its fingerprint is.

use std::fmt;
use std::path::PathBuf;

use clap::Args;
use dzl_store::admin;
use serde::Serialize;

use crate::error::{from_admin, CliError};
use crate::output::Printer;
use crate::vault::Context;

/// Arguments of `init` (none yet).
#[derive(Debug, Clone, Default, Args)]
pub struct InitArgs {}

/// What `init` did.
#[derive(Debug, Clone, Serialize)]
pub struct Initialised {
    /// The data directory, absolute.
    pub data_dir: PathBuf,
    /// Fingerprint of the root key (not secret).
    pub root_key_fingerprint: String,
    /// The root key file, when the key came from one.
    pub root_key_file: Option<PathBuf>,
    /// Whether `init` wrote a new root key to `root_key_file`.
    pub root_key_created: bool,
    /// The active KEK version (1).
    pub kek_version: u32,
}

impl fmt::Display for Initialised {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Initialised a new vault.")?;
        writeln!(f, "  data dir              {}", self.data_dir.display())?;
        writeln!(f, "  root key fingerprint  {}", self.root_key_fingerprint)?;
        match (&self.root_key_file, self.root_key_created) {
            (Some(path), true) => {
                writeln!(
                    f,
                    "  root key              new, written to {} (mode 0600)",
                    path.display()
                )?;
                writeln!(f)?;
                writeln!(
                    f,
                    "Back up the root key file now and keep it apart from the data dir: without it\n\
                     nobody can open this vault, and anyone with it and the data dir can."
                )?;
            }
            (Some(path), false) => writeln!(f, "  root key              from {}", path.display())?,
            (None, _) => writeln!(f, "  root key              from DZL_ROOT_KEY")?,
        }
        Ok(())
    }
}

/// Creates a vault in `ctx.data_dir` (see the module documentation).
pub fn init(ctx: &Context) -> Result<Initialised, CliError> {
    // Refuse a second init before any key file is written.
    if ctx.store_exists() && ctx.open_store()?.is_initialised()? {
        return Err(CliError::AlreadyInitialised {
            dir: ctx.data_dir.clone(),
        });
    }
    // Then the root key, before the store is created: a missing or malformed
    // key leaves nothing behind.
    let (root, created) = match &ctx.root_key.file {
        Some(path) => match path.try_exists() {
            Ok(false) => (
                admin::write_new_root_key(path).map_err(|e| from_admin(e, &ctx.data_dir, ""))?,
                true,
            ),
            Ok(true) => (ctx.load_root_key()?, false),
            Err(e) => {
                return Err(CliError::RootKey(format!(
                    "checking {}: {e}",
                    path.display()
                )))
            }
        },
        None => (ctx.load_root_key()?, false),
    };
    let store = ctx.open_store()?;
    let fingerprint = admin::init(&*store, &root, &ctx.actor)
        .map_err(|e| from_admin(e, &ctx.data_dir, &root.fingerprint()))?;
    Ok(Initialised {
        data_dir: std::fs::canonicalize(&ctx.data_dir).unwrap_or_else(|_| ctx.data_dir.clone()),
        root_key_fingerprint: fingerprint,
        root_key_file: ctx.root_key.file.clone(),
        root_key_created: created,
        kek_version: 1,
    })
}

/// Runs `init` and prints its result.
pub fn run(ctx: &Context, _args: &InitArgs, printer: &mut Printer<'_>) -> Result<(), CliError> {
    let done = init(ctx)?;
    if let Some(warning) = key_beside_data(&done) {
        printer.warn(&warning);
    }
    printer.print(&done)
}

/// A warning when the root key file lies inside the data directory, where a
/// copy of the data would carry its key along.
fn key_beside_data(done: &Initialised) -> Option<String> {
    let file = done.root_key_file.as_ref()?;
    let file = std::fs::canonicalize(file).ok()?;
    file.starts_with(&done.data_dir).then(|| {
        format!(
            "the root key file {} is inside the data dir: move it elsewhere (and point \
             DZL_ROOT_KEY_FILE at it) so a copy of the data does not carry its key",
            file.display()
        )
    })
}
