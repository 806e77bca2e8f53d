//! Scoring properties over every built-in instrument, and over a test instrument with
//! the answer kinds the built-ins lack (choice, count, number, text), N/A almost
//! everywhere, unit-type weights and a scale that does not start at 0: for generated
//! institutions with answers of every kind the instrument has (N/A where allowed,
//! some unanswered, some without their evidence, short questionnaires, deductions),
//! scoring is deterministic, independent of the order of units, products,
//! respondents and answers in the input, and publishes only figures on the scale.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{json, Value};
use sidak_core::instrument::{
    builtin, load_instrument, AnswerKind, Indicator, Instrument, Level, Location, BUILTIN_IDS,
};
use sidak_core::num::Published;
use sidak_core::scoring::{
    institution_document, score_institution, unit_document, AnswerInput, DeductionInput, InstitutionInput,
    InstitutionResult, NodeResult, Outcome, ProductInput, RespondentInput, Status, UnitInput,
};

const EVIDENCE: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

/// Every answer kind, N/A allowed on all but two indicators, questionnaires per unit
/// and a count per institution, on a 10–90 scale.
fn every_kind_instrument() -> Instrument {
    let doc = json!({
        "format": "sidak-instrument/1", "id": "every-kind", "version": 1, "title": "Every answer kind",
        "regime": "test", "sources": ["this test"], "choices": ["a test instrument"],
        "scale": {"min": "10", "max": "90"},
        "dimensions": [
            {"id": "a", "title": "A", "weight": "60", "variables": [
                {"id": "a1", "title": "A1", "indicators": [
                    {"id": "p-yes", "title": "P yes", "answer": {"kind": "yes_no"}, "source": "observation",
                     "level": "product", "na_allowed": true, "evidence_required": true},
                    {"id": "p-count", "title": "P count", "answer": {"kind": "count", "max": 9, "thresholds": [
                        {"min": "0", "score": "0"}, {"min": "2", "score": "1/2"}, {"min": "5", "score": "1"}]},
                     "source": "observation", "level": "product", "na_allowed": true}
                ]},
                {"id": "a2", "title": "A2", "indicators": [
                    {"id": "u-range", "title": "U range", "answer": {"kind": "scale", "min": 1, "max": 5},
                     "source": "document_check", "level": "unit", "na_allowed": true},
                    {"id": "u-prop", "title": "U proportional",
                     "answer": {"kind": "scale", "min": 0, "max": 4, "scoring": "proportional"},
                     "source": "observation", "level": "unit"}
                ]}
            ]},
            {"id": "b", "title": "B", "weight": "40", "variables": [
                {"id": "b1", "title": "B1", "indicators": [
                    {"id": "u-choice", "title": "U choice", "answer": {"kind": "choice", "options": [
                        {"id": "no", "label": "No", "score": "0"}, {"id": "part", "label": "Part", "score": "0.4"},
                        {"id": "yes", "label": "Yes", "score": "1"}]},
                     "source": "document_check", "level": "unit", "na_allowed": true},
                    {"id": "u-number", "title": "U number", "answer": {"kind": "number", "min": "0", "max": "10",
                        "thresholds": [{"min": "0", "score": "0"}, {"min": "2.5", "score": "0.3"},
                                       {"min": "7.5", "score": "1"}]},
                     "source": "observation", "level": "unit", "na_allowed": true},
                    {"id": "u-text", "title": "U text", "answer": {"kind": "text"}, "source": "observation",
                     "level": "unit"}
                ]},
                {"id": "b2", "title": "B2", "indicators": [
                    {"id": "q-user", "title": "Q user", "answer": {"kind": "choice", "options": [
                        {"id": "bad", "label": "Bad", "score": "0"}, {"id": "ok", "label": "OK", "score": "2/3"},
                        {"id": "good", "label": "Good", "score": "1"}]},
                     "source": "service_user_questionnaire", "level": "unit", "na_allowed": true},
                    {"id": "i-count", "title": "I count", "answer": {"kind": "count", "thresholds": [
                        {"min": "0", "score": "0"}, {"min": "3", "score": "1"}]},
                     "source": "document_check", "level": "institution"}
                ]}
            ]}
        ],
        "respondents": [{"kind": "service_user", "level": "unit", "expected": 5, "min": 2}],
        "rollup": {"units": "unit_type_weights", "unit_type_weights": {"dinkes": "3", "disdukcapil": "1"},
                   "location_weights": {"mpp": "1", "own_office": "1/2", "online": "0"}},
        "deductions": [{"id": "late", "title": "Late", "level": "unit", "max_points": "15"}],
        "bands": [{"grade": "A", "label": "A", "min": "50.00", "max": "90.00"},
                  {"grade": "B", "label": "B", "min": "10.00", "max": "49.99"}]
    });
    load_instrument(&doc.to_string()).unwrap_or_else(|e| panic!("{e}"))
}

