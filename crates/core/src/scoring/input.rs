//! What scoring reads: the organisation tree with its answers, questionnaires and
//! deductions. The same types are the `sidak-season/1` file format (docs/scoring.md).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::instrument::{Location, RespondentKind};
use crate::num::Exact;

/// The format tag of a season file.
pub const SEASON_FORMAT: &str = "sidak-season/1";

/// A season file: institutions with everything recorded about them.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeasonInput {
    /// Always `sidak-season/1`.
    pub format: String,
    /// A name for the season (`2023`).
    #[serde(default)]
    pub season: Option<String>,
    /// The instrument the season was recorded with, when the file says.
    #[serde(default)]
    pub instrument: Option<String>,
    /// The institutions.
    pub institutions: Vec<InstitutionInput>,
}

/// An institution (ministry, agency, province, city or regency) and its units.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstitutionInput {
    /// Stable id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Institution type: `kementerian`, `lembaga`, `provinsi`, `kota`, `kabupaten`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The region (province office) it belongs to.
    #[serde(default)]
    pub region: Option<String>,
    /// Answers to institution-level indicators.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub answers: BTreeMap<String, AnswerInput>,
    /// Institution-level questionnaires (e.g. service users per Pemda).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub respondents: Vec<RespondentInput>,
    /// Institution-level deductions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deductions: Vec<DeductionInput>,
    /// The units assessed.
    pub units: Vec<UnitInput>,
}

/// A service unit (Disdukcapil, DPMPTSP, a Puskesmas, …).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitInput {
    /// Stable id, unique in its institution.
    pub id: String,
    /// Name.
    pub name: String,
    /// Unit type (`disdukcapil`, `dpmptsp`, `dinkes`, `puskesmas`, …).
    #[serde(rename = "type")]
    pub unit_type: String,
    /// Answers to unit-level indicators.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub answers: BTreeMap<String, AnswerInput>,
    /// Unit-level questionnaires (officials, complaint officers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub respondents: Vec<RespondentInput>,
    /// Unit-level deductions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deductions: Vec<DeductionInput>,
    /// The service products observed.
    #[serde(default)]
    pub products: Vec<ProductInput>,
}

/// A service product observed in a unit (a KTP, a building permit, …).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductInput {
    /// Stable id, unique in its institution.
    pub id: String,
    /// Name.
    pub name: String,
    /// Where the service was delivered when observed.
    pub location: Location,
    /// Answers to product-level indicators.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub answers: BTreeMap<String, AnswerInput>,
}

/// One respondent's questionnaire.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RespondentInput {
    /// Stable id (never the person's name).
    pub id: String,
    /// Who answered.
    pub kind: RespondentKind,
    /// Answers keyed by indicator id.
    #[serde(default)]
    pub answers: BTreeMap<String, AnswerInput>,
}

/// A deduction applied to a unit or the institution.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeductionInput {
    /// The instrument's deduction id.
    pub id: String,
    /// Points cut.
    pub points: Exact,
    /// Why, in words (required).
    pub reason: String,
}

/// A recorded answer: a value (or "not applicable") and the evidence it cites.
///
/// In JSON it is the bare value (`true`, `2`, `"opt-a"`), `{"na": true}`, or
/// `{"value": …, "evidence": ["<sha256>", …], "field_value": …}` (both optional).
#[derive(Clone, Debug, PartialEq)]
pub struct AnswerInput {
    /// The value scored (`{"na": true}` for not applicable): as recorded, or as a
    /// supervisor corrected it.
    pub value: Value,
    /// SHA-256 digests of the evidence files it cites.
    pub evidence: Vec<String>,
    /// When a correction replaced the recorded value: the value recorded in the
    /// field (`null` if there was none). Shown beside the answer in results, never
    /// scored.
    pub field_value: Option<Value>,
}

impl AnswerInput {
    /// An answer without evidence.
    pub fn new(value: Value) -> AnswerInput {
        AnswerInput { value, evidence: Vec::new(), field_value: None }
    }

    /// An answer citing evidence.
    pub fn with_evidence(value: Value, evidence: Vec<String>) -> AnswerInput {
        AnswerInput { value, evidence, field_value: None }
    }

    /// The same answer, noting that `value` corrects `field_value`, the value
    /// recorded in the field.
    pub fn correcting(self, field_value: Value) -> AnswerInput {
        AnswerInput { field_value: Some(field_value), ..self }
    }
}

impl Serialize for AnswerInput {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.evidence.is_empty() && self.field_value.is_none() {
            self.value.serialize(s)
        } else {
            #[derive(Serialize)]
            struct Full<'a> {
                value: &'a Value,
                #[serde(skip_serializing_if = "<[String]>::is_empty")]
                evidence: &'a [String],
                #[serde(skip_serializing_if = "Option::is_none")]
                field_value: Option<&'a Value>,
            }
            Full { value: &self.value, evidence: &self.evidence, field_value: self.field_value.as_ref() }.serialize(s)
        }
    }
}

/// The members of an answer's full form.
const FULL_FORM: [&str; 3] = ["value", "evidence", "field_value"];

impl<'de> Deserialize<'de> for AnswerInput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<AnswerInput, D::Error> {
        let value = Value::deserialize(d)?;
        match value {
            Value::Object(mut map) if FULL_FORM.iter().any(|k| map.contains_key(*k)) => {
                for key in map.keys() {
                    if !FULL_FORM.contains(&key.as_str()) {
                        return Err(serde::de::Error::custom(format!(
                            "unknown field `{key}` in an answer (expected `value`, `evidence` and `field_value`)"
                        )));
                    }
                }
                let value = map.remove("value").ok_or_else(|| {
                    serde::de::Error::custom("an answer with `evidence` or `field_value` needs a `value`")
                })?;
                let evidence = match map.remove("evidence") {
                    None => Vec::new(),
                    Some(e) => serde_json::from_value(e).map_err(|e| {
                        serde::de::Error::custom(format!("`evidence` must be a list of SHA-256 digests: {e}"))
                    })?,
                };
                Ok(AnswerInput { value, evidence, field_value: map.remove("field_value") })
            }
            other => Ok(AnswerInput::new(other)),
        }
    }
}
