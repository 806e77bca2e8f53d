//! Bad input against the real HTTP API on a socket: malformed and oversized bodies,
//! wrong types, forged origins, replayed ops with altered content and path tricks in
//! evidence ids. Each gets its documented error (proto/sync-v1.md §7), and the store —
//! every row of every data table and every file under the data directory — is the same
//! before and after.

use std::io::{Read, Write};

use serde_json::{json, Value};
use sidak_core::op::Op;
use sidak_e2e::harness::*;

/// Everything the server holds, as text: every row of every data table, every file.
/// Left out on purpose: `rejections`, the log of refused tampering, which a refused
/// tampering attempt is expected to grow (checked separately), and the server's clock
/// (`meta` hlc_*), which moves on with every answer as wall time does.
fn snapshot(server: &Server) -> String {
    let mut out = server.read(|tx| {
        let mut out = String::new();
        for table in
            ["ops", "origins", "quarantine", "fields", "entities", "instruments", "tokens", "blobs", "results", "meta"]
        {
            let filter = if table == "meta" { " WHERE key NOT LIKE 'hlc_%'" } else { "" };
            let mut stmt = tx.prepare(&format!("SELECT * FROM {table}{filter} ORDER BY 1, 2"))?;
            // When a token was last used is bookkeeping an authenticated (even refused)
            // request may refresh; it is not state a refusal could have changed.
            let columns: Vec<usize> =
                (0..stmt.column_count()).filter(|&i| stmt.column_name(i).ok() != Some("last_used_at")).collect();
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                out.push_str(table);
                for &i in &columns {
                    let v: rusqlite::types::Value = row.get(i)?;
                    out.push_str(&format!("|{v:?}"));
                }
                out.push('\n');
            }
        }
        Ok(out)
    });
    for dir in ["blobs", "uploads"] {
        let mut files = Vec::new();
        walk(&server.dir().join(dir), &mut files);
        files.sort();
        for f in files {
            let bytes = std::fs::read(&f).unwrap();
            out.push_str(&format!("{} {}\n", f.display(), sidak_core::hash::sha256_hex(&bytes)));
        }
    }
    out
}

fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn rejections(server: &Server) -> i64 {
    server.read(|tx| Ok(tx.query_row("SELECT COUNT(*) FROM rejections", [], |r| r.get(0))?))
}

/// Sends raw bytes as one HTTP/1.1 request (so paths reach the server unnormalised)
/// and returns the status and the JSON body.
fn raw(server: &Server, head: &str, body: &[u8]) -> (u16, Value) {
    let mut s = std::net::TcpStream::connect(server.addr).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).unwrap();
    let text = String::from_utf8_lossy(&answer);
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn request(method: &str, path: &str, token: &str, ctype: &str, body: &[u8]) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nhost: sidak\r\nauthorization: Bearer {token}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
}

