//! `sidak-server review …` through the real binary, on a store that a router test
//! filled: listing visits, correcting an answer, withdrawing, and the exit codes of
//! bad input.

mod common;

use std::process::Output;

use axum::http::StatusCode;
use common::*;
use serde_json::{json, Value};

fn review(h: &Harness, args: &[&str]) -> Output {
    server_cli(h, &[&["review"], args].concat())
}

#[tokio::test]
async fn review_visits_and_correct_through_the_cli() {
    let h = Harness::new();
    let mut dev = Device::new(1, "a1", "jateng");
    let visit = dev.visit(&h, "kota-sukamaju", "disdukcapil", "ktp-el", 2);
    let (s, r) = h.call("POST", "/v1/ops/push", Some(&h.assessor), Some(dev.batch(0))).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let id = visit.id.to_string();

    // Listing: JSON, and lines for people.
    let listed: Value = serde_json::from_str(&stdout(&ok(review(&h, &["visits", "--json"])))).unwrap();
    assert_eq!(listed["visits"].as_array().map(Vec::len), Some(1));
    assert_eq!((&listed["visits"][0]["id"], &listed["visits"][0]["corrections"]), (&json!(id), &json!(0)));
    let text = stdout(&ok(review(&h, &["visits", "--region", "jateng"])));
    assert!(
        text.contains(&id) && text.contains("kota-sukamaju/disdukcapil/ktp-el") && text.contains("corrections 0"),
        "{text}"
    );
    assert_eq!(stdout(&ok(review(&h, &["visits", "--region", "sulbar"]))).trim(), "no visits");
    assert_eq!(stdout(&ok(review(&h, &["visits", "--status", "draft"]))).trim(), "no visits");
    assert_eq!(stdout(&ok(review(&h, &["edits"]))).trim(), "no edits after submission");

    // Bad input changes nothing: 3 for bad input, 4 for not found, 2 for usage.
    let before = h.fingerprint();
    let correct = |visit: &str, field: &str, value: &str, by: &str| {
        review(&h, &["correct", "--visit", visit, "--field", field, "--value", value, "--reason", "photo", "--by", by])
    };
    let unknown = uuid::Uuid::now_v7().to_string();
    for (o, code) in [
        (correct(&id, "answer.proses.moto", "9", "budi"), 3),
        (correct(&id, "answer.proses.moto", "three", "budi"), 3),
        (correct(&id, "mode", "\"announced\"", "budi"), 3),
        (correct(&id, "answer.proses.moto", "3", "Budi Santoso"), 3),
        (correct(&unknown, "answer.proses.moto", "3", "budi"), 4),
        (correct("not-a-uuid", "answer.proses.moto", "3", "budi"), 2),
        (review(&h, &["correct", "--visit", &id, "--field", "answer.proses.moto", "--value", "3", "--reason", "x"]), 2),
        (review(&h, &["withdraw", &unknown, "--reason", "x", "--by", "budi"]), 4),
        (review(&h, &["visits", "--status", "done"]), 2),
    ] {
        assert_eq!(o.status.code(), Some(code), "{}", String::from_utf8_lossy(&o.stderr));
        if code != 2 {
            assert!(String::from_utf8_lossy(&o.stderr).starts_with("sidak-server: "));
        }
    }
    assert_eq!(h.fingerprint(), before, "refused corrections wrote nothing");

    // A correction: written by the server's origin, results recomputed.
    let o = ok(correct(&id, "answer.proses.moto", "3", "budi"));
    let text = stdout(&o);
    assert!(text.contains("answer.proses.moto: 2 → 3") && text.contains("by admin.budi"), "{text}");
    let (_, doc) = h.call("GET", "/v1/results/institutions/kota-sukamaju", Some(&h.admin), None).await;
    let text = doc.to_string();
    assert!(text.contains(r#""answer":3,"field_value":2"#), "the result shows both values");
    let listed: Value = serde_json::from_str(&stdout(&ok(review(&h, &["visits", "--json"])))).unwrap();
    assert_eq!(listed["visits"][0]["corrections"], 1);
    assert!(stdout(&ok(review(&h, &["visits"]))).contains("corrections 1"));
    let corrections: Value = serde_json::from_str(&stdout(&ok(review(&h, &["corrections", "--json"])))).unwrap();
    let correction = corrections["corrections"][0].clone();
    assert_eq!(
        (&correction["by"], &correction["value"], &correction["field_value"]),
        (&json!("admin.budi"), &json!(3), &json!(2))
    );

    // Withdrawn: the field value counts again.
    let cid = correction["id"].as_str().unwrap();
    let w: Value = serde_json::from_str(&stdout(&ok(review(
        &h,
        &["withdraw", cid, "--reason", "2 was right", "--by", "budi", "--json"],
    ))))
    .unwrap();
    assert_eq!((&w["status"], w["ops"].as_array().map(Vec::len)), (&json!("withdrawn"), Some(4)));
    let (_, doc) = h.call("GET", "/v1/results/institutions/kota-sukamaju", Some(&h.admin), None).await;
    assert!(!doc.to_string().contains("field_value"));

    // A conflict resolved with a value entered.
    let seen = dev.ops.iter().rev().find(|o| o.field == "answer.proses.atribut").unwrap().op_ref();
    let mut other = Device::new(2, "a1", "jateng");
    other.write(visit, "answer.proses.atribut", json!(0), Some(seen));
    let from = dev.ops.len();
    dev.write(visit, "answer.proses.atribut", json!(1), Some(seen));
    for batch in [dev.batch(from), other.batch(0)] {
        assert_eq!(h.call("POST", "/v1/ops/push", Some(&h.assessor), Some(batch)).await.0, StatusCode::OK);
    }
    let both = review(
        &h,
        &[
            "resolve",
            "--entity",
            &id,
            "--field",
            "answer.proses.atribut",
            "--choose",
            "x#1",
            "--value",
            "2",
            "--reason",
            "x",
            "--by",
            "budi",
        ],
    );
    assert_eq!(both.status.code(), Some(2), "--choose and --value exclude each other");
    let resolved: Value = serde_json::from_str(&stdout(&ok(review(
        &h,
        &[
            "resolve",
            "--entity",
            &id,
            "--field",
            "answer.proses.atribut",
            "--value",
            "2",
            "--reason",
            "half done",
            "--by",
            "budi",
            "--json",
        ],
    ))))
    .unwrap();
    let by = format!("correction/{}", resolved["correction"]["id"].as_str().unwrap());
    assert_eq!(resolved["conflicts"][0]["resolved_by"], json!(by));
}
