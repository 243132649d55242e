//! How a body that does not deserialise is described to its sender: the
//! JSON pointer of the first offending input and a message that names the
//! rule, never the value (it may be personal data). The server answers with
//! it and the SDK's builders refuse with it, so both say the same thing.

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

fn pointer_of(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("/{index}")),
            Segment::Map { key } => {
                out.push_str(&format!("/{}", key.replace('~', "~0").replace('/', "~1")))
            }
            Segment::Enum { variant } => out.push_str(&format!("/{variant}")),
            Segment::Unknown => out.push_str("/?"),
        }
    }
    out
}

/// Removes anything serde quoted from the input (`invalid type: string "…"`)
/// and a trailing position, so no value reaches a response or a log.
fn sanitise(message: &str) -> String {
    // Field names (`unknown field `x``, `missing field `x``) are the schema's
    // words and stay; any other back-quoted text may be a value and goes.
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
mod tests {
    use super::sanitise;

    #[test]
    fn quoted_values_never_survive() {
        let m = sanitise("invalid type: string \"13800138000\", expected u16 at line 1 column 20");
        assert!(!m.contains("13800138000"));
        assert_eq!(m, "invalid type: string \"…\", expected u16");
        let m = sanitise("invalid type: integer `13800138000`, expected a string");
        assert!(!m.contains("13800138000"));
        let m = sanitise("unknown field `nickname`, expected one of `name`, `phone`");
        assert!(m.contains("nickname"));
    }
}
