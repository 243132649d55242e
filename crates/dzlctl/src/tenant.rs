//! `dzlctl tenant …`: the callers of the vault. `add` registers a platform,
//! funder or operator and prints its signing secret; `rotate-secret` gives
//! one a new secret (the old one keeps working for `[tenants]
//! secret_overlap_seconds`) — these two are the only verbs that print a
//! secret, once; `list` shows every tenant (never a secret); `suspend` and
//! `resume` switch a tenant off and on, audited with the operator as actor;
//! `pin` and `unpin` tie a tenant to the client certificate it must present
//! over mutual TLS (and untie it).
//! A running server notices every change by itself (the store's generation).
//!
//! Arguments are parsed into domain types by clap (`ScopeSet`, `Purpose`,
//! `TenantId`), so a malformed value is a usage error (exit 2) before the
//! vault is opened.

use std::fmt;

use chrono::SecondsFormat;
use clap::{Args, Subcommand, ValueEnum};
use dzl_crypto::cert::InvalidPin;
use dzl_crypto::{CertIdentity, CertPin, Zeroizing};
use dzl_store::admin::{self, NewTenant};
use dzl_store::{TenantKind, TenantRow, TenantState};
use dzl_types::{Purpose, ScopeSet, TenantId};
use serde::{Serialize, Serializer};

use crate::error::{from_admin, CliError};
use crate::output::{Printer, Table};
use crate::vault::{Context, Vault};

/// Reason recorded in the audit log for operator suspensions and resumptions.
pub const OPERATOR_REASON: &str = "operator";

