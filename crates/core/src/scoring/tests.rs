//! Scoring tests: table-driven cases for every built-in instrument, the rules
//! (N/A, incomplete, deductions, location weights, rounding), and properties.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::*;
use crate::instrument::{builtin, Indicator, Instrument, Level, Location, RespondentKind, BUILTIN_IDS};
use crate::num::{Exact, Published};

const EVIDENCE: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

fn answer(indicator: &Indicator, value: Value) -> AnswerInput {
    if indicator.evidence_required {
        AnswerInput::with_evidence(value, vec![EVIDENCE.to_owned()])
    } else {
        AnswerInput::new(value)
    }
}

/// An institution with `units` units of `products` products each, every indicator
/// answered by `value` (None: left unanswered) and every questionnaire kind filled to
/// its minimum.
fn institution(
    instrument: &Instrument,
    units: usize,
    products: usize,
    value: impl Fn(&Indicator, &str) -> Option<Value>,
) -> InstitutionInput {
    let direct = |level: Level, place: &str| -> BTreeMap<String, AnswerInput> {
        instrument
            .indicators()
            .filter(|i| i.level == level && i.source.respondent_kind().is_none())
            .filter_map(|i| value(i, place).map(|v| (i.id.clone(), answer(i, v))))
            .collect()
    };
    let respondents = |level: Level, place: &str| -> Vec<RespondentInput> {
        instrument
            .respondents
            .iter()
            .filter(|r| r.level == level)
            .flat_map(|rule| (0..rule.min).map(move |n| (rule.kind, n)))
            .map(|(kind, n)| RespondentInput {
                id: format!("{}-{n}", kind.name()),
                kind,
                answers: instrument
                    .indicators()
                    .filter(|i| i.source.respondent_kind() == Some(kind))
                    .filter_map(|i| value(i, place).map(|v| (i.id.clone(), answer(i, v))))
                    .collect(),
            })
            .collect()
    };
    InstitutionInput {
        id: "kota-uji".into(),
        name: "Pemerintah Kota Uji".into(),
        kind: "kota".into(),
        region: Some("jateng".into()),
        answers: direct(Level::Institution, "institution"),
        respondents: respondents(Level::Institution, "institution"),
        deductions: Vec::new(),
        units: (0..units)
            .map(|u| {
                let place = format!("u{u}");
                UnitInput {
                    id: place.clone(),
                    name: format!("Unit {u}"),
                    unit_type: "disdukcapil".into(),
                    answers: direct(Level::Unit, &place),
                    respondents: respondents(Level::Unit, &place),
                    deductions: Vec::new(),
                    products: (0..products)
                        .map(|p| {
                            let pplace = format!("u{u}p{p}");
                            ProductInput {
                                id: pplace.clone(),
                                name: format!("Produk {p}"),
                                location: Location::Mpp,
                                answers: direct(Level::Product, &pplace),
                            }
                        })
                        .collect(),
                }
            })
            .collect(),
    }
}

fn max_value(i: &Indicator) -> Value {
    match &i.answer {
        crate::instrument::AnswerKind::YesNo => json!(true),
        crate::instrument::AnswerKind::Scale { max, .. } => json!(max),
        _ => json!(null),
    }
}

fn score(instrument: &Instrument, input: &InstitutionInput) -> InstitutionResult {
    score_institution(instrument, input).unwrap_or_else(|e| panic!("{e}"))
}

fn published(s: &str) -> Published {
    s.parse().unwrap()
}

/// (score, grade, zone) of an institution result.
fn graded(r: &InstitutionResult) -> (String, String, String) {
    let g = r.outcome.grading.as_ref();
    (
        r.outcome.score.map(|s| s.to_string()).unwrap_or_default(),
        g.map(|g| g.grade.clone()).unwrap_or_default(),
        g.and_then(|g| g.zone).map(|z| z.name().to_owned()).unwrap_or_default(),
    )
}

