//! Router tests without a socket (`Router::oneshot`): every endpoint, every error code,
//! push semantics, pull scoping, and results recomputed from scratch byte for byte.

mod common;

use std::io::Write;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use serde_json::{json, Value};
use sidak_core::hash::Sha256Digest;
use sidak_core::ids::EntityId;
use sidak_core::records::{EntityKind, EntityRef};
use sidak_core::wire::{CURSOR_HEADER, MORE_HEADER};

async fn push(h: &Harness, token: &str, body: Value) -> (StatusCode, Value) {
    h.call("POST", "/v1/ops/push", Some(token), Some(body)).await
}

#[tokio::test]
async fn health_whoami_instruments_assignments() {
    let h = Harness::new();
    assert_eq!(h.call("GET", "/v1/health", None, None).await, (StatusCode::OK, json!({"status": "ok", "protocol": 1})));
    let (s, who) = h.call("GET", "/v1/whoami", Some(&h.assessor), None).await;
    assert_eq!(
        (s, who["role"].as_str(), who["assessor"].as_str(), who["region"].as_str()),
        (StatusCode::OK, Some("assessor"), Some("a1"), Some("jateng"))
    );
    let (s, list) = h.call("GET", "/v1/instruments", Some(&h.assessor), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["instruments"].as_array().unwrap().len(), 4, "the built-ins are published");
    let (s, doc) = h.call("GET", "/v1/instruments/penilaian-2023/1", Some(&h.assessor), None).await;
    assert_eq!((s, doc["id"].as_str()), (StatusCode::OK, Some("penilaian-2023")));
    assert_eq!(
        h.call("GET", "/v1/instruments/penilaian-2023/9", Some(&h.assessor), None).await.0,
        StatusCode::NOT_FOUND
    );
    // Each assessor sees only their own assignments; a supervisor sees the region.
    let (_, mine) = h.call("GET", "/v1/assignments", Some(&h.assessor), None).await;
    let mine = mine["assignments"].as_array().unwrap().clone();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0]["unit"]["code"], "disdukcapil");
    assert_eq!(mine[0]["products"].as_array().unwrap().len(), 2);
    let (_, region) = h.call("GET", "/v1/assignments", Some(&h.supervisor), None).await;
    assert_eq!(region["assignments"].as_array().unwrap().len(), 2);
    let (_, all) = h.call("GET", "/v1/assignments", Some(&h.admin), None).await;
    assert_eq!(all["assignments"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn a_push_is_idempotent_and_acknowledges_what_is_durable() {
    let h = Harness::new();
    let mut dev = Device::new(1, "a1", "jateng");
    dev.visit(&h, "kota-sukamaju", "disdukcapil", "ktp-el", 3);
    let (s, r) = push(&h, &h.assessor, dev.batch(0)).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let o = &r["origins"][0];
    assert_eq!(
        (o["stored"].as_u64(), o["duplicates"].as_u64(), o["held"]["seq"].as_u64()),
        (Some(dev.seq), Some(0), Some(dev.seq))
    );
    assert_eq!(o["held"]["hash"], json!(dev.prev.to_hex()));
    let before = h.fingerprint();
    let (_, again) = push(&h, &h.assessor, dev.batch(0)).await;
    assert_eq!(
        (again["origins"][0]["stored"].as_u64(), again["origins"][0]["duplicates"].as_u64()),
        (Some(0), Some(dev.seq))
    );
    assert_eq!(h.fingerprint(), before, "a retried push changes nothing");
}

#[tokio::test]
async fn chain_faults_are_refused_and_block_what_follows() {
    let h = Harness::new();
    let mut dev = Device::new(2, "a1", "jateng");
    dev.visit(&h, "kota-sukamaju", "disdukcapil", "ktp-el", 2);
    let all: Vec<Value> = serde_json::from_value(dev.batch(0)["ops"].clone()).unwrap();
    // Ops 1..5 first.
    push(&h, &h.assessor, json!({"ops": all[..5]})).await;
    // A gap: 8.. without 6, 7.
    let (_, r) = push(&h, &h.assessor, json!({"ops": all[7..]})).await;
    let rejected = r["origins"][0]["rejected"].as_array().unwrap();
    assert_eq!(rejected[0]["code"], "gap");
    assert!(rejected[1..].iter().all(|x| x["code"] == "blocked"));
    assert_eq!(r["origins"][0]["held"]["seq"], 5);
    // An altered replay of op 3.
    let mut altered = all[2].clone();
    altered["value"] = json!("announced");
    let (_, r) = push(&h, &h.assessor, json!({"ops": [altered]})).await;
    assert_eq!(r["origins"][0]["rejected"][0]["code"], "malformed", "a changed value no longer matches its hash");
    let mut forged: sidak_core::op::Op = serde_json::from_value(all[2].clone()).unwrap();
    forged.value = json!("announced");
    forged.hash = forged.compute_hash();
    let (_, r) = push(&h, &h.assessor, json!({"ops": [forged]})).await;
    assert_eq!(r["origins"][0]["rejected"][0]["code"], "altered");
    // A broken link: op 6 with a wrong prev.
    let mut relinked: sidak_core::op::Op = serde_json::from_value(all[5].clone()).unwrap();
    relinked.prev = Sha256Digest([9; 32]);
    relinked.hash = relinked.compute_hash();
    let (_, r) = push(&h, &h.assessor, json!({"ops": [relinked]})).await;
    assert_eq!(r["origins"][0]["rejected"][0]["code"], "broken_link");
    // The rest, in order, is taken.
    let (_, r) = push(&h, &h.assessor, json!({"ops": all[5..]})).await;
    assert_eq!(r["origins"][0]["held"]["seq"].as_u64(), Some(dev.seq));
    let rejections: i64 = h
        .state
        .db()
        .read_blocking(|tx| {
            tx.query_row("SELECT COUNT(*) FROM rejections", [], |r| r.get(0))
                .map_err(sidak_server::error::ApiError::from)
        })
        .unwrap();
    assert_eq!(rejections, 1, "the altered op is kept as tamper evidence");
}

#[tokio::test]
async fn a_bad_op_is_quarantined_and_never_blocks_the_ops_behind_it() {
    let h = Harness::new();
    let mut dev = Device::new(3, "a1", "jateng");
    let visit = dev.visit(&h, "kota-sukamaju", "disdukcapil", "ktp-el", 2);
    let bad = dev.write(visit, "answer.proses.persyaratan", json!(9), None);
    let after = dev.write(visit, "answer.proses.prosedur", json!(0), None);
    // A respondent whose visit this server does not know yet: waits, then is released.
    let ghost_visit = EntityRef { kind: EntityKind::Visit, id: EntityId(uuid::Uuid::now_v7()) };
    let waiting = dev.write(
        EntityRef { kind: EntityKind::Respondent, id: EntityId(uuid::Uuid::now_v7()) },
        "visit",
        json!(ghost_visit.id.to_string()),
        None,
    );
    let (_, r) = push(&h, &h.assessor, dev.batch(0)).await;
    let o = &r["origins"][0];
    assert_eq!(o["held"]["seq"].as_u64(), Some(dev.seq), "every op is durable");
    let q: Vec<(u64, String)> = o["quarantined"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["seq"].as_u64().unwrap(), x["code"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(q, vec![(bad.seq, "bad_answer".to_owned()), (waiting.seq, "missing_dependency".to_owned())]);
    let (_, list) = h.call("GET", "/v1/admin/quarantine", Some(&h.supervisor), None).await;
    assert_eq!(list["quarantine"].as_array().unwrap().len(), 2);
    assert!(list["quarantine"][0]["message"].as_str().unwrap().contains("from 0 to 3"));
    let value = h
        .state
        .db()
        .read_blocking(|tx| sidak_server::ledger::field(tx, &visit.id.to_string(), "answer.proses.prosedur"))
        .unwrap();
    assert_eq!(value, Some(json!(0)), "the op after the bad one was applied ({after:?})");
    // A pulling tier sees both held back.
    let (_, page) = h.call("GET", "/v1/ops/pull?limit=1000", Some(&h.assessor), None).await;
    let origin = json!(dev.origin.to_string());
    let (bad_seq, waiting_seq) = (bad.seq, waiting.seq);
    let flagged = move |page: &Value| -> Vec<(u64, bool)> {
        page["ops"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["op"]["origin"] == origin)
            .map(|p| (p["op"]["seq"].as_u64().unwrap(), p["quarantined"].as_bool().unwrap_or(false)))
            .filter(|(seq, _)| *seq == bad_seq || *seq == waiting_seq)
            .collect()
    };
    assert_eq!(flagged(&page), vec![(bad.seq, true), (waiting.seq, true)]);
    let cursor = page["cursor"].as_str().unwrap().to_owned();
    // The missing visit arrives: the waiting op is released.
    dev.write(ghost_visit, "instrument", json!({"id": "penilaian-2023", "version": 1}), None);
    let (_, r) = push(&h, &h.assessor, dev.batch(dev.ops.len() - 1)).await;
    let q: Vec<u64> =
        r["origins"][0]["quarantined"].as_array().unwrap().iter().map(|x| x["seq"].as_u64().unwrap()).collect();
    assert_eq!(q, vec![bad.seq], "the waiting op was released");
    // ... and served again after the cursor, unflagged, so the pulling tier applies it.
    let (_, page) = h.call("GET", &format!("/v1/ops/pull?cursor={cursor}&limit=1000"), Some(&h.assessor), None).await;
    assert_eq!(flagged(&page), vec![(waiting.seq, false)]);
    let seqs: Vec<u64> = page["ops"].as_array().unwrap().iter().map(|p| p["server_seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "server_seq still rises: {seqs:?}");
}

/// An origin's quarantined ops in a push answer: (seq, code).
fn quarantined(origin: &Value) -> Vec<(u64, &str)> {
    origin["quarantined"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["seq"].as_u64().unwrap(), x["code"].as_str().unwrap()))
        .collect()
}

/// A record's fields are stored by its id: an op naming a held id as another kind
/// would write them past the checks of the record's own kind. It is quarantined as
/// `not_permitted`, and the records, their kinds and the results stay as they were.
#[tokio::test]
async fn a_held_record_cannot_be_written_as_another_kind() {
    let h = Harness::new();
    let mut dev = Device::new(3, "a1", "jateng");
    let visit = dev.visit(&h, "kota-sukamaju", "disdukcapil", "ktp-el", 2);
    let note = EntityRef { kind: EntityKind::Note, id: EntityId(uuid::Uuid::now_v7()) };
    dev.write(note, "visit", json!(visit.id.to_string()), None);
    dev.write(note, "indicator", json!("proses.persyaratan"), None);
    let (_, r) = push(&h, &h.assessor, dev.batch(0)).await;
    assert!(r["origins"][0]["quarantined"].as_array().is_none_or(Vec::is_empty), "{r}");
    let records = |h: &Harness| {
        h.state
            .db()
            .read_blocking(|tx| {
                let mut rows = tx.prepare(
                    "SELECT e.entity, e.kind, f.kind, f.field, f.value FROM entities e JOIN fields f ON f.entity = e.entity
                     ORDER BY e.entity, f.field",
                )?;
                let rows = rows
                    .query_map([], |r| {
                        Ok((0..5).map(|i| r.get::<_, String>(i)).collect::<Result<Vec<_>, _>>()?.join(" "))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                let docs: String = tx.query_row(
                    "SELECT group_concat(document) FROM (SELECT document FROM results ORDER BY kind, entity)",
                    [],
                    |r| r.get(0),
                )?;
                Ok::<_, sidak_server::error::ApiError>((rows, docs))
            })
            .unwrap()
    };
    let before = records(&h);
    let from = dev.ops.len();
    let as_respondent =
        dev.write(EntityRef { kind: EntityKind::Respondent, ..visit }, "kind", json!("service_user"), None);
    let as_evidence =
        dev.write(EntityRef { kind: EntityKind::Evidence, ..note }, "indicator", json!("proses.prosedur"), None);
    let (_, r) = push(&h, &h.assessor, dev.batch(from)).await;
    let o = &r["origins"][0];
    assert_eq!(o["held"]["seq"].as_u64(), Some(dev.seq), "both are durable: {r}");
    let q = quarantined(o);
    assert_eq!(q, vec![(as_respondent.seq, "not_permitted"), (as_evidence.seq, "not_permitted")], "{r}");
    let message = o["quarantined"][0]["message"].as_str().unwrap();
    assert!(message.contains("held here as kind `visit`") && message.contains("as `respondent`"), "{message}");
    assert!(records(&h) == before, "the note's indicator and the visit's records are as they were");
    // The ops behind them are applied.
    let from = dev.ops.len();
    let answer = dev.write(visit, "answer.proses.prosedur", json!(3), None);
    let (_, r) = push(&h, &h.assessor, dev.batch(from)).await;
    assert!(!r["origins"][0]["quarantined"].as_array().unwrap().iter().any(|x| x["seq"] == answer.seq), "{r}");
    let value = h
        .state
        .db()
        .read_blocking(|tx| sidak_server::ledger::field(tx, &visit.id.to_string(), "answer.proses.prosedur"))
        .unwrap();
    assert_eq!(value, Some(json!(3)));
}

/// A device writes its own assessor's visits and what hangs on them, nobody else's:
/// another assessor's device naming a visit it did not record (an answer over it, a
/// note or questionnaire on it) has its ops quarantined as `not_permitted`, and the
/// visit, its scope and the results stay as they were. The device's other ops apply.
#[tokio::test]
async fn a_device_cannot_write_another_assessors_visit() {
    let h = Harness::new();
    let mut mine = Device::new(3, "a1", "jateng");
    let visit = mine.visit(&h, "kota-sukamaju", "disdukcapil", "ktp-el", 2);
    let (_, r) = push(&h, &h.assessor, mine.batch(0)).await;
    assert!(r["origins"][0]["quarantined"].as_array().is_none_or(Vec::is_empty), "{r}");
    let unit = unit_id(&h, &h.id_of("institution", "kota-sukamaju"), "disdukcapil");
    let result = |h: &Harness| {
        let unit = unit.clone();
        h.state
            .db()
            .read_blocking(move |tx| {
                tx.query_row("SELECT document FROM results WHERE kind = 'unit' AND entity = ?1", [unit], |r| {
                    r.get::<_, String>(0)
                })
                .map_err(sidak_server::error::ApiError::from)
            })
            .unwrap()
    };
    let before = result(&h);
    let scope = |h: &Harness| {
        h.state.db().read_blocking(move |tx| sidak_server::ledger::entity_scope(tx, &visit.id.to_string())).unwrap()
    };
    assert_eq!(scope(&h).assessor.as_deref(), Some("a1"));

    let mut theirs = Device::new(4, "a2", "jateng");
    let own = theirs.visit(&h, "kota-sukamaju", "dpmptsp", "pbg", 3);
    let over = theirs.write(visit, "answer.proses.persyaratan", json!(0), None);
    let note = EntityRef { kind: EntityKind::Note, id: EntityId(uuid::Uuid::now_v7()) };
    let on = theirs.write(note, "visit", json!(visit.id.to_string()), None);
    let respondent = EntityRef { kind: EntityKind::Respondent, id: EntityId(uuid::Uuid::now_v7()) };
    let questionnaire = theirs.write(respondent, "visit", json!(visit.id.to_string()), None);
    let (status, r) = push(&h, &h.other_assessor, theirs.batch(0)).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    let o = &r["origins"][0];
    assert_eq!(o["held"]["seq"].as_u64(), Some(theirs.seq), "every op is durable: {r}");
    let q = quarantined(o);
    assert_eq!(q, vec![(over.seq, "not_permitted"), (on.seq, "not_permitted"), (questionnaire.seq, "not_permitted")]);
    let message = o["quarantined"][0]["message"].as_str().unwrap();
    assert!(message.contains("assessor a1") && message.contains("assessor a2"), "{message}");
    let answer = |h: &Harness, id: EntityId| {
        h.state
            .db()
            .read_blocking(move |tx| sidak_server::ledger::field(tx, &id.to_string(), "answer.proses.persyaratan"))
            .unwrap()
    };
    assert_eq!(answer(&h, visit.id), Some(json!(2)), "the visit is as a1 recorded it");
    assert_eq!(answer(&h, own.id), Some(json!(3)), "a2's own visit is applied");
    assert_eq!(scope(&h).assessor.as_deref(), Some("a1"));
    assert_eq!(result(&h), before, "a1's unit result is as before");
}

/// A regional office assesses its own region's institutions: a device of jateng naming
/// an institution of sulbar as its visit's has that op quarantined as `not_permitted`,
/// and sulbar's results stay as they were.
#[tokio::test]
async fn a_device_cannot_record_a_visit_in_another_region() {
    let h = Harness::new();
    let documents = |h: &Harness| {
        h.state
            .db()
            .read_blocking(|tx| {
                tx.query_row(
                    "SELECT COUNT(*), group_concat(document) FROM (SELECT document FROM results WHERE region = 'sulbar' ORDER BY kind, entity)",
                    [],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Option<String>>(1)?)),
                )
                .map_err(sidak_server::error::ApiError::from)
            })
            .unwrap()
    };
    let before = documents(&h);
    let mut dev = Device::new(3, "a1", "jateng");
    let visit = dev.visit(&h, "kab-mamuju", "disdukcapil", "ktp-el", 3);
    let (_, r) = push(&h, &h.assessor, dev.batch(0)).await;
    let o = &r["origins"][0];
    assert_eq!(o["held"]["seq"].as_u64(), Some(dev.seq), "every op is durable: {r}");
    let institution_op = dev.ops.iter().find(|op| op.entity == visit && op.field == "institution").unwrap();
    assert_eq!(quarantined(o), vec![(institution_op.seq, "not_permitted")], "{r}");
    let message = o["quarantined"][0]["message"].as_str().unwrap();
    assert!(message.contains("is in region sulbar") && message.contains("region jateng"), "{message}");
    let placed =
        h.state.db().read_blocking(move |tx| sidak_server::ledger::entity_scope(tx, &visit.id.to_string())).unwrap();
    assert_eq!(placed.institution, None, "the visit is placed in no institution");
    assert_eq!(documents(&h), before, "sulbar's results are as they were");
}

#[tokio::test]
async fn pushing_under_someone_elses_origin_is_forbidden_and_changes_nothing() {
    let h = Harness::new();
    let mut dev = Device::new(4, "a1", "jateng");
    dev.visit(&h, "kota-sukamaju", "disdukcapil", "ktp-el", 1);
    push(&h, &h.assessor, dev.batch(0)).await;
    let before = h.fingerprint();
    // Another assessor reuses a1's origin.
    let visit = EntityRef { kind: EntityKind::Visit, id: EntityId(uuid::Uuid::now_v7()) };
    dev.write(visit, "mode", json!("covert"), None);
    let (s, e) = push(&h, &h.other_assessor, dev.batch(dev.ops.len() - 1)).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::FORBIDDEN, Some("origin_forbidden")));
    // A new origin claiming another assessor.
    let forged = Device::new(5, "a1", "jateng");
    let (s, e) = push(&h, &h.other_assessor, forged.batch(0)).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::FORBIDDEN, Some("origin_forbidden")));
    // A new origin whose first op is not a registration.
    let mut bare = Device {
        origin: sidak_core::ids::OriginId(uuid::Uuid::from_bytes([6; 16])),
        seq: 0,
        prev: Sha256Digest::ZERO,
        ms: T0 as u64,
        ops: vec![],
    };
    bare.write(visit, "mode", json!("covert"), None);
    let (s, _) = push(&h, &h.assessor, bare.batch(0)).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // A mixed request: one allowed origin, one forbidden: nothing at all is stored.
    let mut mine = Device::new(7, "a2", "jateng");
    mine.visit(&h, "kota-sukamaju", "dpmptsp", "pbg", 1);
    let mut ops: Vec<Value> = serde_json::from_value(mine.batch(0)["ops"].clone()).unwrap();
    ops.extend(serde_json::from_value::<Vec<Value>>(dev.batch(dev.ops.len() - 1)["ops"].clone()).unwrap());
    let (s, _) = push(&h, &h.other_assessor, json!({"ops": ops})).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(h.fingerprint(), before);
    // The role is checked before the body: a supervisor sending garbage hears 403.
    let (s, e) = push(&h, &h.supervisor, json!({"garbage": true})).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::FORBIDDEN, Some("role_forbidden")));
    // The supervisor cannot push at all.
    let (s, e) = push(&h, &h.supervisor, dev.batch(0)).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::FORBIDDEN, Some("role_forbidden")));
    // A peer of the region may forward a1's ops; a peer of another region may not.
    let (s, _) = push(&h, &h.peer, dev.batch(0)).await;
    assert_eq!(s, StatusCode::OK);
}