/// The `tenant` verbs.
#[derive(Debug, Clone, Subcommand)]
pub enum TenantCommand {
    /// Register a new tenant and print its signing secret (once).
    ///
    /// Creates a tenant of the given kind with a fresh tenant id, key id and
    /// signing secret. The secret is sealed under the vault's keyring and is
    /// printed this once: the vault cannot show it again. Hand it to the
    /// tenant over a secure channel; if it is lost, add a new tenant.
    ///
    /// Kinds: a platform deposits applicant data and issues codes; a funder
    /// redeems codes (only the groups in --scopes, only for --purposes; both
    /// default to all); an operator asks for subject-access reports and
    /// usage. --scopes and --purposes apply to funders only.
    ///
    /// With --cert-sha256, --cert-subject or --cert-file the tenant is
    /// pinned from the start: see `dzlctl tenant pin --help`.
    ///
    /// Changes: adds one tenant and one audit entry (tenant.add). Needs the
    /// root key.
    #[command(
        verbatim_doc_comment,
        after_help = "\
Examples:
  dzlctl tenant add --kind platform --name 'Lending App Ltd'
  dzlctl tenant add --kind funder --name 'City Bank' --scopes applicant,risk \\
      --purposes credit_application --rate-limit 200
  dzlctl --json tenant add --kind operator --name 'Compliance desk' | jq -r .secret"
    )]
    Add(AddArgs),
    /// List every tenant (never their secrets).
    ///
    /// Prints id, kind, name, key id, state, scopes, purposes, rate limit
    /// creation time and certificate pin of every tenant, oldest first.
    /// With --json: {"tenants":[{"tenant_id", "kind", "name", "key_id",
    /// "state", "scopes", "purposes", "rate_limit", "created_at",
    /// "cert_pin"}, …]}.
    ///
    /// Changes nothing. Needs the root key.
    #[command(
        verbatim_doc_comment,
        after_help = "\
Examples:
  dzlctl tenant list
  dzlctl --json tenant list | jq -r '.tenants[] | select(.state == \"suspended\") | .tenant_id'"
    )]
    List(ListArgs),
    /// Suspend a tenant: every request it signs is refused (403).
    ///
    /// The tenant keeps its data, codes and secret; codes issued to a
    /// suspended funder cannot be redeemed by it until it is resumed. A
    /// running server applies the change within moments, without restart.
    /// Suspending a suspended tenant changes nothing ("changed": false).
    ///
    /// Changes: the tenant's state, and one audit entry (tenant.suspend,
    /// reason "operator"). Needs the root key.
    #[command(
        verbatim_doc_comment,
        after_help = "\
Example:
  dzlctl tenant suspend ten_0123456789abcdef0123456789abcdef"
    )]
    Suspend(StateArgs),
    /// Resume a suspended tenant.
    ///
    /// Lifts a suspension, whether an operator or the vault itself (after
    /// repeated redemptions of unknown codes) suspended it. Resuming an
    /// active tenant changes nothing ("changed": false).
    ///
    /// Changes: the tenant's state, and one audit entry (tenant.resume,
    /// reason "operator"). Needs the root key.
    #[command(
        verbatim_doc_comment,
        after_help = "\
Example:
  dzlctl tenant resume ten_0123456789abcdef0123456789abcdef"
    )]
    Resume(StateArgs),
    /// Give a tenant a new signing secret; the old one works for a while.
    ///
    /// Generates a new signing secret for the tenant, seals it under the
    /// active key and prints it this once. The key id stays the same. The
    /// previous secret keeps being accepted for an overlap — [tenants]
    /// secret_overlap_seconds in the configuration, default 86400 (one day)
    /// — so the tenant can switch its integration without downtime; after
    /// that only the new secret signs. Rotating again within the overlap
    /// ends the older secret at once. A running server applies the change
    /// within a second, without restart.
    ///
    /// Changes: the tenant's secrets, and one audit entry
    /// (tenant.rotate_secret) with the overlap's end. Needs the root key.
    #[command(
        verbatim_doc_comment,
        after_help = "\
Examples:
  dzlctl tenant rotate-secret ten_0123456789abcdef0123456789abcdef
  DZL__TENANTS__SECRET_OVERLAP_SECONDS=3600 dzlctl --json tenant rotate-secret ten_0123456789abcdef0123456789abcdef | jq -r .secret"
    )]
    RotateSecret(StateArgs),
    /// Pin a tenant to the client certificate it must connect with.
    ///
    /// A pinned tenant's requests are accepted only over mutual TLS
    /// (`[tls] client_ca_file`) from a connection that presented the pinned
    /// certificate, so its signing secret alone, if stolen, is not enough.
    /// Any other connection gets 401 certificate_mismatch, and the refusal is
    /// audited. Pin by:
    ///   --cert-sha256   exactly one certificate: the SHA-256 fingerprint of
    ///                   its DER (64 hex digits; `:` separators as printed by
    ///                   `openssl x509 -noout -fingerprint -sha256` allowed);
    ///   --cert-subject  any certificate the client CA issued with exactly
    ///                   this subject, so a renewed certificate keeps working;
    ///   --cert-file     the certificate in a PEM file: its fingerprint, or
    ///                   with --by subject its subject.
    /// A new pin replaces the old one.
    ///
    /// Changes: the tenant's pin, and one audit entry (tenant.pin). A
    /// running server applies it within a second. Needs the root key.
    #[command(
        verbatim_doc_comment,
        after_help = "\
Examples:
  dzlctl tenant pin ten_… --cert-file platform-a.pem
  dzlctl tenant pin ten_… --cert-file platform-a.pem --by subject
  dzlctl tenant pin ten_… --cert-subject 'CN=platform-a, O=Lending App Ltd'
  dzlctl tenant pin ten_… --cert-sha256 3f:a1:…"
    )]
    Pin(PinCommandArgs),
    /// Remove a tenant's client certificate pin.
    ///
    /// The tenant is accepted again from any connection (any client
    /// certificate the client CA issued, when mutual TLS is on). Unpinning a
    /// tenant that is not pinned changes nothing ("changed": false).
    ///
    /// Changes: the tenant's pin, and one audit entry (tenant.unpin). Needs
    /// the root key.
    #[command(
        verbatim_doc_comment,
        after_help = "\
Example:
  dzlctl tenant unpin ten_…"
    )]
    Unpin(StateArgs),
}

/// A tenant kind on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    /// Deposits applicant data and issues codes.
    Platform,
    /// Redeems codes.
    Funder,
    /// Subject-access reports and usage.
    Operator,
}

impl From<KindArg> for TenantKind {
    fn from(k: KindArg) -> Self {
        match k {
            KindArg::Platform => TenantKind::Platform,
            KindArg::Funder => TenantKind::Funder,
            KindArg::Operator => TenantKind::Operator,
        }
    }
}

/// A non-empty list of purposes (`credit_application,drawdown`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurposeList(pub Vec<Purpose>);