#[test]
fn every_band_edge_of_every_builtin_grades_as_published() {
    // (instrument, figure, grade, zone)
    let cases: &[(&str, &str, &str, &str)] = &[
        ("penilaian-2023", "100.00", "A", "green"),
        ("penilaian-2023", "88.00", "A", "green"),
        ("penilaian-2023", "87.99", "B", "green"),
        ("penilaian-2023", "78.00", "B", "green"),
        ("penilaian-2023", "77.99", "C", "yellow"),
        ("penilaian-2023", "54.00", "C", "yellow"),
        ("penilaian-2023", "53.99", "D", "red"),
        ("penilaian-2023", "32.00", "D", "red"),
        ("penilaian-2023", "31.99", "E", "red"),
        ("penilaian-2023", "0.00", "E", "red"),
        ("kepatuhan-2021", "100.00", "Tinggi", "green"),
        ("kepatuhan-2021", "81.00", "Tinggi", "green"),
        ("kepatuhan-2021", "80.99", "Sedang", "yellow"),
        ("kepatuhan-2021", "51.00", "Sedang", "yellow"),
        ("kepatuhan-2021", "50.99", "Rendah", "red"),
        ("kepatuhan-2021", "0.00", "Rendah", "red"),
        ("ikm-2017", "100.00", "A", ""),
        ("ikm-2017", "88.31", "A", ""),
        ("ikm-2017", "88.30", "B", ""),
        ("ikm-2017", "76.61", "B", ""),
        ("ikm-2017", "76.60", "C", ""),
        ("ikm-2017", "65.00", "C", ""),
        ("ikm-2017", "64.99", "D", ""),
        ("ikm-2017", "25.00", "D", ""),
        ("ipp-2017", "5.00", "A", ""),
        ("ipp-2017", "4.51", "A", ""),
        ("ipp-2017", "4.50", "A-", ""),
        ("ipp-2017", "4.01", "A-", ""),
        ("ipp-2017", "4.00", "B", ""),
        ("ipp-2017", "3.51", "B", ""),
        ("ipp-2017", "3.50", "B-", ""),
        ("ipp-2017", "3.01", "B-", ""),
        ("ipp-2017", "3.00", "C", ""),
        ("ipp-2017", "2.51", "C", ""),
        ("ipp-2017", "2.50", "C-", ""),
        ("ipp-2017", "2.01", "C-", ""),
        ("ipp-2017", "2.00", "D", ""),
        ("ipp-2017", "1.51", "D", ""),
        ("ipp-2017", "1.50", "E", ""),
        ("ipp-2017", "1.01", "E", ""),
        ("ipp-2017", "1.00", "F", ""),
        ("ipp-2017", "0.00", "F", ""),
    ];
    for (id, figure, grade, zone) in cases {
        let instrument = builtin(id).unwrap();
        let band = instrument.band_for(published(figure)).unwrap_or_else(|| panic!("{id} {figure}: no band"));
        assert_eq!(
            (band.grade.as_str(), band.zone.map(|z| z.name()).unwrap_or("")),
            (*grade, *zone),
            "{id} at {figure}"
        );
    }
    // Every built-in covers its whole scale: each hundredth has exactly one band.
    for id in BUILTIN_IDS {
        let instrument = builtin(id).unwrap();
        let (lo, hi) = (instrument.scale.min.publish().hundredths(), instrument.scale.max.publish().hundredths());
        for h in lo..=hi {
            let figure = Published::from_hundredths(h);
            let n = instrument.bands.iter().filter(|b| b.min <= figure && figure <= b.max).count();
            assert_eq!(n, 1, "{id} at {figure}");
        }
    }
}

#[test]
fn penilaian_full_marks_score_100_and_grade_a() {
    let instrument = builtin("penilaian-2023").unwrap();
    let result = score(&instrument, &institution(&instrument, 2, 2, |i, _| Some(max_value(i))));
    assert_eq!(graded(&result), ("100.00".into(), "A".into(), "green".into()));
    assert_eq!(result.outcome.status, Status::Complete);
    assert!(result.missing.is_empty(), "{:?}", result.missing);
    assert_eq!(result.rule, "mean");
}

/// A penilaian-2023 institution scoring exactly 100 − 21.54/3 = 92.82 (the complaint
/// dimension at 2 of 3), minus an institution deduction of `points`.
fn penilaian_with_deduction(points: &str) -> InstitutionResult {
    let instrument = builtin("penilaian-2023").unwrap();
    let mut input = institution(&instrument, 1, 2, |i, _| {
        Some(if i.id.starts_with("pengaduan.") { json!(2) } else { max_value(i) })
    });
    input.deductions.push(DeductionInput {
        id: "lahp-tidak-ditindaklanjuti".into(),
        points: points.parse().unwrap(),
        reason: "LAHP 2023 belum ditindaklanjuti".into(),
    });
    score(&instrument, &input)
}

#[test]
fn penilaian_band_edges_through_the_engine() {
    let cases = [
        ("4.82", "88.00", "A"),
        ("4.83", "87.99", "B"),
        ("4.475", "88.35", "A"),  // 88.345 rounds half-up
        ("4.8251", "87.99", "B"), // 87.9949 rounds down
        ("4.825", "88.00", "A"),  // 87.995 rounds up: the grade follows the published figure
    ];
    for (points, figure, grade) in cases {
        let r = penilaian_with_deduction(points);
        assert_eq!(r.before_deductions, Some(published("92.82")), "deduction {points}");
        assert_eq!((graded(&r).0.as_str(), graded(&r).1.as_str()), (figure, grade), "deduction {points}");
    }
}

