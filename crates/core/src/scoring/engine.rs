//! The scoring engine: checks the whole input first (every fault at once, nothing
//! partial), then computes the result tree in exact arithmetic.
//!
//! Rules (docs/scoring.md explains them with a worked example):
//! - an answer attains 0–1; a node's attainment is the weighted mean of its
//!   children's, over the children that are not "not applicable" (weights
//!   re-normalise); a node whose children are all N/A is N/A itself;
//! - a product-level indicator's attainment in a unit is the mean over the unit's
//!   products, weighted by where each product was observed;
//! - questionnaire indicators take the mean over the respondents of their kind in
//!   their scope, before any weighting;
//! - a score is `scale.min + attainment × (scale.max − scale.min)`; deductions cut
//!   points from a unit's or the institution's score, never below `scale.min`;
//! - units roll up to the institution by the instrument's rule;
//! - anything required that is missing makes the node and its ancestors incomplete:
//!   no score and no grade, only a provisional figure over what was answered.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::Value;

use super::answer::{attainment, parse_answer, AnswerValue};
use super::input::*;
use super::result::*;
use crate::hash::Sha256Digest;
use crate::instrument::{Fault, Indicator, Instrument, Level, RespondentKind, UnitRollup};
use crate::num::{Exact, ExactSum, Published};

/// Every fault found in a scoring input; nothing was scored.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ScoringErrors {
    /// The faults, each with the JSON path of the place.
    pub faults: Vec<Fault>,
}

impl fmt::Display for ScoringErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.faults.len();
        write!(f, "the input has {n} fault{}:", if n == 1 { "" } else { "s" })?;
        for fault in &self.faults {
            write!(f, "\n  {fault}")?;
        }
        Ok(())
    }
}

/// Scores every institution of a season against `instrument`.
pub fn score_season(instrument: &Instrument, season: &SeasonInput) -> Result<SeasonResult, ScoringErrors> {
    let mut faults = Vec::new();
    if season.format != SEASON_FORMAT {
        faults.push(fault("$.format", format!("expected \"{SEASON_FORMAT}\", found \"{}\"", season.format)));
    }
    if let Some(named) = &season.instrument {
        let r = &instrument.reference;
        if named != &r.id && named != &r.to_string() {
            faults.push(fault(
                "$.instrument",
                format!("the season was recorded with `{named}` but is being scored with `{r}`"),
            ));
        }
    }
    let mut seen = BTreeMap::new();
    let mut checked = Vec::new();
    for (i, inst) in season.institutions.iter().enumerate() {
        let path = format!("$.institutions[{i}]");
        if let Some(first) = seen.insert(inst.id.as_str(), i) {
            faults.push(fault(
                &format!("{path}.id"),
                format!("duplicate institution id `{}` (also at $.institutions[{first}])", inst.id),
            ));
        }
        match check_institution(instrument, inst, &path) {
            Ok(c) => checked.push(c),
            Err(mut e) => faults.append(&mut e),
        }
    }
    if !faults.is_empty() {
        return Err(ScoringErrors { faults });
    }
    let mut institutions: Vec<InstitutionResult> = checked.iter().map(|c| compute_institution(instrument, c)).collect();
    institutions.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(SeasonResult {
        format: RESULTS_FORMAT,
        instrument: instrument.reference.clone(),
        instrument_digest: instrument.digest.clone(),
        institutions,
    })
}

/// Scores one institution.
pub fn score_institution(
    instrument: &Instrument,
    input: &InstitutionInput,
) -> Result<InstitutionResult, ScoringErrors> {
    let checked = check_institution(instrument, input, "$").map_err(|faults| ScoringErrors { faults })?;
    Ok(compute_institution(instrument, &checked))
}

fn fault(path: &str, message: impl Into<String>) -> Fault {
    Fault { path: path.to_owned(), message: message.into() }
}

// ---------------------------------------------------------------------------------
// Checking: parse every answer against the instrument, collecting every fault.

/// An answer read against its indicator.
struct Parsed {
    value: AnswerValue,
    raw: Value,
    evidence: usize,
    /// The value recorded in the field, when a correction replaced it.
    field_value: Option<Value>,
}

