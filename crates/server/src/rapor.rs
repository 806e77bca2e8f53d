//! The report card (*rapor*) of one institution for one season: its score, grade and
//! zone, the breakdown by dimension, unit and product, the indicators it failed or was
//! weak on with the evidence and notes behind each, the supervisors' corrections beside
//! the recorded values, and the comparison with its previous season. Built from the
//! stored result document and the fieldwork; served as JSON and as printable HTML.
//!
//! **Failed** means an indicator attained nothing (score = the scale's minimum: the
//! lowest answer, a "no", or every respondent giving the lowest answer). **Weak** means
//! it attained something but less than half of its maximum ([`WEAK_BELOW`]): on a 0–3
//! scale an answer of 1, or a respondents' mean below 1.5.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::{OptionalExtension, Transaction};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use sidak_core::instrument::{Instrument, InstrumentRef, Level};
use sidak_core::num::{Exact, Published};

use crate::error::ApiError;
use crate::fieldwork::{EvidenceItem, Fieldwork, NoteItem};
use crate::html::{esc, seg, time, zone_cell, zone_name};
use crate::results::{self, ResultRow};

/// The format tag of a report card document.
pub const RAPOR_FORMAT: &str = "sidak-rapor/1";

/// An indicator attaining less than this share of its maximum (but more than nothing)
/// is weak: one half.
pub const WEAK_BELOW: (i64, i64) = (1, 2);

/// The stored result documents, as far as pages read them (`sidak-results/1`).
pub mod doc {
    use super::*;

    fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
        Value::deserialize(d).map(Some)
    }

    /// A dimension, variable or indicator.
    #[derive(Clone, Debug, Deserialize)]
    pub struct Node {
        /// Instrument id of the node.
        pub id: String,
        /// Its share of its parent.
        pub weight: String,
        /// complete, incomplete or not_applicable.
        pub status: String,
        /// Published score (complete nodes).
        pub score: Option<String>,
        /// Provisional figure (incomplete nodes).
        pub provisional: Option<String>,
        /// The answer scored (direct indicators).
        pub answer: Option<Value>,
        /// The recorded value a correction replaced (present only then; may be null).
        #[serde(default, deserialize_with = "present")]
        pub field_value: Option<Value>,
        /// How many respondents answered (questionnaire indicators).
        pub respondents: Option<u32>,
        /// Children.
        #[serde(default)]
        pub children: Vec<Node>,
    }

    impl Node {
        /// The leaves under this node (itself when it has no children).
        pub fn leaves(&self) -> Vec<&Node> {
            if self.children.is_empty() {
                vec![self]
            } else {
                self.children.iter().flat_map(Node::leaves).collect()
            }
        }

        /// The node with `id` at or under this one.
        pub fn find(&self, id: &str) -> Option<&Node> {
            if self.id == id {
                return Some(self);
            }
            self.children.iter().find_map(|c| c.find(id))
        }
    }

    /// A product of a unit.
    #[derive(Clone, Debug, Deserialize)]
    pub struct Product {
        /// Product code.
        pub id: String,
        /// Name.
        pub name: String,
        /// Where it was observed.
        pub location: String,
        /// status.
        pub status: String,
        /// Score.
        pub score: Option<String>,
        /// Provisional figure.
        pub provisional: Option<String>,
        /// Missing items.
        #[serde(default)]
        pub missing: Vec<String>,
        /// Product-level tree.
        #[serde(default)]
        pub dimensions: Vec<Node>,
    }

    /// A unit.
    #[derive(Clone, Debug, Deserialize)]
    pub struct Unit {
        /// Unit code.
        pub id: String,
        /// Name.
        pub name: String,
        /// Unit type.
        #[serde(rename = "type")]
        pub unit_type: String,
        /// Its roll-up weight.
        pub weight: String,
        /// status.
        pub status: String,
        /// Score.
        pub score: Option<String>,
        /// Grade.
        pub grade: Option<String>,
        /// Label.
        pub label: Option<String>,
        /// Zone.
        pub zone: Option<String>,
        /// Provisional figure.
        pub provisional: Option<String>,
        /// Missing items.
        #[serde(default)]
        pub missing: Vec<String>,
        /// The full tree.
        #[serde(default)]
        pub dimensions: Vec<Node>,
        /// Products.
        #[serde(default)]
        pub products: Vec<Product>,
    }

    /// An institution.
    #[derive(Clone, Debug, Deserialize)]
    pub struct Institution {
        /// Institution code.
        pub id: String,
        /// Name.
        pub name: String,
        /// Type.
        #[serde(rename = "type")]
        pub kind: String,
        /// Region.
        pub region: Option<String>,
        /// status.
        pub status: String,
        /// Score.
        pub score: Option<String>,
        /// Grade.
        pub grade: Option<String>,
        /// Label.
        pub label: Option<String>,
        /// Zone.
        pub zone: Option<String>,
        /// Provisional figure.
        pub provisional: Option<String>,
        /// Score before deductions.
        pub before_deductions: Option<String>,
        /// Deductions applied.
        #[serde(default)]
        pub deductions: Vec<Value>,
        /// Roll-up rule.
        pub rule: String,
        /// Missing items.
        #[serde(default)]
        pub missing: Vec<String>,
        /// Breakdown by dimension.
        #[serde(default)]
        pub dimensions: Vec<Node>,
        /// Units.
        #[serde(default)]
        pub units: Vec<Unit>,
    }
}

