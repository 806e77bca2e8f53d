//! `sidak-server` administration through the real binary: `token create` and its
//! validation, `instrument publish`, `conflicts`, `quarantine`, `recompute`, and the
//! defaults of `serve`.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};

use axum::http::StatusCode;
use common::*;
use serde_json::{json, Value};

fn count(h: &Harness, sql: &'static str) -> i64 {
    h.state
        .db()
        .read_blocking(|tx| tx.query_row(sql, [], |r| r.get(0)).map_err(sidak_server::error::ApiError::from))
        .unwrap()
}

#[test]
fn token_create_prints_the_secret_once_and_checks_the_scope() {
    let h = Harness::new();
    let tokens = |h: &Harness| count(h, "SELECT COUNT(*) FROM tokens");
    let before = tokens(&h);
    for (args, message) in [
        (&["--role", "peer"][..], "a peer token needs --region"),
        (&["--role", "supervisor"][..], "a supervisor token needs --region"),
        (&["--role", "assessor", "--region", "jateng"][..], "an assessor token needs --region and --assessor"),
        (&["--role", "assessor", "--assessor", "a1"][..], "an assessor token needs --region and --assessor"),
        (&["--role", "peer", "--region", "jateng", "--assessor", "a1"][..], "a peer token has no assessor"),
        (&["--role", "admin", "--region", "jateng"][..], "an admin token sees every region"),
        (&["--role", "assessor", "--region", "Jawa Tengah", "--assessor", "a1"][..], "region and assessor are codes"),
        (&["--role", "owner", "--region", "jateng"][..], "unknown role `owner`"),
    ] {
        let o = server_cli(&h, &[&["token", "create"][..], args].concat());
        assert_eq!(o.status.code(), Some(3), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).starts_with("sidak-server: ") && stderr(&o).contains(message), "{args:?}: {}", stderr(&o));
        assert!(stdout(&o).is_empty(), "{args:?}: no secret is printed");
    }
    assert_eq!(tokens(&h), before, "refused tokens are not stored");

    let o =
        ok(server_cli(&h, &["token", "create", "--role", "peer", "--region", "sulbar", "--label", "regional server"]));
    let secret = stdout(&o).trim().to_owned();
    assert!(secret.starts_with("sdk_") && !secret.contains(' '), "{secret}");
    assert!(stderr(&o).contains("only its hash is stored"), "{}", stderr(&o));
    assert_eq!(tokens(&h), before + 1);
    let (hash, role, region, label): (String, String, String, String) = h
        .state
        .db()
        .read_blocking(|tx| {
            tx.query_row("SELECT hash, role, region, label FROM tokens WHERE label = 'regional server'", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .map_err(sidak_server::error::ApiError::from)
        })
        .unwrap();
    assert_eq!((role.as_str(), region.as_str(), label.as_str()), ("peer", "sulbar", "regional server"));
    assert_eq!(hash, sidak_server::auth::token_hash(&secret));
    assert!(!hash.contains(&secret[4..]));
}

