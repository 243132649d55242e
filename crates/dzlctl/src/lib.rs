//! `dzlctl`, the operator CLI of dzl-vault, as a library: the clap command
//! line ([`Cli`], [`Command`]), one module per verb group ([`init`],
//! [`tenant`], [`keys`], [`root`], [`audit`], [`purge`], [`usage`]), and
//! [`run`], which parses, executes and prints. `main.rs` only
//! calls [`main_with_args`]. Each verb group module exposes typed functions
//! (e.g. [`tenant::add`]) that tests and other crates can call without the
//! command line.
//!
//! Architecture invariants:
//! * dzlctl works on the vault's data directory through `dzl_store` and
//!   `dzl_store::admin`; it knows no SQL and no HTTP.
//! * With `--json`, stdout carries exactly one JSON document — the result or
//!   `{"error", "code"}` — and nothing else; warnings and error text go to
//!   stderr.
//! * The root key is never printed (only its fingerprint).
//! * The only secrets ever printed are a tenant's signing secret, once, by
//!   `tenant add` and `tenant rotate-secret`.
//! * Every operator action that changes the vault, and every export of its
//!   records (`audit export`, `usage`) and `audit verify`, appends an audit
//!   entry with actor `cli:<os user>`; listings (`tenant list`, `keys list`,
//!   `purge --dry-run`) do not.
//! * Exit codes: 0 ok, 1 operation failed or refused (a retire still
//!   needed, a broken audit chain, an incomplete rewrap…), 2 usage error,
//!   3 vault locked (not initialised, or no usable / the wrong root key);
//!   see [`ExitStatus`].
//! * The clock is the system's. The hidden global flag `--now RFC3339`
//!   replaces it for one run; it exists for tests only (moving time forward
//!   without sleeping, e.g. for `purge`) and must not be used in operation.

pub mod audit;
pub mod error;
pub mod init;
pub mod keys;
pub mod output;
pub mod purge;
pub mod root;
pub mod settings;
pub mod tenant;
pub mod usage;
pub mod vault;

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use chrono::{DateTime, Utc};

use clap::{Args, Parser, Subcommand};

pub use error::{CliError, ExitStatus};
pub use output::Printer;
pub use settings::Settings;
pub use vault::{Context, Vault};

/// Examples shared by `-h` and `--help`.
macro_rules! examples {
    () => {
        "\
Examples:
  export DZL_ROOT_KEY_FILE=/etc/dzl/root.key      # must not exist yet for a new vault
  dzlctl --data-dir /var/lib/dzl init
  dzlctl --data-dir /var/lib/dzl tenant add --kind funder --name 'City Bank' --scopes applicant,risk
  dzlctl --data-dir /var/lib/dzl --json tenant list
  dzlctl --data-dir /var/lib/dzl tenant suspend ten_0123456789abcdef0123456789abcdef
  dzlctl --data-dir /var/lib/dzl keys rotate && dzlctl --data-dir /var/lib/dzl keys rewrap
  dzlctl --data-dir /var/lib/dzl keys retire 1
  dzlctl --data-dir /var/lib/dzl audit verify
  dzlctl --data-dir /var/lib/dzl purge --dry-run
  dzlctl --data-dir /var/lib/dzl usage --from 2026-11-01 --to 2026-11-30 --csv > 2026-11.csv"
    };
}

