//! Supervisor review through the router (no socket): visits and edits after
//! submission, corrections that change results and are withdrawn, conflicts resolved
//! by a correction, scope, bad input, and recompute from scratch.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use serde_json::{json, Value};
use sidak_core::ids::EntityId;
use sidak_core::op::OpRef;
use sidak_core::records::{EntityKind, EntityRef};
use sidak_server::error::ApiError;

async fn push(h: &Harness, token: &str, body: Value) {
    let (s, r) = h.call("POST", "/v1/ops/push", Some(token), Some(body)).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    for o in r["origins"].as_array().unwrap() {
        for list in ["rejected", "quarantined"] {
            assert!(o[list].as_array().is_none_or(Vec::is_empty), "{r}");
        }
    }
}

/// A store with a1's submitted visit to kota-sukamaju's ktp-el, every observation
/// answered 2.
async fn with_visit(n: u8) -> (Harness, Device, EntityRef) {
    let h = Harness::new();
    let mut dev = Device::new(n, "a1", "jateng");
    let visit = dev.visit(&h, "kota-sukamaju", "disdukcapil", "ktp-el", 2);
    push(&h, &h.assessor, dev.batch(0)).await;
    (h, dev, visit)
}

fn correction(visit: &EntityRef, field: &str, value: Value) -> Value {
    let mut body =
        json!({"target": {"kind": "visit", "id": visit.id}, "field": field, "reason": "the photo shows otherwise"});
    body["value"] = value;
    body
}

async fn resolve(h: &Harness, body: Value) -> (StatusCode, Value) {
    h.call("POST", "/v1/review/conflicts/resolve", Some(&h.supervisor), Some(body)).await
}

/// Every conflict's field and `resolved_by`.
async fn conflicts(h: &Harness) -> Vec<(String, Value)> {
    let (s, c) = h.call("GET", "/v1/admin/conflicts", Some(&h.supervisor), None).await;
    assert_eq!(s, StatusCode::OK);
    c["conflicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["field"].as_str().unwrap().to_owned(), c["resolved_by"].clone()))
        .collect()
}

async fn correct(h: &Harness, token: &str, body: Value) -> Value {
    let (s, r) = h.call("POST", "/v1/review/corrections", Some(token), Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    r
}

/// The institution result document of kota-sukamaju.
async fn document(h: &Harness) -> Value {
    let (s, doc) = h.call("GET", "/v1/results/institutions/kota-sukamaju", Some(&h.admin), None).await;
    assert_eq!(s, StatusCode::OK, "{doc}");
    doc
}

/// The first node with this id anywhere in a result tree.
fn node<'v>(tree: &'v Value, id: &str) -> Option<&'v Value> {
    match tree {
        Value::Object(map) => {
            if map.get("id").and_then(Value::as_str) == Some(id) && map.contains_key("weight") {
                return Some(tree);
            }
            map.values().find_map(|v| node(v, id))
        }
        Value::Array(items) => items.iter().find_map(|v| node(v, id)),
        _ => None,
    }
}

/// The ktp-el product's result in a document.
fn product<'v>(doc: &'v Value, code: &str) -> &'v Value {
    doc["result"]["units"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|u| u["products"].as_array().unwrap())
        .find(|p| p["id"] == code)
        .unwrap()
}

fn op_of(dev: &Device, entity: &EntityRef, field: &str) -> OpRef {
    dev.ops.iter().rev().find(|o| o.entity == *entity && o.field == field).unwrap().op_ref()
}