fn instruments() -> Vec<Instrument> {
    let mut all: Vec<Instrument> = BUILTIN_IDS.iter().map(|id| builtin(id).unwrap()).collect();
    all.push(every_kind_instrument());
    all
}

/// A deterministic stream of choices (xorshift), so one seed is one input.
struct Tape(u64);

/// What an input is generated from: its choices, and whether it may have gaps
/// (unanswered questions, missing evidence, short questionnaires). Half the inputs have
/// none, so that complete, graded results are as common as incomplete ones.
struct Gen {
    tape: Tape,
    gaps: bool,
}

impl Gen {
    fn new(seed: u64) -> Gen {
        let mut tape = Tape(seed | 1);
        let gaps = tape.one_in(2);
        Gen { tape, gaps }
    }

    /// True one time in `n`, and never when the input has no gaps.
    fn gap(&mut self, n: u64) -> bool {
        self.gaps && self.tape.one_in(n)
    }
}

impl Tape {
    fn next(&mut self) -> u64 {
        let s = &mut self.0;
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        *s
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i as u64 + 1) as usize);
        }
    }
}

/// A value of the indicator's kind (N/A one time in four where allowed), or nothing
/// (one time in forty, in inputs with gaps: an unanswered question).
fn generate_answer(indicator: &Indicator, generator: &mut Gen) -> Option<AnswerInput> {
    if generator.gap(40) {
        return None;
    }
    let tape = &mut generator.tape;
    let value = if indicator.na_allowed && tape.one_in(4) {
        json!({"na": true})
    } else {
        match &indicator.answer {
            AnswerKind::YesNo => json!(tape.one_in(2)),
            AnswerKind::Scale { min, max, .. } => json!(min + tape.below((max - min + 1) as u64) as i64),
            AnswerKind::Choice { options } => json!(options[tape.below(options.len() as u64) as usize].id),
            AnswerKind::Count { min, max, .. } => {
                json!(min + tape.below(max.map_or(12, |max| (max - min + 1) as u64)) as i64)
            }
            AnswerKind::Number { min, max, .. } => {
                let (lo, hi) = (
                    min.as_ref().map_or(0, |m| m.publish().hundredths()),
                    max.as_ref().map_or(10_000, |m| m.publish().hundredths()),
                );
                json!(Published::from_hundredths(lo + tape.below((hi - lo + 1) as u64) as i64).to_string())
            }
            AnswerKind::Text => json!("catatan"),
        }
    };
    // Evidence is cited where it is required, except one time in twenty with gaps.
    Some(if indicator.evidence_required && !generator.gap(20) {
        AnswerInput::with_evidence(value, vec![EVIDENCE.to_owned()])
    } else {
        AnswerInput::new(value)
    })
}

/// The answers of one scope: every indicator `wanted` selects.
fn generate_answers(
    instrument: &Instrument,
    generator: &mut Gen,
    wanted: impl Fn(&Indicator) -> bool,
) -> BTreeMap<String, AnswerInput> {
    instrument
        .indicators()
        .filter(|i| wanted(i))
        .filter_map(|i| generate_answer(i, generator).map(|a| (i.id.clone(), a)))
        .collect()
}

fn direct_answers(instrument: &Instrument, level: Level, generator: &mut Gen) -> BTreeMap<String, AnswerInput> {
    generate_answers(instrument, generator, |i| i.level == level && i.source.respondent_kind().is_none())
}

/// The questionnaires of one scope: per kind counted there, the minimum to two more,
/// or (with gaps) one short of it one time in eight.
fn respondents(instrument: &Instrument, level: Level, place: &str, generator: &mut Gen) -> Vec<RespondentInput> {
    let mut out = Vec::new();
    for rule in instrument.respondents.iter().filter(|r| r.level == level) {
        let n = if generator.gap(8) { rule.min.saturating_sub(1) } else { rule.min + generator.tape.below(3) as u32 };
        for k in 0..n {
            out.push(RespondentInput {
                id: format!("{place}-{}-{k}", rule.kind.name()),
                kind: rule.kind,
                answers: generate_answers(instrument, generator, |i| i.source.respondent_kind() == Some(rule.kind)),
            });
        }
    }
    out
}

