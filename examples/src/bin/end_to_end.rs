//! The whole flow with nothing running beforehand: starts an in-process
//! vault on a temporary directory (`dzl_examples::Sandbox`), then a platform
//! deposits, a funder redeems, verifies the receipt and reports an outcome,
//! and the platform reads the code's status. Exits 0 when all of it worked.
//!
//! ```text
//! cargo run -p dzl-examples --bin end_to_end
//! cargo run -p dzl-examples --bin end_to_end -- --suite gm
//! ```
//!
//! With `--suite gm` the vault is a `gm` (国密) one: SM4-GCM storage,
//! HMAC-SM3 request signatures, SM2 receipts; the SDK learns it by itself.

use anyhow::Context as _;
use dzl_examples::{run_flow, Sandbox};
use dzl_sdk::Suite;

/// `--suite intl|gm`, `intl` when absent.
fn suite() -> anyhow::Result<Suite> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => Ok(Suite::Intl),
        [flag, name] if flag == "--suite" => name
            .parse()
            .ok()
            .with_context(|| format!("--suite {name}: expected intl or gm")),
        _ => anyhow::bail!("usage: end_to_end [--suite intl|gm]"),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let sandbox = Sandbox::start_as(suite()?)?;
    println!("vault: serving {} over a temporary store", sandbox.url());
    let report = run_flow(
        sandbox.url(),
        sandbox.platform.signer(),
        &sandbox.funder.tenant_id,
        sandbox.funder.signer(),
    )
    .await?;
    println!(
        "end to end: deposit {} redeemed, receipt verified, outcome {:?} seen by the platform",
        report.deposit_id, report.outcome.decision
    );
    Ok(())
}