type Answers<'a> = BTreeMap<&'a str, Parsed>;

struct Respondent<'a> {
    id: &'a str,
    answers: Answers<'a>,
}

struct Scope<'a> {
    answers: Answers<'a>,
    respondents: BTreeMap<RespondentKind, Vec<Respondent<'a>>>,
    deductions: Vec<AppliedDeduction>,
}

struct CheckedProduct<'a> {
    input: &'a ProductInput,
    weight: Exact,
    answers: Answers<'a>,
}

struct CheckedUnit<'a> {
    input: &'a UnitInput,
    weight: Exact,
    scope: Scope<'a>,
    products: Vec<CheckedProduct<'a>>,
}

struct CheckedInstitution<'a> {
    input: &'a InstitutionInput,
    scope: Scope<'a>,
    units: Vec<CheckedUnit<'a>>,
}

struct Checker<'i> {
    instrument: &'i Instrument,
    faults: Vec<Fault>,
}

fn check_institution<'a>(
    instrument: &Instrument,
    input: &'a InstitutionInput,
    path: &str,
) -> Result<CheckedInstitution<'a>, Vec<Fault>> {
    let mut c = Checker { instrument, faults: Vec::new() };
    let scope = c.scope(&input.answers, &input.respondents, &input.deductions, Level::Institution, path);
    let mut unit_ids = BTreeMap::new();
    let mut units = Vec::new();
    for (u, unit) in input.units.iter().enumerate() {
        let upath = format!("{path}.units[{u}]");
        // Products are identified within their unit: two puskesmas both offer rawat jalan.
        let mut product_ids = BTreeMap::new();
        if let Some(first) = unit_ids.insert(unit.id.as_str(), u) {
            c.faults.push(fault(
                &format!("{upath}.id"),
                format!("duplicate unit id `{}` (also at {path}.units[{first}])", unit.id),
            ));
        }
        let scope = c.scope(&unit.answers, &unit.respondents, &unit.deductions, Level::Unit, &upath);
        let mut products = Vec::new();
        for (p, product) in unit.products.iter().enumerate() {
            let ppath = format!("{upath}.products[{p}]");
            if let Some(first) = product_ids.insert(product.id.as_str(), ppath.clone()) {
                c.faults.push(fault(
                    &format!("{ppath}.id"),
                    format!("duplicate product id `{}` (also at {first})", product.id),
                ));
            }
            let answers = c.answers(&product.answers, Level::Product, None, &ppath);
            let weight = instrument.rollup.location_weights.get(&product.location).cloned().unwrap_or_else(Exact::one);
            products.push(CheckedProduct { input: product, weight, answers });
        }
        let weight = match &instrument.rollup.units {
            UnitRollup::Mean => Exact::one(),
            UnitRollup::ProductWeighted => Exact::from_int(unit.products.len() as i64),
            UnitRollup::UnitTypeWeights(weights) => match weights.get(&unit.unit_type) {
                Some(w) => w.clone(),
                None => {
                    let known: Vec<_> = weights.keys().map(String::as_str).collect();
                    c.faults.push(fault(
                        &format!("{upath}.type"),
                        format!(
                            "unit type `{}` has no weight in {}'s roll-up (known: {})",
                            unit.unit_type,
                            instrument.reference,
                            known.join(", ")
                        ),
                    ));
                    Exact::zero()
                }
            },
        };
        units.push(CheckedUnit { input: unit, weight, scope, products });
    }
    if c.faults.is_empty() {
        Ok(CheckedInstitution { input, scope, units })
    } else {
        Err(c.faults)
    }
}

