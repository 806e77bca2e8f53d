//! A fault-injecting TCP proxy for HTTP/1.1 on loopback.
//!
//! The proxy sits between a client (e.g. the field client's blocking reqwest) and a server. It
//! understands just enough HTTP/1.1 framing to split a keep-alive connection into request/response
//! exchanges, and decides per exchange — with a seeded RNG shared by all connections — whether to
//! inject one fault:
//!
//! * drop the request part-way (the server sees a truncated request, the client an EOF),
//! * drop the response part-way (the server processed the request, the client sees an EOF),
//! * truncate the response body and close cleanly,
//! * delay the response,
//! * duplicate the request (the server processes it twice, the client sees one response).
//!
//! Given the same seed and the same order of exchanges, the same faults are injected.
//!
//! Messages are buffered whole before they are forwarded (which is what makes the faults
//! well-defined); anything the proxy cannot frame (malformed heads, upgrades, `CONNECT`,
//! `Expect: 100-continue`, unknown transfer codings) is passed through untouched, without faults,
//! for the rest of that connection.
//!
//! Set the environment variable `SIDAK_PROXY_DEBUG` to get a trace of the decisions on stderr.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Longest request or response head (start line + headers) the proxy will frame.
const MAX_HEAD: usize = 64 * 1024;
/// Longest chunk-size or trailer line the proxy will frame.
const MAX_LINE: usize = 8 * 1024;
/// How long the discarded first copy of a duplicated request may take.
const DUPLICATE_TIMEOUT: Duration = Duration::from_secs(30);
/// At most this many decisions are kept for [`FaultProxy::decisions`].
const MAX_LOG: usize = 1 << 20;

fn debug_enabled() -> bool {
    static DEBUG: OnceLock<bool> = OnceLock::new();
    *DEBUG.get_or_init(|| std::env::var_os("SIDAK_PROXY_DEBUG").is_some_and(|v| !v.is_empty() && v != "0"))
}

macro_rules! debug {
    ($($arg:tt)*) => {
        if debug_enabled() {
            eprintln!("[sidak-proxy] {}", format_args!($($arg)*));
        }
    };
}

/// A fault schedule: which faults to inject, chosen by a seeded RNG per request exchange.
///
/// The probabilities are per exchange and at most one fault is injected per exchange. If they
/// add up to more than 1 they are scaled down proportionally (every exchange then gets a fault).
#[derive(Clone, Debug)]
pub struct Faults {
    pub seed: u64,
    /// Close the connection after forwarding a random prefix of the request bytes (mid-request).
    pub drop_request: f64,
    /// Forward the whole request, then close after forwarding a random prefix of the response
    /// (anywhere in the head or body).
    pub drop_response: f64,
    /// Forward the whole response head and a random strict prefix of its body, then close cleanly
    /// (FIN). With read-until-close framing the client cannot tell the body is short.
    pub truncate_response: f64,
    /// Delay the response by a random `0..max_delay` (after the server answered).
    pub delay: f64,
    pub max_delay: Duration,
    /// Send the request to the server twice: the first copy (on a fresh upstream connection) has
    /// its response discarded, the client gets the second's, so the server processes it twice.
    pub duplicate_request: f64,
}

impl Faults {
    /// No faults at all: a transparent proxy.
    pub fn none() -> Faults {
        Faults {
            seed: 0,
            drop_request: 0.0,
            drop_response: 0.0,
            truncate_response: 0.0,
            delay: 0.0,
            max_delay: Duration::ZERO,
            duplicate_request: 0.0,
        }
    }

    /// A mixed schedule derived from `seed`: each probability in `0.05..0.3` (redrawn until they
    /// add up to at most 0.85, so at least 15% of exchanges are clean), `max_delay` in `0..300ms`.
    pub fn random(seed: u64) -> Faults {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed_fa17_5eed_fa17);
        loop {
            let p: [f64; 5] = std::array::from_fn(|_| rng.gen_range(0.05..0.3));
            if p.iter().sum::<f64>() <= 0.85 {
                return Faults {
                    seed,
                    drop_request: p[0],
                    drop_response: p[1],
                    truncate_response: p[2],
                    delay: p[3],
                    max_delay: Duration::from_millis(rng.gen_range(0..300)),
                    duplicate_request: p[4],
                };
            }
        }
    }
}

/// Which fault was decided for one request exchange (see [`FaultProxy::decisions`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultKind {
    None,
    DropRequest,
    DropResponse,
    TruncateResponse,
    Delay,
    DuplicateRequest,
}

/// Counts of connections accepted and faults actually injected.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyStats {
    pub connections: u64,
    pub dropped_requests: u64,
    pub dropped_responses: u64,
    pub truncated_responses: u64,
    pub delayed: u64,
    pub duplicated: u64,
    /// Requests answered by the proxy itself (see [`FaultProxy::refuse`]).
    pub refused: u64,
    /// The most requests matching [`FaultProxy::hold_until_company`]'s needle that were
    /// in the proxy at once.
    pub most_at_once: u64,
}

/// A decided fault with its parameters. `frac` in `[0, 1)` picks the cut position.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Decision {
    None,
    DropRequest { frac: f64 },
    DropResponse { frac: f64 },
    Truncate { frac: f64 },
    Delay(Duration),
    Duplicate,
}

impl Decision {
    fn kind(self) -> FaultKind {
        match self {
            Decision::None => FaultKind::None,
            Decision::DropRequest { .. } => FaultKind::DropRequest,
            Decision::DropResponse { .. } => FaultKind::DropResponse,
            Decision::Truncate { .. } => FaultKind::TruncateResponse,
            Decision::Delay(_) => FaultKind::Delay,
            Decision::Duplicate => FaultKind::DuplicateRequest,
        }
    }
}

fn clamp_p(p: f64) -> f64 {
    if p.is_nan() {
        0.0
    } else {
        p.clamp(0.0, 1.0)
    }
}