/// The result rows, in full, in key order.
fn results_snapshot(h: &Harness) -> Vec<(String, String, String, String)> {
    h.state
        .db()
        .read_blocking(|tx| {
            let mut stmt = tx.prepare("SELECT kind, entity, instrument, document FROM results ORDER BY 1, 2, 3")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
            rows.collect::<Result<Vec<_>, _>>().map_err(sidak_server::error::ApiError::from)
        })
        .unwrap()
}

/// Pushes waiting together are applied in one transaction, each in its own savepoint:
/// a push that fails half-way (here a trigger refuses its third op, after its first two
/// were written) stores nothing, a refused push is refused, and the pushes before and
/// after it in the same group land, with their institution's results recomputed.
#[test]
fn pushes_applied_together_each_land_or_change_nothing() {
    use sidak_server::push_group;
    let h = Harness::new();
    let principal = |secret: &str| {
        h.state
            .db()
            .read_blocking(|tx| {
                sidak_server::auth::principal_for(tx, secret).map_err(sidak_server::error::ApiError::from)
            })
            .unwrap()
            .unwrap()
    };
    let request = |d: &Device| serde_json::from_value::<sidak_core::wire::PushRequest>(d.batch(0)).unwrap();
    let mut first = Device::new(21, "a1", "jateng");
    first.visit(&h, "kota-sukamaju", "disdukcapil", "ktp-el", 2);
    let mut failing = Device::new(22, "a1", "jateng");
    failing.visit(&h, "kota-sukamaju", "disdukcapil", "akta-lahir", 1);
    let mut last = Device::new(23, "a2", "jateng");
    last.visit(&h, "kota-sukamaju", "dpmptsp", "pbg", 3);
    let failing_origin = failing.origin.to_string();
    h.state
        .db()
        .write_blocking(|tx| {
            tx.execute_batch(&format!(
                "CREATE TRIGGER refuse BEFORE INSERT ON ops WHEN NEW.origin = '{failing_origin}' AND NEW.seq = 3
                 BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;"
            ))
            .map_err(sidak_server::error::ApiError::from)
        })
        .unwrap();

    // Every result up to date first (the harness sets up assignments without
    // recomputing), so that what follows compares only what the group did.
    let instruments = h.state.instruments();
    h.state.db().write_blocking(|tx| sidak_server::results::recompute_all(tx, &instruments)).unwrap();

    let answers = [
        push_group::submit(&h.state, principal(&h.assessor), request(&first), T0),
        push_group::submit(&h.state, principal(&h.assessor), request(&failing), T0),
        push_group::submit(&h.state, principal(&h.supervisor), request(&first), T0),
        push_group::submit(&h.state, principal(&h.other_assessor), request(&last), T0),
    ];
    // One task applies the four, as the first push's task would.
    push_group::apply_waiting(&h.state);
    let [first_answer, failing_answer, supervisor_answer, last_answer] = answers.map(|a| a.blocking_recv().unwrap());
    let (response, stored) = first_answer.unwrap();
    assert_eq!((stored, response.origins[0].stored as usize), (first.ops.len(), first.ops.len()));
    assert_eq!(failing_answer.unwrap_err().code, "internal", "the trigger's refusal is a store error");
    assert_eq!(supervisor_answer.unwrap_err().code, "role_forbidden");
    assert_eq!(last_answer.unwrap().1, last.ops.len());

    let stored_of = |origin: String| {
        h.state
            .db()
            .read_blocking(|tx| {
                tx.query_row("SELECT COUNT(*) FROM ops WHERE origin = ?1", [origin], |r| r.get::<_, i64>(0))
                    .map_err(sidak_server::error::ApiError::from)
            })
            .unwrap()
    };
    assert_eq!(stored_of(failing_origin), 0, "the failed push's first ops were rolled back with it");
    assert_eq!(stored_of(first.origin.to_string()), first.ops.len() as i64);
    assert_eq!(stored_of(last.origin.to_string()), last.ops.len() as i64);

    // The group's recompute left every result as a full recompute makes it, and both
    // units the group touched have theirs.
    let after_group = results_snapshot(&h);
    let units: Vec<&str> = after_group.iter().filter(|r| r.0 == "unit").map(|r| r.1.as_str()).collect();
    let inst = h.id_of("institution", "kota-sukamaju");
    for code in ["disdukcapil", "dpmptsp"] {
        assert!(units.contains(&unit_id(&h, &inst, code).as_str()), "{code} has a result");
    }
    h.state.db().write_blocking(|tx| sidak_server::results::recompute_all(tx, &instruments)).unwrap();
    assert!(results_snapshot(&h) == after_group, "the group's results are a full recompute's");

    // Once the trigger is gone, the failed push goes through whole.
    h.state
        .db()
        .write_blocking(|tx| tx.execute_batch("DROP TRIGGER refuse").map_err(sidak_server::error::ApiError::from))
        .unwrap();
    let again = push_group::submit(&h.state, principal(&h.assessor), request(&failing), T0);
    push_group::apply_waiting(&h.state);
    assert_eq!(again.blocking_recv().unwrap().unwrap().1, failing.ops.len());
    // Nothing waits any more: a task started now finds nothing to do.
    push_group::apply_waiting(&h.state);
}

