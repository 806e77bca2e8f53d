//! `sidak-field score` through the real binary: the sample season, JSON output, and
//! bad input that must fail with a clear error, a non-zero exit and no partial output.

use std::path::PathBuf;
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn field(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sidak-field")).args(args).current_dir(repo()).output().expect("runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn scores_the_sample_season_as_a_table_and_as_json() {
    let o = field(&["score", "--instrument", "penilaian-2023", "docs/examples/season-2023.json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8(o.stdout).unwrap();
    assert!(table.contains("Pemerintah Kota Sukamaju"), "{table}");
    assert!(table.contains("incomplete"), "the sample has one incomplete institution: {table}");

    let o = field(&["score", "--json", "--instrument", "penilaian-2023", "docs/examples/season-2023.json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["format"], "sidak-results/1");
    assert_eq!(json["institutions"].as_array().unwrap().len(), 3);
    // The same input gives the same bytes.
    let again = field(&["score", "--json", "--instrument", "penilaian-2023", "docs/examples/season-2023.json"]);
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&again.stdout).unwrap(), json);
}

fn write_temp(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

#[test]
fn bad_input_fails_with_a_clear_error_and_no_output() {
    let sample = std::fs::read_to_string(repo().join("docs/examples/season-2023.json")).unwrap();
    let (_d1, malformed) = write_temp("malformed.json", &sample[..sample.len() / 2]);
    let mut season: serde_json::Value = serde_json::from_str(&sample).unwrap();
    season["institutions"][0]["units"][0]["products"][0]["answers"]["proses.persyaratan"] = serde_json::json!(7);
    season["institutions"][0]["units"][0]["products"][0]["answers"]["proses.bukan-indikator"] = serde_json::json!(1);
    let (_d2, out_of_range) = write_temp("range.json", &season.to_string());

    let cases: Vec<(Vec<String>, i32, &str)> = vec![
        (vec!["score".into(), "--instrument".into(), "penilaian-2023".into(), malformed.display().to_string()], 3, "is not valid JSON for a season"),
        (vec!["score".into(), "--instrument".into(), "penilaian-2099".into(), "docs/examples/season-2023.json".into()], 4, "unknown instrument `penilaian-2099`"),
        (vec!["score".into(), "--instrument".into(), "penilaian-2023".into(), "/no/such/season.json".into()], 4, "cannot read /no/such/season.json"),
        (vec!["score".into(), "--instrument".into(), "penilaian-2023".into(), out_of_range.display().to_string()], 3, "$.institutions[0].units[0].products[0].answers.proses.persyaratan: indicator `proses.persyaratan` takes a whole number from 0 to 3, found 7"),
        (vec!["score".into(), "--instrument".into(), "penilaian-2023".into(), out_of_range.display().to_string()], 3, "unknown indicator `proses.bukan-indikator`"),
        (vec!["score".into(), "--instrument".into(), "ikm-2017".into(), "docs/examples/season-2023.json".into()], 3, "recorded with `penilaian-2023` but is being scored with `ikm-2017@1`"),
    ];
    for (args, code, words) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = field(&args);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {}", stderr(&o));
        assert!(o.stdout.is_empty(), "{args:?} printed partial output");
        assert!(stderr(&o).contains(words), "{args:?}: expected {words:?} in {}", stderr(&o));
    }
}

#[test]
fn an_instrument_can_come_from_a_file() {
    let o = field(&[
        "score",
        "--instrument",
        "crates/core/instruments/penilaian-2023.json",
        "docs/examples/season-2023.json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (_d, broken) = write_temp("broken.json", r#"{"format": "sidak-instrument/1", "id": "x", "version": 1}"#);
    let o = field(&["score", "--instrument", broken.to_str().unwrap(), "docs/examples/season-2023.json"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains("$: missing field `title`"), "{}", stderr(&o));
}