/// An institution's result for one instrument: its row and its document.
#[derive(Clone, Debug)]
pub struct Season {
    /// The result row.
    pub row: ResultRow,
    /// The instrument.
    pub instrument: InstrumentRef,
    /// The instrument's `year`, if it has one.
    pub year: Option<u64>,
}

/// Reads `id@version`.
pub fn parse_instrument(text: &str) -> Option<InstrumentRef> {
    let (id, v) = text.split_once('@')?;
    Some(InstrumentRef { id: id.to_owned(), version: v.parse().ok()? })
}

/// The `year` an instrument's document gives.
pub fn year_of(instruments: &BTreeMap<InstrumentRef, Instrument>, reference: &InstrumentRef) -> Option<u64> {
    instruments.get(reference).and_then(|i| i.document.get("year")).and_then(Value::as_u64)
}

/// The institution record whose result has this record id or code.
pub fn institution_record(tx: &Transaction<'_>, key: &str) -> Result<Option<String>, ApiError> {
    Ok(tx
        .query_row(
            "SELECT entity FROM results WHERE kind = 'institution' AND (entity = ?1 OR code = ?1) ORDER BY entity LIMIT 1",
            [key],
            |r| r.get(0),
        )
        .optional()?)
}

/// Every season (instrument) an institution has a result for, oldest first (by year,
/// then instrument id and version).
pub fn seasons(
    tx: &Transaction<'_>,
    instruments: &BTreeMap<InstrumentRef, Instrument>,
    institution: &str,
) -> Result<Vec<Season>, ApiError> {
    let mut out: Vec<Season> = results::rows(tx, "institution", None, -1, Some(institution))?
        .into_iter()
        .filter_map(|row| {
            let instrument = parse_instrument(&row.instrument)?;
            let year = year_of(instruments, &instrument);
            Some(Season { row, instrument, year })
        })
        .collect();
    out.sort_by(|a, b| (a.year, &a.instrument).cmp(&(b.year, &b.instrument)));
    Ok(out)
}

/// The season asked for, or else the latest.
pub fn pick<'a>(seasons: &'a [Season], asked: Option<&InstrumentRef>) -> Option<&'a Season> {
    match asked {
        Some(a) => seasons.iter().find(|s| &s.instrument == a),
        None => seasons.last(),
    }
}

/// The stored result document of an institution for one instrument.
pub fn institution_document(
    tx: &Transaction<'_>,
    institution: &str,
    instrument: &InstrumentRef,
) -> Result<Option<doc::Institution>, ApiError> {
    let text = crate::results::stored_document(tx, "institution", institution, &instrument.to_string())?;
    match text {
        None => Ok(None),
        Some(t) => serde_json::from_str(&t).map(Some).map_err(ApiError::internal),
    }
}

/// The institution as the card names it.
#[derive(Clone, Debug, Serialize)]
pub struct InstitutionFacts {
    /// Record id.
    pub id: String,
    /// Code.
    pub code: String,
    /// Name.
    pub name: String,
    /// kementerian, lembaga, provinsi, kota or kabupaten.
    #[serde(rename = "type")]
    pub kind: String,
    /// Region.
    pub region: Option<String>,
}

/// The instrument (season) of a figure.
#[derive(Clone, Debug, Serialize)]
pub struct InstrumentFacts {
    /// Id.
    pub id: String,
    /// Version.
    pub version: u32,
    /// Title.
    pub title: String,
    /// Its season (the document's `year`).
    pub year: Option<u64>,
}

/// A figure of one season.
#[derive(Clone, Debug, Serialize)]
pub struct SeasonFigure {
    /// The instrument.
    pub instrument: InstrumentFacts,
    /// complete, incomplete or not_applicable.
    pub status: String,
    /// The published score (complete results).
    pub score: Option<String>,
    /// The provisional figure (incomplete results; never graded).
    pub provisional: Option<String>,
    /// Grade.
    pub grade: Option<String>,
    /// Zone.
    pub zone: Option<String>,
}

/// A dimension's figure.
#[derive(Clone, Debug, Serialize)]
pub struct DimensionFigure {
    /// Dimension id.
    pub id: String,
    /// Its title.
    pub title: String,
    /// Its share of the whole.
    pub weight: String,
    /// Status.
    pub status: String,
    /// Score.
    pub score: Option<String>,
    /// Provisional figure.
    pub provisional: Option<String>,
}

/// A product's figure.
#[derive(Clone, Debug, Serialize)]
pub struct ProductFigure {
    /// Code.
    pub code: String,
    /// Name.
    pub name: String,
    /// Where it was observed.
    pub location: String,
    /// Status.
    pub status: String,
    /// Score (products are not graded).
    pub score: Option<String>,
    /// Provisional figure.
    pub provisional: Option<String>,
}