#[tokio::test]
async fn pull_is_paginated_and_scoped() {
    let h = Harness::new();
    let mut a1 = Device::new(10, "a1", "jateng");
    a1.visit(&h, "kota-sukamaju", "disdukcapil", "ktp-el", 3);
    let mut a2 = Device::new(11, "a2", "jateng");
    a2.visit(&h, "kota-sukamaju", "dpmptsp", "pbg", 2);
    let mut b1 = Device::new(12, "b1", "sulbar");
    b1.visit(&h, "kab-mamuju", "disdukcapil", "ktp-el", 1);
    push(&h, &h.assessor, a1.batch(0)).await;
    push(&h, &h.other_assessor, a2.batch(0)).await;
    push(&h, &h.other_region_assessor, b1.batch(0)).await;

    /// Every page from the start, and the last cursor; `extra` is added to each query.
    async fn pull_pages(h: &Harness, token: &str, extra: &str) -> (Vec<Value>, String) {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/ops/pull?limit=7&cursor={c}{extra}"),
                None => format!("/v1/ops/pull?limit=7{extra}"),
            };
            let request = Request::builder()
                .uri(&path)
                .header("authorization", format!("Bearer {token}"))
                .body(Body::empty())
                .unwrap();
            let (s, headers, page) = h.send_for_headers(request).await;
            assert_eq!(s, StatusCode::OK, "{page}");
            // The cursor and `more` come ahead of the body too (§5.4), the same.
            let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_owned());
            assert_eq!(header(CURSOR_HEADER).as_deref(), page["cursor"].as_str(), "{path}");
            assert_eq!(header(MORE_HEADER), Some(page["more"].to_string()), "{path}");
            out.extend(page["ops"].as_array().unwrap().iter().cloned());
            cursor = Some(page["cursor"].as_str().unwrap().to_owned());
            if !page["more"].as_bool().unwrap() {
                return (out, cursor.unwrap());
            }
        }
    }
    async fn pull_all(h: &Harness, token: &str) -> Vec<Value> {
        pull_pages(h, token, "").await.0
    }
    let origin_of = |o: &Value| o["op"]["origin"].as_str().unwrap().to_owned();
    let mine = pull_all(&h, &h.assessor).await;
    assert!(mine.iter().any(|o| origin_of(o) == a1.origin.to_string()));
    assert!(!mine.iter().any(|o| origin_of(o) == a2.origin.to_string()), "another assessor's visits are not pulled");
    assert!(!mine.iter().any(|o| origin_of(o) == b1.origin.to_string()));
    assert!(mine.iter().any(|o| o["op"]["entity"]["kind"] == "institution"), "the registry is pulled");
    let kinds_of_a2_assignment = mine
        .iter()
        .filter(|o| o["op"]["entity"]["kind"] == "assignment" && o["op"]["field"] == "assessor")
        .map(|o| o["op"]["value"].clone())
        .collect::<Vec<_>>();
    assert_eq!(kinds_of_a2_assignment, vec![json!("a1")], "only its own assignment");
    let seqs: Vec<u64> = mine.iter().map(|o| o["server_seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in server order");

    // A device leaves its own ops out; the rest of its scope comes, and the cursor ends
    // where the whole pull's does.
    let (whole, whole_end) = pull_pages(&h, &h.assessor, "").await;
    let (omitted, omitted_end) = pull_pages(&h, &h.assessor, &format!("&omit_origin={}", a1.origin)).await;
    assert!(!omitted.iter().any(|o| origin_of(o) == a1.origin.to_string()), "its own ops are left out");
    let others: Vec<&Value> = whole.iter().filter(|o| origin_of(o) != a1.origin.to_string()).collect();
    assert_eq!(omitted.iter().collect::<Vec<_>>(), others, "everything else in its scope, in order");
    assert!(omitted.iter().any(|o| o["op"]["entity"]["kind"] == "institution"), "the registry still comes");
    assert_eq!(omitted_end, whole_end, "the cursor moves past the ops left out");

    let region = pull_all(&h, &h.supervisor).await;
    assert!(region.iter().any(|o| origin_of(o) == a2.origin.to_string()));
    let (region_but_a2, _) = pull_pages(&h, &h.supervisor, &format!("&omit_origin={}", a2.origin)).await;
    assert!(region_but_a2.iter().any(|o| origin_of(o) == a1.origin.to_string()));
    assert!(!region_but_a2.iter().any(|o| origin_of(o) == a2.origin.to_string()));
    assert!(!region.iter().any(|o| origin_of(o) == b1.origin.to_string()), "another region is not pulled");
    let all = pull_all(&h, &h.admin).await;
    let total: i64 = h
        .state
        .db()
        .read_blocking(|tx| {
            tx.query_row("SELECT COUNT(*) FROM ops", [], |r| r.get(0)).map_err(sidak_server::error::ApiError::from)
        })
        .unwrap();
    assert_eq!(all.len() as i64, total);
}

#[tokio::test]
async fn pull_start_again_answers() {
    let h = Harness::new();
    let (_, page) = h.call("GET", "/v1/ops/pull", Some(&h.admin), None).await;
    let cursor = page["cursor"].as_str().unwrap().to_owned();
    let (store, seq) = cursor.split_once('.').unwrap();
    let ahead = format!("{store}.{}", seq.parse::<u64>().unwrap() + 5);
    let (s, e) = h.call("GET", &format!("/v1/ops/pull?cursor={ahead}"), Some(&h.admin), None).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::CONFLICT, Some("reset_required")));
    let other = format!("{}.{seq}", uuid::Uuid::now_v7().simple());
    let (s, e) = h.call("GET", &format!("/v1/ops/pull?cursor={other}"), Some(&h.admin), None).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::CONFLICT, Some("reset_required")));
    for (query, code) in [
        ("cursor=nonsense", "bad_cursor"),
        ("limit=0", "bad_query"),
        ("limit=5000", "bad_query"),
        ("colour=red", "bad_query"),
        ("limit=x", "bad_query"),
        ("omit_origin=my-phone", "bad_query"),
        ("omit_origin=", "bad_query"),
    ] {
        let (s, e) = h.call("GET", &format!("/v1/ops/pull?{query}"), Some(&h.admin), None).await;
        assert_eq!((s, e["code"].as_str()), (StatusCode::BAD_REQUEST, Some(code)), "{query}");
    }
}

#[tokio::test]
async fn origin_status_and_manifest_are_scoped() {
    let h = Harness::new();
    let mut a1 = Device::new(20, "a1", "jateng");
    a1.visit(&h, "kota-sukamaju", "disdukcapil", "ktp-el", 3);
    push(&h, &h.assessor, a1.batch(0)).await;
    let unknown = uuid::Uuid::now_v7();
    let (s, r) =
        h.call("POST", "/v1/origins/status", Some(&h.assessor), Some(json!({"origins": [a1.origin, unknown]}))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(r["origins"][0]["held"]["seq"].as_u64(), Some(a1.seq));
    assert_eq!(r["origins"][1]["held"]["seq"], 0);
    let (s, e) =
        h.call("POST", "/v1/origins/status", Some(&h.other_assessor), Some(json!({"origins": [a1.origin]}))).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::FORBIDDEN, Some("scope_forbidden")));
    let many: Vec<String> = (0..1001).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    let (s, e) = h.call("POST", "/v1/origins/status", Some(&h.admin), Some(json!({"origins": many}))).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_body")));
    let (_, m) = h.call("GET", "/v1/manifest", Some(&h.supervisor), None).await;
    let entry = m["origins"].as_array().unwrap().iter().find(|e| e["origin"] == json!(a1.origin)).unwrap().clone();
    assert_eq!(
        (entry["seq"].as_u64(), entry["visits"].as_u64(), entry["head_hash"].clone()),
        (Some(a1.seq), Some(1), json!(a1.prev.to_hex()))
    );
    let (_, m) = h.call("GET", "/v1/manifest", Some(&h.other_supervisor), None).await;
    assert!(m["origins"].as_array().unwrap().iter().all(|e| e["origin"] != json!(a1.origin)));
}

fn sha(bytes: &[u8]) -> String {
    Sha256Digest::of(bytes).to_hex()
}

async fn put_chunk(h: &Harness, token: &str, sha: &str, offset: u64, bytes: &[u8]) -> (StatusCode, Value) {
    let req = Request::builder()
        .method("PUT")
        .uri(format!("/v1/evidence/{sha}?offset={offset}"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/octet-stream")
        .body(Body::from(bytes.to_vec()))
        .unwrap();
    h.send(req).await
}

#[tokio::test]
async fn evidence_uploads_resume_verify_and_are_scoped() {
    let h = Harness::new();
    let photo: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let digest = sha(&photo);
    let (s, st) = h
        .call(
            "POST",
            &format!("/v1/evidence/{digest}"),
            Some(&h.assessor),
            Some(json!({"size": photo.len(), "media_type": "image/jpeg"})),
        )
        .await;
    assert_eq!((s, st["received"].as_u64()), (StatusCode::OK, Some(0)));
    let (s, st) = put_chunk(&h, &h.assessor, &digest, 0, &photo[..100_000]).await;
    assert_eq!((s, st["received"].as_u64()), (StatusCode::OK, Some(100_000)));
    // A replayed chunk is acknowledged and writes nothing; a chunk beyond the end of
    // what is held is refused with the offset to send from.
    let (s, st) = put_chunk(&h, &h.assessor, &digest, 0, &photo[..100_000]).await;
    assert_eq!((s, st["received"].as_u64()), (StatusCode::OK, Some(100_000)));
    let (s, e) = put_chunk(&h, &h.assessor, &digest, 200_000, &photo[200_000..]).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::CONFLICT, Some("offset_mismatch")));
    let (_, st) = h.call("GET", &format!("/v1/evidence/{digest}/status"), Some(&h.assessor), None).await;
    assert_eq!(st["received"], 100_000);
    // An overlapping chunk is taken from where the server is.
    let (s, st) = put_chunk(&h, &h.assessor, &digest, 50_000, &photo[50_000..]).await;
    assert_eq!((s, st["complete"].as_bool()), (StatusCode::OK, Some(true)));
    // A crash after the finished file was moved into place but before the store
    // recorded it: the next chunk (or announcement) finishes it instead of corrupting it.
    h.state
        .db()
        .write_blocking(|tx| {
            tx.execute("UPDATE blobs SET complete = 0, received = 100000 WHERE sha256 = ?1", [&digest])
                .map_err(sidak_server::error::ApiError::from)
        })
        .unwrap();
    let (s, st) = put_chunk(&h, &h.assessor, &digest, 100_000, &photo[100_000..200_000]).await;
    assert_eq!((s, st["complete"].as_bool()), (StatusCode::OK, Some(true)), "{st}");
    // Announcing it again with another size is refused.
    let (s, e) = h
        .call(
            "POST",
            &format!("/v1/evidence/{digest}"),
            Some(&h.assessor),
            Some(json!({"size": 5, "media_type": "image/jpeg"})),
        )
        .await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::CONFLICT, Some("size_mismatch")));
    // Downloading needs a record in scope that cites the file.
    let (s, e) = h.call("GET", &format!("/v1/evidence/{digest}"), Some(&h.supervisor), None).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::FORBIDDEN, Some("scope_forbidden")));
    let mut dev = Device::new(30, "a1", "jateng");
    let visit = dev.visit(&h, "kota-sukamaju", "disdukcapil", "ktp-el", 3);
    let ev = EntityRef { kind: EntityKind::Evidence, id: EntityId(uuid::Uuid::now_v7()) };
    dev.write(ev, "visit", json!(visit.id.to_string()), None);
    dev.write(ev, "sha256", json!(digest), None);
    push(&h, &h.assessor, dev.batch(0)).await;
    let req = Request::builder()
        .uri(format!("/v1/evidence/{digest}"))
        .header("authorization", format!("Bearer {}", h.supervisor))
        .body(Body::empty())
        .unwrap();
    let response = tower::ServiceExt::oneshot(h.router.clone(), req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
    assert_eq!(body.as_ref(), photo.as_slice(), "byte for byte");
    assert_eq!(
        h.call("GET", &format!("/v1/evidence/{digest}"), Some(&h.other_supervisor), None).await.0,
        StatusCode::FORBIDDEN
    );

    // Wrong bytes: the upload is discarded and must be sent again.
    let fake = sha(b"what the device meant to send");
    h.call(
        "POST",
        &format!("/v1/evidence/{fake}"),
        Some(&h.assessor),
        Some(json!({"size": 4, "media_type": "image/png"})),
    )
    .await;
    let (s, e) = put_chunk(&h, &h.assessor, &fake, 0, b"evil").await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("evidence_mismatch")));
    let (s, _) = h.call("GET", &format!("/v1/evidence/{fake}/status"), Some(&h.assessor), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "the announcement is discarded with the bytes");
    h.call(
        "POST",
        &format!("/v1/evidence/{fake}"),
        Some(&h.assessor),
        Some(json!({"size": 4, "media_type": "image/png"})),
    )
    .await;
    let (s, st) = put_chunk(&h, &h.assessor, &fake, 0, b"evil").await;
    assert_eq!(
        (s, st["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("evidence_mismatch")),
        "announced again, and refused again"
    );
    // A supervisor may read the status of a file only when a record in its region cites it.
    assert_eq!(
        h.call("GET", &format!("/v1/evidence/{digest}/status"), Some(&h.supervisor), None).await.0,
        StatusCode::OK
    );
    assert_eq!(
        h.call("GET", &format!("/v1/evidence/{digest}/status"), Some(&h.other_supervisor), None).await.1["code"],
        "scope_forbidden"
    );
    // Limits and path tricks.
    let (s, e) = h
        .call(
            "POST",
            &format!("/v1/evidence/{fake}"),
            Some(&h.admin),
            Some(json!({"size": 1u64 << 40, "media_type": "image/png"})),
        )
        .await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("evidence_too_large")));
    for trick in ["..%2F..%2Fsidak.sqlite", "ABCDEF", "..", &"g".repeat(64), &digest.to_uppercase()] {
        let (s, e) = h.call("GET", &format!("/v1/evidence/{trick}"), Some(&h.admin), None).await;
        assert_eq!((s, e["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")), "{trick}");
    }
    let (s, e) = put_chunk(&h, &h.assessor, &fake, 0, &vec![0u8; 2 * 1024 * 1024]).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("body_too_large")));
}

