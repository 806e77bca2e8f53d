//! A day of fieldwork: three regions, several assessors each, recording offline with
//! questionnaires and photos, then syncing. The server's results must equal the results
//! of scoring everything from scratch, whatever order the ops arrive in, and what a
//! phone shows for a product must be what the server publishes for it.

use std::collections::BTreeMap;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::{json, Value};
use sidak_core::op::Op;
use sidak_e2e::harness::*;
use sidak_server::auth::Role;

fn all_ops(server: &Server) -> Vec<Op> {
    server.read(|tx| {
        let sql = format!("SELECT {} FROM ops ORDER BY server_seq", sidak_server::ledger::OP_COLUMNS);
        let mut stmt = tx.prepare(&sql)?;
        let rows = stmt.query_map([], |r| sidak_server::ledger::row_op(r, 0))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row??);
        }
        Ok(out)
    })
}

fn result_documents(server: &Server) -> BTreeMap<String, String> {
    server.read(|tx| {
        let mut stmt = tx.prepare("SELECT kind || '/' || entity || '/' || instrument, document FROM results")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<BTreeMap<_, _>, _>>()?)
    })
}

fn fields(server: &Server) -> BTreeMap<(String, String), Value> {
    server.read(|tx| {
        let mut stmt = tx.prepare("SELECT entity, field, value FROM fields")?;
        let rows =
            stmt.query_map([], |r| Ok(((r.get::<_, String>(0)?, r.get::<_, String>(1)?), r.get::<_, String>(2)?)))?;
        let mut out = BTreeMap::new();
        for row in rows {
            let (k, v) = row?;
            out.insert(k, serde_json::from_str(&v).unwrap());
        }
        Ok(out)
    })
}