impl<'i> Checker<'i> {
    fn scope<'a>(
        &mut self,
        answers: &'a BTreeMap<String, AnswerInput>,
        respondents: &'a [RespondentInput],
        deductions: &'a [DeductionInput],
        level: Level,
        path: &str,
    ) -> Scope<'a> {
        let answers = self.answers(answers, level, None, path);
        let mut by_kind: BTreeMap<RespondentKind, Vec<Respondent<'a>>> = BTreeMap::new();
        let mut ids = BTreeSet::new();
        for (r, resp) in respondents.iter().enumerate() {
            let rpath = format!("{path}.respondents[{r}]");
            if !ids.insert(resp.id.as_str()) {
                self.faults.push(fault(&format!("{rpath}.id"), format!("duplicate respondent id `{}`", resp.id)));
            }
            match self.instrument.respondent_rule(resp.kind) {
                None => self.faults.push(fault(
                    &format!("{rpath}.kind"),
                    format!("{} has no `{}` questionnaires", self.instrument.reference, resp.kind.name()),
                )),
                Some(rule) if rule.level != level => self.faults.push(fault(
                    &format!("{rpath}.kind"),
                    format!(
                        "`{}` questionnaires are counted per {}, not per {}",
                        resp.kind.name(),
                        rule.level.name(),
                        level.name()
                    ),
                )),
                Some(_) => {}
            }
            let answers = self.answers(&resp.answers, level, Some(resp.kind), &rpath);
            by_kind.entry(resp.kind).or_default().push(Respondent { id: &resp.id, answers });
        }
        let mut applied = Vec::new();
        for (d, ded) in deductions.iter().enumerate() {
            let dpath = format!("{path}.deductions[{d}]");
            let Some(rule) = self.instrument.deduction(&ded.id) else {
                let known: Vec<_> = self.instrument.deductions.iter().map(|d| d.id.as_str()).collect();
                self.faults.push(fault(
                    &format!("{dpath}.id"),
                    format!(
                        "unknown deduction `{}` (the instrument defines: {})",
                        ded.id,
                        if known.is_empty() { "none".to_owned() } else { known.join(", ") }
                    ),
                ));
                continue;
            };
            if rule.level != level {
                self.faults.push(fault(
                    &format!("{dpath}.id"),
                    format!("deduction `{}` applies per {}, not per {}", ded.id, rule.level.name(), level.name()),
                ));
            }
            if ded.points.is_negative() || ded.points.is_zero() || ded.points > rule.max_points {
                self.faults.push(fault(
                    &format!("{dpath}.points"),
                    format!("points must be above 0 and at most {}, found {}", rule.max_points, ded.points),
                ));
            }
            if ded.reason.trim().is_empty() {
                self.faults.push(fault(&format!("{dpath}.reason"), "a deduction needs its reason"));
            }
            applied.push(AppliedDeduction {
                id: ded.id.clone(),
                points: ded.points.clone(),
                reason: ded.reason.clone(),
            });
        }
        Scope { answers, respondents: by_kind, deductions: applied }
    }

    fn answers<'a>(
        &mut self,
        answers: &'a BTreeMap<String, AnswerInput>,
        level: Level,
        respondent: Option<RespondentKind>,
        path: &str,
    ) -> Answers<'a> {
        let mut out = BTreeMap::new();
        for (id, answer) in answers {
            let apath = || format!("{path}.answers.{id}");
            let Some(indicator) = self.instrument.indicator(id) else {
                self.faults.push(fault(&apath(), format!("unknown indicator `{id}` in {}", self.instrument.reference)));
                continue;
            };
            if indicator.level != level {
                self.faults.push(fault(
                    &apath(),
                    format!("indicator `{id}` is answered per {}, not per {}", indicator.level.name(), level.name()),
                ));
                continue;
            }
            match (indicator.source.respondent_kind(), respondent) {
                (Some(kind), None) => {
                    self.faults.push(fault(
                        &apath(),
                        format!("indicator `{id}` is answered in `{}` questionnaires, not directly", kind.name()),
                    ));
                    continue;
                }
                (None, Some(kind)) => {
                    self.faults.push(fault(
                        &apath(),
                        format!(
                            "indicator `{id}` is not part of the `{}` questionnaire (its source is {})",
                            kind.name(),
                            indicator.source.name()
                        ),
                    ));
                    continue;
                }
                (Some(want), Some(got)) if want != got => {
                    self.faults.push(fault(
                        &apath(),
                        format!("indicator `{id}` is answered by `{}` respondents, not `{}`", want.name(), got.name()),
                    ));
                    continue;
                }
                _ => {}
            }
            for (e, digest) in answer.evidence.iter().enumerate() {
                if let Err(err) = digest.parse::<Sha256Digest>() {
                    self.faults.push(fault(&format!("{}.evidence[{e}]", apath()), err.to_string()));
                }
            }
            match parse_answer(indicator, &answer.value) {
                Ok(value) => {
                    out.insert(
                        id.as_str(),
                        Parsed {
                            value,
                            raw: answer.value.clone(),
                            evidence: answer.evidence.len(),
                            field_value: answer.field_value.clone(),
                        },
                    );
                }
                Err(err) => self.faults.push(fault(&apath(), err.to_string())),
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------
// Computing.

/// The attainment of a node, 0–1 (or a score, once converted).
#[derive(Clone, Debug)]
enum Attain {
    Value(Exact),
    NotApplicable,
    /// Something required is missing; the figure over what was answered, if any.
    Missing(Option<Exact>),
}

/// Weighted mean over the children that are not N/A.
fn combine(items: impl IntoIterator<Item = (Exact, Attain)>) -> Attain {
    let (mut any, mut missing) = (false, false);
    // Weights and weighted figures of what was answered and of what has a provisional
    // figure: a mean over the answered alone is a mean over both when nothing is missing.
    let (mut weights, mut weighted) = (ExactSum::default(), ExactSum::default());
    for (w, a) in items {
        match a {
            Attain::NotApplicable => {}
            Attain::Value(x) => {
                any = true;
                weighted.add_product(&w, &x);
                weights.add(&w);
            }
            Attain::Missing(p) => {
                any = true;
                missing = true;
                if let Some(x) = p {
                    weighted.add_product(&w, &x);
                    weights.add(&w);
                }
            }
        }
    }
    if !any {
        return Attain::NotApplicable;
    }
    let mean = weighted.total().checked_div(&weights.total());
    if missing {
        return Attain::Missing(mean);
    }
    match mean {
        Some(x) => Attain::Value(x),
        None => Attain::NotApplicable,
    }
}

impl Attain {
    fn map(self, f: impl Fn(Exact) -> Exact) -> Attain {
        match self {
            Attain::Value(x) => Attain::Value(f(x)),
            Attain::Missing(p) => Attain::Missing(p.map(f)),
            Attain::NotApplicable => Attain::NotApplicable,
        }
    }
}

/// A place inside another (`unit `U` / product `P``), written out only when something
/// there is missing: most answers are there, and the text would be thrown away.
struct Sub<'a> {
    place: &'a str,
    what: &'static str,
    id: &'a str,
}

/// Where a `missing` sentence says something is missing. Written by hand rather than
/// through `format!`: a season without its photos writes a sentence for every answer
/// that needs one, and the formatting machinery cost more than the scoring of it.
trait Place {
    fn push_to(&self, out: &mut String);
}

impl Place for &str {
    fn push_to(&self, out: &mut String) {
        out.push_str(self);
    }
}

impl Place for Sub<'_> {
    /// `place / what `id``.
    fn push_to(&self, out: &mut String) {
        for part in [self.place, " / ", self.what, " `", self.id, "`"] {
            out.push_str(part);
        }
    }
}

