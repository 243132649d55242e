//! Against an already running vault — `dzl-vault demo` prints the variables
//! this reads — a platform deposits, a funder redeems, verifies the receipt
//! and reports an outcome, and the platform reads the code's status.
//!
//! ```text
//! DZL_URL=http://127.0.0.1:PORT \
//! DZL_PLATFORM_KEY_ID=… DZL_PLATFORM_SECRET=… \
//! DZL_FUNDER_ID=ten_… DZL_FUNDER_KEY_ID=… DZL_FUNDER_SECRET=… \
//!   cargo run -p dzl-examples --bin platform_and_funder
//! ```
//!
//! The flow itself is `dzl_examples::run_flow` (examples/src/lib.rs).

use anyhow::Context as _;
use dzl_sdk::Signer;

fn var(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| {
        format!("{name} is not set: run `dzl-vault demo` and copy the variables it prints")
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = var("DZL_URL")?;
    let platform = Signer::new(var("DZL_PLATFORM_KEY_ID")?, var("DZL_PLATFORM_SECRET")?);
    let funder_id = var("DZL_FUNDER_ID")?;
    let funder = Signer::new(var("DZL_FUNDER_KEY_ID")?, var("DZL_FUNDER_SECRET")?);
    dzl_examples::run_flow(&url, platform, &funder_id, funder).await?;
    println!("ok");
    Ok(())
}