#[test]
fn kepatuhan_zone_edges_through_the_engine() {
    // Eight variables fully met, `pelayanan-terpadu` never, `rekognisi` in k of 1000
    // products: score = 80 + k/100.
    let instrument = builtin("kepatuhan-2021").unwrap();
    for (k, figure, zone) in [(100, "81.00", "green"), (99, "80.99", "yellow"), (0, "80.00", "yellow")] {
        let input = institution(&instrument, 1, 1000, |i, place| {
            let p: usize = place.rsplit('p').next().unwrap().parse().unwrap();
            Some(json!(match i.id.as_str() {
                "pelayanan-terpadu.tersedia" => false,
                "rekognisi.penghargaan" => p < k,
                _ => true,
            }))
        });
        let r = score(&instrument, &input);
        assert_eq!((graded(&r).0.as_str(), graded(&r).2.as_str()), (figure, zone), "k = {k}");
        assert_eq!(r.rule, "product_weighted");
    }
}

/// The worked example of PermenPANRB 14/2017 in [52]: 29 respondents, element totals
/// 105, 101, 100, 116, 102, 105, 106, 105, 115.
fn ikm_example() -> InstitutionInput {
    let instrument = builtin("ikm-2017").unwrap();
    // Per element: (count of 4s, count of 3s, count of 2s).
    let counts = [
        (18, 11, 0),
        (14, 15, 0),
        (15, 12, 2),
        (29, 0, 0),
        (15, 14, 0),
        (18, 11, 0),
        (19, 10, 0),
        (18, 11, 0),
        (28, 1, 0),
    ];
    let elements: Vec<&Indicator> = instrument.indicators().collect();
    assert_eq!(elements.len(), 9);
    let respondents = (0..29)
        .map(|r| RespondentInput {
            id: format!("r{r}"),
            kind: RespondentKind::ServiceUser,
            answers: elements
                .iter()
                .zip(counts)
                .map(|(e, (fours, threes, _))| {
                    let v = if r < fours {
                        4
                    } else if r < fours + threes {
                        3
                    } else {
                        2
                    };
                    (e.id.clone(), AnswerInput::new(json!(v)))
                })
                .collect(),
        })
        .collect();
    InstitutionInput {
        id: "kemenag-sulbar".into(),
        name: "Kantor Wilayah".into(),
        kind: "kementerian".into(),
        region: None,
        answers: BTreeMap::new(),
        respondents: Vec::new(),
        deductions: Vec::new(),
        units: vec![UnitInput {
            id: "ptsp".into(),
            name: "PTSP".into(),
            unit_type: "ptsp".into(),
            answers: BTreeMap::new(),
            respondents,
            deductions: Vec::new(),
            products: Vec::new(),
        }],
    }
}

#[test]
fn ikm_uses_exact_ninths_not_rounded_weights() {
    let instrument = builtin("ikm-2017").unwrap();
    let r = score(&instrument, &ikm_example());
    // Exact: 955 / (29 × 9) × 25 = 91.4750… → 91.48, grade A.
    assert_eq!(graded(&r), ("91.48".into(), "A".into(), String::new()));
    // The regulation's rounded weights (0.11 each) would publish 90.56 instead.
    let nrr_sum = Exact::ratio(955, 29);
    let rounded = nrr_sum * "0.11".parse::<Exact>().unwrap() * Exact::from_int(25);
    assert_eq!(rounded.publish().to_string(), "90.56");
    // And an instrument written with 0.11 weights is refused: they add up to 0.99.
    let mut doc = instrument.document;
    for ind in doc["dimensions"][0]["variables"][0]["indicators"].as_array_mut().unwrap() {
        ind["weight"] = json!("0.11");
    }
    let err = Instrument::from_document(doc).unwrap_err();
    assert!(err.to_string().contains("add up to 0.99"), "{err}");
}

#[test]
fn ikm_not_applicable_element_drops_out_and_weights_renormalise() {
    let instrument = builtin("ikm-2017").unwrap();
    let mut input = ikm_example();
    let biaya = instrument.indicators().find(|i| i.na_allowed).expect("one element allows N/A").id.clone();
    for r in &mut input.units[0].respondents {
        r.answers.insert(biaya.clone(), AnswerInput::new(json!({"na": true})));
    }
    let r = score(&instrument, &input);
    // Without the all-4 element: (955 − 116) / 29 / 8 × 25 = 90.409… → 90.41.
    assert_eq!(graded(&r).0, "90.41");
    let node = &r.units[0].dimensions[0].children[0].children.iter().find(|n| n.id == biaya).unwrap();
    assert_eq!(node.outcome.status, Status::NotApplicable);
}

#[test]
fn ipp_scores_on_its_own_scale() {
    let instrument = builtin("ipp-2017").unwrap();
    let r = score(&instrument, &institution(&instrument, 1, 0, |_, _| Some(json!(4))));
    assert_eq!(graded(&r), ("4.00".into(), "B".into(), String::new()));
    let r = score(
        &instrument,
        &institution(&instrument, 1, 0, |i, _| Some(json!(if i.id.starts_with("kebijakan.") { 5 } else { 4 }))),
    );
    // Kebijakan weighs 30 of 100: 4 + 0.3 = 4.30 → A-.
    assert_eq!(graded(&r), ("4.30".into(), "A-".into(), String::new()));
}