/// The long help's sections after the options.
const AFTER_LONG_HELP: &str = concat!(
    examples!(),
    "

Configuration:
  The data directory is --data-dir if given, else DZL__STORE__DATA_DIR, else
  `data_dir` in the [store] section of the --config TOML file, else ./dzl-data.
  A relative path is relative to the working directory. Two more settings,
  each also settable as DZL__SECTION__KEY (e.g. DZL__RETENTION__DEPOSIT_DAYS):
  how many days `purge` keeps a deposit (default 365), and how many seconds a
  tenant's old secret keeps working after `tenant rotate-secret` (default
  86400). Other sections of the file (the server's) are ignored.

    [store]
    data_dir = \"/var/lib/dzl\"

    [retention]
    deposit_days = 365

    [tenants]
    secret_overlap_seconds = 86400

Root key:
  DZL_ROOT_KEY_FILE  a file holding the base64 root key (mode 0600). `init`
                     writes a new key there when the file does not exist yet.
  DZL_ROOT_KEY       the base64 root key itself (used when DZL_ROOT_KEY_FILE
                     is unset).
  DZL__ROOT_KEY__PKCS11 (or [root_key] pkcs11 in the config file)
                     the root key in a hardware security module, as a
                     pkcs11: URI (token=…;object=…?module-path=…&pin-source=
                     file:… or env:…). The key never leaves the module; it
                     excludes the two above. `init --root-key` takes one too.
  The root key only wraps the keyring; it is never stored in the vault and
  never printed (only its fingerprint). Every command except `init` checks
  that it opens the vault's keyring before reading or changing anything.

Output:
  Text for people by default. With --json, stdout is exactly one JSON
  document: the result, or {\"error\": \"...\", \"code\": \"...\"} on failure.
  Errors are also printed to stderr as `error: <message>`.

Exit status:
  0  success
  1  the operation failed or was refused (store, configuration, unknown
     tenant, a key version still in use, a broken audit chain, ...)
  2  usage error: bad arguments or options
  3  the vault is locked: not initialised, or no usable / the wrong root key"
);

/// The command line of `dzlctl`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "dzlctl",
    version,
    about = "Operate a dzl-vault: tenants, keys, audit trail, retention and billing.",
    long_about = "\
dzlctl is the operator's tool for a dzl-vault, the credit bureau's
authorization-code data vault. It creates a vault (store, keyring and root
key), registers the platforms, funders and operators that may call it and
rotates their secrets, runs the key lifecycle (rotate, rewrap, retire, root
rekey), verifies and exports the audit trail, purges expired codes and
deposits past retention, and reports usage for billing.

It works directly on the vault's data directory, the one the server uses,
while the server keeps serving: a running server picks up tenant and key
changes by itself, without restart, and long work is done in short
transactions. Every change is recorded in the vault's audit log with
`cli:<your user>` as actor.",
    after_help = examples!(),
    after_long_help = AFTER_LONG_HELP,
)]
pub struct Cli {
    /// Options every verb takes.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The verb.
    #[command(subcommand)]
    pub command: Command,
}

/// Heading of the options every verb takes, in each verb's help.
const GLOBAL: &str = "Global options";

/// Options every verb takes.
#[derive(Debug, Clone, Default, Args)]
pub struct GlobalArgs {
    /// TOML configuration file (`[store] data_dir = "..."`).
    #[arg(long, global = true, value_name = "FILE", help_heading = GLOBAL)]
    pub config: Option<PathBuf>,
    /// The vault's data directory (beats the configuration).
    #[arg(long, global = true, value_name = "DIR", help_heading = GLOBAL)]
    pub data_dir: Option<PathBuf>,
    /// Print exactly one JSON document on stdout instead of text.
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub json: bool,
    /// FOR TESTS ONLY: run as if the clock read this RFC 3339 time (purge
    /// cut-offs, secret overlaps, audit times). Hidden from help; never use
    /// it to operate a vault.
    #[arg(long, global = true, hide = true, value_name = "RFC3339", value_parser = audit::parse_time)]
    pub now: Option<DateTime<Utc>>,
}

