//! `dzl-vault demo`: a fresh vault in a new directory under the system temp
//! dir, with a root key, a demo platform, funder and operator, served on
//! loopback — one command, no configuration.

use std::path::PathBuf;

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
         \x20 # a signed deposit and redemption, through the SDK:\n\
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