/// A unit's figures.
#[derive(Clone, Debug, Serialize)]
pub struct UnitCard {
    /// Code.
    pub code: String,
    /// Name.
    pub name: String,
    /// Unit type.
    #[serde(rename = "type")]
    pub unit_type: String,
    /// Status.
    pub status: String,
    /// Score.
    pub score: Option<String>,
    /// Provisional figure.
    pub provisional: Option<String>,
    /// Grade.
    pub grade: Option<String>,
    /// Label.
    pub label: Option<String>,
    /// Zone.
    pub zone: Option<String>,
    /// What is missing.
    pub missing: Vec<String>,
    /// By dimension.
    pub dimensions: Vec<DimensionFigure>,
    /// By product.
    pub products: Vec<ProductFigure>,
}

/// An indicator the institution failed or was weak on.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    /// `failed` or `weak`.
    pub verdict: &'static str,
    /// Indicator id.
    pub indicator: String,
    /// Its title.
    pub title: String,
    /// Its dimension's id.
    pub dimension: String,
    /// `product`, `unit` or `institution`.
    pub level: &'static str,
    /// The unit's code (unit and product indicators).
    pub unit: Option<String>,
    /// The product's code (product indicators).
    pub product: Option<String>,
    /// The indicator's published score.
    pub score: String,
    /// The scale's maximum.
    pub max: String,
    /// The answer scored (direct indicators).
    pub answer: Option<Value>,
    /// The recorded value, when a correction replaced it (`null`: none was recorded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field_value: Option<Value>,
    /// How many respondents answered (questionnaire indicators).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub respondents: Option<u32>,
    /// Evidence citing the indicator on the visits behind it.
    pub evidence: Vec<EvidenceItem>,
    /// Notes about the indicator on those visits.
    pub notes: Vec<NoteItem>,
}

/// A supervisor's correction in force, beside the recorded value.
#[derive(Clone, Debug, Serialize)]
pub struct CorrectionFact {
    /// Unit code.
    pub unit: String,
    /// Product code.
    pub product: String,
    /// The visit.
    pub visit: String,
    /// The respondent kind, for a questionnaire answer.
    pub respondent: Option<String>,
    /// Indicator id.
    pub indicator: String,
    /// The recorded value (`null`: none).
    pub field_value: Value,
    /// The corrected value, the one scored.
    pub value: Value,
}

/// The comparison with the previous season.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    /// The previous season's figure: this institution's result under the instrument of
    /// the latest earlier year.
    pub previous: Option<SeasonFigure>,
    /// This season's score minus the previous one (both complete), signed.
    pub change: Option<String>,
    /// In words.
    pub note: String,
}

/// A report card.
#[derive(Clone, Debug, Serialize)]
pub struct Rapor {
    /// Always `sidak-rapor/1`.
    pub format: &'static str,
    /// The institution.
    pub institution: InstitutionFacts,
    /// This season.
    pub instrument: InstrumentFacts,
    /// complete, incomplete or not_applicable.
    pub status: String,
    /// The published score (complete results only).
    pub score: Option<String>,
    /// The provisional figure (incomplete results; never graded).
    pub provisional: Option<String>,
    /// Grade (complete results only).
    pub grade: Option<String>,
    /// Its label.
    pub label: Option<String>,
    /// Its zone.
    pub zone: Option<String>,
    /// The score before deductions, when there were any.
    pub before_deductions: Option<String>,
    /// Deductions applied.
    pub deductions: Vec<Value>,
    /// The roll-up rule.
    pub rule: String,
    /// What is missing (incomplete results).
    pub missing: Vec<String>,
    /// The share of an indicator's maximum below which it is weak.
    pub weak_below: String,
    /// By dimension.
    pub dimensions: Vec<DimensionFigure>,
    /// By unit (and product).
    pub units: Vec<UnitCard>,
    /// Failed and weak indicators.
    pub findings: Vec<Finding>,
    /// Corrections in force.
    pub corrections: Vec<CorrectionFact>,
    /// Every season with a result, oldest first.
    pub seasons: Vec<SeasonFigure>,
    /// Against the previous season.
    pub comparison: Comparison,
}

fn instrument_facts(instruments: &BTreeMap<InstrumentRef, Instrument>, r: &InstrumentRef) -> InstrumentFacts {
    InstrumentFacts {
        id: r.id.clone(),
        version: r.version,
        title: instruments.get(r).map(|i| i.title.clone()).unwrap_or_default(),
        year: year_of(instruments, r),
    }
}

fn season_figure(instruments: &BTreeMap<InstrumentRef, Instrument>, s: &Season) -> SeasonFigure {
    SeasonFigure {
        instrument: instrument_facts(instruments, &s.instrument),
        status: s.row.status.clone(),
        score: s.row.score.clone(),
        provisional: s.row.provisional.clone(),
        grade: s.row.grade.clone(),
        zone: s.row.zone.clone(),
    }
}

