//! Loading and validating instruments: the built-ins load, and every kind of fault is
//! reported with its path, all at once.

use super::*;
use serde_json::{json, Value};

fn minimal() -> Value {
    json!({
        "format": "sidak-instrument/1",
        "id": "test-min",
        "version": 1,
        "title": "Minimal",
        "regime": "test",
        "scale": {"min": "0", "max": "100"},
        "dimensions": [
            {"id": "d1", "title": "D1", "weight": "60", "variables": [
                {"id": "v1", "title": "V1", "indicators": [
                    {"id": "i1", "title": "I1", "answer": {"kind": "yes_no"}, "source": "observation", "level": "product"},
                    {"id": "i2", "title": "I2", "answer": {"kind": "scale", "min": 0, "max": 3}, "source": "observation", "level": "unit", "na_allowed": true}
                ]}
            ]},
            {"id": "d2", "title": "D2", "weight": "40", "variables": [
                {"id": "v2", "title": "V2", "indicators": [
                    {"id": "i3", "title": "I3", "answer": {"kind": "choice", "options": [
                        {"id": "none", "label": "None", "score": "0"},
                        {"id": "some", "label": "Some", "score": "0.5"},
                        {"id": "all", "label": "All", "score": "1"}]},
                     "source": "document_check", "level": "unit"},
                    {"id": "i4", "title": "I4", "answer": {"kind": "text"}, "source": "observation", "level": "unit"}
                ]}
            ]}
        ],
        "rollup": {"units": "mean"},
        "bands": [
            {"grade": "A", "label": "Top", "zone": "green", "min": "80.00", "max": "100.00"},
            {"grade": "B", "label": "Mid", "zone": "yellow", "min": "50.00", "max": "79.99"},
            {"grade": "C", "label": "Low", "zone": "red", "min": "0.00", "max": "49.99"}
        ]
    })
}

/// Loads a modified minimal instrument and returns its faults as "path: message".
fn faults_of(edit: impl FnOnce(&mut Value)) -> Vec<String> {
    let mut doc = minimal();
    edit(&mut doc);
    match Instrument::from_document(doc) {
        Ok(_) => Vec::new(),
        Err(e) => e.faults.iter().map(|f| f.to_string()).collect(),
    }
}

fn check_fault(edit: impl FnOnce(&mut Value), path: &str, words: &str) {
    let faults = faults_of(edit);
    assert!(
        faults.iter().any(|f| f.starts_with(&format!("{path}: ")) && f.contains(words)),
        "expected a fault at {path} mentioning {words:?}, got {faults:#?}"
    );
}

#[test]
fn builtins_load_and_cite_their_sources() {
    for id in BUILTIN_IDS {
        let instrument = builtin(id).expect("built-in exists");
        assert_eq!(instrument.reference.id, id);
        assert!(!instrument.sources.is_empty(), "{id} cites no source");
        assert!(!instrument.choices.is_empty(), "{id} states no choice");
        assert_eq!(instrument.digest.len(), 64);
    }
    assert!(builtin("no-such").is_none());
}

#[test]
fn minimal_instrument_loads_with_exact_shares() {
    let instrument = Instrument::from_document(minimal()).unwrap();
    assert_eq!(instrument.dimensions[0].share, "0.6".parse().unwrap());
    assert_eq!(instrument.dimensions[0].variables[0].indicators[0].share, "1/2".parse().unwrap());
    assert!(instrument.indicator("i4").unwrap().share.is_zero(), "free text is never scored");
    assert_eq!(instrument.bands[0].grade, "A", "bands are kept highest first");
}

#[test]
fn reports_every_fault_at_once() {
    let mut doc = minimal();
    doc["dimensions"][0]["weight"] = json!("59.99");
    doc["dimensions"][1]["variables"][0]["indicators"][0]["answer"]["kind"] = json!("slider");
    doc["bands"][1]["max"] = json!("79.98");
    doc["dimensions"][1]["id"] = json!("d1");
    let err = Instrument::from_document(doc).unwrap_err();
    let found: std::collections::BTreeSet<(&str, &str)> =
        err.faults.iter().map(|f| (f.path.as_str(), f.message.as_str())).collect();
    let expected = [
        (
            "$.dimensions",
            "the weights of these dimensions add up to 99.99; they must add up to exactly 1 or 100 \
             (write fractions such as 1/9 for exact thirds and ninths)",
        ),
        ("$.dimensions[1].id", "duplicate id `d1` (first used at $.dimensions[0])"),
        (
            "$.dimensions[1].variables[0].indicators[0].answer.kind",
            "unknown answer kind `slider` (expected one of: yes_no, scale, choice, count, number, text)",
        ),
        (
            "$.bands[0]",
            "gap between band B (up to 79.98) and band A (from 80.00): scores in between would have no grade",
        ),
    ];
    assert_eq!(found, expected.into_iter().collect(), "{err}");
    assert_eq!(err.faults.len(), expected.len(), "each fault once: {err}");
}

