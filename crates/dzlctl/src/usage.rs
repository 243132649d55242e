//! `dzlctl usage`: calls per tenant, per operation, per UTC day, for
//! billing (bureaus charge per call). Counted by the server in the same
//! transaction as each call, refusals included (with their outcome), so the
//! numbers are exactly the calls the vault answered. Text table, one JSON
//! document, or CSV.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use chrono::NaiveDate;
use clap::Args;
use dzl_store::UsageQuery;
use dzl_types::TenantId;
use serde::Serialize;

use crate::error::CliError;
use crate::output::{Printer, Table};
use crate::vault::{Context, Vault};

/// Arguments of `usage`.
#[derive(Debug, Clone, Default, Args)]
pub struct UsageArgs {
    /// First UTC day to count, inclusive (YYYY-MM-DD).
    #[arg(long, value_name = "DATE", value_parser = parse_date)]
    pub from: Option<NaiveDate>,
    /// Last UTC day to count, inclusive (YYYY-MM-DD).
    #[arg(long, value_name = "DATE", value_parser = parse_date)]
    pub to: Option<NaiveDate>,
    /// Only this tenant (`ten_…`).
    #[arg(long, value_name = "TENANT_ID", value_parser = parse_tenant_id)]
    pub tenant: Option<TenantId>,
    /// Print CSV (a header line, then one line per row) instead of a table.
    #[arg(long)]
    pub csv: bool,
}

fn parse_date(s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| "expected a date like 2026-11-22".into())
}

fn parse_tenant_id(s: &str) -> Result<TenantId, dzl_types::domain::Invalid> {
    TenantId::parse(s)
}

/// Calls of one tenant and operation on one day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageLine {
    /// UTC day, YYYY-MM-DD.
    pub day: String,
    /// The tenant.
    pub tenant_id: String,
    /// Its display name (empty if the tenant is unknown).
    pub tenant_name: String,
    /// The operation, e.g. `deposit.create`, `redemption.create`.
    pub operation: String,
    /// Every call answered.
    pub calls: u64,
    /// Calls that succeeded.
    pub ok: u64,
    /// Calls refused (their outcomes are in the audit trail).
    pub refused: u64,
}

/// The result of `usage`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageReport {
    /// First day counted, if bounded.
    pub from: Option<String>,
    /// Last day counted, if bounded.
    pub to: Option<String>,
    /// The tenant counted, if only one.
    pub tenant_id: Option<String>,
    /// Rows by day, tenant, operation.
    pub rows: Vec<UsageLine>,
    /// Sum of `calls`.
    pub total_calls: u64,
}

/// The CSV header.
pub const CSV_HEADER: [&str; 7] = [
    "day",
    "tenant_id",
    "tenant_name",
    "operation",
    "calls",
    "ok",
    "refused",
];

impl fmt::Display for UsageReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.rows.is_empty() {
            return writeln!(f, "No calls in this period.");
        }
        let mut table = Table::new(&[
            "DAY",
            "TENANT",
            "NAME",
            "OPERATION",
            "CALLS",
            "OK",
            "REFUSED",
        ]);
        for r in &self.rows {
            table.row(vec![
                r.day.clone(),
                r.tenant_id.clone(),
                r.tenant_name.clone(),
                r.operation.clone(),
                r.calls.to_string(),
                r.ok.to_string(),
                r.refused.to_string(),
            ]);
        }
        write!(f, "{table}")?;
        writeln!(f, "Total: {} calls.", self.total_calls)
    }
}

impl UsageReport {
    /// The report as CSV (RFC 4180), header first.
    pub fn to_csv(&self) -> Result<String, CliError> {
        let mut w = csv::Writer::from_writer(Vec::new());
        let err = |e: csv::Error| CliError::Output(std::io::Error::other(e));
        w.write_record(CSV_HEADER).map_err(err)?;
        for r in &self.rows {
            w.write_record([
                r.day.as_str(),
                &r.tenant_id,
                &r.tenant_name,
                &r.operation,
                &r.calls.to_string(),
                &r.ok.to_string(),
                &r.refused.to_string(),
            ])
            .map_err(err)?;
        }
        let bytes = w
            .into_inner()
            .map_err(|e| CliError::Output(std::io::Error::other(e.to_string())))?;
        String::from_utf8(bytes).map_err(|e| CliError::Output(std::io::Error::other(e)))
    }
}

/// Counts calls (see [`crate::Command::Usage`]).
pub fn usage(ctx: &Context, vault: &Vault, args: &UsageArgs) -> Result<UsageReport, CliError> {
    if let (Some(from), Some(to)) = (args.from, args.to) {
        if from > to {
            return Err(CliError::InvalidArgument(
                "--from must not be after --to".into(),
            ));
        }
    }
    let store = vault.store();
    let names: HashMap<String, String> = store
        .tenants()?
        .into_iter()
        .map(|t| (t.id.to_string(), t.name))
        .collect();
    let counters = store.usage_query(&UsageQuery {
        from: args.from,
        to: args.to,
        tenant: args.tenant.clone(),
    })?;
    let mut grouped: BTreeMap<(String, String, String), (u64, u64)> = BTreeMap::new();
    for c in counters {
        let entry = grouped
            .entry((c.day, c.tenant_id, c.operation))
            .or_default();
        if c.outcome == "ok" {
            entry.0 += c.calls;
        } else {
            entry.1 += c.calls;
        }
    }
    let rows: Vec<UsageLine> = grouped
        .into_iter()
        .map(|((day, tenant_id, operation), (ok, refused))| UsageLine {
            tenant_name: names.get(&tenant_id).cloned().unwrap_or_default(),
            day,
            tenant_id,
            operation,
            calls: ok + refused,
            ok,
            refused,
        })
        .collect();
    let report = UsageReport {
        from: args.from.map(|d| d.to_string()),
        to: args.to.map(|d| d.to_string()),
        tenant_id: args.tenant.as_ref().map(ToString::to_string),
        total_calls: rows.iter().map(|r| r.calls).sum(),
        rows,
    };
    store.record_action(
        &ctx.call("usage.report"),
        "ok",
        &format!(
            "usage reported: {} rows, {} calls (from {}, to {}, tenant {})",
            report.rows.len(),
            report.total_calls,
            report.from.as_deref().unwrap_or("-"),
            report.to.as_deref().unwrap_or("-"),
            report.tenant_id.as_deref().unwrap_or("all")
        ),
    )?;
    Ok(report)
}

/// Runs `usage` and prints its result.
pub fn run(ctx: &Context, args: &UsageArgs, printer: &mut Printer<'_>) -> Result<(), CliError> {
    if args.csv && printer.json() {
        return Err(CliError::InvalidArgument(
            "--csv and --json cannot be combined".into(),
        ));
    }
    let vault = Vault::open(ctx)?;
    let report = usage(ctx, &vault, args)?;
    if args.csv {
        let text = report.to_csv()?;
        printer.out().write_all(text.as_bytes())?;
        printer.out().flush()?;
        Ok(())
    } else {
        printer.print(&report)
    }
}