/// The comparison of `current` with the latest season of an earlier year.
fn compare(instruments: &BTreeMap<InstrumentRef, Instrument>, all: &[Season], current: &Season) -> Comparison {
    let previous = current.year.and_then(|y| all.iter().rev().find(|s| s.year.is_some_and(|p| p < y)));
    let Some(previous) = previous else {
        return Comparison { previous: None, change: None, note: "no earlier season".into() };
    };
    let figure = |s: &Season| s.row.score.as_deref().and_then(|t| t.parse::<Published>().ok());
    let (change, note) = match (figure(current), figure(previous)) {
        (Some(now), Some(then)) => {
            let d = now.hundredths() - then.hundredths();
            let text = format!("{}{}", if d > 0 { "+" } else { "" }, Published::from_hundredths(d));
            let years = format!("{} → {}", previous.year.unwrap_or(0), current.year.unwrap_or(0));
            (Some(text.clone()), format!("{years}: {then} → {now} ({text})"))
        }
        _ => (None, "no change figure: one of the two results is incomplete".into()),
    };
    Comparison { previous: Some(season_figure(instruments, previous)), change, note }
}

/// Weights as written in result documents (`"0.2185"`, `"1/9"`) as percentages.
pub fn percent(weight: &str) -> String {
    match weight.parse::<Exact>() {
        Ok(w) => format!("{}%", (&w * &Exact::from_int(100)).publish()),
        Err(_) => weight.to_owned(),
    }
}

fn dimension_figures(instrument: &Instrument, nodes: &[doc::Node]) -> Vec<DimensionFigure> {
    nodes
        .iter()
        .map(|n| DimensionFigure {
            title: instrument.dimensions.iter().find(|d| d.id == n.id).map(|d| d.title.clone()).unwrap_or_default(),
            id: n.id.clone(),
            weight: n.weight.clone(),
            status: n.status.clone(),
            score: n.score.clone(),
            provisional: n.provisional.clone(),
        })
        .collect()
}

/// The dimension an indicator belongs to.
pub fn dimension_of(instrument: &Instrument, indicator: &str) -> Option<String> {
    instrument
        .dimensions
        .iter()
        .find(|d| d.variables.iter().any(|v| v.indicators.iter().any(|i| i.id == indicator)))
        .map(|d| d.id.clone())
}

/// `failed`, `weak` or nothing, for a complete indicator's published score.
pub fn verdict(instrument: &Instrument, score: &str) -> Option<&'static str> {
    let score: Exact = score.parse().ok()?;
    let (min, max) = (&instrument.scale.min, &instrument.scale.max);
    let weak_line = min + &(&(max - min) * &Exact::ratio(WEAK_BELOW.0, WEAK_BELOW.1));
    if &score <= min {
        Some("failed")
    } else if score < weak_line {
        Some("weak")
    } else {
        None
    }
}

/// Failed and weak indicators of a result document, in instrument order: institution
/// indicators once, then per unit its unit indicators and per product its product ones.
fn findings(instrument: &Instrument, doc: &doc::Institution, work: &Fieldwork) -> Vec<Finding> {
    let order: BTreeMap<&str, usize> =
        instrument.indicators().enumerate().map(|(i, ind)| (ind.id.as_str(), i)).collect();
    let max = instrument.scale.max.publish().to_string();
    let make = |node: &doc::Node, level: Level, unit: Option<&str>, product: Option<&str>| -> Option<Finding> {
        let ind = instrument.indicator(&node.id)?;
        if ind.level != level || node.status != "complete" {
            return None;
        }
        let score = node.score.clone()?;
        let verdict = verdict(instrument, &score)?;
        Some(Finding {
            verdict,
            indicator: node.id.clone(),
            title: ind.title.clone(),
            dimension: dimension_of(instrument, &node.id).unwrap_or_default(),
            level: level.name(),
            unit: unit.map(str::to_owned),
            product: product.map(str::to_owned),
            score,
            max: max.clone(),
            answer: node.answer.clone(),
            field_value: node.field_value.clone(),
            respondents: node.respondents,
            evidence: work.evidence_for(unit, product, &node.id),
            notes: work.notes_for(unit, product, &node.id),
        })
    };
    let sorted = |mut v: Vec<Finding>| {
        v.sort_by_key(|f| order.get(f.indicator.as_str()).copied().unwrap_or(usize::MAX));
        v
    };
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let mut institution_level = Vec::new();
    for unit in &doc.units {
        for leaf in unit.dimensions.iter().flat_map(doc::Node::leaves) {
            if seen.insert(leaf.id.clone()) {
                institution_level.extend(make(leaf, Level::Institution, None, None));
            }
        }
    }
    out.extend(sorted(institution_level));
    for unit in &doc.units {
        let leaves = unit.dimensions.iter().flat_map(doc::Node::leaves);
        out.extend(sorted(leaves.filter_map(|l| make(l, Level::Unit, Some(&unit.id), None)).collect()));
        for product in &unit.products {
            let leaves = product.dimensions.iter().flat_map(doc::Node::leaves);
            out.extend(sorted(
                leaves.filter_map(|l| make(l, Level::Product, Some(&unit.id), Some(&product.id))).collect(),
            ));
        }
    }
    out
}