/// `place: `indicator` what`, e.g. ``unit `U` / product `P`: `proses.moto` needs evidence``.
fn missing_sentence(place: &dyn Place, indicator: &str, what: &str) -> String {
    let mut out = String::with_capacity(96);
    place.push_to(&mut out);
    for part in [": `", indicator, "` ", what] {
        out.push_str(part);
    }
    out
}

struct Calc<'i> {
    instrument: &'i Instrument,
    /// The result scale's width, `max - min`.
    span: Exact,
}

/// An indicator's attainment in a scope, with what it used.
#[derive(Clone)]
struct IndicatorCalc {
    attain: Attain,
    answer: Option<Value>,
    respondents: Option<u32>,
    /// The field value a correction replaced, shown beside `answer`.
    field_value: Option<Value>,
}

impl IndicatorCalc {
    /// A result that used no direct answer.
    fn without_answer(attain: Attain, respondents: Option<u32>) -> IndicatorCalc {
        IndicatorCalc { attain, answer: None, respondents, field_value: None }
    }

    /// A result from a direct answer, if there is one.
    fn with_answer(attain: Attain, parsed: Option<&Parsed>) -> IndicatorCalc {
        IndicatorCalc {
            attain,
            answer: parsed.map(|p| p.raw.clone()),
            respondents: None,
            field_value: parsed.and_then(|p| p.field_value.clone()),
        }
    }
}

