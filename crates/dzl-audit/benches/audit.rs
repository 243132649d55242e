//! Hashing audit entries: every deposit appends two (deposit, code issue),
//! every redemption one, each hashed over the previous entry's hash.
//!
//! `cargo bench -p dzl-audit --bench audit -- --quick`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use dzl_audit::{chain, entry_hash, verify_chain, AuditRecord, Head, GENESIS};

fn redemption_record() -> AuditRecord {
    AuditRecord {
        at: "2026-11-22T08:00:01.123Z".into(),
        actor: "ten_0123456789abcdef0123456789abcdef".into(),
        operation: "redemption.create".into(),
        result: "ok".into(),
        purpose: Some("credit_application".into()),
        deposit_id: Some("dep_3f0c9a1be2d84c6f8a7b5e4d3c2b1a09".into()),
        code_id: Some("cod_0123456789abcdef0123456789abcdef".into()),
        redemption_id: Some("red_0123456789abcdef0123456789abcdef".into()),
        subject_tenant: Some("ten_fedcba9876543210fedcba9876543210".into()),
        groups: Some("applicant,risk".into()),
        detail: None,
    }
}

fn audit(c: &mut Criterion) {
    let rec = redemption_record();
    let prev = "5d41402abc4b2a76b9719d911017c592aaaabbbbccccddddeeeeffff00001111";
    c.bench_function("audit/entry_hash", |b| {
        b.iter(|| entry_hash(black_box(42), black_box(&rec), black_box(prev)))
    });
    c.bench_function("audit/chain", |b| {
        b.iter(|| chain(1, black_box(41), black_box(prev), rec.clone()))
    });

    // Verifying a 1,000-entry chain (what `dzlctl audit verify` does per entry).
    let mut entries = Vec::with_capacity(1000);
    let (mut seq, mut hash) = (0i64, GENESIS.to_owned());
    for _ in 0..1000 {
        let e = chain(1, seq, &hash, rec.clone());
        seq = e.seq;
        hash = e.hash.clone();
        entries.push(e);
    }
    let head = Head { seq, hash };
    c.bench_function("audit/verify_chain_1000", |b| {
        b.iter(|| {
            verify_chain(
                1,
                entries.iter().cloned().map(Ok::<_, String>),
                black_box(&head),
                |_| {},
            )
            .unwrap()
        })
    });
}

criterion_group!(benches, audit);
criterion_main!(benches);