#[test]
fn weights_must_add_up() {
    check_fault(|d| d["dimensions"][0]["weight"] = json!("59.99"), "$.dimensions", "add up to 99.99");
    check_fault(
        |d| d["dimensions"][0].as_object_mut().unwrap().remove("weight").map(|_| ()).unwrap(),
        "$.dimensions",
        "either every dimensions has a weight",
    );
    check_fault(|d| d["dimensions"][0]["weight"] = json!("-60"), "$.dimensions[0].weight", "above zero");
    check_fault(
        |d| d["dimensions"][1]["variables"][0]["indicators"][1]["weight"] = json!("1"),
        "$.dimensions[1].variables[0].indicators[1].weight",
        "never scored",
    );
}

#[test]
fn bands_must_not_leave_gaps_or_overlap() {
    check_fault(|d| d["bands"][1]["max"] = json!("79.98"), "$.bands[0]", "gap between band B");
    check_fault(|d| d["bands"][1]["max"] = json!("80.00"), "$.bands[0]", "overlaps band B");
    check_fault(|d| d["bands"][2]["min"] = json!("1.00"), "$.bands[2].min", "scale minimum");
    check_fault(|d| d["bands"][0]["max"] = json!("99.99"), "$.bands[0].max", "scale maximum");
    check_fault(|d| d["bands"][0]["min"] = json!("80.001"), "$.bands[0].min", "two decimals");
    check_fault(|d| d["bands"][1]["grade"] = json!("A"), "$.bands[1].grade", "listed twice");
    check_fault(|d| d["bands"][0]["zone"] = json!("blue"), "$.bands[0].zone", "unknown zone");
}

#[test]
fn answer_kinds_are_checked() {
    let ind = "$.dimensions[0].variables[0].indicators[1].answer";
    check_fault(
        |d| d["dimensions"][0]["variables"][0]["indicators"][1]["answer"] = json!({"kind": "slider"}),
        &format!("{ind}.kind"),
        "unknown answer kind `slider`",
    );
    check_fault(
        |d| d["dimensions"][0]["variables"][0]["indicators"][1]["answer"] = json!({"kind": "scale"}),
        ind,
        "needs its range",
    );
    check_fault(
        |d| {
            d["dimensions"][0]["variables"][0]["indicators"][1]["answer"] = json!({"kind": "scale", "min": 3, "max": 3})
        },
        ind,
        "must be below max",
    );
    check_fault(
        |d| {
            d["dimensions"][0]["variables"][0]["indicators"][1]["answer"] =
                json!({"kind": "scale", "min": -1, "max": 3, "scoring": "proportional"})
        },
        &format!("{ind}.scoring"),
        "starts at 0",
    );
    check_fault(
        |d| {
            d["dimensions"][0]["variables"][0]["indicators"][1]["answer"] =
                json!({"kind": "choice", "options": [{"id": "a", "label": "A", "score": "1"}]})
        },
        &format!("{ind}.options"),
        "at least two",
    );
    check_fault(
        |d| d["dimensions"][0]["variables"][0]["indicators"][1]["answer"] = json!({"kind": "choice", "options": [{"id": "a", "label": "A", "score": "1.5"}, {"id": "a", "label": "B", "score": "0"}]}),
        &format!("{ind}.options[0].score"),
        "from 0 to 1",
    );
    check_fault(
        |d| d["dimensions"][0]["variables"][0]["indicators"][1]["answer"] = json!({"kind": "choice", "options": [{"id": "a", "label": "A", "score": "1"}, {"id": "a", "label": "B", "score": "0"}]}),
        &format!("{ind}.options[1].id"),
        "duplicate option",
    );
    check_fault(
        |d| {
            d["dimensions"][0]["variables"][0]["indicators"][1]["answer"] =
                json!({"kind": "count", "thresholds": [{"min": "2", "score": "0"}]})
        },
        &format!("{ind}.thresholds[0].min"),
        "first threshold",
    );
    check_fault(
        |d| {
            d["dimensions"][0]["variables"][0]["indicators"][1]["answer"] =
                json!({"kind": "count", "thresholds": [{"min": "0", "score": "0"}, {"min": "0", "score": "1"}]})
        },
        &format!("{ind}.thresholds[1].min"),
        "must rise",
    );
    check_fault(
        |d| {
            d["dimensions"][0]["variables"][0]["indicators"][1]["answer"] =
                json!({"kind": "number", "thresholds": [{"min": "0", "score": "1"}]})
        },
        &format!("{ind}.min"),
        "lowest allowed value",
    );
    check_fault(
        |d| d["dimensions"][0]["variables"][0]["indicators"][1]["answer"] = json!({"kind": "yes_no", "min": 0}),
        &format!("{ind}.min"),
        "does not apply",
    );
}

