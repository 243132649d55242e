//! The fuzz checks on stable Rust, without libFuzzer: every committed seed
//! (and any crash artifact under `artifacts/<target>/`) replays through its
//! target, then a bounded stream of deterministic pseudo-random mutations of
//! the seeds does. `cargo fuzz` finds new inputs; this keeps the old ones
//! passing in every `cargo test` of this crate.
//!
//! `DZL_FUZZ_ITERATIONS` sets the mutation count per target (default 2,000).
//! `cargo test -- --ignored write_seeds` regenerates the seed corpora.

use std::path::{Path, PathBuf};

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 4] = [
    ("signing", dzl_vault_fuzz::signing),
    ("deposit_json", dzl_vault_fuzz::deposit_json),
    ("envelope", dzl_vault_fuzz::envelope),
    ("code", dzl_vault_fuzz::code),
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    out.retain(|p| p.is_file());
    out.sort();
    out
}

#[test]
fn every_seed_and_artifact_replays() {
    for (name, target) in TARGETS {
        let seeds = files(&root().join("corpus").join(name));
        assert!(seeds.len() >= 3, "{name}: too few seeds");
        for p in seeds
            .iter()
            .chain(files(&root().join("artifacts").join(name)).iter())
        {
            let data = std::fs::read(p).expect("read");
            target(&data);
        }
    }
}

/// xorshift64*: deterministic, so a failure names its iteration.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, seed: &[u8], dict: &[&[u8]]) -> Vec<u8> {
    let mut d = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(6) {
            0 if !d.is_empty() => {
                let i = rng.below(d.len());
                d[i] ^= 1 << rng.below(8);
            }
            1 if !d.is_empty() => {
                let i = rng.below(d.len());
                d[i] = rng.next() as u8;
            }
            2 if !d.is_empty() => {
                let i = rng.below(d.len());
                let n = rng.below(8).min(d.len() - i);
                d.drain(i..i + n);
            }
            3 => {
                let i = rng.below(d.len() + 1);
                let b = rng.next() as u8;
                d.insert(i, b);
            }
            4 if !dict.is_empty() => {
                let i = rng.below(d.len() + 1);
                let w = dict[rng.below(dict.len())];
                d.splice(i..i, w.iter().copied());
            }
            _ => {
                let i = rng.below(d.len() + 1);
                d.truncate(i);
            }
        }
    }
    d
}

fn dictionary(name: &str) -> Vec<Vec<u8>> {
    let Ok(text) = std::fs::read_to_string(root().join("dicts").join(format!("{name}.dict")))
    else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let v = l.strip_prefix('"')?.strip_suffix('"')?;
            Some(v.replace("\\\"", "\"").replace("\\\\", "\\").into_bytes())
        })
        .collect()
}

#[test]
fn seeded_mutations_hold_the_properties() {
    let n: usize = std::env::var("DZL_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    for (name, target) in TARGETS {
        let seeds: Vec<Vec<u8>> = files(&root().join("corpus").join(name))
            .iter()
            .map(|p| std::fs::read(p).expect("read"))
            .collect();
        let dict = dictionary(name);
        let dict: Vec<&[u8]> = dict.iter().map(Vec::as_slice).collect();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ name.len() as u64);
        for i in 0..n {
            let seed = &seeds[i % seeds.len()];
            let data = mutate(&mut rng, seed, &dict);
            let r = std::panic::catch_unwind(|| target(&data));
            assert!(
                r.is_ok(),
                "{name}: iteration {i} failed on input {}",
                hex::encode(&data)
            );
        }
    }
}

/// The contract's signing vectors (`crates/dzl-types/tests/vectors/`).
fn signing_vectors() -> Vec<serde_json::Value> {
    let path = root().join("../crates/dzl-types/tests/vectors/signing-vectors.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} must be readable: {e}", path.display()));
    let doc: serde_json::Value = serde_json::from_str(&text).expect("signing vectors are JSON");
    doc["vectors"].as_array().expect("a vectors array").clone()
}

