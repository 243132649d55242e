//! How a body that does not deserialise is described to its sender: the
//! JSON pointer of the first offending input and a message that names the
//! rule, never the value (it may be personal data). The server answers with
//! it and the SDK's builders refuse with it, so both say the same thing.
//!
//! Object keys are input too: a client can send an id number or a name as
//! a key. A pointer therefore names only the members the schemas define
//! ([`FIELDS`]); at the first key that is not one of them (an unknown
//! member, a feature name) it stops, and points at the object holding it.

/// Where and why input was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    /// JSON pointer of the offending input (empty for the whole body).
    pub pointer: String,
    /// The rule that failed, without any value.
    pub message: String,
}

/// Describes a deserialisation error at `path` (from `serde_path_to_error`).
pub fn describe(path: &serde_path_to_error::Path, error: &dyn std::fmt::Display) -> InputError {
    let mut pointer = pointer_of(path);
    let mut message = sanitise(&error.to_string());
    // Messages of the shared newtypes name their field: `id_number: …`.
    if let Some((field, rest)) = message.split_once(": ") {
        if !field.is_empty() && field.bytes().all(|c| c.is_ascii_lowercase() || c == b'_') {
            pointer = format!("{pointer}/{field}");
            message = rest.to_owned();
        }
    }
    InputError { pointer, message }
}

/// Every member name the request and record schemas define
/// (`schemas/*.json`; a test holds the two together). Only these may
/// appear in a pointer.
pub const FIELDS: &[&str] = &[
    "algorithm",
    "amount_fen",
    "app_version",
    "applicant",
    "code",
    "code_id",
    "codes",
    "consent",
    "consent_id",
    "created_at",
    "decision",
    "deposit_id",
    "deposits",
    "detail",
    "device",
    "device_id",
    "education",
    "employer",
    "evidence_sha256",
    "expires_at",
    "external_ref",
    "features",
    "field",
    "funder_id",
    "gender",
    "grade",
    "granted_at",
    "grants",
    "groups",
    "id_address",
    "id_number",
    "id_type",
    "ip",
    "key_id",
    "keys",
    "marital_status",
    "model",
    "model_version",
    "monthly_income_fen",
    "name",
    "network",
    "os",
    "os_version",
    "outcome",
    "phone",
    "platform_id",
    "public_key",
    "purpose",
    "receipt",
    "redeemed_at",
    "redemption_id",
    "redemptions",
    "reported_at",
    "residence_address",
    "risk",
    "scopes",
    "score",
    "signature",
    "signed",
    "state",
    "status",
    "subject_ref",
    "suite",
    "tags",
    "title",
    "ttl_seconds",
    "type",
    "user_agent",
];

fn pointer_of(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("/{index}")),
            Segment::Map { key: name } | Segment::Enum { variant: name } => {
                // A key the schemas do not define is the client's text.
                if !FIELDS.contains(&name.as_str()) {
                    break;
                }
                out.push('/');
                out.push_str(name);
            }
            Segment::Unknown => out.push_str("/?"),
        }
    }
    out
}

