//! The server on a real socket (127.0.0.1:0): requests over TCP, gzip responses, a
//! graceful shutdown that lets an in-flight push finish, and the failed-auth brake
//! keyed on the peer's address.

mod common;

use std::time::Duration;

use common::*;

/// Serves the harness's store on a real socket at 127.0.0.1:0; sending on the
/// returned channel shuts the server down gracefully.
async fn serve(
    h: &Harness,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<std::io::Result<()>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(sidak_server::api::serve(listener, h.state.clone(), async move {
        let _ = stopped.await;
    }));
    (addr, stop, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_on_a_socket_and_finishes_in_flight_pushes_on_shutdown() {
    let h = Harness::new();
    let (addr, stop, server) = serve(&h).await;
    let client = reqwest::Client::builder().gzip(true).build().unwrap();
    let base = format!("http://{addr}");
    let health: serde_json::Value = client.get(format!("{base}/v1/health")).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok");
    let response = client
        .get(format!("{base}/v1/instruments"))
        .bearer_auth(&h.admin)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let list: serde_json::Value = response.json().await.unwrap();
    assert_eq!(list["instruments"].as_array().unwrap().len(), 4);

    // Hold the store's writer so the push below waits inside the server.
    let mut dev = Device::new(90, "a1", "jateng");
    dev.visit(&h, "kota-sukamaju", "disdukcapil", "ktp-el", 3);
    let (locked, release) = (std::sync::mpsc::channel::<()>(), std::sync::mpsc::channel::<()>());
    let db = h.state.db().clone();
    let holder = std::thread::spawn(move || {
        db.write_blocking(|_tx| {
            locked.0.send(()).unwrap();
            release.1.recv().unwrap();
            Ok::<_, sidak_server::error::ApiError>(())
        })
        .unwrap();
    });
    locked.1.recv().unwrap();
    let body = dev.batch(0);
    let push = tokio::spawn({
        let client = client.clone();
        let token = h.assessor.clone();
        let base = base.clone();
        async move { client.post(format!("{base}/v1/ops/push")).bearer_auth(token).json(&body).send().await }
    });
    // A hang guard, not a timing assertion: each wait below ends as soon as its
    // condition holds.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let wait = |what: &str| assert!(std::time::Instant::now() < deadline, "{what} never happened");
    // The push is in flight once its handler waits for the (held) writer.
    while h.state.db().queued_writers() == 0 {
        wait("the push reaching the store");
        tokio::task::yield_now().await;
    }

    // Shutdown begins while the push is in flight...
    stop.send(()).unwrap();
    while !h.state.shutting_down() {
        wait("the start of shutdown");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // ... the server takes no new connection ...
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        wait("the listener closing");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!push.is_finished(), "the push is still waiting for the store");
    assert!(!server.is_finished(), "the server waits for the push");
    let stored = |h: &Harness| {
        let origin = dev.origin.to_string();
        h.state
            .db()
            .read_blocking(move |tx| {
                tx.query_row("SELECT COUNT(*) FROM ops WHERE origin = ?1", [origin], |r| r.get::<_, i64>(0))
                    .map_err(sidak_server::error::ApiError::from)
            })
            .unwrap()
    };
    assert_eq!(stored(&h), 0, "nothing of the push is stored yet");

    // ... and when the store is free again, the push completes and is answered.
    release.0.send(()).unwrap();
    holder.join().unwrap();
    let response = push.await.unwrap().expect("the in-flight push is answered");
    assert_eq!(response.status(), 200);
    let r: serde_json::Value = response.json().await.unwrap();
    assert_eq!(r["origins"][0]["held"]["seq"].as_u64(), Some(dev.seq));
    assert_eq!(r["origins"][0]["stored"].as_u64(), Some(dev.seq));
    server.await.unwrap().unwrap();
    assert_eq!(stored(&h), dev.seq as i64, "what was acknowledged is in the store");
    // Durable: a store opened afresh from the files holds it too.
    drop(client);
    let reopened = sidak_server::state::AppState::open(h._dir.path(), sidak_server::state::system_clock()).unwrap();
    let held = reopened
        .db()
        .read_blocking(|tx| {
            tx.query_row("SELECT head_seq FROM origins WHERE origin = ?1", [dev.origin.to_string()], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(sidak_server::error::ApiError::from)
        })
        .unwrap();
    assert_eq!(held, dev.seq as i64);
    let refused = reqwest::Client::new().get(format!("http://{addr}/v1/health")).send().await;
    assert!(refused.is_err_and(|e| e.is_connect()), "a stopped server takes no connection");
}

/// Over a real socket the failed-auth brake keys on the peer's address: 127.0.0.1 is
/// locked out after ten unknown tokens (429 with Retry-After), while a request of the
/// same store without a connection — another source — still gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_failed_auth_brake_keys_on_the_peer_address() {
    let h = Harness::new();
    let (addr, stop, server) = serve(&h).await;
    let client = reqwest::Client::new();
    let whoami = format!("http://{addr}/v1/whoami");
    for i in 0..10 {
        let r = client.get(&whoami).bearer_auth(format!("sdk_guess{i}")).send().await.unwrap();
        assert_eq!(r.status(), 401);
    }
    let r = client.get(&whoami).bearer_auth(&h.admin).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "60");
    let e: serde_json::Value = r.json().await.unwrap();
    assert_eq!(e["code"], "too_many_failures");
    let (s, _) = h.call("GET", "/v1/whoami", Some(&h.admin), None).await;
    assert_eq!(s, axum::http::StatusCode::OK, "the lock is on 127.0.0.1, not on every caller");
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
