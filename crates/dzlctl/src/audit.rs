//! `dzlctl audit …`: the audit trail. `verify` walks the hash chain and
//! names the first entry that was altered, removed or reordered (or a
//! truncated tail); `export` writes entries as JSON lines for regulators and
//! SIEMs. Entries hold who, when, what, the result, purposes, ids and the
//! names of groups — never a field value, a code or a secret — so an export
//! carries no personal data. Both are recorded in the trail themselves.

use std::fmt;
use std::io::Write;

use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Args, Subcommand};
use dzl_store::AuditQuery;
use serde::Serialize;

use crate::error::CliError;
use crate::output::Printer;
use crate::vault::{Context, Vault};

/// Entries read per query while exporting.
const PAGE: usize = 1000;

/// The `audit` verbs.
#[derive(Debug, Clone, Subcommand)]
pub enum AuditCommand {
    /// Check the audit trail's hash chain from the first entry to the last.
    ///
    /// Every entry commits to the one before it, and the store keeps the
    /// chain's head apart. Verification recomputes every link and hash and
    /// compares the end with the head: an entry altered, deleted, inserted
    /// or moved, or a tail cut off, breaks the chain at that entry.
    ///
    /// Exit 0 and the number of entries when the chain is intact; exit 1
    /// with the first bad entry named ("the audit chain is broken at entry
    /// N: …"; with --json, code audit_chain_broken) when it is not. Shows a
    /// progress bar on a terminal (not with --json).
    ///
    /// Changes: appends one audit entry (audit.verify) with the outcome.
    /// Needs the root key.
    #[command(
        verbatim_doc_comment,
        after_help = "\
Examples:
  dzlctl audit verify
  dzlctl --json audit verify || alert 'dzl audit chain broken'"
    )]
    Verify(VerifyArgs),
    /// Export audit entries as JSON lines, oldest first.
    ///
    /// Writes one JSON object per line to stdout: seq, at, actor, operation,
    /// result, purpose, deposit_id, code_id, redemption_id, subject_tenant,
    /// groups, detail, prev_hash, hash — the fields the chain hashes, so a
    /// recipient can verify the export. Entries carry ids and names of
    /// groups, never personal data. --since and --until (RFC 3339) bound the
    /// entries' time: since inclusive, until exclusive. With --json the
    /// output is instead one document: {"entries": [...], "count": N}.
    ///
    /// Changes: appends one audit entry (audit.export) with the count and
    /// bounds. Needs the root key.
    #[command(
        verbatim_doc_comment,
        after_help = "\
Examples:
  dzlctl audit export > audit-all.jsonl
  dzlctl audit export --since 2026-11-01T00:00:00Z --until 2026-12-01T00:00:00Z > audit-2026-11.jsonl"
    )]
    Export(ExportArgs),
}

/// Arguments of `audit verify` (none).
#[derive(Debug, Clone, Default, Args)]
pub struct VerifyArgs {}

/// Arguments of `audit export`.
#[derive(Debug, Clone, Default, Args)]
pub struct ExportArgs {
    /// Only entries at or after this time (RFC 3339, e.g. 2026-11-01T00:00:00Z).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub since: Option<DateTime<Utc>>,
    /// Only entries before this time (RFC 3339).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub until: Option<DateTime<Utc>>,
}

/// Parses an RFC 3339 time (any offset) into UTC.
pub fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("not an RFC 3339 time like 2026-11-22T08:00:00Z ({e})"))
}

/// The result of `audit verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verified {
    /// `true`.
    pub intact: bool,
    /// Entries verified.
    pub entries: u64,
}

impl fmt::Display for Verified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "The audit chain is intact: {} entries verified.",
            self.entries
        )
    }
}

/// Walks the chain (see [`AuditCommand::Verify`]).
pub fn verify(ctx: &Context, vault: &Vault, printer: &Printer<'_>) -> Result<Verified, CliError> {
    let store = vault.store();
    let bar = printer.progress_bar(store.audit_head_seq()?.max(0) as u64, "verifying");
    let result = store.verify_audit(&mut |seq| bar.set_position(seq.max(0) as u64))?;
    bar.finish_and_clear();
    let call = ctx.call("audit.verify");
    match result {
        Ok(entries) => {
            store.record_action(
                &call,
                "ok",
                &format!("{entries} entries verified; the chain is intact"),
            )?;
            Ok(Verified {
                intact: true,
                entries,
            })
        }
        Err(e) => {
            store.record_action(
                &call,
                "audit_chain_broken",
                &format!("chain {} is broken at entry {}", e.chain, e.seq()),
            )?;
            Err(CliError::AuditChainBroken(e))
        }
    }
}

/// Streams entries (see [`AuditCommand::Export`]); returns how many.
pub fn export(
    ctx: &Context,
    vault: &Vault,
    args: &ExportArgs,
    json: bool,
    out: &mut dyn Write,
) -> Result<u64, CliError> {
    if let (Some(s), Some(u)) = (args.since, args.until) {
        if s >= u {
            return Err(CliError::InvalidArgument(
                "--since must be before --until".into(),
            ));
        }
    }
    let store = vault.store();
    // Entries appended while exporting (its own included) are left out:
    // each chain is read up to the head it had when the export began.
    let chains = store.audit_chains()?;
    let mut count = 0u64;
    if json {
        out.write_all(b"{\"entries\": [")?;
    }
    for chain in &chains {
        let head = chain.head.seq;
        let mut query = AuditQuery {
            chain: chain.chain,
            after_seq: 0,
            since: args.since,
            until: args.until,
            limit: PAGE,
        };
        'pages: loop {
            let page = store.audit_query(&query)?;
            let Some(last) = page.last() else { break };
            query.after_seq = last.seq;
            let full = page.len() == PAGE;
            for entry in &page {
                if entry.seq > head {
                    break 'pages;
                }
                if json && count > 0 {
                    out.write_all(b",")?;
                }
                if json {
                    out.write_all(b"\n  ")?;
                }
                serde_json::to_writer(&mut *out, entry).map_err(std::io::Error::other)?;
                if !json {
                    out.write_all(b"\n")?;
                }
                count += 1;
            }
            if !full {
                break;
            }
        }
    }
    if json {
        writeln!(out, "\n], \"count\": {count}}}")?;
    }
    out.flush()?;
    let bound = |t: Option<DateTime<Utc>>| {
        t.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
            .unwrap_or_else(|| "-".into())
    };
    store.record_action(
        &ctx.call("audit.export"),
        "ok",
        &format!(
            "{count} entries exported (since {}, until {}, up to {})",
            bound(args.since),
            bound(args.until),
            heads(&chains)
        ),
    )?;
    Ok(count)
}

/// Where each chain ended when an export began: `entry 57` for one chain,
/// `chain 1 entry 57, chain 2 entry 3` for several.
fn heads(chains: &[dzl_store::ChainRow]) -> String {
    match chains {
        [one] => format!("entry {}", one.head.seq),
        many => many
            .iter()
            .map(|c| format!("chain {} entry {}", c.chain, c.head.seq))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// Runs an `audit` verb and prints its result.
pub fn run(ctx: &Context, cmd: &AuditCommand, printer: &mut Printer<'_>) -> Result<(), CliError> {
    let vault = Vault::open(ctx)?;
    match cmd {
        AuditCommand::Verify(_) => {
            let done = verify(ctx, &vault, printer)?;
            printer.print(&done)
        }
        AuditCommand::Export(args) => {
            let json = printer.json();
            export(ctx, &vault, args, json, printer.out()).map(|_| ())
        }
    }
}