fn corrections(work: &Fieldwork) -> Vec<CorrectionFact> {
    let mut out = Vec::new();
    for v in &work.visits {
        for (indicator, value) in &v.corrected {
            out.push(CorrectionFact {
                unit: v.unit.clone(),
                product: v.product.clone(),
                visit: v.id.clone(),
                respondent: None,
                indicator: indicator.clone(),
                field_value: v.answers.get(indicator).cloned().unwrap_or(Value::Null),
                value: value.clone(),
            });
        }
        for r in &v.respondents {
            for (indicator, value) in &r.corrected {
                out.push(CorrectionFact {
                    unit: v.unit.clone(),
                    product: v.product.clone(),
                    visit: v.id.clone(),
                    respondent: Some(r.kind.clone()),
                    indicator: indicator.clone(),
                    field_value: r.answers.get(indicator).cloned().unwrap_or(Value::Null),
                    value: value.clone(),
                });
            }
        }
    }
    out
}

/// Builds the report card of the institution with record id or code `key`, for the
/// season `asked` (or its latest). `None` when it has no such result.
pub fn build(
    tx: &Transaction<'_>,
    instruments: &BTreeMap<InstrumentRef, Instrument>,
    key: &str,
    asked: Option<&InstrumentRef>,
) -> Result<Option<Rapor>, ApiError> {
    let Some(record) = institution_record(tx, key)? else { return Ok(None) };
    let all = seasons(tx, instruments, &record)?;
    let Some(current) = pick(&all, asked) else { return Ok(None) };
    let Some(doc) = institution_document(tx, &record, &current.instrument)? else { return Ok(None) };
    let instrument = instruments
        .get(&current.instrument)
        .ok_or_else(|| ApiError::internal(format!("a result cites {} which is not held", current.instrument)))?;
    let work = Fieldwork::load(tx, &record, Some(&current.instrument), true)?;
    let units = doc
        .units
        .iter()
        .map(|u| UnitCard {
            code: u.id.clone(),
            name: u.name.clone(),
            unit_type: u.unit_type.clone(),
            status: u.status.clone(),
            score: u.score.clone(),
            provisional: u.provisional.clone(),
            grade: u.grade.clone(),
            label: u.label.clone(),
            zone: u.zone.clone(),
            missing: u.missing.clone(),
            dimensions: dimension_figures(instrument, &u.dimensions),
            products: u
                .products
                .iter()
                .map(|p| ProductFigure {
                    code: p.id.clone(),
                    name: p.name.clone(),
                    location: p.location.clone(),
                    status: p.status.clone(),
                    score: p.score.clone(),
                    provisional: p.provisional.clone(),
                })
                .collect(),
        })
        .collect();
    Ok(Some(Rapor {
        format: RAPOR_FORMAT,
        institution: InstitutionFacts {
            id: record,
            code: doc.id.clone(),
            name: doc.name.clone(),
            kind: doc.kind.clone(),
            region: doc.region.clone(),
        },
        instrument: instrument_facts(instruments, &current.instrument),
        status: doc.status.clone(),
        score: doc.score.clone(),
        provisional: doc.provisional.clone(),
        grade: doc.grade.clone(),
        label: doc.label.clone(),
        zone: doc.zone.clone(),
        before_deductions: doc.before_deductions.clone(),
        deductions: doc.deductions.clone(),
        rule: doc.rule.clone(),
        missing: doc.missing.clone(),
        weak_below: Exact::ratio(WEAK_BELOW.0, WEAK_BELOW.1).to_string(),
        dimensions: dimension_figures(instrument, &doc.dimensions),
        units,
        findings: findings(instrument, &doc, &work),
        corrections: corrections(&work),
        seasons: all.iter().map(|s| season_figure(instruments, s)).collect(),
        comparison: compare(instruments, &all, current),
    }))
}

/// Where a rendered card's evidence links point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Links {
    /// The API: `/v1/evidence/{sha256}` (a bearer token is needed to follow them).
    Api,
    /// The dashboard: its evidence pages, and their files for thumbnails.
    Dashboard,
}

impl Links {
    /// The link of an evidence item.
    pub fn evidence(self, sha: &str) -> String {
        match self {
            Links::Api => format!("/v1/evidence/{}", seg(sha)),
            Links::Dashboard => format!("/dashboard/evidence/{}", seg(sha)),
        }
    }

    /// The file behind it (for `<img>`).
    pub fn file(self, sha: &str) -> String {
        match self {
            Links::Api => format!("/v1/evidence/{}", seg(sha)),
            Links::Dashboard => format!("/dashboard/evidence/{}/file", seg(sha)),
        }
    }
}