/// Arguments of `tenant add`.
#[derive(Debug, Clone, Args)]
pub struct AddArgs {
    /// What the tenant does.
    #[arg(long, value_enum)]
    pub kind: KindArg,
    /// Display name, 1-100 characters (e.g. the company's name).
    #[arg(long)]
    pub name: String,
    /// Funders only: the record groups it may receive, comma-separated
    /// (applicant, device, risk). Default: all.
    #[arg(long, value_name = "GROUPS", value_parser = parse_scopes)]
    pub scopes: Option<ScopeSet>,
    /// Funders only: the purposes it may redeem for, comma-separated
    /// (credit_application, drawdown). Default: all.
    #[arg(long, value_name = "PURPOSES", value_parser = parse_purpose_list)]
    pub purposes: Option<PurposeList>,
    /// Requests per second the tenant may make (default 1000).
    #[arg(long, value_name = "REQUESTS_PER_SECOND", value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit: Option<u32>,
    /// Pin the tenant to a client certificate from the start.
    #[command(flatten)]
    pub pin: PinArgs,
}

/// Names a client certificate pin: at most one of the three ways.
#[derive(Debug, Clone, Default, Args)]
#[group(skip)]
pub struct PinArgs {
    /// The certificate's SHA-256 fingerprint (64 hex digits, `:` allowed).
    #[arg(long = "cert-sha256", value_name = "FINGERPRINT", value_parser = parse_fingerprint,
          conflicts_with_all = ["subject", "file"])]
    pub sha256: Option<CertPin>,
    /// The certificate's exact subject, e.g. "CN=platform-a, O=Lending App Ltd".
    #[arg(long = "cert-subject", value_name = "DN", value_parser = parse_subject,
          conflicts_with = "file")]
    pub subject: Option<CertPin>,
    /// A PEM file holding the certificate (the first one in it is used).
    #[arg(long = "cert-file", value_name = "PEM_FILE")]
    pub file: Option<std::path::PathBuf>,
    /// With --cert-file: pin its fingerprint (default) or its subject.
    #[arg(long, value_enum, value_name = "WHAT", requires = "file")]
    pub by: Option<PinBy>,
}

/// What of a certificate file to pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PinBy {
    /// Exactly this certificate.
    Fingerprint,
    /// Its subject (survives renewal by the same CA).
    Subject,
}

/// Arguments of `tenant pin`.
#[derive(Debug, Clone, Args)]
pub struct PinCommandArgs {
    /// The tenant's id.
    #[arg(value_name = "TENANT_ID", value_parser = parse_tenant_id)]
    pub id: TenantId,
    /// The pin (exactly one of the three; none is a usage error).
    #[command(flatten)]
    pub pin: PinArgs,
}

/// Arguments of `tenant list` (none yet).
#[derive(Debug, Clone, Default, Args)]
pub struct ListArgs {}

/// Arguments of `tenant suspend` / `tenant resume`.
#[derive(Debug, Clone, Args)]
pub struct StateArgs {
    /// The tenant's id (`ten_` and 32 hex characters; see `dzlctl tenant list`).
    #[arg(value_name = "TENANT_ID", value_parser = parse_tenant_id)]
    pub id: TenantId,
}

fn parse_scopes(s: &str) -> Result<ScopeSet, dzl_types::domain::Invalid> {
    ScopeSet::parse_list(s)
}

fn parse_purpose_list(s: &str) -> Result<PurposeList, dzl_types::domain::Invalid> {
    let list = dzl_types::domain::parse_purposes(s)?;
    if list.is_empty() {
        return Err(dzl_types::domain::Invalid(
            "purposes must name at least one purpose",
        ));
    }
    Ok(PurposeList(list))
}

fn parse_tenant_id(s: &str) -> Result<TenantId, dzl_types::domain::Invalid> {
    TenantId::parse(s)
}

fn parse_fingerprint(s: &str) -> Result<CertPin, InvalidPin> {
    CertPin::sha256_from_hex(s)
}

fn parse_subject(s: &str) -> Result<CertPin, InvalidPin> {
    CertPin::subject(s)
}

