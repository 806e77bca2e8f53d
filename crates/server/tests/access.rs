//! The token lifecycle, the failed-auth brake and the audit log, through the router
//! without a socket: revoked tokens refused at once on every endpoint, rotation with
//! and without grace, expiry, the lock-out of one source address, and an audit entry
//! with who and what for every kind of action, append-only and scoped.

mod common;

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Request, StatusCode};
use common::*;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use sidak_core::ids::EntityId;
use sidak_core::records::{EntityKind, EntityRef};
use tower::ServiceExt;

const MINUTE: i64 = 60_000;

fn advance(h: &Harness, ms: i64) {
    h.clock.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
}

/// The id of the token with this secret.
fn id_of(h: &Harness, secret: &str) -> String {
    let secret = secret.to_owned();
    let check = h
        .state
        .db()
        .read_blocking(move |tx| {
            sidak_server::auth::check_token(tx, &secret, 0).map_err(sidak_server::error::ApiError::from)
        })
        .unwrap();
    match check {
        sidak_server::auth::TokenCheck::Valid { principal, .. } => principal.token_id,
        other => panic!("not a token in force: {other:?}"),
    }
}

/// When the token `id` was last recorded as used.
fn last_used_at(h: &Harness, id: &str) -> Option<i64> {
    let id = id.to_owned();
    h.state
        .db()
        .read_blocking(move |tx| {
            tx.query_row("SELECT last_used_at FROM tokens WHERE id = ?1", [id], |r| r.get(0))
                .map_err(sidak_server::error::ApiError::from)
        })
        .unwrap()
}

/// Creates a token over HTTP as the admin; returns (id, secret).
async fn create(h: &Harness, body: Value) -> (String, String) {
    let (s, made) = h.call("POST", "/v1/admin/tokens", Some(&h.admin), Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{made}");
    (made["token"]["id"].as_str().unwrap().to_owned(), made["secret"].as_str().unwrap().to_owned())
}

async fn whoami(h: &Harness, secret: &str) -> (StatusCode, Value) {
    h.call("GET", "/v1/whoami", Some(secret), None).await
}

fn refused_because(got: &(StatusCode, Value), word: &str) {
    assert_eq!(got.0, StatusCode::UNAUTHORIZED, "{}", got.1);
    assert_eq!(got.1["code"], "unauthorized", "{}", got.1);
    assert!(got.1["message"].as_str().unwrap().contains(word), "{}", got.1);
}

/// A request from `from` (no ConnectInfo: the unknown source), with a token.
fn from(method: &str, path: &str, token: Option<&str>, addr: Option<&str>) -> Request<Body> {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let mut req = req.body(Body::empty()).unwrap();
    if let Some(a) = addr {
        req.extensions_mut().insert(ConnectInfo(a.parse::<SocketAddr>().unwrap()));
    }
    req
}

/// Sends a request; returns status, `Retry-After`, and the JSON body or page text.
async fn send_raw(h: &Harness, req: Request<Body>) -> (StatusCode, Option<String>, Value) {
    let response = h.router.clone().oneshot(req).await.unwrap();
    let status = response.status();
    let retry = response.headers().get(header::RETRY_AFTER).map(|v| v.to_str().unwrap().to_owned());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body =
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, retry, body)
}

/// A concrete path for a route pattern.
fn concrete(route: &str) -> String {
    route
        .replace("{sha256}", &"0".repeat(64))
        .replace("{file}", "op.schema.json")
        .replace("{version}", "1")
        .replace("{region}", "jateng")
        .replace("{id}", "x")
        .replace("{unit}", "u")
        .replace("{product}", "p")
        .replace("{indicator}", "i")
}

