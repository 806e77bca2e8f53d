//! Result documents written as JSON directly: the bytes `serde_json::to_string` writes
//! for a [`UnitResult`] or an [`InstitutionResult`] (the tests hold every result of the
//! golden season, and generated values, to exactly that), at a fraction of the cost.
//!
//! A server recompute writes hundreds of MB of these documents. Through serde, every
//! string is escaped byte by byte (`format_escaped_str_contents` was more than half of
//! the serialisation under callgrind), and the flattened outcome of every node goes
//! through serde's map machinery. Here a string is checked for anything to escape in
//! one pass that vectorises, and copied whole when (as nearly always) there is none.

use serde_json::Value;

use super::result::{AppliedDeduction, InstitutionResult, NodeResult, Outcome, ProductResult, Status, UnitResult};
use crate::num::{Exact, Published};

/// A unit's result document: `serde_json::to_string(unit)`.
pub fn unit_document(unit: &UnitResult) -> String {
    // A unit's document runs to about 4 kB a product (its tree and what it lacks):
    // sized once, rather than copied through every doubling.
    let mut out = Json(String::with_capacity(8 * 1024 + 5 * 1024 * unit.products.len()));
    out.unit(unit);
    out.0
}

/// An institution's result document: `serde_json::to_string(institution)`.
pub fn institution_document(institution: &InstitutionResult) -> String {
    let mut out = Json(String::with_capacity(8 * 1024));
    out.institution(institution);
    out.0
}

/// The document being written.
struct Json(String);

impl Json {
    fn raw(&mut self, s: &str) {
        self.0.push_str(s);
    }

    /// `s` as a JSON string, escaped as serde_json escapes.
    fn str(&mut self, s: &str) {
        self.0.reserve(s.len() + 2);
        self.0.push('"');
        if !crate::canonical::needs_json_escape(s.as_bytes()) {
            self.0.push_str(s);
        } else {
            for c in s.chars() {
                match c {
                    '"' => self.0.push_str("\\\""),
                    '\\' => self.0.push_str("\\\\"),
                    '\u{08}' => self.0.push_str("\\b"),
                    '\t' => self.0.push_str("\\t"),
                    '\n' => self.0.push_str("\\n"),
                    '\u{0c}' => self.0.push_str("\\f"),
                    '\r' => self.0.push_str("\\r"),
                    c if u32::from(c) < 0x20 => {
                        const HEX: &[u8; 16] = b"0123456789abcdef";
                        let b = u32::from(c) as usize;
                        self.0.push_str("\\u00");
                        self.0.push(char::from(HEX[b >> 4]));
                        self.0.push(char::from(HEX[b & 0x0f]));
                    }
                    c => self.0.push(c),
                }
            }
        }
        self.0.push('"');
    }

    /// `,"name":` (or `"name":` right after the opening brace).
    fn key(&mut self, name: &str) {
        if !self.0.ends_with('{') {
            self.0.push(',');
        }
        self.0.push('"');
        self.0.push_str(name);
        self.0.push_str("\":");
    }

    fn str_field(&mut self, name: &str, value: &str) {
        self.key(name);
        self.str(value);
    }

    /// Exact numbers and published figures are strings of digits, `.`, `/` and `-`.
    fn exact_field(&mut self, name: &str, value: &Exact) {
        self.key(name);
        self.0.push('"');
        value.write_text(&mut self.0);
        self.0.push('"');
    }

    fn published_field(&mut self, name: &str, value: Option<Published>) {
        if let Some(p) = value {
            self.key(name);
            self.0.push('"');
            p.write_text(&mut self.0);
            self.0.push('"');
        }
    }

