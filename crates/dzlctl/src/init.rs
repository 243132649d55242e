//! `dzlctl init`: creates a vault of a cipher suite (`--suite intl`, the
//! default, or `gm`) — the store in the data directory, the keyring (KEK
//! version 1 of that suite, wrapped by the root key), the receipt signing
//! key (Ed25519 or SM2) and the subject-index key — and, when
//! `DZL_ROOT_KEY_FILE` names a file
//! that does not exist yet, a new root key in that file (mode 0600). With
//! `--root-key pkcs11:…` (or `[root_key] pkcs11` configured) the root key
//! is in a hardware module instead: used if the token holds a key of that
//! label, else generated there (sensitive, not extractable).
//!
//! It refuses a vault that is already initialised before touching any key
//! file, so running it twice changes nothing; and it reads (or writes) the
//! root key before creating the store, so a missing or malformed key leaves
//! nothing behind. The root key itself is never
//! printed; only its fingerprint is.

use std::fmt;
use std::path::PathBuf;

use clap::Args;
use dzl_crypto::{RootKeyHolder, Suite};
use dzl_store::admin;
use serde::Serialize;

use crate::error::{from_admin, CliError};
use crate::output::Printer;
use crate::vault::{open_pkcs11, Context};

/// Arguments of `init`.
#[derive(Debug, Clone, Default, Args)]
pub struct InitArgs {
    /// The root key in a hardware security module, as a pkcs11: URI (RFC
    /// 7512): token=<label> or slot-id=<n>, object=<key label>,
    /// ?module-path=<PKCS#11 library>&pin-source=file:<path> or
    /// pin-source=env:<VARIABLE>. The key is generated in the token when it
    /// holds none of that label. Without it: DZL_ROOT_KEY_FILE / DZL_ROOT_KEY,
    /// or [root_key] pkcs11 / DZL__ROOT_KEY__PKCS11.
    #[arg(long, value_name = "PKCS11_URI")]
    pub root_key: Option<String>,
    /// The vault's cipher suite: intl (AES-256-GCM, HMAC-SHA256, SHA-256,
    /// Ed25519; the default) or gm (国密: SM4-GCM, HMAC-SM3, SM3, SM2).
    /// It decides how deposits are sealed, how tenants sign requests and
    /// how receipts are signed; `keys rotate --suite` changes it later.
    #[arg(long, value_name = "SUITE", value_parser = crate::keys::parse_suite)]
    pub suite: Option<Suite>,
}

/// What `init` did.
#[derive(Debug, Clone, Serialize)]
pub struct Initialised {
    /// The data directory, absolute.
    pub data_dir: PathBuf,
    /// Fingerprint of the root key (not secret).
    pub root_key_fingerprint: String,
    /// The root key file, when the key came from one.
    pub root_key_file: Option<PathBuf>,
    /// The root key's place in a hardware module (token and object), when
    /// it is there.
    pub root_key_pkcs11: Option<String>,
    /// Whether `init` made the root key (in `root_key_file` or the token).
    pub root_key_created: bool,
    /// The active KEK version (1).
    pub kek_version: u32,
    /// The vault's cipher suite: `intl` or `gm`.
    pub suite: Suite,
}

impl fmt::Display for Initialised {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Initialised a new vault.")?;
        writeln!(f, "  data dir              {}", self.data_dir.display())?;
        writeln!(
            f,
            "  cipher suite          {} ({})",
            self.suite,
            crate::keys::suite_primitives(self.suite)
        )?;
        writeln!(f, "  root key fingerprint  {}", self.root_key_fingerprint)?;
        if let Some(place) = &self.root_key_pkcs11 {
            let how = if self.root_key_created {
                "generated there now"
            } else {
                "found there"
            };
            writeln!(f, "  root key              in the PKCS#11 {place} ({how})")?;
            writeln!(f)?;
            return writeln!(
                f,
                "The root key never leaves the module. Give dzlctl and every server the same\n\
                 pkcs11: URI ([root_key] pkcs11 in the configuration, or DZL__ROOT_KEY__PKCS11)."
            );
        }
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
    init_with(ctx, &InitArgs::default())
}

/// Creates a vault in `ctx.data_dir` with the root key `args` names.
pub fn init_with(ctx: &Context, args: &InitArgs) -> Result<Initialised, CliError> {
    // Refuse a second init before any key file is written.
    if ctx.store_exists() && ctx.open_store()?.is_initialised()? {
        return Err(CliError::AlreadyInitialised {
            dir: ctx.data_dir.clone(),
        });
    }
    // Then the root key, before the store is created: a missing or malformed
    // key leaves nothing behind.
    let pkcs11 = args.root_key.as_ref().or(ctx.root_pkcs11.as_ref());
    let (root, created, place): (Box<dyn RootKeyHolder>, bool, Option<String>) = match pkcs11 {
        Some(uri) => {
            if !uri.trim_start().starts_with("pkcs11:") {
                return Err(CliError::InvalidArgument(
                    "--root-key takes a pkcs11: URI (a key file is given by DZL_ROOT_KEY_FILE)"
                        .into(),
                ));
            }
            if ctx.root_key.file.is_some() || ctx.root_key.inline.is_some() {
                return Err(CliError::RootKey(
                    "both a pkcs11: root key and DZL_ROOT_KEY_FILE / DZL_ROOT_KEY are set: \
                     unset the one not meant"
                        .into(),
                ));
            }
            let (root, created) = open_pkcs11(uri, true)?;
            let place = root.place().to_owned();
            (Box::new(root), created, Some(place))
        }
        None => match &ctx.root_key.file {
            Some(path) => match path.try_exists() {
                Ok(false) => (
                    Box::new(
                        admin::write_new_root_key(path)
                            .map_err(|e| from_admin(e, &ctx.data_dir, ""))?,
                    ),
                    true,
                    None,
                ),
                Ok(true) => (ctx.load_root_key()?, false, None),
                Err(e) => {
                    return Err(CliError::RootKey(format!(
                        "checking {}: {e}",
                        path.display()
                    )))
                }
            },
            None => (ctx.load_root_key()?, false, None),
        },
    };
    let store = ctx.open_store()?;
    let suite = args.suite.unwrap_or(Suite::Intl);
    let fingerprint = admin::init_as(&*store, &*root, &ctx.actor, suite)
        .map_err(|e| from_admin(e, &ctx.data_dir, &root.fingerprint()))?;
    Ok(Initialised {
        data_dir: std::fs::canonicalize(&ctx.data_dir).unwrap_or_else(|_| ctx.data_dir.clone()),
        root_key_fingerprint: fingerprint,
        root_key_file: if place.is_some() {
            None
        } else {
            ctx.root_key.file.clone()
        },
        root_key_pkcs11: place,
        root_key_created: created,
        kek_version: 1,
        suite,
    })
}

/// Runs `init` and prints its result.
pub fn run(ctx: &Context, args: &InitArgs, printer: &mut Printer<'_>) -> Result<(), CliError> {
    let done = init_with(ctx, args)?;
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