/// The instrument's deductions at `level`, each applied one time in three.
fn deductions(instrument: &Instrument, level: Level, tape: &mut Tape) -> Vec<DeductionInput> {
    let mut out = Vec::new();
    for rule in instrument.deductions.iter().filter(|d| d.level == level) {
        if tape.one_in(3) {
            let hundredths = 1 + tape.below(rule.max_points.publish().hundredths() as u64) as i64;
            out.push(DeductionInput {
                id: rule.id.clone(),
                points: Published::from_hundredths(hundredths).to_exact(),
                reason: "tindak lanjut belum dilaksanakan".into(),
            });
        }
    }
    out
}

fn generate_institution(instrument: &Instrument, units: usize, products: usize, seed: u64) -> InstitutionInput {
    let g = &mut Gen::new(seed);
    let unit_types = ["disdukcapil", "dinkes"];
    InstitutionInput {
        id: "kota-uji".into(),
        name: "Pemerintah Kota Uji".into(),
        kind: "kota".into(),
        region: None,
        answers: direct_answers(instrument, Level::Institution, g),
        respondents: respondents(instrument, Level::Institution, "i", g),
        deductions: deductions(instrument, Level::Institution, &mut g.tape),
        units: (0..units)
            .map(|u| UnitInput {
                id: format!("u{u}"),
                name: format!("Unit {u}"),
                unit_type: unit_types[g.tape.below(2) as usize].into(),
                answers: direct_answers(instrument, Level::Unit, g),
                respondents: respondents(instrument, Level::Unit, &format!("u{u}"), g),
                deductions: deductions(instrument, Level::Unit, &mut g.tape),
                products: (0..products)
                    .map(|p| ProductInput {
                        id: format!("u{u}p{p}"),
                        name: format!("Produk {p}"),
                        location: Location::ALL[g.tape.below(4) as usize],
                        answers: direct_answers(instrument, Level::Product, g),
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// The input in another order: units, products and respondents shuffled in place,
/// then written as JSON with the members of every object (answers included) in a
/// shuffled order, and read back as a season file would be.
fn reordered(input: &InstitutionInput, tape: &mut Tape) -> InstitutionInput {
    let mut input = input.clone();
    tape.shuffle(&mut input.units);
    tape.shuffle(&mut input.respondents);
    for unit in &mut input.units {
        tape.shuffle(&mut unit.products);
        tape.shuffle(&mut unit.respondents);
    }
    let text = shuffled_json(&serde_json::to_value(&input).unwrap(), tape);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn shuffled_json(value: &Value, tape: &mut Tape) -> String {
    match value {
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            tape.shuffle(&mut members);
            let inner: Vec<String> = members
                .into_iter()
                .map(|(k, v)| format!("{}:{}", Value::String(k.clone()), shuffled_json(v, tape)))
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        Value::Array(items) => {
            format!("[{}]", items.iter().map(|v| shuffled_json(v, tape)).collect::<Vec<_>>().join(","))
        }
        other => other.to_string(),
    }
}

/// Every published figure of a result (score, provisional, before deductions), with
/// where it is.
fn every_figure(r: &InstitutionResult) -> Vec<(String, Published)> {
    fn outcome(place: &str, o: &Outcome, out: &mut Vec<(String, Published)>) {
        out.extend(o.score.map(|s| (format!("{place} score"), s)));
        out.extend(o.provisional.map(|s| (format!("{place} provisional"), s)));
    }
    fn nodes(place: &str, ns: &[NodeResult], out: &mut Vec<(String, Published)>) {
        for n in ns {
            let place = format!("{place} / {}", n.id);
            outcome(&place, &n.outcome, out);
            nodes(&place, &n.children, out);
        }
    }
    let mut out = Vec::new();
    outcome("institution", &r.outcome, &mut out);
    out.extend(r.before_deductions.map(|b| ("institution before deductions".to_owned(), b)));
    nodes("institution", &r.dimensions, &mut out);
    for u in &r.units {
        outcome(&u.id, &u.outcome, &mut out);
        out.extend(u.before_deductions.map(|b| (format!("{} before deductions", u.id), b)));
        nodes(&u.id, &u.dimensions, &mut out);
        for p in &u.products {
            outcome(&p.id, &p.outcome, &mut out);
            nodes(&p.id, &p.dimensions, &mut out);
        }
    }
    out
}

/// Graded nodes carry the grade of their published score; others carry none.
fn check_grading(instrument: &Instrument, place: &str, o: &Outcome) -> Result<(), TestCaseError> {
    match (o.status, o.score) {
        (Status::Complete, Some(score)) => {
            let band = instrument.band_for(score).ok_or_else(|| TestCaseError::fail(format!("{place}: no band")))?;
            let grading = o.grading.as_ref().ok_or_else(|| TestCaseError::fail(format!("{place}: no grade")))?;
            prop_assert_eq!(&grading.grade, &band.grade, "{}", place);
            prop_assert_eq!(grading.zone, band.zone, "{}", place);
        }
        (Status::Complete, None) => prop_assert!(false, "{}: complete without a score", place),
        _ => prop_assert!(o.score.is_none() && o.grading.is_none(), "{}: {:?} with a score or grade", place, o.status),
    }
    Ok(())
}

fn scored(instrument: &Instrument, input: &InstitutionInput) -> String {
    let result = score_institution(instrument, input).unwrap_or_else(|e| panic!("{}: {e}", instrument.reference));
    serde_json::to_string(&result).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn scoring_is_deterministic_order_independent_and_on_the_scale(
        units in 1usize..4,
        products in 0usize..3,
        seed in any::<u64>(),
    ) {
        for instrument in instruments() {
            let name = instrument.reference.to_string();
            let input = generate_institution(&instrument, units, products, seed);
            let first = scored(&instrument, &input);
            prop_assert_eq!(&first, &scored(&instrument, &input), "{} is not deterministic", name);
            let tape = &mut Tape(seed.rotate_left(17) | 1);
            for _ in 0..2 {
                let other = reordered(&input, tape);
                prop_assert_eq!(&first, &scored(&instrument, &other), "{} depends on the input order", name);
            }

            let result = score_institution(&instrument, &input).unwrap();
            // The documents the server stores are written directly, as serde would.
            prop_assert_eq!(&institution_document(&result), &first, "{} institution document", name);
            for u in &result.units {
                prop_assert_eq!(unit_document(u), serde_json::to_string(u).unwrap(), "{} unit document", name);
            }
            let (lo, hi) = (instrument.scale.min.publish(), instrument.scale.max.publish());
            for (place, figure) in every_figure(&result) {
                let on_scale = lo <= figure && figure <= hi;
                prop_assert!(on_scale, "{}: {} = {} is outside {}–{}", name, place, figure, lo, hi);
            }
            check_grading(&instrument, &format!("{name} institution"), &result.outcome)?;
            for u in &result.units {
                check_grading(&instrument, &format!("{name} {}", u.id), &u.outcome)?;
            }
        }
    }
}

/// The generator reaches what the property is about: every answer kind, N/A,
/// unanswered and unevidenced answers, short questionnaires and deductions, and
/// results of every status.
#[test]
fn the_generated_inputs_cover_every_kind_and_status() {
    let mut kinds = BTreeMap::<&str, usize>::new();
    let (mut na, mut statuses, mut deducted) = (0, BTreeMap::<String, usize>::new(), 0);
    for instrument in instruments() {
        for seed in 0..60u64 {
            let input = generate_institution(&instrument, 2, 2, seed * 7919 + 1);
            let mut answers: Vec<&BTreeMap<String, AnswerInput>> = vec![&input.answers];
            answers.extend(input.respondents.iter().map(|r| &r.answers));
            for u in &input.units {
                answers.push(&u.answers);
                answers.extend(u.respondents.iter().map(|r| &r.answers));
                answers.extend(u.products.iter().map(|p| &p.answers));
                deducted += u.deductions.len();
            }
            deducted += input.deductions.len();
            for (id, a) in answers.into_iter().flatten() {
                if a.value == json!({"na": true}) {
                    na += 1;
                } else {
                    *kinds.entry(instrument.indicator(id).unwrap().answer.name()).or_default() += 1;
                }
            }
            let r = score_institution(&instrument, &input).unwrap();
            let status = serde_json::to_value(r.outcome.status).unwrap();
            *statuses.entry(format!("{} {}", instrument.reference, status.as_str().unwrap())).or_default() += 1;
        }
    }
    assert_eq!(kinds.keys().copied().collect::<Vec<_>>(), ["choice", "count", "number", "scale", "text", "yes_no"]);
    assert!(na > 0 && deducted > 0, "N/A {na}, deductions {deducted}");
    for instrument in instruments() {
        for status in ["complete", "incomplete"] {
            let key = format!("{} {status}", instrument.reference);
            assert!(statuses.contains_key(&key), "no {key} result in {statuses:?}");
        }
    }
}
