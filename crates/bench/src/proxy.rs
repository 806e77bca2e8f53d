//! A small counting TCP proxy on loopback: counts the bytes each way between a client
//! and a server. In identity mode it also takes gzip out of the exchange, so that the
//! server side of the proxy carries what the same sync costs without compression:
//! gzip request bodies are inflated (and their length fixed) and `Accept-Encoding` is
//! dropped, so the server answers uncompressed. The counts are taken on the server
//! side. It frames HTTP/1.1 requests with a `Content-Length` (what the field client
//! sends); in plain mode it understands nothing and copies.

use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A running proxy.
pub struct CountingProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    up: Arc<AtomicU64>,
    down: Arc<AtomicU64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CountingProxy {
    /// Starts a proxy in front of `target`.
    pub fn start(target: SocketAddr, identity: bool) -> Result<CountingProxy> {
        let (up, down) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let (u, d) = (up.clone(), down.clone());
        let thread = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async move {
                let Ok(listener) = TcpListener::bind("127.0.0.1:0").await else { return };
                let _ = addr_tx.send(listener.local_addr());
                loop {
                    tokio::select! {
                        _ = &mut stopped => return,
                        accepted = listener.accept() => {
                            let Ok((client, _)) = accepted else { continue };
                            let (u, d) = (u.clone(), d.clone());
                            tokio::spawn(async move {
                                if let Err(e) = relay(client, target, identity, u, d).await {
                                    eprintln!("proxy: {e:#}");
                                }
                            });
                        }
                    }
                }
            });
        });
        let addr = addr_rx.recv().context("the proxy did not start")??;
        Ok(CountingProxy { addr, up, down, stop: Some(stop), thread: Some(thread) })
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Bytes sent to the server and received from it so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.up.load(Ordering::SeqCst), self.down.load(Ordering::SeqCst))
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn relay(
    client: TcpStream,
    target: SocketAddr,
    identity: bool,
    up: Arc<AtomicU64>,
    down: Arc<AtomicU64>,
) -> Result<()> {
    client.set_nodelay(true)?;
    let server = TcpStream::connect(target).await?;
    server.set_nodelay(true)?;
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let downstream = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = sr.read(&mut buf).await?;
            if n == 0 {
                let _ = cw.shutdown().await;
                return Ok::<_, std::io::Error>(());
            }
            down.fetch_add(n as u64, Ordering::SeqCst);
            cw.write_all(&buf[..n]).await?;
        }
    });
    let upstream = async {
        if !identity {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = cr.read(&mut buf).await?;
                if n == 0 {
                    let _ = sw.shutdown().await;
                    return Ok(());
                }
                up.fetch_add(n as u64, Ordering::SeqCst);
                sw.write_all(&buf[..n]).await?;
            }
        }
        let mut pending: Vec<u8> = Vec::new();
        loop {
            let Some(request) = read_request(&mut cr, &mut pending).await? else {
                let _ = sw.shutdown().await;
                return Ok::<_, anyhow::Error>(());
            };
            let plain = without_gzip(&request)?;
            up.fetch_add(plain.len() as u64, Ordering::SeqCst);
            sw.write_all(&plain).await?;
        }
    };
    let result = upstream.await;
    let _ = downstream.await;
    result
}

/// Reads one whole request (head and `Content-Length` body); None at a clean end.
async fn read_request(r: &mut tokio::net::tcp::OwnedReadHalf, pending: &mut Vec<u8>) -> Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; 64 * 1024];
    let head_end = loop {
        if let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = r.read(&mut buf).await?;
        if n == 0 {
            if pending.is_empty() {
                return Ok(None);
            }
            bail!("the client closed in the middle of a request head");
        }
        pending.extend_from_slice(&buf[..n]);
    };
    let head = std::str::from_utf8(&pending[..head_end]).context("request head is not text")?;
    let mut length = 0usize;
    for line in head.split("\r\n") {
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().context("content-length")?;
        }
        if lower.starts_with("transfer-encoding:") {
            bail!("the proxy frames only Content-Length bodies");
        }
    }
    while pending.len() < head_end + length {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            bail!("the client closed in the middle of a request body");
        }
        pending.extend_from_slice(&buf[..n]);
    }
    let request = pending[..head_end + length].to_vec();
    pending.drain(..head_end + length);
    Ok(Some(request))
}

/// The same request without gzip: body inflated, `Accept-Encoding` dropped.
fn without_gzip(request: &[u8]) -> Result<Vec<u8>> {
    let head_end = request.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| anyhow!("no head"))? + 4;
    let head = std::str::from_utf8(&request[..head_end - 4])?;
    let mut body = request[head_end..].to_vec();
    let gzipped = head.lines().any(|l| l.to_ascii_lowercase().replace(' ', "") == "content-encoding:gzip");
    if gzipped {
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut plain)?;
        body = plain;
    }
    let mut out = String::new();
    for line in head.split("\r\n") {
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("accept-encoding:") || (gzipped && lower.starts_with("content-encoding:")) {
            continue;
        }
        if lower.starts_with("content-length:") {
            out.push_str(&format!("content-length: {}\r\n", body.len()));
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&body);
    Ok(bytes)
}

/// The time to send `up` bytes one way and `down` bytes back over a loopback TCP
/// connection, raw (best of three).
pub fn raw_loopback(up: u64, down: u64) -> Result<std::time::Duration> {
    raw_loopback_into(up, down, None)
}

/// [`raw_loopback`], the receiver also writing what it receives to the file `sink` and
/// syncing it to disk once, at the end, before it answers: the least any server that
/// acknowledges only durable bytes must do with an upload. The writes go through
/// `tokio::fs` (a blocking thread), so that they overlap the sending instead of
/// stalling the one thread that also drives the client.
pub fn raw_loopback_into(up: u64, down: u64, sink: Option<&std::path::Path>) -> Result<std::time::Duration> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let mut best = std::time::Duration::MAX;
        for _ in 0..3 {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let mut file = sink.map(std::fs::File::create).transpose()?.map(tokio::fs::File::from_std);
            let started = std::time::Instant::now();
            let echo = tokio::spawn(async move {
                let (mut s, _) = listener.accept().await?;
                let mut buf = vec![0u8; 256 * 1024];
                let mut got = 0u64;
                while got < up {
                    let n = s.read(&mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    if let Some(f) = file.as_mut() {
                        f.write_all(&buf[..n]).await?;
                    }
                    got += n as u64;
                }
                if let Some(f) = file.as_mut() {
                    f.flush().await?;
                    f.sync_data().await?;
                }
                let chunk = vec![7u8; 256 * 1024];
                let mut sent = 0u64;
                while sent < down {
                    let n = (down - sent).min(chunk.len() as u64) as usize;
                    s.write_all(&chunk[..n]).await?;
                    sent += n as u64;
                }
                s.shutdown().await?;
                Ok::<_, std::io::Error>(())
            });
            let mut c = TcpStream::connect(addr).await?;
            let chunk = vec![9u8; 256 * 1024];
            let mut sent = 0u64;
            while sent < up {
                let n = (up - sent).min(chunk.len() as u64) as usize;
                c.write_all(&chunk[..n]).await?;
                sent += n as u64;
            }
            let mut sink = Vec::new();
            c.read_to_end(&mut sink).await?;
            echo.await??;
            best = best.min(started.elapsed());
        }
        Ok(best)
    })
}
