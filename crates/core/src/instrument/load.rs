//! Loading an instrument document: every fault is collected, each with its JSON path.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{Map, Value};

use super::model::*;
use crate::canonical::canonical_json;
use crate::num::{Exact, Published};

/// One fault in an instrument document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// Where, as a JSON path (`$.dimensions[0].weight`).
    pub path: String,
    /// What is wrong, in plain words.
    pub message: String,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every fault found in an instrument document.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct InstrumentErrors {
    /// The faults, in document order.
    pub faults: Vec<Fault>,
}

impl fmt::Display for InstrumentErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.faults.len();
        write!(f, "the instrument has {n} fault{}:", if n == 1 { "" } else { "s" })?;
        for fault in &self.faults {
            write!(f, "\n  {fault}")?;
        }
        Ok(())
    }
}

/// Parses and checks an instrument document.
pub fn load_instrument(text: &str) -> Result<Instrument, InstrumentErrors> {
    let document: Value = serde_json::from_str(text).map_err(|e| InstrumentErrors {
        faults: vec![Fault { path: "$".into(), message: format!("not valid JSON: {e}") }],
    })?;
    Instrument::from_document(document)
}

impl Instrument {
    /// Checks an already parsed document.
    pub fn from_document(document: Value) -> Result<Instrument, InstrumentErrors> {
        let mut r = Reader::default();
        let instrument = r.instrument(&document);
        match instrument {
            Some(mut instrument) if r.faults.is_empty() => {
                let canonical = canonical_json(&document);
                instrument.digest = crate::hash::sha256_hex(canonical.as_bytes());
                instrument.document = document;
                Ok(instrument)
            }
            _ => Err(InstrumentErrors { faults: r.faults }),
        }
    }
}

/// A walker that reads typed values out of JSON and records faults instead of stopping.
#[derive(Default)]
struct Reader {
    faults: Vec<Fault>,
}

const TOP_KEYS: &[&str] = &[
    "format",
    "id",
    "version",
    "title",
    "regime",
    "year",
    "sources",
    "choices",
    "scale",
    "dimensions",
    "respondents",
    "rollup",
    "deductions",
    "bands",
    "description",
];

impl Reader {
    fn fault(&mut self, path: &str, message: impl Into<String>) {
        self.faults.push(Fault { path: path.to_owned(), message: message.into() });
    }