impl<'i> Calc<'i> {
    fn to_score(&self, a: Attain) -> Attain {
        let min = &self.instrument.scale.min;
        a.map(|x| min + &(x * &self.span))
    }

    /// A unit's or an institution's outcome: its score (already on the result scale),
    /// published and graded.
    fn graded(&self, score: &Attain) -> Outcome {
        self.outcome(score, Exact::publish, true)
    }

    /// A tree node's or a product's outcome: its attainment put on the result scale and
    /// published (rounded from the attainment directly), ungraded.
    fn ungraded(&self, a: &Attain) -> Outcome {
        self.outcome(a, |x| x.publish_scaled(&self.instrument.scale.min, &self.span), false)
    }

    /// An outcome whose figures `publish` writes, with the band of its score if `graded`.
    fn outcome(&self, a: &Attain, publish: impl Fn(&Exact) -> Published, graded: bool) -> Outcome {
        match a {
            Attain::Value(x) => {
                let published = publish(x);
                let grading = graded.then(|| self.instrument.band_for(published)).flatten().map(|b| Grading {
                    grade: b.grade.clone(),
                    label: b.label.clone(),
                    zone: b.zone,
                });
                Outcome { status: Status::Complete, score: Some(published), grading, provisional: None }
            }
            Attain::NotApplicable => {
                Outcome { status: Status::NotApplicable, score: None, grading: None, provisional: None }
            }
            Attain::Missing(p) => {
                Outcome { status: Status::Incomplete, score: None, grading: None, provisional: p.as_ref().map(publish) }
            }
        }
    }

    fn node(&self, id: &str, weight: &Exact, attain: &Attain, children: Vec<NodeResult>) -> NodeResult {
        NodeResult {
            id: id.to_owned(),
            weight: weight.clone(),
            outcome: self.ungraded(attain),
            answer: None,
            field_value: None,
            respondents: None,
            children,
        }
    }

    /// One answer's attainment, noting what is missing.
    fn answered(
        &self,
        indicator: &Indicator,
        parsed: Option<&Parsed>,
        place: &dyn Place,
        missing: Option<&mut BTreeSet<String>>,
    ) -> Attain {
        match parsed {
            None => {
                if let Some(missing) = missing {
                    missing.insert(missing_sentence(place, &indicator.id, "has no answer"));
                }
                Attain::Missing(None)
            }
            Some(p) => match attainment(indicator, &p.value) {
                None => Attain::NotApplicable,
                Some(x) if indicator.evidence_required && p.evidence == 0 => {
                    if let Some(missing) = missing {
                        missing.insert(missing_sentence(place, &indicator.id, "needs evidence"));
                    }
                    Attain::Missing(Some(x))
                }
                Some(x) => Attain::Value(x),
            },
        }
    }

