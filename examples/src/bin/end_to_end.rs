//! The whole flow with nothing running beforehand: starts an in-process
//! vault on a temporary directory (`dzl_examples::Sandbox`), then a platform
//! deposits, a funder redeems, verifies the receipt and reports an outcome,
//! and the platform reads the code's status. Exits 0 when all of it worked.
//!
//! ```text
//! cargo run -p dzl-examples --bin end_to_end
//! ```

use dzl_examples::{run_flow, Sandbox};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let sandbox = Sandbox::start()?;
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
