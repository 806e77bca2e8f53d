//! The result tree scoring produces. Serialises to the same bytes on every machine.

use serde::Serialize;
use serde_json::Value;

use crate::instrument::{InstrumentRef, Location, Zone};
use crate::num::{Exact, Published};

/// The format tag of a results document.
pub const RESULTS_FORMAT: &str = "sidak-results/1";

/// Whether a result could be computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Every required answer is there: the score is official.
    Complete,
    /// Something required is missing: no score, no grade; see `missing`.
    Incomplete,
    /// Everything below was "not applicable": the node drops out of its parent.
    NotApplicable,
}

/// Results of a whole season.
#[derive(Clone, Debug, Serialize)]
pub struct SeasonResult {
    /// Always `sidak-results/1`.
    pub format: &'static str,
    /// The instrument used.
    pub instrument: InstrumentRef,
    /// Its digest.
    pub instrument_digest: String,
    /// One result per institution, ordered by id.
    pub institutions: Vec<InstitutionResult>,
}

/// A grade, its label and zone, from the published score.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Grading {
    /// The grade (`A`).
    pub grade: String,
    /// Its label (`Kualitas Tertinggi`).
    pub label: String,
    /// Its zone, where the instrument has zones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<Zone>,
}

/// A deduction as applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AppliedDeduction {
    /// The instrument's deduction id.
    pub id: String,
    /// Points cut.
    pub points: Exact,
    /// Why.
    pub reason: String,
}

/// What a scored node says about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// Complete, incomplete or not applicable.
    pub status: Status,
    /// The published score (complete results only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<Published>,
    /// Grade, label and zone (complete results of banded nodes only).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub grading: Option<Grading>,
    /// For incomplete results: the score over what has been answered so far, never
    /// official and never graded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provisional: Option<Published>,
}

/// An institution's result.
#[derive(Clone, Debug, Serialize)]
pub struct InstitutionResult {
    /// Institution id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Institution type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Region.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Status, score, grade.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// The score before deductions, when there were any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before_deductions: Option<Published>,
    /// Deductions applied to the institution.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deductions: Vec<AppliedDeduction>,
    /// The roll-up rule that made this result from its units.
    pub rule: &'static str,
    /// Everything missing, as readable paths.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
    /// Breakdown by dimension, rolled up over units with the same rule.
    pub dimensions: Vec<NodeResult>,
    /// The units, ordered by id.
    pub units: Vec<UnitResult>,
}

/// A unit's result.
#[derive(Clone, Debug, Serialize)]
pub struct UnitResult {
    /// Unit id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Unit type.
    #[serde(rename = "type")]
    pub unit_type: String,
    /// The weight this unit had in its institution's roll-up.
    pub weight: Exact,
    /// Status, score, grade.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// The score before deductions, when there were any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before_deductions: Option<Published>,
    /// Deductions applied to the unit.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deductions: Vec<AppliedDeduction>,
    /// Everything missing in this unit.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
    /// The full tree: dimensions → variables → indicators.
    pub dimensions: Vec<NodeResult>,
    /// Per-product breakdown over product-level indicators.
    pub products: Vec<ProductResult>,
}

/// A service product's result over the product-level indicators.
#[derive(Clone, Debug, Serialize)]
pub struct ProductResult {
    /// Product id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Where it was observed.
    pub location: Location,
    /// The weight of that location in the products → unit roll-up.
    pub weight: Exact,
    /// Status and score (products are not graded).
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Everything missing for this product.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
    /// Dimensions → variables → indicators, product-level ones only.
    pub dimensions: Vec<NodeResult>,
}

/// A dimension, variable or indicator in a result tree.
#[derive(Clone, Debug, Serialize)]
pub struct NodeResult {
    /// The instrument id of the node.
    pub id: String,
    /// Its share of its parent.
    pub weight: Exact,
    /// Status and score (nodes below a unit are not graded).
    #[serde(flatten)]
    pub outcome: Outcome,
    /// For directly answered indicators: the answer used (questionnaire indicators
    /// report only how many respondents answered).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<Value>,
    /// For a directly answered indicator whose answer a supervisor corrected: the
    /// value recorded in the field (`null` if the field had none). `answer` is then
    /// the corrected value, the one scored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field_value: Option<Value>,
    /// For questionnaire indicators: how many respondents answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub respondents: Option<u32>,
    /// Children (variables of a dimension, indicators of a variable).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<NodeResult>,
}