/// The verbs, one variant per verb group.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Create a new vault: store, keyring and (if needed) root key.
    ///
    /// Creates the data directory and its store, a keyring whose first key
    /// (KEK version 1) is wrapped by the root key, the receipt signing key
    /// and the subject-index key, in the cipher suite --suite names: intl
    /// (the default) or gm (国密: SM4-GCM, HMAC-SM3, SM3, SM2; tenants then
    /// sign requests with HMAC-SM3). When DZL_ROOT_KEY_FILE names a file that
    /// does not exist yet, a new random root key is written there first
    /// (mode 0600); otherwise the root key is read from DZL_ROOT_KEY_FILE or
    /// DZL_ROOT_KEY.
    ///
    /// Prints the data directory and the root key's fingerprint, never the
    /// key. Refuses (exit 1, nothing changed) when the vault is already
    /// initialised. Back up the root key file and keep it apart from the
    /// data directory: without it nobody can open the vault.
    #[command(
        verbatim_doc_comment,
        after_help = "\
Examples:
  DZL_ROOT_KEY_FILE=/etc/dzl/root.key dzlctl --data-dir /var/lib/dzl init
  dzlctl --data-dir /var/lib/dzl init --suite gm \\
    --root-key 'pkcs11:token=dzl;object=root?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/dzl/hsm.pin'"
    )]
    Init(init::InitArgs),
    /// Manage tenants: add, list, suspend, resume, rotate their secrets.
    ///
    /// Tenants are the vault's callers: platforms deposit applicant data and
    /// issue authorization codes, funders redeem them, operators ask for
    /// subject-access reports and usage. Each signs its requests with the
    /// secret `tenant add` prints once.
    #[command(
        subcommand,
        verbatim_doc_comment,
        after_help = "\
Examples:
  dzlctl tenant add --kind platform --name 'Lending App Ltd'
  dzlctl tenant list
  dzlctl tenant suspend ten_0123456789abcdef0123456789abcdef
  dzlctl tenant rotate-secret ten_0123456789abcdef0123456789abcdef"
    )]
    Tenant(tenant::TenantCommand),
    /// The keyring: list, rotate, rewrap, retire key versions.
    ///
    /// The vault encrypts every deposit under fresh data keys, and wraps
    /// those (and its tenants' secrets) under a versioned key-encryption
    /// key (KEK); the root key wraps the KEKs. One version is active; older
    /// ones only decrypt until `keys rewrap` has moved everything off them
    /// and `keys retire` deletes them.
    #[command(
        subcommand,
        verbatim_doc_comment,
        after_help = "\
Examples:
  dzlctl keys list
  dzlctl keys rotate && dzlctl keys rewrap && dzlctl keys retire 1"
    )]
    Keys(keys::KeysCommand),
    /// The root key: rekey the keyring under a new one.
    ///
    /// The root key wraps the keyring and is never stored in the vault.
    /// `root rekey` replaces it.
    #[command(
        subcommand,
        verbatim_doc_comment,
        after_help = "\
Example:
  dzlctl root rekey --new-root-key-file /etc/dzl/root-2026.key"
    )]
    Root(root::RootCommand),
    /// The audit trail: verify its hash chain, export it.
    ///
    /// Every call to the vault and every operator action is an entry of an
    /// append-only, hash-chained log: who, when, what, the result, and the
    /// ids and group names involved — never personal data.
    #[command(
        subcommand,
        verbatim_doc_comment,
        after_help = "\
Examples:
  dzlctl audit verify
  dzlctl audit export --since 2026-11-01T00:00:00Z > audit.jsonl"
    )]
    Audit(audit::AuditCommand),
    /// Expire codes past their deadline; crypto-shred deposits past retention.
    ///
    /// Stores every issued code whose deadline has passed as expired (it
    /// was already refused as expired; now the store says so too), then
    /// crypto-shreds every deposit created more than [retention]
    /// deposit_days ago (default 365): its data keys and encrypted groups
    /// are destroyed, its outstanding codes revoked; the deposit's row and
    /// its audit trail remain, so subject-access reports still show it.
    /// Reports the counts. With --dry-run, reports what it would do and
    /// changes nothing.
    ///
    /// Works in transactions of 1000 codes or deposits, so a running
    /// server keeps serving. Run it daily (e.g. from cron or a systemd
    /// timer).
    ///
    /// Changes: codes' state, shredded deposits, and audit entries
    /// (codes.expire, deposit.purge per deposit, vault.purge for the run).
    /// Needs the root key.
    #[command(
        verbatim_doc_comment,
        after_help = "\
Examples:
  dzlctl purge --dry-run
  DZL__RETENTION__DEPOSIT_DAYS=180 dzlctl --json purge"
    )]
    Purge(purge::PurgeArgs),
    /// Calls per tenant, per operation, per day — for billing.
    ///
    /// Counts every call the vault answered, per UTC day, tenant and
    /// operation (deposit.create, code.issue, redemption.create, …): all
    /// calls, those that succeeded and those refused. --from and --to bound
    /// the days (inclusive), --tenant picks one tenant. Prints a table,
    /// one JSON document with --json ({"rows":[{"day", "tenant_id",
    /// "tenant_name", "operation", "calls", "ok", "refused"}], …}), or CSV
    /// with --csv (header: day,tenant_id,tenant_name,operation,calls,ok,refused).
    ///
    /// Changes: appends one audit entry (usage.report). Needs the root key.
    #[command(
        verbatim_doc_comment,
        after_help = "\
Examples:
  dzlctl usage --from 2026-11-01 --to 2026-11-30
  dzlctl usage --tenant ten_0123456789abcdef0123456789abcdef --csv > bank-a.csv"
    )]
    Usage(usage::UsageArgs),
}