    fn object<'v>(&mut self, value: &'v Value, path: &str, allowed: &[&str]) -> Option<&'v Map<String, Value>> {
        match value {
            Value::Object(map) => {
                for key in map.keys() {
                    if !allowed.contains(&key.as_str()) {
                        self.fault(
                            &format!("{path}.{key}"),
                            format!("unknown field `{key}` (allowed: {})", allowed.join(", ")),
                        );
                    }
                }
                Some(map)
            }
            other => {
                self.fault(path, format!("expected an object, found {}", kind_of(other)));
                None
            }
        }
    }

    fn required<'v>(&mut self, map: &'v Map<String, Value>, key: &str, path: &str) -> Option<&'v Value> {
        let v = map.get(key);
        if v.is_none() {
            self.fault(path, format!("missing field `{key}`"));
        }
        v
    }

    fn string(&mut self, map: &Map<String, Value>, key: &str, path: &str) -> Option<String> {
        let value = self.required(map, key, path)?;
        self.string_value(value, &format!("{path}.{key}"))
    }

    fn string_value(&mut self, value: &Value, path: &str) -> Option<String> {
        match value {
            Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
            Value::String(_) => {
                self.fault(path, "must not be empty");
                None
            }
            other => {
                self.fault(path, format!("expected a string, found {}", kind_of(other)));
                None
            }
        }
    }

    fn bool_or(&mut self, map: &Map<String, Value>, key: &str, path: &str, default: bool) -> bool {
        match map.get(key) {
            None => default,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                self.fault(&format!("{path}.{key}"), format!("expected true or false, found {}", kind_of(other)));
                default
            }
        }
    }

    fn integer_value(&mut self, value: &Value, path: &str) -> Option<i64> {
        match value.as_i64() {
            Some(n) => Some(n),
            None => {
                self.fault(path, format!("expected a whole number, found {}", kind_of(value)));
                None
            }
        }
    }

    fn exact_value(&mut self, value: &Value, path: &str) -> Option<Exact> {
        if matches!(value, Value::Number(n) if !(n.is_i64() || n.is_u64())) {
            // Floats have no single text form across JSON writers, and the digest that
            // proves two tiers hold the same instrument hashes the text.
            self.fault(
                path,
                format!("write decimals as strings (\"{value}\"), so that every tier reads the same digits"),
            );
            return None;
        }
        match crate::num::exact_from_json(value) {
            Ok(x) => Some(x),
            Err(e) => {
                self.fault(path, e.to_string());
                None
            }
        }
    }

    fn exact(&mut self, map: &Map<String, Value>, key: &str, path: &str) -> Option<Exact> {
        let value = self.required(map, key, path)?;
        self.exact_value(value, &format!("{path}.{key}"))
    }

    fn array<'v>(&mut self, map: &'v Map<String, Value>, key: &str, path: &str, required: bool) -> &'v [Value] {
        match map.get(key) {
            Some(Value::Array(items)) => {
                if required && items.is_empty() {
                    self.fault(&format!("{path}.{key}"), "must not be empty");
                }
                items
            }
            Some(other) => {
                self.fault(&format!("{path}.{key}"), format!("expected a list, found {}", kind_of(other)));
                &[]
            }
            None => {
                if required {
                    self.fault(path, format!("missing field `{key}`"));
                }
                &[]
            }
        }
    }

    fn id(&mut self, map: &Map<String, Value>, path: &str, seen: &mut BTreeMap<String, String>) -> Option<String> {
        let id = self.string(map, "id", path)?;
        if !is_valid_id(&id) {
            self.fault(&format!("{path}.id"), format!("`{id}` is not a valid id (lowercase letters, digits, `-`, `_` and `.`, starting with a letter or digit)"));
        }
        if let Some(first) = seen.get(&id) {
            self.fault(&format!("{path}.id"), format!("duplicate id `{id}` (first used at {first})"));
        } else {
            seen.insert(id.clone(), path.to_owned());
        }
        Some(id)
    }

    fn instrument(&mut self, doc: &Value) -> Option<Instrument> {
        let map = self.object(doc, "$", TOP_KEYS)?;
        match map.get("format") {
            Some(Value::String(f)) if f == INSTRUMENT_FORMAT => {}
            Some(other) => self.fault("$.format", format!("expected \"{INSTRUMENT_FORMAT}\", found {other}")),
            None => self.fault("$", format!("missing field `format` (\"{INSTRUMENT_FORMAT}\")")),
        }
        let mut ids = BTreeMap::new();
        let id = self.string(map, "id", "$");
        if let Some(id) = &id {
            if !is_valid_id(id) {
                self.fault("$.id", format!("`{id}` is not a valid instrument id (lowercase letters, digits and `-`)"));
            }
        }
        let version = match self.required(map, "version", "$") {
            Some(v) => match v.as_u64().filter(|n| (1..=u32::MAX as u64).contains(n)) {
                Some(n) => Some(n as u32),
                None => {
                    self.fault("$.version", format!("expected a whole number from 1, found {v}"));
                    None
                }
            },
            None => None,
        };
        let title = self.string(map, "title", "$");
        let regime = self.string(map, "regime", "$");
        if let Some(year) = map.get("year") {
            if year.as_u64().is_none() {
                self.fault("$.year", format!("expected a year, found {year}"));
            }
        }
        let sources = self.strings(map, "sources", "$");
        let choices = self.strings(map, "choices", "$");
        let scale = self.scale(map);
        let respondents = self.respondents(map);
        let dimensions = self.dimensions(map, &mut ids, &respondents);
        let rollup = self.rollup(map);
        let deductions = self.deductions(map, &mut ids);
        let bands = self.bands(map, scale.as_ref());

        let index = dimensions
            .iter()
            .enumerate()
            .flat_map(|(d, dim)| {
                dim.variables.iter().enumerate().flat_map(move |(v, var)| {
                    var.indicators.iter().enumerate().map(move |(i, ind)| (ind.id.clone(), (d, v, i)))
                })
            })
            .collect();
        Some(Instrument {
            reference: InstrumentRef { id: id?, version: version? },
            title: title?,
            regime: regime?,
            sources,
            choices,
            scale: scale?,
            dimensions,
            respondents,
            rollup: rollup?,
            deductions,
            bands,
            digest: String::new(),
            document: Value::Null,
            index,
        })
    }

    fn strings(&mut self, map: &Map<String, Value>, key: &str, path: &str) -> Vec<String> {
        let items = self.array(map, key, path, false);
        items.iter().enumerate().filter_map(|(i, v)| self.string_value(v, &format!("{path}.{key}[{i}]"))).collect()
    }

    fn scale(&mut self, map: &Map<String, Value>) -> Option<ResultScale> {
        let value = self.required(map, "scale", "$")?;
        let m = self.object(value, "$.scale", &["min", "max"])?;
        let min = self.exact(m, "min", "$.scale");
        let max = self.exact(m, "max", "$.scale");
        let (min, max) = (min?, max?);
        if min >= max {
            self.fault("$.scale", format!("min ({min}) must be below max ({max})"));
            return None;
        }
        Some(ResultScale { min, max })
    }

    /// Reads the `weight` of each item of a sibling group and turns them into shares.
    fn shares(
        &mut self,
        items: &[(String, Option<&Value>, bool)],
        group_path: &str,
        what: &str,
    ) -> Vec<(Exact, Option<Exact>)> {
        // items: (path, weight value, scored?)
        let scored: Vec<usize> = (0..items.len()).filter(|&i| items[i].2).collect();
        let with_weight = scored.iter().filter(|&&i| items[i].1.is_some()).count();
        let mut out = vec![(Exact::zero(), None); items.len()];
        for (path, weight, is_scored) in items {
            if !is_scored && weight.is_some() {
                self.fault(&format!("{path}.weight"), "free-text indicators are never scored: remove the weight");
            }
        }
        if scored.is_empty() {
            self.fault(group_path, format!("has no scored {what}"));
            return out;
        }
        if with_weight == 0 {
            let share = Exact::ratio(1, scored.len() as i64);
            for &i in &scored {
                out[i] = (share.clone(), None);
            }
            return out;
        }
        if with_weight != scored.len() {
            self.fault(group_path, format!("either every {what} has a weight or none does (then they share equally); {with_weight} of {} have one", scored.len()));
            return out;
        }
        let mut weights = Vec::new();
        for &i in &scored {
            let (path, weight, _) = &items[i];
            let Some(w) = weight.and_then(|w| self.exact_value(w, &format!("{path}.weight"))) else {
                return out;
            };
            if w.is_negative() || w.is_zero() {
                self.fault(&format!("{path}.weight"), format!("weight must be above zero, found {w}"));
                return out;
            }
            weights.push((i, w));
        }
        let total: Exact = weights.iter().map(|(_, w)| w.clone()).sum();
        if total != Exact::one() && total != Exact::from_int(100) {
            self.fault(group_path, format!("the weights of these {what} add up to {total}; they must add up to exactly 1 or 100 (write fractions such as 1/9 for exact thirds and ninths)"));
            return out;
        }
        for (i, w) in weights {
            let share = w.checked_div(&total).expect("total is 1 or 100");
            out[i] = (share, Some(w));
        }
        out
    }

    fn dimensions(
        &mut self,
        map: &Map<String, Value>,
        ids: &mut BTreeMap<String, String>,
        respondents: &[RespondentRule],
    ) -> Vec<Dimension> {
        let items = self.array(map, "dimensions", "$", true);
        let weights: Vec<_> =
            items.iter().enumerate().map(|(i, v)| (format!("$.dimensions[{i}]"), v.get("weight"), true)).collect();
        let shares = self.shares(&weights, "$.dimensions", "dimensions");
        let mut out = Vec::new();
        for (i, value) in items.iter().enumerate() {
            let path = format!("$.dimensions[{i}]");
            let Some(m) = self.object(value, &path, &["id", "title", "weight", "variables", "description"]) else {
                continue;
            };
            let id = self.id(m, &path, ids);
            let title = self.string(m, "title", &path);
            let variables = self.variables(m, &path, ids, respondents);
            if let (Some(id), Some(title)) = (id, title) {
                let (share, weight_written) = shares[i].clone();
                out.push(Dimension { id, title, share, weight_written, variables });
            }
        }
        out
    }

    fn variables(
        &mut self,
        map: &Map<String, Value>,
        parent: &str,
        ids: &mut BTreeMap<String, String>,
        respondents: &[RespondentRule],
    ) -> Vec<Variable> {
        let items = self.array(map, "variables", parent, true);
        let weights: Vec<_> = items
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("{parent}.variables[{i}]"), v.get("weight"), true))
            .collect();
        let shares = self.shares(&weights, &format!("{parent}.variables"), "variables");
        let mut out = Vec::new();
        for (i, value) in items.iter().enumerate() {
            let path = format!("{parent}.variables[{i}]");
            let Some(m) = self.object(value, &path, &["id", "title", "weight", "indicators", "description"]) else {
                continue;
            };
            let id = self.id(m, &path, ids);
            let title = self.string(m, "title", &path);
            let indicators = self.indicators(m, &path, ids, respondents);
            if let (Some(id), Some(title)) = (id, title) {
                let (share, weight_written) = shares[i].clone();
                out.push(Variable { id, title, share, weight_written, indicators });
            }
        }
        out
    }

    fn indicators(
        &mut self,
        map: &Map<String, Value>,
        parent: &str,
        ids: &mut BTreeMap<String, String>,
        respondents: &[RespondentRule],
    ) -> Vec<Indicator> {
        let items = self.array(map, "indicators", parent, true);
        let weights: Vec<_> = items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let is_text = v.get("answer").and_then(|a| a.get("kind")).and_then(Value::as_str) == Some("text");
                (format!("{parent}.indicators[{i}]"), v.get("weight"), !is_text)
            })
            .collect();
        let shares = self.shares(&weights, &format!("{parent}.indicators"), "indicators");
        let mut out = Vec::new();
        for (i, value) in items.iter().enumerate() {
            let path = format!("{parent}.indicators[{i}]");
            let Some(m) = self.object(
                value,
                &path,
                &[
                    "id",
                    "title",
                    "weight",
                    "answer",
                    "na_allowed",
                    "source",
                    "evidence_required",
                    "level",
                    "description",
                ],
            ) else {
                continue;
            };
            let id = self.id(m, &path, ids);
            let title = self.string(m, "title", &path);
            let answer = self.required(m, "answer", &path).and_then(|a| self.answer_kind(a, &format!("{path}.answer")));
            let na_allowed = self.bool_or(m, "na_allowed", &path, false);
            let evidence_required = self.bool_or(m, "evidence_required", &path, false);
            let source = self.enum_field(m, "source", &path, &Source::ALL.map(|s| (s.name(), s)));
            let level = self.enum_field(
                m,
                "level",
                &path,
                &[("product", Level::Product), ("unit", Level::Unit), ("institution", Level::Institution)],
            );
            if let (Some(source), Some(level)) = (source, level) {
                if let Some(kind) = source.respondent_kind() {
                    match respondents.iter().find(|r| r.kind == kind) {
                        None => self.fault(&format!("{path}.source"), format!("source `{}` needs a `{}` entry in `respondents`", source.name(), kind.name())),
                        Some(rule) if rule.level != level => self.fault(&format!("{path}.level"), format!("answered by `{}` respondents, who are counted per {}, but the indicator is at level `{}`", kind.name(), rule.level.name(), level.name())),
                        Some(_) => {}
                    }
                }
            }
            if let (Some(id), Some(title), Some(answer), Some(source), Some(level)) = (id, title, answer, source, level)
            {
                let (share, weight_written) = shares[i].clone();
                out.push(Indicator {
                    id,
                    title,
                    share,
                    weight_written,
                    answer,
                    na_allowed,
                    source,
                    evidence_required,
                    level,
                });
            }
        }
        out
    }

    fn enum_field<T: Copy>(
        &mut self,
        map: &Map<String, Value>,
        key: &str,
        path: &str,
        options: &[(&str, T)],
    ) -> Option<T> {
        let name = self.string(map, key, path)?;
        match options.iter().find(|(n, _)| *n == name) {
            Some((_, v)) => Some(*v),
            None => {
                let names: Vec<_> = options.iter().map(|(n, _)| *n).collect();
                self.fault(
                    &format!("{path}.{key}"),
                    format!("unknown {key} `{name}` (expected one of: {})", names.join(", ")),
                );
                None
            }
        }
    }

    fn answer_kind(&mut self, value: &Value, path: &str) -> Option<AnswerKind> {
        let m = self.object(value, path, &["kind", "min", "max", "scoring", "options", "thresholds"])?;
        let kind = self.string(m, "kind", path)?;
        let forbid = |r: &mut Reader, keys: &[&str]| {
            for key in keys {
                if m.contains_key(*key) {
                    r.fault(&format!("{path}.{key}"), format!("`{key}` does not apply to answer kind `{kind}`"));
                }
            }
        };
        match kind.as_str() {
            "yes_no" => {
                forbid(self, &["min", "max", "scoring", "options", "thresholds"]);
                Some(AnswerKind::YesNo)
            }
            "text" => {
                forbid(self, &["min", "max", "scoring", "options", "thresholds"]);
                Some(AnswerKind::Text)
            }
            "scale" => {
                forbid(self, &["options", "thresholds"]);
                if !m.contains_key("min") || !m.contains_key("max") {
                    self.fault(path, "a scale needs its range: `min` and `max` (e.g. 0 and 3)");
                    return None;
                }
                let min = self.integer_value(&m["min"], &format!("{path}.min"));
                let max = self.integer_value(&m["max"], &format!("{path}.max"));
                let scoring = match m.get("scoring") {
                    None => Some(ScaleScoring::Range),
                    Some(Value::String(s)) if s == "range" => Some(ScaleScoring::Range),
                    Some(Value::String(s)) if s == "proportional" => Some(ScaleScoring::Proportional),
                    Some(other) => {
                        self.fault(
                            &format!("{path}.scoring"),
                            format!("unknown scoring {other} (expected `range` or `proportional`)"),
                        );
                        None
                    }
                };
                let (min, max, scoring) = (min?, max?, scoring?);
                if min >= max {
                    self.fault(path, format!("scale min ({min}) must be below max ({max})"));
                    return None;
                }
                if scoring == ScaleScoring::Proportional && min < 0 {
                    self.fault(
                        &format!("{path}.scoring"),
                        "proportional scoring needs a scale that starts at 0 or above",
                    );
                    return None;
                }
                Some(AnswerKind::Scale { min, max, scoring })
            }
            "choice" => {
                forbid(self, &["min", "max", "scoring", "thresholds"]);
                let items = self.array(m, "options", path, true);
                if items.len() == 1 {
                    self.fault(&format!("{path}.options"), "a choice needs at least two options");
                }
                let mut seen = BTreeSet::new();
                let mut options = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    let p = format!("{path}.options[{i}]");
                    let Some(om) = self.object(item, &p, &["id", "label", "score"]) else { continue };
                    let id = self.string(om, "id", &p);
                    let label = self.string(om, "label", &p);
                    let score = self.exact(om, "score", &p).and_then(|s| self.attainment(s, &format!("{p}.score")));
                    if let Some(id) = &id {
                        if !seen.insert(id.clone()) {
                            self.fault(&format!("{p}.id"), format!("duplicate option id `{id}`"));
                        }
                    }
                    if let (Some(id), Some(label), Some(score)) = (id, label, score) {
                        options.push(ChoiceOption { id, label, score });
                    }
                }
                (options.len() == items.len() && items.len() >= 2).then_some(AnswerKind::Choice { options })
            }
            "count" => {
                forbid(self, &["scoring", "options"]);
                let min = match m.get("min") {
                    Some(v) => self.integer_value(v, &format!("{path}.min")),
                    None => Some(0),
                };
                let max = match m.get("max") {
                    Some(v) => self.integer_value(v, &format!("{path}.max")).map(Some),
                    None => Some(None),
                };
                let thresholds = self.thresholds(m, path);
                let (min, max, thresholds) = (min?, max?, thresholds?);
                if let Some(max) = max {
                    if min >= max {
                        self.fault(path, format!("min ({min}) must be below max ({max})"));
                        return None;
                    }
                }
                if thresholds[0].min > Exact::from_int(min) {
                    self.fault(&format!("{path}.thresholds[0].min"), format!("the first threshold must start at or below the lowest allowed value ({min}), or low answers would have no score"));
                    return None;
                }
                Some(AnswerKind::Count { min, max, thresholds })
            }
            "number" => {
                forbid(self, &["scoring", "options"]);
                let min = m.get("min").map(|v| self.exact_value(v, &format!("{path}.min")));
                let max = m.get("max").map(|v| self.exact_value(v, &format!("{path}.max")));
                let thresholds = self.thresholds(m, path)?;
                let min = match min {
                    None => None,
                    Some(None) => return None,
                    Some(Some(x)) => Some(x),
                };
                let max = match max {
                    None => None,
                    Some(None) => return None,
                    Some(Some(x)) => Some(x),
                };
                match &min {
                    None => {
                        self.fault(
                            &format!("{path}.min"),
                            "a number needs a lowest allowed value `min`, so that every answer has a score",
                        );
                        return None;
                    }
                    Some(lo) if thresholds[0].min > *lo => {
                        self.fault(
                            &format!("{path}.thresholds[0].min"),
                            format!("the first threshold must start at or below min ({lo})"),
                        );
                        return None;
                    }
                    _ => {}
                }
                if let (Some(lo), Some(hi)) = (&min, &max) {
                    if lo >= hi {
                        self.fault(path, format!("min ({lo}) must be below max ({hi})"));
                        return None;
                    }
                }
                Some(AnswerKind::Number { min, max, thresholds })
            }
            other => {
                self.fault(
                    &format!("{path}.kind"),
                    format!(
                        "unknown answer kind `{other}` (expected one of: yes_no, scale, choice, count, number, text)"
                    ),
                );
                None
            }
        }
    }

    fn attainment(&mut self, score: Exact, path: &str) -> Option<Exact> {
        if score.is_negative() || score > Exact::one() {
            self.fault(path, format!("a score is a share of full marks, from 0 to 1; found {score}"));
            None
        } else {
            Some(score)
        }
    }

    fn thresholds(&mut self, m: &Map<String, Value>, path: &str) -> Option<Vec<Threshold>> {
        let items = self.array(m, "thresholds", path, true);
        let mut out: Vec<Threshold> = Vec::new();
        let mut ok = !items.is_empty();
        for (i, item) in items.iter().enumerate() {
            let p = format!("{path}.thresholds[{i}]");
            let Some(tm) = self.object(item, &p, &["min", "score"]) else {
                ok = false;
                continue;
            };
            let min = self.exact(tm, "min", &p);
            let score = self.exact(tm, "score", &p).and_then(|s| self.attainment(s, &format!("{p}.score")));
            match (min, score) {
                (Some(min), Some(score)) => {
                    if let Some(prev) = out.last() {
                        if min <= prev.min {
                            self.fault(
                                &format!("{p}.min"),
                                format!("thresholds must rise: {min} is not above {}", prev.min),
                            );
                            ok = false;
                        }
                    }
                    out.push(Threshold { min, score });
                }
                _ => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn respondents(&mut self, map: &Map<String, Value>) -> Vec<RespondentRule> {
        let items = self.array(map, "respondents", "$", false);
        let mut out: Vec<RespondentRule> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let p = format!("$.respondents[{i}]");
            let Some(m) = self.object(item, &p, &["kind", "level", "expected", "min", "description"]) else { continue };
            let kind = self.enum_field(m, "kind", &p, &RespondentKind::ALL.map(|k| (k.name(), k)));
            let level = self.enum_field(m, "level", &p, &[("unit", Level::Unit), ("institution", Level::Institution)]);
            let expected =
                self.required(m, "expected", &p).and_then(|v| self.integer_value(v, &format!("{p}.expected")));
            let min = self.required(m, "min", &p).and_then(|v| self.integer_value(v, &format!("{p}.min")));
            if let (Some(kind), Some(level), Some(expected), Some(min)) = (kind, level, expected, min) {
                if out.iter().any(|r| r.kind == kind) {
                    self.fault(&format!("{p}.kind"), format!("respondent kind `{}` is listed twice", kind.name()));
                    continue;
                }
                if min < 1 || expected < min || expected > 100_000 {
                    self.fault(&p, format!("need 1 <= min <= expected; found min {min}, expected {expected}"));
                    continue;
                }
                out.push(RespondentRule { kind, level, expected: expected as u32, min: min as u32 });
            }
        }
        out
    }

    fn rollup(&mut self, map: &Map<String, Value>) -> Option<Rollup> {
        let value = self.required(map, "rollup", "$")?;
        let m = self.object(value, "$.rollup", &["location_weights", "units", "unit_type_weights", "respondents"])?;
        let mut location_weights = BTreeMap::new();
        if let Some(lw) = m.get("location_weights") {
            let names = Location::ALL.map(|l| l.name());
            if let Some(lm) = self.object(lw, "$.rollup.location_weights", &names) {
                for (key, w) in lm {
                    let p = format!("$.rollup.location_weights.{key}");
                    if let (Some(loc), Some(w)) = (Location::from_name(key), self.exact_value(w, &p)) {
                        if w.is_negative() {
                            self.fault(&p, "a location weight cannot be negative");
                        }
                        location_weights.insert(loc, w);
                    }
                }
                if !location_weights.is_empty()
                    && Location::ALL.iter().all(|l| location_weights.get(l).is_some_and(Exact::is_zero))
                {
                    self.fault("$.rollup.location_weights", "at least one location must weigh more than zero");
                }
            }
        }
        if let Some(r) = m.get("respondents") {
            if r != "mean" {
                self.fault(
                    "$.rollup.respondents",
                    format!("unknown respondent aggregation {r} (only `mean` is defined)"),
                );
            }
        }
        let units = match self.string(m, "units", "$.rollup")?.as_str() {
            "mean" => UnitRollup::Mean,
            "product_weighted" => UnitRollup::ProductWeighted,
            "unit_type_weights" => {
                let Some(wv) = m.get("unit_type_weights") else {
                    self.fault(
                        "$.rollup",
                        "`unit_type_weights` roll-up needs a `unit_type_weights` map (unit type → weight)",
                    );
                    return None;
                };
                let Value::Object(wm) = wv else {
                    self.fault("$.rollup.unit_type_weights", format!("expected an object, found {}", kind_of(wv)));
                    return None;
                };
                if wm.is_empty() {
                    self.fault("$.rollup.unit_type_weights", "must name at least one unit type");
                }
                let mut weights = BTreeMap::new();
                for (k, w) in wm {
                    let p = format!("$.rollup.unit_type_weights.{k}");
                    if let Some(w) = self.exact_value(w, &p) {
                        if w.is_negative() || w.is_zero() {
                            self.fault(&p, "a unit-type weight must be above zero");
                        }
                        weights.insert(k.clone(), w);
                    }
                }
                UnitRollup::UnitTypeWeights(weights)
            }
            other => {
                self.fault(
                    "$.rollup.units",
                    format!("unknown roll-up `{other}` (expected mean, product_weighted or unit_type_weights)"),
                );
                return None;
            }
        };
        if !matches!(units, UnitRollup::UnitTypeWeights(_)) && m.contains_key("unit_type_weights") {
            self.fault("$.rollup.unit_type_weights", "only applies when `units` is `unit_type_weights`");
        }
        Some(Rollup { location_weights, units })
    }

    fn deductions(&mut self, map: &Map<String, Value>, ids: &mut BTreeMap<String, String>) -> Vec<DeductionRule> {
        let items = self.array(map, "deductions", "$", false);
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let p = format!("$.deductions[{i}]");
            let Some(m) = self.object(item, &p, &["id", "title", "level", "max_points", "description"]) else {
                continue;
            };
            let id = self.id(m, &p, ids);
            let title = self.string(m, "title", &p);
            let level = self.enum_field(m, "level", &p, &[("unit", Level::Unit), ("institution", Level::Institution)]);
            let max_points = self.exact(m, "max_points", &p);
            if let Some(mp) = &max_points {
                if mp.is_negative() || mp.is_zero() {
                    self.fault(&format!("{p}.max_points"), "must be above zero");
                }
            }
            if let (Some(id), Some(title), Some(level), Some(max_points)) = (id, title, level, max_points) {
                out.push(DeductionRule { id, title, level, max_points });
            }
        }
        out
    }

    fn bands(&mut self, map: &Map<String, Value>, scale: Option<&ResultScale>) -> Vec<Band> {
        let items = self.array(map, "bands", "$", true);
        let mut bands: Vec<(usize, Band)> = Vec::new();
        let mut grades = BTreeSet::new();
        for (i, item) in items.iter().enumerate() {
            let p = format!("$.bands[{i}]");
            let Some(m) = self.object(item, &p, &["grade", "label", "zone", "min", "max"]) else { continue };
            let grade = self.string(m, "grade", &p);
            let label = self.string(m, "label", &p);
            let zone = match m.get("zone") {
                None => Some(None),
                Some(_) => self
                    .enum_field(m, "zone", &p, &[("green", Zone::Green), ("yellow", Zone::Yellow), ("red", Zone::Red)])
                    .map(Some),
            };
            let min = self.band_edge(m, "min", &p);
            let max = self.band_edge(m, "max", &p);
            if let Some(g) = &grade {
                if !grades.insert(g.clone()) {
                    self.fault(&format!("{p}.grade"), format!("grade `{g}` is listed twice"));
                }
            }
            if let (Some(grade), Some(label), Some(zone), Some(min), Some(max)) = (grade, label, zone, min, max) {
                if min > max {
                    self.fault(&p, format!("band {grade} runs from {min} down to {max}: min must not exceed max"));
                    continue;
                }
                bands.push((i, Band { grade, label, zone, min, max }));
            }
        }
        if bands.len() != items.len() || bands.is_empty() {
            return bands.into_iter().map(|(_, b)| b).collect();
        }
        bands.sort_by_key(|b| b.1.min);
        for pair in bands.windows(2) {
            let (lo, hi) = (&pair[0].1, &pair[1].1);
            let next = lo.max.hundredths() + 1;
            if hi.min.hundredths() > next {
                self.fault(
                    &format!("$.bands[{}]", pair[1].0),
                    format!(
                        "gap between band {} (up to {}) and band {} (from {}): scores in between would have no grade",
                        lo.grade, lo.max, hi.grade, hi.min
                    ),
                );
            } else if hi.min.hundredths() < next {
                self.fault(
                    &format!("$.bands[{}]", pair[1].0),
                    format!("band {} (from {}) overlaps band {} (up to {})", hi.grade, hi.min, lo.grade, lo.max),
                );
            }
        }
        if let Some(scale) = scale {
            let (lowest, highest) = (&bands[0], &bands[bands.len() - 1]);
            if lowest.1.min.to_exact() != scale.min {
                self.fault(
                    &format!("$.bands[{}].min", lowest.0),
                    format!(
                        "the lowest band must start at the scale minimum ({}), found {}",
                        scale.min.publish(),
                        lowest.1.min
                    ),
                );
            }
            if highest.1.max.to_exact() != scale.max {
                self.fault(
                    &format!("$.bands[{}].max", highest.0),
                    format!(
                        "the highest band must end at the scale maximum ({}), found {}",
                        scale.max.publish(),
                        highest.1.max
                    ),
                );
            }
        }
        bands.reverse();
        bands.into_iter().map(|(_, b)| b).collect()
    }

    fn band_edge(&mut self, m: &Map<String, Value>, key: &str, path: &str) -> Option<Published> {
        let value = self.required(m, key, path)?;
        let p = format!("{path}.{key}");
        let exact = self.exact_value(value, &p)?;
        match exact.decimal_places() {
            Some(places) if places <= 2 => Some(exact.publish()),
            _ => {
                self.fault(&p, format!("band edges have at most two decimals, found {exact}"));
                None
            }
        }
    }
}

fn is_valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && id.len() <= 64
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "true/false",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
