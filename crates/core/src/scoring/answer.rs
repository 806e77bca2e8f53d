//! Reading one answer against its indicator, and what it attains.

use serde_json::Value;

use crate::instrument::{AnswerKind, Indicator, ScaleScoring};
use crate::num::{exact_from_json, Exact};

/// An answer read against its indicator's kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnswerValue {
    /// Not applicable (only where the indicator allows it).
    NotApplicable,
    /// Yes or no.
    YesNo(bool),
    /// A point on an ordinal scale.
    Level(i64),
    /// The id of a choice option.
    Choice(String),
    /// A count or number.
    Quantity(Exact),
    /// Free text.
    Text(String),
}

/// Why an answer does not fit its indicator.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// The JSON type is wrong for the indicator's kind.
    #[error("indicator `{indicator}` takes {expected}, found {found}")]
    WrongKind {
        /// The indicator.
        indicator: String,
        /// What it takes.
        expected: String,
        /// What was given.
        found: String,
    },
    /// The value is outside the allowed range.
    #[error("indicator `{indicator}` takes {range}, found {found}")]
    OutOfRange {
        /// The indicator.
        indicator: String,
        /// The allowed range.
        range: String,
        /// What was given.
        found: String,
    },
    /// Not an option of a choice.
    #[error("indicator `{indicator}` has no option `{found}` (options: {options})")]
    UnknownOption {
        /// The indicator.
        indicator: String,
        /// What was given.
        found: String,
        /// The options.
        options: String,
    },
    /// "Not applicable" where the indicator does not allow it.
    #[error("indicator `{indicator}` does not allow \"not applicable\"")]
    NotApplicableForbidden {
        /// The indicator.
        indicator: String,
    },
}

/// Reads `value` as an answer to `indicator`.
///
/// `{"na": true}` is "not applicable"; otherwise the JSON type must fit the kind:
/// `true`/`false` for yes/no, a whole number for a scale or count, an option id for a
/// choice, a number (or decimal string) for a number, a string for text.
pub fn parse_answer(indicator: &Indicator, value: &Value) -> Result<AnswerValue, AnswerError> {
    if is_na(value) {
        return if indicator.na_allowed {
            Ok(AnswerValue::NotApplicable)
        } else {
            Err(AnswerError::NotApplicableForbidden { indicator: indicator.id.clone() })
        };
    }
    let wrong = |expected: &str| AnswerError::WrongKind {
        indicator: indicator.id.clone(),
        expected: expected.to_owned(),
        found: describe(value),
    };
    let out_of_range =
        |range: String| AnswerError::OutOfRange { indicator: indicator.id.clone(), range, found: value.to_string() };
    match &indicator.answer {
        AnswerKind::YesNo => value.as_bool().map(AnswerValue::YesNo).ok_or_else(|| wrong("true or false")),
        AnswerKind::Scale { min, max, .. } => {
            let expected = || format!("a whole number from {min} to {max}");
            let n = value.as_i64().filter(|_| !value.is_f64()).ok_or_else(|| wrong(&expected()))?;
            if n < *min || n > *max {
                return Err(out_of_range(expected()));
            }
            Ok(AnswerValue::Level(n))
        }
        AnswerKind::Choice { options } => {
            let names = || options.iter().map(|o| o.id.as_str()).collect::<Vec<_>>().join(", ");
            let id = value.as_str().ok_or_else(|| wrong(&format!("one of the option ids ({})", names())))?;
            if options.iter().any(|o| o.id == id) {
                Ok(AnswerValue::Choice(id.to_owned()))
            } else {
                Err(AnswerError::UnknownOption {
                    indicator: indicator.id.clone(),
                    found: id.to_owned(),
                    options: names(),
                })
            }
        }
        AnswerKind::Count { min, max, .. } => {
            let range = || match max {
                Some(max) => format!("a whole number from {min} to {max}"),
                None => format!("a whole number from {min}"),
            };
            let n = value.as_i64().filter(|_| !value.is_f64()).ok_or_else(|| wrong(&range()))?;
            if n < *min || max.is_some_and(|m| n > m) {
                return Err(out_of_range(range()));
            }
            Ok(AnswerValue::Quantity(Exact::from_int(n)))
        }
        AnswerKind::Number { min, max, .. } => {
            let x = match value {
                Value::Number(_) | Value::String(_) => exact_from_json(value).map_err(|_| wrong("a number"))?,
                _ => return Err(wrong("a number")),
            };
            let below = min.as_ref().is_some_and(|m| x < *m);
            let above = max.as_ref().is_some_and(|m| x > *m);
            if below || above {
                let range = match (min, max) {
                    (Some(lo), Some(hi)) => format!("a number from {lo} to {hi}"),
                    (Some(lo), None) => format!("a number from {lo}"),
                    (None, Some(hi)) => format!("a number up to {hi}"),
                    (None, None) => "a number".to_owned(),
                };
                return Err(out_of_range(range));
            }
            Ok(AnswerValue::Quantity(x))
        }
        AnswerKind::Text => value.as_str().map(|s| AnswerValue::Text(s.to_owned())).ok_or_else(|| wrong("text")),
    }
}

/// True for the "not applicable" answer, `{"na": true}`.
pub(crate) fn is_na(value: &Value) -> bool {
    matches!(value, Value::Object(m) if m.len() == 1 && m.get("na") == Some(&Value::Bool(true)))
}

/// What an answer attains, 0–1; `None` for N/A and free text.
pub(crate) fn attainment(indicator: &Indicator, answer: &AnswerValue) -> Option<Exact> {
    match (&indicator.answer, answer) {
        (_, AnswerValue::NotApplicable) | (_, AnswerValue::Text(_)) => None,
        (AnswerKind::YesNo, AnswerValue::YesNo(b)) => Some(if *b { Exact::one() } else { Exact::zero() }),
        (AnswerKind::Scale { min, max, scoring }, AnswerValue::Level(v)) => Some(match scoring {
            ScaleScoring::Range => Exact::ratio(v - min, max - min),
            ScaleScoring::Proportional => Exact::ratio(*v, *max),
        }),
        (AnswerKind::Choice { options }, AnswerValue::Choice(id)) => {
            options.iter().find(|o| &o.id == id).map(|o| o.score.clone())
        }
        (AnswerKind::Count { thresholds, .. } | AnswerKind::Number { thresholds, .. }, AnswerValue::Quantity(x)) => {
            thresholds.iter().rev().find(|t| t.min <= *x).map(|t| t.score.clone())
        }
        _ => None,
    }
}

fn describe(value: &Value) -> String {
    let text = value.to_string();
    let short: String = text.chars().take(40).collect();
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "true/false",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    };
    format!("{kind} ({short})")
}
