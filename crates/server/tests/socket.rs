//! The server on a real socket (127.0.0.1:0): requests over TCP, gzip responses, and a
//! graceful shutdown that lets an in-flight push finish.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_on_a_socket_and_finishes_in_flight_pushes_on_shutdown() {
    let h = Harness::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(sidak_server::api::serve(listener, h.state.clone(), async move {
        let _ = stopped.await;
    }));
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

    // Hold the store's writer so the push below waits inside the server, then ask the
    // server to stop while it is in flight.
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
        async move { client.post(format!("{base}/v1/ops/push")).bearer_auth(token).json(&body).send().await }
    });
    // The push is in flight once its handler waits for the (held) writer.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while h.state.db().queued_writers() == 0 {
        assert!(std::time::Instant::now() < deadline, "the push never reached the store");
        tokio::task::yield_now().await;
    }
    stop.send(()).unwrap();
    release.0.send(()).unwrap();
    holder.join().unwrap();
    let response = push.await.unwrap().expect("the in-flight push is answered");
    assert_eq!(response.status(), 200);
    let r: serde_json::Value = response.json().await.unwrap();
    assert_eq!(r["origins"][0]["held"]["seq"].as_u64(), Some(dev.seq));
    server.await.unwrap().unwrap();
    assert!(h.state.shutting_down());
}