#[test]
fn missing_answers_make_results_incomplete_never_zero() {
    let instrument = builtin("penilaian-2023").unwrap();
    let input = institution(&instrument, 2, 2, |i, place| {
        (!(i.id == "proses.produk" && place == "u1p0")).then(|| max_value(i))
    });
    let r = score(&instrument, &input);
    assert_eq!(r.outcome.status, Status::Incomplete);
    assert_eq!(
        (r.outcome.score, r.outcome.grading.clone()),
        (None, None),
        "incomplete results get no score and no grade"
    );
    assert_eq!(r.outcome.provisional, Some(published("100.00")));
    assert_eq!(r.missing, vec!["unit `u1` / product `u1p0`: `proses.produk` has no answer".to_owned()]);
    let u0 = r.units.iter().find(|u| u.id == "u0").unwrap();
    assert_eq!(u0.outcome.status, Status::Complete, "the other unit is unaffected");
    let u1 = r.units.iter().find(|u| u.id == "u1").unwrap();
    assert_eq!(u1.outcome.status, Status::Incomplete);
}

#[test]
fn short_questionnaires_and_missing_evidence_are_listed() {
    let instrument = builtin("penilaian-2023").unwrap();
    let mut input = institution(&instrument, 1, 1, |i, _| Some(max_value(i)));
    input.respondents.truncate(29);
    input.units[0].products[0].answers.get_mut("proses.persyaratan").unwrap().evidence.clear();
    let r = score(&instrument, &input);
    assert_eq!(r.outcome.status, Status::Incomplete);
    assert!(
        r.missing.contains(&"institution: 29 of at least 30 `service_user` questionnaires".to_owned()),
        "{:?}",
        r.missing
    );
    assert!(
        r.missing.contains(&"unit `u0` / product `u0p0`: `proses.persyaratan` needs evidence".to_owned()),
        "{:?}",
        r.missing
    );
}

/// A small instrument for the rules themselves: two dimensions, N/A allowed
/// everywhere, location weights and a unit deduction.
fn rules_instrument(units: &str) -> Instrument {
    let doc = json!({
        "format": "sidak-instrument/1", "id": "rules", "version": 1, "title": "Rules", "regime": "test",
        "choices": ["test instrument"],
        "scale": {"min": "0", "max": "100"},
        "dimensions": [
            {"id": "a", "title": "A", "weight": "75", "variables": [
                {"id": "a1", "title": "A1", "indicators": [
                    {"id": "p1", "title": "P1", "answer": {"kind": "yes_no"}, "source": "observation", "level": "product", "na_allowed": true},
                    {"id": "p2", "title": "P2", "answer": {"kind": "count", "thresholds": [{"min": "0", "score": "0"}, {"min": "2", "score": "1/2"}, {"min": "5", "score": "1"}]}, "source": "observation", "level": "product", "na_allowed": true}
                ]}
            ]},
            {"id": "b", "title": "B", "weight": "25", "variables": [
                {"id": "b1", "title": "B1", "indicators": [
                    {"id": "u1", "title": "U1", "answer": {"kind": "choice", "options": [{"id": "no", "label": "No", "score": "0"}, {"id": "part", "label": "Part", "score": "0.4"}, {"id": "yes", "label": "Yes", "score": "1"}]}, "source": "document_check", "level": "unit", "na_allowed": true},
                    {"id": "t1", "title": "T1", "answer": {"kind": "text"}, "source": "observation", "level": "unit"}
                ]}
            ]}
        ],
        "rollup": {"units": units, "unit_type_weights": if units == "unit_type_weights" { json!({"dinkes": "3", "disdukcapil": "1"}) } else { Value::Null },
                   "location_weights": {"mpp": "1", "own_office": "1/2", "online": "0"}},
        "deductions": [{"id": "late", "title": "Late", "level": "unit", "max_points": "50"}],
        "bands": [{"grade": "A", "label": "A", "min": "50.00", "max": "100.00"}, {"grade": "B", "label": "B", "min": "0.00", "max": "49.99"}]
    });
    let mut doc = doc;
    if units != "unit_type_weights" {
        doc["rollup"].as_object_mut().unwrap().remove("unit_type_weights");
    }
    Instrument::from_document(doc).unwrap_or_else(|e| panic!("{e}"))
}

fn rules_unit(id: &str, unit_type: &str, u1: Value, products: Vec<(Location, Value, Value)>) -> UnitInput {
    UnitInput {
        id: id.into(),
        name: id.into(),
        unit_type: unit_type.into(),
        answers: [("u1".to_owned(), AnswerInput::new(u1)), ("t1".to_owned(), AnswerInput::new(json!("catatan")))]
            .into(),
        respondents: Vec::new(),
        deductions: Vec::new(),
        products: products
            .into_iter()
            .enumerate()
            .map(|(n, (location, p1, p2))| ProductInput {
                id: format!("{id}-p{n}"),
                name: format!("p{n}"),
                location,
                answers: [("p1".to_owned(), AnswerInput::new(p1)), ("p2".to_owned(), AnswerInput::new(p2))].into(),
            })
            .collect(),
    }
}