/// Executes a parsed command line, printing through `printer`.
pub fn execute(cli: &Cli, printer: &mut Printer<'_>) -> Result<(), CliError> {
    let mut ctx = Context::from_args(cli.global.config.as_deref(), cli.global.data_dir.clone())?;
    ctx.now = cli.global.now;
    if let Some(warning) = ctx.root_key_file_warning() {
        printer.warn(&warning);
    }
    match &cli.command {
        Command::Init(args) => init::run(&ctx, args, printer),
        Command::Tenant(cmd) => tenant::run(&ctx, cmd, printer),
        Command::Keys(cmd) => keys::run(&ctx, cmd, printer),
        Command::Root(cmd) => root::run(&ctx, cmd, printer),
        Command::Audit(cmd) => audit::run(&ctx, cmd, printer),
        Command::Purge(args) => purge::run(&ctx, args, printer),
        Command::Usage(args) => usage::run(&ctx, args, printer),
    }
}

/// Runs a parsed command line: its result on `out`; on failure
/// `error: <message>` on `err` (and, with `--json`, `{"error", "code"}` on
/// `out`). Returns how the process should end.
pub fn run(cli: &Cli, out: &mut dyn Write, err: &mut dyn Write) -> ExitStatus {
    let json = cli.global.json;
    let progress = std::io::stderr().is_terminal();
    let result = execute(
        cli,
        &mut Printer::new(json, out, err).with_progress(progress),
    );
    match result {
        Ok(()) => ExitStatus::Ok,
        Err(e) => {
            report_error(json, &e.to_string(), e.code(), out, err);
            e.exit_status()
        }
    }
}

/// The whole program on these arguments (the first is the program name),
/// with the process's stdout and stderr. Returns the exit code.
pub fn main_with_args<I, T>(args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    match Cli::try_parse_from(&args) {
        Ok(cli) => run(&cli, &mut out, &mut err).code(),
        Err(e) => {
            let status = e.exit_code();
            if e.use_stderr() && wants_json(&args) {
                let rendered = e.render().to_string();
                let first = rendered.lines().next().unwrap_or_default();
                let message = first.strip_prefix("error: ").unwrap_or(first);
                json_error(message, "usage", &mut out);
            }
            // clap's own text: `error: …` with usage on stderr, help and
            // version on stdout.
            let _ = e.print();
            u8::try_from(status).unwrap_or(ExitStatus::Failure.code())
        }
    }
}

/// Whether `--json` appears among the options (before a `--`).
fn wants_json(args: &[OsString]) -> bool {
    args.iter()
        .skip(1)
        .take_while(|a| *a != "--")
        .any(|a| a == "--json")
}

/// The `--json` document of a failure.
#[derive(serde::Serialize)]
struct ErrorDoc<'a> {
    error: &'a str,
    code: &'a str,
}

fn report_error(json: bool, message: &str, code: &str, out: &mut dyn Write, err: &mut dyn Write) {
    // Nothing more can be done if these writes fail.
    let _ = writeln!(err, "error: {message}");
    if json {
        json_error(message, code, out);
    }
}

fn json_error(message: &str, code: &str, out: &mut dyn Write) {
    if let Ok(doc) = serde_json::to_string_pretty(&ErrorDoc {
        error: message,
        code,
    }) {
        let _ = writeln!(out, "{doc}");
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn json_is_seen_before_the_double_dash_only() {
        let args = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert!(wants_json(&args(&["dzlctl", "tenant", "--json", "x"])));
        assert!(!wants_json(&args(&["dzlctl", "tenant", "--", "--json"])));
        assert!(!wants_json(&args(&["--json"])));
    }
}
