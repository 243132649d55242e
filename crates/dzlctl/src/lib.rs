//! `dzlctl`, the operator CLI of dzl-vault, as a library: the clap command
//! line ([`Cli`], [`Command`]), one module per verb group ([`init`],
//! [`tenant`]; `keys`, `root`, `audit`, `purge` and `usage` follow the same
//! shape), and [`run`], which parses, executes and prints. `main.rs` only
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
//! * The only secret ever printed is a new tenant's signing secret, once, by
//!   `tenant add`. The root key is never printed (only its fingerprint).
//! * Exit codes: 0 ok, 1 operation failed, 2 usage error, 3 vault locked
//!   (not initialised, or no usable / the wrong root key); see [`ExitStatus`].

pub mod error;
pub mod init;
pub mod output;
pub mod settings;
pub mod tenant;
pub mod vault;

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

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
  dzlctl --data-dir /var/lib/dzl tenant suspend ten_0123456789abcdef0123456789abcdef"
    };
}

/// The long help's sections after the options.
const AFTER_LONG_HELP: &str = concat!(
    examples!(),
    "

Configuration:
  The data directory is --data-dir if given, else DZL__STORE__DATA_DIR, else
  `data_dir` in the [store] section of the --config TOML file, else ./dzl-data.
  A relative path is relative to the working directory. Other sections of the
  file (the server's) are ignored.

    [store]
    data_dir = \"/var/lib/dzl\"

Root key:
  DZL_ROOT_KEY_FILE  a file holding the base64 root key (mode 0600). `init`
                     writes a new key there when the file does not exist yet.
  DZL_ROOT_KEY       the base64 root key itself (used when DZL_ROOT_KEY_FILE
                     is unset).
  The root key only wraps the keyring; it is never stored in the vault and
  never printed (only its fingerprint). Every command except `init` checks
  that it opens the vault's keyring before reading or changing anything.

Output:
  Text for people by default. With --json, stdout is exactly one JSON
  document: the result, or {\"error\": \"...\", \"code\": \"...\"} on failure.
  Errors are also printed to stderr as `error: <message>`.

Exit status:
  0  success
  1  the operation failed (store, configuration, unknown tenant, ...)
  2  usage error: bad arguments or options
  3  the vault is locked: not initialised, or no usable / the wrong root key"
);

/// The command line of `dzlctl`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "dzlctl",
    version,
    about = "Operate a dzl-vault: initialise it, manage its tenants and keys.",
    long_about = "\
dzlctl is the operator's tool for a dzl-vault, the credit bureau's
authorization-code data vault. It creates a vault (store, keyring and root
key), registers the platforms, funders and operators that may call it, and
suspends or resumes them.

It works directly on the vault's data directory, the one the server uses; a
running server picks up tenant and key changes by itself, without restart.
Every change is recorded in the vault's audit log with `cli:<your user>` as
actor.",
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
}

/// The verbs, one variant per verb group.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Create a new vault: store, keyring and (if needed) root key.
    ///
    /// Creates the data directory and its store, a keyring whose first key
    /// (KEK version 1) is wrapped by the root key, the receipt signing key
    /// and the subject-index key. When DZL_ROOT_KEY_FILE names a file that
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
Example:
  DZL_ROOT_KEY_FILE=/etc/dzl/root.key dzlctl --data-dir /var/lib/dzl init"
    )]
    Init(init::InitArgs),
    /// Manage tenants: add, list, suspend, resume.
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
  dzlctl tenant suspend ten_0123456789abcdef0123456789abcdef"
    )]
    Tenant(tenant::TenantCommand),
}

/// Executes a parsed command line, printing through `printer`.
pub fn execute(cli: &Cli, printer: &mut Printer<'_>) -> Result<(), CliError> {
    let ctx = Context::from_args(cli.global.config.as_deref(), cli.global.data_dir.clone())?;
    if let Some(warning) = ctx.root_key_file_warning() {
        printer.warn(&warning);
    }
    match &cli.command {
        Command::Init(args) => init::run(&ctx, args, printer),
        Command::Tenant(cmd) => tenant::run(&ctx, cmd, printer),
    }
}

/// Runs a parsed command line: its result on `out`; on failure
/// `error: <message>` on `err` (and, with `--json`, `{"error", "code"}` on
/// `out`). Returns how the process should end.
pub fn run(cli: &Cli, out: &mut dyn Write, err: &mut dyn Write) -> ExitStatus {
    let json = cli.global.json;
    let result = execute(cli, &mut Printer::new(json, out, err));
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
