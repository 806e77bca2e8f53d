//! The typed instrument, as it stands after loading has checked every rule.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::num::{Exact, Published};

/// The format tag every instrument document carries.
pub const INSTRUMENT_FORMAT: &str = "sidak-instrument/1";

/// An instrument's identity: its id and version, e.g. `penilaian-2023@1`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct InstrumentRef {
    /// The instrument id (`penilaian-2023`).
    pub id: String,
    /// The version of that instrument (1, 2, …).
    pub version: u32,
}

impl fmt::Display for InstrumentRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id, self.version)
    }
}

/// A loaded, valid instrument.
#[derive(Clone, Debug)]
pub struct Instrument {
    /// Identity.
    pub reference: InstrumentRef,
    /// Human title.
    pub title: String,
    /// The assessment regime it belongs to (`kepatuhan`, `penilaian-2022`, …).
    pub regime: String,
    /// Where the methodology comes from.
    pub sources: Vec<String>,
    /// Choices made where the public record is silent.
    pub choices: Vec<String>,
    /// The range of every score this instrument produces.
    pub scale: ResultScale,
    /// The tree of dimensions → variables → indicators.
    pub dimensions: Vec<Dimension>,
    /// Respondent questionnaires and how many of each are expected.
    pub respondents: Vec<RespondentRule>,
    /// How results roll up.
    pub rollup: Rollup,
    /// Deductions the instrument allows.
    pub deductions: Vec<DeductionRule>,
    /// Grade bands, highest first.
    pub bands: Vec<Band>,
    /// SHA-256 (hex) of the canonical JSON of the document: two tiers holding the same
    /// id and version hold the same instrument exactly when the digests agree.
    pub digest: String,
    /// The document as loaded.
    pub document: serde_json::Value,
    /// Each indicator's place in `dimensions`, by id. Looked up for every answer a
    /// recompute reads and checks: a hash probe with Fx (ids are the instrument's own,
    /// not an attacker's, so a keyed hash buys nothing) costs a fraction of a tree
    /// walk's string compares over ids that share long prefixes.
    pub(crate) index: rustc_hash::FxHashMap<String, (usize, usize, usize)>,
}

/// The range of scores, e.g. 0–100.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResultScale {
    /// Lowest score.
    pub min: Exact,
    /// Highest score.
    pub max: Exact,
}

/// A dimension of the instrument.
#[derive(Clone, Debug)]
pub struct Dimension {
    /// Id, unique in the instrument.
    pub id: String,
    /// Human title.
    pub title: String,
    /// Share of its parent (the shares of siblings add up to one).
    pub share: Exact,
    /// The weight as written (or `None` when siblings share equally).
    pub weight_written: Option<Exact>,
    /// Variables.
    pub variables: Vec<Variable>,
}

/// A variable inside a dimension.
#[derive(Clone, Debug)]
pub struct Variable {
    /// Id, unique in the instrument.
    pub id: String,
    /// Human title.
    pub title: String,
    /// Share of its dimension.
    pub share: Exact,
    /// The weight as written.
    pub weight_written: Option<Exact>,
    /// Indicators.
    pub indicators: Vec<Indicator>,
}

/// One question of the instrument.
#[derive(Clone, Debug)]
pub struct Indicator {
    /// Id, unique in the instrument; answers are keyed by it.
    pub id: String,
    /// Human title.
    pub title: String,
    /// Share of its variable; zero for free text, which is never scored.
    pub share: Exact,
    /// The weight as written.
    pub weight_written: Option<Exact>,
    /// What kind of answer it takes and how that answer scores.
    pub answer: AnswerKind,
    /// Whether "not applicable" is an allowed answer.
    pub na_allowed: bool,
    /// Where the answer comes from.
    pub source: Source,
    /// Whether an answer must cite at least one evidence file.
    pub evidence_required: bool,
    /// The level it is answered at.
    pub level: Level,
}

impl Indicator {
    /// True for indicators that contribute to the score (all but free text).
    pub fn is_scored(&self) -> bool {
        !matches!(self.answer, AnswerKind::Text)
    }
}

/// How an ordinal scale maps to attainment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScaleScoring {
    /// `(v - min) / (max - min)`: the bottom of the scale is nothing.
    Range,
    /// `v / max`: the scale is a fraction of its top (needs `min >= 0`).
    Proportional,
}

