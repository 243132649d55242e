//! The vault's per-request cryptography in both suites: sealing and opening
//! a record group of about 600 bytes (AES-256-GCM / SM4-GCM), wrapping and
//! unwrapping a data key under the active KEK, the subject blind index,
//! verifying a request signature (HMAC-SHA256 / HMAC-SM3), and signing and
//! verifying a receipt (Ed25519 / SM2).
//!
//! `cargo bench -p dzl-crypto --bench crypto -- --quick`
//! (one suite's lines: `-- --quick gm/` or `-- --quick intl/`)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dzl_crypto::{
    blind_index_for, hmac, hmac_verify, open_record, seal_record, verify_receipt_signature_with,
    DataKey, Kek, Keyring, ReceiptAlgorithm, ReceiptSigner, Suite, SystemRandom,
};

const DEPOSIT_ID: &str = "dep_3f0c9a1be2d84c6f8a7b5e4d3c2b1a09";

/// An applicant group as the server seals it: 577 bytes of JSON.
fn applicant_json() -> Vec<u8> {
    let s = concat!(
        r#"{"name":"欧阳金丝雀","id_type":"resident_id","id_number":"11010519491231002X","phone":"13912345678","#,
        r#""id_address":"广东省深圳市南山区粤海街道科技园社区科苑路十五号科兴科学园B栋四单元十二楼一二零八室","#,
        r#""residence_address":"上海市浦东新区陆家嘴街道世纪大道一百号上海环球金融中心写字楼七十二层东侧七二零八室","#,
        r#""gender":"female","education":"bachelor","marital_status":"married","#,
        r#""employer":"北京金丝雀数据科技有限公司上海浦东分公司风险管理部","monthly_income_fen":2350000}"#
    );
    s.as_bytes().to_vec()
}

/// A receipt body as the server signs it.
const RECEIPT: &str = concat!(
    r#"{"at":"2026-11-22T08:00:01.123Z","code_id":"cod_0123456789abcdef0123456789abcdef","#,
    r#""deposit_id":"dep_3f0c9a1be2d84c6f8a7b5e4d3c2b1a09","funder_id":"ten_0123456789abcdef0123456789abcdef","#,
    r#""groups_sha256":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","#,
    r#""redemption_id":"red_0123456789abcdef0123456789abcdef","scopes":["applicant","risk"]}"#
);

/// A request's canonical string (a redemption: short path, hashed body).
const CANONICAL: &str = "POST\n/v1/redemptions\n1795334400\nAbCdEfGhIjKlMnOpQrStUvWx\n\
    9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

fn records(c: &mut Criterion) {
    let rng = SystemRandom::new();
    let plain = applicant_json();
    assert!((550..=700).contains(&plain.len()), "{}", plain.len());
    for suite in Suite::ALL {
        let dk = DataKey::generate_for(suite, &rng).unwrap();
        let sealed = seal_record(&dk, DEPOSIT_ID, "applicant", &plain, &rng).unwrap();
        let mut g = c.benchmark_group(format!("{suite}/record"));
        g.throughput(Throughput::Bytes(plain.len() as u64));
        g.bench_function("seal_600B", |b| {
            b.iter(|| {
                seal_record(
                    &dk,
                    black_box(DEPOSIT_ID),
                    "applicant",
                    black_box(&plain),
                    &rng,
                )
            })
        });
        g.bench_function("open_600B", |b| {
            b.iter(|| open_record(&dk, black_box(DEPOSIT_ID), "applicant", black_box(&sealed)))
        });
        g.finish();
    }
}

fn data_keys(c: &mut Criterion) {
    let rng = SystemRandom::new();
    for suite in Suite::ALL {
        let keyring = Keyring::new(vec![Kek::generate_for(1, suite, &rng).unwrap()], 1).unwrap();
        let dk = keyring.generate_data_key(&rng).unwrap();
        let wrapped = keyring.wrap_data_key(&dk, DEPOSIT_ID, "records").unwrap();

        let mut g = c.benchmark_group(format!("{suite}/data_key"));
        g.bench_function("generate", |b| b.iter(|| keyring.generate_data_key(&rng)));
        g.bench_function("wrap", |b| {
            b.iter(|| keyring.wrap_data_key(black_box(&dk), DEPOSIT_ID, "records"))
        });
        g.bench_function("unwrap", |b| {
            b.iter(|| keyring.unwrap_data_key(black_box(&wrapped), DEPOSIT_ID, "records"))
        });
        // What `dzlctl keys rewrap` does per key (the issue's 100k keys/s target
        // is for the whole command, store included).
        g.bench_function("rewrap", |b| {
            b.iter(|| keyring.rewrap_data_key(black_box(&wrapped), DEPOSIT_ID, "records"))
        });
        g.finish();
    }
}

fn macs(c: &mut Criterion) {
    let index_key = [0x42u8; 32];
    let secret = b"s3cr3t-0123456789abcdef0123456789abcdef";
    for suite in Suite::ALL {
        let mut g = c.benchmark_group(format!("{suite}/mac"));
        g.bench_function("blind_index_subject", |b| {
            b.iter(|| {
                blind_index_for(
                    suite,
                    &index_key,
                    "subject",
                    black_box(b"resident_id:11010519491231002X"),
                )
            })
        });
        // What the server does per request: verify the signature's HMAC.
        let tag = hmac(suite, secret, &[CANONICAL.as_bytes()]);
        g.bench_function("request_signature_verify", |b| {
            b.iter(|| hmac_verify(suite, secret, &[black_box(CANONICAL.as_bytes())], &tag))
        });
        g.finish();
    }
}

fn receipts(c: &mut Criterion) {
    let rng = SystemRandom::new();
    for suite in Suite::ALL {
        let pkcs8 = ReceiptSigner::generate_pkcs8_for(suite, &rng).unwrap();
        let signer = ReceiptSigner::from_pkcs8_derived_id(&pkcs8).unwrap();
        let alg = ReceiptAlgorithm::for_suite(suite);
        let public = signer.public_key_b64url();
        let sig = signer.sign_b64url(RECEIPT.as_bytes());
        let mut g = c.benchmark_group(format!("{suite}/receipt"));
        g.bench_function(format!("sign_{alg}"), |b| {
            b.iter(|| signer.sign_b64url(black_box(RECEIPT.as_bytes())))
        });
        // What a funder's SDK does per receipt, key decoding included.
        g.bench_function(format!("verify_{alg}"), |b| {
            b.iter(|| {
                verify_receipt_signature_with(alg, &public, black_box(RECEIPT.as_bytes()), &sig)
            })
        });
        if suite == Suite::Intl {
            // The same signature as ring makes it, which the signer used before:
            // the two lines together are the saving per redemption.
            let ring_pair = ring::signature::Ed25519KeyPair::from_pkcs8(&pkcs8).unwrap();
            g.bench_function("sign_Ed25519_ring", |b| {
                b.iter(|| ring_pair.sign(black_box(RECEIPT.as_bytes())))
            });
        }
        g.finish();
    }
}

criterion_group!(benches, records, data_keys, macs, receipts);
criterion_main!(benches);
