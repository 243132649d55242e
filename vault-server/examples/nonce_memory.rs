//! Memory and time the nonce cache takes per nonce held: inserts N fresh
//! nonces (default 1,000,000; the first argument) of the SDK's length under
//! one key id, and prints the growth of the process's resident set and the
//! mean time per insert. Linux only (`/proc/self/status`). This example
//! uses the system allocator, not the server's mimalloc.
//!
//! Run: `cargo run --release -p dzl-vault-server --example nonce_memory -- 3000000`

#![allow(clippy::expect_used, clippy::unwrap_used)]

use dzl_vault_server::limits::NonceCache;

fn resident_kib() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let cache = NonceCache::new(300);
    // 24 characters, as `dzl_sdk::fresh_nonce` makes them; made up front so
    // that only the cache's own memory is counted.
    let nonces: Vec<String> = (0..n as u64)
        .map(|i| format!("{:024x}", u128::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15)))
        .map(|s| s[s.len() - 24..].to_owned())
        .collect();
    let before = resident_kib();
    let started = std::time::Instant::now();
    for nonce in &nonces {
        assert!(cache.insert("k_0123456789abcdef01234567", nonce, 1_000));
    }
    let elapsed = started.elapsed();
    let grown = resident_kib().saturating_sub(before);
    println!(
        "{n} nonces: resident set +{grown} KiB, {:.1} bytes per nonce; {:.0} ns per insert",
        grown as f64 * 1024.0 / n as f64,
        elapsed.as_nanos() as f64 / n as f64
    );
}