/// Removes anything serde quoted from the input (`invalid type: string "…"`,
/// the key of `unknown field `…``) and a trailing position, so no value or
/// key reaches a response or a log.
fn sanitise(message: &str) -> String {
    // An unknown field's name is the client's; the list of expected ones
    // that follows it is the schema's.
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let expected = rest.split_once('`').map_or("", |(_, r)| r);
        return sanitise(&format!("unknown field{expected}"));
    }
    // Missing and duplicate fields are named by serde from the schema's
    // own words and stay; any other back-quoted text may be a value and goes.
    let names_fields = ["unknown field", "missing field", "duplicate field"]
        .iter()
        .any(|p| message.starts_with(p));
    let mut out = String::with_capacity(message.len());
    let mut in_quote: Option<char> = None;
    for c in message.chars() {
        match in_quote {
            Some(q) if c == q => in_quote = None,
            Some(_) => {}
            None if c == '"' || (c == '`' && !names_fields) => {
                out.push(c);
                out.push('…');
                out.push(c);
                in_quote = Some(c);
            }
            None => out.push(c),
        }
    }
    match out.find(" at line ") {
        Some(i) => out[..i].to_owned(),
        None => out,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::{describe, sanitise, InputError};
    use crate::wire::DepositRequest;

    fn refused(body: &str) -> InputError {
        let de = &mut serde_json::Deserializer::from_str(body);
        let e = serde_path_to_error::deserialize::<_, DepositRequest>(de)
            .err()
            .unwrap();
        describe(e.path(), e.inner())
    }

    /// A deposit with `applicant` and `risk` replaced.
    fn deposit(applicant: &str, risk: &str, extra_top: &str, extra_consent: &str) -> String {
        format!(
            r#"{{"external_ref":"x",{extra_top}"purpose":"credit_application","consent":{{{extra_consent}"consent_id":"c","granted_at":"2026-01-01T00:00:00Z","expires_at":"2027-01-01T00:00:00Z","scopes":["applicant","device","risk"],"evidence_sha256":"{}"}},"applicant":{applicant},"device":{{"device_id":"d","os":"ios","ip":"::1"}},"risk":{risk}}}"#,
            "a".repeat(64)
        )
    }

    const APPLICANT: &str = r#"{"name":"n","id_type":"resident_id","id_number":"11010519491231002X","phone":"13912345678"}"#;
    const RISK: &str = r#"{"score":1}"#;

    #[test]
    fn keys_the_schemas_do_not_define_are_never_echoed() {
        let id = "110105198808085561";
        let cases = [
            // (body, the pointer it must name)
            (deposit(&format!(r#"{{"{id}": 1}}"#), RISK, "", ""), "/applicant"),
            (
                deposit(&APPLICANT.replace('}', &format!(r#","{id}":1}}"#)), RISK, "", ""),
                "/applicant",
            ),
            (deposit(APPLICANT, &format!(r#"{{"score":1,"{id}":2}}"#), "", ""), "/risk"),
            (
                deposit(APPLICANT, &format!(r#"{{"score":1,"features":{{"{id}":1}}}}"#), "", ""),
                "/risk/features",
            ),
            (
                deposit(APPLICANT, r#"{"score":1,"features":{"ouyangjinsique":"x"}}"#, "", ""),
                "/risk/features",
            ),
            (deposit(APPLICANT, RISK, &format!(r#""{id}":1,"#), ""), ""),
            (deposit(APPLICANT, RISK, r#""欧阳金丝雀":1,"#, ""), ""),
            (deposit(APPLICANT, RISK, "", r#""13912345678":1,"#), "/consent"),
            (
                deposit(APPLICANT, RISK, "", "")
                    .replace(r#""os":"ios""#, r#""os":"ios","13912345678":true"#),
                "/device",
            ),
            (
                deposit(APPLICANT, RISK, "", "")
                    .replace(r#""risk":"#, r#""grants":[{"funder_id":"ten_00000000000000000000000000000000","scopes":["risk"],"13912345678":1}],"risk":"#),
                "/grants/0",
            ),
        ];
        for (body, pointer) in cases {
            let d = refused(&body);
            for secret in [id, "欧阳金丝雀", "ouyangjinsique", "13912345678"] {
                assert!(
                    !d.pointer.contains(secret) && !d.message.contains(secret),
                    "{body} → {d:?}"
                );
            }
            assert_eq!(d.pointer, pointer, "{body} → {d:?}");
        }
        let d = refused(&deposit(&format!(r#"{{"{id}": 1}}"#), RISK, "", ""));
        assert!(
            d.message
                .starts_with("unknown field, expected one of `name`"),
            "{d:?}"
        );
    }

    #[test]
    fn every_member_the_schemas_define_may_be_pointed_at() {
        fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(m) => {
                    for (k, x) in m {
                        if k == "properties" {
                            if let Some(p) = x.as_object() {
                                out.extend(p.keys().cloned());
                            }
                        }
                        walk(x, out);
                    }
                }
                serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
                _ => {}
            }
        }
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "json") {
                let text = std::fs::read_to_string(&path).unwrap();
                walk(&serde_json::from_str(&text).unwrap(), &mut names);
            }
        }
        names.sort();
        names.dedup();
        let mut fields: Vec<String> = super::FIELDS.iter().map(|s| s.to_string()).collect();
        fields.sort();
        assert_eq!(names, fields);
    }

    #[test]
    fn quoted_values_never_survive() {
        let m = sanitise("invalid type: string \"13800138000\", expected u16 at line 1 column 20");
        assert!(!m.contains("13800138000"));
        assert_eq!(m, "invalid type: string \"…\", expected u16");
        let m = sanitise("invalid type: integer `13800138000`, expected a string");
        assert!(!m.contains("13800138000"));
        let m = sanitise("unknown field `nickname`, expected one of `name`, `phone`");
        assert_eq!(m, "unknown field, expected one of `name`, `phone`");
        let m = sanitise("missing field `phone`");
        assert_eq!(m, "missing field `phone`");
    }
}
