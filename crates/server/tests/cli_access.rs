//! The token lifecycle and the audit log through the real `sidak-server` binary:
//! `token create --expires-in`, `token list`, `token rotate --grace`, `token revoke`,
//! and `audit`, with what the CLI does recorded as `cli` and refused at once by the
//! router of a server on the same store.

mod common;

use std::process::Output;
use std::sync::atomic::Ordering;

use axum::http::StatusCode;
use common::*;
use serde_json::Value;

fn json_of(o: &Output) -> Value {
    serde_json::from_str(&stdout(o)).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

/// Sets the router's clock to the system's (which the CLI stamps with) plus `ms`.
fn clock_at_now_plus(h: &Harness, ms: i64) {
    h.clock.store(sidak_server::state::system_clock()() + ms, Ordering::SeqCst);
}

#[tokio::test]
async fn tokens_are_listed_rotated_revoked_and_every_change_is_audited_as_cli() {
    let h = Harness::new();
    let o = ok(server_cli(
        &h,
        &["token", "create", "--role", "supervisor", "--region", "jateng", "--label", "Bu Sri", "--expires-in", "90d"],
    ));
    let secret = stdout(&o).trim().to_owned();
    assert!(stderr(&o).contains("it expires 20"), "{}", stderr(&o));
    clock_at_now_plus(&h, 0);
    assert_eq!(h.call("GET", "/v1/whoami", Some(&secret), None).await.0, StatusCode::OK);

    let listed = json_of(&ok(server_cli(&h, &["token", "list", "--json"])));
    let text = listed.to_string();
    for s in [&secret, &h.admin, &h.supervisor, &h.assessor] {
        assert!(
            !text.contains(s.as_str()) && !text.contains(&sidak_server::auth::token_hash(s)),
            "a secret or hash is listed"
        );
    }
    let tokens = listed["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 8);
    let mine = tokens.iter().find(|t| t["label"] == "Bu Sri").unwrap().clone();
    let id = mine["id"].as_str().unwrap().to_owned();
    assert_eq!(
        (mine["role"].as_str(), mine["region"].as_str(), mine["status"].as_str()),
        (Some("supervisor"), Some("jateng"), Some("active"))
    );
    let lifetime = mine["expires_at"].as_i64().unwrap() - mine["created_at"].as_i64().unwrap();
    assert_eq!(lifetime, 90 * 86_400_000);
    let human = stdout(&ok(server_cli(&h, &["token", "list"])));
    let line = human.lines().find(|l| l.starts_with(&id)).unwrap();
    assert!(line.contains("supervisor") && line.contains("active") && line.contains("\"Bu Sri\""), "{line}");

    // Rotate with a minute of grace: both secrets work, then only the new one.
    let o = ok(server_cli(&h, &["token", "rotate", &id, "--grace", "60"]));
    let new = stdout(&o).trim().to_owned();
    assert!(new.starts_with("sdk_") && new != secret);
    assert!(stderr(&o).contains(&format!("replaces {id}")), "{}", stderr(&o));
    clock_at_now_plus(&h, 0);
    let (s, me) = h.call("GET", "/v1/whoami", Some(&new), None).await;
    assert_eq!((s, me["role"].as_str(), me["region"].as_str()), (StatusCode::OK, Some("supervisor"), Some("jateng")));
    assert_eq!(h.call("GET", "/v1/whoami", Some(&secret), None).await.0, StatusCode::OK);
    clock_at_now_plus(&h, 60_001);
    let (s, e) = h.call("GET", "/v1/whoami", Some(&secret), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(e["message"].as_str().unwrap().contains("revoked"), "{e}");
    let listed = json_of(&ok(server_cli(&h, &["token", "list", "--json"])));
    let new_view = listed["tokens"].as_array().unwrap().iter().find(|t| t["replaces"] == id.as_str()).unwrap().clone();
    assert_eq!(new_view["label"], "Bu Sri");
    let new_id = new_view["id"].as_str().unwrap().to_owned();

    // Revoke: refused at once.
    let o = ok(server_cli(&h, &["token", "revoke", &new_id]));
    assert!(stdout(&o).contains("revoked"), "{}", stdout(&o));
    clock_at_now_plus(&h, 0);
    let (s, e) = h.call("GET", "/v1/admin/audit", Some(&new), None).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")));
    assert!(e["message"].as_str().unwrap().contains("was revoked"), "{e}");

    // Refusals: exit codes, and those after the checks of their input are audited.
    let o = server_cli(&h, &["token", "revoke", "tok_nothing"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let o = server_cli(&h, &["token", "rotate", &new_id]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("is revoked"), "{}", stderr(&o));
    let o = server_cli(&h, &["token", "create", "--role", "admin", "--expires-in", "12"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("not a lifetime"), "{}", stderr(&o));

    // The other actions of the command line.
    ok(server_cli(&h, &["recompute"]));
    let backup = tempfile::tempdir().unwrap();
    ok(server_cli(&h, &["backup", "--to", backup.path().to_str().unwrap()]));

    let log = json_of(&ok(server_cli(&h, &["audit", "--json"])));
    let entries = log["entries"].as_array().unwrap();
    let got: Vec<(&str, &str)> =
        entries.iter().map(|e| (e["kind"].as_str().unwrap(), e["result"].as_str().unwrap())).collect();
    assert_eq!(
        got,
        [
            ("token.create", "ok"),
            ("token.rotate", "ok"),
            ("token.revoke", "ok"),
            ("token.revoke", "404 not_found"),
            ("token.rotate", "422 invalid_body"),
            ("recompute", "ok"),
            ("backup", "ok"),
        ]
    );
    for e in entries {
        assert_eq!(
            (&e["who"]["token"], &e["who"]["role"], &e["via"]),
            (&Value::from("cli"), &Value::from("cli"), &Value::from("cli"))
        );
        assert_eq!(e["who"]["label"], "operator-7", "the operator's login name");
        assert!(e["action"].as_str().unwrap().starts_with("sidak-server "), "{e}");
    }
    assert_eq!(entries[0]["action"], "sidak-server token create");
    assert_eq!(entries[0]["region"], "jateng");
    assert!(entries[0]["summary"]
        .as_str()
        .unwrap()
        .contains(&format!("created {id} (supervisor, region jateng, label \"Bu Sri\"")));
    assert!(entries[6]["summary"].as_str().unwrap().contains("backed up"), "{}", entries[6]);
    let human = stdout(&ok(server_cli(&h, &["audit", "--since", &entries[4]["id"].to_string()])));
    assert_eq!(human.lines().count(), 2, "{human}");
    assert!(human.lines().next().unwrap().contains("recompute"), "{human}");
    // The server's listing shows the command line's entries; a jateng supervisor sees
    // those of its region.
    let (_, listed) = h.call("GET", "/v1/admin/audit", Some(&h.admin), None).await;
    assert_eq!(listed["entries"].as_array().unwrap().len(), 7);
    let (_, jateng) = h.call("GET", "/v1/admin/audit", Some(&h.supervisor), None).await;
    let kinds: Vec<&str> = jateng["entries"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["token.create", "token.rotate", "token.revoke"]);

    // The backup keeps the log, append-only as well.
    let copy = sidak_server::db::Db::open(backup.path()).unwrap();
    let held: i64 = copy
        .read_blocking(|tx| {
            tx.query_row("SELECT COUNT(*) FROM audit", [], |r| r.get(0)).map_err(sidak_server::error::ApiError::from)
        })
        .unwrap();
    assert_eq!(held, 6, "every entry before the backup's own");
    let refused =
        copy.write_blocking(|tx| tx.execute("DELETE FROM audit", []).map_err(sidak_server::error::ApiError::from));
    assert!(refused.is_err());
}