#[tokio::test]
async fn bad_requests_get_their_codes_and_change_nothing() {
    let h = Harness::new();
    let before = h.fingerprint();
    let raw = |body: &str, ctype: &str| {
        Request::builder()
            .method("POST")
            .uri("/v1/ops/push")
            .header("authorization", format!("Bearer {}", h.assessor))
            .header("content-type", ctype)
            .body(Body::from(body.to_owned()))
            .unwrap()
    };
    let cases: Vec<(Request<Body>, StatusCode, &str)> = vec![
        (raw("{\"ops\": [", "application/json"), StatusCode::BAD_REQUEST, "malformed_json"),
        (raw("{\"ops\": [], \"extra\": 1}", "application/json"), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        (raw("{\"ops\": 5}", "application/json"), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        (raw("{\"ops\": [{\"origin\": 1}]}", "application/json"), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        (raw("{\"ops\": []}", "text/plain"), StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        (
            raw(&format!("{{\"ops\": [], \"pad\": \"{}\"}}", "x".repeat(9 * 1024 * 1024)), "application/json"),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (Request::builder().uri("/v1/whoami").body(Body::empty()).unwrap(), StatusCode::UNAUTHORIZED, "unauthorized"),
        (
            Request::builder()
                .uri("/v1/whoami")
                .header("authorization", "Bearer sdk_nope")
                .body(Body::empty())
                .unwrap(),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            Request::builder().uri("/v1/whoami").header("authorization", "Basic abc").body(Body::empty()).unwrap(),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            Request::builder().uri("/v1/health").header("sidak-protocol", "2").body(Body::empty()).unwrap(),
            StatusCode::BAD_REQUEST,
            "unsupported_protocol",
        ),
        (
            Request::builder().uri("/v2/ops/pull").body(Body::empty()).unwrap(),
            StatusCode::BAD_REQUEST,
            "unsupported_protocol",
        ),
        (Request::builder().uri("/v1/nothing").body(Body::empty()).unwrap(), StatusCode::NOT_FOUND, "not_found"),
        (
            Request::builder().method("DELETE").uri("/v1/ops/push").body(Body::empty()).unwrap(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ];
    for (req, status, code) in cases {
        let what = format!("{} {}", req.method(), req.uri());
        let (s, e) = h.send(req).await;
        assert_eq!((s, e["code"].as_str()), (status, Some(code)), "{what}: {e}");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // Too many ops.
    let mut dev = Device::new(40, "a1", "jateng");
    let v = EntityRef { kind: EntityKind::Visit, id: EntityId(uuid::Uuid::now_v7()) };
    for i in 0..1001 {
        dev.write(v, "mode", json!(if i % 2 == 0 { "covert" } else { "announced" }), None);
    }
    let (s, e) = push(&h, &h.assessor, dev.batch(0)).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("too_many_ops")));
    // An unsupported content coding.
    let req = Request::builder()
        .method("POST")
        .uri("/v1/ops/push")
        .header("authorization", format!("Bearer {}", h.assessor))
        .header("content-type", "application/json")
        .header("content-encoding", "br")
        .body(Body::from("{}"))
        .unwrap();
    assert_eq!(h.send(req).await.1["code"], "unsupported_media_type");
    assert_eq!(h.fingerprint(), before, "no refused request changed anything");
}

#[tokio::test]
async fn gzip_request_bodies_are_accepted_with_limits_after_decompression() {
    let h = Harness::new();
    let mut dev = Device::new(41, "a1", "jateng");
    dev.visit(&h, "kota-sukamaju", "disdukcapil", "ktp-el", 2);
    let gz = |text: &[u8]| {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(text).unwrap();
        enc.finish().unwrap()
    };
    let req = |body: Vec<u8>| {
        Request::builder()
            .method("POST")
            .uri("/v1/ops/push")
            .header("authorization", format!("Bearer {}", h.assessor))
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body(Body::from(body))
            .unwrap()
    };
    let (s, r) = h.send(req(gz(dev.batch(0).to_string().as_bytes()))).await;
    assert_eq!((s, r["origins"][0]["stored"].as_u64()), (StatusCode::OK, Some(dev.seq)));
    // 20 MiB of zeros compress to ~20 KiB: refused after decompression.
    let bomb = gz(format!("{{\"ops\": [], \"x\": \"{}\"}}", "0".repeat(20 * 1024 * 1024)).as_bytes());
    assert!(bomb.len() < 100_000);
    let (s, e) = h.send(req(bomb)).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("body_too_large")));
    let (s, e) = h.send(req(b"not gzip at all".to_vec())).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::BAD_REQUEST, Some("malformed_json")));
}

#[tokio::test]
async fn results_are_scoped_exported_and_recompute_identically() {
    let h = Harness::new();
    let mut a1 = Device::new(50, "a1", "jateng");
    a1.visit(&h, "kota-sukamaju", "disdukcapil", "ktp-el", 3);
    a1.visit(&h, "kota-sukamaju", "disdukcapil", "akta-lahir", 2);
    let mut b1 = Device::new(51, "b1", "sulbar");
    b1.visit(&h, "kab-mamuju", "disdukcapil", "ktp-el", 1);
    push(&h, &h.assessor, a1.batch(0)).await;
    push(&h, &h.other_region_assessor, b1.batch(0)).await;
    let (s, list) = h.call("GET", "/v1/results/institutions", Some(&h.admin), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["results"].as_array().unwrap().len(), 2);
    let cursor = list["cursor"].as_i64().unwrap();
    let (_, region) = h.call("GET", "/v1/results/institutions", Some(&h.supervisor), None).await;
    let codes: Vec<&str> = region["results"].as_array().unwrap().iter().map(|r| r["code"].as_str().unwrap()).collect();
    assert_eq!(codes, vec!["kota-sukamaju"]);
    let row = &region["results"][0];
    assert_eq!(row["status"], "incomplete", "questionnaires are still missing");
    assert!(row["provisional"].is_string());
    assert_eq!(
        h.call("GET", "/v1/results/institutions?region=sulbar", Some(&h.supervisor), None).await.1["code"],
        "scope_forbidden"
    );
    assert_eq!(h.call("GET", "/v1/results/institutions", Some(&h.assessor), None).await.1["code"], "role_forbidden");
    let (s, doc) = h.call("GET", "/v1/results/institutions/kota-sukamaju", Some(&h.supervisor), None).await;
    assert_eq!((s, doc["result"]["units"][0]["products"].as_array().map(Vec::len)), (StatusCode::OK, Some(2)));
    assert_eq!(
        h.call("GET", "/v1/results/institutions/kab-mamuju", Some(&h.supervisor), None).await.0,
        StatusCode::FORBIDDEN
    );
    let (_, units) = h.call("GET", "/v1/results/units?institution=".to_owned().as_str(), Some(&h.admin), None).await;
    assert!(units["results"].is_array());
    let (_, regions) = h.call("GET", "/v1/results/regions", Some(&h.admin), None).await;
    assert_eq!(regions["regions"].as_array().unwrap().len(), 2);
    // What changed since a cursor: nothing, then the new visit's institution.
    let (_, none) = h.call("GET", &format!("/v1/results/institutions?since={cursor}"), Some(&h.admin), None).await;
    assert_eq!(none["results"].as_array().unwrap().len(), 0);
    let mut b2 = Device::new(52, "b1", "sulbar");
    b2.visit(&h, "kab-mamuju", "disdukcapil", "ktp-el", 3);
    push(&h, &h.other_region_assessor, b2.batch(0)).await;
    let (_, changed) = h.call("GET", &format!("/v1/results/institutions?since={cursor}"), Some(&h.admin), None).await;
    let codes: Vec<&str> = changed["results"].as_array().unwrap().iter().map(|r| r["code"].as_str().unwrap()).collect();
    assert_eq!(codes, vec!["kab-mamuju"]);
    // CSV export.
    let req = Request::builder()
        .uri("/v1/results/institutions.csv")
        .header("authorization", format!("Bearer {}", h.admin))
        .body(Body::empty())
        .unwrap();
    let response = tower::ServiceExt::oneshot(h.router.clone(), req).await.unwrap();
    assert_eq!(response.headers()["content-type"], "text/csv; charset=utf-8");
    let csv =
        String::from_utf8(http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes().to_vec())
            .unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "code,name,type,region,instrument,status,score,provisional,grade,zone,completeness");
    assert_eq!(lines.len(), 3);

    // From scratch, byte for byte.
    let documents = |h: &Harness| {
        h.state
            .db()
            .read_blocking(|tx| {
                let mut stmt = tx.prepare(
                    "SELECT kind, entity, instrument, document FROM results ORDER BY kind, entity, instrument",
                )?;
                let rows = stmt.query_map([], |r| {
                    Ok(format!(
                        "{}|{}|{}|{}",
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?
                    ))
                })?;
                Ok::<_, sidak_server::error::ApiError>(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .unwrap()
    };
    let incremental = documents(&h);
    assert!(incremental.len() >= 4);
    // A recompute rewrites only the rows that differ: damage the store's results (a
    // document altered, a unit moved to another region, a row lost, a row for nothing)
    // and the recompute must put back exactly what the incremental one made.
    h.state
        .db()
        .write_blocking(|tx| {
            tx.execute_batch(
                "UPDATE results SET document = '{}' WHERE rowid = (SELECT MIN(rowid) FROM results WHERE kind = 'institution');
                 UPDATE results SET region = 'elsewhere' WHERE rowid = (SELECT MIN(rowid) FROM results WHERE kind = 'unit');
                 DELETE FROM results WHERE rowid = (SELECT MAX(rowid) FROM results WHERE kind = 'unit');
                 INSERT INTO results (kind, entity, instrument, institution, code, name, type, region, status, document, changed, required, answered, missing)
                 SELECT kind, 'gone', instrument, institution, code, name, type, region, status, document, changed, required, answered, missing
                 FROM results WHERE kind = 'unit' LIMIT 1;",
            )?;
            Ok::<_, sidak_server::error::ApiError>(())
        })
        .unwrap();
    assert_ne!(documents(&h), incremental);
    let (s, r) = h.call("POST", "/v1/admin/recompute", Some(&h.admin), None).await;
    assert_eq!((s, r["institutions"].as_u64()), (StatusCode::OK, Some(2)));
    assert_eq!(documents(&h), incremental, "recompute from scratch gives byte-identical results");
    let regions: Vec<Option<String>> = h
        .state
        .db()
        .read_blocking(|tx| {
            let mut stmt = tx.prepare("SELECT DISTINCT region FROM results")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            Ok::<_, sidak_server::error::ApiError>(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .unwrap();
    assert!(!regions.contains(&Some("elsewhere".to_owned())), "{regions:?}");
}

#[tokio::test]
async fn admin_endpoints() {
    let h = Harness::new();
    // Publish: a new version, the same again (no-op), different content under it (refused).
    let mut doc: Value = serde_json::from_str(sidak_core::instrument::builtin_text("ikm-2017").unwrap()).unwrap();
    doc["version"] = json!(2);
    let (s, r) = h.call("POST", "/v1/admin/instruments", Some(&h.admin), Some(doc.clone())).await;
    assert_eq!((s, r["added"].as_bool()), (StatusCode::OK, Some(true)));
    assert_eq!(h.call("POST", "/v1/admin/instruments", Some(&h.admin), Some(doc.clone())).await.1["added"], false);
    doc["title"] = json!("changed");
    assert_eq!(
        h.call("POST", "/v1/admin/instruments", Some(&h.admin), Some(doc.clone())).await.1["code"],
        "invalid_body"
    );
    doc["bands"][0]["min"] = json!("1.00");
    let (s, e) = h.call("POST", "/v1/admin/instruments", Some(&h.admin), Some(doc)).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_body")));
    assert!(e["message"].as_str().unwrap().contains("$.bands"));
    assert_eq!(h.call("GET", "/v1/instruments/ikm-2017/2", Some(&h.assessor), None).await.0, StatusCode::OK);

    // Registry import: idempotent; a bad CSV names its lines and changes nothing.
    let csv = |body: &str| {
        Request::builder()
            .method("POST")
            .uri("/v1/admin/registry")
            .header("authorization", format!("Bearer {}", h.admin))
            .header("content-type", "text/csv")
            .body(Body::from(body.to_owned()))
            .unwrap()
    };
    let (s, r) = h.send(csv(REGISTRY)).await;
    assert_eq!((s, r["institutions_added"].as_u64(), r["fields_changed"].as_u64()), (StatusCode::OK, Some(0), Some(0)));
    let renamed = REGISTRY.replace("KTP elektronik", "KTP-el");
    let (_, r) = h.send(csv(&renamed)).await;
    assert_eq!(r["fields_changed"].as_u64(), Some(2));
    let before = h.fingerprint();
    let bad = format!("{}\nkota-x,Kota X,desa,jateng,u,U,u,p,P\nKOTA,K,kota,jateng,u,U,u,p,P\n", REGISTRY.trim_end());
    let (s, e) = h.send(csv(&bad)).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_body")));
    let message = e["message"].as_str().unwrap();
    assert!(
        message.contains("line 6: institution_type `desa`") && message.contains("line 7: institution_code `KOTA`"),
        "{message}"
    );
    assert_eq!(h.fingerprint(), before);

    // Assignments.
    let (s, r) = h.call("POST", "/v1/admin/assignments", Some(&h.admin), Some(json!({"assessor": "a3", "institution": "kota-sukamaju", "unit": "dpmptsp", "instrument": "penilaian-2023@1", "mode": "announced"}))).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let (s, e) = h.call("POST", "/v1/admin/assignments", Some(&h.admin), Some(json!({"assessor": "a3", "institution": "kota-x", "unit": "dpmptsp", "instrument": "penilaian-2023@1", "mode": "announced"}))).await;
    assert_eq!(
        (s, e["message"].as_str().map(|m| m.contains("kota-x"))),
        (StatusCode::UNPROCESSABLE_ENTITY, Some(true))
    );
    let (s, e) = h.call("POST", "/v1/admin/assignments", Some(&h.admin), Some(json!({"assessor": "a3", "institution": "kota-sukamaju", "unit": "dpmptsp", "instrument": "penilaian-2099@1", "mode": "announced"}))).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_body")));

    // Conflicts: two devices edit the same field having seen the same version.
    let mut d1 = Device::new(60, "a1", "jateng");
    let visit = d1.visit(&h, "kota-sukamaju", "disdukcapil", "ktp-el", 2);
    push(&h, &h.assessor, d1.batch(0)).await;
    let seen = d1.ops.iter().rev().find(|o| o.field == "answer.proses.moto").unwrap().op_ref();
    d1.write(visit, "answer.proses.moto", json!(1), Some(seen));
    let mut d2 = Device::new(61, "a1", "jateng");
    d2.write(visit, "answer.proses.moto", json!(3), Some(seen));
    push(&h, &h.assessor, d1.batch(d1.ops.len() - 1)).await;
    push(&h, &h.assessor, d2.batch(0)).await;
    let (s, c) = h.call("GET", "/v1/admin/conflicts", Some(&h.supervisor), None).await;
    assert_eq!(s, StatusCode::OK);
    let conflict = &c["conflicts"][0];
    let values: Vec<Value> = conflict["versions"].as_array().unwrap().iter().map(|v| v["value"].clone()).collect();
    assert_eq!((conflict["field"].as_str(), values.len()), (Some("answer.proses.moto"), 2));
    assert!(values.contains(&json!(1)) && values.contains(&json!(3)), "both values are kept");
    assert_eq!(h.call("GET", "/v1/admin/conflicts", Some(&h.other_supervisor), None).await.1["conflicts"], json!([]));
}

#[tokio::test]
async fn an_internal_failure_is_a_generic_500() {
    let h = Harness::new();
    h.state
        .db()
        .write_blocking(|tx| tx.execute_batch("DROP TABLE results").map_err(sidak_server::error::ApiError::from))
        .unwrap();
    let (s, e) = h.call("GET", "/v1/results/institutions", Some(&h.admin), None).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::INTERNAL_SERVER_ERROR, Some("internal")));
    assert!(!e["message"].as_str().unwrap().contains("results"), "5xx messages stay generic");
}

#[tokio::test]
async fn health_reports_shutting_down() {
    let h = Harness::new();
    h.state.begin_shutdown();
    let (s, e) = h.call("GET", "/v1/health", None, None).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("shutting_down")));
}

#[tokio::test]
async fn every_route_is_described_and_every_described_route_exists() {
    let h = Harness::new();
    let spec: Value = serde_json::from_str(sidak_server::admin_api::OPENAPI).unwrap();
    let mut described: Vec<(String, String)> = Vec::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in
            item.as_object().unwrap().keys().filter(|k| ["get", "post", "put", "delete", "patch"].contains(&k.as_str()))
        {
            described.push((method.to_uppercase(), path.clone()));
        }
    }
    let mut routed: Vec<(String, String)> = h.routes.iter().map(|(m, p)| (m.to_string(), (*p).to_owned())).collect();
    described.sort();
    routed.sort();
    assert_eq!(described, routed, "proto/openapi.json and the router disagree");
    let (s, served) = h.call("GET", "/v1/openapi.json", None, None).await;
    assert_eq!((s, served), (StatusCode::OK, spec));
}

/// A body for a matrix request: none, JSON, or raw bytes of a media type.
#[derive(Clone)]
enum Payload {
    Empty,
    Json(Value),
    Raw(&'static str, Vec<u8>),
}

/// One request of the matrix as `who` (a token, or none) sends it.
async fn matrix_call(
    h: &Harness,
    method: &str,
    path: &str,
    token: Option<&str>,
    payload: &Payload,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = match payload {
        Payload::Empty => req.body(Body::empty()).unwrap(),
        Payload::Json(v) => req.header("content-type", "application/json").body(Body::from(v.to_string())).unwrap(),
        Payload::Raw(media, bytes) => req.header("content-type", *media).body(Body::from(bytes.clone())).unwrap(),
    };
    h.send(req).await
}

/// "200", or "403 scope_forbidden": the status, and the error code of a refusal (from
/// a JSON error body or a dashboard page's `data-code`).
fn outcome(status: StatusCode, body: &Value) -> String {
    if status.is_success() || status.is_redirection() {
        return status.as_u16().to_string();
    }
    let code = match body {
        Value::String(page) => page
            .split_once("data-code=\"")
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(code, _)| code.to_owned())
            .unwrap_or_default(),
        json => json["code"].as_str().unwrap_or_default().to_owned(),
    };
    format!("{} {code}", status.as_u16())
}

/// Every role against every endpoint of the router: the exact status and code each
/// caller gets, refusals change nothing, and no handler touches SQLite on an async
/// thread. The list of routes is the router's own, so a new route without a row here
/// fails the test.
#[tokio::test]
async fn every_role_against_every_endpoint() {
    let h = Harness::new();
    let other_peer = h
        .state
        .db()
        .write_blocking(|tx| {
            sidak_server::auth::create_token(
                tx,
                &sidak_server::auth::NewToken {
                    role: sidak_server::auth::Role::Peer,
                    region: Some("sulbar".into()),
                    assessor: None,
                    label: None,
                    device_keys: Vec::new(),
                },
                T0,
            )
        })
        .unwrap()
        .1;
    // Two tokens no caller uses, for the admin to revoke and to rotate.
    let spare = |label: &str| {
        h.state
            .db()
            .write_blocking(|tx| {
                sidak_server::auth::create_token(
                    tx,
                    &sidak_server::auth::NewToken {
                        role: sidak_server::auth::Role::Assessor,
                        region: Some("jateng".into()),
                        assessor: Some("a3".into()),
                        label: Some(label.into()),
                        device_keys: Vec::new(),
                    },
                    T0,
                )
            })
            .unwrap()
            .0
    };
    let (to_revoke, to_rotate) = (spare("to revoke"), spare("to rotate"));
    // a1's visit in jateng citing a photo, uploaded; two conflicts on it; two
    // corrections to withdraw.
    let photo = b"a photo of the service standard".to_vec();
    let digest = sha(&photo);
    let mut dev = Device::new(70, "a1", "jateng");
    let visit = dev.visit(&h, "kota-sukamaju", "disdukcapil", "ktp-el", 3);
    let ev = EntityRef { kind: EntityKind::Evidence, id: EntityId(uuid::Uuid::now_v7()) };
    dev.write(ev, "visit", json!(visit.id.to_string()), None);
    dev.write(ev, "indicator", json!("proses.moto"), None);
    dev.write(ev, "sha256", json!(digest), None);
    assert_eq!(push(&h, &h.assessor, dev.batch(0)).await.0, StatusCode::OK);
    let announce = json!({"size": photo.len(), "media_type": "image/jpeg"});
    h.call("POST", &format!("/v1/evidence/{digest}"), Some(&h.assessor), Some(announce.clone())).await;
    assert_eq!(put_chunk(&h, &h.assessor, &digest, 0, &photo).await.1["complete"], true);
    let mut twin = Device::new(71, "a1", "jateng");
    for field in ["answer.proses.moto", "answer.proses.visi-misi"] {
        let seen = dev.ops.iter().rev().find(|o| o.field == field).unwrap().op_ref();
        dev.write(visit, field, json!(1), Some(seen));
        twin.write(visit, field, json!(2), Some(seen));
    }
    push(&h, &h.assessor, dev.batch(0)).await;
    push(&h, &h.assessor, twin.batch(0)).await;
    let mut corrections = Vec::new();
    for field in ["answer.proses.prosedur", "answer.proses.produk"] {
        let body =
            json!({"target": {"kind": "visit", "id": visit.id}, "field": field, "value": 2, "reason": "the photo"});
        let (s, made) = h.call("POST", "/v1/review/corrections", Some(&h.admin), Some(body)).await;
        assert_eq!(s, StatusCode::CREATED, "{made}");
        corrections.push(made["id"].as_str().unwrap().to_owned());
    }
    let institution = h.id_of("institution", "kota-sukamaju");
    let unit = unit_id(&h, &institution, "disdukcapil");
    let mut ikm: Value = serde_json::from_str(sidak_core::instrument::builtin_text("ikm-2017").unwrap()).unwrap();
    ikm["version"] = json!(2);

    // The callers, in the order of the columns below.
    let callers: [(&str, Option<String>); 9] = [
        ("no token", None),
        ("assessor a1", Some(h.assessor.clone())),
        ("assessor a2 (same region)", Some(h.other_assessor.clone())),
        ("assessor b1 (sulbar)", Some(h.other_region_assessor.clone())),
        ("supervisor", Some(h.supervisor.clone())),
        ("supervisor (sulbar)", Some(h.other_supervisor.clone())),
        ("peer", Some(h.peer.clone())),
        ("peer (sulbar)", Some(other_peer.clone())),
        ("admin", Some(h.admin.clone())),
    ];
    const OK: &str = "200";
    const NEW: &str = "201";
    const MOVED: &str = "303";
    const AUTH: &str = "401 unauthorized";
    const ROLE: &str = "403 role_forbidden";
    const SCOPE: &str = "403 scope_forbidden";
    const ORIGIN: &str = "403 origin_forbidden";
    let all = [OK; 9];
    let any_token = [AUTH, OK, OK, OK, OK, OK, OK, OK, OK];
    let uploaders = [AUTH, OK, OK, OK, ROLE, ROLE, OK, OK, OK];
    // Reading what a jateng record of a1 cites: a1, jateng's supervisor and peer, admin.
    let a1s_file = [AUTH, OK, SCOPE, SCOPE, OK, SCOPE, OK, SCOPE, OK];
    let results = [AUTH, ROLE, ROLE, ROLE, OK, OK, OK, OK, OK];
    let jateng_result = [AUTH, ROLE, ROLE, ROLE, OK, SCOPE, OK, SCOPE, OK];
    let review = [AUTH, ROLE, ROLE, ROLE, OK, OK, ROLE, ROLE, OK];
    let jateng_review = [AUTH, ROLE, ROLE, ROLE, OK, SCOPE, ROLE, ROLE, OK];
    let jateng_write = [AUTH, ROLE, ROLE, ROLE, NEW, SCOPE, ROLE, ROLE, NEW];
    let admin_only = [AUTH, ROLE, ROLE, ROLE, ROLE, ROLE, ROLE, ROLE, OK];
    let pages = [MOVED, ROLE, ROLE, ROLE, OK, OK, ROLE, ROLE, OK];
    let jateng_pages = [MOVED, ROLE, ROLE, ROLE, OK, SCOPE, ROLE, ROLE, OK];

    type MakeRequest = Box<dyn Fn(usize, Option<&str>) -> (String, Payload)>;
    let same =
        |path: String, payload: Payload| -> MakeRequest { Box::new(move |_, _| (path.clone(), payload.clone())) };
    let get = |path: &str| same(path.to_owned(), Payload::Empty);
    let json = |path: &str, body: Value| same(path.to_owned(), Payload::Json(body));
    let inst_page = format!("/dashboard/institutions/{institution}");
    let unit_page = format!("{inst_page}/units/disdukcapil");
    let (c_supervisor, c_admin) = (corrections[0].clone(), corrections[1].clone());
    let cases: Vec<(&str, &str, MakeRequest, [&str; 9])> = vec![
        ("GET", "/v1/health", get("/v1/health"), all),
        ("GET", "/v1/whoami", get("/v1/whoami"), any_token),
        (
            "POST",
            "/v1/ops/push",
            json("/v1/ops/push", dev.batch(0)),
            [AUTH, OK, ORIGIN, ORIGIN, ROLE, ROLE, OK, ORIGIN, OK],
        ),
        ("GET", "/v1/ops/pull", get("/v1/ops/pull"), any_token),
        (
            "POST",
            "/v1/origins/status",
            json("/v1/origins/status", json!({"origins": [dev.origin]})),
            [AUTH, OK, SCOPE, SCOPE, OK, SCOPE, OK, SCOPE, OK],
        ),
        ("GET", "/v1/manifest", get("/v1/manifest"), any_token),
        ("POST", "/v1/evidence/{sha256}", json(&format!("/v1/evidence/{digest}"), announce.clone()), uploaders),
        (
            "PUT",
            "/v1/evidence/{sha256}",
            same(format!("/v1/evidence/{digest}?offset=0"), Payload::Raw("application/octet-stream", photo.clone())),
            uploaders,
        ),
        ("GET", "/v1/evidence/{sha256}", get(&format!("/v1/evidence/{digest}")), a1s_file),
        ("GET", "/v1/evidence/{sha256}/status", get(&format!("/v1/evidence/{digest}/status")), a1s_file),
        ("GET", "/v1/instruments", get("/v1/instruments"), any_token),
        ("GET", "/v1/instruments/{id}/{version}", get("/v1/instruments/penilaian-2023/1"), any_token),
        ("GET", "/v1/assignments", get("/v1/assignments"), any_token),
        ("GET", "/v1/results/institutions", get("/v1/results/institutions"), results),
        ("GET", "/v1/results/institutions.csv", get("/v1/results/institutions.csv"), results),
        ("GET", "/v1/results/institutions/{id}", get("/v1/results/institutions/kota-sukamaju"), jateng_result),
        ("GET", "/v1/results/units", get("/v1/results/units"), results),
        ("GET", "/v1/results/units/{id}", get(&format!("/v1/results/units/{unit}")), jateng_result),
        ("GET", "/v1/results/regions", get("/v1/results/regions"), results),
        (
            "GET",
            "/v1/results/institutions/{id}/rapor",
            get("/v1/results/institutions/kota-sukamaju/rapor"),
            jateng_review,
        ),
        (
            "GET",
            "/v1/results/institutions/{id}/rapor.html",
            get("/v1/results/institutions/kota-sukamaju/rapor.html"),
            jateng_review,
        ),
        ("GET", "/v1/results/units.csv", get("/v1/results/units.csv"), review),
        ("GET", "/v1/exports/answers.csv", get("/v1/exports/answers.csv"), review),
        ("POST", "/v1/admin/instruments", json("/v1/admin/instruments", ikm), admin_only),
        (
            "POST",
            "/v1/admin/registry",
            same("/v1/admin/registry".into(), Payload::Raw("text/csv", REGISTRY.as_bytes().to_vec())),
            admin_only,
        ),
        (
            "POST",
            "/v1/admin/assignments",
            json(
                "/v1/admin/assignments",
                json!({"assessor": "a9", "institution": "kota-sukamaju", "unit": "dpmptsp", "instrument": "penilaian-2023@1", "mode": "covert"}),
            ),
            admin_only,
        ),
        ("GET", "/v1/admin/conflicts", get("/v1/admin/conflicts"), review),
        ("GET", "/v1/admin/quarantine", get("/v1/admin/quarantine"), review),
        ("POST", "/v1/admin/recompute", same("/v1/admin/recompute".into(), Payload::Empty), admin_only),
        ("GET", "/v1/admin/tokens", get("/v1/admin/tokens"), admin_only),
        (
            "POST",
            "/v1/admin/tokens",
            json("/v1/admin/tokens", json!({"role": "supervisor", "region": "jateng", "expires_in": "90d"})),
            [AUTH, ROLE, ROLE, ROLE, ROLE, ROLE, ROLE, ROLE, NEW],
        ),
        (
            "POST",
            "/v1/admin/tokens/{id}/revoke",
            same(format!("/v1/admin/tokens/{to_revoke}/revoke"), Payload::Empty),
            admin_only,
        ),
        (
            "POST",
            "/v1/admin/tokens/{id}/rotate",
            json(&format!("/v1/admin/tokens/{to_rotate}/rotate"), json!({"grace_seconds": 60})),
            admin_only,
        ),
        ("GET", "/v1/admin/audit", get("/v1/admin/audit"), review),
        ("GET", "/v1/openapi.json", get("/v1/openapi.json"), all),
        ("GET", "/v1/schemas/{file}", get("/v1/schemas/op.schema.json"), all),
        ("GET", "/v1/review/visits", get("/v1/review/visits"), review),
        ("GET", "/v1/review/edits", get("/v1/review/edits"), review),
        ("GET", "/v1/review/corrections", get("/v1/review/corrections"), review),
        (
            "POST",
            "/v1/review/corrections",
            json(
                "/v1/review/corrections",
                json!({"target": {"kind": "visit", "id": visit.id}, "field": "answer.proses.moto", "value": 2, "reason": "the photo"}),
            ),
            jateng_write,
        ),
        (
            "POST",
            "/v1/review/corrections/{id}/withdraw",
            // The supervisor and the admin each withdraw a correction of their own.
            Box::new(move |column, _| {
                let id = if column == 8 { &c_admin } else { &c_supervisor };
                (format!("/v1/review/corrections/{id}/withdraw"), Payload::Json(json!({"reason": "checked again"})))
            }),
            [AUTH, ROLE, ROLE, ROLE, OK, SCOPE, ROLE, ROLE, OK],
        ),
        (
            "POST",
            "/v1/review/conflicts/resolve",
            // The supervisor and the admin each resolve one of the two conflicts.
            Box::new(move |column, _| {
                let field = if column == 8 { "answer.proses.visi-misi" } else { "answer.proses.moto" };
                let body = json!({"entity": visit.id, "field": field, "value": 2, "reason": "checked"});
                ("/v1/review/conflicts/resolve".to_owned(), Payload::Json(body))
            }),
            jateng_write,
        ),
        ("GET", "/dashboard", get("/dashboard"), pages),
        ("GET", "/dashboard/login", get("/dashboard/login"), all),
        (
            "POST",
            "/dashboard/login",
            // Each caller logs in with its own token (none: an empty one).
            Box::new(|_, token| {
                let form = format!("token={}&next=%2Fdashboard", token.unwrap_or(""));
                ("/dashboard/login".to_owned(), Payload::Raw("application/x-www-form-urlencoded", form.into_bytes()))
            }),
            [AUTH, ROLE, ROLE, ROLE, MOVED, MOVED, ROLE, ROLE, MOVED],
        ),
        ("POST", "/dashboard/logout", same("/dashboard/logout".into(), Payload::Empty), [MOVED; 9]),
        ("GET", "/dashboard/rankings", get("/dashboard/rankings"), pages),
        ("GET", "/dashboard/sync", get("/dashboard/sync"), pages),
        ("GET", "/dashboard/regions/{region}", get("/dashboard/regions/jateng"), jateng_pages),
        ("GET", "/dashboard/institutions/{id}", get(&inst_page), jateng_pages),
        ("GET", "/dashboard/institutions/{id}/rapor", get(&format!("{inst_page}/rapor")), jateng_pages),
        ("GET", "/dashboard/institutions/{id}/units/{unit}", get(&unit_page), jateng_pages),
        (
            "GET",
            "/dashboard/institutions/{id}/units/{unit}/indicators/{indicator}",
            get(&format!("{unit_page}/indicators/proses.moto")),
            jateng_pages,
        ),
        (
            "GET",
            "/dashboard/institutions/{id}/units/{unit}/products/{product}",
            get(&format!("{unit_page}/products/ktp-el")),
            jateng_pages,
        ),
        (
            "GET",
            "/dashboard/institutions/{id}/units/{unit}/products/{product}/indicators/{indicator}",
            get(&format!("{unit_page}/products/ktp-el/indicators/proses.moto")),
            jateng_pages,
        ),
        ("GET", "/dashboard/evidence/{sha256}", get(&format!("/dashboard/evidence/{digest}")), jateng_pages),
        ("GET", "/dashboard/evidence/{sha256}/file", get(&format!("/dashboard/evidence/{digest}/file")), jateng_pages),
    ];

    // Every route of the router has exactly one row, and every row is a route.
    let mut routed: Vec<(String, String)> = h.routes.iter().map(|(m, p)| (m.to_string(), (*p).to_owned())).collect();
    let mut covered: Vec<(String, String)> =
        cases.iter().map(|(m, p, _, _)| ((*m).to_owned(), (*p).to_owned())).collect();
    routed.sort();
    covered.sort();
    let missing: Vec<_> = routed.iter().filter(|r| !covered.contains(r)).collect();
    let extra: Vec<_> = covered.iter().filter(|c| !routed.contains(c)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "routes without a case: {missing:?}; cases without a route: {extra:?}"
    );
    assert_eq!(covered.len(), routed.len(), "one case per route");

    let mut wrong = Vec::new();
    for (method, route, request, expected) in &cases {
        for (column, (who, token)) in callers.iter().enumerate() {
            let (path, payload) = request(column, token.as_deref());
            let (before, on_async) = (h.fingerprint(), h.state.db().calls_on_async_threads());
            let (status, body) = matrix_call(&h, method, &path, token.as_deref(), &payload).await;
            assert_eq!(
                h.state.db().calls_on_async_threads(),
                on_async,
                "{who} {method} {route}: the handler used SQLite on an async thread"
            );
            let got = outcome(status, &body);
            if got != expected[column] {
                let body: String = body.to_string().chars().take(300).collect();
                wrong.push(format!("{who} {method} {path}: expected {}, got {got}: {body}", expected[column]));
            }
            if !(status.is_success() || status.is_redirection()) {
                assert_eq!(h.fingerprint(), before, "{who} {method} {path} was refused ({got}) but changed the store");
            }
        }
    }
    assert!(wrong.is_empty(), "{} unexpected answers:\n{}", wrong.len(), wrong.join("\n"));
}

/// The indicators of `ipp-2017`: unit-level, each needing evidence, no questionnaires.
const IPP: [&str; 14] = [
    "kebijakan.standar-pelayanan",
    "kebijakan.maklumat",
    "kebijakan.skm",
    "sdm.kode-etik",
    "sdm.budaya-pelayanan",
    "sdm.kompetensi",
    "sarpras.fasilitas",
    "sarpras.kelompok-rentan",
    "sipp.elektronik",
    "sipp.non-elektronik",
    "konsultasi-pengaduan.sarana",
    "konsultasi-pengaduan.pengelolaan",
    "inovasi.inovasi-pelayanan",
    "inovasi.keberlanjutan",
];

/// A submitted `ipp-2017` visit answering every indicator with `value`.
fn ipp_visit(dev: &mut Device, h: &Harness, institution: &str, unit: &str, product: &str, value: i64) -> EntityRef {
    let visit = EntityRef { kind: EntityKind::Visit, id: EntityId(uuid::Uuid::now_v7()) };
    let inst = h.id_of("institution", institution);
    let unit_id = unit_id(h, &inst, unit);
    dev.write(visit, "instrument", json!({"id": "ipp-2017", "version": 1}), None);
    dev.write(visit, "institution", json!(inst), None);
    dev.write(visit, "unit", json!(unit_id), None);
    dev.write(visit, "product", json!(product_id(h, &unit_id, product)), None);
    dev.write(visit, "mode", json!("announced"), None);
    dev.write(visit, "location", json!("own_office"), None);
    for ind in IPP {
        dev.write(visit, &format!("answer.{ind}"), json!(value), None);
    }
    dev.write(visit, "finished_at", json!(dev.ms), None);
    dev.write(visit, "status", json!("submitted"), None);
    visit
}

/// An evidence record of `visit` citing `digest` for `indicator`.
fn cite(dev: &mut Device, visit: EntityRef, indicator: &str, digest: &str) {
    let ev = EntityRef { kind: EntityKind::Evidence, id: EntityId(uuid::Uuid::now_v7()) };
    dev.write(ev, "visit", json!(visit.id.to_string()), None);
    dev.write(ev, "indicator", json!(indicator), None);
    dev.write(ev, "sha256", json!(digest), None);
}

async fn upload(h: &Harness, token: &str, bytes: &[u8]) -> Value {
    let digest = sha(bytes);
    let announce = json!({"size": bytes.len(), "media_type": "image/jpeg"});
    let (s, st) = h.call("POST", &format!("/v1/evidence/{digest}"), Some(token), Some(announce)).await;
    assert_eq!(s, StatusCode::OK, "{st}");
    if st["complete"] == true {
        return st;
    }
    let (s, st) = put_chunk(h, token, &digest, 0, bytes).await;
    assert_eq!((s, &st["complete"]), (StatusCode::OK, &json!(true)), "{st}");
    st
}

/// The row of `kind` results for `code` and `instrument`, as the admin lists it.
async fn result_row(h: &Harness, kind: &str, code: &str, instrument: &str) -> Value {
    let (s, list) = h.call("GET", &format!("/v1/results/{kind}"), Some(&h.admin), None).await;
    assert_eq!(s, StatusCode::OK, "{list}");
    list["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["code"] == code && r["instrument"] == instrument)
        .unwrap_or_else(|| panic!("no {kind} row for {code} {instrument}: {list}"))
        .clone()
}

fn completeness_of(row: &Value) -> (String, u64, u64, Value, u64) {
    (
        row["status"].as_str().unwrap().to_owned(),
        row["required"].as_u64().unwrap(),
        row["answered"].as_u64().unwrap(),
        row["completeness"].clone(),
        row["missing"].as_u64().unwrap(),
    )
}

#[tokio::test]
async fn result_rows_say_how_complete_they_are() {
    let h = Harness::new();
    let photo = b"the unit's service standard, signed".to_vec();
    let digest = sha(&photo);
    let mut dev = Device::new(80, "a1", "jateng");
    let visit = ipp_visit(&mut dev, &h, "kota-sukamaju", "disdukcapil", "ktp-el", 4);
    for ind in &IPP[..7] {
        cite(&mut dev, visit, ind, &digest);
    }
    let (s, r) = push(&h, &h.assessor, dev.batch(0)).await;
    assert_eq!((s, r["origins"][0]["quarantined"].as_array().map_or(0, Vec::len)), (StatusCode::OK, 0), "{r}");

    // Answered but no file yet: nothing counts.
    let row = result_row(&h, "units", "disdukcapil", "ipp-2017@1").await;
    assert_eq!(completeness_of(&row), ("incomplete".into(), 14, 0, json!("0.00"), 14));
    // The file arrives: the seven indicators it is cited for count, seven are missing.
    upload(&h, &h.assessor, &photo).await;
    let row = result_row(&h, "units", "disdukcapil", "ipp-2017@1").await;
    assert_eq!(completeness_of(&row), ("incomplete".into(), 14, 7, json!("0.50"), 7));
    assert!(row["score"].is_null() && row["provisional"].is_string(), "{row}");
    let document: String = h
        .state
        .db()
        .read_blocking(|tx| {
            tx.query_row("SELECT document FROM results WHERE kind = 'unit' AND instrument = 'ipp-2017@1'", [], |r| {
                r.get(0)
            })
            .map_err(sidak_server::error::ApiError::from)
        })
        .unwrap();
    let document: Value = serde_json::from_str(&document).unwrap();
    let missing: Vec<&str> = document["missing"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
    let expected: Vec<String> =
        IPP[7..].iter().map(|ind| format!("unit `disdukcapil`: `{ind}` needs evidence")).collect();
    let mut expected_sorted = expected.clone();
    expected_sorted.sort();
    assert_eq!(missing, expected_sorted, "the row's count is the document's list");
    let inst = result_row(&h, "institutions", "kota-sukamaju", "ipp-2017@1").await;
    assert_eq!(completeness_of(&inst), ("incomplete".into(), 14, 7, json!("0.50"), 7));

    // The rest is cited: complete, 100%.
    for ind in &IPP[7..] {
        cite(&mut dev, visit, ind, &digest);
    }
    let from = dev.ops.len() - 21;
    assert_eq!(push(&h, &h.assessor, dev.batch(from)).await.0, StatusCode::OK);
    let row = result_row(&h, "units", "disdukcapil", "ipp-2017@1").await;
    assert_eq!(completeness_of(&row), ("complete".into(), 14, 14, json!("1.00"), 0));
    assert_eq!(row["score"], "4.00");
    let inst = result_row(&h, "institutions", "kota-sukamaju", "ipp-2017@1").await;
    assert_eq!(completeness_of(&inst), ("complete".into(), 14, 14, json!("1.00"), 0));

    // The penilaian-2023 unit (assigned, never visited) and its document agree.
    let unit = result_row(&h, "units", "disdukcapil", "penilaian-2023@1").await;
    let (s, doc) =
        h.call("GET", &format!("/v1/results/units/{}", unit["id"].as_str().unwrap()), Some(&h.supervisor), None).await;
    assert_eq!(s, StatusCode::OK, "{doc}");
    assert_eq!(doc["row"], unit, "the document's row is the listing's");
    let listed = doc["result"]["missing"].as_array().unwrap().len() as u64;
    assert!(listed > 0 && unit["missing"] == listed, "{unit}");
    assert_eq!((unit["status"].as_str(), unit["answered"].as_u64()), (Some("incomplete"), Some(0)));

    // The CSV export carries it as its last column.
    let req = Request::builder()
        .uri("/v1/results/institutions.csv")
        .header("authorization", format!("Bearer {}", h.admin))
        .body(Body::empty())
        .unwrap();
    let (s, csv) = h.send(req).await;
    let csv = csv.as_str().unwrap().to_owned();
    assert_eq!(s, StatusCode::OK);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "code,name,type,region,instrument,status,score,provisional,grade,zone,completeness");
    let ipp_line = lines.iter().find(|l| l.contains("ipp-2017@1")).unwrap();
    let tail = format!(",complete,4.00,,{},,1.00", inst["grade"].as_str().unwrap());
    assert!(ipp_line.starts_with("kota-sukamaju,") && ipp_line.ends_with(&tail), "{ipp_line}");
    let penilaian = lines.iter().find(|l| l.contains("penilaian-2023@1")).unwrap();
    assert!(penilaian.ends_with(",0.00"), "{penilaian}");

    // Rows stored before completeness was kept are filled in when the store opens.
    let before = result_row(&h, "units", "disdukcapil", "ipp-2017@1").await;
    h.state
        .db()
        .write_blocking(|tx| {
            tx.execute_batch("UPDATE results SET required = NULL, answered = NULL, missing = NULL")
                .map_err(sidak_server::error::ApiError::from)
        })
        .unwrap();
    let reopened = sidak_server::state::AppState::open(h._dir.path(), sidak_server::state::system_clock()).unwrap();
    let rows = reopened.db().read_blocking(|tx| sidak_server::results::rows(tx, "unit", None, -1, None)).unwrap();
    let again = rows.iter().find(|r| r.code == "disdukcapil" && r.instrument == "ipp-2017@1").unwrap();
    assert_eq!(serde_json::to_value(again).unwrap(), before);
}

#[tokio::test]
async fn unit_results_by_id_and_code_are_scoped() {
    let h = Harness::new();
    let mut a1 = Device::new(81, "a1", "jateng");
    a1.visit(&h, "kota-sukamaju", "disdukcapil", "ktp-el", 3);
    push(&h, &h.assessor, a1.batch(0)).await;
    let mut b1 = Device::new(82, "b1", "sulbar");
    b1.visit(&h, "kab-mamuju", "disdukcapil", "ktp-el", 2);
    push(&h, &h.other_region_assessor, b1.batch(0)).await;
    let jateng = unit_id(&h, &h.id_of("institution", "kota-sukamaju"), "disdukcapil");
    let path = format!("/v1/results/units/{jateng}");

    let (s, doc) = h.call("GET", &path, Some(&h.supervisor), None).await;
    assert_eq!(s, StatusCode::OK, "{doc}");
    assert_eq!((doc["row"]["id"].as_str(), doc["row"]["code"].as_str()), (Some(jateng.as_str()), Some("disdukcapil")));
    let products: Vec<&str> =
        doc["result"]["products"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!((doc["result"]["id"].as_str(), products), (Some("disdukcapil"), vec!["akta-lahir", "ktp-el"]));
    assert_eq!(h.call("GET", &path, Some(&h.peer), None).await.0, StatusCode::OK);
    assert_eq!(h.call("GET", &path, Some(&h.admin), None).await.1, doc);
    // A unique code names its unit (dpmptsp is assigned only in kota-sukamaju).
    let (s, by_code) = h.call("GET", "/v1/results/units/dpmptsp", Some(&h.supervisor), None).await;
    assert_eq!((s, by_code["row"]["code"].as_str()), (StatusCode::OK, Some("dpmptsp")));
    // A code two institutions share names neither.
    let (s, e) = h.call("GET", "/v1/results/units/disdukcapil", Some(&h.admin), None).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    for unknown in [uuid::Uuid::now_v7().to_string(), "no-such-unit".to_owned()] {
        let (s, e) = h.call("GET", &format!("/v1/results/units/{unknown}"), Some(&h.admin), None).await;
        assert_eq!((s, e["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")), "{unknown}");
    }
    // Another region's supervisor and peer: 403; assessors: not a results role.
    let before = h.fingerprint();
    for token in [&h.other_supervisor, &h.assessor] {
        let (s, e) = h.call("GET", &path, Some(token), None).await;
        let expected = if token == &h.assessor { "role_forbidden" } else { "scope_forbidden" };
        assert_eq!((s, e["code"].as_str()), (StatusCode::FORBIDDEN, Some(expected)));
    }
    let sulbar = unit_id(&h, &h.id_of("institution", "kab-mamuju"), "disdukcapil");
    let (s, e) = h.call("GET", &format!("/v1/results/units/{sulbar}"), Some(&h.supervisor), None).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::FORBIDDEN, Some("scope_forbidden")));
    let (s, theirs) = h.call("GET", &format!("/v1/results/units/{sulbar}"), Some(&h.other_supervisor), None).await;
    assert_eq!((s, theirs["row"]["region"].as_str()), (StatusCode::OK, Some("sulbar")));
    assert_eq!(h.fingerprint(), before);
}

#[tokio::test]
async fn every_schema_is_served_without_a_token() {
    let h = Harness::new();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto/schemas");
    let mut served = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let file: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let (s, body) = h.call("GET", &format!("/v1/schemas/{name}"), None, None).await;
        assert_eq!((s, body), (StatusCode::OK, file), "{name}");
        served += 1;
    }
    assert!(served >= 14, "{served} schemas");
    // Every schema the description refers to is one of them.
    let spec = sidak_server::admin_api::OPENAPI;
    for reference in spec.split("\"$ref\": \"schemas/").skip(1) {
        let name = reference.split('"').next().unwrap();
        assert!(dir.join(name).is_file(), "openapi.json refers to a missing schemas/{name}");
        assert_eq!(h.call("GET", &format!("/v1/schemas/{name}"), None, None).await.0, StatusCode::OK);
    }
    for unknown in ["nothing.schema.json", "..%2Fopenapi.json", "op.schema", "OP.SCHEMA.JSON"] {
        let (s, e) = h.call("GET", &format!("/v1/schemas/{unknown}"), Some(&h.admin), None).await;
        assert_eq!((s, e["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")), "{unknown}");
    }
}

#[tokio::test]
async fn one_file_cited_by_two_visits_is_stored_and_uploaded_once() {
    let h = Harness::new();
    let photo: Vec<u8> = (0..150_000u32).map(|i| (i * 13 % 251) as u8).collect();
    let digest = sha(&photo);
    let mut a1 = Device::new(83, "a1", "jateng");
    let v1 = ipp_visit(&mut a1, &h, "kota-sukamaju", "disdukcapil", "ktp-el", 3);
    cite(&mut a1, v1, "kebijakan.maklumat", &digest);
    let mut a2 = Device::new(84, "a2", "jateng");
    let v2 = ipp_visit(&mut a2, &h, "kota-sukamaju", "dpmptsp", "pbg", 5);
    cite(&mut a2, v2, "sdm.kode-etik", &digest);
    push(&h, &h.assessor, a1.batch(0)).await;
    push(&h, &h.other_assessor, a2.batch(0)).await;

    // a1 uploads it, in two chunks.
    let announce = json!({"size": photo.len(), "media_type": "image/jpeg"});
    h.call("POST", &format!("/v1/evidence/{digest}"), Some(&h.assessor), Some(announce.clone())).await;
    put_chunk(&h, &h.assessor, &digest, 0, &photo[..100_000]).await;
    let (_, st) = put_chunk(&h, &h.assessor, &digest, 100_000, &photo[100_000..]).await;
    assert_eq!(st["complete"], true);
    // a2 announces the same file: it is held already; nothing is sent again.
    let (s, st) = h.call("POST", &format!("/v1/evidence/{digest}"), Some(&h.other_assessor), Some(announce)).await;
    assert_eq!((s, &st["complete"], st["received"].as_u64()), (StatusCode::OK, &json!(true), Some(photo.len() as u64)));
    let (s, st) = put_chunk(&h, &h.other_assessor, &digest, 0, &photo[..10]).await;
    assert_eq!((s, &st["complete"]), (StatusCode::OK, &json!(true)), "a stray chunk is a replay");

    let rows: i64 = h
        .state
        .db()
        .read_blocking(|tx| {
            tx.query_row("SELECT COUNT(*) FROM blobs", [], |r| r.get(0)).map_err(sidak_server::error::ApiError::from)
        })
        .unwrap();
    assert_eq!(rows, 1, "one row for the file");
    let files: Vec<std::path::PathBuf> = walk(&h.state.data_dir().join("blobs"));
    assert_eq!(files, vec![h.state.blob_path(&digest)], "one stored copy");
    assert_eq!(std::fs::read(&files[0]).unwrap(), photo);
    assert!(walk(&h.state.data_dir().join("uploads")).is_empty(), "no partial upload left");
    // Both citations count.
    for (unit, indicator) in [("disdukcapil", "kebijakan.maklumat"), ("dpmptsp", "sdm.kode-etik")] {
        let row = result_row(&h, "units", unit, "ipp-2017@1").await;
        assert_eq!(row["answered"], 1, "{unit}: {row}");
        let id = row["id"].as_str().unwrap().to_owned();
        let document: String = h
            .state
            .db()
            .read_blocking(move |tx| {
                tx.query_row(
                    "SELECT document FROM results WHERE kind = 'unit' AND entity = ?1 AND instrument = 'ipp-2017@1'",
                    [&id],
                    |r| r.get(0),
                )
                .map_err(sidak_server::error::ApiError::from)
            })
            .unwrap();
        assert!(!document.contains(&format!("`{indicator}` needs evidence")), "{unit}");
    }
    // Its status: both citing assessors, their supervisor; not another region's.
    let status = format!("/v1/evidence/{digest}/status");
    for token in [&h.assessor, &h.other_assessor, &h.supervisor, &h.peer, &h.admin] {
        assert_eq!(h.call("GET", &status, Some(token), None).await.0, StatusCode::OK);
    }
    for token in [&h.other_region_assessor, &h.other_supervisor] {
        let (s, e) = h.call("GET", &status, Some(token), None).await;
        assert_eq!((s, e["code"].as_str()), (StatusCode::FORBIDDEN, Some("scope_forbidden")));
    }
}

/// Every file under `dir`, sorted.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Makes the store hold less of an upload than was written, as when a chunk's commit
/// failed after its bytes were.
fn forget_received(h: &Harness, sha: &str, received: i64) {
    h.state
        .db()
        .write_blocking(|tx| {
            tx.execute("UPDATE blobs SET received = ?2 WHERE sha256 = ?1", rusqlite::params![sha, received])
                .map_err(sidak_server::error::ApiError::from)
        })
        .unwrap();
}

/// A completed upload is verified by the running hash of its chunks as they were
/// written, and from its file when that hash did not see every byte: here the store
/// forgets a chunk it wrote (as when the chunk's commit fails after the write), so the
/// hash runs ahead of the file, is dropped, and the file is read back instead.
#[tokio::test]
async fn an_upload_whose_running_hash_missed_a_chunk_is_verified_from_its_file() {
    let h = Harness::new();
    let photo: Vec<u8> = (0..250_000u32).map(|i| (i * 13 % 241) as u8).collect();
    let digest = sha(&photo);
    let announce = json!({"size": photo.len(), "media_type": "image/jpeg"});
    h.call("POST", &format!("/v1/evidence/{digest}"), Some(&h.assessor), Some(announce)).await;
    let (s, st) = put_chunk(&h, &h.assessor, &digest, 0, &photo[..100_000]).await;
    assert_eq!((s, st["received"].as_u64()), (StatusCode::OK, Some(100_000)));
    forget_received(&h, &digest, 60_000);
    let (s, st) = put_chunk(&h, &h.assessor, &digest, 60_000, &photo[60_000..]).await;
    assert_eq!((s, &st["complete"]), (StatusCode::OK, &json!(true)), "{st}");
    let stored = std::fs::read(h.state.blob_path(&digest)).unwrap();
    assert!(stored == photo, "the stored file is the photo, byte for byte");

    // The same gap with bytes that do not hash to the name: refused, as from a running hash.
    let wrong: Vec<u8> = photo.iter().map(|b| b ^ 1).collect();
    let fake = sha(&photo[..1000]);
    let announce = json!({"size": wrong.len(), "media_type": "image/jpeg"});
    h.call("POST", &format!("/v1/evidence/{fake}"), Some(&h.assessor), Some(announce)).await;
    put_chunk(&h, &h.assessor, &fake, 0, &wrong[..100_000]).await;
    forget_received(&h, &fake, 60_000);
    let (s, e) = put_chunk(&h, &h.assessor, &fake, 60_000, &wrong[60_000..]).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("evidence_mismatch")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_sent_twice_at_once_is_written_once() {
    // A retry beside its original (a client that timed out, a proxy that duplicated the
    // request): the chunks are written outside the store's writer, one per file at a
    // time, so the second finds the first's bytes recorded and is a replay.
    let h = Harness::new();
    let photo: Vec<u8> = (0..300_000u32).map(|i| (i * 11 % 239) as u8).collect();
    let digest = sha(&photo);
    let announce = json!({"size": photo.len(), "media_type": "image/jpeg"});
    h.call("POST", &format!("/v1/evidence/{digest}"), Some(&h.assessor), Some(announce)).await;
    for (from, to) in [(0, 100_000), (100_000, 200_000), (200_000, 300_000)] {
        let (a, b) = tokio::join!(
            put_chunk(&h, &h.assessor, &digest, from as u64, &photo[from..to]),
            put_chunk(&h, &h.assessor, &digest, from as u64, &photo[from..to]),
        );
        for (s, st) in [a, b] {
            assert_eq!((s, st["received"].as_u64()), (StatusCode::OK, Some(to as u64)), "{st}");
        }
    }
    let complete: i64 = h
        .state
        .db()
        .read_blocking(|tx| {
            tx.query_row("SELECT complete FROM blobs WHERE sha256 = ?1", [&digest], |r| r.get(0))
                .map_err(sidak_server::error::ApiError::from)
        })
        .unwrap();
    assert_eq!(complete, 1);
    let stored = std::fs::read(h.state.blob_path(&digest)).unwrap();
    assert!(stored == photo, "the stored file is the photo, byte for byte");
    assert!(!h.state.upload_path(&digest).exists(), "no part file is left behind");
}

#[tokio::test]
async fn an_upload_stays_resumable_and_a_finished_file_is_private() {
    let h = Harness::new();
    let photo: Vec<u8> = (0..120_000u32).map(|i| (i * 31 % 253) as u8).collect();
    let digest = sha(&photo);
    // As the field client does: the ops citing the file first, then the file.
    let mut a1 = Device::new(85, "a1", "jateng");
    let visit = ipp_visit(&mut a1, &h, "kota-sukamaju", "disdukcapil", "ktp-el", 3);
    cite(&mut a1, visit, "kebijakan.skm", &digest);
    push(&h, &h.assessor, a1.batch(0)).await;
    let announce = json!({"size": photo.len(), "media_type": "image/jpeg"});
    h.call("POST", &format!("/v1/evidence/{digest}"), Some(&h.assessor), Some(announce)).await;
    put_chunk(&h, &h.assessor, &digest, 0, &photo[..50_000]).await;
    // Interrupted: the status says where to resume, for any uploader (the server does
    // not record who announced a file).
    let status = format!("/v1/evidence/{digest}/status");
    for token in [&h.assessor, &h.other_region_assessor, &h.peer] {
        let (s, st) = h.call("GET", &status, Some(token), None).await;
        assert_eq!((s, st["received"].as_u64(), &st["complete"]), (StatusCode::OK, Some(50_000), &json!(false)));
    }
    let (s, e) = h.call("GET", &status, Some(&h.other_supervisor), None).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::FORBIDDEN, Some("scope_forbidden")), "supervisors do not upload");
    let (s, st) = put_chunk(&h, &h.assessor, &digest, 50_000, &photo[50_000..]).await;
    assert_eq!((s, &st["complete"]), (StatusCode::OK, &json!(true)));
    // Complete: the uploader still reads it (its record cites it); another region's
    // assessor and peer learn nothing.
    let (s, st) = h.call("GET", &status, Some(&h.assessor), None).await;
    assert_eq!((s, &st["complete"], &st["centre_complete"]), (StatusCode::OK, &json!(true), &json!(true)));
    let other_peer = h
        .state
        .db()
        .write_blocking(|tx| {
            sidak_server::auth::create_token(
                tx,
                &sidak_server::auth::NewToken {
                    role: sidak_server::auth::Role::Peer,
                    region: Some("sulbar".into()),
                    assessor: None,
                    label: None,
                    device_keys: Vec::new(),
                },
                T0,
            )
        })
        .unwrap()
        .1;
    let before = h.fingerprint();
    for token in [&h.other_region_assessor, &other_peer, &h.other_assessor] {
        let (s, e) = h.call("GET", &status, Some(token), None).await;
        assert_eq!((s, e["code"].as_str()), (StatusCode::FORBIDDEN, Some("scope_forbidden")));
    }
    assert_eq!(h.fingerprint(), before);
}