/// The kind of answer an indicator takes.
#[derive(Clone, Debug)]
pub enum AnswerKind {
    /// Yes (full) or no (nothing).
    YesNo,
    /// An integer on an ordinal scale.
    Scale {
        /// Lowest allowed value.
        min: i64,
        /// Highest allowed value.
        max: i64,
        /// How a value maps to attainment.
        scoring: ScaleScoring,
    },
    /// One of several options, each with its own attainment.
    Choice {
        /// The options.
        options: Vec<ChoiceOption>,
    },
    /// A whole number scored by thresholds.
    Count {
        /// Lowest allowed value.
        min: i64,
        /// Highest allowed value, if any.
        max: Option<i64>,
        /// Ascending thresholds.
        thresholds: Vec<Threshold>,
    },
    /// A decimal number scored by thresholds.
    Number {
        /// Lowest allowed value.
        min: Option<Exact>,
        /// Highest allowed value.
        max: Option<Exact>,
        /// Ascending thresholds.
        thresholds: Vec<Threshold>,
    },
    /// Free text: recorded, never scored.
    Text,
}

impl AnswerKind {
    /// The name used in instrument documents.
    pub fn name(&self) -> &'static str {
        match self {
            AnswerKind::YesNo => "yes_no",
            AnswerKind::Scale { .. } => "scale",
            AnswerKind::Choice { .. } => "choice",
            AnswerKind::Count { .. } => "count",
            AnswerKind::Number { .. } => "number",
            AnswerKind::Text => "text",
        }
    }
}

/// An option of a choice indicator.
#[derive(Clone, Debug)]
pub struct ChoiceOption {
    /// Id, the answer value.
    pub id: String,
    /// Human label.
    pub label: String,
    /// Attainment, 0–1.
    pub score: Exact,
}

/// From `min` upwards (until the next threshold) a number attains `score`.
#[derive(Clone, Debug)]
pub struct Threshold {
    /// Inclusive lower edge.
    pub min: Exact,
    /// Attainment, 0–1.
    pub score: Exact,
}

/// Where an answer comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The assessor's own observation.
    Observation,
    /// A document checked by the assessor.
    DocumentCheck,
    /// Interviews with officials (respondent kind `official`).
    OfficialInterview,
    /// Interviews with complaint officers (respondent kind `complaint_officer`).
    ComplaintOfficerInterview,
    /// Questionnaires of service users (respondent kind `service_user`).
    ServiceUserQuestionnaire,
}

impl Source {
    /// All sources, in document order.
    pub const ALL: [Source; 5] = [
        Source::Observation,
        Source::DocumentCheck,
        Source::OfficialInterview,
        Source::ComplaintOfficerInterview,
        Source::ServiceUserQuestionnaire,
    ];

    /// The respondent kind whose questionnaires answer this source, if any.
    pub fn respondent_kind(self) -> Option<RespondentKind> {
        match self {
            Source::Observation | Source::DocumentCheck => None,
            Source::OfficialInterview => Some(RespondentKind::Official),
            Source::ComplaintOfficerInterview => Some(RespondentKind::ComplaintOfficer),
            Source::ServiceUserQuestionnaire => Some(RespondentKind::ServiceUser),
        }
    }

    /// The name used in documents.
    pub fn name(self) -> &'static str {
        match self {
            Source::Observation => "observation",
            Source::DocumentCheck => "document_check",
            Source::OfficialInterview => "official_interview",
            Source::ComplaintOfficerInterview => "complaint_officer_interview",
            Source::ServiceUserQuestionnaire => "service_user_questionnaire",
        }
    }
}

/// The level an indicator is answered at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Once per service product.
    Product,
    /// Once per unit.
    Unit,
    /// Once per institution.
    Institution,
}

impl Level {
    /// The name used in documents.
    pub fn name(self) -> &'static str {
        match self {
            Level::Product => "product",
            Level::Unit => "unit",
            Level::Institution => "institution",
        }
    }
}

/// Who answers a respondent questionnaire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RespondentKind {
    /// An official of the unit (head, section head, front-line officer).
    Official,
    /// An officer handling complaints.
    ComplaintOfficer,
    /// A member of the public who used the service.
    ServiceUser,
}

impl RespondentKind {
    /// All kinds.
    pub const ALL: [RespondentKind; 3] =
        [RespondentKind::Official, RespondentKind::ComplaintOfficer, RespondentKind::ServiceUser];

