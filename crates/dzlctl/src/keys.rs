//! `dzlctl keys …`: the keyring's lifecycle. `list` shows every KEK version,
//! its cipher suite and what it still protects; `rotate` makes a new active
//! version, of the vault's suite or (`--suite`) of the other one, which
//! then becomes the vault's suite; `rewrap` moves every data key and sealed
//! secret onto the active version; `reseal` seals the deposits of another
//! suite anew in the vault's — both in bounded transactions, with a
//! progress bar; `retire` deletes an old version once nothing needs it.
//!
//! A running server keeps serving throughout: it reloads the keyring when
//! the store's generation changes (rotate, rewrap, reseal and retire bump
//! it), and `rewrap` and `reseal` commit in batches so the server's writes
//! wait milliseconds at a time. Every change is audited with the operator
//! as actor.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Args, Subcommand};
use dzl_crypto::Suite;
use dzl_store::admin::{
    self, ResealOptions, RewrapOptions, DEFAULT_RESEAL_BATCH, DEFAULT_REWRAP_BATCH,
};
use dzl_store::KekRow;
use serde::Serialize;

use crate::error::{from_admin, CliError};
use crate::output::{Printer, Table};
use crate::vault::{Context, Vault};

/// The `keys` verbs.
#[derive(Debug, Clone, Subcommand)]
pub enum KeysCommand {
    /// List the keyring: every KEK version, its state and what it protects.
    ///
    /// Prints each key-encryption key (KEK) version with its cipher suite
    /// (intl or gm; the active version's is the vault's), its state —
    /// active (wraps every new key), decrypt_only (unwraps what it wrapped
    /// before a rotation) or retired (deleted) — when it was created (and
    /// retired), how many data keys it still wraps and how many sealed
    /// secrets (tenant signing secrets, vault secrets) it still seals.
    /// With --json: {"keys":[{"version", "suite", "state", "created_at",
    /// "retired_at", "data_keys", "secrets"}, …]}, oldest first.
    ///
    /// Changes nothing. Needs the root key.
    #[command(
        verbatim_doc_comment,
        after_help = "\
Examples:
  dzlctl keys list
  dzlctl --json keys list | jq '.keys[] | select(.state == \"decrypt_only\")'"
    )]
    List(ListArgs),
    /// Make a new active KEK version; the old one becomes decrypt-only.
    ///
    /// Generates a new key-encryption key, wraps it with the root key and
    /// makes it the active version: every data key and secret wrapped from
    /// now on uses it. The previous active version becomes decrypt_only, so
    /// everything it wrapped still opens. A running server loads the new
    /// version within a second, without restart.
    ///
    /// The new version is of the vault's cipher suite, or of the one
    /// --suite names, which then becomes the vault's suite at once: new
    /// deposits are sealed in it, codes hashed, receipts signed (a receipt
    /// key of that suite is made if the vault has none) and audit entries
    /// chained with it, and tenants must sign requests with its HMAC
    /// (HMAC-SM3 for gm, HMAC-SHA256 for intl); a request signed with the
    /// other is refused (401 unsupported_signature_algorithm). Existing
    /// deposits open and redeem as before.
    ///
    /// Follow with `keys rewrap` to move existing keys onto the new version
    /// (or, after a change of suite, `keys reseal` to seal the existing
    /// deposits in the new suite), then `keys retire` to delete the old one.
    ///
    /// Changes: adds one KEK version (and a receipt key), and one audit
    /// entry (keys.rotate). Needs the root key.
    #[command(
        verbatim_doc_comment,
        after_help = "\
Examples (a full rotation; a move to the gm suite):
  dzlctl keys rotate
  dzlctl keys rewrap
  dzlctl keys retire 1

  dzlctl keys rotate --suite gm
  dzlctl keys reseal
  dzlctl keys retire 1"
    )]
    Rotate(RotateArgs),
    /// Rewrap every data key and sealed secret onto the active version.
    ///
    /// Unwraps each data key still wrapped by an older (decrypt_only)
    /// version and wraps it again under the active one; then does the same
    /// for tenant signing secrets and the vault's own secrets. The data
    /// itself is not re-encrypted: only the keys that protect it move.
    ///
    /// Works in transactions of --batch-size data keys, so a running server
    /// keeps serving: its writes wait at most one batch. It only ever looks
    /// at keys not yet on the active version, so an interrupted run resumes
    /// where it stopped when run again. Right after `keys rotate` it first
    /// waits up to two seconds so running servers have loaded the new
    /// version. Shows a progress bar on a terminal (not with --json).
    ///
    /// Exits 1 if any data key could not be moved (it stays usable where it
    /// is; the message says which). Changes: the wrapped keys and secrets,
    /// and two audit entries (keys.rewrap): one as it starts, with the
    /// count to move, and one at the end with what moved. Needs the root
    /// key.
    #[command(
        verbatim_doc_comment,
        after_help = "\
Examples:
  dzlctl keys rewrap
  dzlctl --json keys rewrap --batch-size 500"
    )]
    Rewrap(RewrapArgs),
    /// Seal every deposit of another suite anew in the vault's suite.
    ///
    /// After `keys rotate --suite`, deposits made before are still sealed
    /// in the old suite (they open and redeem as before). This opens each
    /// one's data keys and groups, seals the groups again under two fresh
    /// data keys of the vault's suite, wrapped by the active version, and
    /// files it under its subject's blind index in that suite; then it
    /// moves every tenant and vault secret onto the active version, so the
    /// old suite's versions can be retired. Codes keep the hash they were
    /// issued with, and redeem as before.
    ///
    /// Works in transactions of --batch-size deposits, so a running server
    /// keeps serving; a deposit is replaced only if nothing changed it
    /// since it was read (an erasure meanwhile stays erased). It only ever
    /// looks at deposits of other suites, so an interrupted run resumes
    /// where it stopped when run again. Right after `keys rotate` it first
    /// waits up to two seconds so running servers have loaded the new
    /// version. Shows a progress bar on a terminal (not with --json).
    ///
    /// Exits 1 if any deposit could not be resealed (it stays as it was;
    /// the message says which). Changes: the deposits' data keys, groups
    /// and subject filings, the secrets' seals, and audit entries
    /// (keys.reseal): one as it starts, one per batch, one at the end.
    /// Needs the root key.
    #[command(
        verbatim_doc_comment,
        after_help = "\
Examples:
  dzlctl keys reseal
  dzlctl --json keys reseal --batch-size 200"
    )]
    Reseal(ResealArgs),
    /// Retire an old KEK version: delete it once nothing needs it.
    ///
    /// Deletes the wrapped key of VERSION and marks it retired. Refused
    /// (exit 1, nothing changed) while any data key, identity key, tenant
    /// secret, vault secret or previous tenant secret still inside its
    /// overlap uses that version — run `keys rewrap` first — and always for
    /// the active version. Retiring a retired version changes nothing
    /// ("changed": false). A running server drops the version by itself.
    ///
    /// Changes: the version's state and wrapped key (gone for good), and one
    /// audit entry (keys.retire), refusals included. Needs the root key.
    #[command(
        verbatim_doc_comment,
        after_help = "\
Example:
  dzlctl keys retire 1"
    )]
    Retire(RetireArgs),
}

