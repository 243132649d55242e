//! The per-request work of dzl-types on the server: verifying a request's
//! signature (canonical string with the body's SHA-256, then HMAC) and
//! validating a deposit (parsing a realistic 1.5 KB body into
//! `DepositRequest`, every field checked).
//!
//! `cargo bench -p dzl-types --bench types -- --quick`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dzl_types::signing;
use dzl_types::wire::{DepositRequest, RedemptionRequest};

/// The body `dzl-load` sends: all three groups, one grant, about 1.5 KB.
const DEPOSIT: &str = concat!(
    r#"{"external_ref":"LOAD-ab12cd34-0000000042","purpose":"credit_application","#,
    r#""consent":{"consent_id":"CNS-ab12cd34-0000000042","granted_at":"2026-11-22T08:00:00Z","expires_at":"2027-11-22T08:00:00Z","#,
    r#""scopes":["applicant","device","risk"],"evidence_sha256":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"},"#,
    r#""applicant":{"name":"欧阳金丝雀","id_type":"resident_id","id_number":"11010519491231002X","phone":"13912345678","#,
    r#""id_address":"北京市朝阳区建国路八十八号院三号楼二单元一五零二室","#,
    r#""residence_address":"上海市浦东新区世纪大道一百号环球金融中心七十二层","#,
    r#""gender":"female","education":"bachelor","marital_status":"married","#,
    r#""employer":"北京金丝雀数据科技有限公司","monthly_income_fen":2350000},"#,
    r#""device":{"device_id":"dev-000000000000002a-7f3a9c2e","os":"android","ip":"203.0.113.7","os_version":"14","#,
    r#""model":"Xiaomi 14 Pro","app_version":"8.12.3","network":"wifi","#,
    r#""user_agent":"Mozilla/5.0 (Linux; Android 14; 23116PN5BC Build/UKQ1.230804.001; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/120.0.6099.193 Mobile Safari/537.36 LoanApp/8.12.3"},"#,
    r#""risk":{"score":712,"grade":"B+","tags":["thin_file","new_device","night_application"],"#,
    r#""features":{"income_ratio":0.42,"age_months":17,"multi_loan_count_90d":3,"overdue_days_max":0,"#,
    r#""device_risk":0.07,"address_stability_months":26,"query_count_30d":5,"credit_utilisation":0.61},"#,
    r#""model_version":"risk-v3.2.1"},"#,
    r#""grants":[{"funder_id":"ten_0123456789abcdef0123456789abcdef","scopes":["applicant","risk"],"ttl_seconds":3600}]}"#,
);

const SECRET: &[u8] = b"q8Xr2m0Zb1vJ5kT7nP4sW9yC3fH6dL0aE2gK8uR1tY4";
const NONCE: &str = "Zm9vYmFyYmF6cXV4MTIzNDU2";
const TS: i64 = 1_795_334_400;

fn signatures(c: &mut Criterion) {
    let body = DEPOSIT.as_bytes();
    let canonical = signing::canonical("POST", "/v1/deposits", TS, NONCE, body);
    let sig = signing::sign(SECRET, &canonical);
    assert!(signing::verify(SECRET, &canonical, &sig));

    let mut g = c.benchmark_group("signature");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("canonical_1.5KB", |b| {
        b.iter(|| signing::canonical("POST", "/v1/deposits", TS, NONCE, black_box(body)))
    });
    g.bench_function("verify_hmac", |b| {
        b.iter(|| signing::verify(SECRET, black_box(&canonical), black_box(&sig)))
    });
    // What the server does per request: canonicalise (hash the body), check the nonce, verify.
    g.bench_function("canonical_and_verify_1.5KB", |b| {
        b.iter(|| {
            let n = black_box(NONCE);
            let c = signing::canonical("POST", "/v1/deposits", TS, n, black_box(body));
            signing::valid_nonce(n) && signing::verify(SECRET, &c, black_box(&sig))
        })
    });
    g.bench_function("sign_1.5KB", |b| {
        b.iter(|| {
            let c = signing::canonical("POST", "/v1/deposits", TS, NONCE, black_box(body));
            signing::sign(SECRET, &c)
        })
    });
    g.finish();
}

fn validation(c: &mut Criterion) {
    let body = DEPOSIT.as_bytes();
    assert!((1400..=1700).contains(&body.len()), "{}", body.len());
    let d: DepositRequest = serde_json::from_slice(body).unwrap();
    assert_eq!(d.grants.len(), 1);

    let mut g = c.benchmark_group("validate");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("deposit_1.5KB", |b| {
        b.iter(|| serde_json::from_slice::<DepositRequest>(black_box(body)).unwrap())
    });
    // Parsing alone, without the typed checks: the floor for any JSON body.
    g.bench_function("deposit_1.5KB_as_value", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(body)).unwrap())
    });
    g.finish();

    let redemption =
        br#"{"code":"ac_AAAAAAAAAAEAAQIDBAUGBwgJCgsMDQ4P","purpose":"credit_application"}"#;
    c.bench_function("validate/redemption", |b| {
        b.iter(|| serde_json::from_slice::<RedemptionRequest>(black_box(redemption)).unwrap())
    });
}

criterion_group!(benches, signatures, validation);
criterion_main!(benches);