    /// The name used in documents.
    pub fn name(self) -> &'static str {
        match self {
            RespondentKind::Official => "official",
            RespondentKind::ComplaintOfficer => "complaint_officer",
            RespondentKind::ServiceUser => "service_user",
        }
    }

    /// Reads a name.
    pub fn from_name(name: &str) -> Option<RespondentKind> {
        RespondentKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// How many questionnaires of a kind a scope needs.
#[derive(Clone, Debug)]
pub struct RespondentRule {
    /// Who answers.
    pub kind: RespondentKind,
    /// The scope they are counted in (unit or institution).
    pub level: Level,
    /// How many the methodology plans.
    pub expected: u32,
    /// Fewer than this leaves the result incomplete.
    pub min: u32,
}

/// Where a service was delivered when it was observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Location {
    /// A *Mal Pelayanan Publik*.
    Mpp,
    /// The one-stop licensing office.
    Dpmptsp,
    /// The unit's own office.
    OwnOffice,
    /// Online.
    Online,
}

impl Location {
    /// All locations.
    pub const ALL: [Location; 4] = [Location::Mpp, Location::Dpmptsp, Location::OwnOffice, Location::Online];

    /// The name used in documents.
    pub fn name(self) -> &'static str {
        match self {
            Location::Mpp => "mpp",
            Location::Dpmptsp => "dpmptsp",
            Location::OwnOffice => "own_office",
            Location::Online => "online",
        }
    }

    /// Reads a name.
    pub fn from_name(name: &str) -> Option<Location> {
        Location::ALL.into_iter().find(|l| l.name() == name)
    }
}

/// Roll-up rules.
#[derive(Clone, Debug)]
pub struct Rollup {
    /// Weight of a product by where it was observed (missing locations weigh 1).
    pub location_weights: BTreeMap<Location, Exact>,
    /// Units → institution.
    pub units: UnitRollup,
}

/// How unit results make the institution's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnitRollup {
    /// The plain mean of the units.
    Mean,
    /// The mean weighted by each unit's number of products.
    ProductWeighted,
    /// Explicit weights by unit type.
    UnitTypeWeights(BTreeMap<String, Exact>),
}

impl UnitRollup {
    /// The name used in documents and recorded in every result.
    pub fn name(&self) -> &'static str {
        match self {
            UnitRollup::Mean => "mean",
            UnitRollup::ProductWeighted => "product_weighted",
            UnitRollup::UnitTypeWeights(_) => "unit_type_weights",
        }
    }
}

/// A deduction the instrument allows (e.g. corrective actions not followed up).
#[derive(Clone, Debug)]
pub struct DeductionRule {
    /// Id.
    pub id: String,
    /// Human title.
    pub title: String,
    /// Whether it cuts a unit's or the institution's score.
    pub level: Level,
    /// The most points one deduction may cut.
    pub max_points: Exact,
}

/// Zone colours.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Zone {
    /// *Hijau*.
    Green,
    /// *Kuning*.
    Yellow,
    /// *Merah*.
    Red,
}

impl Zone {
    /// The name used in documents.
    pub fn name(self) -> &'static str {
        match self {
            Zone::Green => "green",
            Zone::Yellow => "yellow",
            Zone::Red => "red",
        }
    }
}

/// A grade band, closed at both ends on two decimals.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Band {
    /// The grade (`A`, `B-`, `Tinggi`).
    pub grade: String,
    /// Its label (`Kualitas Tertinggi`).
    pub label: String,
    /// Its zone colour, where the instrument has zones.
    pub zone: Option<Zone>,
    /// Inclusive lower edge.
    pub min: Published,
    /// Inclusive upper edge.
    pub max: Published,
}

impl Instrument {
    /// Looks an indicator up by id.
    pub fn indicator(&self, id: &str) -> Option<&Indicator> {
        let &(d, v, i) = self.index.get(id)?;
        Some(&self.dimensions[d].variables[v].indicators[i])
    }

    /// Every indicator, in document order.
    pub fn indicators(&self) -> impl Iterator<Item = &Indicator> {
        self.dimensions.iter().flat_map(|d| d.variables.iter()).flat_map(|v| v.indicators.iter())
    }

    /// The band a published figure falls in, if any.
    pub fn band_for(&self, figure: Published) -> Option<&Band> {
        self.bands.iter().find(|b| b.min <= figure && figure <= b.max)
    }

    /// The respondent rule for a kind, if the instrument uses it.
    pub fn respondent_rule(&self, kind: RespondentKind) -> Option<&RespondentRule> {
        self.respondents.iter().find(|r| r.kind == kind)
    }

    /// A deduction rule by id.
    pub fn deduction(&self, id: &str) -> Option<&DeductionRule> {
        self.deductions.iter().find(|d| d.id == id)
    }
}