    /// The mean over a scope's respondents of their kind, before any weighting.
    fn questionnaire(
        &self,
        indicator: &Indicator,
        kind: RespondentKind,
        scope: &Scope<'_>,
        place: &str,
        missing: &mut BTreeSet<String>,
    ) -> IndicatorCalc {
        let rule = self
            .instrument
            .respondent_rule(kind)
            .expect("checked at load: questionnaire indicators have a respondent rule");
        let empty = Vec::new();
        let respondents = scope.respondents.get(&kind).unwrap_or(&empty);
        let count = respondents.len() as u32;
        let short = count < rule.min;
        if short {
            missing.insert(format!("{place}: {count} of at least {} `{}` questionnaires", rule.min, kind.name()));
        }
        let mut answered = 0u32;
        let items = respondents.iter().map(|r| {
            let a = self.answered(
                indicator,
                r.answers.get(indicator.id.as_str()),
                &Sub { place, what: "respondent", id: r.id },
                Some(&mut *missing),
            );
            if matches!(a, Attain::Value(_)) {
                answered += 1;
            }
            (Exact::one(), a)
        });
        let mut attain = combine(items.collect::<Vec<_>>());
        if short {
            attain = match attain {
                Attain::Value(x) => Attain::Missing(Some(x)),
                Attain::NotApplicable => Attain::Missing(None),
                m => m,
            };
        }
        IndicatorCalc::without_answer(attain, Some(answered))
    }

    fn direct(
        &self,
        indicator: &Indicator,
        scope: &Scope<'_>,
        place: &str,
        missing: &mut BTreeSet<String>,
    ) -> IndicatorCalc {
        match indicator.source.respondent_kind() {
            Some(kind) => self.questionnaire(indicator, kind, scope, place, missing),
            None => {
                let parsed = scope.answers.get(indicator.id.as_str());
                let attain = if indicator.is_scored() {
                    self.answered(indicator, parsed, &place, Some(missing))
                } else {
                    Attain::NotApplicable
                };
                IndicatorCalc::with_answer(attain, parsed)
            }
        }
    }

    /// A product-level indicator over a unit's products. What each product misses is
    /// not written here: it is exactly what the product's own tree writes (the same
    /// indicators, answers and places), and the unit takes those lists over.
    fn product_level(
        &self,
        indicator: &Indicator,
        unit: &CheckedUnit<'_>,
        place: &str,
        missing: &mut BTreeSet<String>,
    ) -> IndicatorCalc {
        if !indicator.is_scored() {
            return IndicatorCalc::without_answer(Attain::NotApplicable, None);
        }
        if unit.products.is_empty() {
            missing.insert(format!("{place}: no service product observed"));
            return IndicatorCalc::without_answer(Attain::Missing(None), None);
        }
        let items: Vec<_> = unit
            .products
            .iter()
            .map(|p| {
                (
                    p.weight.clone(),
                    self.answered(
                        indicator,
                        p.answers.get(indicator.id.as_str()),
                        &Sub { place, what: "product", id: &p.input.id },
                        None,
                    ),
                )
            })
            .collect();
        IndicatorCalc::without_answer(combine(items), None)
    }

    /// Builds a dimensions → variables → indicators tree from per-indicator results;
    /// `include` selects the indicators (and so drops empty variables and dimensions).
    fn tree(
        &self,
        include: impl Fn(&Indicator) -> bool,
        mut leaf: impl FnMut(&Indicator) -> IndicatorCalc,
    ) -> Tree<'i> {
        let mut dims = Vec::new();
        let mut dim_nodes = Vec::new();
        let mut by_node = BTreeMap::new();
        for dimension in &self.instrument.dimensions {
            let mut vars = Vec::new();
            let mut var_nodes = Vec::new();
            for variable in &dimension.variables {
                let mut inds = Vec::new();
                let mut ind_nodes = Vec::new();
                for indicator in variable.indicators.iter().filter(|i| include(i)) {
                    let calc = leaf(indicator);
                    let mut node = self.node(&indicator.id, &indicator.share, &calc.attain, Vec::new());
                    if !indicator.is_scored() && calc.answer.is_some() {
                        node.outcome.status = Status::Complete;
                    }
                    node.answer = calc.answer;
                    node.field_value = calc.field_value;
                    node.respondents = calc.respondents;
                    ind_nodes.push(node);
                    if indicator.is_scored() {
                        inds.push((indicator.share.clone(), calc.attain));
                    }
                }
                if ind_nodes.is_empty() {
                    continue;
                }
                let attain = combine(inds);
                var_nodes.push(self.node(&variable.id, &variable.share, &attain, ind_nodes));
                by_node.insert(variable.id.as_str(), attain.clone());
                vars.push((variable.share.clone(), attain));
            }
            if var_nodes.is_empty() {
                continue;
            }
            let attain = combine(vars);
            dim_nodes.push(self.node(&dimension.id, &dimension.share, &attain, var_nodes));
            by_node.insert(dimension.id.as_str(), attain.clone());
            dims.push((dimension.share.clone(), attain));
        }
        Tree { attain: combine(dims), nodes: dim_nodes, by_node }
    }

    fn deduct(&self, score: Attain, deductions: &[AppliedDeduction]) -> Attain {
        if deductions.is_empty() {
            return score;
        }
        let total: Exact = deductions.iter().map(|d| d.points.clone()).sum();
        let floor = self.instrument.scale.min.clone();
        score.map(|x| (x - &total).max_of(floor.clone()))
    }
}

