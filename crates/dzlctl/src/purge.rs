//! `dzlctl purge`: retention. Stores codes past their deadline as expired,
//! and crypto-shreds deposits older than `[retention] deposit_days` (their
//! data keys and ciphertexts destroyed, their outstanding codes revoked, the
//! deposit row and audit trail kept). What is removed is decided by
//! `dzl_store::rules::{code_expirable, deposit_past_retention}` at one
//! instant, the run's clock; `--dry-run` reports the same counts and changes
//! nothing.
//!
//! The work is cut into transactions of [`STEP`] codes or deposits so a
//! running server keeps serving. The clock is the system's, or the hidden
//! global `--now` flag (tests only).

use std::fmt;

use chrono::{SecondsFormat, Utc};
use clap::Args;
use dzl_store::{rules, PurgeCounts};
use serde::Serialize;

use crate::error::CliError;
use crate::output::Printer;
use crate::vault::{Context, Vault};

/// Codes or deposits per transaction.
pub const STEP: usize = 1000;

/// Arguments of `purge`.
#[derive(Debug, Clone, Default, Args)]
pub struct PurgeArgs {
    /// Report what would be purged; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// The result of `purge`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Purged {
    /// Whether nothing was changed.
    pub dry_run: bool,
    /// The instant the purge decided at (RFC 3339 UTC).
    pub now: String,
    /// `[retention] deposit_days`.
    pub retention_days: u32,
    /// Deposits created before this were shredded.
    pub deposits_created_before: String,
    /// Codes past their deadline stored as expired.
    pub codes_expired: u64,
    /// Deposits crypto-shredded.
    pub deposits_shredded: u64,
    /// Outstanding codes of those deposits revoked.
    pub codes_revoked: u64,
}

impl fmt::Display for Purged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (head, expire, shred, revoke) = if self.dry_run {
            (
                "Dry run: nothing was changed. A purge now would",
                "expire",
                "crypto-shred",
                "revoke",
            )
        } else {
            ("Purged:", "expired", "crypto-shredded", "revoked")
        };
        writeln!(f, "{head}")?;
        writeln!(
            f,
            "  {expire} {} codes past their deadline",
            self.codes_expired
        )?;
        writeln!(
            f,
            "  {shred} {} deposits created before {} (retention {} days)",
            self.deposits_shredded, self.deposits_created_before, self.retention_days
        )?;
        writeln!(
            f,
            "  {revoke} {} outstanding codes of those deposits",
            self.codes_revoked
        )
    }
}

/// Purges (or previews) at the context's clock (see [`crate::Command::Purge`]).
pub fn purge(
    ctx: &Context,
    vault: &Vault,
    args: &PurgeArgs,
    printer: &Printer<'_>,
) -> Result<Purged, CliError> {
    let days = ctx.settings.retention.deposit_days;
    let plan = rules::purge_plan(ctx.now(), days);
    let store = vault.store();
    let preview = store.purge_preview(&plan)?;
    let counts = if args.dry_run {
        preview
    } else {
        let call = ctx.call("vault.purge");
        let bar =
            printer.progress_bar(preview.codes_expired + preview.deposits_shredded, "purging");
        let mut total = PurgeCounts::default();
        loop {
            let step = store.purge(&call, &plan, STEP)?;
            total.codes_expired += step.codes_expired;
            total.deposits_shredded += step.deposits_shredded;
            total.codes_revoked += step.codes_revoked;
            bar.set_position(total.codes_expired + total.deposits_shredded);
            if (step.codes_expired as usize) < STEP && (step.deposits_shredded as usize) < STEP {
                break;
            }
        }
        bar.finish_and_clear();
        store.record_action(
            &call,
            "ok",
            &format!(
                "purge with retention {days} days: {} codes expired, {} deposits crypto-shredded, {} codes revoked",
                total.codes_expired, total.deposits_shredded, total.codes_revoked
            ),
        )?;
        total
    };
    let time = |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
    Ok(Purged {
        dry_run: args.dry_run,
        now: time(plan.now),
        retention_days: days,
        deposits_created_before: time(plan.deposits_created_before),
        codes_expired: counts.codes_expired,
        deposits_shredded: counts.deposits_shredded,
        codes_revoked: counts.codes_revoked,
    })
}

/// Runs `purge` and prints its result.
pub fn run(ctx: &Context, args: &PurgeArgs, printer: &mut Printer<'_>) -> Result<(), CliError> {
    let vault = Vault::open(ctx)?;
    let done = purge(ctx, &vault, args, printer)?;
    printer.print(&done)
}