#[tokio::test]
async fn a_revoked_token_is_refused_at_once_on_every_endpoint() {
    let h = Harness::new();
    let (id, secret) = create(&h, json!({"role": "admin", "label": "laptop of the centre"})).await;
    assert_eq!(whoami(&h, &secret).await.0, StatusCode::OK);
    let (s, revoked) = h.call("POST", &format!("/v1/admin/tokens/{id}/revoke"), Some(&h.admin), None).await;
    assert_eq!((s, revoked["token"]["status"].as_str()), (StatusCode::OK, Some("revoked")), "{revoked}");
    let public = [
        ("GET", "/v1/health"),
        ("GET", "/v1/openapi.json"),
        ("GET", "/v1/schemas/{file}"),
        ("GET", "/dashboard/login"),
        ("POST", "/dashboard/logout"),
    ];
    let (mut wrong, mut checked) = (Vec::new(), 0);
    for (method, route) in &h.routes {
        let (method, route) = (method.as_str(), *route);
        if public.contains(&(method, route)) {
            continue;
        }
        let path = concrete(route);
        let req = if (method, route) == ("POST", "/dashboard/login") {
            Request::builder()
                .method("POST")
                .uri(path.as_str())
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from(format!("token={secret}")))
                .unwrap()
        } else {
            let mut req = Request::builder()
                .method(method)
                .uri(path.as_str())
                .header("authorization", format!("Bearer {secret}"));
            if method != "GET" {
                req = req.header("content-type", "application/json");
            }
            req.body(Body::from(if method == "GET" { "" } else { "{}" })).unwrap()
        };
        let (status, body) = h.send(req).await;
        checked += 1;
        let text = body.to_string();
        let said_revoked = text.contains("unauthorized") && text.contains("was revoked at");
        if status != StatusCode::UNAUTHORIZED || !said_revoked {
            wrong.push(format!("{method} {path}: {status} {}", text.chars().take(200).collect::<String>()));
        }
    }
    assert!(wrong.is_empty(), "the revoked token was not refused as revoked:\n{}", wrong.join("\n"));
    assert_eq!(checked + public.len(), h.routes.len(), "every route but the public ones was tried");
    // Revoking again changes nothing; an unknown id is 404.
    let (s, again) = h.call("POST", &format!("/v1/admin/tokens/{id}/revoke"), Some(&h.admin), None).await;
    assert_eq!((s, &again["token"]["revoked_at"]), (StatusCode::OK, &revoked["token"]["revoked_at"]));
    let (s, e) = h.call("POST", "/v1/admin/tokens/tok_nothing/revoke", Some(&h.admin), None).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    // The other tokens are untouched.
    assert_eq!(whoami(&h, &h.supervisor).await.0, StatusCode::OK);
}