/// A computed tree: its attainment, its nodes, and each dimension's and variable's
/// exact attainment by id (the instrument's ids, borrowed).
struct Tree<'i> {
    attain: Attain,
    nodes: Vec<NodeResult>,
    by_node: BTreeMap<&'i str, Attain>,
}

struct UnitCalc<'i> {
    result: UnitResult,
    score: Attain,
    by_node: BTreeMap<&'i str, Attain>,
}

fn compute_institution(instrument: &Instrument, inst: &CheckedInstitution<'_>) -> InstitutionResult {
    let calc = Calc { instrument, span: &instrument.scale.max - &instrument.scale.min };
    let mut inst_missing = BTreeSet::new();
    // Institution-level indicators are computed once and shared by every unit.
    let mut institution_level: BTreeMap<&str, IndicatorCalc> = BTreeMap::new();
    for indicator in instrument.indicators().filter(|i| i.level == Level::Institution) {
        let c = calc.direct(indicator, &inst.scope, "institution", &mut inst_missing);
        institution_level.insert(&indicator.id, c);
    }

    let mut units: Vec<UnitCalc<'_>> =
        inst.units.iter().map(|u| compute_unit(&calc, u, &institution_level, &inst_missing)).collect();
    units.sort_by(|a, b| a.result.id.cmp(&b.result.id));
    let none_assessed = units.is_empty().then_some("institution: no unit assessed");
    // The institution misses what its units miss, what it misses itself, and a unit.
    let missing = sorted_union(
        units
            .iter()
            .flat_map(|u| u.result.missing.iter().map(String::as_str))
            .chain(inst_missing.iter().map(String::as_str))
            .chain(none_assessed),
    );
    let score = if units.is_empty() {
        Attain::Missing(None)
    } else {
        combine(units.iter().map(|u| (u.result.weight.clone(), u.score.clone())))
    };
    let before = score.clone();
    let score = calc.deduct(score, &inst.scope.deductions);

    // Breakdown by dimension and variable over units, with the same unit weights.
    let mut dimensions = Vec::new();
    for dimension in &instrument.dimensions {
        let over_units = |get: &dyn Fn(&UnitCalc<'_>) -> Option<Attain>| {
            combine(units.iter().filter_map(|u| get(u).map(|a| (u.result.weight.clone(), a))).collect::<Vec<_>>())
        };
        let attain = over_units(&|u| u.by_node.get(dimension.id.as_str()).cloned());
        let children = dimension
            .variables
            .iter()
            .map(|v| calc.node(&v.id, &v.share, &over_units(&|u| u.by_node.get(v.id.as_str()).cloned()), Vec::new()))
            .collect();
        dimensions.push(calc.node(&dimension.id, &dimension.share, &attain, children));
    }

    InstitutionResult {
        id: inst.input.id.clone(),
        name: inst.input.name.clone(),
        kind: inst.input.kind.clone(),
        region: inst.input.region.clone(),
        outcome: calc.graded(&score),
        before_deductions: before_deductions(&before, &inst.scope.deductions),
        deductions: inst.scope.deductions.clone(),
        rule: instrument.rollup.units.name(),
        missing,
        dimensions,
        units: units.into_iter().map(|u| u.result).collect(),
    }
}