#[test]
fn a_day_of_fieldwork_in_three_regions() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(2023);
    let regions = ["aceh", "jateng", "sulbar"];
    let server = Server::start();
    server.import_registry(&registry(&regions));
    let mut devices = Vec::new();
    for (q, region) in regions.iter().enumerate() {
        let (a, b) = (format!("{region}-a1"), format!("{region}-a2"));
        server.assign(&a, &format!("kota-{region}"), "disdukcapil", "penilaian-2023@1");
        server.assign(&a, &format!("kota-{region}"), "dinkes", "penilaian-2023@1");
        server.assign(&b, &format!("kota-{region}"), "dpmptsp", "penilaian-2023@1");
        for (assessor, units) in [(a, vec!["disdukcapil", "dinkes"]), (b, vec!["dpmptsp"])] {
            let mut d = Device::new(&server.state, &assessor, region);
            // Morning: assignments and instruments arrive.
            let s = d.sync(&server.url()).expect("morning sync");
            assert!(s.complete);
            devices.push((d, units, q as i64 + 1));
        }
    }
    // The day, offline.
    for (i, (device, units, quality)) in devices.iter_mut().enumerate() {
        for (k, unit) in units.iter().enumerate() {
            let service_users = if i % 2 == 0 && k == 0 { 30 } else { 0 };
            device.record_unit(unit, *quality, service_users, &mut rng);
        }
    }
    // Evening: everyone syncs.
    for (device, _, _) in devices.iter_mut() {
        let s = device.sync(&server.url()).expect("evening sync");
        assert!(s.complete && s.unsent_ops == 0 && s.unsent_files == 0, "{s:?}");
        assert!(s.quarantined.is_empty(), "nothing of a clean day is held back: {:?}", s.quarantined);
        assert_eq!(s.pulled_again, 0, "a device is not sent back the ops it just pushed: {s:?}");
    }

    // Every device's log is held exactly, and every photo byte for byte.
    for (device, _, _) in devices.iter_mut() {
        let mine: Vec<(i64, String)> = device
            .field
            .all_ops()
            .unwrap()
            .into_iter()
            .filter(|o| Some(o.origin) == device.field.identity().unwrap().map(|i| i.origin))
            .map(|o| (o.seq as i64, o.hash.to_hex()))
            .collect();
        let origin = device.field.identity().unwrap().unwrap().origin.to_string();
        assert_eq!(server_chain(&server, &origin), mine, "{} is held exactly once, unaltered", device.assessor);
        for v in device.field.visits(false).unwrap() {
            for e in device.field.visit(&v.id.to_string()).unwrap().evidence {
                let here = device.field.blobs().read_all(&e.sha256.parse().unwrap()).unwrap();
                let there = std::fs::read(server.state.blob_path(&e.sha256)).expect("the server holds the photo");
                assert_eq!(here, there, "photo {} differs", e.sha256);
            }
        }
    }

    // Results: complete institutions, equal to a recompute from scratch.
    let rows = server.read(|tx| sidak_server::results::rows(tx, "institution", None, -1, None));
    assert_eq!(rows.len(), 3);
    for r in &rows {
        assert_eq!(r.status, "complete", "{r:?}");
        assert!(r.grade.is_some() && r.zone.is_some());
    }
    let incremental = result_documents(&server);
    let instruments = server.state.instruments();
    server.state.db().write_blocking(|tx| sidak_server::results::recompute_all(tx, &instruments)).unwrap();
    assert_eq!(result_documents(&server), incremental, "incremental results equal a recompute from scratch");

    // The server's state is what sidak-core's merge makes of its ops.
    let ops = all_ops(&server);
    let merged = sidak_core::merge::materialise(&ops);
    let mut expected = BTreeMap::new();
    let quarantined: std::collections::BTreeSet<(String, u64)> = server.read(|tx| {
        let mut stmt = tx.prepare("SELECT origin, seq FROM quarantine")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    });
    assert!(quarantined.is_empty());
    for (entity, f) in &merged.entities {
        for (name, value) in f {
            expected.insert((entity.id.to_string(), name.clone()), value.value.clone());
        }
    }
    assert_eq!(fields(&server), expected, "server state = core merge of its ops");

    // A second server fed the same ops in another order computes the same results.
    let second = Server::start();
    let admin = second.token(Role::Admin, None, None);
    let client = reqwest::blocking::Client::new();
    let mut by_origin: BTreeMap<String, Vec<Op>> = BTreeMap::new();
    for op in ops {
        by_origin.entry(op.origin.to_string()).or_default().push(op);
    }
    // Each origin's ops cut into signed pushes (as its device signed them, or with the
    // server's key for its own), then interleaved across origins at random.
    let mut queues: BTreeMap<String, std::collections::VecDeque<SignedBatch>> = BTreeMap::new();
    for (o, ops) in &by_origin {
        let signer = head_signer(&server, o.parse().unwrap());
        let max = rand::Rng::gen_range(&mut rng, 1..200);
        queues.insert(o.clone(), signed_batches(ops, &signer, max).into());
    }
    let mut origins: Vec<String> = by_origin.keys().cloned().collect();
    origins.shuffle(&mut rng);
    while queues.values().any(|q| !q.is_empty()) {
        let o = origins.choose(&mut rng).unwrap().clone();
        let Some((batch, head)) = queues.get_mut(&o).unwrap().pop_front() else { continue };
        let body = json!({"ops": batch, "heads": head.into_iter().collect::<Vec<_>>()});
        let r: Value = client
            .post(format!("{}/v1/ops/push", second.url()))
            .bearer_auth(&admin)
            .json(&body)
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert!(r["origins"][0]["rejected"].is_null(), "{r}");
        let unsigned =
            r["origins"][0]["quarantined"].as_array().is_some_and(|q| q.iter().any(|x| x["code"] == "bad_signature"));
        assert!(!unsigned, "signed as pushed: {r}");
    }
    // The photos too.
    for entry in walk(&server.dir().join("blobs")) {
        let bytes = std::fs::read(&entry).unwrap();
        let sha = sidak_core::hash::sha256_hex(&bytes);
        client
            .post(format!("{}/v1/evidence/{sha}", second.url()))
            .bearer_auth(&admin)
            .json(&json!({"size": bytes.len(), "media_type": "image/jpeg"}))
            .send()
            .unwrap();
        let r: Value = client
            .put(format!("{}/v1/evidence/{sha}?offset=0", second.url()))
            .bearer_auth(&admin)
            .header("content-type", "application/octet-stream")
            .body(bytes)
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(r["complete"], true);
    }
    assert_eq!(
        result_documents(&second),
        incremental,
        "the same ops in another order give the same results, byte for byte"
    );

    // What a phone shows for a product is what the server publishes for it.
    let (device, _, _) = &mut devices[0];
    let visit = device.field.visits(false).unwrap()[0].id.to_string();
    let view = device.field.visit(&visit).unwrap();
    let phone = device.field.provisional_score(&view).unwrap();
    let phone_product = phone.units[0].products[0].clone();
    let server_doc: Value = serde_json::from_str(
        incremental
            .iter()
            .find(|(k, _)| {
                k.starts_with("unit/") && k.contains(&unit_entity(&server, &view.unit.code, &view.institution.code))
            })
            .unwrap()
            .1,
    )
    .unwrap();
    let server_product = server_doc["products"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == json!(view.product.code))
        .unwrap()
        .clone();
    assert_eq!(json!(phone_product.outcome.score), server_product["score"], "phone and server agree to the last digit");
    assert_eq!(serde_json::to_value(&phone_product.dimensions).unwrap(), server_product["dimensions"]);
}

fn unit_entity(server: &Server, unit: &str, institution: &str) -> String {
    server.read(|tx| {
        Ok(tx.query_row(
            "SELECT u.entity FROM fields u JOIN fields c ON c.entity = u.entity AND c.field = 'code' AND c.value = json_quote(?1)
             JOIN fields i ON i.entity = u.entity AND i.field = 'institution'
             JOIN fields ic ON ic.entity = json_extract(i.value, '$') AND ic.field = 'code' AND ic.value = json_quote(?2)
             WHERE u.kind = 'unit'",
            [unit, institution],
            |r| r.get::<_, String>(0),
        )?)
    })
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