/// Arguments of `keys list` (none).
#[derive(Debug, Clone, Default, Args)]
pub struct ListArgs {}

/// Arguments of `keys rotate`.
#[derive(Debug, Clone, Default, Args)]
pub struct RotateArgs {
    /// The new version's cipher suite, which becomes the vault's: intl or
    /// gm. Without it, the vault's suite.
    #[arg(long, value_name = "SUITE", value_parser = parse_suite)]
    pub suite: Option<Suite>,
}

/// Arguments of `keys reseal`.
#[derive(Debug, Clone, Args)]
pub struct ResealArgs {
    /// Deposits per transaction (1-10000). Smaller batches make a running
    /// server's writes wait less; larger ones finish sooner.
    #[arg(long, value_name = "DEPOSITS", default_value_t = DEFAULT_RESEAL_BATCH as u32,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch_size: u32,
}

/// Parses `intl` or `gm` (a clap value parser).
pub fn parse_suite(s: &str) -> Result<Suite, String> {
    s.parse()
        .map_err(|_| format!("unknown cipher suite {s:?}: expected intl or gm"))
}

/// What a suite is made of, for people.
pub fn suite_primitives(suite: Suite) -> &'static str {
    match suite {
        Suite::Intl => "AES-256-GCM, HMAC-SHA256, SHA-256, Ed25519",
        Suite::Gm => "国密: SM4-GCM, HMAC-SM3, SM3, SM2",
    }
}

