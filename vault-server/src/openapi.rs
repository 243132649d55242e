//! The served OpenAPI document: `schemas/openapi.json` with its relative
//! references to the group schemas (`applicant.schema.json`, …) replaced by
//! the schemas themselves, so the served document stands alone.

use std::sync::OnceLock;

const OPENAPI: &str = include_str!("../../schemas/openapi.json");
const GROUPS: [(&str, &str); 3] = [
    (
        "applicant.schema.json",
        include_str!("../../schemas/applicant.schema.json"),
    ),
    (
        "device.schema.json",
        include_str!("../../schemas/device.schema.json"),
    ),
    (
        "risk.schema.json",
        include_str!("../../schemas/risk.schema.json"),
    ),
];

/// The document, built once.
pub fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(build)
}

fn build() -> String {
    let Ok(mut doc) = serde_json::from_str::<serde_json::Value>(OPENAPI) else {
        return OPENAPI.to_owned();
    };
    inline(&mut doc);
    serde_json::to_string(&doc).unwrap_or_else(|_| OPENAPI.to_owned())
}

fn inline(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::String(r)) = map.get("$ref") {
                if let Some((_, text)) = GROUPS.iter().find(|(name, _)| name == r) {
                    if let Ok(mut schema) = serde_json::from_str::<serde_json::Value>(text) {
                        if let Some(obj) = schema.as_object_mut() {
                            obj.remove("$schema");
                            obj.remove("$id");
                        }
                        *v = schema;
                        return;
                    }
                }
            }
            for child in map.values_mut() {
                inline(child);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(inline),
        _ => {}
    }
}

/// Every `(method, path)` the document declares.
pub fn operations() -> Vec<(String, String)> {
    let doc: serde_json::Value = serde_json::from_str(document()).unwrap_or_default();
    let mut out = Vec::new();
    if let Some(paths) = doc.get("paths").and_then(|p| p.as_object()) {
        for (path, item) in paths {
            if let Some(ops) = item.as_object() {
                for method in ops.keys() {
                    if ["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                        out.push((method.to_uppercase(), path.clone()));
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use dzl_types::ErrorCode;

    /// Every problem example the document shows, as `(code, example)`.
    fn problem_examples(v: &serde_json::Value, out: &mut Vec<(ErrorCode, serde_json::Value)>) {
        match v {
            serde_json::Value::Object(map) => {
                let code = map.get("code").and_then(|c| c.as_str());
                if let (Some(code), true) = (code, map.contains_key("title")) {
                    let code = ErrorCode::parse(code).expect("a known problem code");
                    out.push((code, v.clone()));
                }
                map.values().for_each(|c| problem_examples(c, out));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|c| problem_examples(c, out)),
            _ => {}
        }
    }

    #[test]
    fn problem_examples_show_what_the_vault_sends() {
        let doc: serde_json::Value = serde_json::from_str(super::document()).unwrap();
        let mut examples = Vec::new();
        problem_examples(&doc, &mut examples);
        assert!(examples.len() >= 40, "{} examples", examples.len());
        for (code, ex) in &examples {
            let problem = dzl_types::error::Problem::new(*code, "");
            assert_eq!(ex["type"], problem.type_, "{ex}");
            assert_eq!(ex["title"], problem.title, "{ex}");
            assert_eq!(ex["status"], problem.status, "{ex}");
        }
        let duplicate = examples
            .iter()
            .find(|(c, _)| *c == ErrorCode::DuplicateExternalRef)
            .expect("a duplicate_external_ref example");
        assert!(dzl_types::DepositId::parse(duplicate.1["deposit_id"].as_str().unwrap()).is_ok());
    }
}