/// The `signing` seeds: each contract vector as the target reads it, the
/// last with a signature that is not base64, then two refusals.
fn signing_seeds() -> Vec<String> {
    let vectors = signing_vectors();
    let last = vectors.len().saturating_sub(1);
    let mut seeds: Vec<String> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let s = |k: &str| v[k].as_str().expect("a string field").to_owned();
            let signature = if i == last {
                "not base64!".to_owned()
            } else {
                s("signature")
            };
            format!(
                "{}\n{}\n{}\n{}\n{}\n{}\n{}",
                s("method"),
                s("path_and_query"),
                v["timestamp"].as_i64().expect("a timestamp"),
                s("nonce"),
                s("secret"),
                signature,
                s("body_utf8")
            )
        })
        .collect();
    seeds.push(
        "DELETE\n/v1/deposits/dep_00\n-1\nshort\n\ncFoBTgWOMTt/M+2bcOjDwW4bPTY5tVsNNMqNovEsZrc\n"
            .to_owned(),
    );
    seeds.push(format!(
        "POST\n/v1/subject-access\n9223372036854775807\n{}\nk\nAAAA\n{{}}",
        "n0nce-".repeat(10) + "n0nce"
    ));
    seeds
}

#[test]
fn the_signing_seeds_are_the_contract_vectors() {
    for (i, seed) in signing_seeds().iter().enumerate() {
        let path = root().join("corpus/signing").join(format!("seed-{i}"));
        let committed = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{} must be readable: {e}", path.display()));
        assert_eq!(
            String::from_utf8_lossy(&committed),
            *seed,
            "{} differs from the vectors: run `cargo test -- --ignored write_seeds`",
            path.display()
        );
    }
}