fn rules_institution(units: Vec<UnitInput>) -> InstitutionInput {
    InstitutionInput {
        id: "i".into(),
        name: "I".into(),
        kind: "kota".into(),
        region: None,
        answers: BTreeMap::new(),
        respondents: Vec::new(),
        deductions: Vec::new(),
        units,
    }
}

/// One table for the roll-up rules: (case, roll-up, units, expected institution score).
#[test]
fn rules_table() {
    let na = json!({"na": true});
    let cases: Vec<(&str, &str, Vec<UnitInput>, &str)> = vec![
        // p1 yes (1), p2 = 3 → 1/2: a1 = 3/4; u1 yes: b = 1 → 0.75 × 0.75 + 0.25 = 81.25
        (
            "plain",
            "mean",
            vec![rules_unit("x", "dinkes", json!("yes"), vec![(Location::Mpp, json!(true), json!(3))])],
            "81.25",
        ),
        // N/A p2: a1 = p1 only = 1 → 100
        (
            "na drops out",
            "mean",
            vec![rules_unit("x", "dinkes", json!("yes"), vec![(Location::Mpp, json!(true), na.clone())])],
            "100.00",
        ),
        // All of dimension a N/A: a drops out, b alone decides: part = 0.4 → 40
        (
            "all-na parent drops out",
            "mean",
            vec![rules_unit("x", "dinkes", json!("part"), vec![(Location::Mpp, na.clone(), na)])],
            "40.00",
        ),
        // Location: p1 yes at MPP (w 1), no at own office (w 1/2): 2/3; p2 5 and 0: 2/3 → a1 = 2/3; u1 no → 50.00
        (
            "location weights",
            "mean",
            vec![rules_unit(
                "x",
                "dinkes",
                json!("no"),
                vec![(Location::Mpp, json!(true), json!(5)), (Location::OwnOffice, json!(false), json!(0))],
            )],
            "50.00",
        ),
        // Online weighs 0: only the MPP product counts → a1 = 1 → 75 + 25 = 100
        (
            "zero-weight location",
            "mean",
            vec![rules_unit(
                "x",
                "dinkes",
                json!("yes"),
                vec![(Location::Mpp, json!(true), json!(5)), (Location::Online, json!(false), json!(0))],
            )],
            "100.00",
        ),
        // Two units 100 and 25 (a = 0, u1 yes): mean 62.50
        (
            "mean of units",
            "mean",
            vec![
                rules_unit("x", "dinkes", json!("yes"), vec![(Location::Mpp, json!(true), json!(5))]),
                rules_unit("y", "disdukcapil", json!("yes"), vec![(Location::Mpp, json!(false), json!(0))]),
            ],
            "62.50",
        ),
        // Weighted by products: x has 3 products (100), y has 1 (25): (300 + 25) / 4 = 81.25
        (
            "product weighted",
            "product_weighted",
            vec![
                rules_unit("x", "dinkes", json!("yes"), vec![(Location::Mpp, json!(true), json!(5)); 3]),
                rules_unit("y", "disdukcapil", json!("yes"), vec![(Location::Mpp, json!(false), json!(0))]),
            ],
            "81.25",
        ),
        // Unit-type weights dinkes 3, disdukcapil 1: same figures → 81.25
        (
            "unit type weights",
            "unit_type_weights",
            vec![
                rules_unit("x", "dinkes", json!("yes"), vec![(Location::Mpp, json!(true), json!(5))]),
                rules_unit("y", "disdukcapil", json!("yes"), vec![(Location::Mpp, json!(false), json!(0))]),
            ],
            "81.25",
        ),
    ];
    for (case, units, input, expected) in cases {
        let instrument = rules_instrument(units);
        let r = score(&instrument, &rules_institution(input));
        assert_eq!(r.outcome.score.map(|s| s.to_string()).as_deref(), Some(expected), "case `{case}`");
        assert_eq!(r.rule, units, "case `{case}` records its rule");
    }
}

#[test]
fn unit_deductions_cut_points_and_never_go_below_the_scale() {
    let instrument = rules_instrument("mean");
    let mut unit = rules_unit("x", "dinkes", json!("yes"), vec![(Location::Mpp, json!(true), json!(3))]);
    unit.deductions.push(DeductionInput {
        id: "late".into(),
        points: "1.25".parse().unwrap(),
        reason: "tindak lanjut terlambat".into(),
    });
    let r = score(&instrument, &rules_institution(vec![unit.clone()]));
    assert_eq!(r.units[0].before_deductions, Some(published("81.25")));
    assert_eq!(r.units[0].outcome.score, Some(published("80.00")));
    assert_eq!(r.outcome.score, Some(published("80.00")));
    unit.answers.insert("u1".into(), AnswerInput::new(json!("no")));
    unit.products[0].answers.insert("p1".into(), AnswerInput::new(json!(false)));
    unit.products[0].answers.insert("p2".into(), AnswerInput::new(json!(0)));
    unit.deductions[0].points = "50".parse().unwrap();
    let r = score(&instrument, &rules_institution(vec![unit]));
    assert_eq!(r.units[0].outcome.score, Some(published("0.00")), "floored at the scale minimum");
}

