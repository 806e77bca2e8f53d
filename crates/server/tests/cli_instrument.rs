//! `sidak-server instrument validate` through the real binary.

use std::process::Command;

fn validate(path: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sidak-server")).args(["instrument", "validate"]).arg(path).output().expect("runs")
}

#[test]
fn built_in_instruments_validate() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/instruments");
    for id in sidak_core::instrument::BUILTIN_IDS {
        let o = validate(&dir.join(format!("{id}.json")));
        assert!(o.status.success(), "{id}: {}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stdout).contains(&format!("valid — {id}@1")));
    }
}

#[test]
fn every_fault_is_printed_and_the_exit_is_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.json");
    let mut doc: serde_json::Value =
        serde_json::from_str(include_str!("../../core/instruments/penilaian-2023.json")).unwrap();
    doc["dimensions"][0]["weight"] = serde_json::json!("21.84");
    doc["bands"][1]["min"] = serde_json::json!("77.00");
    doc["dimensions"][1]["variables"][0]["indicators"][0]["answer"] = serde_json::json!({"kind": "scale"});
    std::fs::write(&path, doc.to_string()).unwrap();
    let o = validate(&path);
    assert_eq!(o.status.code(), Some(3));
    let err = String::from_utf8_lossy(&o.stderr);
    for words in [
        "3 faults",
        "$.dimensions: the weights of these dimensions add up to 99.99",
        "overlaps band",
        "$.dimensions[1].variables[0].indicators[0].answer: a scale needs its range",
    ] {
        assert!(err.contains(words), "expected {words:?} in {err}");
    }
    std::fs::write(&path, "{not json").unwrap();
    let o = validate(&path);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not valid JSON"));
}
