//! The record model: every op is checked against its kind, field and value, and
//! answers against the instrument the visit cites.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use uuid::Uuid;

use crate::hash::Sha256Digest;
use crate::hlc::Hlc;
use crate::ids::{EntityId, OriginId};
use crate::instrument::builtin;
use crate::merge::{materialise, StateView};
use crate::op::{Op, OpRef};
use crate::records::{check_op, Author, EntityKind, EntityRef, RejectCode};

const DEVICE: OriginId = OriginId(Uuid::from_bytes([1; 16]));
const SERVER: OriginId = OriginId(Uuid::from_bytes([2; 16]));

fn id(n: u8) -> EntityId {
    EntityId(Uuid::from_bytes([n; 16]))
}

fn e(kind: EntityKind, n: u8) -> EntityRef {
    EntityRef { kind, id: id(n) }
}

fn op(origin: OriginId, entity: EntityRef, field: &str, value: Value, parent: Option<OpRef>) -> Op {
    Op::new(origin, 1, Hlc { ms: 1, c: 0 }, 1, entity, field, value, parent, Sha256Digest::ZERO)
}

/// A tier holding an institution (10), unit (11), product (12), a visit (20) citing
/// penilaian-2023@1 and a service-user respondent (21) on it.
fn world() -> Vec<Op> {
    let uuid = |n: u8| json!(id(n).to_string());
    let ops = vec![
        op(SERVER, e(EntityKind::Institution, 10), "code", json!("kota-sukamaju"), None),
        op(SERVER, e(EntityKind::Institution, 15), "code", json!("kab-lembah-hijau"), None),
        op(SERVER, e(EntityKind::Unit, 11), "code", json!("disdukcapil"), None),
        op(SERVER, e(EntityKind::Product, 12), "code", json!("ktp-el"), None),
        op(DEVICE, e(EntityKind::Visit, 20), "instrument", json!({"id": "penilaian-2023", "version": 1}), None),
        op(DEVICE, e(EntityKind::Visit, 20), "institution", uuid(10), None),
        op(DEVICE, e(EntityKind::Respondent, 21), "visit", uuid(20), None),
        op(DEVICE, e(EntityKind::Respondent, 21), "kind", json!("service_user"), None),
    ];
    // Distinct (origin, seq) for each, as a real log would have.
    ops.into_iter()
        .enumerate()
        .map(|(n, o)| Op::new(o.origin, n as u64 + 10, o.hlc, o.wall, o.entity, o.field, o.value, o.parent, o.prev))
        .collect()
}

fn check(
    author: Author,
    origin: OriginId,
    entity: EntityRef,
    field: &str,
    value: Value,
    parent: bool,
) -> Result<(), RejectCode> {
    let ops = world();
    let state = materialise(&ops);
    let instrument = builtin("penilaian-2023").unwrap();
    let instruments = BTreeMap::from([(instrument.reference.clone(), instrument)]);
    let view = StateView { state: &state, instruments: &instruments };
    let parent = parent.then_some(OpRef { origin, seq: 1 });
    let candidate = Op::new(origin, 2, Hlc { ms: 2, c: 0 }, 2, entity, field, value, parent, Sha256Digest::ZERO);
    check_op(&candidate, author, &view).map_err(|r| {
        assert!(!r.message.is_empty());
        r.code
    })
}