#[test]
fn bad_input_names_every_place_and_scores_nothing() {
    let instrument = builtin("penilaian-2023").unwrap();
    let mut input = institution(&instrument, 1, 1, |i, _| Some(max_value(i)));
    let product = &mut input.units[0].products[0].answers;
    product.insert("proses.persyaratan".into(), answer(instrument.indicator("proses.persyaratan").unwrap(), json!(4)));
    product.insert("proses.prosedur".into(), answer(instrument.indicator("proses.prosedur").unwrap(), json!(true)));
    product.insert("proses.tidak-ada".into(), AnswerInput::new(json!(1)));
    product.insert("pengaduan.kanal-aktif".into(), AnswerInput::new(json!(1)));
    input.units[0].answers.insert("input.penyuluhan".into(), AnswerInput::new(json!(2)));
    input.deductions.push(DeductionInput {
        id: "lahp-tidak-ditindaklanjuti".into(),
        points: "11".parse().unwrap(),
        reason: " ".into(),
    });
    input.units[0]
        .answers
        .insert("pengaduan.kanal-aktif".into(), AnswerInput::with_evidence(json!(3), vec!["../etc/passwd".into()]));
    let err = score_institution(&instrument, &input).unwrap_err();
    let faults: Vec<String> = err.faults.iter().map(|f| f.to_string()).collect();
    let expect = [
        "$.units[0].products[0].answers.proses.persyaratan: indicator `proses.persyaratan` takes a whole number from 0 to 3, found 4",
        "$.units[0].products[0].answers.proses.prosedur: indicator `proses.prosedur` takes a whole number from 0 to 3, found true/false (true)",
        "$.units[0].products[0].answers.proses.tidak-ada: unknown indicator `proses.tidak-ada` in penilaian-2023@1",
        "$.units[0].products[0].answers.pengaduan.kanal-aktif: indicator `pengaduan.kanal-aktif` is answered per unit, not per product",
        "$.units[0].answers.input.penyuluhan: indicator `input.penyuluhan` is answered in `official` questionnaires, not directly",
        "$.deductions[0].points: points must be above 0 and at most 10, found 11",
        "$.deductions[0].reason: a deduction needs its reason",
        "$.units[0].answers.pengaduan.kanal-aktif.evidence[0]: `../etc/passwd` is not a SHA-256 digest (64 lowercase hex digits)",
    ];
    for e in expect {
        assert!(faults.iter().any(|f| f == e), "missing fault {e:?} in {faults:#?}");
    }
    assert_eq!(faults.len(), expect.len(), "{faults:#?}");
}

#[test]
fn season_files_check_their_format_and_instrument() {
    let instrument = builtin("penilaian-2023").unwrap();
    let season = SeasonInput {
        format: "sidak-season/9".into(),
        season: None,
        instrument: Some("ikm-2017".into()),
        institutions: vec![],
    };
    let err = score_season(&instrument, &season).unwrap_err().to_string();
    assert!(err.contains("$.format: expected \"sidak-season/1\""), "{err}");
    assert!(err.contains("recorded with `ikm-2017` but is being scored with `penilaian-2023@1`"), "{err}");
}

#[test]
fn the_documented_example_season_scores() {
    let text = include_str!("../../../../docs/examples/season-2023.json");
    let season: SeasonInput = serde_json::from_str(text).unwrap();
    let instrument = builtin(season.instrument.as_deref().unwrap()).unwrap();
    let results = score_season(&instrument, &season).unwrap();
    // A snapshot of every published figure down to products and the institutions'
    // dimensions. A scoring change shows up here: check the new figures by hand, then
    // paste the printed snapshot.
    let snapshot = published_figures(&results);
    assert!(snapshot == SEASON_2023_FIGURES, "the sample season's figures changed:\n{snapshot}");
    // docs/scoring.md §6 quotes the deduction.
    let tanjung = results.institutions.iter().find(|i| i.id == "kab-tanjung-harapan").unwrap();
    assert_eq!(
        (tanjung.before_deductions, tanjung.outcome.score),
        (Some(published("63.14")), Some(published("60.64")))
    );
    let table = render_table(&results, "example");
    for inst in &season.institutions {
        assert!(table.contains(&inst.name), "{table}");
    }
}