/// Draws one decision. Always consumes exactly two values from `rng`, so the sequence of
/// decisions depends only on the seed and the number of exchanges.
fn decide(faults: &Faults, rng: &mut StdRng) -> Decision {
    let r: f64 = rng.gen();
    let u: f64 = rng.gen();
    let p = [
        clamp_p(faults.drop_request),
        clamp_p(faults.drop_response),
        clamp_p(faults.truncate_response),
        clamp_p(faults.delay),
        clamp_p(faults.duplicate_request),
    ];
    let total: f64 = p.iter().sum();
    let scale = if total > 1.0 { 1.0 / total } else { 1.0 };
    let mut acc = 0.0;
    for (i, pi) in p.iter().enumerate() {
        if *pi <= 0.0 {
            continue;
        }
        acc += pi * scale;
        if r < acc {
            return match i {
                0 => Decision::DropRequest { frac: u },
                1 => Decision::DropResponse { frac: u },
                2 => Decision::Truncate { frac: u },
                3 => Decision::Delay(faults.max_delay.mul_f64(u)),
                _ => Decision::Duplicate,
            };
        }
    }
    Decision::None
}

/// `floor(frac * len)`, always `< len` when `len > 0`.
fn cut(frac: f64, len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    ((frac * len as f64) as usize).min(len - 1)
}

struct State {
    faults: Faults,
    rng: StdRng,
    stats: ProxyStats,
    log: Vec<FaultKind>,
    /// Requests whose start line contains the first string get `400` and the second as
    /// their JSON body, without reaching the server.
    refusal: Option<(String, String)>,
    /// See [`FaultProxy::hold_until_company`].
    company: Option<Company>,
}

/// Requests whose start line contains `needle`: how many are in the proxy now, and how
/// long the first waits for another.
struct Company {
    needle: String,
    wait: Duration,
    now: u64,
    met: bool,
}

struct Shared {
    upstream: SocketAddr,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn decide(&self) -> Decision {
        let mut st = self.lock();
        let st = &mut *st;
        let d = decide(&st.faults, &mut st.rng);
        if st.log.len() < MAX_LOG {
            st.log.push(d.kind());
        }
        d
    }

    fn count(&self, f: impl FnOnce(&mut ProxyStats)) {
        f(&mut self.lock().stats);
    }
}

/// A fault-injecting proxy listening on `127.0.0.1:<ephemeral>`.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy on 127.0.0.1:0 forwarding to `upstream`.
    ///
    /// Runs on the current tokio runtime if there is a multi-threaded one; otherwise (no runtime,
    /// or a current-thread runtime, which a blocking test thread would starve) on its own
    /// background thread with its own runtime.
    pub fn start(upstream: SocketAddr, faults: Faults) -> std::io::Result<FaultProxy> {
        let listener = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            state: Mutex::new(State {
                rng: StdRng::seed_from_u64(faults.seed),
                faults,
                stats: ProxyStats::default(),
                log: Vec::new(),
                refusal: None,
                company: None,
            }),
        });
        let (tx, rx) = watch::channel(false);

        let handle = tokio::runtime::Handle::try_current()
            .ok()
            .filter(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let thread = match handle {
            Some(handle) => {
                let listener = {
                    let _guard = handle.enter();
                    TcpListener::from_std(listener)?
                };
                handle.spawn(accept_loop(listener, shared.clone(), rx));
                None
            }
            None => {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                let listener = {
                    let _guard = rt.enter();
                    TcpListener::from_std(listener)?
                };
                let shared = shared.clone();
                let thread =
                    std::thread::Builder::new().name(format!("sidak-proxy-{}", addr.port())).spawn(move || {
                        rt.block_on(accept_loop(listener, shared, rx));
                        // Dropping the runtime drops every connection task (and its sockets).
                        drop(rt);
                    })?;
                Some(thread)
            }
        };
        debug!("listening on {addr}, forwarding to {upstream}");
        Ok(FaultProxy { addr, shared, shutdown: tx, thread })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replaces the schedule (and re-seeds the RNG from `faults.seed`). Applies to every exchange
    /// that starts afterwards, including further requests on already open keep-alive connections.
    pub fn set_faults(&self, faults: Faults) {
        let mut st = self.shared.lock();
        st.rng = StdRng::seed_from_u64(faults.seed);
        st.faults = faults;
    }

    /// From now on, answers every request whose start line (`GET /path?query HTTP/1.1`)
    /// contains `needle` with `400 Bad Request` and the JSON `body` itself, without
    /// forwarding it: a server that refuses something, such as an older one that does not
    /// know a query parameter.
    pub fn refuse(&self, needle: &str, body: &str) {
        self.shared.lock().refusal = Some((needle.to_owned(), body.to_owned()));
    }

    /// From now on, holds a request whose start line contains `needle` until another
    /// such request is in the proxy too, or `wait` has passed, whichever comes first; once
    /// two were in at once, none is held. [`ProxyStats::most_at_once`] counts the most
    /// that were in at once. A client that sends such requests one at a time is held
    /// `wait` once and shows 1.
    pub fn hold_until_company(&self, needle: &str, wait: Duration) {
        self.shared.lock().company = Some(Company { needle: needle.to_owned(), wait, now: 0, met: false });
    }

    /// Connections accepted and faults injected so far.
    pub fn stats(&self) -> ProxyStats {
        self.shared.lock().stats.clone()
    }

    /// The fault decided for each request exchange so far, in order (including `FaultKind::None`).
    /// A decided response fault is not injected (nor counted in [`stats`](Self::stats)) if the
    /// response could not be framed.
    pub fn decisions(&self) -> Vec<FaultKind> {
        self.shared.lock().log.clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Resolves once the proxy is told to stop (or its handle is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stopped(&mut shutdown) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    shared.count(|s| s.connections += 1);
                    debug!("accepted {peer}");
                    let shared = shared.clone();
                    let mut shutdown = shutdown.clone();
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = stopped(&mut shutdown) => {}
                            r = handle_conn(stream, &shared) => {
                                if let Err(e) = r {
                                    debug!("connection from {peer}: {e}");
                                }
                            }
                        }
                    });
                }
                Err(e) => {
                    debug!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
    debug!("stopped accepting");
}