#[tokio::test]
async fn rotation_gives_a_working_secret_and_the_old_one_stops_after_its_grace() {
    let h = Harness::new();
    let (old_id, old) =
        create(&h, json!({"role": "assessor", "region": "jateng", "assessor": "a1", "label": "tablet 3"})).await;
    let rotate = format!("/v1/admin/tokens/{old_id}/rotate");
    let (s, r) = h.call("POST", &rotate, Some(&h.admin), Some(json!({"grace_seconds": 300}))).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let (new_id, new) = (r["token"]["id"].as_str().unwrap().to_owned(), r["secret"].as_str().unwrap().to_owned());
    assert_ne!(new, old);
    assert_eq!(
        (&r["token"]["role"], &r["token"]["region"], &r["token"]["assessor"], &r["token"]["label"]),
        (&json!("assessor"), &json!("jateng"), &json!("a1"), &json!("tablet 3")),
        "the same role, scope and label"
    );
    assert_eq!((&r["token"]["replaces"], &r["replaced"]["replaced_by"]), (&json!(old_id), &json!(new_id)));
    assert_eq!((&r["replaced"]["status"], &r["replaced"]["revoked_at"]), (&json!("grace"), &json!(T0 + 300_000)));
    let (s, me) = whoami(&h, &new).await;
    assert_eq!((s, me["assessor"].as_str(), me["region"].as_str()), (StatusCode::OK, Some("a1"), Some("jateng")));
    assert_eq!(whoami(&h, &old).await.0, StatusCode::OK, "the old secret works during the grace period");
    advance(&h, 299_999);
    assert_eq!(whoami(&h, &old).await.0, StatusCode::OK);
    advance(&h, 1);
    let refused = whoami(&h, &old).await;
    refused_because(&refused, "revoked");
    assert!(refused.1["message"].as_str().unwrap().contains(&new_id), "names its successor: {}", refused.1);
    assert_eq!(whoami(&h, &new).await.0, StatusCode::OK);
    // A rotated token is not rotated twice.
    let (s, e) = h.call("POST", &rotate, Some(&h.admin), None).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_body")), "{e}");
    assert!(e["message"].as_str().unwrap().contains("already rotated"), "{e}");
    // Without a body: no grace, the old secret stops at once.
    let (s, r) = h.call("POST", &format!("/v1/admin/tokens/{new_id}/rotate"), Some(&h.admin), None).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let newest = r["secret"].as_str().unwrap().to_owned();
    refused_because(&whoami(&h, &new).await, "revoked");
    assert_eq!(whoami(&h, &newest).await.0, StatusCode::OK);
    // Bad bodies.
    let newest_id = r["token"]["id"].as_str().unwrap().to_owned();
    for (body, code) in [
        (json!({"grace_seconds": 9_999_999}), "invalid_body"),
        (json!({"grace": 5}), "invalid_body"),
        (json!({"expires_in": "soon"}), "invalid_body"),
    ] {
        let (s, e) = h.call("POST", &format!("/v1/admin/tokens/{newest_id}/rotate"), Some(&h.admin), Some(body)).await;
        assert_eq!((s, e["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some(code)), "{e}");
    }
    assert_eq!(whoami(&h, &newest).await.0, StatusCode::OK, "a refused rotation changes nothing");

    // The listing shows the chain and never a secret or hash.
    let (s, list) = h.call("GET", "/v1/admin/tokens", Some(&h.admin), None).await;
    assert_eq!(s, StatusCode::OK);
    let text = list.to_string();
    for secret in [&old, &new, &newest, &h.admin, &h.assessor] {
        assert!(!text.contains(secret.as_str()), "a secret is listed");
        assert!(!text.contains(&sidak_server::auth::token_hash(secret)), "a hash is listed");
    }
    let tokens = list["tokens"].as_array().unwrap();
    let status_of = |id: &str| tokens.iter().find(|t| t["id"] == id).map(|t| t["status"].clone()).unwrap();
    assert_eq!(
        (status_of(&old_id), status_of(&new_id), status_of(&newest_id)),
        (json!("revoked"), json!("revoked"), json!("active"))
    );
    assert_eq!(tokens.len(), 7 + 3, "the harness's seven tokens and the three of this test");
}

#[tokio::test]
async fn an_expired_token_is_refused_and_rotating_it_renews_it() {
    let h = Harness::new();
    let (id, secret) = create(&h, json!({"role": "supervisor", "region": "jateng", "expires_in": "12h"})).await;
    let (_, list) = h.call("GET", "/v1/admin/tokens", Some(&h.admin), None).await;
    let listed = list["tokens"].as_array().unwrap().iter().find(|t| t["id"] == id.as_str()).unwrap().clone();
    assert_eq!(listed["expires_at"], json!(T0 + 12 * 60 * MINUTE));
    advance(&h, 12 * 60 * MINUTE - 1);
    assert_eq!(whoami(&h, &secret).await.0, StatusCode::OK);
    advance(&h, 1);
    refused_because(&whoami(&h, &secret).await, "expired");
    let (s, page) = h.call("GET", &format!("/dashboard?token={secret}"), None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(page.as_str().unwrap().contains("expired"), "the dashboard says why");
    // Rotating renews it for as long again.
    let (s, r) = h.call("POST", &format!("/v1/admin/tokens/{id}/rotate"), Some(&h.admin), None).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let now = T0 + 12 * 60 * MINUTE;
    assert_eq!(r["token"]["expires_at"], json!(now + 12 * 60 * MINUTE));
    assert_eq!(whoami(&h, r["secret"].as_str().unwrap()).await.0, StatusCode::OK);
    // Lifetimes that are not.
    for bad in ["12", "0h", "forever", "3661d"] {
        let body = json!({"role": "admin", "expires_in": bad});
        let (s, e) = h.call("POST", "/v1/admin/tokens", Some(&h.admin), Some(body)).await;
        assert_eq!((s, e["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_body")), "{bad}: {e}");
    }
    let (s, e) = h.call("POST", "/v1/admin/tokens", Some(&h.admin), Some(json!({"role": "peer"}))).await;
    assert_eq!((s, e["message"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("a peer token needs --region")));
}

#[tokio::test]
async fn last_use_is_recorded_at_most_once_a_minute() {
    let h = Harness::new();
    let id = id_of(&h, &h.assessor);
    let last_used = |h: &Harness| last_used_at(h, &id);
    assert_eq!(last_used(&h), None);
    whoami(&h, &h.assessor).await;
    assert_eq!(last_used(&h), Some(T0));
    advance(&h, MINUTE - 1);
    whoami(&h, &h.assessor).await;
    assert_eq!(last_used(&h), Some(T0), "not again within the minute");
    advance(&h, 1);
    whoami(&h, &h.assessor).await;
    assert_eq!(last_used(&h), Some(T0 + MINUTE));
}

#[tokio::test]
async fn failed_authentications_lock_one_source_out_until_the_window_passes() {
    let h = Harness::new();
    let (a, b, c) = (Some("10.0.0.1:5000"), Some("10.0.0.2:5000"), Some("10.0.0.3:5000"));
    for i in 0..10 {
        let (s, retry, e) = send_raw(&h, from("GET", "/v1/whoami", Some(&format!("sdk_guess{i}")), a)).await;
        assert_eq!((s, retry, e["code"].as_str()), (StatusCode::UNAUTHORIZED, None, Some("unauthorized")), "{i}");
    }
    // The 11th request from that address is refused, whatever its token.
    for token in [Some("sdk_guess10"), Some(h.admin.as_str()), None] {
        let (s, retry, e) = send_raw(&h, from("GET", "/v1/whoami", token, a)).await;
        assert_eq!((s, e["code"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("too_many_failures")), "{e}");
        assert_eq!(retry.as_deref(), Some("60"));
    }
    let (s, retry, page) = send_raw(&h, from("GET", "/dashboard", Some(&h.admin), a)).await;
    assert_eq!((s, retry.as_deref()), (StatusCode::TOO_MANY_REQUESTS, Some("60")));
    assert!(page.as_str().unwrap().contains(r#"data-code="too_many_failures""#));
    // What needs no token still answers.
    assert_eq!(send_raw(&h, from("GET", "/v1/health", None, a)).await.0, StatusCode::OK);
    // Another address, and the unknown source of socket-less calls, are not locked.
    assert_eq!(send_raw(&h, from("GET", "/v1/whoami", Some(&h.admin), b)).await.0, StatusCode::OK);
    assert_eq!(send_raw(&h, from("GET", "/v1/whoami", Some("sdk_wrong"), b)).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(send_raw(&h, from("GET", "/v1/whoami", Some(&h.admin), None)).await.0, StatusCode::OK);
    // Revoked and expired tokens are not guesses: a revoked device retrying does not
    // lock its office out.
    let (id, revoked) = create(&h, json!({"role": "assessor", "region": "jateng", "assessor": "a1"})).await;
    h.call("POST", &format!("/v1/admin/tokens/{id}/revoke"), Some(&h.admin), None).await;
    for _ in 0..15 {
        assert_eq!(send_raw(&h, from("GET", "/v1/whoami", Some(&revoked), c)).await.0, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(send_raw(&h, from("GET", "/v1/whoami", Some(&h.assessor), c)).await.0, StatusCode::OK);
    // Retry-After counts down; when the window has passed the source is let in again.
    advance(&h, 45_500);
    assert_eq!(send_raw(&h, from("GET", "/v1/whoami", Some(&h.admin), a)).await.1.as_deref(), Some("15"));
    advance(&h, 14_500);
    assert_eq!(send_raw(&h, from("GET", "/v1/whoami", Some(&h.admin), a)).await.0, StatusCode::OK);
}

/// The pull checks its token inside its own read (`api::Presented`) instead of in an
/// extractor's: the verdict, its order before the query's errors, the failures that
/// lock a source out, revocation and the record of last use are the same as elsewhere.
#[tokio::test]
async fn the_pull_checks_its_token_as_every_endpoint_does() {
    let h = Harness::new();
    let (a, b) = (Some("10.0.1.1:5000"), Some("10.0.1.2:5000"));
    let id = id_of(&h, &h.peer);
    let last_used = |h: &Harness| last_used_at(h, &id);
    // An unknown token with a bad query hears about the token, not the query.
    let (s, _, e) = send_raw(&h, from("GET", "/v1/ops/pull?limit=0", Some("sdk_guess"), a)).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")), "{e}");
    let (s, _, e) = send_raw(&h, from("GET", "/v1/ops/pull?limit=0", None, a)).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")), "{e}");
    // A token in force with a bad query hears about the query (and was used).
    assert_eq!(last_used(&h), None);
    let (s, _, e) = send_raw(&h, from("GET", "/v1/ops/pull?limit=0", Some(&h.peer), a)).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_query")), "{e}");
    assert_eq!(last_used(&h), Some(T0));
    // Unknown tokens on the pull lock the source out as on any endpoint (the first
    // guess above was one of the ten).
    for i in 1..10 {
        let (s, _, _) = send_raw(&h, from("GET", "/v1/ops/pull", Some(&format!("sdk_guess{i}")), a)).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{i}");
    }
    let (s, retry, _) = send_raw(&h, from("GET", "/v1/ops/pull", Some(&h.peer), a)).await;
    assert_eq!((s, retry.as_deref()), (StatusCode::TOO_MANY_REQUESTS, Some("60")));
    // From elsewhere the same token pulls, and its use is recorded.
    advance(&h, MINUTE);
    let (s, _, page) = send_raw(&h, from("GET", "/v1/ops/pull?limit=5", Some(&h.peer), b)).await;
    assert_eq!((s, page["ops"].as_array().map(Vec::len)), (StatusCode::OK, Some(5)), "{page}");
    assert_eq!(last_used(&h), Some(T0 + MINUTE));
    // Revoked, it is refused as revoked, and a revoked token's retries lock nobody out.
    h.call("POST", &format!("/v1/admin/tokens/{id}/revoke"), Some(&h.admin), None).await;
    for _ in 0..12 {
        let (s, _, e) = send_raw(&h, from("GET", "/v1/ops/pull?limit=5", Some(&h.peer), b)).await;
        refused_because(&(s, e), "revoked");
    }
    assert_eq!(send_raw(&h, from("GET", "/v1/ops/pull", Some(&h.admin), b)).await.0, StatusCode::OK);
}

fn entries(list: &Value) -> Vec<Value> {
    list["entries"].as_array().unwrap().clone()
}

#[tokio::test]
async fn every_admin_and_supervisor_action_is_audited_append_only_and_scoped() {
    let h = Harness::new();
    // Tokens.
    let (sup_id, _) = create(&h, json!({"role": "supervisor", "region": "jateng", "label": "Bu Sri"})).await;
    h.call("POST", &format!("/v1/admin/tokens/{sup_id}/rotate"), Some(&h.admin), None).await;
    let (peer_id, _) = create(&h, json!({"role": "peer", "region": "sulbar"})).await;
    h.call("POST", &format!("/v1/admin/tokens/{peer_id}/revoke"), Some(&h.admin), None).await;
    // Administration.
    let mut ikm: Value = serde_json::from_str(sidak_core::instrument::builtin_text("ikm-2017").unwrap()).unwrap();
    ikm["version"] = json!(2);
    assert_eq!(h.call("POST", "/v1/admin/instruments", Some(&h.admin), Some(ikm)).await.0, StatusCode::OK);
    let csv = Request::builder()
        .method("POST")
        .uri("/v1/admin/registry")
        .header("authorization", format!("Bearer {}", h.admin))
        .header("content-type", "text/csv")
        .body(Body::from(REGISTRY))
        .unwrap();
    assert_eq!(h.send(csv).await.0, StatusCode::OK);
    let assignment = json!({"assessor": "a9", "institution": "kota-sukamaju", "unit": "dpmptsp", "instrument": "penilaian-2023@1", "mode": "covert"});
    assert_eq!(h.call("POST", "/v1/admin/assignments", Some(&h.admin), Some(assignment)).await.0, StatusCode::OK);
    assert_eq!(h.call("POST", "/v1/admin/recompute", Some(&h.admin), None).await.0, StatusCode::OK);
    // Review in jateng: a correction withdrawn, a conflict resolved.
    let mut dev = Device::new(80, "a1", "jateng");
    let visit = dev.visit(&h, "kota-sukamaju", "disdukcapil", "ktp-el", 3);
    let mut twin = Device::new(81, "a1", "jateng");
    let seen = dev.ops.iter().rev().find(|o| o.field == "answer.proses.moto").unwrap().op_ref();
    dev.write(visit, "answer.proses.moto", json!(1), Some(seen));
    twin.write(visit, "answer.proses.moto", json!(2), Some(seen));
    for d in [&dev, &twin] {
        assert_eq!(h.call("POST", "/v1/ops/push", Some(&h.assessor), Some(d.batch(0))).await.0, StatusCode::OK);
    }
    let body = json!({"target": {"kind": "visit", "id": visit.id}, "field": "answer.proses.prosedur", "value": 2, "reason": "the photo"});
    let (s, made) = h.call("POST", "/v1/review/corrections", Some(&h.supervisor), Some(body.clone())).await;
    assert_eq!(s, StatusCode::CREATED, "{made}");
    let correction = made["id"].as_str().unwrap().to_owned();
    let withdraw = format!("/v1/review/corrections/{correction}/withdraw");
    let (s, _) = h.call("POST", &withdraw, Some(&h.supervisor), Some(json!({"reason": "checked again"}))).await;
    assert_eq!(s, StatusCode::OK);
    let resolve = json!({"entity": visit.id, "field": "answer.proses.moto", "value": 2, "reason": "called the office"});
    assert_eq!(
        h.call("POST", "/v1/review/conflicts/resolve", Some(&h.supervisor), Some(resolve)).await.0,
        StatusCode::CREATED
    );
    // A refusal after the role check is recorded with its code; a role refusal is not
    // an action.
    let (s, _) = h.call("POST", "/v1/review/corrections", Some(&h.other_supervisor), Some(body.clone())).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(h.call("POST", "/v1/admin/recompute", Some(&h.supervisor), None).await.0, StatusCode::FORBIDDEN);
    let ghost = EntityRef { kind: EntityKind::Visit, id: EntityId(uuid::Uuid::now_v7()) };
    let missing = json!({"target": ghost, "field": "answer.proses.moto", "value": 1, "reason": "x"});
    assert_eq!(h.call("POST", "/v1/review/corrections", Some(&h.admin), Some(missing)).await.0, StatusCode::NOT_FOUND);

    let (s, all) = h.call("GET", "/v1/admin/audit", Some(&h.admin), None).await;
    assert_eq!(s, StatusCode::OK, "{all}");
    let all = entries(&all);
    let kinds: Vec<(&str, &str, &str)> = all
        .iter()
        .map(|e| (e["kind"].as_str().unwrap(), e["who"]["role"].as_str().unwrap(), e["result"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("token.create", "admin", "ok"),
            ("token.rotate", "admin", "ok"),
            ("token.create", "admin", "ok"),
            ("token.revoke", "admin", "ok"),
            ("instrument.publish", "admin", "ok"),
            ("registry.import", "admin", "ok"),
            ("assignment.create", "admin", "ok"),
            ("recompute", "admin", "ok"),
            ("correction.create", "supervisor", "ok"),
            ("correction.withdraw", "supervisor", "ok"),
            ("conflict.resolve", "supervisor", "ok"),
            ("correction.create", "supervisor", "403 scope_forbidden"),
            ("correction.create", "admin", "404 not_found"),
        ]
    );
    let ids: Vec<i64> = all.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    let first = &all[0];
    assert_eq!(
        (&first["who"]["token"], &first["via"], &first["action"], &first["region"], first["at"].as_i64()),
        (&json!(id_of(&h, &h.admin)), &json!("http"), &json!("POST /v1/admin/tokens"), &json!("jateng"), Some(T0))
    );
    assert!(
        first["summary"]
            .as_str()
            .unwrap()
            .contains(&format!("created {sup_id} (supervisor, region jateng, label \"Bu Sri\")")),
        "{first}"
    );
    assert!(all[3]["summary"].as_str().unwrap().contains(&format!("revoked {peer_id}")));
    assert_eq!(all[3]["region"], "sulbar");
    assert!(all[8]["summary"].as_str().unwrap().contains(&correction), "{}", all[8]);
    assert_eq!((&all[8]["who"]["token"], &all[8]["region"]), (&json!(id_of(&h, &h.supervisor)), &json!("jateng")));
    assert!(all[11]["summary"].as_str().unwrap().contains("refused: "), "{}", all[11]);
    assert_eq!(all[11]["region"], "sulbar", "a refusal concerns the actor's own region");

    // A supervisor sees its region's entries only; another region's sees its own.
    let (s, jateng) = h.call("GET", "/v1/admin/audit", Some(&h.supervisor), None).await;
    assert_eq!(s, StatusCode::OK);
    let jateng = entries(&jateng);
    assert!(jateng.iter().all(|e| e["region"] == "jateng"), "{jateng:?}");
    let kinds: Vec<&str> = jateng.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "token.create",
            "token.rotate",
            "assignment.create",
            "correction.create",
            "correction.withdraw",
            "conflict.resolve"
        ]
    );
    let (_, sulbar) = h.call("GET", "/v1/admin/audit", Some(&h.other_supervisor), None).await;
    let kinds: Vec<(String, String)> = entries(&sulbar)
        .iter()
        .map(|e| (e["kind"].as_str().unwrap().into(), e["result"].as_str().unwrap().into()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("token.create".to_owned(), "ok".to_owned()),
            ("token.revoke".into(), "ok".into()),
            ("correction.create".into(), "403 scope_forbidden".into())
        ]
    );
    let (s, e) = h.call("GET", "/v1/admin/audit?region=sulbar", Some(&h.supervisor), None).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::FORBIDDEN, Some("scope_forbidden")));
    let (s, e) = h.call("GET", "/v1/admin/audit", Some(&h.assessor), None).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::FORBIDDEN, Some("role_forbidden")));
    // Paging.
    let (_, page) = h.call("GET", "/v1/admin/audit?limit=5", Some(&h.admin), None).await;
    assert_eq!((entries(&page).len(), &page["next"]), (5, &json!(ids[4])));
    let (_, rest) = h.call("GET", &format!("/v1/admin/audit?since={}&limit=1000", ids[4]), Some(&h.admin), None).await;
    assert_eq!(entries(&rest), all[5..].to_vec());
    assert_eq!(rest["next"], json!(ids[ids.len() - 1]));
    let (_, sulbar_only) = h.call("GET", "/v1/admin/audit?region=sulbar", Some(&h.admin), None).await;
    assert_eq!(entries(&sulbar_only).len(), 3);
    for bad in ["since=-1", "limit=0", "limit=1001", "since=x", "after=3"] {
        let (s, e) = h.call("GET", &format!("/v1/admin/audit?{bad}"), Some(&h.admin), None).await;
        assert_eq!((s, e["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_query")), "{bad}");
    }

    // The log cannot be changed or emptied, not even by SQL on the store.
    for sql in [
        "UPDATE audit SET summary = 'nothing happened' WHERE id = 1",
        "UPDATE audit SET result = 'ok'",
        "DELETE FROM audit WHERE id = 1",
        "DELETE FROM audit",
    ] {
        let refused = h
            .state
            .db()
            .write_blocking(|tx| tx.execute(sql, []).map_err(sidak_server::error::ApiError::from))
            .map_err(|e| e.to_string());
        assert!(refused.is_err(), "{sql} was allowed");
    }
    let raw: String = h
        .state
        .db()
        .write_blocking(|tx| {
            let e = tx.execute("DELETE FROM audit", []).unwrap_err();
            Ok::<_, sidak_server::error::ApiError>(e.to_string())
        })
        .unwrap();
    assert!(raw.contains("append-only"), "{raw}");
    let (_, after) = h.call("GET", "/v1/admin/audit", Some(&h.admin), None).await;
    assert_eq!(entries(&after), all, "every entry is as it was");
}
