//! `dzl-vault demo`: a fresh vault in a new directory under the system temp
//! dir, with a root key, a demo platform, funder and operator, served on
//! loopback — one command, no configuration.

use std::path::{Path, PathBuf};

use dzl_store::admin::{self, NewTenant, TenantCredentials};
use dzl_store::{SqliteStore, TenantKind};

/// The credentials `demo` prints.
pub struct Demo {
    /// The data directory.
    pub data_dir: PathBuf,
    /// The root key file.
    pub root_key_file: PathBuf,
    /// The demo platform.
    pub platform: TenantCredentials,
    /// The demo funder.
    pub funder: TenantCredentials,
    /// The demo operator.
    pub operator: TenantCredentials,
}

/// Creates the demo vault.
pub fn prepare() -> anyhow::Result<Demo> {
    let rng = dzl_crypto::SystemRandom::new();
    let suffix =
        hex::encode(dzl_crypto::random_bytes::<4>(&rng).map_err(|e| anyhow::anyhow!("{e}"))?);
    let data_dir = std::env::temp_dir().join(format!("dzl-vault-demo-{suffix}"));
    std::fs::create_dir_all(&data_dir)?;
    let root_key_file = data_dir.join("root.key");
    let root = admin::write_new_root_key(&root_key_file)?;
    let store = SqliteStore::open(&data_dir).map_err(|e| anyhow::anyhow!("{e}"))?;
    admin::init(&store, &root, "demo")?;
    let keys = admin::load_keys(&store, &root)?;
    let add = |kind, name: &str| {
        admin::add_tenant(&store, &keys.keyring, "demo", NewTenant::new(kind, name))
    };
    let platform = add(TenantKind::Platform, "Demo Platform")?;
    let funder = add(TenantKind::Funder, "Demo Bank")?;
    let operator = add(TenantKind::Operator, "Demo Operator")?;
    store.close();
    Ok(Demo {
        data_dir,
        root_key_file,
        platform,
        funder,
        operator,
    })
}

/// Removes the demo's directory (data and root key): the demo could not be
/// served, and a directory nobody was told about must not stay behind.
pub fn discard(d: &Demo) {
    if let Err(e) = std::fs::remove_dir_all(&d.data_dir) {
        log::warn!("could not remove {}: {e}", d.data_dir.display());
    }
}

/// The demo's address, directory, root key file and credentials as shell
/// `export` lines (`. FILE` sets them; `scripts/dzl-call` and `dzlctl`
/// read them).
pub fn env_file_text(d: &Demo, base_url: &str) -> String {
    let quote = |v: &str| format!("'{}'", v.replace('\'', r"'\''"));
    let mut out =
        String::from("# dzl-vault demo: its address and credentials (secrets: keep private)\n");
    let mut line = |name: &str, value: &str| {
        out.push_str(&format!("export {name}={}\n", quote(value)));
    };
    line("DZL_URL", base_url);
    line("DZL_DATA_DIR", &d.data_dir.display().to_string());
    line("DZL_ROOT_KEY_FILE", &d.root_key_file.display().to_string());
    for (role, c) in [
        ("PLATFORM", &d.platform),
        ("FUNDER", &d.funder),
        ("OPERATOR", &d.operator),
    ] {
        line(&format!("DZL_{role}_ID"), c.tenant_id.as_str());
        line(&format!("DZL_{role}_KEY_ID"), &c.key_id);
        line(&format!("DZL_{role}_SECRET"), c.secret.as_str());
    }
    out
}

/// Writes [`env_file_text`] to `path`, readable by its owner only, whole or
/// not at all (a script waiting for the file never reads half of it).
pub fn write_env_file(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let name = path
        .file_name()
        .ok_or_else(|| anyhow::anyhow!("--env-file {} names no file", path.display()))?;
    let partial = path.with_file_name(format!(".{}.partial", name.to_string_lossy()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(&partial)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", partial.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&partial, path)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    Ok(())
}

/// What to print for the person who ran `demo`.
pub fn instructions(d: &Demo, base_url: &str) -> String {
    let t = |name: &str, c: &TenantCredentials| {
        format!(
            "  {name:<9} tenant_id={}  key_id={}  secret={}\n",
            c.tenant_id,
            c.key_id,
            c.secret.as_str()
        )
    };
    format!(
        "dzl-vault demo — a throw-away vault (data in {data}, root key in {key})\n\n\
         Serving on {base_url}\n\n\
         Demo tenants (secrets are shown only here):\n{p}{f}{o}\n\
         Try it:\n\
         \x20 curl {base_url}/readyz\n\
         \x20 curl {base_url}/v1/receipt-keys\n\
         \x20 # a signed deposit and redemption: the README's walkthrough (scripts/dzl-call),\n\
         \x20 # or, from the repository, through the SDK:\n\
         \x20 DZL_URL={base_url} DZL_PLATFORM_KEY_ID={pk} DZL_PLATFORM_SECRET={ps} \\\n\
         \x20 DZL_FUNDER_ID={fid} DZL_FUNDER_KEY_ID={fk} DZL_FUNDER_SECRET={fs} \\\n\
         \x20   cargo run -p dzl-examples --bin platform_and_funder\n\n\
         Stop with Ctrl-C; delete {data} when done.\n",
        data = d.data_dir.display(),
        key = d.root_key_file.display(),
        p = t("platform", &d.platform),
        f = t("funder", &d.funder),
        o = t("operator", &d.operator),
        pk = d.platform.key_id,
        ps = d.platform.secret.as_str(),
        fid = d.funder.tenant_id,
        fk = d.funder.key_id,
        fs = d.funder.secret.as_str(),
    )
}