/// Arguments of `keys rewrap`.
#[derive(Debug, Clone, Args)]
pub struct RewrapArgs {
    /// Data keys per transaction (1-100000). Smaller batches make a running
    /// server's writes wait less; larger ones finish sooner.
    #[arg(long, value_name = "KEYS", default_value_t = DEFAULT_REWRAP_BATCH as u32,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch_size: u32,
}

/// Arguments of `keys retire`.
#[derive(Debug, Clone, Args)]
pub struct RetireArgs {
    /// The KEK version to retire (see `dzlctl keys list`).
    #[arg(value_name = "VERSION", value_parser = clap::value_parser!(u32).range(1..))]
    pub version: u32,
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// One KEK version as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeySummary {
    /// From 1.
    pub version: u32,
    /// `intl` or `gm`.
    pub suite: &'static str,
    /// `active`, `decrypt_only` or `retired`.
    pub state: &'static str,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// RFC 3339 UTC, once retired.
    pub retired_at: Option<String>,
    /// Data keys (records and identity keys) it still wraps.
    pub data_keys: u64,
    /// Secrets (tenant and vault secrets) it still seals.
    pub secrets: u64,
}

impl From<&KekRow> for KeySummary {
    fn from(k: &KekRow) -> Self {
        KeySummary {
            version: k.version,
            suite: k.suite.as_str(),
            state: k.state.as_str(),
            created_at: time(k.created_at),
            retired_at: k.retired_at.map(time),
            data_keys: k.data_keys,
            secrets: k.secrets,
        }
    }
}

/// The keyring, oldest version first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyList {
    /// The versions.
    pub keys: Vec<KeySummary>,
}

impl fmt::Display for KeyList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut table = Table::new(&[
            "VERSION",
            "SUITE",
            "STATE",
            "CREATED",
            "RETIRED",
            "DATA KEYS",
            "SECRETS",
        ]);
        for k in &self.keys {
            table.row(vec![
                k.version.to_string(),
                k.suite.to_owned(),
                k.state.to_owned(),
                k.created_at.clone(),
                k.retired_at.clone().unwrap_or_else(|| "-".into()),
                k.data_keys.to_string(),
                k.secrets.to_string(),
            ]);
        }
        write!(f, "{table}")
    }
}

/// The result of `keys rotate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rotated {
    /// The new active version.
    pub active_version: u32,
    /// The vault's cipher suite now: the new version's.
    pub suite: Suite,
    /// The vault's cipher suite before.
    pub previous_suite: Suite,
    /// The versions that now only decrypt.
    pub decrypt_only: Vec<u32>,
}

impl fmt::Display for Rotated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Key version {} is now active; running servers pick it up within a second.",
            self.active_version
        )?;
        let moved = self.suite != self.previous_suite;
        if moved {
            writeln!(
                f,
                "The vault's cipher suite is now {} ({}): new deposits, code hashes, receipts and \
                 audit entries use it, and tenants must sign requests with {}.",
                self.suite,
                suite_primitives(self.suite),
                dzl_types::signing::SignatureAlgorithm::for_suite(self.suite)
            )?;
        }
        if !self.decrypt_only.is_empty() {
            let list: Vec<String> = self.decrypt_only.iter().map(u32::to_string).collect();
            let then = if moved {
                "`dzlctl keys reseal`"
            } else {
                "`dzlctl keys rewrap`"
            };
            writeln!(
                f,
                "Decrypt-only: {}. Run {then}, then `dzlctl keys retire <version>`.",
                list.join(", ")
            )?;
        }
        Ok(())
    }
}

/// A data key that stayed where it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// `records` or `identity`.
    pub kind: &'static str,
    /// Its deposit.
    pub deposit_id: String,
    /// The version it is still wrapped by.
    pub kek_version: u32,
    /// Why.
    pub error: String,
}