/// docs/examples/season-2023.json scored with penilaian-2023: one line per published
/// figure, `id status score grade zone` (and the figure before deductions).
const SEASON_2023_FIGURES: &str = "\
kab-lembah-hijau incomplete (81.47)
  missing: unit `kab-lembah-hijau.dpmptsp` / product `kab-lembah-hijau.dpmptsp.pbg`: `proses.biaya-tarif` has no answer
  dimension input complete 82.82
  dimension proses incomplete (78.54)
  dimension output complete 86.22
  dimension pengaduan complete 79.17
  kab-lembah-hijau.dinkes complete 82.06 B green
    kab-lembah-hijau.dinkes.pirt complete 86.36
    kab-lembah-hijau.dinkes.sik complete 75.76
  kab-lembah-hijau.disdukcapil complete 83.73 B green
    kab-lembah-hijau.disdukcapil.akta-lahir complete 77.27
    kab-lembah-hijau.disdukcapil.ktp-el complete 83.33
  kab-lembah-hijau.dpmptsp incomplete (78.62)
    kab-lembah-hijau.dpmptsp.nib complete 72.73
    kab-lembah-hijau.dpmptsp.pbg incomplete (73.33)
kab-tanjung-harapan complete 60.64 C yellow (before deductions 63.14)
  dimension input complete 60.93
  dimension proses complete 64.14
  dimension output complete 63.11
  dimension pengaduan complete 63.89
  kab-tanjung-harapan.dinkes complete 59.00 C yellow
    kab-tanjung-harapan.dinkes.pirt complete 54.55
    kab-tanjung-harapan.dinkes.sik complete 59.09
  kab-tanjung-harapan.disdukcapil complete 68.97 C yellow
    kab-tanjung-harapan.disdukcapil.akta-lahir complete 80.30
    kab-tanjung-harapan.disdukcapil.ktp-el complete 63.64
  kab-tanjung-harapan.dpmptsp complete 61.44 C yellow
    kab-tanjung-harapan.dpmptsp.nib complete 68.18
    kab-tanjung-harapan.dpmptsp.pbg complete 59.09
kota-sukamaju complete 87.85 B green
  dimension input complete 87.15
  dimension proses complete 89.14
  dimension output complete 89.56
  dimension pengaduan complete 84.72
  kota-sukamaju.dinkes complete 86.70 B green
    kota-sukamaju.dinkes.pirt complete 83.33
    kota-sukamaju.dinkes.sik complete 87.88
  kota-sukamaju.disdukcapil complete 89.06 A green
    kota-sukamaju.disdukcapil.akta-lahir complete 90.91
    kota-sukamaju.disdukcapil.ktp-el complete 87.88
  kota-sukamaju.dpmptsp complete 87.80 B green
    kota-sukamaju.dpmptsp.nib complete 90.91
    kota-sukamaju.dpmptsp.pbg complete 93.94
";

