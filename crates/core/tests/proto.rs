//! The contract in `proto/` and the code cannot drift: every golden example parses into
//! its Rust type, re-serialises to the same JSON and validates against its schema; the
//! canonical op encoding matches the golden vectors byte for byte; the built-in
//! instruments validate against the instrument schema.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use sidak_core::chain::verify_chains;
use sidak_core::op::Op;
use sidak_core::wire::*;

fn proto() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto")
}

fn read_json(path: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every schema, by file name, each registered under its `$id` so relative refs resolve.
fn validators() -> BTreeMap<String, jsonschema::Validator> {
    let dir = proto().join("schemas");
    let schemas: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), read_json(&p)))
        .collect();
    let mut out = BTreeMap::new();
    for (name, schema) in &schemas {
        let mut options = jsonschema::options();
        for (_, other) in &schemas {
            if let Some(id) = other["$id"].as_str() {
                options
                    .with_resource(id, jsonschema::Resource::from_contents(other.clone()).expect("a schema resource"));
            }
        }
        let validator = options.build(schema).unwrap_or_else(|e| panic!("schema {name} does not compile: {e}"));
        out.insert(name.clone(), validator);
    }
    out
}

fn round_trip<T: Serialize + DeserializeOwned>(name: &str, value: &Value) -> T {
    let typed: T =
        serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{name} does not parse as its Rust type: {e}"));
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(&back, value, "{name} changes when re-serialised");
    typed
}

fn check_ops(name: &str, ops: &[Op], chained: bool) {
    for op in ops {
        op.check_form().unwrap_or_else(|e| panic!("{name}: op {} is malformed: {e}", op.op_ref()));
    }
    if chained {
        let report = verify_chains(ops);
        // Examples may start mid-chain (a peer forwarding seq 40..), so gaps before the
        // first op are expected; anything else is a fault.
        for fault in &report.faults {
            assert!(matches!(fault, sidak_core::chain::ChainFault::Gap { from: 1, .. }), "{name}: {fault:?}");
        }
    }
}

#[test]
fn every_example_round_trips_and_validates() {
    let validators = validators();
    let mut seen = BTreeMap::<String, usize>::new();
    for entry in std::fs::read_dir(proto().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let schema_name = file.split('.').next().unwrap().to_owned();
        let value = read_json(&path);
        let validator = validators
            .get(&format!("{schema_name}.schema.json"))
            .unwrap_or_else(|| panic!("{file}: no schema {schema_name}.schema.json"));
        let errors: Vec<String> =
            validator.iter_errors(&value).map(|e| format!("{} at {}", e, e.instance_path)).collect();
        assert!(errors.is_empty(), "{file} does not validate: {errors:#?}");
        match schema_name.as_str() {
            "op" => check_ops(&file, &[round_trip::<Op>(&file, &value)], false),
            "push-request" => check_ops(&file, &round_trip::<PushRequest>(&file, &value).ops, true),
            "push-response" => drop(round_trip::<PushResponse>(&file, &value)),
            "pull-response" => {
                let page = round_trip::<PullResponse>(&file, &value);
                let ops: Vec<Op> = page.ops.into_iter().map(|p| p.op).collect();
                check_ops(&file, &ops, true);
            }
            "status-request" => drop(round_trip::<StatusRequest>(&file, &value)),
            "status-response" => drop(round_trip::<StatusResponse>(&file, &value)),
            "manifest" => drop(round_trip::<Manifest>(&file, &value)),
            "evidence-begin" => drop(round_trip::<EvidenceBegin>(&file, &value)),
            "evidence-status" => drop(round_trip::<EvidenceStatus>(&file, &value)),
            "instrument-list" => drop(round_trip::<InstrumentList>(&file, &value)),
            "whoami" => drop(round_trip::<Whoami>(&file, &value)),
            "error" => {
                let body = round_trip::<ErrorBody>(&file, &value);
                assert!(
                    ERROR_CODES.iter().any(|(code, _)| *code == body.code),
                    "{file}: code {} is not in wire::ERROR_CODES",
                    body.code
                );
            }
            "assignment-list" => drop(round_trip::<AssignmentList>(&file, &value)),
            other => panic!("{file}: no Rust type is mapped to schema `{other}`"),
        }
        *seen.entry(schema_name).or_default() += 1;
    }
    for schema in validators.keys() {
        let name = schema.trim_end_matches(".schema.json");
        if name != "instrument" {
            assert!(seen.contains_key(name), "schema {schema} has no golden example");
        }
    }
}

#[test]
fn canonical_encoding_matches_the_golden_vectors() {
    let vectors = read_json(&proto().join("golden/op-hash-vectors.json"));
    let vectors = vectors.as_array().expect("a list of vectors");
    assert!(vectors.len() >= 8);
    for v in vectors {
        let name = v["name"].as_str().unwrap();
        let op: Op = round_trip(name, &v["op"]);
        assert_eq!(
            hex::encode(op.canonical_bytes()),
            v["canonical_hex"].as_str().unwrap(),
            "vector `{name}`: canonical bytes differ"
        );
        assert_eq!(op.compute_hash().to_hex(), v["hash"].as_str().unwrap(), "vector `{name}`: hash differs");
        assert_eq!(op.hash.to_hex(), v["hash"].as_str().unwrap(), "vector `{name}`: the op carries another hash");
    }
}

#[test]
fn built_in_instruments_validate_against_the_instrument_schema() {
    let validators = validators();
    let validator = &validators["instrument.schema.json"];
    for id in sidak_core::instrument::BUILTIN_IDS {
        let doc: Value = serde_json::from_str(sidak_core::instrument::builtin_text(id).unwrap()).unwrap();
        let errors: Vec<String> =
            validator.iter_errors(&doc).map(|e| format!("{} at {}", e, e.instance_path)).collect();
        assert!(errors.is_empty(), "{id}: {errors:#?}");
    }
}