impl PinArgs {
    /// The pin these arguments name (reading --cert-file), or `None`.
    pub fn resolve(&self) -> Result<Option<CertPin>, CliError> {
        if let Some(pin) = self.sha256.clone().or_else(|| self.subject.clone()) {
            return Ok(Some(pin));
        }
        let Some(path) = &self.file else {
            return Ok(None);
        };
        use rustls_pki_types::pem::PemObject as _;
        let unreadable = |why: String| {
            CliError::InvalidArgument(format!("--cert-file {}: {why}", path.display()))
        };
        let der = rustls_pki_types::CertificateDer::pem_file_iter(path)
            .map_err(|e| unreadable(e.to_string()))?
            .next()
            .ok_or_else(|| unreadable("no PEM certificate in it".into()))?
            .map_err(|e| unreadable(e.to_string()))?;
        let id = CertIdentity::from_der(&der);
        match self.by.unwrap_or(PinBy::Fingerprint) {
            PinBy::Fingerprint => Ok(Some(CertPin::Sha256(id.sha256))),
            PinBy::Subject => {
                let subject = id
                    .subject
                    .ok_or_else(|| unreadable("not an X.509 certificate".into()))?;
                CertPin::subject(&subject)
                    .map(Some)
                    .map_err(|e| unreadable(e.to_string()))
            }
        }
    }
}

/// A new tenant and its credentials, as printed once by `tenant add`.
#[derive(Clone, Serialize)]
pub struct TenantAdded {
    /// `ten_…`.
    pub tenant_id: TenantId,
    /// The key id it signs with.
    pub key_id: String,
    /// The signing secret (base64url). Printed once; never stored in the clear.
    #[serde(serialize_with = "expose")]
    pub secret: Zeroizing<String>,
    /// `platform`, `funder` or `operator`.
    pub kind: &'static str,
    /// Display name, as stored.
    pub name: String,
    /// Entitled groups (funders; `null` otherwise).
    pub scopes: Option<ScopeSet>,
    /// Entitled purposes (funders; empty otherwise).
    pub purposes: Vec<Purpose>,
    /// Requests per second.
    pub rate_limit: u32,
    /// The client certificate it must connect with, or `null`.
    pub cert_pin: Option<String>,
}

fn expose<S: Serializer>(secret: &Zeroizing<String>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(secret)
}

impl fmt::Debug for TenantAdded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantAdded")
            .field("tenant_id", &self.tenant_id)
            .field("key_id", &self.key_id)
            .field("kind", &self.kind)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for TenantAdded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Added {} tenant {:?}.", self.kind, self.name)?;
        writeln!(f, "  tenant id   {}", self.tenant_id)?;
        writeln!(f, "  key id      {}", self.key_id)?;
        writeln!(f, "  secret      {}", self.secret.as_str())?;
        if let Some(scopes) = self.scopes {
            writeln!(f, "  scopes      {}", scopes.to_list())?;
            writeln!(f, "  purposes    {}", purposes_text(&self.purposes))?;
        }
        writeln!(f, "  rate limit  {} requests/s", self.rate_limit)?;
        if let Some(pin) = &self.cert_pin {
            writeln!(f, "  cert pin    {pin}")?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "The secret is shown this once; the vault cannot show it again. Hand it to the\n\
             tenant over a secure channel now."
        )
    }
}

/// A tenant's new secret, as printed once by `tenant rotate-secret`.
#[derive(Clone, Serialize)]
pub struct SecretRotated {
    /// The tenant.
    pub tenant_id: TenantId,
    /// The key id it signs with (unchanged).
    pub key_id: String,
    /// The new signing secret (base64url). Printed once.
    #[serde(serialize_with = "expose")]
    pub secret: Zeroizing<String>,
    /// Until when (RFC 3339 UTC) the previous secret is still accepted.
    pub previous_secret_valid_until: String,
}

impl fmt::Debug for SecretRotated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretRotated")
            .field("tenant_id", &self.tenant_id)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for SecretRotated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "New signing secret for tenant {}.", self.tenant_id)?;
        writeln!(f, "  key id            {}", self.key_id)?;
        writeln!(f, "  secret            {}", self.secret.as_str())?;
        writeln!(
            f,
            "  old secret until  {}",
            self.previous_secret_valid_until
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "The secret is shown this once. Hand it to the tenant over a secure channel now;\n\
             its old secret keeps working until the time above, then only this one does."
        )
    }
}

/// One tenant as listed (no secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TenantSummary {
    /// `ten_…`.
    pub tenant_id: TenantId,
    /// `platform`, `funder` or `operator`.
    pub kind: &'static str,
    /// Display name.
    pub name: String,
    /// The key id it signs with.
    pub key_id: String,
    /// `active` or `suspended`.
    pub state: &'static str,
    /// Entitled groups (funders; `null` otherwise).
    pub scopes: Option<ScopeSet>,
    /// Entitled purposes (funders; empty otherwise).
    pub purposes: Vec<Purpose>,
    /// Requests per second.
    pub rate_limit: u32,
    /// When it was added, RFC 3339 UTC.
    pub created_at: String,
    /// The client certificate it must connect with (`sha256:…` or
    /// `subject:…`), or `null`.
    pub cert_pin: Option<String>,
}