#[test]
fn ops_are_checked_against_the_record_model_and_the_instrument() {
    use Author::*;
    use EntityKind as K;
    use RejectCode::*;
    let visit = e(K::Visit, 20);
    let new_visit = e(K::Visit, 30);
    let resp = e(K::Respondent, 21);
    let uuid = |n: u8| json!(id(n).to_string());
    type Case<'a> = (&'a str, Author, OriginId, EntityRef, &'a str, Value, bool, Result<(), RejectCode>);
    let cases: Vec<Case<'_>> = vec![
        ("answer in range", Device, DEVICE, visit, "answer.proses.persyaratan", json!(2), false, Ok(())),
        ("answer out of range", Device, DEVICE, visit, "answer.proses.persyaratan", json!(4), false, Err(BadAnswer)),
        (
            "answer of the wrong kind",
            Device,
            DEVICE,
            visit,
            "answer.proses.persyaratan",
            json!("dua"),
            false,
            Err(BadAnswer),
        ),
        (
            "N/A not allowed",
            Device,
            DEVICE,
            visit,
            "answer.proses.persyaratan",
            json!({"na": true}),
            false,
            Err(BadAnswer),
        ),
        ("unknown indicator", Device, DEVICE, visit, "answer.proses.tidak-ada", json!(1), false, Err(BadAnswer)),
        (
            "questionnaire indicator on a visit",
            Device,
            DEVICE,
            visit,
            "answer.output.permintaan-imbalan",
            json!(1),
            false,
            Err(BadAnswer),
        ),
        ("respondent answer", Device, DEVICE, resp, "answer.output.permintaan-imbalan", json!(3), false, Ok(())),
        (
            "a held visit's id written as a respondent",
            Device,
            DEVICE,
            e(K::Respondent, 20),
            "visit",
            uuid(20),
            false,
            Err(NotPermitted),
        ),
        (
            "a held respondent's id written as a note",
            Device,
            DEVICE,
            e(K::Note, 21),
            "text",
            json!("x"),
            false,
            Err(NotPermitted),
        ),
        (
            "a held product's id written as a unit",
            Server,
            SERVER,
            e(K::Unit, 12),
            "name",
            json!("x"),
            false,
            Err(NotPermitted),
        ),
        (
            "respondent answer of another questionnaire",
            Device,
            DEVICE,
            resp,
            "answer.input.penyuluhan",
            json!(3),
            false,
            Err(BadAnswer),
        ),
        (
            "answer before the visit arrived",
            Device,
            DEVICE,
            new_visit,
            "answer.proses.persyaratan",
            json!(2),
            false,
            Err(MissingDependency),
        ),
        (
            "visit of an unknown institution",
            Device,
            DEVICE,
            new_visit,
            "institution",
            uuid(99),
            false,
            Err(MissingDependency),
        ),
        ("visit of a known institution", Device, DEVICE, new_visit, "institution", uuid(10), false, Ok(())),
        (
            "unpublished instrument",
            Device,
            DEVICE,
            new_visit,
            "instrument",
            json!({"id": "penilaian-2099", "version": 1}),
            false,
            Err(UnknownInstrument),
        ),
        (
            "malformed instrument",
            Device,
            DEVICE,
            new_visit,
            "instrument",
            json!("penilaian-2023"),
            false,
            Err(BadValue),
        ),
        ("moving a visit to another institution", Device, DEVICE, visit, "institution", uuid(15), true, Err(Immutable)),
        ("restating a visit's institution", Device, DEVICE, visit, "institution", uuid(10), true, Ok(())),
        ("bad mode", Device, DEVICE, visit, "mode", json!("secret"), false, Err(BadValue)),
        ("good location", Device, DEVICE, visit, "location", json!("mpp"), false, Ok(())),
        ("bad location", Device, DEVICE, visit, "location", json!("mall"), false, Err(BadValue)),
        ("time as text", Device, DEVICE, visit, "started_at", json!("2023-08-01"), false, Err(BadValue)),
        ("unknown field", Device, DEVICE, visit, "colour", json!("red"), false, Err(UnknownField)),
        (
            "device writes the registry",
            Device,
            DEVICE,
            e(K::Institution, 40),
            "name",
            json!("X"),
            false,
            Err(NotPermitted),
        ),
        (
            "device writes a correction",
            Device,
            DEVICE,
            e(K::Correction, 41),
            "reason",
            json!("x"),
            false,
            Err(NotPermitted),
        ),
        (
            "device describes another origin",
            Device,
            DEVICE,
            EntityRef { kind: K::Device, id: EntityId(SERVER.0) },
            "assessor",
            json!("a1"),
            false,
            Err(NotPermitted),
        ),
        (
            "device describes itself",
            Device,
            DEVICE,
            EntityRef { kind: K::Device, id: EntityId(DEVICE.0) },
            "assessor",
            json!("a1"),
            false,
            Ok(()),
        ),
        ("server writes the registry", Server, SERVER, e(K::Institution, 40), "type", json!("kota"), false, Ok(())),
        (
            "unknown institution type",
            Server,
            SERVER,
            e(K::Institution, 40),
            "type",
            json!("desa"),
            false,
            Err(BadValue),
        ),
        (
            "evidence digest",
            Device,
            DEVICE,
            e(K::Evidence, 50),
            "sha256",
            json!("../../etc/passwd"),
            false,
            Err(BadValue),
        ),
        ("evidence media type", Device, DEVICE, e(K::Evidence, 50), "media_type", json!("image/jpeg"), false, Ok(())),
        (
            "evidence odd media type",
            Device,
            DEVICE,
            e(K::Evidence, 50),
            "media_type",
            json!("<script>"),
            false,
            Err(BadValue),
        ),
        ("deduction points as text", Server, SERVER, e(K::Deduction, 60), "points", json!("2.5"), false, Ok(())),
        (
            "deduction points as float",
            Server,
            SERVER,
            e(K::Deduction, 60),
            "points",
            json!("2,5"),
            false,
            Err(BadValue),
        ),
        (
            "correction of a held visit",
            Server,
            SERVER,
            e(K::Correction, 61),
            "target",
            json!({"kind": "visit", "id": id(20).to_string()}),
            false,
            Ok(()),
        ),
        (
            "correction of an unknown record",
            Server,
            SERVER,
            e(K::Correction, 61),
            "target",
            json!({"kind": "visit", "id": id(98).to_string()}),
            false,
            Err(MissingDependency),
        ),
    ];
    for (case, author, origin, entity, field, value, parent, expected) in cases {
        assert_eq!(check(author, origin, entity, field, value, parent), expected, "case `{case}`");
    }
}

#[test]
fn op_form_is_checked_before_anything_else() {
    let visit = e(EntityKind::Visit, 20);
    let float = op(DEVICE, visit, "answer.x", json!({"a": [1.5]}), None);
    assert!(float.check_form().unwrap_err().to_string().contains("non-integer"));
    let bad_field = op(DEVICE, visit, "Answer X", json!(1), None);
    assert!(bad_field.check_form().is_err());
    let mut forged = op(DEVICE, visit, "mode", json!("covert"), None);
    forged.value = json!("announced");
    assert!(forged.check_form().unwrap_err().to_string().contains("hash does not match"));
    let deep = (0..12).fold(json!(1), |v, _| json!([v]));
    assert!(op(DEVICE, visit, "answer.x", deep, None).check_form().is_err());
}