    fn list<T>(&mut self, items: &[T], mut each: impl FnMut(&mut Json, &T)) {
        self.0.push('[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                self.0.push(',');
            }
            each(self, item);
        }
        self.0.push(']');
    }

    fn strings_field(&mut self, name: &str, items: &[String]) {
        if !items.is_empty() {
            self.key(name);
            self.list(items, |out, s| out.str(s));
        }
    }

    /// The outcome's members, flattened into the object being written.
    fn outcome(&mut self, o: &Outcome) {
        self.str_field(
            "status",
            match o.status {
                Status::Complete => "complete",
                Status::Incomplete => "incomplete",
                Status::NotApplicable => "not_applicable",
            },
        );
        self.published_field("score", o.score);
        if let Some(g) = &o.grading {
            self.str_field("grade", &g.grade);
            self.str_field("label", &g.label);
            if let Some(zone) = g.zone {
                self.str_field("zone", zone.name());
            }
        }
        self.published_field("provisional", o.provisional);
    }

    fn deductions_field(&mut self, deductions: &[AppliedDeduction]) {
        if !deductions.is_empty() {
            self.key("deductions");
            self.list(deductions, |out, d| {
                out.raw("{");
                out.str_field("id", &d.id);
                out.exact_field("points", &d.points);
                out.str_field("reason", &d.reason);
                out.raw("}");
            });
        }
    }

    fn value(&mut self, v: &Value) {
        match v {
            Value::Null => self.raw("null"),
            Value::Bool(b) => self.raw(if *b { "true" } else { "false" }),
            // Integers as serde_json writes them (itoa); `Number`'s `Display` writes what
            // its `Serialize` writes for the rest (the same shortest-float formatting).
            Value::Number(n) => match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => self.raw(itoa::Buffer::new().format(u)),
                (None, Some(i)) => self.raw(itoa::Buffer::new().format(i)),
                _ => self.raw(&n.to_string()),
            },
            Value::String(s) => self.str(s),
            Value::Array(items) => self.list(items, Json::value),
            Value::Object(map) => {
                self.raw("{");
                for (i, (k, v)) in map.iter().enumerate() {
                    if i > 0 {
                        self.raw(",");
                    }
                    self.str(k);
                    self.raw(":");
                    self.value(v);
                }
                self.raw("}");
            }
        }
    }

    fn node(&mut self, n: &NodeResult) {
        self.raw("{");
        self.str_field("id", &n.id);
        self.exact_field("weight", &n.weight);
        self.outcome(&n.outcome);
        if let Some(answer) = &n.answer {
            self.key("answer");
            self.value(answer);
        }
        if let Some(field_value) = &n.field_value {
            self.key("field_value");
            self.value(field_value);
        }
        if let Some(r) = n.respondents {
            self.key("respondents");
            self.raw(itoa::Buffer::new().format(r));
        }
        if !n.children.is_empty() {
            self.key("children");
            self.list(&n.children, Json::node);
        }
        self.raw("}");
    }

    fn nodes_field(&mut self, name: &str, nodes: &[NodeResult]) {
        self.key(name);
        self.list(nodes, Json::node);
    }

    fn product(&mut self, p: &ProductResult) {
        self.raw("{");
        self.str_field("id", &p.id);
        self.str_field("name", &p.name);
        self.str_field("location", p.location.name());
        self.exact_field("weight", &p.weight);
        self.outcome(&p.outcome);
        self.strings_field("missing", &p.missing);
        self.nodes_field("dimensions", &p.dimensions);
        self.raw("}");
    }

    fn unit(&mut self, u: &UnitResult) {
        self.raw("{");
        self.str_field("id", &u.id);
        self.str_field("name", &u.name);
        self.str_field("type", &u.unit_type);
        self.exact_field("weight", &u.weight);
        self.outcome(&u.outcome);
        self.published_field("before_deductions", u.before_deductions);
        self.deductions_field(&u.deductions);
        self.strings_field("missing", &u.missing);
        self.nodes_field("dimensions", &u.dimensions);
        self.key("products");
        self.list(&u.products, Json::product);
        self.raw("}");
    }

    fn institution(&mut self, i: &InstitutionResult) {
        self.raw("{");
        self.str_field("id", &i.id);
        self.str_field("name", &i.name);
        self.str_field("type", &i.kind);
        if let Some(region) = &i.region {
            self.str_field("region", region);
        }
        self.outcome(&i.outcome);
        self.published_field("before_deductions", i.before_deductions);
        self.deductions_field(&i.deductions);
        self.str_field("rule", i.rule);
        self.strings_field("missing", &i.missing);
        self.nodes_field("dimensions", &i.dimensions);
        self.key("units");
        self.list(&i.units, Json::unit);
        self.raw("}");
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::Value;

    fn any_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
            any::<String>().prop_map(Value::String),
            "[\\u{0}-\\u{7f}\"\\\\]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(any::<String>(), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Strings (every control character, quotes, backslashes, any Unicode) and
        /// answer values come out as serde_json writes them.
        #[test]
        fn strings_and_values_are_written_as_serde_json_writes_them(
            text in any::<String>(),
            ascii in "[\\u{0}-\\u{7f}]{0,40}",
            value in any_value(),
        ) {
            for s in [&text, &ascii] {
                let mut out = super::Json(String::new());
                out.str(s);
                prop_assert_eq!(out.0, serde_json::to_string(s).unwrap());
            }
            let mut out = super::Json(String::new());
            out.value(&value);
            prop_assert_eq!(out.0, serde_json::to_string(&value).unwrap());
        }
    }
}