#[tokio::test]
async fn tokens_are_stored_only_as_their_hash() {
    let h = Harness::new();
    let secrets = [
        &h.admin,
        &h.supervisor,
        &h.peer,
        &h.assessor,
        &h.other_assessor,
        &h.other_supervisor,
        &h.other_region_assessor,
    ];
    let stored: Vec<Vec<Option<String>>> = h
        .state
        .db()
        .read_blocking(|tx| {
            let mut stmt = tx.prepare(
                "SELECT id, hash, role, region, assessor, label, CAST(created_at AS TEXT) FROM tokens ORDER BY id",
            )?;
            let rows = stmt.query_map([], |r| (0..7).map(|i| r.get::<_, Option<String>>(i)).collect())?;
            Ok::<_, sidak_server::error::ApiError>(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .unwrap();
    assert_eq!(stored.len(), secrets.len());
    for secret in secrets {
        assert!(secret.starts_with("sdk_") && secret.len() > 40);
        let hash = sidak_server::auth::token_hash(secret);
        assert_eq!(hash, sidak_core::hash::sha256_hex(secret.as_bytes()));
        assert_eq!(stored.iter().filter(|row| row[1].as_deref() == Some(hash.as_str())).count(), 1);
        assert!(
            stored
                .iter()
                .flatten()
                .flatten()
                .all(|cell| !cell.contains(secret.as_str()) && !cell.contains(&secret[4..])),
            "a stored cell holds a secret"
        );
    }
    // Nor anywhere in the store's files.
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(h._dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            bytes.extend(std::fs::read(&path).unwrap());
        }
    }
    for secret in secrets {
        assert!(!bytes.windows(secret.len() - 4).any(|w| w == &secret.as_bytes()[4..]), "a secret is on disk");
    }
}

#[tokio::test]
async fn an_institution_document_is_served_whole_and_moves_with_its_units() {
    async fn served(h: &Harness, path: String) -> Value {
        let (s, doc) = h.call("GET", &path, Some(&h.supervisor), None).await;
        assert_eq!(s, StatusCode::OK, "{doc}");
        doc
    }
    /// The unit rows (record id, stored document) and the institution's stored and
    /// whole documents for `instrument`.
    fn stored(h: &Harness, institution: &str, instrument: &str) -> (Vec<(String, String)>, String, String) {
        let (institution, instrument) = (institution.to_owned(), instrument.to_owned());
        h.state
            .db()
            .read_blocking(move |tx| {
                let units = tx
                    .prepare("SELECT entity, document FROM results WHERE kind = 'unit' AND institution = ?1 AND instrument = ?2 ORDER BY code")?
                    .query_map([&institution, &instrument], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<_, _>>()?;
                let own = tx.query_row(
                    "SELECT document FROM results WHERE kind = 'institution' AND entity = ?1 AND instrument = ?2",
                    [&institution, &instrument],
                    |r| r.get(0),
                )?;
                let whole = sidak_server::results::stored_document(tx, "institution", &institution, &instrument)?.unwrap();
                Ok::<_, sidak_server::error::ApiError>((units, own, whole))
            })
            .unwrap()
    }
    let h = Harness::new();
    let mut dev = Device::new(81, "a1", "jateng");
    let visit = ipp_visit(&mut dev, &h, "kota-sukamaju", "disdukcapil", "ktp-el", 3);
    assert_eq!(push(&h, &h.assessor, dev.batch(0)).await.0, StatusCode::OK);
    let institution = h.id_of("institution", "kota-sukamaju");
    let whole = served(&h, format!("/v1/results/institutions/{institution}")).await;
    let instrument = whole["row"]["instrument"].as_str().unwrap().to_owned();
    let (units, own, _) = stored(&h, &institution, &instrument);
    // Stored once: the institution's row holds its own part, its unit rows the rest.
    assert!(own.ends_with(r#""units":[]}"#), "{own}");
    assert!(units.len() >= 2, "{units:?}");
    // Served whole: each unit's document, in code order, as the unit's own row serves it.
    let listed = whole["result"]["units"].as_array().unwrap();
    assert_eq!(listed.len(), units.len(), "{whole}");
    for ((entity, document), in_whole) in units.iter().zip(listed) {
        assert_eq!(&serde_json::from_str::<Value>(document).unwrap(), in_whole);
        assert_eq!(&served(&h, format!("/v1/results/units/{entity}")).await["result"], in_whole);
    }
    // The row's completeness counts the whole document.
    let counts = sidak_server::results::Counts::of(&whole["result"]);
    assert_eq!(
        (whole["row"]["required"].as_u64(), whole["row"]["answered"].as_u64(), whole["row"]["missing"].as_u64()),
        (Some(counts.required.into()), Some(counts.answered.into()), Some(counts.missing.into())),
        "{whole}"
    );
    assert!(counts.required > 0 && counts.missing > 0);

    // A correction to the value already recorded changes the unit's document (it shows
    // the field value beside it) and nothing of the institution's own part: the
    // institution's row moves all the same, since what it serves changed.
    let (_, own_before, whole_before) = stored(&h, &institution, "ipp-2017@1");
    let before = result_row(&h, "institutions", "kota-sukamaju", "ipp-2017@1").await;
    let field = format!("answer.{}", IPP[0]);
    let body = json!({"target": {"kind": "visit", "id": visit.id}, "field": field, "value": 3, "reason": "checked"});
    let (s, made) = h.call("POST", "/v1/review/corrections", Some(&h.admin), Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{made}");
    let (_, own_after, whole_after) = stored(&h, &institution, "ipp-2017@1");
    assert_eq!(own_after, own_before, "the institution's own part is unchanged");
    assert_ne!(whole_after, whole_before, "its unit's document changed");
    assert!(whole_after.contains(r#""field_value":3"#), "{whole_after}");
    let after = result_row(&h, "institutions", "kota-sukamaju", "ipp-2017@1").await;
    assert!(after["changed"].as_i64() > before["changed"].as_i64(), "{before} {after}");
}

#[tokio::test]
async fn a_pulled_page_decodes_to_exactly_the_ops_pushed() {
    let h = Harness::new();
    let mut dev = Device::new(82, "a1", "jateng");
    let visit = ipp_visit(&mut dev, &h, "kota-sukamaju", "disdukcapil", "ktp-el", 2);
    // A revision (with the version it saw) and a note whose text needs escaping.
    let seen = dev.ops.iter().rev().find(|o| o.field == format!("answer.{}", IPP[0])).unwrap().op_ref();
    dev.write(visit, &format!("answer.{}", IPP[0]), json!(3), Some(seen));
    let note = EntityRef { kind: EntityKind::Note, id: EntityId(uuid::Uuid::now_v7()) };
    dev.write(note, "visit", json!(visit.id.to_string()), None);
    dev.write(note, "text", json!("Loket \"A\" tutup — antre 2½ jam 🙂\n\tpetugas: \\ tidak ada\u{1}"), None);
    let (s, r) = push(&h, &h.assessor, dev.batch(0)).await;
    assert_eq!(s, StatusCode::OK, "{r}");

    let (mut pulled, mut cursor) = (Vec::new(), None::<String>);
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/ops/pull?limit=7&cursor={c}"),
            None => "/v1/ops/pull?limit=7".to_owned(),
        };
        let (s, page) = h.call("GET", &path, Some(&h.admin), None).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        let page: sidak_core::wire::PullResponse = serde_json::from_value(page).unwrap();
        assert!(page.ops.len() <= 7);
        pulled.extend(page.ops);
        cursor = Some(page.cursor.to_string());
        if !page.more {
            break;
        }
    }
    for op in &dev.ops {
        let found = pulled.iter().find(|p| p.op.origin == op.origin && p.op.seq == op.seq).map(|p| &p.op);
        assert_eq!(found, Some(op), "op {} as pulled", op.op_ref());
        assert_eq!(op.compute_hash(), op.hash);
    }
    let seqs: Vec<u64> = pulled.iter().map(|p| p.server_seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
}

#[tokio::test]
async fn results_find_records_whose_stored_place_lags_behind() {
    fn documents(h: &Harness) -> Vec<String> {
        h.state
            .db()
            .read_blocking(|tx| {
                let mut stmt = tx.prepare(
                    "SELECT kind || '|' || entity || '|' || instrument || '|' || document || '|' || COALESCE(units, '') FROM results ORDER BY 1",
                )?;
                let rows = stmt.query_map([], |r| r.get(0))?;
                Ok::<_, sidak_server::error::ApiError>(rows.collect::<Result<Vec<String>, _>>()?)
            })
            .unwrap()
    }
    let h = Harness::new();
    let photo = b"the complaints desk, photographed".to_vec();
    let digest = sha(&photo);
    let mut dev = Device::new(83, "a1", "jateng");
    let visit = ipp_visit(&mut dev, &h, "kota-sukamaju", "disdukcapil", "ktp-el", 2);
    for ind in &IPP[..3] {
        cite(&mut dev, visit, ind, &digest);
    }
    assert_eq!(push(&h, &h.assessor, dev.batch(0)).await.0, StatusCode::OK);
    upload(&h, &h.assessor, &photo).await;
    let body = json!({"target": {"kind": "visit", "id": visit.id}, "field": format!("answer.{}", IPP[4]), "value": 4, "reason": "the photo"});
    let (s, made) = h.call("POST", "/v1/review/corrections", Some(&h.admin), Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{made}");
    let (s, r) = h.call("POST", "/v1/admin/recompute", Some(&h.admin), None).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let held = documents(&h);
    assert!(held.iter().any(|d| d.contains(r#""field_value":2"#)), "the correction is scored");
    let needs = |ind: &str| held.iter().any(|d| d.contains(&format!("`{ind}` needs evidence")));
    assert!(!needs(IPP[0]) && needs(IPP[5]), "the evidence counts where it is cited");

    // Records that reached this tier before what they belong to have no institution in
    // `entities` yet (a visit before its institution's registry record, say): every
    // such record is still found through its fields, and the results are the same.
    h.state
        .db()
        .write_blocking(|tx| {
            tx.execute(
                "UPDATE entities SET institution = NULL WHERE kind IN ('visit', 'evidence', 'unit', 'product', 'assignment', 'correction')",
                [],
            )?;
            Ok::<_, sidak_server::error::ApiError>(())
        })
        .unwrap();
    let (s, r) = h.call("POST", "/v1/admin/recompute", Some(&h.admin), None).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(documents(&h), held);
}
