//! Canonical JSON: one byte string per value, used wherever JSON is hashed.
//!
//! Object keys are sorted by their UTF-8 bytes, there is no whitespace, strings use
//! the shortest JSON escapes (`\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, `\u00XX` for
//! other control characters; everything else literal UTF-8), and numbers are written
//! as serde_json writes them (integers as plain digits). `proto/sync-v1.md` specifies
//! the same rules for other implementations.

use serde_json::Value;

/// Whether `bytes`, written as a JSON string, need any escape (a quote, a backslash or
/// a control character). Nearly every stored text needs none, and checking is much
/// cheaper than escaping byte by byte; the fold does not stop early, so it vectorises.
pub fn needs_json_escape(bytes: &[u8]) -> bool {
    bytes.iter().fold(false, |escape, &b| escape | (b < 0x20) | (b == b'"') | (b == b'\\'))
}

/// A stored JSON text, read: exactly what `serde_json::from_str` gives, or `null` where
/// the text is not JSON. The two shapes nearly every stored field has, a non-negative
/// integer (an answer) and a string with nothing escaped (an id, a code), are read
/// directly; a recompute reads every field of an institution, and serde's general
/// parser costs several times as much for them. Anything else goes to serde_json.
pub fn parse_stored(text: &str) -> Value {
    let bytes = text.as_bytes();
    match bytes {
        // At most 19 digits always fit a u64; a leading zero only alone (JSON has no
        // "01", and serde_json reads "-0" as a float, so signs go the long way).
        [b'0'..=b'9', ..]
            if bytes.len() <= 19 && (bytes[0] != b'0' || bytes.len() == 1) && bytes.iter().all(u8::is_ascii_digit) =>
        {
            return Value::from(bytes.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')));
        }
        [b'"', inner @ .., b'"'] if !needs_json_escape(inner) => {
            // `inner` is valid UTF-8: it lies between two ASCII quotes of a `str`.
            return Value::String(text[1..text.len() - 1].to_owned());
        }
        _ => {}
    }
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// Writes `value` canonically.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_value(value, &mut out);
    out
}

fn write_value(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(key, out);
                out.push(':');
                write_value(item, out);
            }
            out.push('}');
        }
    }
}

fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorts_keys_and_drops_whitespace() {
        let v = json!({"b": 1, "a": [true, null, "x\n\"y\u{1}"], "A": {"z": 0, "é": "é"}});
        assert_eq!(canonical_json(&v), r#"{"A":{"z":0,"é":"é"},"a":[true,null,"x\n\"y\u0001"],"b":1}"#);
    }

    /// What `parse_stored` must equal.
    fn serde_reads(text: &str) -> Value {
        serde_json::from_str(text).unwrap_or(Value::Null)
    }

    #[test]
    fn reads_stored_values_as_serde_json_does() {
        for text in [
            "0",
            "7",
            "01",
            "-0",
            "-3",
            "3.0",
            "1e2",
            "18446744073709551615",
            "18446744073709551616",
            "9999999999999999999",
            "99999999999999999999",
            "\"\"",
            "\"a\"",
            "\"a\\\"b\"",
            "\"\\u00e9\"",
            "\"tab\tin\"",
            "\"é 🚀\"",
            "\"",
            "\"\"\"",
            "\"a\"b\"",
            "null",
            "true",
            "[1,2]",
            "{\"a\":1}",
            " 1",
            "1 ",
            "",
            "2x",
            "\"x",
        ] {
            assert_eq!(parse_stored(text), serde_reads(text), "{text:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn parse_stored_is_serde_json(text in "\\PC{0,24}|[0-9]{1,21}|\"[^\"\\\\]{0,12}\"|\"[ -~\t\n]{0,12}\"") {
            proptest::prop_assert_eq!(parse_stored(&text), serde_reads(&text));
        }

        #[test]
        fn parse_stored_reads_what_serde_json_writes(n in proptest::num::u64::ANY, s in "\\PC{0,16}") {
            let (n, s) = (Value::from(n), Value::from(s));
            proptest::prop_assert_eq!(parse_stored(&serde_json::to_string(&n).unwrap()), n);
            proptest::prop_assert_eq!(parse_stored(&serde_json::to_string(&s).unwrap()), s);
        }
    }

    #[test]
    fn agrees_with_serde_json_on_strings() {
        for s in ["plain", "tab\tnew\nline", "quote\" back\\", "\u{7f}\u{1f}\u{2028}", "emoji 🚀"] {
            let mut ours = String::new();
            write_string(s, &mut ours);
            assert_eq!(ours, serde_json::to_string(s).unwrap(), "{s:?}");
        }
    }
}