#[test]
fn ids_sources_levels_and_respondents_are_checked() {
    check_fault(|d| d["dimensions"][1]["id"] = json!("d1"), "$.dimensions[1].id", "duplicate id `d1`");
    check_fault(
        |d| d["dimensions"][1]["variables"][0]["indicators"][0]["id"] = json!("v1"),
        "$.dimensions[1].variables[0].indicators[0].id",
        "duplicate id `v1`",
    );
    check_fault(|d| d["dimensions"][0]["id"] = json!("Bad Id"), "$.dimensions[0].id", "not a valid id");
    check_fault(
        |d| d["dimensions"][0]["variables"][0]["indicators"][0]["source"] = json!("gossip"),
        "$.dimensions[0].variables[0].indicators[0].source",
        "unknown source",
    );
    check_fault(
        |d| d["dimensions"][0]["variables"][0]["indicators"][0]["level"] = json!("nation"),
        "$.dimensions[0].variables[0].indicators[0].level",
        "unknown level",
    );
    check_fault(
        |d| d["dimensions"][0]["variables"][0]["indicators"][0]["source"] = json!("service_user_questionnaire"),
        "$.dimensions[0].variables[0].indicators[0].source",
        "needs a `service_user` entry",
    );
    check_fault(
        |d| {
            d["dimensions"][0]["variables"][0]["indicators"][0]["source"] = json!("service_user_questionnaire");
            d["respondents"] = json!([{"kind": "service_user", "level": "institution", "expected": 30, "min": 30}]);
        },
        "$.dimensions[0].variables[0].indicators[0].level",
        "counted per institution",
    );
    check_fault(
        |d| d["respondents"] = json!([{"kind": "official", "level": "unit", "expected": 2, "min": 4}]),
        "$.respondents[0]",
        "min <= expected",
    );
    check_fault(|d| d["surprise"] = json!(1), "$.surprise", "unknown field `surprise`");
    check_fault(|d| d["format"] = json!("other/1"), "$.format", "expected \"sidak-instrument/1\"");
    check_fault(|d| d["version"] = json!(0), "$.version", "from 1");
    check_fault(|d| d.as_object_mut().unwrap().remove("title").map(|_| ()).unwrap(), "$", "missing field `title`");
}

#[test]
fn rollup_and_deductions_are_checked() {
    check_fault(|d| d["rollup"] = json!({"units": "median"}), "$.rollup.units", "unknown roll-up `median`");
    check_fault(|d| d["rollup"] = json!({"units": "unit_type_weights"}), "$.rollup", "needs a `unit_type_weights` map");
    check_fault(
        |d| d["rollup"] = json!({"units": "mean", "location_weights": {"mall": "1"}}),
        "$.rollup.location_weights.mall",
        "unknown field",
    );
    check_fault(
        |d| d["rollup"] = json!({"units": "mean", "location_weights": {"mpp": "0", "dpmptsp": "0", "own_office": "0", "online": "0"}}),
        "$.rollup.location_weights",
        "more than zero",
    );
    check_fault(
        |d| d["deductions"] = json!([{"id": "x", "title": "X", "level": "unit", "max_points": "0"}]),
        "$.deductions[0].max_points",
        "above zero",
    );
}

#[test]
fn malformed_json_is_one_fault_at_the_root() {
    let err = load_instrument("{\"format\": ").unwrap_err();
    assert_eq!(err.faults.len(), 1);
    assert!(err.faults[0].message.contains("not valid JSON"));
}
