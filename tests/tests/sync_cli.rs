//! `sidak-field sync` as an assessor runs it: permanent refusals (401, 403, an
//! unsupported protocol version) stop at once with a clear message and exit 7; a server
//! that does not answer is never reported as done (exit 6, the work still unsent); a
//! good sync prints a true summary, and `--json` gives it to scripts.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use sidak_e2e::harness::*;
use sidak_server::auth::Role;

fn field(dir: &Path, args: &[&str]) -> Output {
    Command::new(binary("sidak-field"))
        .env("SIDAK_PASSPHRASE", PASSPHRASE)
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()
        .expect("sidak-field runs")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A device set up through the CLI with one draft visit recorded offline.
fn device(dir: &Path, server: &Server) -> String {
    assert!(field(dir, &["init", "--assessor", "a1", "--region", "jateng"]).status.success());
    let token = server.token(Role::Assessor, Some("jateng"), Some("a1"));
    let o = field(dir, &["sync", "--server", &server.url(), "--token", &token]);
    assert!(o.status.success(), "morning sync: {}", text(&o));
    let o = field(dir, &["--json", "assignments"]);
    let list: Value = serde_json::from_slice(&o.stdout).unwrap();
    let assignment = list["assignments"][0]["id"].as_str().expect("an assignment").to_owned();
    let product = list["assignments"][0]["products"][0].as_str().expect("a product").to_owned();
    let o = field(
        dir,
        &["--json", "visit", "start", "--assignment", &assignment, "--product", &product, "--location", "mpp"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let visit: Value = serde_json::from_slice(&o.stdout).unwrap();
    let visit = visit["visit"].as_str().unwrap().to_owned();
    assert!(field(dir, &["visit", "answer", &visit, "proses.persyaratan", "2"]).status.success());
    token
}

fn unsent(dir: &Path) -> u64 {
    let o = field(dir, &["--json", "status"]);
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    s["unsent_ops"].as_u64().unwrap()
}

/// A fake server that answers every request with `status` and `body`.
fn fake_server(status: &'static str, body: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut s = stream;
            let mut buf = [0u8; 65536];
            let _ = s.read(&mut buf);
            let answer = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(answer.as_bytes());
        }
    });
    format!("http://{addr}")
}

/// A server that accepts connections and never answers.
fn silent_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    format!("http://{addr}")
}

#[test]
fn permanent_refusals_stop_at_once_with_a_clear_message() {
    let server = Server::start();
    server.import_registry(&registry(&["jateng"]));
    server.assign("a1", "kota-jateng", "disdukcapil", "penilaian-2023@1");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    device(&dir, &server);
    let pending = unsent(&dir);
    assert!(pending > 0);

    let other_region = server.token(Role::Assessor, Some("aceh"), Some("a1"));
    let cases = [
        ("an unknown token", server.url(), "sdk_not_a_token".to_owned(), "unauthorized"),
        // The client compares the token's scope with its own before sending anything.
        ("a token of another region", server.url(), other_region, "in aceh"),
        (
            "a server that forbids",
            fake_server("403 Forbidden", r#"{"code":"role_forbidden","message":"this role may not push"}"#),
            "sdk_x".to_owned(),
            "role_forbidden",
        ),
        (
            "a server of another protocol version",
            fake_server(
                "400 Bad Request",
                r#"{"code":"unsupported_protocol","message":"this server speaks protocol 2"}"#,
            ),
            "sdk_x".to_owned(),
            "unsupported_protocol",
        ),
    ];
    for (what, url, token, code) in cases {
        let started = Instant::now();
        let o = field(&dir, &["sync", "--server", &url, "--token", &token, "--retry-for", "60"]);
        assert_eq!(o.status.code(), Some(7), "{what}: exit 7 (refused): {}", text(&o));
        assert!(started.elapsed() < Duration::from_secs(30), "{what}: no retrying a refusal");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("refused") && err.contains(code), "{what}: the message says why: {err}");
        assert!(!text(&o).contains("sync complete"), "{what}: never reported as done");
        assert_eq!(unsent(&dir), pending, "{what}: nothing is lost, everything still waits");
        // --json reports the failure as JSON too.
        let o = field(&dir, &["--json", "sync", "--server", &url, "--token", &token]);
        let e: Value = serde_json::from_slice(&o.stderr).expect("a JSON error");
        assert_eq!(e["error"]["exit_code"], 7, "{what}");
    }
}

#[test]
fn a_server_that_never_answers_is_never_reported_as_done() {
    let server = Server::start();
    server.import_registry(&registry(&["jateng"]));
    server.assign("a1", "kota-jateng", "disdukcapil", "penilaian-2023@1");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let token = device(&dir, &server);
    let before = field(&dir, &["--json", "status"]);
    let before: Value = serde_json::from_slice(&before.stdout).unwrap();

    let o =
        field(&dir, &["sync", "--server", &silent_server(), "--token", &token, "--timeout", "1", "--retry-for", "2"]);
    assert_eq!(o.status.code(), Some(6), "exit 6 (try again later): {}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("nothing is lost"));
    assert!(!text(&o).contains("sync complete"));
    let after = field(&dir, &["--json", "status"]);
    let after: Value = serde_json::from_slice(&after.stdout).unwrap();
    assert_eq!(after["unsent_ops"], before["unsent_ops"], "the work still waits");
    assert_eq!(after["last_sync"], before["last_sync"], "the last complete sync is still the morning's");

    // The real server afterwards: a complete sync with a true summary.
    let o = field(&dir, &["--json", "sync", "--server", &server.url()]);
    assert!(o.status.success(), "{}", text(&o));
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["complete"], true);
    assert_eq!(s["unsent_ops"], 0);
    assert_eq!(s["pushed"], before["unsent_ops"], "it says what it sent: {s}");
    let o = field(&dir, &["sync", "--quiet"]);
    assert!(text(&o).contains("sync complete: 0 record(s) sent"), "{}", text(&o));
}
