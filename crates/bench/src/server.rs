//! A real sidak-server in this process on 127.0.0.1:0 (`sidak_server::api::serve`),
//! set up as an office sets one up: registry CSV, assignments, tokens.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use sidak_server::admin;
use sidak_server::auth::{create_token, NewToken, Role};
use sidak_server::error::ApiError;
use sidak_server::state::{system_clock, AppState};

/// A server running on its own runtime (two worker threads, as on a 2-core machine).
pub struct BenchServer {
    /// Its state (the store, open for the benchmark's direct measurements).
    pub state: AppState,
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Now, ms since 1970.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl BenchServer {
    /// Opens a store in `dir` and serves it.
    pub fn start(dir: &Path) -> Result<BenchServer> {
        let state = AppState::open(dir, system_clock()).map_err(|e| anyhow!("store: {e}"))?;
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serve_state = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build();
            let Ok(rt) = rt else { return };
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::bind("127.0.0.1:0").await else { return };
                let _ = addr_tx.send(listener.local_addr());
                let _ = sidak_server::api::serve(listener, serve_state, async move {
                    let _ = stopped.await;
                })
                .await;
            });
        });
        let addr = addr_rx.recv().context("the server did not start")??;
        Ok(BenchServer { state, addr, stop: Some(stop), thread: Some(thread) })
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Makes a token.
    pub fn token(&self, role: Role, region: Option<&str>, assessor: Option<&str>) -> Result<String> {
        let new = NewToken {
            role,
            region: region.map(str::to_owned),
            assessor: assessor.map(str::to_owned),
            label: None,
            device_keys: Vec::new(),
        };
        let (_, secret) = self
            .state
            .db()
            .write_blocking(|tx| create_token(tx, &new, now_ms()).map_err(|e| ApiError::invalid_body(e.to_string())))
            .map_err(|e| anyhow!("token: {e}"))?;
        Ok(secret)
    }

    /// Imports a registry CSV and creates assignments, as `sidak-server registry
    /// import` and `assignment create` do; returns the time it took.
    pub fn set_up(&self, csv: &str, assignments: &[admin::NewAssignment]) -> Result<Duration> {
        let started = Instant::now();
        let rows = admin::parse_registry(csv).map_err(|e| anyhow!("registry: {e}"))?;
        let instruments = self.state.instruments();
        self.state
            .db()
            .write_blocking(|tx| {
                let (_, dirty) = admin::import_registry(tx, &instruments, &rows, now_ms())?;
                for a in assignments {
                    admin::create_assignment(tx, &instruments, a, now_ms())?;
                }
                for i in &dirty {
                    sidak_server::results::recompute(tx, &instruments, i)?;
                }
                Ok::<_, ApiError>(())
            })
            .map_err(|e| anyhow!("set-up: {e}"))?;
        Ok(started.elapsed())
    }

    /// Registry ids as this server assigned them.
    pub fn registry_ids(&self) -> Result<crate::season::RegistryIds> {
        self.state
            .db()
            .read_blocking(|tx| crate::season::RegistryIds::read(tx).map_err(ApiError::from))
            .map_err(|e| anyhow!("registry ids: {e}"))
    }
}

impl Drop for BenchServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