#[test]
fn instrument_publish_adds_a_version_once() {
    let h = Harness::new();
    let dir = tempfile::tempdir().unwrap();
    let mut doc: Value = serde_json::from_str(sidak_core::instrument::builtin_text("ikm-2017").unwrap()).unwrap();
    doc["version"] = json!(2);
    let file = dir.path().join("ikm-2017-v2.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    let published = |h: &Harness| count(h, "SELECT COUNT(*) FROM instruments WHERE id = 'ikm-2017' AND version = 2");
    assert_eq!(published(&h), 0);
    let o = ok(server_cli(&h, &["instrument", "publish", file.to_str().unwrap()]));
    assert_eq!(stdout(&o).trim(), "ikm-2017@2 published");
    assert_eq!(published(&h), 1);
    let o = ok(server_cli(&h, &["instrument", "publish", file.to_str().unwrap()]));
    assert_eq!(stdout(&o).trim(), "ikm-2017@2 was already published");
    assert_eq!(published(&h), 1);
    // Other content under a published version, and an invalid document: exit 3, nothing
    // written.
    let before = h.fingerprint();
    doc["title"] = json!("changed");
    std::fs::write(&file, doc.to_string()).unwrap();
    let o = server_cli(&h, &["instrument", "publish", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("ikm-2017@2"), "{}", stderr(&o));
    doc["version"] = json!(3);
    doc["bands"][0]["min"] = json!("1.00");
    std::fs::write(&file, doc.to_string()).unwrap();
    let o = server_cli(&h, &["instrument", "publish", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains("$.bands"), "{}", stderr(&o));
    assert_eq!(h.fingerprint(), before);
    // The new version is what a freshly opened server serves.
    let state = sidak_server::state::AppState::open(h._dir.path(), sidak_server::state::system_clock()).unwrap();
    let reference = sidak_core::instrument::InstrumentRef { id: "ikm-2017".into(), version: 2 };
    assert!(state.instruments().contains_key(&reference));
}

#[tokio::test]
async fn conflicts_quarantine_and_recompute_through_the_cli() {
    let h = Harness::new();
    // A conflict in jateng: two devices change the same answer having seen the same version.
    let mut d1 = Device::new(1, "a1", "jateng");
    let visit = d1.visit(&h, "kota-sukamaju", "disdukcapil", "ktp-el", 2);
    let seen = d1.ops.iter().rev().find(|o| o.field == "answer.proses.moto").unwrap().op_ref();
    d1.write(visit, "answer.proses.moto", json!(1), Some(seen));
    let mut d2 = Device::new(2, "a1", "jateng");
    d2.write(visit, "answer.proses.moto", json!(3), Some(seen));
    // A quarantined op: an answer out of range.
    let bad = d1.write(visit, "answer.proses.prosedur", json!(9), None);
    for dev in [&d1, &d2] {
        let (s, r) = h.call("POST", "/v1/ops/push", Some(&h.assessor), Some(dev.batch(0))).await;
        assert_eq!(s, StatusCode::OK, "{r}");
    }

    let listed: Value = serde_json::from_str(&stdout(&ok(server_cli(&h, &["conflicts"])))).unwrap();
    let conflicts = listed["conflicts"].as_array().unwrap();
    assert_eq!(conflicts.len(), 1, "{listed}");
    assert_eq!(
        (conflicts[0]["entity"].as_str(), conflicts[0]["field"].as_str()),
        (Some(visit.id.to_string().as_str()), Some("answer.proses.moto"))
    );
    let values: Vec<&Value> = conflicts[0]["versions"].as_array().unwrap().iter().map(|v| &v["value"]).collect();
    assert!(values.contains(&&json!(1)) && values.contains(&&json!(3)), "{listed}");
    let (_, api) = h.call("GET", "/v1/admin/conflicts", Some(&h.admin), None).await;
    assert_eq!(listed, api, "the CLI lists what the API does");
    let sulbar: Value =
        serde_json::from_str(&stdout(&ok(server_cli(&h, &["conflicts", "--region", "sulbar"])))).unwrap();
    assert_eq!(sulbar, json!({"conflicts": []}));

    let listed: Value = serde_json::from_str(&stdout(&ok(server_cli(&h, &["quarantine"])))).unwrap();
    let held = listed["quarantine"].as_array().unwrap();
    assert_eq!(held.len(), 1, "{listed}");
    assert_eq!(
        (held[0]["op"].as_str(), held[0]["code"].as_str()),
        (Some(format!("{}#{}", bad.origin, bad.seq).as_str()), Some("bad_answer"))
    );
    let (_, api) = h.call("GET", "/v1/admin/quarantine", Some(&h.admin), None).await;
    assert_eq!(listed, api);
    let jateng: Value =
        serde_json::from_str(&stdout(&ok(server_cli(&h, &["quarantine", "--region", "jateng"])))).unwrap();
    assert_eq!(jateng, listed);
    let sulbar: Value =
        serde_json::from_str(&stdout(&ok(server_cli(&h, &["quarantine", "--region", "sulbar"])))).unwrap();
    assert_eq!(sulbar, json!({"quarantine": []}));

    // Recompute from scratch: the same documents, byte for byte.
    let documents = |h: &Harness| {
        h.state
            .db()
            .read_blocking(|tx| {
                let mut stmt = tx.prepare(
                    "SELECT kind || '|' || entity || '|' || instrument || '|' || document FROM results ORDER BY 1",
                )?;
                let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
                Ok::<_, sidak_server::error::ApiError>(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .unwrap()
    };
    // What the pushes computed incrementally is what a recompute through the API
    // gives (which also computes the institutions no op touched yet).
    let incremental = documents(&h);
    assert!(!incremental.is_empty());
    let (s, r) = h.call("POST", "/v1/admin/recompute", Some(&h.admin), None).await;
    assert_eq!((s, r["institutions"].as_u64()), (StatusCode::OK, Some(2)));
    let recomputed = documents(&h);
    assert!(incremental.iter().all(|d| recomputed.contains(d)), "incremental results equal recomputed ones");
    let incremental = recomputed;
    h.state
        .db()
        .write_blocking(|tx| {
            tx.execute("UPDATE results SET document = '{}'", []).map_err(sidak_server::error::ApiError::from)
        })
        .unwrap();
    let o = ok(server_cli(&h, &["recompute"]));
    assert_eq!(stdout(&o).trim(), "recomputed 2 institution(s)");
    let again = documents(&h);
    assert_eq!(again, incremental, "recomputed from scratch, byte for byte");
}

/// Kills the server it holds when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn serve_defaults_to_sidak_data_and_the_loopback_port_8080() {
    let cwd = tempfile::tempdir().unwrap();
    let mut child = Running(
        Command::new(env!("CARGO_BIN_EXE_sidak-server"))
            .arg("serve")
            .current_dir(cwd.path())
            .env_remove("SIDAK_DATA_DIR")
            .env_remove("SIDAK_UPSTREAM_TOKEN")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starts"),
    );
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let first = lines.next().expect("a first line").unwrap();
    assert!(first.starts_with("new store in ./sidak-data; first admin token (shown once): sdk_"), "{first}");
    assert!(cwd.path().join("sidak-data").join(sidak_server::db::DB_FILE).is_file(), "the store is in ./sidak-data");
    match lines.next() {
        Some(line) => {
            assert_eq!(line.unwrap(), "sidak-server listening on http://127.0.0.1:8080 (data in ./sidak-data)")
        }
        // Something else holds the port here: the refusal still names the default.
        None => {
            let mut err = String::new();
            child.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            assert!(err.contains("cannot listen on 127.0.0.1:8080"), "{err}");
        }
    }
    drop(child);
}

/// A store a newer release migrated is refused with what to do, not opened by a
/// binary that does not know its tables; nothing in it changes.
#[test]
fn a_store_from_a_newer_release_is_refused() {
    let h = Harness::new();
    let newer = h
        .state
        .db()
        .write_blocking(|tx| {
            let v: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
            tx.pragma_update(None, "user_version", v + 1)?;
            Ok::<_, sidak_server::error::ApiError>(v + 1)
        })
        .unwrap();
    let before = h.fingerprint();
    let o = server_cli(&h, &["recompute"]);
    assert_eq!(o.status.code(), Some(5), "a store error: {}", stderr(&o));
    let message = stderr(&o);
    assert!(message.contains(&format!("schema is version {newer}, newer than this sidak-server knows")), "{message}");
    assert!(message.contains("run that release or a later one"), "{message}");
    assert_eq!(h.fingerprint(), before);
}