fn push(server: &Server, token: &str, body: &[u8]) -> (u16, Value) {
    raw(server, &request("POST", "/v1/ops/push", token, "application/json", body), body)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

#[test]
fn every_bad_request_gets_its_documented_error_and_changes_nothing() {
    let server = Server::start();
    server.import_registry(&registry(&["jateng", "aceh"]));
    server.assign("a1", "kota-jateng", "disdukcapil", "penilaian-2023@1");
    server.assign("b1", "kota-aceh", "disdukcapil", "penilaian-2023@1");
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(5);
    let mut a = Device::new(&server.state, "a1", "jateng");
    let mut b = Device::new(&server.state, "b1", "aceh");
    a.sync(&server.url()).unwrap();
    b.sync(&server.url()).unwrap();
    a.record_unit("disdukcapil", 2, 0, &mut rng);
    a.sync(&server.url()).unwrap();
    let a_origin = a.field.identity().unwrap().unwrap().origin;
    let a_ops: Vec<Op> = a.field.all_ops().unwrap().into_iter().filter(|o| o.origin == a_origin).collect();
    let photo = a
        .field
        .visits(false)
        .unwrap()
        .into_iter()
        .flat_map(|v| a.field.visit(&v.id.to_string()).unwrap().evidence)
        .next()
        .expect("a photo")
        .sha256;

    let supervisor = server.token(sidak_server::auth::Role::Supervisor, Some("jateng"), None);
    let before = snapshot(&server);
    let rejected_before = rejections(&server);
    let ops_json = |ops: &[Op]| serde_json::to_vec(&json!({ "ops": ops })).unwrap();

    // (what, status, body) → expected status and code.
    let mut cases: Vec<(String, (u16, Value), u16, &str)> = Vec::new();
    let mut case = |what: &str, got: (u16, Value), status: u16, code: &'static str| {
        cases.push((what.to_owned(), got, status, code));
    };

    // Malformed and oversized bodies.
    case("not JSON", push(&server, &a.token, b"{\"ops\": [{"), 400, "malformed_json");
    case("not UTF-8", push(&server, &a.token, b"{\"ops\": \"\xff\xfe\"}"), 400, "malformed_json");
    let huge = format!("{{\"ops\": [], \"pad\": \"{}\"}}", "x".repeat(9 << 20));
    case("a 9 MiB body", push(&server, &a.token, huge.as_bytes()), 413, "body_too_large");
    let bomb = gzip(&vec![b' '; 20 << 20]);
    let head = request("POST", "/v1/ops/push", &a.token, "application/json", &bomb)
        .replace("connection: close", "content-encoding: gzip\r\nconnection: close");
    case("a gzip body that inflates past the limit", raw(&server, &head, &bomb), 413, "body_too_large");
    let head = request("POST", "/v1/ops/push", &a.token, "application/json", b"x")
        .replace("connection: close", "content-encoding: gzip\r\nconnection: close");
    case("a gzip body that is not gzip", raw(&server, &head, b"x"), 400, "malformed_json");
    case(
        "a form, not JSON",
        raw(&server, &request("POST", "/v1/ops/push", &a.token, "text/plain", b"{}"), b"{}"),
        415,
        "unsupported_media_type",
    );

    // Wrong types and shapes.
    let mut op = serde_json::to_value(&a_ops[0]).unwrap();
    op["seq"] = json!("1");
    case(
        "seq as a string",
        push(&server, &a.token, &serde_json::to_vec(&json!({"ops": [op]})).unwrap()),
        422,
        "invalid_body",
    );
    let mut op = serde_json::to_value(&a_ops[0]).unwrap();
    op["surprise"] = json!(true);
    case(
        "an unknown member",
        push(&server, &a.token, &serde_json::to_vec(&json!({"ops": [op]})).unwrap()),
        422,
        "invalid_body",
    );
    case("ops as a number", push(&server, &a.token, b"{\"ops\": 5}"), 422, "invalid_body");
    case("no ops member", push(&server, &a.token, b"{}"), 422, "invalid_body");
    case("a negative seq", push(&server, &a.token, br#"{"ops": [{"origin": "x", "seq": -1}]}"#), 422, "invalid_body");

    // Forged origins: another device's ops, replayed or new, with my token.
    case(
        "another device's ops replayed with my token",
        push(&server, &b.token, &ops_json(&a_ops[..5])),
        403,
        "origin_forbidden",
    );
    let last = a_ops.last().unwrap();
    let forged = Op::new(
        a_origin,
        last.seq + 1,
        sidak_core::hlc::Hlc { ms: last.hlc.ms + 1, c: 0 },
        last.wall + 1,
        last.entity,
        last.field.clone(),
        last.value.clone(),
        None,
        last.hash,
    );
    case(
        "a new op under another device's origin",
        push(&server, &b.token, &ops_json(&[forged])),
        403,
        "origin_forbidden",
    );
    case("a supervisor pushing", push(&server, &supervisor, &ops_json(&a_ops[..1])), 403, "role_forbidden");
    case(
        "no token",
        raw(&server, "GET /v1/whoami HTTP/1.1\r\nhost: s\r\nconnection: close\r\n\r\n", b""),
        401,
        "unauthorized",
    );
    case(
        "an unknown token",
        raw(&server, &request("GET", "/v1/whoami", "sdk_forged", "application/json", b""), b""),
        401,
        "unauthorized",
    );

    // Evidence ids with path tricks: never a file outside the store.
    for path in [
        "/v1/evidence/..%2F..%2F..%2Fetc%2Fpasswd",
        "/v1/evidence/../../sidak.sqlite",
        "/v1/evidence/%2e%2e%2fsidak.sqlite",
        "/v1/evidence/..\\..\\sidak.sqlite",
        &format!("/v1/evidence/{}", photo.to_uppercase()),
        &format!("/v1/evidence/{}", &photo[..63]),
        &format!("/v1/evidence/{photo}0"),
        &format!("/v1/evidence/{}%00", &photo[..63]),
        "/v1/evidence/zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
    ] {
        for method in ["GET", "POST", "PUT"] {
            let (ctype, body): (&str, &[u8]) = match method {
                "POST" => ("application/json", br#"{"size": 10, "media_type": "image/jpeg"}"#),
                "PUT" => ("application/octet-stream", b"0123456789"),
                _ => ("application/json", b""),
            };
            let target = if method == "PUT" { format!("{path}?offset=0") } else { path.to_owned() };
            let got = raw(&server, &request(method, &target, &a.token, ctype, body), body);
            case(&format!("{method} {path}"), got, 404, "not_found");
        }
    }
    let got = raw(
        &server,
        &request("GET", &format!("/v1/evidence/{photo}/status/../../x"), &a.token, "application/json", b""),
        b"",
    );
    case("a status path that climbs", got, 404, "not_found");

    // Replayed ops with altered content.
    let mut altered = a_ops[3].clone();
    altered.value = json!("dirubah");
    case("an altered op with its old hash", push(&server, &a.token, &ops_json(&[altered.clone()])), 200, "");
    altered.hash = altered.compute_hash();
    case("an altered op with a fresh hash", push(&server, &a.token, &ops_json(&[altered])), 200, "");

    // Check every answer.
    let mut chain_codes = Vec::new();
    for (what, (status, body), want_status, want_code) in &cases {
        assert_eq!(status, want_status, "{what}: {body}");
        if *want_status == 200 {
            let r = &body["origins"][0]["rejected"][0];
            chain_codes.push(r["code"].as_str().unwrap_or("none").to_owned());
            assert_eq!(body["origins"][0]["stored"], json!(0), "{what}: {body}");
        } else {
            assert_eq!(body["code"], json!(want_code), "{what}: {body}");
            assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: a message for people");
        }
    }
    assert_eq!(chain_codes, ["malformed", "altered"], "the altered replays are refused with their chain codes");

    // Nothing changed; the tampering is on record for supervisors.
    let after = snapshot(&server);
    let gone: Vec<&str> = before.lines().filter(|l| !after.contains(l)).collect();
    let new: Vec<&str> = after.lines().filter(|l| !before.contains(l)).collect();
    assert!(gone.is_empty() && new.is_empty(), "no refused request changed the store: gone {gone:#?}, new {new:#?}");
    assert!(rejections(&server) > rejected_before, "the altered replay is logged as a rejection");
    // And the honest device still syncs cleanly afterwards.
    let s = a.sync(&server.url()).unwrap();
    assert!(s.complete && s.quarantined.is_empty(), "{s:?}");
}