#[test]
fn every_error_code_is_in_the_spec() {
    let spec = std::fs::read_to_string(proto().join("sync-v1.md")).unwrap();
    for (code, status) in ERROR_CODES {
        assert!(spec.contains(&format!("`{code}`")), "error code {code} is not in proto/sync-v1.md");
        assert!(spec.contains(&status.to_string()), "status {status} is not in proto/sync-v1.md");
    }
}

#[test]
fn the_builtin_instrument_list_example_names_the_builtins_as_they_are() {
    let list: InstrumentList =
        serde_json::from_value(read_json(&proto().join("examples/instrument-list.builtin.json"))).unwrap();
    let mut expected: Vec<(String, u32, String, String)> = sidak_core::instrument::BUILTIN_IDS
        .iter()
        .map(|id| {
            let i = sidak_core::instrument::builtin(id).unwrap();
            (i.reference.id.clone(), i.reference.version, i.title.clone(), i.digest)
        })
        .collect();
    expected.sort();
    let got: Vec<(String, u32, String, String)> =
        list.instruments.into_iter().map(|i| (i.id, i.version, i.title, i.digest)).collect();
    assert_eq!(got, expected, "proto/examples/instrument-list.builtin.json is out of date");
}

#[test]
fn signed_heads_match_the_golden_vectors() {
    use sidak_core::chain::ChainHead;
    use sidak_core::sign::{head_message, KeyPair, PublicKey, Signature, SignedHead};
    let golden = read_json(&proto().join("golden/signature-vectors.json"));
    let vectors = golden["vectors"].as_array().unwrap();
    assert!(vectors.len() >= 3);
    for v in vectors {
        let name = v["name"].as_str().unwrap();
        let mut seed = [0u8; 32];
        hex::decode_to_slice(v["seed"].as_str().unwrap(), &mut seed).unwrap();
        let keys = KeyPair::from_seed(&seed);
        assert_eq!(keys.public().to_hex(), v["public_key"].as_str().unwrap(), "{name}: public key");
        let origin: sidak_core::ids::OriginId = v["head"]["origin"].as_str().unwrap().parse().unwrap();
        let head = ChainHead {
            seq: v["head"]["seq"].as_u64().unwrap(),
            hash: v["head"]["hash"].as_str().unwrap().parse().unwrap(),
        };
        assert_eq!(hex::encode(head_message(origin, head)), v["message"].as_str().unwrap(), "{name}: message bytes");
        let signed = SignedHead::sign(&keys, origin, head);
        assert_eq!(signed.signature.to_hex(), v["signature"].as_str().unwrap(), "{name}: signature");
        let public: PublicKey = v["public_key"].as_str().unwrap().parse().unwrap();
        let signature: Signature = v["signature"].as_str().unwrap().parse().unwrap();
        assert!(public.verify_head(origin, head, &signature).is_ok(), "{name}: verifies");
    }
}

/// Every quarantine code the code knows is in the spec's table (§7.3) and in the push
/// response schema's list, and a push response quarantining an op with it validates:
/// a client that checks answers against the schema must not refuse a server's code.
#[test]
fn every_quarantine_code_is_in_the_spec_and_the_schema() {
    use sidak_core::records::RejectCode;
    // Exhaustive: a new code fails to compile here until it is listed below.
    let known = |c: RejectCode| match c {
        RejectCode::UnknownField
        | RejectCode::BadValue
        | RejectCode::Immutable
        | RejectCode::MissingDependency
        | RejectCode::UnknownInstrument
        | RejectCode::BadAnswer
        | RejectCode::NotPermitted
        | RejectCode::BadSignature
        | RejectCode::HeldUpstream => true,
        RejectCode::Unknown => false,
    };
    let all = [
        RejectCode::UnknownField,
        RejectCode::BadValue,
        RejectCode::Immutable,
        RejectCode::MissingDependency,
        RejectCode::UnknownInstrument,
        RejectCode::BadAnswer,
        RejectCode::NotPermitted,
        RejectCode::BadSignature,
        RejectCode::HeldUpstream,
    ];
    let spec = std::fs::read_to_string(proto().join("sync-v1.md")).unwrap();
    let table = &spec[spec.find("### 7.3").expect("§7.3 in the spec")..];
    let table = &table[..table.find("\n---").unwrap_or(table.len())];
    let schema = read_json(&proto().join("schemas/push-response.schema.json"));
    let listed: Vec<&str> =
        schema["$defs"]["reject-code"]["examples"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    let validators = validators();
    let validator = &validators["push-response.schema.json"];
    let mut response = read_json(&proto().join("examples/push-response.quarantined.json"));
    for code in all.into_iter().filter(|c| known(*c)) {
        let name = code.to_string();
        assert!(table.contains(&format!("| `{name}` |")), "quarantine code {name} is not in §7.3 of the spec");
        assert!(listed.contains(&name.as_str()), "quarantine code {name} is not listed in push-response.schema.json");
        response["origins"][1]["quarantined"][0]["code"] = Value::from(name.clone());
        let errors: Vec<String> = validator.iter_errors(&response).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "a push response quarantining as {name} does not validate: {errors:?}");
    }
    assert_eq!(listed.len(), all.len(), "the schema lists a code the code does not know");
    // A code from a newer server still validates (§8: the set may grow within v1).
    response["origins"][1]["quarantined"][0]["code"] = Value::from("a_newer_code");
    assert!(validator.is_valid(&response), "a newer server's quarantine code must validate");
}