/// Every result document, in a stable order.
fn documents(h: &Harness) -> Vec<String> {
    h.state
        .db()
        .read_blocking(|tx| {
            let mut stmt =
                tx.prepare("SELECT kind, entity, instrument, document FROM results ORDER BY kind, entity, instrument")?;
            let rows = stmt.query_map([], |r| {
                Ok(format!(
                    "{}|{}|{}|{}",
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?
                ))
            })?;
            Ok::<_, ApiError>(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .unwrap()
}

#[tokio::test]
async fn submitted_visits_are_listed_in_scope() {
    let (h, mut dev, visit) = with_visit(1).await;
    // A draft: started, not submitted.
    let draft = EntityRef { kind: EntityKind::Visit, id: EntityId(uuid::Uuid::now_v7()) };
    let inst = h.id_of("institution", "kota-sukamaju");
    let unit = unit_id(&h, &inst, "disdukcapil");
    let from = dev.ops.len();
    dev.write(draft, "instrument", json!({"id": "penilaian-2023", "version": 1}), None);
    dev.write(draft, "institution", json!(inst), None);
    dev.write(draft, "unit", json!(unit), None);
    dev.write(draft, "product", json!(product_id(&h, &unit, "akta-lahir")), None);
    dev.write(draft, "status", json!("draft"), None);
    push(&h, &h.assessor, dev.batch(from)).await;
    let mut b1 = Device::new(2, "b1", "sulbar");
    let far = b1.visit(&h, "kab-mamuju", "disdukcapil", "ktp-el", 3);
    push(&h, &h.other_region_assessor, b1.batch(0)).await;

    let (s, r) = h.call("GET", "/v1/review/visits", Some(&h.supervisor), None).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let list = r["visits"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{r}");
    let v = &list[0];
    assert_eq!(v["id"], json!(visit.id.to_string()));
    for (member, want) in [
        ("region", json!("jateng")),
        ("institution", json!("kota-sukamaju")),
        ("unit", json!("disdukcapil")),
        ("product", json!("ktp-el")),
        ("assessor", json!("a1")),
        ("mode", json!("covert")),
        ("location", json!("mpp")),
        ("instrument", json!({"id": "penilaian-2023", "version": 1})),
        ("status", json!("submitted")),
        ("submitted_by", json!(op_of(&dev, &visit, "status").to_string())),
        ("edits", json!(0)),
        ("corrections", json!(0)),
    ] {
        assert_eq!(v[member], want, "{member}");
    }
    assert!(v["finished_at"].is_i64() && v["started_at"].is_null());

    let (_, r) = h.call("GET", "/v1/review/visits?status=draft", Some(&h.supervisor), None).await;
    let ids: Vec<&str> = r["visits"].as_array().unwrap().iter().map(|v| v["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![draft.id.to_string()]);
    assert_eq!(r["visits"][0]["product"], "akta-lahir");
    assert_eq!(r["visits"][0]["submitted_by"], Value::Null);

    let count = |r: &Value| r["visits"].as_array().map(Vec::len);
    assert_eq!(count(&h.call("GET", "/v1/review/visits", Some(&h.admin), None).await.1), Some(2));
    assert_eq!(count(&h.call("GET", "/v1/review/visits?region=sulbar", Some(&h.admin), None).await.1), Some(1));
    let (_, r) = h.call("GET", "/v1/review/visits?institution=kab-mamuju", Some(&h.admin), None).await;
    assert_eq!((count(&r), r["visits"][0]["id"].as_str()), (Some(1), Some(far.id.to_string().as_str())));
    assert_eq!(count(&h.call("GET", "/v1/review/visits?institution=kota-x", Some(&h.admin), None).await.1), Some(0));
    let (_, r) = h.call("GET", "/v1/review/visits", Some(&h.other_supervisor), None).await;
    assert_eq!(r["visits"][0]["id"], json!(far.id.to_string()));
    assert_eq!(count(&r), Some(1));

    for (token, path, status, code) in [
        (&h.supervisor, "/v1/review/visits?region=sulbar", StatusCode::FORBIDDEN, "scope_forbidden"),
        (&h.assessor, "/v1/review/visits", StatusCode::FORBIDDEN, "role_forbidden"),
        (&h.peer, "/v1/review/visits", StatusCode::FORBIDDEN, "role_forbidden"),
        (&h.supervisor, "/v1/review/visits?status=done", StatusCode::BAD_REQUEST, "bad_query"),
        (&h.supervisor, "/v1/review/visits?limit=3", StatusCode::BAD_REQUEST, "bad_query"),
    ] {
        let (s, e) = h.call("GET", path, Some(token), None).await;
        assert_eq!((s, e["code"].as_str()), (status, Some(code)), "{path}");
    }
}

#[tokio::test]
async fn edits_after_submission_are_listed_with_their_ops() {
    let (h, mut dev, visit) = with_visit(3).await;
    let (_, r) = h.call("GET", "/v1/review/edits", Some(&h.supervisor), None).await;
    assert_eq!(r["edits"], json!([]), "nothing was written after submission");

    let from = dev.ops.len();
    let seen = op_of(&dev, &visit, "answer.proses.moto");
    let edit = dev.write(visit, "answer.proses.moto", json!(3), Some(seen));
    let note = EntityRef { kind: EntityKind::Note, id: EntityId(uuid::Uuid::now_v7()) };
    dev.write(note, "visit", json!(visit.id.to_string()), None);
    dev.write(note, "text", json!("the queue was moved"), None);
    push(&h, &h.assessor, dev.batch(from)).await;

    let (s, r) = h.call("GET", "/v1/review/edits", Some(&h.supervisor), None).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let edits = r["edits"].as_array().unwrap();
    assert_eq!(edits.len(), 3, "{r}");
    let submitted_by = op_of(&dev, &visit, "status").to_string();
    assert_eq!(
        edits[0],
        json!({
            "visit": visit.id.to_string(),
            "entity": visit.id.to_string(),
            "kind": "visit",
            "field": "answer.proses.moto",
            "value": 3,
            "op": edit.op_ref().to_string(),
            "hlc": {"ms": edit.hlc.ms, "c": edit.hlc.c},
            "wall": edit.wall,
            "submitted_by": submitted_by,
        })
    );
    assert_eq!((&edits[1]["kind"], &edits[1]["entity"]), (&json!("note"), &json!(note.id.to_string())));
    assert_eq!(edits[2]["field"], "text");

    let (_, r) = h.call("GET", "/v1/review/visits", Some(&h.supervisor), None).await;
    assert_eq!(r["visits"][0]["edits"], 3);
    let (_, r) = h.call("GET", &format!("/v1/review/edits?visit={}", visit.id), Some(&h.admin), None).await;
    assert_eq!(r["edits"].as_array().map(Vec::len), Some(3));
    let (_, r) = h.call("GET", "/v1/review/edits", Some(&h.other_supervisor), None).await;
    assert_eq!(r["edits"], json!([]));
    let (s, e) = h.call("GET", "/v1/review/edits", Some(&h.peer), None).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::FORBIDDEN, Some("role_forbidden")));
}

#[tokio::test]
async fn a_correction_changes_the_result_shows_both_values_and_withdrawing_restores_it() {
    let (h, _dev, visit) = with_visit(4).await;
    let before = document(&h).await;
    let moto = node(product(&before, "ktp-el"), "proses.moto").unwrap();
    assert_eq!((&moto["answer"], moto.get("field_value")), (&json!(2), None));

    let r = correct(&h, &h.supervisor, correction(&visit, "answer.proses.moto", json!(3))).await;
    let id = r["id"].as_str().unwrap().to_owned();
    let (_, whoami) = h.call("GET", "/v1/whoami", Some(&h.admin), None).await;
    let server = whoami["server_origin"].as_str().unwrap();
    let ops: Vec<&str> = r["ops"].as_array().unwrap().iter().map(|o| o.as_str().unwrap()).collect();
    assert_eq!(ops.len(), 7, "one op per field: target, field, value, reason, by, at, status");
    assert!(ops.iter().all(|o| o.starts_with(&format!("{server}#"))), "{ops:?}");
    assert_eq!(r["target"], json!({"kind": "visit", "id": visit.id}));
    assert_eq!((&r["field"], &r["value"], &r["field_value"]), (&json!("answer.proses.moto"), &json!(3), &json!(2)));
    assert_eq!((&r["status"], &r["at"], &r["region"]), (&json!("active"), &json!(T0), &json!("jateng")));
    assert!(r["by"].as_str().unwrap().starts_with("supervisor.tok_"), "{r}");
    assert_eq!(r["reason"], "the photo shows otherwise");
    // An ordinary op of the server's origin, tagged with the visit's region.
    let tags: Vec<(String, Option<String>, String)> = h
        .state
        .db()
        .read_blocking(|tx| {
            let mut stmt = tx.prepare("SELECT DISTINCT origin, region, class FROM ops WHERE entity = ?1")?;
            let rows = stmt.query_map([&id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            Ok::<_, ApiError>(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .unwrap();
    assert_eq!(tags, vec![(server.to_owned(), Some("jateng".to_owned()), "review".to_owned())]);

    // Recomputed at once: the score uses the correction, the field value shows beside it.
    let after = document(&h).await;
    let (p0, p1) = (&product(&before, "ktp-el")["provisional"], &product(&after, "ktp-el")["provisional"]);
    assert!(p0.is_string() && p1.is_string() && p0 != p1, "{p0} → {p1}");
    assert_ne!(before["row"]["provisional"], after["row"]["provisional"]);
    let moto = node(product(&after, "ktp-el"), "proses.moto").unwrap();
    assert_eq!((&moto["answer"], &moto["field_value"]), (&json!(3), &json!(2)));
    assert_eq!(node(product(&after, "ktp-el"), "proses.atribut").unwrap().get("field_value"), None);
    let (_, v) = h.call("GET", "/v1/review/visits", Some(&h.supervisor), None).await;
    assert_eq!(v["visits"][0]["corrections"], 1);
    let (_, list) = h.call("GET", "/v1/review/corrections", Some(&h.supervisor), None).await;
    assert_eq!(list["corrections"].as_array().map(Vec::len), Some(1));
    assert_eq!(list["corrections"][0]["id"], json!(id));
    assert_eq!(
        h.call("GET", "/v1/review/corrections", Some(&h.other_supervisor), None).await.1["corrections"],
        json!([])
    );

    // A later correction of the same field wins.
    let second = correct(&h, &h.admin, correction(&visit, "answer.proses.moto", json!(0))).await["id"].clone();
    let moto = node(product(&document(&h).await, "ktp-el"), "proses.moto").unwrap().clone();
    assert_eq!((&moto["answer"], &moto["field_value"]), (&json!(0), &json!(2)));

    // Withdrawn, both: the result is the original again, byte for byte.
    for c in [json!(id), second] {
        let path = format!("/v1/review/corrections/{}/withdraw", c.as_str().unwrap());
        let (s, w) =
            h.call("POST", &path, Some(&h.supervisor), Some(json!({"reason": "checked again: 2 was right"}))).await;
        assert_eq!(s, StatusCode::OK, "{w}");
        assert_eq!((&w["status"], w["ops"].as_array().map(Vec::len)), (&json!("withdrawn"), Some(4)));
        assert_eq!(w["reason"], "checked again: 2 was right");
    }
    let restored = document(&h).await;
    assert_eq!(restored["result"], before["result"], "withdrawing restores the field value");
    assert_eq!(restored["row"]["provisional"], before["row"]["provisional"]);
    let (_, v) = h.call("GET", "/v1/review/visits", Some(&h.supervisor), None).await;
    assert_eq!(v["visits"][0]["corrections"], 0);
    // Withdrawing again writes nothing.
    let fingerprint = h.fingerprint();
    let path = format!("/v1/review/corrections/{id}/withdraw");
    let (s, w) = h.call("POST", &path, Some(&h.supervisor), Some(json!({"reason": "again"}))).await;
    assert_eq!((s, &w["ops"]), (StatusCode::OK, &json!([])));
    assert_eq!(h.fingerprint(), fingerprint);
}

#[tokio::test]
async fn a_respondent_answer_is_corrected_too() {
    let (h, mut dev, visit) = with_visit(5).await;
    let from = dev.ops.len();
    let respondent = EntityRef { kind: EntityKind::Respondent, id: EntityId(uuid::Uuid::now_v7()) };
    dev.write(respondent, "visit", json!(visit.id.to_string()), None);
    dev.write(respondent, "kind", json!("official"), None);
    dev.write(respondent, "answer.input.pengetahuan-standar", json!(0), None);
    push(&h, &h.assessor, dev.batch(from)).await;
    let before = document(&h).await;
    let body = json!({"target": {"kind": "respondent", "id": respondent.id}, "field": "answer.input.pengetahuan-standar", "value": 3, "reason": "misheard"});
    let r = correct(&h, &h.supervisor, body).await;
    assert_eq!((&r["visit"], &r["field_value"]), (&json!(visit.id.to_string()), &json!(0)));
    let after = document(&h).await;
    let unit = |d: &Value| d["result"]["units"][0]["provisional"].clone();
    assert_ne!(unit(&before), unit(&after), "the questionnaire score uses the correction");
    let (_, v) = h.call("GET", "/v1/review/visits", Some(&h.supervisor), None).await;
    assert_eq!(v["visits"][0]["corrections"], 1);
    // The visit's own answer fields are no place for a questionnaire indicator.
    let before = h.fingerprint();
    let (s, e) = h
        .call(
            "POST",
            "/v1/review/corrections",
            Some(&h.supervisor),
            Some(correction(&visit, "answer.input.pengetahuan-standar", json!(3))),
        )
        .await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_correction")), "{e}");
    assert_eq!(h.fingerprint(), before);
}

#[tokio::test]
async fn conflicts_are_resolved_by_choosing_a_version_or_entering_a_value() {
    let (h, mut d1, visit) = with_visit(6).await;
    let from = d1.ops.len();
    let moto = op_of(&d1, &visit, "answer.proses.moto");
    let atribut = op_of(&d1, &visit, "answer.proses.atribut");
    d1.write(visit, "answer.proses.moto", json!(1), Some(moto));
    d1.write(visit, "answer.proses.atribut", json!(0), Some(atribut));
    let mut d2 = Device::new(7, "a1", "jateng");
    let theirs = d2.write(visit, "answer.proses.moto", json!(3), Some(moto));
    d2.write(visit, "answer.proses.atribut", json!(1), Some(atribut));
    push(&h, &h.assessor, d1.batch(from)).await;
    push(&h, &h.assessor, d2.batch(0)).await;
    assert_eq!(
        conflicts(&h).await,
        vec![("answer.proses.atribut".to_owned(), Value::Null), ("answer.proses.moto".to_owned(), Value::Null)]
    );
    let (_, doc) = h.call("GET", "/v1/results/institutions/kota-sukamaju", Some(&h.admin), None).await;
    assert_eq!(node(product(&doc, "ktp-el"), "proses.moto").unwrap()["answer"], 1, "d1 wrote last");

    // Bad resolutions change nothing.
    let before = h.fingerprint();
    let id = visit.id.to_string();
    let first = d1.ops[0].op_ref().to_string();
    for (body, status, code) in [
        (
            json!({"entity": id, "field": "answer.proses.moto", "choose": first, "reason": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_correction",
        ),
        (
            json!({"entity": id, "field": "answer.proses.moto", "choose": "nope", "reason": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            json!({"entity": id, "field": "answer.proses.moto", "choose": theirs.op_ref().to_string(), "value": 2, "reason": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            json!({"entity": id, "field": "answer.proses.moto", "reason": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            json!({"entity": id, "field": "answer.proses.moto", "value": 2, "reason": ""}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            json!({"entity": id, "field": "answer.proses.moto", "value": 7, "reason": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_correction",
        ),
        (
            json!({"entity": id, "field": "answer.proses.prosedur", "value": 2, "reason": "x"}),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            json!({"entity": uuid::Uuid::now_v7(), "field": "answer.proses.moto", "value": 2, "reason": "x"}),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ] {
        let (s, e) = resolve(&h, body.clone()).await;
        assert_eq!((s, e["code"].as_str()), (status, Some(code)), "{body}: {e}");
    }
    assert_eq!(h.fingerprint(), before);

    // By choosing d2's version, which lost.
    let (s, r) = resolve(&h, json!({"entity": id, "field": "answer.proses.moto", "choose": theirs.op_ref().to_string(), "reason": "d2 took the photo"})).await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    let by_choice = format!("correction/{}", r["correction"]["id"].as_str().unwrap());
    assert_eq!((&r["correction"]["value"], &r["correction"]["field_value"]), (&json!(3), &json!(1)));
    assert_eq!(r["conflicts"][0]["resolved_by"], json!(by_choice));
    // By entering a value.
    let (s, r) = resolve(&h, json!({"entity": id, "field": "answer.proses.atribut", "value": 2, "reason": "neither: the board is half done"})).await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    let by_value = format!("correction/{}", r["correction"]["id"].as_str().unwrap());
    assert_eq!(
        conflicts(&h).await,
        vec![
            ("answer.proses.atribut".to_owned(), json!(by_value)),
            ("answer.proses.moto".to_owned(), json!(by_choice))
        ]
    );
    let (_, doc) = h.call("GET", "/v1/results/institutions/kota-sukamaju", Some(&h.admin), None).await;
    let p = product(&doc, "ktp-el");
    let shown = |id: &str| (node(p, id).unwrap()["answer"].clone(), node(p, id).unwrap()["field_value"].clone());
    assert_eq!(shown("proses.moto"), (json!(3), json!(1)));
    assert_eq!(shown("proses.atribut"), (json!(2), json!(0)));

    // A withdrawn correction resolves nothing.
    let path = format!("/v1/review/corrections/{}/withdraw", by_choice.trim_start_matches("correction/"));
    assert_eq!(
        h.call("POST", &path, Some(&h.supervisor), Some(json!({"reason": "wrong photo"}))).await.0,
        StatusCode::OK
    );
    assert_eq!(conflicts(&h).await[1], ("answer.proses.moto".to_owned(), Value::Null));
}

#[tokio::test]
async fn another_regions_supervisor_is_refused_and_nothing_changes() {
    let (h, mut d1, visit) = with_visit(8).await;
    let from = d1.ops.len();
    let moto = op_of(&d1, &visit, "answer.proses.moto");
    d1.write(visit, "answer.proses.moto", json!(1), Some(moto));
    let mut d2 = Device::new(9, "a1", "jateng");
    d2.write(visit, "answer.proses.moto", json!(3), Some(moto));
    push(&h, &h.assessor, d1.batch(from)).await;
    push(&h, &h.assessor, d2.batch(0)).await;
    let made = correct(&h, &h.admin, correction(&visit, "answer.proses.prosedur", json!(3))).await;
    let withdraw = format!("/v1/review/corrections/{}/withdraw", made["id"].as_str().unwrap());

    let before = h.fingerprint();
    let requests: Vec<(&str, String, Option<Value>)> = vec![
        ("POST", "/v1/review/corrections".into(), Some(correction(&visit, "answer.proses.moto", json!(3)))),
        ("POST", withdraw.clone(), Some(json!({"reason": "not yours"}))),
        (
            "POST",
            "/v1/review/conflicts/resolve".into(),
            Some(json!({"entity": visit.id, "field": "answer.proses.moto", "value": 2, "reason": "x"})),
        ),
        ("GET", "/v1/review/visits?region=jateng".into(), None),
        ("GET", "/v1/review/edits?region=jateng".into(), None),
        ("GET", "/v1/review/corrections?region=jateng".into(), None),
    ];
    for (method, path, body) in &requests {
        let (s, e) = h.call(method, path, Some(&h.other_supervisor), body.clone()).await;
        assert_eq!((s, e["code"].as_str()), (StatusCode::FORBIDDEN, Some("scope_forbidden")), "{method} {path}: {e}");
        for token in [&h.assessor, &h.peer, &h.other_region_assessor] {
            let (s, e) = h.call(method, path, Some(token), body.clone()).await;
            assert_eq!((s, e["code"].as_str()), (StatusCode::FORBIDDEN, Some("role_forbidden")), "{method} {path}");
        }
    }
    assert_eq!(h.fingerprint(), before, "every refused request changed nothing");

    // The other way round: a jateng supervisor on a sulbar visit; an admin anywhere.
    let mut b1 = Device::new(10, "b1", "sulbar");
    let far = b1.visit(&h, "kab-mamuju", "disdukcapil", "ktp-el", 3);
    push(&h, &h.other_region_assessor, b1.batch(0)).await;
    let before = h.fingerprint();
    let (s, e) = h
        .call(
            "POST",
            "/v1/review/corrections",
            Some(&h.supervisor),
            Some(correction(&far, "answer.proses.moto", json!(1))),
        )
        .await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::FORBIDDEN, Some("scope_forbidden")));
    assert_eq!(h.fingerprint(), before);
    correct(&h, &h.other_supervisor, correction(&far, "answer.proses.moto", json!(1))).await;
    correct(&h, &h.admin, correction(&far, "answer.proses.biaya-tarif", json!(1))).await;
}

#[tokio::test]
async fn bad_corrections_get_their_codes_and_change_nothing() {
    let (h, _dev, visit) = with_visit(11).await;
    let made = correct(&h, &h.supervisor, correction(&visit, "answer.proses.prosedur", json!(3))).await;
    let id = made["id"].as_str().unwrap().to_owned();
    let before = h.fingerprint();
    let unknown = uuid::Uuid::now_v7();
    let with = |field: &str, value: Value| correction(&visit, field, value);
    let mut reason_too_long = with("answer.proses.moto", json!(1));
    reason_too_long["reason"] = json!("x".repeat(2001));
    let mut empty_reason = with("answer.proses.moto", json!(1));
    empty_reason["reason"] = json!("");
    let mut blank_reason = with("answer.proses.moto", json!(1));
    blank_reason["reason"] = json!("  ");
    let mut extra = with("answer.proses.moto", json!(1));
    extra["priority"] = json!(1);
    let mut no_value = with("answer.proses.moto", json!(1));
    no_value.as_object_mut().unwrap().remove("value");
    let institution = h.id_of("institution", "kota-sukamaju");
    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (
            json!({"target": {"kind": "visit", "id": unknown}, "field": "answer.proses.moto", "value": 1, "reason": "x"}),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            json!({"target": {"kind": "respondent", "id": visit.id}, "field": "answer.proses.moto", "value": 1, "reason": "x"}),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            json!({"target": {"kind": "institution", "id": institution}, "field": "answer.proses.moto", "value": 1, "reason": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_correction",
        ),
        (
            json!({"target": {"kind": "visits", "id": visit.id}, "field": "answer.proses.moto", "value": 1, "reason": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (with("mode", json!("announced")), StatusCode::UNPROCESSABLE_ENTITY, "invalid_correction"),
        (with("answer.proses.nope", json!(1)), StatusCode::UNPROCESSABLE_ENTITY, "invalid_correction"),
        (with("answer.output.penundaan-berlarut", json!(1)), StatusCode::UNPROCESSABLE_ENTITY, "invalid_correction"),
        (with("answer.proses.moto", json!("three")), StatusCode::UNPROCESSABLE_ENTITY, "invalid_correction"),
        (with("answer.proses.moto", json!(4)), StatusCode::UNPROCESSABLE_ENTITY, "invalid_correction"),
        (with("answer.proses.moto", json!(-1)), StatusCode::UNPROCESSABLE_ENTITY, "invalid_correction"),
        (with("answer.proses.moto", json!(1.5)), StatusCode::UNPROCESSABLE_ENTITY, "invalid_correction"),
        (with("answer.proses.moto", json!({"na": true})), StatusCode::UNPROCESSABLE_ENTITY, "invalid_correction"),
        (with("answer.proses.moto", Value::Null), StatusCode::UNPROCESSABLE_ENTITY, "invalid_correction"),
        (empty_reason, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        (blank_reason, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        (reason_too_long, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        (extra, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        (no_value, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        (json!([]), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
    ];
    for (body, status, code) in cases {
        let (s, e) = h.call("POST", "/v1/review/corrections", Some(&h.supervisor), Some(body.clone())).await;
        assert_eq!((s, e["code"].as_str()), (status, Some(code)), "{body}: {e}");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let raw = |path: &str, body: &str, ctype: &str| {
        Request::builder()
            .method("POST")
            .uri(path)
            .header("authorization", format!("Bearer {}", h.supervisor))
            .header("content-type", ctype)
            .body(Body::from(body.to_owned()))
            .unwrap()
    };
    let withdraw = format!("/v1/review/corrections/{id}/withdraw");
    for (req, status, code) in [
        (raw("/v1/review/corrections", "{\"target\": ", "application/json"), StatusCode::BAD_REQUEST, "malformed_json"),
        (
            raw("/v1/review/corrections", "{}", "text/plain"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (raw(&withdraw, "{\"reason\": \"\"}", "application/json"), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        (
            raw(&withdraw, "{\"reason\": \"x\", \"at\": 1}", "application/json"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (raw(&withdraw, "{}", "application/json"), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        (
            raw(&format!("/v1/review/corrections/{unknown}/withdraw"), "{\"reason\": \"x\"}", "application/json"),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            raw(&format!("/v1/review/corrections/{}/withdraw", visit.id), "{\"reason\": \"x\"}", "application/json"),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            raw("/v1/review/corrections/not-an-id/withdraw", "{\"reason\": \"x\"}", "application/json"),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ] {
        let what = format!("{} {}", req.method(), req.uri());
        let (s, e) = h.send(req).await;
        assert_eq!((s, e["code"].as_str()), (status, Some(code)), "{what}: {e}");
    }
    assert_eq!(h.fingerprint(), before, "no refused request changed anything");
}

#[tokio::test]
async fn recompute_from_scratch_after_corrections_is_byte_identical() {
    let (h, mut dev, visit) = with_visit(12).await;
    let from = dev.ops.len();
    dev.visit(&h, "kota-sukamaju", "disdukcapil", "akta-lahir", 1);
    push(&h, &h.assessor, dev.batch(from)).await;
    // Every institution computed once (the fixture's assignments are not), then only
    // what each correction touches.
    assert_eq!(h.call("POST", "/v1/admin/recompute", Some(&h.admin), None).await.0, StatusCode::OK);
    correct(&h, &h.supervisor, correction(&visit, "answer.proses.moto", json!(3))).await;
    correct(&h, &h.supervisor, correction(&visit, "answer.pengaduan.kanal-aktif", json!(0))).await;
    let gone = correct(&h, &h.admin, correction(&visit, "answer.proses.produk", json!(0))).await;
    let path = format!("/v1/review/corrections/{}/withdraw", gone["id"].as_str().unwrap());
    assert_eq!(h.call("POST", &path, Some(&h.admin), Some(json!({"reason": "undo"}))).await.0, StatusCode::OK);
    let incremental = documents(&h);
    assert!(incremental.iter().any(|d| d.contains("\"field_value\":2")), "the corrections show in the results");
    let (s, _) = h.call("POST", "/v1/admin/recompute", Some(&h.admin), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(documents(&h), incremental, "recompute from scratch gives byte-identical results");
}