/// One line per institution, institution dimension, unit and product of a season's
/// results, with its status, figure (provisional ones in brackets), grade and zone,
/// and what each incomplete institution is missing.
fn published_figures(results: &SeasonResult) -> String {
    use std::fmt::Write;
    fn line(out: &mut String, indent: usize, id: &str, o: &Outcome, before: Option<Published>) {
        let figure = match (o.score, o.provisional) {
            (Some(s), _) => s.to_string(),
            (None, Some(p)) => format!("({p})"),
            (None, None) => "-".into(),
        };
        let status = serde_json::to_value(o.status).unwrap();
        let _ = write!(out, "{:indent$}{id} {} {figure}", "", status.as_str().unwrap());
        if let Some(g) = &o.grading {
            let _ = write!(out, " {}", g.grade);
            if let Some(z) = g.zone {
                let _ = write!(out, " {}", z.name());
            }
        }
        if let Some(b) = before {
            let _ = write!(out, " (before deductions {b})");
        }
        out.push('\n');
    }
    let mut out = String::new();
    for inst in &results.institutions {
        line(&mut out, 0, &inst.id, &inst.outcome, inst.before_deductions);
        for m in &inst.missing {
            let _ = writeln!(out, "  missing: {m}");
        }
        for d in &inst.dimensions {
            line(&mut out, 2, &format!("dimension {}", d.id), &d.outcome, None);
        }
        for u in &inst.units {
            line(&mut out, 2, &u.id, &u.outcome, u.before_deductions);
            for p in &u.products {
                line(&mut out, 4, &p.id, &p.outcome, None);
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------
// Properties: crates/core/tests/scoring_properties.rs checks determinism, order
// independence and the scale over every built-in instrument and every answer kind.

/// Every published figure of a result.
fn every_figure(r: &InstitutionResult) -> Vec<Published> {
    fn nodes(ns: &[NodeResult], out: &mut Vec<Published>) {
        for n in ns {
            out.extend(n.outcome.score);
            out.extend(n.outcome.provisional);
            nodes(&n.children, out);
        }
    }
    let mut out = Vec::new();
    out.extend(r.outcome.score);
    out.extend(r.outcome.provisional);
    nodes(&r.dimensions, &mut out);
    for u in &r.units {
        out.extend(u.outcome.score);
        out.extend(u.outcome.provisional);
        nodes(&u.dimensions, &mut out);
        for p in &u.products {
            out.extend(p.outcome.score);
            nodes(&p.dimensions, &mut out);
        }
    }
    out
}

#[test]
fn answer_json_forms_round_trip() {
    for text in [
        r#"true"#,
        r#"{"na":true}"#,
        r#"{"value":2,"evidence":["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"]}"#,
        r#"{"value":3,"field_value":1}"#,
        r#"{"value":3,"evidence":["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"],"field_value":null}"#,
    ] {
        let a: AnswerInput = serde_json::from_str(text).unwrap();
        assert_eq!(serde_json::to_string(&a).unwrap(), text);
    }
    assert!(serde_json::from_str::<AnswerInput>(r#"{"value":2,"photo":1}"#).is_err());
}

/// A corrected answer scores exactly as the corrected value would, and its indicator
/// shows the recorded field value beside it.
#[test]
fn a_corrected_answer_scores_as_its_correction_and_shows_the_field_value() {
    let instrument = builtin("penilaian-2023").unwrap();
    let plain =
        institution(&instrument, 1, 1, |i, _| Some(if i.id == "proses.moto" { json!(1) } else { max_value(i) }));
    let mut corrected = plain.clone();
    let moto = corrected.units[0].products[0].answers.get_mut("proses.moto").unwrap();
    *moto = answer(instrument.indicator("proses.moto").unwrap(), json!(1)).correcting(json!(3));
    let kanal = corrected.units[0].answers.get_mut("pengaduan.kanal-aktif").unwrap();
    *kanal = kanal.clone().correcting(Value::Null);
    let (a, b) = (score(&instrument, &plain), score(&instrument, &corrected));
    assert_eq!(every_figure(&a), every_figure(&b), "a field value is never scored");
    let node = |r: &InstitutionResult, product: bool, id: &str| -> Value {
        let dims = if product { &r.units[0].products[0].dimensions } else { &r.units[0].dimensions };
        let json = serde_json::to_value(dims).unwrap();
        let found = json
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|d| d["children"].as_array().unwrap().clone())
            .flat_map(|v| v["children"].as_array().unwrap().clone())
            .find(|i| i["id"] == id);
        found.unwrap()
    };
    assert_eq!(node(&a, true, "proses.moto").get("field_value"), None);
    let moto = node(&b, true, "proses.moto");
    assert_eq!((&moto["answer"], &moto["field_value"]), (&json!(1), &json!(3)));
    let kanal = node(&b, false, "pengaduan.kanal-aktif");
    assert_eq!((&kanal["answer"], &kanal["field_value"]), (&json!(3), &Value::Null));
    // The documents the server stores, written directly, carry the field values too.
    assert_eq!(super::institution_document(&b), serde_json::to_string(&b).unwrap());
}

#[test]
fn exact_weights_of_the_builtins_sum_to_one() {
    for id in BUILTIN_IDS {
        let instrument = builtin(id).unwrap();
        let dims: Exact = instrument.dimensions.iter().map(|d| d.share.clone()).sum();
        assert_eq!(dims, Exact::one(), "{id}");
        for d in &instrument.dimensions {
            let vars: Exact = d.variables.iter().map(|v| v.share.clone()).sum();
            assert_eq!(vars, Exact::one(), "{id} {}", d.id);
        }
    }
}

#[test]
fn product_ids_are_unique_within_their_unit_not_across_units() {
    let instrument = rules_instrument("mean");
    // Two puskesmas both offer the same service: the same product code in two units.
    let mut a =
        rules_unit("puskesmas-1", "puskesmas", json!("yes"), vec![(Location::OwnOffice, json!(true), json!(3))]);
    let mut b =
        rules_unit("puskesmas-2", "puskesmas", json!("no"), vec![(Location::OwnOffice, json!(false), json!(1))]);
    a.products[0].id = "rawat-jalan".into();
    b.products[0].id = "rawat-jalan".into();
    let result = sidak_score(&instrument, &rules_institution(vec![a.clone(), b])).expect("scores");
    assert_eq!(result.units.len(), 2);
    assert_eq!(result.units[0].products[0].id, "rawat-jalan");
    assert_eq!(result.units[1].products[0].id, "rawat-jalan");
    // Within one unit a product still cannot appear twice.
    let mut twice = a;
    twice.products.push(twice.products[0].clone());
    let faults = sidak_score(&instrument, &rules_institution(vec![twice])).expect_err("refused");
    assert!(faults.contains("duplicate product id `rawat-jalan`"), "{faults}");
}

fn sidak_score(instrument: &Instrument, input: &InstitutionInput) -> Result<InstitutionResult, String> {
    crate::scoring::score_institution(instrument, input).map_err(|e| e.to_string())
}
