//! RFC 8785 (JCS) canonical JSON of a `serde_json::Value`, written directly.
//!
//! Receipts sign the canonical form of the released groups and of the
//! receipt body, and every redemption writes both. `serde_jcs` serialises
//! each object's entries into buffers of their own, parses every key back
//! to sort it by UTF-16 code units, and copies it all out again, which
//! costs a redemption's HTTP worker about a sixth of its time
//! (docs/performance.md). This writes each value once. A `Value`'s
//! map already holds its keys in byte (UTF-8) order. That is UTF-16 order
//! too, unless a key has a character beyond U+FFFF: its surrogate pair
//! sorts before U+E000–U+FFFF in UTF-16 but after them in UTF-8. Only maps
//! with such a key are sorted again.
//!
//! The output is byte for byte that of `serde_jcs` 0.2, which the SDK uses
//! to verify receipts: strings are escaped as `serde_json` escapes them,
//! and every number is written as the ECMAScript double it denotes
//! (`ryu-js`), as JCS requires. The tests hold the two to each other.

use serde_json::{Map, Value};

/// Appends the canonical form of `value` to `out`.
pub fn write(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => number(n, out),
        Value::String(s) => string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => object(map, out),
    }
}

/// The canonical form of `value`.
pub fn to_vec(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write(value, &mut out);
    out
}

fn object(map: &Map<String, Value>, out: &mut Vec<u8>) {
    out.push(b'{');
    if map.keys().any(|k| k.chars().any(|c| c > '\u{ffff}')) {
        let mut entries: Vec<(Vec<u16>, &String, &Value)> = map
            .iter()
            .map(|(k, v)| (k.encode_utf16().collect(), k, v))
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        for (i, (_, k, v)) in entries.into_iter().enumerate() {
            member(i, k, v, out);
        }
    } else {
        for (i, (k, v)) in map.iter().enumerate() {
            member(i, k, v, out);
        }
    }
    out.push(b'}');
}

fn member(i: usize, key: &str, value: &Value, out: &mut Vec<u8>) {
    if i > 0 {
        out.push(b',');
    }
    string(key, out);
    out.push(b':');
    write(value, out);
}

/// A JSON string, escaped as `serde_json` (and so `serde_jcs`) escapes it:
/// `"` and `\`, `\b \t \n \f \r`, other controls as `\u00xx`, nothing else.
fn string(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x09 => b"\\t",
            0x0a => b"\\n",
            0x0c => b"\\f",
            0x0d => b"\\r",
            0x00..=0x1f => &[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 0xf) as usize],
            ],
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escape);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// A number as the ECMAScript double it denotes. A `Value` holds only
/// finite numbers, so the conversion cannot fail.
fn number(n: &serde_json::Number, out: &mut Vec<u8>) {
    let f = n.as_f64().unwrap_or(f64::NAN);
    if f.is_finite() {
        out.extend_from_slice(ryu_js::Buffer::new().format_finite(f).as_bytes());
    } else {
        // Unreachable for a parsed Value; `null` rather than a panic.
        out.extend_from_slice(b"null");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn same_as_serde_jcs(v: &Value) {
        let expected = serde_jcs::to_vec(v).unwrap();
        let got = to_vec(v);
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&expected)
        );
    }

    #[test]
    fn rfc_8785_examples_and_edges() {
        // RFC 8785 §3.2.3's sorting example, keys in UTF-16 order.
        let sorting: Value = serde_json::from_str(
            r#"{"\u20ac": "Euro Sign", "\r": "Carriage Return", "\ufb33": "Hebrew Letter Dalet With Dagesh",
                "1": "One", "\ud83d\ude00": "Emoji: Grinning Face", "\u0080": "Control",
                "\u00f6": "Latin Small Letter O With Diaeresis"}"#,
        )
        .unwrap();
        let got = String::from_utf8(to_vec(&sorting)).unwrap();
        let keys: Vec<&str> = vec![
            "\r",
            "1",
            "\u{80}",
            "\u{f6}",
            "\u{20ac}",
            "\u{1f600}",
            "\u{fb33}",
        ];
        let positions: Vec<usize> = keys
            .iter()
            .map(|k| {
                let key = serde_json::to_string(k).unwrap();
                got.find(&format!("{key}:")).unwrap()
            })
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{got}");
        same_as_serde_jcs(&sorting);
        // RFC 8785 §3.2.2.3's numbers.
        let numbers: Value = serde_json::from_str(
            "[333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001, -0.0,
              9007199254740993, -9007199254740993, 18446744073709551615, -9223372036854775808]",
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(to_vec(&numbers)).unwrap(),
            "[333333333.3333333,1e+30,4.5,0.002,1e-27,0,9007199254740992,-9007199254740992,18446744073709552000,-9223372036854776000]"
        );
        same_as_serde_jcs(&numbers);
        same_as_serde_jcs(
            &json!({"s": "quote \" backslash \\ slash / \u{7f} \u{1} \u{1f} \t\n\r\u{8}\u{c} 中文 😀"}),
        );
        same_as_serde_jcs(&json!({}));
        same_as_serde_jcs(&json!([]));
        same_as_serde_jcs(&json!({"b": [null, true, false, {"z": 1, "a": [{}]}], "a": ""}));
    }

    fn any_value() -> impl Strategy<Value = Value> {
        let key = prop_oneof![
            "[a-z]{0,4}",
            "\\PC{0,3}",
            Just("\u{e000}".to_owned()),
            Just("\u{1f600}".to_owned()),
            Just("\u{ffff}".to_owned()),
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            "\\PC{0,8}".prop_map(Value::String),
            "[\\x00-\\x1f\"\\\\/]{0,4}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(key.clone(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn byte_for_byte_what_serde_jcs_writes(v in any_value()) {
            let expected = serde_jcs::to_vec(&v).unwrap();
            prop_assert_eq!(to_vec(&v), expected);
        }
    }
}