impl From<&TenantRow> for TenantSummary {
    fn from(t: &TenantRow) -> Self {
        TenantSummary {
            tenant_id: t.id.clone(),
            kind: t.kind.as_str(),
            name: t.name.clone(),
            key_id: t.key_id.clone(),
            state: t.state.as_str(),
            scopes: t.scopes,
            purposes: t.purposes.clone(),
            rate_limit: t.rate_limit,
            created_at: t.created_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            cert_pin: t.cert_pin.as_ref().map(CertPin::to_string),
        }
    }
}

/// Every tenant, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TenantList {
    /// The tenants.
    pub tenants: Vec<TenantSummary>,
}

impl fmt::Display for TenantList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.tenants.is_empty() {
            return writeln!(f, "No tenants yet: add one with `dzlctl tenant add`.");
        }
        let mut table = Table::new(&[
            "ID", "KIND", "NAME", "KEY ID", "STATE", "SCOPES", "PURPOSES", "RATE/S", "CREATED",
            "CERT PIN",
        ]);
        for t in &self.tenants {
            table.row(vec![
                t.tenant_id.to_string(),
                t.kind.to_owned(),
                t.name.clone(),
                t.key_id.clone(),
                t.state.to_owned(),
                t.scopes.map_or_else(|| "-".to_owned(), ScopeSet::to_list),
                purposes_text(&t.purposes),
                t.rate_limit.to_string(),
                t.created_at.clone(),
                t.cert_pin.clone().unwrap_or_else(|| "-".to_owned()),
            ]);
        }
        write!(f, "{table}")
    }
}

/// The result of `tenant suspend` / `tenant resume`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StateChange {
    /// The tenant.
    pub tenant_id: TenantId,
    /// Its state now: `active` or `suspended`.
    pub state: &'static str,
    /// Whether this call changed it (false when it already was so).
    pub changed: bool,
}

impl fmt::Display for StateChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.changed {
            writeln!(f, "Tenant {} is now {}.", self.tenant_id, self.state)
        } else {
            writeln!(
                f,
                "Tenant {} was already {}; nothing changed.",
                self.tenant_id, self.state
            )
        }
    }
}

/// The result of `tenant pin` / `tenant unpin`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PinChange {
    /// The tenant.
    pub tenant_id: TenantId,
    /// Its pin now (`sha256:…`, `subject:…`), or `null`.
    pub cert_pin: Option<String>,
    /// Whether this call changed it.
    pub changed: bool,
}

impl fmt::Display for PinChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.cert_pin, self.changed) {
            (Some(pin), true) => writeln!(f, "Tenant {} is now pinned to {pin}.", self.tenant_id),
            (Some(pin), false) => writeln!(
                f,
                "Tenant {} was already pinned to {pin}; nothing changed.",
                self.tenant_id
            ),
            (None, true) => writeln!(f, "Tenant {} is no longer pinned.", self.tenant_id),
            (None, false) => writeln!(
                f,
                "Tenant {} was not pinned; nothing changed.",
                self.tenant_id
            ),
        }
    }
}