/// Regenerates `corpus/*/seed-*` (deterministic; run when a format changes).
#[test]
#[ignore]
fn write_seeds() {
    use dzl_vault_fuzz::{record_aad, DEPOSIT, GROUP, LABEL, TENANT};
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = root().join("corpus").join(target);
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("write");
    };

    // signing: METHOD \n PATH \n TS \n NONCE \n SECRET \n SIGNATURE \n BODY.
    for (i, seed) in signing_seeds().iter().enumerate() {
        write("signing", &i.to_string(), seed.as_bytes());
    }

    // deposit_json: the deposit example of docs/api.md and its neighbours.
    let funder = "ten_00112233445566778899aabbccddeeff";
    let design = serde_json::json!({
        "external_ref": "APP-20261122-0001",
        "purpose": "credit_application",
        "consent": {
            "consent_id": "CNS-77",
            "granted_at": "2026-11-22T08:00:00Z",
            "expires_at": "2027-11-22T08:00:00Z",
            "scopes": ["applicant", "device", "risk"],
            "evidence_sha256": "a".repeat(64)
        },
        "applicant": {"name": "张三", "id_type": "resident_id", "id_number": "11010519491231002X",
                      "phone": "13800138000", "residence_address": "北京市朝阳区"},
        "device": {"device_id": "d-1", "os": "android", "ip": "203.0.113.7"},
        "risk": {"score": 712, "grade": "B+", "tags": ["thin_file"],
                 "features": {"income_ratio": 0.42, "age_months": 17}},
        "grants": [{"funder_id": funder, "scopes": ["applicant", "risk"], "ttl_seconds": 3600}]
    });
    write("deposit_json", "design", design.to_string().as_bytes());
    let mut minimal = design.clone();
    minimal.as_object_mut().expect("object").remove("device");
    minimal.as_object_mut().expect("object").remove("grants");
    minimal["risk"] = serde_json::json!({"score": 1});
    minimal["applicant"] = serde_json::json!({"name": "李四", "id_type": "passport",
        "id_number": "E12345678", "phone": "13912345678"});
    write("deposit_json", "minimal", minimal.to_string().as_bytes());
    let mut unknown = design.clone();
    unknown["applicant"]["nickname"] = serde_json::json!("x");
    write(
        "deposit_json",
        "unknown-field",
        unknown.to_string().as_bytes(),
    );
    let mut bad_id = design.clone();
    bad_id["applicant"]["id_number"] = serde_json::json!("110105194912310021");
    bad_id["device"]["ip"] = serde_json::json!("2001:db8::1");
    write(
        "deposit_json",
        "bad-check-digit",
        bad_id.to_string().as_bytes(),
    );
    let mut nulls = design.clone();
    nulls["device"] = serde_json::Value::Null;
    nulls["grants"][0]["ttl_seconds"] = serde_json::Value::Null;
    write("deposit_json", "nulls", nulls.to_string().as_bytes());
    write(
        "deposit_json",
        "issue-code",
        format!("{{\"funder_id\":\"{funder}\",\"scopes\":[\"risk\"],\"ttl_seconds\":60}}")
            .as_bytes(),
    );
    write(
        "deposit_json",
        "outcome",
        br#"{"decision":"approved","amount_fen":500000}"#,
    );
    write("deposit_json", "nested", "[".repeat(200).as_bytes());

    // envelope: mode byte, then the mode's fields (see dzl_vault_fuzz::envelope).
    let key = dzl_crypto::SecretKey::from_bytes(&[0x42; 32]).expect("key");
    let env = dzl_crypto::seal_with_nonce(&key, b"aad", [7; 12], b"hello").expect("seal");
    let mut m0 = vec![0u8, 3];
    m0.extend_from_slice(b"aad");
    m0.extend_from_slice(&env);
    write("envelope", "0-valid", &m0);
    write(
        "envelope",
        "0-garbage",
        &[0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 9],
    );
    write("envelope", "0-unknown-alg", &[0, 0, 2, 1, 1, 2, 3]);
    write("envelope", "1-unchanged", &[1]);
    write(
        "envelope",
        "1-flip",
        &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80],
    );
    write("envelope", "1-truncate", &[1, 0x41]);
    let text = |s: &str| {
        let mut v = vec![s.len() as u8];
        v.extend_from_slice(s.as_bytes());
        v
    };
    let mut m2 = vec![2u8];
    m2.extend(text(DEPOSIT));
    m2.extend(text(GROUP));
    write("envelope", "2-right-ids", &m2);
    let mut m2b = vec![2u8];
    m2b.extend(text(DEPOSIT));
    m2b.extend(text("device"));
    write("envelope", "2-other-group", &m2b);
    let mut m3 = vec![3u8, 0, 0, 0, 1];
    m3.extend(text(DEPOSIT));
    m3.extend(text("records"));
    write("envelope", "3-data-key", &m3);
    write("envelope", "4-kek", &[4, 0, 0, 0, 1]);
    write("envelope", "4-kek-v2", &[4, 0, 0, 0, 2]);
    let mut m5 = vec![5u8, 0, 0, 0, 1];
    m5.extend(text(LABEL));
    m5.extend(text(TENANT));
    write("envelope", "5-secret", &m5);
    let _ = record_aad(DEPOSIT, GROUP);

    // code: 0 + text, or 1 + 24 bytes of row key and secret.
    write("code", "valid", b"\0ac_AAAAAAAAACoAAQIDBAUGBwgJCgsMDQ4P");
    write("code", "id", b"\0cod_00112233445566778899aabbccddeeff");
    write(
        "code",
        "bad-padding",
        b"\0ac_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    );
    write(
        "code",
        "too-long",
        b"\0ac_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    );
    write(
        "code",
        "built",
        &[
            1, 0, 0, 0, 0, 0, 0, 0, 42, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
        ],
    );
    write(
        "code",
        "built-negative-row",
        &[1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    );
}