/// The result of `keys rewrap`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rewrapped {
    /// The version everything was moved onto.
    pub active_version: u32,
    /// Data keys on older versions when it started.
    pub data_keys_found: u64,
    /// Data keys moved.
    pub data_keys_rewrapped: u64,
    /// Tenant and vault secrets moved.
    pub secrets_rewrapped: u64,
    /// Data keys still on older versions.
    pub data_keys_remaining: u64,
    /// Seconds spent moving data keys.
    pub elapsed_seconds: f64,
    /// Data keys moved per second.
    pub keys_per_second: f64,
}

impl fmt::Display for Rewrapped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Rewrapped {} data keys and {} secrets onto key version {} in {:.2} s ({:.0} keys/s).",
            self.data_keys_rewrapped,
            self.secrets_rewrapped,
            self.active_version,
            self.elapsed_seconds,
            self.keys_per_second
        )?;
        if self.data_keys_remaining == 0 {
            writeln!(
                f,
                "Nothing is left on older versions: they can be retired with `dzlctl keys retire <version>`."
            )?;
        }
        Ok(())
    }
}

/// The result of `keys reseal`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Resealed {
    /// The suite deposits were sealed in: the vault's.
    pub suite: Suite,
    /// Active deposits of other suites when it started.
    pub deposits_found: u64,
    /// Deposits sealed anew.
    pub deposits_resealed: u64,
    /// Tenant and vault secrets moved onto the active version.
    pub secrets_rewrapped: u64,
    /// Active deposits of other suites left.
    pub deposits_remaining: u64,
    /// Seconds spent resealing deposits.
    pub elapsed_seconds: f64,
    /// Deposits resealed per second.
    pub deposits_per_second: f64,
}

impl fmt::Display for Resealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Resealed {} deposits in {} and moved {} secrets onto the active version in {:.2} s ({:.0} deposits/s).",
            self.deposits_resealed,
            self.suite,
            self.secrets_rewrapped,
            self.elapsed_seconds,
            self.deposits_per_second
        )?;
        if self.deposits_remaining == 0 {
            writeln!(
                f,
                "No deposit is sealed in another suite: once `dzlctl keys list` shows no data keys \
                 or secrets on the old versions, retire them with `dzlctl keys retire <version>`."
            )?;
        }
        Ok(())
    }
}

/// The result of `keys retire`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Retired {
    /// The version.
    pub version: u32,
    /// `retired`.
    pub state: &'static str,
    /// Whether this call retired it (false: it already was).
    pub changed: bool,
}

impl fmt::Display for Retired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.changed {
            writeln!(
                f,
                "Key version {} is retired: its key is deleted and cannot be recovered.",
                self.version
            )
        } else {
            writeln!(
                f,
                "Key version {} was already retired; nothing changed.",
                self.version
            )
        }
    }
}

/// The keyring, oldest first (see [`KeysCommand::List`]).
pub fn list(vault: &Vault) -> Result<KeyList, CliError> {
    Ok(KeyList {
        keys: vault.store().keks()?.iter().map(KeySummary::from).collect(),
    })
}

/// Makes a new active version (see [`KeysCommand::Rotate`]).
pub fn rotate(vault: &Vault, args: &RotateArgs) -> Result<Rotated, CliError> {
    let previous_suite = vault.keyring().active_suite();
    let suite = args.suite.unwrap_or(previous_suite);
    let version = admin::rotate_keys_to(vault.store(), vault.root_key(), vault.actor(), suite)
        .map_err(|e| from_admin(e, vault.data_dir(), &vault.root_key().fingerprint()))?;
    let decrypt_only = vault
        .store()
        .keks()?
        .iter()
        .filter(|k| k.state == dzl_store::KekState::DecryptOnly)
        .map(|k| k.version)
        .collect();
    Ok(Rotated {
        active_version: version,
        suite,
        previous_suite,
        decrypt_only,
    })
}