/// An answer for people: `true`/`false` as ya/tidak, `{"na": true}` as N/A.
pub fn answer_text(v: &Value) -> String {
    match v {
        Value::Null => "—".into(),
        Value::Bool(true) => "ya".into(),
        Value::Bool(false) => "tidak".into(),
        Value::String(s) => s.clone(),
        Value::Object(o) if o.get("na") == Some(&Value::Bool(true)) => "N/A".into(),
        other => other.to_string(),
    }
}

/// The answer cell: the scored answer, and beside it the recorded value a correction
/// replaced.
pub fn answer_cell(answer: Option<&Value>, field_value: Option<&Value>, respondents: Option<u32>) -> String {
    let mut out = match (answer, respondents) {
        (Some(a), _) => format!(r#"<span class="value">{}</span>"#, esc(&answer_text(a))),
        (None, Some(n)) => format!(r#"<span class="respondents">{n} respondents</span>"#),
        (None, None) => "—".into(),
    };
    if let Some(f) = field_value {
        out.push_str(&format!(
            r#" <span class="corrected" data-field-value="{0}">(corrected; recorded in the field: {0})</span>"#,
            esc(&answer_text(f))
        ));
    }
    out
}

/// An evidence list: link, media type, capture time, thumbnail for images.
pub fn evidence_list(items: &[EvidenceItem], links: Links) -> String {
    if items.is_empty() {
        return r#"<span class="muted">no evidence</span>"#.into();
    }
    let mut out = String::from(r#"<ul class="evidence">"#);
    for e in items {
        let media = e.media_type.as_deref().unwrap_or("unknown type");
        let captured = e.captured_at.map(time).unwrap_or_else(|| "—".into());
        out.push_str("<li>");
        if e.complete {
            out.push_str(&format!(
                r#"<a class="evidence-link" href="{}" data-sha256="{}"><code>{}…</code></a>"#,
                esc(&links.evidence(&e.sha256)),
                esc(&e.sha256),
                esc(&e.sha256[..e.sha256.len().min(16)])
            ));
        } else {
            out.push_str(&format!(
                r#"<code data-sha256="{}">{}…</code> <span class="muted">(file not yet received here)</span>"#,
                esc(&e.sha256),
                esc(&e.sha256[..e.sha256.len().min(16)])
            ));
        }
        out.push_str(&format!(r#" <span class="media">{}</span>, captured {}"#, esc(media), esc(&captured)));
        if e.complete && e.is_image() {
            out.push_str(&format!(
                r#"<img class="thumb" src="{}" alt="evidence {}" loading="lazy">"#,
                esc(&links.file(&e.sha256)),
                esc(&e.sha256[..e.sha256.len().min(12)])
            ));
        }
        out.push_str("</li>");
    }
    out.push_str("</ul>");
    out
}

fn notes_list(notes: &[NoteItem]) -> String {
    if notes.is_empty() {
        return String::new();
    }
    let items: Vec<String> = notes
        .iter()
        .map(|n| {
            format!(
                r#"<li class="note">{} <span class="muted">{}</span></li>"#,
                esc(&n.text),
                esc(&n.created_at.map(time).unwrap_or_default())
            )
        })
        .collect();
    format!(r#"<ul class="notes">{}</ul>"#, items.join(""))
}

fn opt(s: &Option<String>) -> String {
    esc(s.as_deref().unwrap_or("—"))
}

fn score_cell(score: &Option<String>, provisional: &Option<String>) -> String {
    format!(r#"<td class="score">{}</td>"#, esc(&crate::html::score_text(score.as_deref(), provisional.as_deref())))
}

fn dimension_table(id: &str, dims: &[DimensionFigure]) -> String {
    let mut out = format!(
        r#"<table id="{}" class="dimensions"><thead><tr><th>Dimension</th><th class="num">Weight</th><th class="num">Score</th><th>Status</th></tr></thead><tbody>"#,
        esc(id)
    );
    for d in dims {
        out.push_str(&format!(
            r#"<tr data-dimension="{}"><td>{} <span class="muted">{}</span></td><td class="num">{}</td>{}<td class="status">{}</td></tr>"#,
            esc(&d.id),
            esc(&d.title),
            esc(&d.id),
            esc(&percent(&d.weight)),
            score_cell(&d.score, &d.provisional),
            esc(&d.status)
        ));
    }
    out.push_str("</tbody></table>");
    out
}

/// The card as a printable page body (without the page shell).
pub fn html_body(r: &Rapor, links: Links) -> String {
    let mut b = String::new();
    let inst = &r.institution;
    b.push_str(&format!(
        r#"<article class="rapor" id="rapor" data-institution="{}" data-status="{}" data-instrument="{}@{}">"#,
        esc(&inst.code),
        esc(&r.status),
        esc(&r.instrument.id),
        r.instrument.version
    ));
    b.push_str(&format!(r#"<h1>Rapor — <span id="institution-name">{}</span></h1>"#, esc(&inst.name)));
    b.push_str(&format!(
        r#"<p class="meta"><span id="institution-type">{}</span> · region <span id="institution-region">{}</span> · code <code>{}</code><br>{} (<code>{}@{}</code>, season {})</p>"#,
        esc(&inst.kind),
        opt(&inst.region),
        esc(&inst.code),
        esc(&r.instrument.title),
        esc(&r.instrument.id),
        r.instrument.version,
        r.instrument.year.map(|y| y.to_string()).unwrap_or_else(|| "—".into())
    ));
    // Headline: a grade only for complete results.
    if r.status == "complete" {
        let zone = r.zone.as_deref().unwrap_or("");
        b.push_str(&format!(
            r#"<section class="headline"><div>Score<div class="figure" id="score">{}</div></div><div>Grade<div class="grade badge zone-{}" id="grade">{}</div></div><div>Opini<div id="label">{}</div></div><div>Zone<div class="badge zone-{}" id="zone" data-zone="{}">{}</div></div></section>"#,
            opt(&r.score),
            esc(zone),
            opt(&r.grade),
            opt(&r.label),
            esc(zone),
            esc(zone),
            esc(if zone.is_empty() { "—" } else { zone_name(zone) })
        ));
    } else {
        b.push_str(&format!(
            r#"<section class="headline"><div class="status-incomplete" id="status">{} — no grade until every required answer, questionnaire and photo is in.</div><div>Provisional<div class="figure" id="provisional">({})</div></div></section>"#,
            esc(&r.status.replace('_', " ")),
            opt(&r.provisional)
        ));
    }
    if !r.missing.is_empty() {
        b.push_str(&format!(r#"<h2>What is missing ({})</h2><ul class="missing" id="missing">"#, r.missing.len()));
        for m in &r.missing {
            b.push_str(&format!("<li>{}</li>", esc(m)));
        }
        b.push_str("</ul>");
    }
    if !r.deductions.is_empty() {
        b.push_str(r#"<h2>Deductions</h2><table id="deductions"><tr><th>Rule</th><th class="num">Points</th><th>Reason</th></tr>"#);
        for d in &r.deductions {
            let s = |k: &str| {
                d.get(k).map(|v| v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string())).unwrap_or_default()
            };
            b.push_str(&format!(
                r#"<tr><td>{}</td><td class="num">{}</td><td>{}</td></tr>"#,
                esc(&s("id")),
                esc(&s("points")),
                esc(&s("reason"))
            ));
        }
        b.push_str(&format!(r#"</table><p class="meta">Before deductions: {}</p>"#, opt(&r.before_deductions)));
    }
    b.push_str(&format!(
        r#"<h2>By dimension</h2><p class="meta">Roll-up rule of units: <code>{}</code></p>"#,
        esc(&r.rule)
    ));
    b.push_str(&dimension_table("dimensions", &r.dimensions));

    b.push_str(r#"<h2>By unit</h2><table id="units"><thead><tr><th>Unit</th><th>Type</th><th class="num">Score</th><th>Grade</th><th>Zone</th><th>Status</th></tr></thead><tbody>"#);
    for u in &r.units {
        b.push_str(&format!(
            r#"<tr data-unit="{}"><td>{} <span class="muted">{}</span></td><td>{}</td>{}<td class="grade">{}</td>{}<td class="status">{}</td></tr>"#,
            esc(&u.code),
            esc(&u.name),
            esc(&u.code),
            esc(&u.unit_type),
            score_cell(&u.score, &u.provisional),
            esc(u.grade.as_deref().unwrap_or("")),
            zone_cell(u.zone.as_deref()),
            esc(&u.status)
        ));
    }
    b.push_str("</tbody></table>");
    for u in &r.units {
        b.push_str(&format!(r#"<h3>{} — products</h3>"#, esc(&u.name)));
        b.push_str(&format!(
            r#"<table class="products" data-unit="{}"><thead><tr><th>Product</th><th>Observed at</th><th class="num">Score</th><th>Status</th></tr></thead><tbody>"#,
            esc(&u.code)
        ));
        for p in &u.products {
            b.push_str(&format!(
                r#"<tr data-product="{}"><td>{} <span class="muted">{}</span></td><td>{}</td>{}<td class="status">{}</td></tr>"#,
                esc(&p.code),
                esc(&p.name),
                esc(&p.code),
                esc(&p.location),
                score_cell(&p.score, &p.provisional),
                esc(&p.status)
            ));
        }
        b.push_str("</tbody></table>");
    }

    b.push_str(&format!(
        r#"<h2>Failed and weak indicators</h2><p class="meta">Failed: the indicator attained nothing (the lowest answer). Weak: it attained less than {} of its maximum. Evidence and notes are those of the visits behind each figure.</p>"#,
        esc(&percent(&r.weak_below))
    ));
    if r.findings.is_empty() {
        b.push_str(r#"<p id="findings" class="none">No failed or weak indicators.</p>"#);
    } else {
        b.push_str(r#"<table id="findings"><thead><tr><th>Verdict</th><th>Where</th><th>Indicator</th><th class="num">Score</th><th>Answer</th><th>Evidence</th><th>Notes</th></tr></thead><tbody>"#);
        for f in &r.findings {
            let place = match (&f.unit, &f.product) {
                (Some(u), Some(p)) => format!("{u} / {p}"),
                (Some(u), None) => u.clone(),
                _ => "institution".into(),
            };
            b.push_str(&format!(
                r#"<tr class="finding" data-verdict="{0}" data-indicator="{1}" data-unit="{2}" data-product="{3}"><td class="verdict verdict-{0}">{0}</td><td>{4}</td><td>{5} <span class="muted">{1}</span></td><td class="score">{6} / {7}</td><td class="answer">{8}</td><td>{9}</td><td>{10}</td></tr>"#,
                esc(f.verdict),
                esc(&f.indicator),
                esc(f.unit.as_deref().unwrap_or("")),
                esc(f.product.as_deref().unwrap_or("")),
                esc(&place),
                esc(&f.title),
                esc(&f.score),
                esc(&f.max),
                answer_cell(f.answer.as_ref(), f.field_value.as_ref(), f.respondents),
                evidence_list(&f.evidence, links),
                notes_list(&f.notes)
            ));
        }
        b.push_str("</tbody></table>");
    }

    if !r.corrections.is_empty() {
        b.push_str(r#"<h2>Corrections in force</h2><table id="corrections"><thead><tr><th>Where</th><th>Indicator</th><th>Recorded in the field</th><th>Corrected (scored)</th></tr></thead><tbody>"#);
        for c in &r.corrections {
            let who = c.respondent.as_ref().map(|k| format!(" ({k} questionnaire)")).unwrap_or_default();
            b.push_str(&format!(
                r#"<tr class="correction" data-indicator="{}"><td>{} / {}{}</td><td>{}</td><td class="field-value">{}</td><td class="corrected">{}</td></tr>"#,
                esc(&c.indicator),
                esc(&c.unit),
                esc(&c.product),
                esc(&who),
                esc(&c.indicator),
                esc(&answer_text(&c.field_value)),
                esc(&answer_text(&c.value))
            ));
        }
        b.push_str("</tbody></table>");
    }

    b.push_str("<h2>Year on year</h2>");
    match &r.comparison.previous {
        None => b.push_str(r#"<p id="comparison" class="no-earlier">no earlier season</p>"#),
        Some(p) => {
            let row = |label: &str, f: &SeasonFigure, class: &str| {
                format!(
                    r#"<tr class="{}"><td>{}</td><td>{} <code>{}@{}</code></td><td class="num">{}</td>{}<td class="grade">{}</td>{}</tr>"#,
                    class,
                    esc(label),
                    esc(&f.instrument.title),
                    esc(&f.instrument.id),
                    f.instrument.version,
                    f.instrument.year.map(|y| y.to_string()).unwrap_or_default(),
                    score_cell(&f.score, &f.provisional),
                    esc(f.grade.as_deref().unwrap_or("")),
                    zone_cell(f.zone.as_deref())
                )
            };
            let current = r
                .seasons
                .iter()
                .rfind(|s| s.instrument.id == r.instrument.id && s.instrument.version == r.instrument.version);
            b.push_str(r#"<table id="comparison"><thead><tr><th></th><th>Instrument</th><th class="num">Season</th><th class="num">Score</th><th>Grade</th><th>Zone</th></tr></thead><tbody>"#);
            b.push_str(&row("Previous", p, "previous"));
            if let Some(c) = current {
                b.push_str(&row("This season", c, "current"));
            }
            b.push_str(&format!(
                r#"</tbody></table><p>Change: <strong id="change">{}</strong> <span class="muted">{}</span></p>"#,
                opt(&r.comparison.change),
                esc(&r.comparison.note)
            ));
        }
    }
    b.push_str("</article>");
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_follow_the_scale() {
        let instrument = sidak_core::instrument::builtin("penilaian-2023").unwrap();
        for (score, expected) in [
            ("0.00", Some("failed")),
            ("33.33", Some("weak")),
            ("49.99", Some("weak")),
            ("50.00", None),
            ("66.67", None),
            ("100.00", None),
        ] {
            assert_eq!(verdict(&instrument, score), expected, "{score}");
        }
        let ipp = sidak_core::instrument::builtin("ipp-2017").unwrap();
        assert_eq!(verdict(&ipp, "2.49"), Some("weak"), "half of 0–5 is 2.5");
        assert_eq!(verdict(&ipp, "2.50"), None);
    }

    #[test]
    fn weights_read_as_percentages() {
        assert_eq!(percent("0.2185"), "21.85%");
        assert_eq!(percent("1/9"), "11.11%");
        assert_eq!(percent("1"), "100.00%");
    }

    #[test]
    fn answers_and_corrections_render_escaped() {
        assert_eq!(answer_text(&serde_json::json!(true)), "ya");
        assert_eq!(answer_text(&serde_json::json!({"na": true})), "N/A");
        let cell = answer_cell(Some(&serde_json::json!("<b>")), Some(&serde_json::json!(2)), None);
        assert!(cell.contains("&lt;b&gt;") && cell.contains("recorded in the field: 2"), "{cell}");
    }
}
