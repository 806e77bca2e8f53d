//! Signed op chains end to end: a device's pushes carry heads signed with its own key;
//! the server keeps them and can prove, for every answer behind a published figure,
//! which device recorded it and that nothing was altered. Ops under a device's origin
//! that its key did not sign — a stolen token, a replay, a missing signature — are
//! kept in quarantine with the reason, never applied; a row altered in the store
//! afterwards breaks the proof.

use rand::SeedableRng;
use serde_json::{json, Value};
use sidak_core::chain::ChainHead;
use sidak_core::hlc::Hlc;
use sidak_core::op::Op;
use sidak_core::sign::{KeyPair, SignedHead};
use sidak_e2e::harness::*;

fn push(server: &Server, token: &str, ops: &[Op], heads: &[SignedHead]) -> Value {
    reqwest::blocking::Client::new()
        .post(format!("{}/v1/ops/push", server.url()))
        .bearer_auth(token)
        .json(&json!({"ops": ops, "heads": heads}))
        .send()
        .unwrap()
        .json()
        .unwrap()
}

#[test]
fn every_answer_is_proven_and_unsigned_ops_are_held_back() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(31);
    let server = Server::start();
    server.import_registry(&registry(&["jateng"]));
    server.assign("a1", "kota-jateng", "disdukcapil", "penilaian-2023@1");
    let mut device = Device::new(&server.state, "a1", "jateng");
    device.sync(&server.url()).unwrap();
    device.record_unit("disdukcapil", 2, 30, &mut rng);
    let s = device.sync(&server.url()).unwrap();
    assert!(s.complete && s.quarantined.is_empty(), "{s:?}");
    let me = device.field.identity().unwrap().unwrap().origin;

    // The server registered the device's key and kept its signed heads.
    let key = server.read(|tx| sidak_server::ledger::public_key(tx, me)).expect("a registered key");
    let heads = server.read(|tx| sidak_server::ledger::signed_heads(tx, me, 0, u64::MAX));
    assert!(!heads.is_empty() && heads.iter().all(|h| h.verify(&key).is_ok()));
    let mine = device.own_ops();
    assert_eq!(heads.last().unwrap().seq, mine.last().unwrap().seq, "the last push's head is signed");

    // Every answer behind the institution's result is proven.
    let out = server_cli(server.dir(), &["provenance", "--institution", "kota-jateng", "--json"]);
    let proof: Value = serde_json::from_str(&out).unwrap();
    let answers = proof["answers"].as_array().unwrap();
    assert!(answers.len() > 100, "visit and questionnaire answers: {}", answers.len());
    for a in answers {
        assert_eq!(a["proof"]["status"], "verified", "{a}");
        assert_eq!(a["recorded_by"], "a1");
    }

    // Someone with the device's token but not its key writes under its origin.
    let last = mine.last().unwrap();
    let visit = device.field.visits(false).unwrap()[0].id;
    let forged = Op::new(
        me,
        last.seq + 1,
        Hlc { ms: last.hlc.ms + 1, c: 0 },
        last.wall + 1,
        sidak_core::records::EntityRef { kind: sidak_core::records::EntityKind::Visit, id: visit },
        "answer.proses.persyaratan",
        json!(0),
        None,
        last.hash,
    );
    let thief = KeyPair::from_seed(&[66u8; 32]);
    let forged_head = SignedHead::sign(&thief, me, ChainHead { seq: forged.seq, hash: forged.hash });
    let before = server.read(|tx| sidak_server::ledger::field(tx, &visit.to_string(), "answer.proses.persyaratan"));
    for heads in [vec![], vec![forged_head]] {
        let r = push(&server, &device.token, std::slice::from_ref(&forged), &heads);
        let q = &r["origins"][0]["quarantined"];
        assert!(
            q.as_array().unwrap().iter().any(|x| x["seq"] == json!(forged.seq) && x["code"] == "bad_signature"),
            "held back with its reason: {r}"
        );
    }
    let after = server.read(|tx| sidak_server::ledger::field(tx, &visit.to_string(), "answer.proses.persyaratan"));
    assert_eq!(after, before, "a forged answer is never applied");
    let out = server_cli(server.dir(), &["quarantine"]);
    assert!(out.contains("bad_signature"), "{out}");

    // A row changed in the store afterwards: the proof of that answer breaks.
    let answer = answers.iter().find(|a| a["field"] == "answer.proses.prosedur").unwrap();
    let op = answer["op"].as_str().unwrap();
    let (origin, seq) = op.split_once('#').unwrap();
    server
        .state
        .db()
        .write_blocking(|tx| {
            tx.execute(
                "UPDATE ops SET value = '\"diubah\"' WHERE origin = ?1 AND seq = ?2",
                rusqlite::params![origin, seq],
            )?;
            Ok::<_, sidak_server::error::ApiError>(())
        })
        .unwrap();
    let o = server_run(server.dir(), &["provenance", "--institution", "kota-jateng"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(6), "{text}");
    assert!(text.contains(&format!("BROKEN: op {seq} was altered")), "{text}");
}

#[test]
fn the_centre_proves_every_answer_a_region_forwarded() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(32);
    let centre = Server::start();
    centre.import_registry(&registry(&["jateng"]));
    centre.assign("a1", "kota-jateng", "disdukcapil", "penilaian-2023@1");
    let region = Server::start();
    let peer = centre.token(sidak_server::auth::Role::Peer, Some("jateng"), None);
    region.replicate(&centre.url(), &peer).expect("the region fetches its season");

    // The device syncs only with its region; the region replicates to the centre.
    let mut device = Device::new(&region.state, "a1", "jateng");
    device.sync(&region.url()).unwrap();
    device.record_unit("disdukcapil", 2, 10, &mut rng);
    assert!(device.sync(&region.url()).unwrap().complete);
    let r = region.replicate(&centre.url(), &peer).expect("the region replicates");
    assert!(r.caught_up, "{r:?}");
    let me = device.field.identity().unwrap().unwrap().origin;
    let key = device.field.device_key().unwrap();
    assert_eq!(
        centre.read(|tx| sidak_server::ledger::public_key(tx, me)),
        Some(key),
        "the centre holds the device's key"
    );

    // At the centre, every answer behind the institution's figure is proven the device's.
    let out = server_cli(centre.dir(), &["provenance", "--institution", "kota-jateng", "--json"]);
    let proof: Value = serde_json::from_str(&out).unwrap();
    let answers = proof["answers"].as_array().unwrap();
    assert!(answers.len() > 50, "{}", answers.len());
    for a in answers {
        assert_eq!(a["proof"]["status"], "verified", "{a}");
        assert_eq!(a["recorded_by"], "a1", "{a}");
    }
}