/// Moves everything onto the active version (see [`KeysCommand::Rewrap`]).
pub fn rewrap(
    ctx: &Context,
    vault: &Vault,
    args: &RewrapArgs,
    printer: &Printer<'_>,
) -> Result<Rewrapped, CliError> {
    let bar = printer.progress_bar(0, "rewrapping data keys");
    let report = admin::rewrap(
        vault.store(),
        vault.keyring(),
        &ctx.call("keys.rewrap"),
        RewrapOptions {
            batch_size: args.batch_size as usize,
            wait_for_servers: true,
        },
        &mut |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        },
    )
    .map_err(|e| from_admin(e, vault.data_dir(), &vault.root_key().fingerprint()))?;
    bar.finish_and_clear();
    if report.failed > 0 || report.data_keys_remaining > 0 {
        return Err(CliError::RewrapIncomplete {
            remaining: report.data_keys_remaining,
            failed: report.failed,
            first: report
                .failures
                .first()
                .map(|f| {
                    format!(
                        "; first: the {} key of deposit {} under version {}: {}",
                        f.kind.as_str(),
                        f.deposit_id,
                        f.kek_version,
                        f.error
                    )
                })
                .unwrap_or_default(),
        });
    }
    let secs = report.elapsed.as_secs_f64();
    Ok(Rewrapped {
        active_version: report.active_version,
        data_keys_found: report.data_keys_found,
        data_keys_rewrapped: report.data_keys_rewrapped,
        secrets_rewrapped: report.secrets_rewrapped,
        data_keys_remaining: report.data_keys_remaining,
        elapsed_seconds: (secs * 1000.0).round() / 1000.0,
        keys_per_second: if secs > 0.0 {
            (report.data_keys_rewrapped as f64 / secs).round()
        } else {
            0.0
        },
    })
}

/// Seals the deposits of other suites in the vault's (see
/// [`KeysCommand::Reseal`]).
pub fn reseal(
    ctx: &Context,
    vault: &Vault,
    args: &ResealArgs,
    printer: &Printer<'_>,
) -> Result<Resealed, CliError> {
    let fingerprint = vault.root_key().fingerprint();
    let keys = admin::load_keys(vault.store(), vault.root_key())
        .map_err(|e| from_admin(e, vault.data_dir(), &fingerprint))?;
    let bar = printer.progress_bar(0, "resealing deposits");
    let report = admin::reseal(
        vault.store(),
        &keys,
        &ctx.call("keys.reseal"),
        ResealOptions {
            batch_size: args.batch_size as usize,
            wait_for_servers: true,
        },
        &mut |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        },
    )
    .map_err(|e| from_admin(e, vault.data_dir(), &fingerprint))?;
    bar.finish_and_clear();
    if report.failed > 0 || report.deposits_remaining > 0 {
        return Err(CliError::ResealIncomplete {
            remaining: report.deposits_remaining,
            failed: report.failed,
            first: report
                .failures
                .first()
                .map(|f| format!("; first: deposit {}: {}", f.deposit_id, f.error))
                .unwrap_or_default(),
        });
    }
    let secs = report.elapsed.as_secs_f64();
    Ok(Resealed {
        suite: keys.suite(),
        deposits_found: report.deposits_found,
        deposits_resealed: report.deposits_resealed,
        secrets_rewrapped: report.secrets_rewrapped,
        deposits_remaining: report.deposits_remaining,
        elapsed_seconds: (secs * 1000.0).round() / 1000.0,
        deposits_per_second: if secs > 0.0 {
            (report.deposits_resealed as f64 / secs).round()
        } else {
            0.0
        },
    })
}

/// Retires a version (see [`KeysCommand::Retire`]).
pub fn retire(ctx: &Context, vault: &Vault, version: u32) -> Result<Retired, CliError> {
    let changed = vault
        .store()
        .retire_kek(&ctx.call("keys.retire"), version)?
        .map_err(CliError::RetireRefused)?;
    Ok(Retired {
        version,
        state: "retired",
        changed,
    })
}

/// Runs a `keys` verb and prints its result.
pub fn run(ctx: &Context, cmd: &KeysCommand, printer: &mut Printer<'_>) -> Result<(), CliError> {
    let vault = Vault::open(ctx)?;
    match cmd {
        KeysCommand::List(_) => printer.print(&list(&vault)?),
        KeysCommand::Rotate(args) => printer.print(&rotate(&vault, args)?),
        KeysCommand::Rewrap(args) => {
            let done = rewrap(ctx, &vault, args, printer)?;
            printer.print(&done)
        }
        KeysCommand::Reseal(args) => {
            let done = reseal(ctx, &vault, args, printer)?;
            printer.print(&done)
        }
        KeysCommand::Retire(args) => printer.print(&retire(ctx, &vault, args.version)?),
    }
}
