//! Holds the JSON Schemas (`schemas/{group}.schema.json`) and the Rust record
//! types (`dzl_types::records`) to the verdicts of the shared corpus
//! (`schemas/corpus/{group}.json`): every record under `valid` must be
//! accepted, and every record under `invalid` refused, by both.
//!
//! Every disagreement is collected and reported at once, naming the group,
//! the record's `why` and which side (schema or Rust) got it wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use dzl_types::domain::{check_resident_id, today_in_china};
use dzl_types::records::{Applicant, Device, Risk};
use serde_json::{json, Value};

const GROUPS: [&str; 3] = ["applicant", "device", "risk"];

fn load(rel: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../schemas")
        .join(rel);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} must be readable: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} must be JSON: {e}", path.display()))
}

/// The group schema, compiled as the contract says: draft 2020-12, formats
/// asserted, `gb11643` registered, unknown formats an error.
fn compile(group: &str) -> jsonschema::Validator {
    let schema = load(&format!("{group}.schema.json"));
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .should_ignore_unknown_formats(false)
        .with_format("gb11643", |s: &str| {
            check_resident_id(s, today_in_china()).is_ok()
        })
        .build(&schema)
        .unwrap_or_else(|e| panic!("{group}.schema.json must compile: {e}"))
}

/// The Rust verdict: `Ok` if the record deserialises into its group's type,
/// else the error text.
fn rust_verdict(group: &str, record: &Value) -> Result<(), String> {
    let r = match group {
        "applicant" => serde_json::from_value::<Applicant>(record.clone()).map(drop),
        "device" => serde_json::from_value::<Device>(record.clone()).map(drop),
        "risk" => serde_json::from_value::<Risk>(record.clone()).map(drop),
        other => panic!("unknown group {other}"),
    };
    r.map_err(|e| e.to_string())
}

/// The schema verdict: `Ok` if valid, else the errors (instance paths and
/// keywords only; never the value).
fn schema_verdict(validator: &jsonschema::Validator, record: &Value) -> Result<(), String> {
    let errors: Vec<String> = validator
        .iter_errors(record)
        .map(|e| format!("{} at '{}'", e.kind().keyword(), e.instance_path()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// Judges `record` both ways and notes each side that differs from the
/// expected verdict.
fn check(
    label: &str,
    group: &str,
    validator: &jsonschema::Validator,
    record: &Value,
    expect_valid: bool,
    disagreements: &mut Vec<String>,
) {
    let expected = if expect_valid { "valid" } else { "invalid" };
    for (side, verdict) in [
        ("schema", schema_verdict(validator, record)),
        ("rust", rust_verdict(group, record)),
    ] {
        if verdict.is_ok() != expect_valid {
            let said = match verdict {
                Ok(()) => "accepted it".to_owned(),
                Err(e) => format!("refused it: {e}"),
            };
            disagreements.push(format!("{label}: {side} {said} (expected {expected})"));
        }
    }
}

fn fail_on(disagreements: &[String], what: &str) {
    assert!(
        disagreements.is_empty(),
        "{} disagreement(s) with {what}:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
}

#[test]
fn schemas_and_rust_types_agree_with_the_corpus() {
    let mut checked = 0usize;
    let mut disagreements: Vec<String> = Vec::new();

    for group in GROUPS {
        let validator = compile(group);
        let corpus = load(&format!("corpus/{group}.json"));
        let obj = corpus
            .as_object()
            .unwrap_or_else(|| panic!("corpus/{group}.json must be an object"));
        assert!(
            obj.keys().all(|k| k == "valid" || k == "invalid"),
            "corpus/{group}.json has only `valid` and `invalid`"
        );

        for (section, expect_valid) in [("valid", true), ("invalid", false)] {
            let cases = obj
                .get(section)
                .and_then(Value::as_array)
                .unwrap_or_else(|| panic!("corpus/{group}.json must have a `{section}` array"));
            assert!(
                !cases.is_empty(),
                "corpus/{group}.json `{section}` is empty"
            );

            for (i, case) in cases.iter().enumerate() {
                let why = case["why"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{group} {section}[{i}] has no `why`"));
                let record = case
                    .get("record")
                    .unwrap_or_else(|| panic!("{group} {section}[{i}] has no `record`"));
                checked += 1;
                let label = format!("{group} {section}[{i}] \"{why}\"");
                check(
                    &label,
                    group,
                    &validator,
                    record,
                    expect_valid,
                    &mut disagreements,
                );
            }
        }
    }

    println!("checked {checked} corpus records");
    assert!(checked > 0, "the corpus is empty");
    fail_on(&disagreements, "the corpus");
}

/// Invalid records the corpus does not (yet) hold, which serde's derives
/// used to accept while the schemas refuse them: a struct given as a JSON
/// array of its field values in declaration order, and a unit enum given as
/// `{"name": null}`.
#[test]
fn schemas_and_rust_types_agree_beyond_the_corpus() {
    let applicant = |field: &str, value: Value| {
        let mut r = json!({
            "name": "张三",
            "id_type": "resident_id",
            "id_number": "11010519491231002X",
            "phone": "13800138000"
        });
        r[field] = value;
        r
    };
    let device = |field: &str, value: Value| {
        let mut r = json!({"device_id": "d-1", "os": "android", "ip": "203.0.113.7"});
        r[field] = value;
        r
    };
    let cases: Vec<(&str, &str, Value)> = vec![
        (
            "applicant",
            "record as an array of the required field values",
            json!(["张三", "resident_id", "11010519491231002X", "13800138000"]),
        ),
        (
            "applicant",
            "id_type as an object naming the variant",
            applicant("id_type", json!({"resident_id": null})),
        ),
        (
            "applicant",
            "gender as an object naming the variant",
            applicant("gender", json!({"male": null})),
        ),
        (
            "applicant",
            "education as an object naming the variant",
            applicant("education", json!({"bachelor": null})),
        ),
        (
            "applicant",
            "marital_status as an object naming the variant",
            applicant("marital_status", json!({"single": null})),
        ),
        (
            "device",
            "record as an array of the required field values",
            json!(["d-1", "android", "203.0.113.7"]),
        ),
        (
            "device",
            "os as an object naming the variant",
            device("os", json!({"android": null})),
        ),
        (
            "device",
            "network as an object naming the variant",
            device("network", json!({"wifi": null})),
        ),
        ("risk", "record as an array [score]", json!([712])),
        (
            "risk",
            "record as an array [score, grade]",
            json!([712, "A"]),
        ),
    ];

    let mut disagreements = Vec::new();
    for group in GROUPS {
        let validator = compile(group);
        for (g, why, record) in cases.iter().filter(|(g, _, _)| *g == group) {
            let label = format!("{g} \"{why}\"");
            check(&label, g, &validator, record, false, &mut disagreements);
        }
    }
    fail_on(&disagreements, "the extra invalid records");
}