/// A socket plus the bytes read from it but not yet consumed.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn new(stream: TcpStream) -> Conn {
        let _ = stream.set_nodelay(true);
        Conn { stream, buf: Vec::new() }
    }

    async fn connect(addr: SocketAddr) -> std::io::Result<Conn> {
        Ok(Conn::new(TcpStream::connect(addr).await?))
    }

    /// Reads some more bytes into `buf`; 0 means EOF. Cancel safe.
    async fn read_more(&mut self) -> std::io::Result<usize> {
        self.buf.reserve(16 * 1024);
        self.stream.read_buf(&mut self.buf).await
    }

    /// Removes and returns the first `n` buffered bytes.
    fn take(&mut self, n: usize) -> Vec<u8> {
        let rest = self.buf.split_off(n);
        std::mem::replace(&mut self.buf, rest)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A parsed message head. `start` is the three parts of the start line.
struct Head {
    start: [String; 3],
    headers: Vec<(String, String)>,
}

impl Head {
    fn parse(bytes: &[u8]) -> Option<Head> {
        let text = std::str::from_utf8(bytes).ok()?;
        let text = text.strip_suffix("\r\n\r\n")?;
        let mut lines = text.split("\r\n");
        let mut parts = lines.next()?.splitn(3, ' ');
        let start = [parts.next()?.to_owned(), parts.next()?.to_owned(), parts.next().unwrap_or("").to_owned()];
        let mut headers = Vec::new();
        for line in lines {
            if line.starts_with([' ', '\t']) {
                return None; // obsolete line folding
            }
            let (name, value) = line.split_once(':')?;
            if name.is_empty() || name.contains([' ', '\t']) {
                return None;
            }
            headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
        }
        Some(Head { start, headers })
    }

    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers.iter().filter(move |(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn has(&self, name: &str) -> bool {
        self.values(name).next().is_some()
    }

    /// Comma-separated list tokens of all `name` headers, lower-cased.
    fn tokens(&self, name: &str) -> Vec<String> {
        self.values(name)
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty())
            .collect()
    }

    /// `Ok(None)` if absent, `Err` if invalid or conflicting.
    fn content_length(&self) -> Result<Option<usize>, ()> {
        let mut len = None;
        for v in self.values("content-length").flat_map(|v| v.split(',')) {
            let v = v.trim();
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(());
            }
            let n: usize = v.parse().map_err(|_| ())?;
            if len.is_some_and(|l| l != n) {
                return Err(());
            }
            len = Some(n);
        }
        Ok(len)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Body {
    Length(usize),
    Chunked,
    UntilClose,
}

/// Incremental scanner for a chunked body.
#[derive(Default)]
struct ChunkScan {
    pos: usize,
    trailers: bool,
}

impl ChunkScan {
    /// Scans `buf` from the current position. `Ok(Some(end))` when the body (with trailers) is
    /// complete, `Ok(None)` if more bytes are needed, `Err` if malformed.
    fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>, ()> {
        loop {
            let rest = &buf[self.pos.min(buf.len())..];
            let Some(eol) = find(&rest[..rest.len().min(MAX_LINE + 2)], b"\r\n") else {
                return if rest.len() > MAX_LINE { Err(()) } else { Ok(None) };
            };
            let line = &rest[..eol];
            if self.trailers {
                self.pos += eol + 2;
                if line.is_empty() {
                    return Ok(Some(self.pos));
                }
                continue;
            }
            let size = line.split(|b| *b == b';').next().unwrap_or_default();
            let size = std::str::from_utf8(size).map_err(|_| ())?.trim_matches([' ', '\t']);
            if size.is_empty() || !size.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(());
            }
            let size = usize::from_str_radix(size, 16).map_err(|_| ())?;
            if size == 0 {
                self.pos += eol + 2;
                self.trailers = true;
                continue;
            }
            let need = eol.checked_add(2).and_then(|n| n.checked_add(size)).and_then(|n| n.checked_add(2)).ok_or(())?;
            if rest.len() < need {
                return Ok(None);
            }
            if &rest[need - 2..need] != b"\r\n" {
                return Err(());
            }
            self.pos += need;
        }
    }
}

/// Why a message could not be framed: the connection goes to pass-through mode.
#[derive(Debug)]
struct Unframed(&'static str);

/// Waits until `conn.buf[from..]` holds a complete head; returns its end (exclusive).
/// `Ok(None)` on EOF before any byte of it.
async fn read_head(conn: &mut Conn, from: usize) -> std::io::Result<Result<Option<usize>, Unframed>> {
    let mut searched = from;
    loop {
        if let Some(p) = find(&conn.buf[searched..], b"\r\n\r\n") {
            return Ok(Ok(Some(searched + p + 4)));
        }
        searched = conn.buf.len().saturating_sub(3).max(from);
        if conn.buf.len() - from > MAX_HEAD {
            return Ok(Err(Unframed("head too large")));
        }
        if conn.read_more().await? == 0 {
            return Ok(if conn.buf.len() == from { Ok(None) } else { Err(Unframed("EOF in head")) });
        }
    }
}

/// Waits until the body starting at `start` is complete; returns the message end (exclusive).
async fn read_body(conn: &mut Conn, start: usize, body: Body) -> std::io::Result<Result<usize, Unframed>> {
    match body {
        Body::Length(n) => {
            let Some(end) = start.checked_add(n) else { return Ok(Err(Unframed("length overflow"))) };
            while conn.buf.len() < end {
                if conn.read_more().await? == 0 {
                    return Ok(Err(Unframed("EOF in body")));
                }
            }
            Ok(Ok(end))
        }
        Body::Chunked => {
            let mut scan = ChunkScan { pos: start, trailers: false };
            loop {
                match scan.scan(&conn.buf) {
                    Ok(Some(end)) => return Ok(Ok(end)),
                    Ok(None) => {}
                    Err(()) => return Ok(Err(Unframed("malformed chunked body"))),
                }
                if conn.read_more().await? == 0 {
                    return Ok(Err(Unframed("EOF in chunked body")));
                }
            }
        }
        Body::UntilClose => {
            while conn.read_more().await? != 0 {}
            Ok(Ok(conn.buf.len()))
        }
    }
}

struct Request {
    bytes: Vec<u8>,
    method: String,
    close: bool,
}

enum ReqRead {
    /// The client closed the connection between requests.
    Eof,
    Unframed(Unframed),
    Request(Request),
}

/// Reads the next complete request from the client. While waiting for it, an idle upstream
/// connection that closes (or says anything) is discarded, to be reopened on demand.
async fn read_request(client: &mut Conn, up: &mut Option<Conn>) -> std::io::Result<ReqRead> {
    // Wait for the first bytes of the request, watching the idle upstream connection.
    loop {
        // Tolerate empty lines before a request (RFC 9112 §2.2).
        let blank = client.buf.iter().take_while(|b| **b == b'\r' || **b == b'\n').count();
        client.buf.drain(..blank);
        if !client.buf.is_empty() {
            break;
        }
        let n = match up {
            Some(u) => {
                let got = tokio::select! {
                    r = client.read_more() => Some(r),
                    _ = u.read_more() => None,
                };
                match got {
                    Some(r) => r?,
                    None => {
                        debug!("idle upstream connection closed");
                        *up = None;
                        continue;
                    }
                }
            }
            None => client.read_more().await?,
        };
        if n == 0 {
            return Ok(ReqRead::Eof);
        }
    }
    let head_end = match read_head(client, 0).await? {
        Ok(Some(end)) => end,
        Ok(None) => return Ok(ReqRead::Eof),
        Err(u) => return Ok(ReqRead::Unframed(u)),
    };
    let Some(head) = Head::parse(&client.buf[..head_end]) else {
        return Ok(ReqRead::Unframed(Unframed("malformed request head")));
    };
    let [method, _target, version] = &head.start;
    if !version.starts_with("HTTP/1.") || method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Ok(ReqRead::Unframed(Unframed("not an HTTP/1.x request")));
    }
    if method.eq_ignore_ascii_case("CONNECT") || head.has("upgrade") {
        return Ok(ReqRead::Unframed(Unframed("CONNECT or upgrade")));
    }
    if head.tokens("expect").iter().any(|t| t == "100-continue") {
        return Ok(ReqRead::Unframed(Unframed("expect 100-continue")));
    }
    let te = head.tokens("transfer-encoding");
    let body = if !te.is_empty() {
        if te.last().map(String::as_str) != Some("chunked") {
            return Ok(ReqRead::Unframed(Unframed("request transfer-encoding not chunked")));
        }
        Body::Chunked
    } else {
        match head.content_length() {
            Ok(n) => Body::Length(n.unwrap_or(0)),
            Err(()) => return Ok(ReqRead::Unframed(Unframed("bad content-length"))),
        }
    };
    let end = match read_body(client, head_end, body).await? {
        Ok(end) => end,
        Err(u) => return Ok(ReqRead::Unframed(u)),
    };
    let conn_tokens = head.tokens("connection");
    let close = conn_tokens.iter().any(|t| t == "close")
        || (version == "HTTP/1.0" && !conn_tokens.iter().any(|t| t == "keep-alive"));
    Ok(ReqRead::Request(Request { bytes: client.take(end), method: method.clone(), close }))
}

struct Response {
    bytes: Vec<u8>,
    /// Offset of the final response's body in `bytes` (after any 1xx interim responses).
    body_start: usize,
    close: bool,
}

enum RespRead {
    /// 101 Switching Protocols or a successful CONNECT: the rest is a tunnel.
    Tunnel,
    Unframed(Unframed),
    Response(Response),
}

/// Reads one complete response (with any interim 1xx responses) to a `method` request. Nothing
/// is consumed from `up.buf` unless a complete response is returned.
async fn read_response(up: &mut Conn, method: &str) -> std::io::Result<RespRead> {
    let mut start = 0;
    loop {
        let head_end = match read_head(up, start).await? {
            Ok(Some(end)) => end,
            Ok(None) => return Ok(RespRead::Unframed(Unframed("upstream closed before responding"))),
            Err(u) => return Ok(RespRead::Unframed(u)),
        };
        let Some(head) = Head::parse(&up.buf[start..head_end]) else {
            return Ok(RespRead::Unframed(Unframed("malformed response head")));
        };
        let [version, status, _reason] = &head.start;
        if !version.starts_with("HTTP/1.") || status.len() != 3 {
            return Ok(RespRead::Unframed(Unframed("not an HTTP/1.x response")));
        }
        let Ok(status) = status.parse::<u16>() else {
            return Ok(RespRead::Unframed(Unframed("bad status code")));
        };
        if status == 101 || (method.eq_ignore_ascii_case("CONNECT") && (200..300).contains(&status)) {
            return Ok(RespRead::Tunnel);
        }
        if (100..200).contains(&status) {
            start = head_end; // interim response; the final one follows
            continue;
        }
        let te = head.tokens("transfer-encoding");
        let body = if method.eq_ignore_ascii_case("HEAD") || status == 204 || status == 304 {
            Body::Length(0)
        } else if !te.is_empty() {
            if te.last().map(String::as_str) == Some("chunked") {
                Body::Chunked
            } else {
                Body::UntilClose
            }
        } else {
            match head.content_length() {
                Ok(Some(n)) => Body::Length(n),
                Ok(None) => Body::UntilClose,
                Err(()) => return Ok(RespRead::Unframed(Unframed("bad content-length"))),
            }
        };
        let end = match read_body(up, head_end, body).await? {
            Ok(end) => end,
            Err(u) => return Ok(RespRead::Unframed(u)),
        };
        let conn_tokens = head.tokens("connection");
        let close = body == Body::UntilClose
            || conn_tokens.iter().any(|t| t == "close")
            || (version == "HTTP/1.0" && !conn_tokens.iter().any(|t| t == "keep-alive"));
        return Ok(RespRead::Response(Response { bytes: up.take(end), body_start: head_end, close }));
    }
}

/// Forwards everything buffered and then copies bytes both ways until both sides are done.
async fn passthrough(mut client: Conn, up: Option<Conn>, upstream: SocketAddr, why: Unframed) -> std::io::Result<()> {
    debug!("pass-through: {}", why.0);
    let mut up = match up {
        Some(up) => up,
        None => Conn::connect(upstream).await?,
    };
    if !up.buf.is_empty() {
        client.stream.write_all(&up.buf).await?;
    }
    if !client.buf.is_empty() {
        up.stream.write_all(&client.buf).await?;
    }
    tokio::io::copy_bidirectional(&mut client.stream, &mut up.stream).await?;
    Ok(())
}

/// Sends `req` on a fresh upstream connection and reads (and discards) its response.
async fn send_duplicate(upstream: SocketAddr, req: &Request) -> std::io::Result<bool> {
    let mut conn = Conn::connect(upstream).await?;
    conn.stream.write_all(&req.bytes).await?;
    let discarded = match tokio::time::timeout(DUPLICATE_TIMEOUT, read_response(&mut conn, &req.method)).await {
        Ok(r) => matches!(r?, RespRead::Response(_)),
        Err(_) => false,
    };
    Ok(discarded)
}

/// Closes both connections: the client gets a FIN once everything written has been sent.
async fn close_both(mut client: Conn, up: Option<Conn>) {
    let _ = client.stream.shutdown().await;
    drop(up);
    drop(client);
}

/// A request counted in [`Company`] while it is in the proxy.
struct Companion<'a> {
    shared: &'a Shared,
}

impl<'a> Companion<'a> {
    /// Counts the request in if its start line matches, and holds it while it is alone
    /// and no two were in at once yet (see [`FaultProxy::hold_until_company`]).
    async fn enter(shared: &'a Shared, request: &[u8]) -> Option<Companion<'a>> {
        let line_end = request.iter().position(|&b| b == b'\n').unwrap_or(request.len());
        let line = String::from_utf8_lossy(&request[..line_end]);
        let wait = {
            let mut st = shared.lock();
            let st = &mut *st;
            let company = st.company.as_mut().filter(|c| line.contains(c.needle.as_str()))?;
            company.now += 1;
            st.stats.most_at_once = st.stats.most_at_once.max(company.now);
            company.met |= company.now >= 2;
            (!company.met).then_some(company.wait)
        };
        if let Some(wait) = wait {
            let until = tokio::time::Instant::now() + wait;
            while tokio::time::Instant::now() < until && !shared.lock().company.as_ref().is_some_and(|c| c.met) {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            if let Some(c) = shared.lock().company.as_mut() {
                c.met = true; // waited its time: hold no other
            }
        }
        Some(Companion { shared })
    }
}

impl Drop for Companion<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.shared.lock().company.as_mut() {
            c.now = c.now.saturating_sub(1);
        }
    }
}

async fn handle_conn(stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let upstream = shared.upstream;
    let mut client = Conn::new(stream);
    let mut up: Option<Conn> = None;
    loop {
        let req = match read_request(&mut client, &mut up).await? {
            ReqRead::Eof => {
                close_both(client, up).await;
                return Ok(());
            }
            ReqRead::Unframed(why) => return passthrough(client, up, upstream, why).await,
            ReqRead::Request(req) => req,
        };
        let refusal = shared.lock().refusal.clone();
        if let Some((needle, body)) = refusal {
            let line_end = req.bytes.iter().position(|&b| b == b'\n').unwrap_or(req.bytes.len());
            if String::from_utf8_lossy(&req.bytes[..line_end]).contains(needle.as_str()) {
                let head = format!(
                    "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                client.stream.write_all(head.as_bytes()).await?;
                client.stream.write_all(body.as_bytes()).await?;
                shared.count(|s| s.refused += 1);
                debug!("refused {} request", req.method);
                continue;
            }
        }
        let _company = Companion::enter(shared, &req.bytes).await;
        let decision = shared.decide();
        debug!("{} request of {} bytes: {decision:?}", req.method, req.bytes.len());
        if up.is_none() {
            up = Some(Conn::connect(upstream).await?);
        }
        let Some(u) = up.as_mut() else { unreachable!("just connected") };
        match decision {
            Decision::DropRequest { frac } => {
                let n = cut(frac, req.bytes.len());
                u.stream.write_all(&req.bytes[..n]).await?;
                shared.count(|s| s.dropped_requests += 1);
                debug!("dropped request after {n} of {} bytes", req.bytes.len());
                close_both(client, up).await;
                return Ok(());
            }
            Decision::Duplicate => match send_duplicate(upstream, &req).await {
                Ok(complete) => {
                    shared.count(|s| s.duplicated += 1);
                    debug!("duplicate sent (response complete: {complete})");
                }
                Err(e) => debug!("duplicate failed: {e}"),
            },
            _ => {}
        }
        u.stream.write_all(&req.bytes).await?;
        let resp = match read_response(u, &req.method).await? {
            RespRead::Response(resp) => resp,
            RespRead::Tunnel => return passthrough(client, up, upstream, Unframed("tunnel")).await,
            RespRead::Unframed(why) => return passthrough(client, up, upstream, why).await,
        };
        match decision {
            Decision::DropResponse { frac } => {
                let n = cut(frac, resp.bytes.len());
                client.stream.write_all(&resp.bytes[..n]).await?;
                shared.count(|s| s.dropped_responses += 1);
                debug!("dropped response after {n} of {} bytes", resp.bytes.len());
                close_both(client, up).await;
                return Ok(());
            }
            Decision::Truncate { frac } => {
                let body_len = resp.bytes.len() - resp.body_start;
                let n = if body_len > 0 {
                    resp.body_start + cut(frac, body_len)
                } else {
                    cut(frac, resp.bytes.len()) // nothing to cut in the body: cut in the head
                };
                client.stream.write_all(&resp.bytes[..n]).await?;
                shared.count(|s| s.truncated_responses += 1);
                debug!("truncated response after {n} of {} bytes", resp.bytes.len());
                close_both(client, up).await;
                return Ok(());
            }
            Decision::Delay(d) => {
                shared.count(|s| s.delayed += 1);
                tokio::time::sleep(d).await;
            }
            _ => {}
        }
        client.stream.write_all(&resp.bytes).await?;
        if req.close || resp.close {
            close_both(client, up).await;
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::time::Instant;

    /// A tiny keep-alive HTTP/1.1 server: `POST /echo` answers with the body (Content-Length),
    /// `GET /chunked` with a chunked body, `GET /close` with a read-until-close body. Records
    /// every complete request as `"METHOD PATH BODY"`.
    struct EchoServer {
        addr: SocketAddr,
        seen: Arc<Mutex<Vec<String>>>,
        _rt: tokio::runtime::Runtime,
    }

    const CHUNKED_BODY: &str = "hello, chunked world! 0123456789";

    impl EchoServer {
        fn start() -> EchoServer {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
            let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
            let addr = listener.local_addr().unwrap();
            let seen = Arc::new(Mutex::new(Vec::new()));
            let seen2 = seen.clone();
            rt.spawn(async move {
                loop {
                    let Ok((s, _)) = listener.accept().await else { continue };
                    tokio::spawn(serve(s, seen2.clone()));
                }
            });
            EchoServer { addr, seen, _rt: rt }
        }

        fn seen(&self) -> Vec<String> {
            self.seen.lock().unwrap().clone()
        }
    }

    async fn serve(s: TcpStream, seen: Arc<Mutex<Vec<String>>>) {
        let mut s = tokio::io::BufStream::new(s);
        use tokio::io::AsyncBufReadExt;
        loop {
            let mut line = String::new();
            if s.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            let mut parts = line.split_whitespace();
            let (method, path) = (parts.next().unwrap_or("").to_owned(), parts.next().unwrap_or("").to_owned());
            let (mut len, mut chunked) = (0, false);
            loop {
                let mut h = String::new();
                if s.read_line(&mut h).await.unwrap_or(0) == 0 {
                    return;
                }
                if h == "\r\n" {
                    break;
                }
                if let Some((n, v)) = h.split_once(':') {
                    if n.eq_ignore_ascii_case("content-length") {
                        len = v.trim().parse().unwrap();
                    }
                    chunked |= n.eq_ignore_ascii_case("transfer-encoding") && v.trim() == "chunked";
                }
            }
            let mut body = vec![0; len];
            if s.read_exact(&mut body).await.is_err() {
                return;
            }
            while chunked {
                let mut size = String::new();
                if s.read_line(&mut size).await.unwrap_or(0) == 0 {
                    return;
                }
                let size = usize::from_str_radix(size.trim(), 16).unwrap();
                let mut chunk = vec![0; size + 2];
                if s.read_exact(&mut chunk).await.is_err() {
                    return;
                }
                body.extend_from_slice(&chunk[..size]);
                chunked = size > 0;
            }
            seen.lock().unwrap().push(format!("{method} {path} {}", String::from_utf8_lossy(&body)));
            let out = match path.as_str() {
                "/echo" => {
                    let mut out = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
                    out.extend_from_slice(&body);
                    out
                }
                "/chunked" => {
                    let mut out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
                    for piece in CHUNKED_BODY.as_bytes().chunks(7) {
                        out.extend_from_slice(format!("{:x};ext=1\r\n", piece.len()).as_bytes());
                        out.extend_from_slice(piece);
                        out.extend_from_slice(b"\r\n");
                    }
                    out.extend_from_slice(b"0\r\nX-Trailer: yes\r\n\r\n");
                    out
                }
                "/close" => {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil close").await;
                    let _ = s.flush().await;
                    return;
                }
                _ => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
            };
            if s.write_all(&out).await.is_err() || s.flush().await.is_err() {
                return;
            }
        }
    }

    /// A blocking raw HTTP/1.1 client.
    struct Client {
        s: std::net::TcpStream,
        buf: Vec<u8>,
    }

    #[derive(Debug)]
    struct Resp {
        status: u16,
        head: String,
        body: Vec<u8>,
    }

    impl Client {
        fn connect(addr: SocketAddr) -> Client {
            let s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            Client { s, buf: Vec::new() }
        }

        fn post(&mut self, path: &str, body: &[u8]) -> std::io::Result<Resp> {
            self.send(&post_req(path, body))?;
            self.read_response()
        }

        fn get(&mut self, path: &str) -> std::io::Result<Resp> {
            self.send(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())?;
            self.read_response()
        }

        fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
            self.s.write_all(bytes)
        }

        fn fill(&mut self) -> std::io::Result<()> {
            let mut tmp = [0; 4096];
            let n = self.s.read(&mut tmp)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&tmp[..n]);
            Ok(())
        }

        fn line(&mut self) -> std::io::Result<String> {
            loop {
                if let Some(p) = find(&self.buf, b"\r\n") {
                    let l = self.buf.drain(..p + 2).collect::<Vec<_>>();
                    return Ok(String::from_utf8_lossy(&l[..p]).into_owned());
                }
                self.fill()?;
            }
        }

        fn exact(&mut self, n: usize) -> std::io::Result<Vec<u8>> {
            while self.buf.len() < n {
                self.fill()?;
            }
            Ok(self.buf.drain(..n).collect())
        }

        /// Reads one full response; `UnexpectedEof` if the connection closes before its end.
        fn read_response(&mut self) -> std::io::Result<Resp> {
            let status_line = self.line()?;
            let status = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            let mut head = status_line + "\r\n";
            let (mut len, mut chunked, mut close) = (None, false, false);
            loop {
                let h = self.line()?;
                if h.is_empty() {
                    break;
                }
                let lower = h.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    len = Some(v.trim().parse().unwrap());
                }
                chunked |= lower == "transfer-encoding: chunked";
                close |= lower == "connection: close";
                head += &h;
                head += "\r\n";
            }
            let body = if chunked {
                let mut body = Vec::new();
                loop {
                    let size = self.line()?;
                    let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap();
                    if size == 0 {
                        while !self.line()?.is_empty() {}
                        break body;
                    }
                    body.extend(self.exact(size)?);
                    assert_eq!(self.exact(2)?, b"\r\n");
                }
            } else if let Some(len) = len {
                self.exact(len)?
            } else {
                assert!(close);
                loop {
                    match self.fill() {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break std::mem::take(&mut self.buf),
                        Err(e) => return Err(e),
                    }
                }
            };
            Ok(Resp { status, head, body })
        }

        /// Reads until EOF, returning what arrived.
        fn read_to_eof(&mut self) -> Vec<u8> {
            let mut out = std::mem::take(&mut self.buf);
            let _ = self.s.read_to_end(&mut out);
            out
        }
    }

    fn post_req(path: &str, body: &[u8]) -> Vec<u8> {
        let mut r = format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        r.extend_from_slice(body);
        r
    }

    fn only(f: impl FnOnce(&mut Faults)) -> Faults {
        let mut faults = Faults::none();
        f(&mut faults);
        faults
    }

    fn body(i: usize) -> Vec<u8> {
        (0..(i * 997) % 5000).map(|j| b'a' + ((i + j) % 26) as u8).collect()
    }

    #[test]
    fn none_forwards_keepalive_requests() {
        let server = EchoServer::start();
        let proxy = FaultProxy::start(server.addr, Faults::none()).unwrap();
        assert_eq!(proxy.url(), format!("http://127.0.0.1:{}", proxy.addr().port()));
        let mut c = Client::connect(proxy.addr());
        for i in 0..40 {
            let r = c.post("/echo", &body(i)).unwrap();
            assert_eq!((r.status, r.body), (200, body(i)));
            let r = c.get("/chunked").unwrap();
            assert_eq!(r.body, CHUNKED_BODY.as_bytes());
            assert!(r.head.contains("Transfer-Encoding: chunked"), "{}", r.head);
        }
        // A large body, and pipelined requests, and blank lines between requests.
        let big: Vec<u8> = (0..300_000).map(|i| (i % 251) as u8).collect();
        assert_eq!(c.post("/echo", &big).unwrap().body, big);
        let mut two = post_req("/echo", b"first");
        two.extend_from_slice(b"\r\n");
        two.extend(post_req("/echo", b"second"));
        c.send(&two).unwrap();
        assert_eq!(c.read_response().unwrap().body, b"first");
        assert_eq!(c.read_response().unwrap().body, b"second");
        // Chunked request body.
        c.send(b"POST /missing HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n").unwrap();
        assert_eq!(c.read_response().unwrap().status, 404);
        // Read-until-close response.
        let r = c.get("/close").unwrap();
        assert_eq!(r.body, b"until close");
        assert_eq!(c.read_to_eof(), b"");

        assert_eq!(server.seen().len(), 80 + 4 + 1);
        assert_eq!(proxy.stats(), ProxyStats { connections: 1, ..Default::default() });
        assert!(proxy.decisions().iter().all(|d| *d == FaultKind::None));
    }

    #[test]
    fn drop_request_gives_eof_and_server_sees_nothing() {
        let server = EchoServer::start();
        let proxy = FaultProxy::start(server.addr, only(|f| f.drop_request = 1.0)).unwrap();
        for i in 0..5 {
            let mut c = Client::connect(proxy.addr());
            let err = c.post("/echo", &body(i + 1)).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{err}");
        }
        std::thread::sleep(Duration::from_millis(50));
        assert!(server.seen().is_empty(), "{:?}", server.seen());
        assert_eq!(proxy.stats(), ProxyStats { connections: 5, dropped_requests: 5, ..Default::default() });
    }

    #[test]
    fn drop_response_server_processes_client_sees_eof() {
        let server = EchoServer::start();
        let proxy = FaultProxy::start(server.addr, only(|f| f.drop_response = 1.0)).unwrap();
        for i in 0..5 {
            let mut c = Client::connect(proxy.addr());
            let err = c.post("/echo", &body(i + 1)).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{err}");
        }
        assert_eq!(server.seen().len(), 5);
        assert_eq!(proxy.stats().dropped_responses, 5);
    }

    #[test]
    fn truncate_response_gives_short_body() {
        let server = EchoServer::start();
        let proxy = FaultProxy::start(server.addr, only(|f| f.truncate_response = 1.0)).unwrap();
        for i in 0..5 {
            let mut c = Client::connect(proxy.addr());
            c.send(&post_req("/echo", &[b'x'; 1000])).unwrap();
            // The head arrives complete, the body short.
            assert_eq!(c.line().unwrap(), "HTTP/1.1 200 OK");
            assert_eq!(c.line().unwrap(), "Content-Length: 1000");
            assert_eq!(c.line().unwrap(), "");
            let rest = c.read_to_eof();
            assert!(rest.len() < 1000, "{}", rest.len());
            assert!(rest.iter().all(|b| *b == b'x'));
            let mut c = Client::connect(proxy.addr());
            let err = c.get("/chunked").unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{i}: {err}");
        }
        assert_eq!(server.seen().len(), 10);
        assert_eq!(proxy.stats(), ProxyStats { connections: 10, truncated_responses: 10, ..Default::default() });
    }

    #[test]
    fn duplicate_request_server_sees_twice_client_once() {
        let server = EchoServer::start();
        let proxy = FaultProxy::start(server.addr, only(|f| f.duplicate_request = 1.0)).unwrap();
        let mut c = Client::connect(proxy.addr());
        for i in 0..3 {
            let b = format!("req-{i}");
            assert_eq!(c.post("/echo", b.as_bytes()).unwrap().body, b.as_bytes());
        }
        assert_eq!(c.get("/chunked").unwrap().body, CHUNKED_BODY.as_bytes());
        let seen = server.seen();
        assert_eq!(
            seen,
            ["POST /echo req-0", "POST /echo req-0", "POST /echo req-1", "POST /echo req-1"]
                .into_iter()
                .chain(["POST /echo req-2", "POST /echo req-2", "GET /chunked ", "GET /chunked "])
                .collect::<Vec<_>>()
        );
        assert_eq!(proxy.stats(), ProxyStats { connections: 1, duplicated: 4, ..Default::default() });
    }

    #[test]
    fn delay_delays_by_the_scheduled_amount() {
        let server = EchoServer::start();
        let faults = only(|f| {
            f.seed = 11;
            f.delay = 1.0;
            f.max_delay = Duration::from_millis(150);
        });
        let mut rng = StdRng::seed_from_u64(faults.seed);
        let expected: Vec<Duration> = (0..4)
            .map(|_| match decide(&faults, &mut rng) {
                Decision::Delay(d) => d,
                d => panic!("{d:?}"),
            })
            .collect();
        assert!(expected.iter().sum::<Duration>() > Duration::from_millis(100), "{expected:?}");
        let proxy = FaultProxy::start(server.addr, faults).unwrap();
        let mut c = Client::connect(proxy.addr());
        for want in &expected {
            let t = Instant::now();
            assert_eq!(c.post("/echo", b"slow").unwrap().body, b"slow");
            let took = t.elapsed();
            assert!(took >= *want && took < *want + Duration::from_millis(500), "{took:?} vs {want:?}");
        }
        assert_eq!(proxy.stats(), ProxyStats { connections: 1, delayed: 4, ..Default::default() });
    }

    #[test]
    fn stats_count_and_set_faults_applies_to_open_connections() {
        let server = EchoServer::start();
        let proxy = FaultProxy::start(server.addr, Faults::none()).unwrap();
        let mut c = Client::connect(proxy.addr());
        for _ in 0..3 {
            c.post("/echo", b"ok").unwrap();
        }
        proxy.set_faults(only(|f| {
            f.delay = 1.0;
            f.max_delay = Duration::from_millis(5);
        }));
        c.post("/echo", b"ok").unwrap(); // same connection, new schedule
        proxy.set_faults(only(|f| f.drop_request = 1.0));
        assert!(Client::connect(proxy.addr()).post("/echo", b"x").is_err());
        proxy.set_faults(only(|f| f.drop_response = 1.0));
        assert!(Client::connect(proxy.addr()).post("/echo", b"x").is_err());
        proxy.set_faults(only(|f| f.truncate_response = 1.0));
        assert!(Client::connect(proxy.addr()).post("/echo", b"xyz").is_err());
        proxy.set_faults(only(|f| f.duplicate_request = 1.0));
        let mut c = Client::connect(proxy.addr());
        c.post("/echo", b"d").unwrap();
        c.post("/echo", b"d").unwrap();
        proxy.set_faults(Faults::none());
        c.post("/echo", b"clean").unwrap();
        assert_eq!(
            proxy.stats(),
            ProxyStats {
                connections: 5,
                dropped_requests: 1,
                dropped_responses: 1,
                truncated_responses: 1,
                delayed: 1,
                duplicated: 2,
                refused: 0,
                most_at_once: 0
            }
        );
        use FaultKind::*;
        assert_eq!(
            proxy.decisions(),
            [
                None,
                None,
                None,
                Delay,
                DropRequest,
                DropResponse,
                TruncateResponse,
                DuplicateRequest,
                DuplicateRequest,
                None
            ]
        );
    }

    #[test]
    fn same_seed_same_decisions() {
        let faults = Faults::random(1234);
        for p in [
            faults.drop_request,
            faults.drop_response,
            faults.truncate_response,
            faults.delay,
            faults.duplicate_request,
        ] {
            assert!((0.05..0.3).contains(&p), "{faults:?}");
        }
        assert!(faults.max_delay < Duration::from_millis(300));
        let run = |seed| {
            let f = Faults { seed, ..faults.clone() };
            let mut rng = StdRng::seed_from_u64(seed);
            (0..1000).map(|_| decide(&f, &mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
        let kinds = run(1).into_iter().map(Decision::kind).collect::<std::collections::HashSet<_>>();
        assert_eq!(kinds.len(), 6);

        // Through the proxy: the same sequential traffic gives the same decisions and stats.
        let server = EchoServer::start();
        let through_proxy = || {
            let faults = Faults { max_delay: Duration::from_millis(10), ..Faults::random(99) };
            let proxy = FaultProxy::start(server.addr, faults).unwrap();
            let mut c = None;
            let mut outcomes = Vec::new();
            for i in 0..40 {
                // Reconnect (only) before a request, so every connection is counted by the end.
                let r = c.get_or_insert_with(|| Client::connect(proxy.addr())).post("/echo", &body(i));
                outcomes.push(r.as_ref().map(|r| r.body == body(i)).unwrap_or(false));
                if r.is_err() {
                    c = None;
                }
            }
            (proxy.decisions(), proxy.stats(), outcomes)
        };
        let (a, b) = (through_proxy(), through_proxy());
        assert_eq!(a, b);
        assert_eq!(a.0.len(), 40);
        assert!(a.2.contains(&true) && a.2.contains(&false), "{a:?}");
    }

    #[test]
    fn malformed_traffic_passes_through() {
        // Upstream is a raw TCP echo server: its "responses" are not HTTP.
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        rt.spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else { continue };
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let proxy = FaultProxy::start(addr, only(|f| f.truncate_response = 1.0)).unwrap();
        let cases: [&[u8]; 5] = [
            b"\x00\x01garbage\xff\r\n\r\nmore",
            b"GET / HTTP/1.1\r\nContent-Length: nope\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"no end of head",
            b"POST /echo HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", // echoed request is not a response
        ];
        for case in cases {
            let mut c = Client::connect(proxy.addr());
            c.send(case).unwrap();
            c.s.shutdown(std::net::Shutdown::Write).unwrap();
            assert_eq!(c.read_to_eof(), case);
        }
        assert_eq!(proxy.stats().truncated_responses, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_on_current_runtime_and_stops_on_drop() {
        let server = tokio::task::spawn_blocking(EchoServer::start).await.unwrap();
        let proxy = FaultProxy::start(server.addr, Faults::none()).unwrap();
        assert!(proxy.thread.is_none());
        let addr = proxy.addr();
        let got = tokio::task::spawn_blocking(move || Client::connect(addr).post("/echo", b"async").unwrap().body);
        assert_eq!(got.await.unwrap(), b"async");
        drop(proxy);
        let mut refused = false;
        for _ in 0..100 {
            if TcpStream::connect(addr).await.is_err() {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(refused);
        drop(tokio::task::spawn_blocking(move || drop(server)).await);
    }

    #[test]
    fn own_thread_stops_on_drop() {
        let server = EchoServer::start();
        let proxy = FaultProxy::start(server.addr, Faults::none()).unwrap();
        assert!(proxy.thread.is_some());
        let addr = proxy.addr();
        let mut c = Client::connect(addr);
        assert_eq!(c.post("/echo", b"x").unwrap().body, b"x");
        drop(proxy);
        assert!(std::net::TcpStream::connect(addr).is_err());
        // The open connection is closed too.
        assert!(c.post("/echo", b"x").is_err());
    }
}