/// The strings of `items` in order, each once: what a `BTreeSet` of them would hold.
/// The items come as sorted lists one after the other (a product's, a unit's), which
/// the stable sort merges as the runs they are, instead of a set inserting each string
/// in turn; the strings are copied once, at the end.
fn sorted_union<'a>(items: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut all: Vec<&str> = items.collect();
    all.sort();
    all.dedup();
    all.into_iter().map(str::to_owned).collect()
}

fn before_deductions(before: &Attain, deductions: &[AppliedDeduction]) -> Option<crate::num::Published> {
    match (before, deductions.is_empty()) {
        (Attain::Value(x), false) => Some(x.publish()),
        _ => None,
    }
}

fn compute_unit<'i>(
    calc: &Calc<'i>,
    unit: &CheckedUnit<'_>,
    institution_level: &BTreeMap<&str, IndicatorCalc>,
    inst_missing: &BTreeSet<String>,
) -> UnitCalc<'i> {
    let place = format!("unit `{}`", unit.input.id);
    let mut missing = BTreeSet::new();
    let mut uses_institution = false;
    let tree = calc.tree(
        |_| true,
        |indicator| match indicator.level {
            Level::Product => calc.product_level(indicator, unit, &place, &mut missing),
            Level::Unit => calc.direct(indicator, &unit.scope, &place, &mut missing),
            Level::Institution => {
                uses_institution = true;
                institution_level[indicator.id.as_str()].clone()
            }
        },
    );
    if uses_institution && matches!(tree.attain, Attain::Missing(_)) {
        missing.extend(inst_missing.iter().cloned());
    }

    let mut products: Vec<ProductResult> = unit
        .products
        .iter()
        .map(|p| {
            let mut pmissing = BTreeSet::new();
            let pplace = Sub { place: &place, what: "product", id: &p.input.id };
            let tree = calc.tree(
                |i| i.level == Level::Product && i.is_scored(),
                |indicator| {
                    let parsed = p.answers.get(indicator.id.as_str());
                    IndicatorCalc::with_answer(calc.answered(indicator, parsed, &pplace, Some(&mut pmissing)), parsed)
                },
            );
            ProductResult {
                id: p.input.id.clone(),
                name: p.input.name.clone(),
                location: p.input.location,
                weight: p.weight.clone(),
                outcome: calc.ungraded(&tree.attain),
                missing: pmissing.into_iter().collect(),
                dimensions: tree.nodes,
            }
        })
        .collect();
    products.sort_by(|a, b| a.id.cmp(&b.id));
    // The unit misses what its products miss (see `Calc::product_level`).
    let missing = sorted_union(
        missing.iter().map(String::as_str).chain(products.iter().flat_map(|p| p.missing.iter().map(String::as_str))),
    );

    let before = calc.to_score(tree.attain);
    let score = calc.deduct(before.clone(), &unit.scope.deductions);
    UnitCalc {
        result: UnitResult {
            id: unit.input.id.clone(),
            name: unit.input.name.clone(),
            unit_type: unit.input.unit_type.clone(),
            weight: unit.weight.clone(),
            outcome: calc.graded(&score),
            before_deductions: before_deductions(&before, &unit.scope.deductions),
            deductions: unit.scope.deductions.clone(),
            missing,
            dimensions: tree.nodes,
            products,
        },
        score,
        by_node: tree.by_node,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    proptest::proptest! {
        /// Lists merged by `sorted_union` come out as a set of their strings would hold
        /// them, whether each list is sorted (as products' and units' are) or not.
        #[test]
        fn sorted_union_is_what_a_set_holds(
            lists in proptest::collection::vec(proptest::collection::vec("[a-c` /:]{0,5}", 0..8), 0..6),
            sort_each in proptest::bool::ANY,
        ) {
            let mut lists = lists;
            if sort_each {
                for l in &mut lists {
                    l.sort();
                    l.dedup();
                }
            }
            let set: BTreeSet<&str> = lists.iter().flatten().map(String::as_str).collect();
            let union = super::sorted_union(lists.iter().flatten().map(String::as_str));
            proptest::prop_assert_eq!(union, set.into_iter().map(str::to_owned).collect::<Vec<_>>());
        }
    }
}