fn purposes_text(purposes: &[Purpose]) -> String {
    if purposes.is_empty() {
        "-".to_owned()
    } else {
        purposes
            .iter()
            .map(|p| p.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Adds a tenant (see [`TenantCommand::Add`]).
pub fn add(vault: &Vault, args: &AddArgs) -> Result<TenantAdded, CliError> {
    let kind = TenantKind::from(args.kind);
    let cert_pin = args.pin.resolve()?;
    let creds = admin::add_tenant(
        vault.store(),
        vault.keyring(),
        vault.actor(),
        NewTenant {
            kind,
            name: args.name.clone(),
            scopes: args.scopes,
            purposes: args.purposes.clone().map(|p| p.0).unwrap_or_default(),
            rate_limit: args.rate_limit,
            cert_pin: cert_pin.clone(),
        },
    )
    .map_err(|e| from_admin(e, vault.data_dir(), ""))?;
    Ok(TenantAdded {
        tenant_id: creds.tenant_id.clone(),
        key_id: creds.key_id.clone(),
        secret: creds.secret.clone(),
        kind: kind.as_str(),
        // As `add_tenant` stores it.
        name: args.name.trim().to_owned(),
        scopes: creds.scopes,
        purposes: creds.purposes.clone(),
        rate_limit: creds.rate_limit,
        cert_pin: cert_pin.as_ref().map(CertPin::to_string),
    })
}

/// Every tenant, oldest first (see [`TenantCommand::List`]).
pub fn list(vault: &Vault) -> Result<TenantList, CliError> {
    let mut rows = vault.store().tenants()?;
    rows.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    Ok(TenantList {
        tenants: rows.iter().map(TenantSummary::from).collect(),
    })
}

/// Suspends or resumes a tenant, audited with reason
/// [`OPERATOR_REASON`]; [`CliError::TenantNotFound`] for an unknown id.
pub fn set_state(
    vault: &Vault,
    id: &TenantId,
    state: TenantState,
) -> Result<StateChange, CliError> {
    if !vault.store().tenants()?.iter().any(|t| &t.id == id) {
        return Err(CliError::TenantNotFound(id.clone()));
    }
    let changed = vault
        .store()
        .set_tenant_state(vault.actor(), id, state, OPERATOR_REASON)?;
    Ok(StateChange {
        tenant_id: id.clone(),
        state: state.as_str(),
        changed,
    })
}

/// Pins a tenant to a client certificate, or (`None`) removes its pin (see
/// [`TenantCommand::Pin`]); [`CliError::TenantNotFound`] for an unknown id.
pub fn set_pin(vault: &Vault, id: &TenantId, pin: Option<CertPin>) -> Result<PinChange, CliError> {
    if !vault.store().tenants()?.iter().any(|t| &t.id == id) {
        return Err(CliError::TenantNotFound(id.clone()));
    }
    let changed = vault
        .store()
        .set_tenant_cert_pin(vault.actor(), id, pin.clone())?;
    Ok(PinChange {
        tenant_id: id.clone(),
        cert_pin: pin.as_ref().map(CertPin::to_string),
        changed,
    })
}

/// Rotates a tenant's signing secret (see [`TenantCommand::RotateSecret`]).
pub fn rotate_secret(
    ctx: &Context,
    vault: &Vault,
    id: &TenantId,
) -> Result<SecretRotated, CliError> {
    if !vault.store().tenants()?.iter().any(|t| &t.id == id) {
        return Err(CliError::TenantNotFound(id.clone()));
    }
    let rotated = admin::rotate_tenant_secret(
        vault.store(),
        vault.keyring(),
        &ctx.call("tenant.rotate_secret"),
        id,
        ctx.settings.tenants.secret_overlap_seconds,
    )
    .map_err(|e| from_admin(e, vault.data_dir(), ""))?;
    Ok(SecretRotated {
        tenant_id: rotated.tenant_id.clone(),
        key_id: rotated.key_id.clone(),
        secret: rotated.secret.clone(),
        previous_secret_valid_until: rotated
            .previous_valid_until
            .to_rfc3339_opts(SecondsFormat::Secs, true),
    })
}

/// Runs a `tenant` verb and prints its result.
pub fn run(ctx: &Context, cmd: &TenantCommand, printer: &mut Printer<'_>) -> Result<(), CliError> {
    let vault = Vault::open(ctx)?;
    match cmd {
        TenantCommand::Add(args) => printer.print(&add(&vault, args)?),
        TenantCommand::List(_) => printer.print(&list(&vault)?),
        TenantCommand::Suspend(args) => {
            printer.print(&set_state(&vault, &args.id, TenantState::Suspended)?)
        }
        TenantCommand::Resume(args) => {
            printer.print(&set_state(&vault, &args.id, TenantState::Active)?)
        }
        TenantCommand::RotateSecret(args) => printer.print(&rotate_secret(ctx, &vault, &args.id)?),
        TenantCommand::Pin(args) => {
            let pin = args.pin.resolve()?.ok_or_else(|| {
                CliError::Usage(
                    "name the certificate: --cert-sha256, --cert-subject or --cert-file".into(),
                )
            })?;
            printer.print(&set_pin(&vault, &args.id, Some(pin))?)
        }
        TenantCommand::Unpin(args) => printer.print(&set_pin(&vault, &args.id, None)?),
    }
}
