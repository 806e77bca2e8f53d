//! The sync client: push unsent ops in batches, upload evidence in resumable chunks,
//! pull what the device may see, refresh assignments and instruments, record what the
//! server (and the centre) acknowledged. The decisions are `sidak_core::sync`'s; this
//! module carries them out over HTTP with retries, and reports only what is true.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};
use std::thread::{Scope, ScopedJoinHandle};
use std::time::{Duration, Instant};

use rand::Rng;
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::StatusCode;
use rusqlite::{params, OptionalExtension, Transaction};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sidak_core::chain::ChainHead;
use sidak_core::hash::Sha256Digest;
use sidak_core::ids::OriginId;
use sidak_core::sign::SignedHead;
use sidak_core::sync::{
    apply_push_result, backoff_ms, next_chunk, plan_pull_page, plan_push, Held, PullError, PushOutcome,
};
use sidak_core::wire::{
    cursor_ahead, limits, AssignmentList, Cursor, ErrorBody, EvidenceBegin, EvidenceStatus, InstrumentList, Pending,
    PullResponse, PushRequest, PushResponse, StatusRequest, StatusResponse, Whoami, PROTOCOL_HEADER, PROTOCOL_VERSION,
};

use crate::app::Field;
use crate::blobs::Blobs;
use crate::error::{db, FieldError};
use crate::log::{self, require_identity};
use crate::store::Store;

/// How to sync.
#[derive(Clone, Debug)]
pub struct SyncOptions {
    /// The server's base URL (`https://perwakilan.example`).
    pub server: String,
    /// The bearer token.
    pub token: String,
    /// Ops per push (at most 1000).
    pub batch: usize,
    /// Ops per pull page (at most 1000).
    pub page: usize,
    /// Evidence chunk size in bytes (at most 1 MiB).
    pub chunk: usize,
    /// Evidence files sent at once (1 to [`MAX_FILES_AT_ONCE`]), each file's chunks in
    /// order: while the server writes one file's chunk, another's crosses the link.
    pub files_at_once: usize,
    /// Timeout of one request.
    pub timeout: Duration,
    /// Give up on a transient failure after this long.
    pub retry_for: Duration,
    /// The first retry delay; later ones double, up to 10 s, each with full jitter.
    pub retry_base: Duration,
    /// Certificate authorities (PEM) to trust besides the public ones: an office's own
    /// CA. Certificates are always verified; there is no switch to skip that.
    pub ca_file: Option<std::path::PathBuf>,
}

/// The evidence chunk size a device sends unless told otherwise: the largest the
/// protocol allows, so that a 2 MB photo costs two round trips and two commits.
pub const DEFAULT_CHUNK_BYTES: usize = limits::MAX_CHUNK_BYTES;

impl SyncOptions {
    /// Defaults for a server and token.
    pub fn new(server: &str, token: &str) -> SyncOptions {
        SyncOptions {
            server: server.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            batch: 500,
            page: limits::DEFAULT_PULL_LIMIT,
            chunk: DEFAULT_CHUNK_BYTES,
            files_at_once: 2,
            timeout: Duration::from_secs(30),
            retry_for: Duration::from_secs(120),
            retry_base: Duration::from_millis(250),
            ca_file: None,
        }
    }
}

/// What a sync did. It says `complete` only when every step finished.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SyncSummary {
    /// True when everything was pushed, uploaded and pulled.
    pub complete: bool,
    /// Ops the server newly stored.
    pub pushed: u64,
    /// Ops pulled and applied.
    pub pulled: u64,
    /// Ops the server sent that this device held already (its own it does not ask
    /// for; these are others' ops it had, e.g. after a pull started again).
    pub pulled_again: u64,
    /// Evidence files completed on the server.
    pub files_uploaded: u64,
    /// Evidence bytes sent.
    pub bytes_uploaded: u64,
    /// Ops of this device the server holds in quarantine, with why.
    pub quarantined: Vec<String>,
    /// Ops still unsent.
    pub unsent_ops: u64,
    /// Files still unsent.
    pub unsent_files: u64,
    /// What the server holds of this device.
    pub server_held: u64,
    /// What the centre holds of this device (via the server), when known.
    pub upstream_held: Option<u64>,
    /// Transient failures retried.
    pub retries: u64,
    /// Evidence files that no longer match their digest on this device (damaged
    /// storage): set aside, not sent again, reported here and in `status`.
    pub files_damaged: Vec<String>,
    /// Whether the pull had to start again from zero.
    pub restarted_pull: bool,
    /// Pull pages asked for while the page before was still read and applied (their
    /// cursor comes ahead of the body, proto §5.4). A server that sends no such header
    /// is pulled from a page at a time.
    pub pages_asked_ahead: u64,
    /// True when the server found this device's clock far ahead of its own: the
    /// device's date and time settings need fixing (nothing was lost).
    pub clock_flagged: bool,
    /// Seconds taken.
    pub seconds: f64,
}

/// Progress for a display.
#[derive(Clone, Debug)]
pub enum Progress {
    /// A phase begins.
    Phase(&'static str),
    /// Ops pushed so far of a total.
    Pushed(u64, u64),
    /// Bytes uploaded so far of a total.
    Uploaded(u64, u64),
    /// Ops pulled so far.
    Pulled(u64),
    /// A transient failure, retrying after a delay.
    Retrying(String, Duration),
}

/// Why a sync stopped.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The server could not be reached or kept failing: try again later.
    #[error("the server could not be reached or did not answer ({0}); nothing is lost: sync again later")]
    Network(String),
    /// The server refused (token, permission, version): retrying will not help.
    #[error("the server refused: {0}")]
    Refused(String),
    /// The device's log and the server's disagree.
    #[error("the device and the server disagree: {0}; nothing was overwritten, ask a supervisor")]
    Diverged(String),
    /// A local failure.
    #[error(transparent)]
    Local(#[from] FieldError),
}

impl SyncError {
    /// The exit code.
    pub fn exit_code(&self) -> crate::ExitCode {
        match self {
            SyncError::Network(_) => crate::ExitCode::Network,
            SyncError::Refused(_) | SyncError::Diverged(_) => crate::ExitCode::Refused,
            SyncError::Local(e) => e.exit_code(),
        }
    }
}

struct Http<'a> {
    client: Client,
    opts: &'a SyncOptions,
    retries: u64,
    progress: &'a mut dyn FnMut(Progress),
}

enum Attempt {
    Transient(String),
    Permanent(SyncError),
}

impl Http<'_> {
    /// Sends a request (rebuilt for every attempt), retrying transient failures with
    /// exponential backoff and full jitter.
    fn send<T: DeserializeOwned>(
        &mut self,
        what: &str,
        build: &dyn Fn(&Client) -> RequestBuilder,
    ) -> Result<T, SyncError> {
        self.send_with(what, build, &mut |response| decode::<T>(response, what))
    }

    /// [`Http::send`], with `read` making the answer of each attempt's response.
    fn send_with<T>(
        &mut self,
        what: &str,
        build: &dyn Fn(&Client) -> RequestBuilder,
        read: &mut dyn FnMut(Response) -> Result<T, Attempt>,
    ) -> Result<T, SyncError> {
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            let outcome = match authorised(build(&self.client), self.opts).send() {
                Ok(response) => read(response),
                Err(e) => {
                    let chain = error_chain(&e);
                    if chain.contains("certificate")
                        || chain.contains("UnknownIssuer")
                        || chain.contains("NotValidForName")
                    {
                        // Retrying will not make an untrusted certificate trusted.
                        Err(Attempt::Permanent(SyncError::Refused(format!(
                            "{what}: the server's certificate is not trusted ({chain}); if the office runs its own certificate authority, give its certificate with --ca-file"
                        ))))
                    } else {
                        Err(Attempt::Transient(format!("{what}: {chain}")))
                    }
                }
            };
            match outcome {
                Ok(v) => return Ok(v),
                Err(Attempt::Permanent(e)) => return Err(e),
                Err(Attempt::Transient(why)) => {
                    if started.elapsed() >= self.opts.retry_for {
                        return Err(SyncError::Network(why));
                    }
                    let base = self.opts.retry_base.as_millis().max(1) as u64;
                    let delay = Duration::from_millis(backoff_ms(attempt, base, 10_000, rand::thread_rng().gen()));
                    (self.progress)(Progress::Retrying(why, delay));
                    std::thread::sleep(delay);
                    self.retries += 1;
                    attempt += 1;
                }
            }
        }
    }
}

/// A request with the token and the protocol version.
fn authorised(request: RequestBuilder, opts: &SyncOptions) -> RequestBuilder {
    request.bearer_auth(&opts.token).header(PROTOCOL_HEADER, PROTOCOL_VERSION.to_string())
}

/// A pull page asked for ahead: its path, and the answer's headers once they arrive (the
/// body is read when the page's turn comes).
struct Ahead<'s> {
    path: String,
    answer: ScopedJoinHandle<'s, reqwest::Result<Response>>,
}

/// Reads a pull page's answer. When its headers say more waits and name the cursor to
/// continue from (§5.4), the next page is asked for first, on its own thread, so that the
/// server writes it while this one is read and applied. A server that sends no such
/// headers is pulled from a page at a time, as before.
fn read_page<'s>(
    scope: &'s Scope<'s, '_>,
    client: &Client,
    opts: &SyncOptions,
    next_path: &dyn Fn(&str) -> String,
    response: Response,
) -> Result<(PullResponse, Option<Ahead<'s>>), Attempt> {
    let next = response.status().is_success().then(|| cursor_ahead(|h| response.headers().get(h)?.to_str().ok()));
    let ahead = next.flatten().map(|cursor| {
        let path = next_path(&cursor.to_string());
        let request = authorised(client.get(http_url(opts, &path)), opts);
        Ahead { path, answer: scope.spawn(move || request.send()) }
    });
    Ok((decode::<PullResponse>(response, "pull")?, ahead))
}

/// At most this many evidence files are sent at once, whatever [`SyncOptions`] asks.
pub const MAX_FILES_AT_ONCE: usize = 8;

/// What a thread sending evidence tells the one that keeps the display and the store.
enum Report {
    Progress(Progress),
    /// Bytes of a file the server acknowledged.
    Sent(u64),
    /// What became of a file.
    Done(String, Result<FileUpload, SyncError>),
    /// Transient failures retried by a sending thread, told when it ends.
    Retries(u64),
}

/// What became of one file's upload.
enum FileUpload {
    /// Complete on the server (and, when it says, at the centre).
    Complete { size: u64, centre: bool },
    /// The file on this device no longer decrypts or no longer hashes to its name.
    Damaged(String),
    /// The server stopped before the last chunk without refusing: sent again next time.
    Unfinished,
}

/// The files waiting to be sent, shared by the sending threads.
struct Files {
    queue: Mutex<std::vec::IntoIter<(String, u64, String)>>,
    /// Set at the first failure: no thread starts another file.
    stop: AtomicBool,
}

/// One sending thread: takes the next file until none is left or one failed, and tells
/// `report` everything (its retries last).
fn send_files(client: &Client, opts: &SyncOptions, blobs: &Blobs, files: &Files, report: &mpsc::Sender<Report>) {
    let forward = report.clone();
    let mut progress = move |p: Progress| {
        let _ = forward.send(Report::Progress(p));
    };
    let mut http = Http { client: client.clone(), opts, retries: 0, progress: &mut progress };
    while !files.stop.load(Ordering::Relaxed) {
        let Some((sha, size, media_type)) = files.queue.lock().unwrap_or_else(|p| p.into_inner()).next() else {
            break;
        };
        let outcome = upload_file(&mut http, blobs, &sha, size, media_type, &mut |len| {
            let _ = report.send(Report::Sent(len));
        });
        if outcome.is_err() {
            // Start no other file; the one the other thread sends, it finishes.
            files.stop.store(true, Ordering::Relaxed);
        }
        let _ = report.send(Report::Done(sha, outcome));
    }
    let _ = report.send(Report::Retries(http.retries));
}

/// Sends one file's chunks in order (§6.4), from where the server says it stands.
fn upload_file(
    http: &mut Http<'_>,
    blobs: &Blobs,
    sha: &str,
    size: u64,
    media_type: String,
    sent: &mut dyn FnMut(u64),
) -> Result<FileUpload, SyncError> {
    let opts = http.opts;
    let digest: Sha256Digest = sha.parse().map_err(|_| FieldError::Corrupt(format!("bad digest {sha}")))?;
    let begin = EvidenceBegin { size, media_type };
    let mut status: EvidenceStatus =
        http.send("evidence", &|c| c.post(http_url(opts, &format!("/v1/evidence/{sha}"))).json(&begin))?;
    let chunk_bytes = opts.chunk.min(limits::MAX_CHUNK_BYTES) as u64;
    // The chunk read (decrypted) while the one before it travelled, and where.
    let mut ahead: Option<(u64, u64, Result<Vec<u8>, FieldError>)> = None;
    while let Some((offset, len)) = next_chunk(status.size, status.received, chunk_bytes) {
        if status.complete {
            break;
        }
        let read = match ahead.take() {
            Some((o, l, read)) if (o, l) == (offset, len) => read,
            _ => blobs.read_chunk(&digest, offset, len as usize),
        };
        let chunk = match read {
            Ok(chunk) => chunk,
            // The file on this device no longer decrypts (damaged storage): it cannot be
            // sent as it was. Set it aside, like a mismatch below.
            Err(e @ FieldError::DamagedEvidence { .. }) => return Ok(FileUpload::Damaged(e.to_string())),
            Err(e) => return Err(e.into()),
        };
        // The next chunk is decrypted on a second thread while this one is sent and the
        // server writes it: on a fast link the two would otherwise add up.
        let (answer, next) = std::thread::scope(|scope| {
            let reader = next_chunk(status.size, offset + len, chunk_bytes)
                .map(|(o, l)| scope.spawn(move || (o, l, blobs.read_chunk(&digest, o, l as usize))));
            let answer = http.send("evidence chunk", &|c| {
                c.put(http_url(opts, &format!("/v1/evidence/{sha}?offset={offset}")))
                    .header("content-type", "application/octet-stream")
                    .body(chunk.clone())
            });
            (answer, reader.map(|r| r.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))))
        });
        ahead = next;
        status = match answer {
            // The file on this device no longer hashes to its name: sending it again
            // cannot help (§6.4). Set it aside and carry on with the rest.
            Err(SyncError::Refused(m)) if m.contains("(evidence_mismatch)") => return Ok(FileUpload::Damaged(m)),
            other => other?,
        };
        // No commit per chunk: an upload resumes from the count the server gives when it
        // is announced again, never from this device's, so a durable write here would
        // only cost a sync per chunk.
        sent(len);
    }
    Ok(if status.complete {
        FileUpload::Complete { size: status.size, centre: status.centre_complete.unwrap_or(false) }
    } else {
        FileUpload::Unfinished
    })
}

/// Records what became of one file's upload.
fn record_upload(
    store: &mut Store,
    summary: &mut SyncSummary,
    sha: &str,
    outcome: Result<FileUpload, SyncError>,
) -> Result<(), SyncError> {
    match outcome? {
        FileUpload::Damaged(why) => {
            store.write(|tx, _| {
                tx.execute("UPDATE uploads SET failed = ?2, received = 0 WHERE sha256 = ?1", params![sha, why])
                    .map_err(db)?;
                Ok(())
            })?;
            summary.files_damaged.push(sha.to_owned());
        }
        FileUpload::Complete { size, centre } => {
            store.write(|tx, _| {
                tx.execute(
                    "UPDATE uploads SET complete = 1, received = ?2, centre_complete = ?3 WHERE sha256 = ?1",
                    params![sha, size as i64, centre as i64],
                )
                .map_err(db)?;
                Ok(())
            })?;
            summary.files_uploaded += 1;
        }
        FileUpload::Unfinished => {}
    }
    Ok(())
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

fn decode<T: DeserializeOwned>(response: Response, what: &str) -> Result<T, Attempt> {
    let status = response.status();
    let bytes = response
        .bytes()
        .map_err(|e| Attempt::Transient(format!("{what}: the answer broke off: {}", error_chain(&e))))?;
    if status.is_success() {
        return serde_json::from_slice(&bytes)
            .map_err(|e| Attempt::Transient(format!("{what}: an unreadable answer ({e})")));
    }
    let body: Option<ErrorBody> = serde_json::from_slice(&bytes).ok();
    let message =
        body.as_ref().map(|b| format!("{} ({})", b.message, b.code)).unwrap_or_else(|| format!("HTTP {status}"));
    let code = body.map(|b| b.code).unwrap_or_default();
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::REQUEST_TIMEOUT {
        return Err(Attempt::Transient(format!("{what}: {message}")));
    }
    let e = match (status, code.as_str()) {
        (StatusCode::CONFLICT, "reset_required") => SyncError::Refused(format!("reset_required: {message}")),
        _ => SyncError::Refused(format!("{what}: {message}")),
    };
    Err(Attempt::Permanent(e))
}

fn gzip_json(value: &impl Serialize) -> Vec<u8> {
    let json = serde_json::to_vec(value).expect("serialises");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&json).expect("in memory");
    enc.finish().expect("in memory")
}

fn sync_meta(tx: &Transaction<'_>, key: &str) -> Result<Option<String>, FieldError> {
    tx.query_row("SELECT value FROM sync_meta WHERE key = ?1", [key], |r| r.get(0)).optional().map_err(db)
}

fn set_sync_meta(tx: &Transaction<'_>, key: &str, value: &str) -> Result<(), FieldError> {
    tx.execute(
        "INSERT INTO sync_meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [key, value],
    )
    .map_err(db)?;
    Ok(())
}

fn acked(tx: &Transaction<'_>, origin: OriginId) -> Result<u64, FieldError> {
    let v: Option<i64> = tx
        .query_row("SELECT server_seq FROM acks WHERE origin = ?1", [origin.to_string()], |r| r.get(0))
        .optional()
        .map_err(db)?;
    Ok(v.unwrap_or(0) as u64)
}

fn set_acks(
    tx: &Transaction<'_>,
    origin: OriginId,
    server: ChainHead,
    upstream: Option<ChainHead>,
) -> Result<(), FieldError> {
    tx.execute(
        "INSERT INTO acks (origin, server_seq, server_hash, upstream_seq, upstream_hash) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (origin) DO UPDATE SET server_seq = excluded.server_seq, server_hash = excluded.server_hash,
             upstream_seq = COALESCE(excluded.upstream_seq, acks.upstream_seq), upstream_hash = COALESCE(excluded.upstream_hash, acks.upstream_hash)",
        params![origin.to_string(), server.seq as i64, server.hash.to_hex(), upstream.map(|u| u.seq as i64), upstream.map(|u| u.hash.to_hex())],
    )
    .map_err(db)?;
    Ok(())
}

impl Field {
    /// The server URL and token saved by the last sync, if any.
    pub fn saved_server(&mut self) -> Result<(Option<String>, Option<String>), FieldError> {
        self.store.read(|tx, _| Ok((sync_meta(tx, "server")?, sync_meta(tx, "token")?)))
    }

    /// Syncs with a server. Resumes exactly where an interrupted sync stopped: every
    /// step records what the server acknowledged before the next begins.
    pub fn sync(&mut self, opts: &SyncOptions, progress: &mut dyn FnMut(Progress)) -> Result<SyncSummary, SyncError> {
        let started = Instant::now();
        let result = self.sync_steps(opts, progress, started);
        let now = self.now() as i64;
        let note = match &result {
            Ok(_) => "complete".to_owned(),
            Err(e) => format!("failed: {e}"),
        };
        self.store.write(|tx, _| {
            set_sync_meta(tx, "server", &opts.server)?;
            set_sync_meta(tx, "token", &opts.token)?;
            set_sync_meta(tx, "last_sync_result", &note)?;
            if result.is_ok() {
                set_sync_meta(tx, "last_sync_at", &now.to_string())?;
            }
            Ok(())
        })?;
        result
    }

    fn sync_steps(
        &mut self,
        opts: &SyncOptions,
        progress: &mut dyn FnMut(Progress),
        started: Instant,
    ) -> Result<SyncSummary, SyncError> {
        let mut builder =
            Client::builder().timeout(opts.timeout).gzip(true).https_only(opts.server.starts_with("https:"));
        if let Some(path) = &opts.ca_file {
            let pem = std::fs::read(path)
                .map_err(|source| SyncError::Local(FieldError::ReadFile { path: path.clone(), source }))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                SyncError::Local(FieldError::Invalid(format!("{}: not a PEM certificate bundle: {e}", path.display())))
            })?;
            if certs.is_empty() {
                return Err(SyncError::Local(FieldError::Invalid(format!("{}: no certificate in it", path.display()))));
            }
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let client = builder.build().map_err(|e| SyncError::Local(FieldError::Invalid(format!("HTTP client: {e}"))))?;
        let mut http = Http { client, opts, retries: 0, progress };
        let mut summary = SyncSummary::default();
        let me = self.store.read(|tx, _| require_identity(tx))?;

        (http.progress)(Progress::Phase("connecting"));
        let who: Whoami = http.send("whoami", &|c| c.get(http_url(opts, "/v1/whoami")))?;
        if who.protocol != PROTOCOL_VERSION {
            return Err(SyncError::Refused(format!(
                "the server speaks protocol {}, this device {PROTOCOL_VERSION}",
                who.protocol
            )));
        }
        if who.role != "assessor"
            || who.assessor.as_deref() != Some(me.assessor.as_str())
            || who.region.as_deref() != Some(me.region.as_str())
        {
            return Err(SyncError::Refused(format!(
                "the token is for {} {} in {}, but this device belongs to assessor {} in {}",
                who.role,
                who.assessor.as_deref().unwrap_or("-"),
                who.region.as_deref().unwrap_or("-"),
                me.assessor,
                me.region
            )));
        }

        // Another store behind the same address (a server restored from a backup, or
        // moved): what the old one held of our files says nothing of this one, so
        // every file not freed is announced again (the server answers at once for
        // those it holds).
        self.store.write(|tx, _| {
            let store = who.store.to_string();
            if sync_meta(tx, "store")?.is_some_and(|known| known != store) {
                tx.execute("UPDATE uploads SET complete = 0, received = 0, centre_complete = 0 WHERE pruned = 0", [])
                    .map_err(db)?;
            }
            set_sync_meta(tx, "store", &store)
        })?;

        // What the server holds of us: the truth to push from (reinstall, restored server).
        // With it, our own count of what waits, for the office's sync-health view.
        let pending = self.pending()?;
        let status: StatusResponse = http.send("status", &|c| {
            c.post(http_url(opts, "/v1/origins/status"))
                .json(&StatusRequest { origins: vec![me.origin], pending: Some(pending) })
        })?;
        if let Some(s) = status.origins.first() {
            self.check_server_head(me.origin, s.held)?;
            self.store.write(|tx, _| set_acks(tx, me.origin, s.held, s.upstream))?;
        }

        // Push.
        (http.progress)(Progress::Phase("sending records"));
        let keys = self.signing_keys()?;
        let total = self.store.read(|tx, _| Ok(log::head(tx, me.origin)?.0))?;
        loop {
            let (head, acked_now) =
                self.store.read(|tx, _| Ok((log::head(tx, me.origin)?.0, acked(tx, me.origin)?)))?;
            (http.progress)(Progress::Pushed(acked_now, total));
            let Some(plan) = plan_push(head, acked_now, opts.batch.min(limits::MAX_OPS_PER_PUSH)) else { break };
            let ops = self.store.read(|tx, _| log::read_ops(tx, Some(me.origin), plan.from, plan.to))?;
            // The head after this batch, signed: it vouches for every op up to it.
            let heads = match ops.last() {
                Some(last) => vec![SignedHead::sign(&keys, me.origin, ChainHead { seq: last.seq, hash: last.hash })],
                None => Vec::new(),
            };
            let body = gzip_json(&PushRequest { ops, heads });
            let response: PushResponse = http.send("push", &|c| {
                c.post(http_url(opts, "/v1/ops/push"))
                    .header("content-type", "application/json")
                    .header("content-encoding", "gzip")
                    .body(body.clone())
            })?;
            let result = response
                .origins
                .iter()
                .find(|r| r.origin == me.origin)
                .ok_or_else(|| SyncError::Diverged("the push answer does not mention this device".into()))?;
            let outcome = self.store.read(|tx, _| {
                Ok(apply_push_result(head, acked_now, result, |seq| log::hash_at(tx, me.origin, seq).ok().flatten()))
            })?;
            match outcome {
                PushOutcome::Diverged { reason } => return Err(SyncError::Diverged(reason)),
                PushOutcome::Acked { acked: new, rewound } => {
                    summary.pushed += result.stored as u64;
                    summary.quarantined = result
                        .quarantined
                        .iter()
                        .map(|q| {
                            format!(
                                "#{} {}: {}",
                                q.seq,
                                serde_json::to_value(q.code)
                                    .ok()
                                    .and_then(|v| v.as_str().map(str::to_owned))
                                    .unwrap_or_default(),
                                q.message
                            )
                        })
                        .collect();
                    self.store.write(|tx, _| set_acks(tx, me.origin, result.held, None))?;
                    if new == acked_now && !rewound {
                        // The server took nothing: resending the same batch would loop.
                        return Err(SyncError::Diverged(format!(
                            "the server holds op #{new} of this device and did not take op #{}",
                            plan.from
                        )));
                    }
                }
            }
        }

        // Evidence.
        (http.progress)(Progress::Phase("sending photos"));
        self.upload_evidence(&mut http, &mut summary)?;

        // Instruments and assignments (before the pull: pulled records refer to them).
        (http.progress)(Progress::Phase("refreshing assignments"));
        let list: InstrumentList = http.send("instruments", &|c| c.get(http_url(opts, "/v1/instruments")))?;
        for summary_item in list.instruments {
            let reference =
                sidak_core::instrument::InstrumentRef { id: summary_item.id.clone(), version: summary_item.version };
            if self.store.instruments().get(&reference).is_some_and(|i| i.digest == summary_item.digest) {
                continue;
            }
            let doc: serde_json::Value = http.send("instrument", &|c| {
                c.get(http_url(opts, &format!("/v1/instruments/{}/{}", reference.id, reference.version)))
            })?;
            let instrument = sidak_core::instrument::Instrument::from_document(doc)
                .map_err(|e| SyncError::Diverged(format!("the server's {reference} does not load here: {e}")))?;
            self.load_instrument(&instrument)?;
        }
        let assignments: AssignmentList = http.send("assignments", &|c| c.get(http_url(opts, "/v1/assignments")))?;
        self.load_assignments(&assignments)?;

        // Pull.
        (http.progress)(Progress::Phase("receiving updates"));
        self.pull(&mut http, &mut summary)?;

        // What the server and the centre hold now.
        let pending = self.pending()?;
        let status: StatusResponse = http.send("status", &|c| {
            c.post(http_url(opts, "/v1/origins/status"))
                .json(&StatusRequest { origins: vec![me.origin], pending: Some(pending) })
        })?;
        if let Some(s) = status.origins.first() {
            self.check_server_head(me.origin, s.held)?;
            self.store.write(|tx, _| set_acks(tx, me.origin, s.held, s.upstream))?;
            summary.server_held = s.held.seq;
            summary.upstream_held = s.upstream.map(|u| u.seq);
            summary.clock_flagged = s.clock_flagged;
        }
        let status = self.status()?;
        summary.unsent_ops = status.unsent_ops;
        summary.unsent_files = status.unsent_files;
        summary.retries = http.retries;
        summary.complete = summary.unsent_ops == 0 && summary.unsent_files == 0;
        summary.seconds = started.elapsed().as_secs_f64();
        Ok(summary)
    }

    /// Refuses to go on when the server holds ops of ours we never wrote, or another
    /// op under our (origin, seq).
    /// What this device has not sent, as it counts it.
    fn pending(&mut self) -> Result<Pending, SyncError> {
        let me = self.store.read(|tx, _| require_identity(tx))?;
        let (head, acked, files) = self.store.read(|tx, _| {
            let files: i64 =
                tx.query_row("SELECT COUNT(*) FROM uploads WHERE complete = 0", [], |r| r.get(0)).map_err(db)?;
            Ok((log::head(tx, me.origin)?.0, acked(tx, me.origin)?, files as u64))
        })?;
        Ok(Pending { ops: head.saturating_sub(acked), files })
    }

    fn check_server_head(&mut self, origin: OriginId, held: ChainHead) -> Result<(), SyncError> {
        if held.seq == 0 {
            return Ok(());
        }
        let ours = self.store.read(|tx, _| log::hash_at(tx, origin, held.seq))?;
        match ours {
            Some(h) if h == held.hash => Ok(()),
            Some(_) => Err(SyncError::Diverged(format!(
                "the server's op #{} of this device differs from the device's own",
                held.seq
            ))),
            None => Err(SyncError::Diverged(format!(
                "the server holds {} ops of this device, more than it wrote",
                held.seq
            ))),
        }
    }

    fn upload_evidence(&mut self, http: &mut Http<'_>, summary: &mut SyncSummary) -> Result<(), SyncError> {
        let pending: Vec<(String, u64, String)> = self.store.read(|tx, _| {
            let mut stmt = tx.prepare("SELECT b.sha256, b.size, b.media_type FROM uploads u JOIN blobs b ON b.sha256 = u.sha256 WHERE u.complete = 0 AND u.pruned = 0 AND u.failed IS NULL ORDER BY b.added_at").map_err(db)?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64, r.get::<_, String>(2)?))).map_err(db)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db)
        })?;
        let total: u64 = pending.iter().map(|p| p.1).sum();
        let opts = http.opts;
        // Several files travel at once, each on its own thread and each file's chunks in
        // order (§6.4): while one chunk is written and synced on the server, another
        // crosses the link. This thread keeps the display and records what each file
        // became; the threads only read the files and talk to the server.
        let senders = opts.files_at_once.clamp(1, MAX_FILES_AT_ONCE).min(pending.len());
        let files = Files { queue: Mutex::new(pending.into_iter()), stop: AtomicBool::new(false) };
        let (report, reports) = mpsc::channel::<Report>();
        let (blobs, store, client) = (&self.blobs, &mut self.store, &http.client);
        let mut first_error = None;
        std::thread::scope(|scope| {
            for _ in 0..senders {
                let (report, files) = (report.clone(), &files);
                // Each thread owns its sender: when the last ends, the loop below does too.
                scope.spawn(move || send_files(client, opts, blobs, files, &report));
            }
            drop(report);
            for r in reports {
                let done = match r {
                    Report::Progress(p) => {
                        (http.progress)(p);
                        continue;
                    }
                    Report::Sent(len) => {
                        summary.bytes_uploaded += len;
                        (http.progress)(Progress::Uploaded(summary.bytes_uploaded, total));
                        continue;
                    }
                    Report::Retries(n) => {
                        http.retries += n;
                        continue;
                    }
                    Report::Done(sha, outcome) => record_upload(store, summary, &sha, outcome),
                };
                if let Err(e) = done {
                    files.stop.store(true, Ordering::Relaxed);
                    first_error.get_or_insert(e);
                }
            }
        });
        if let Some(e) = first_error {
            return Err(e);
        }
        // Files this server holds but the centre may not yet: ask again, so that
        // `prune` knows what it may free.
        let waiting: Vec<String> = self.store.read(|tx, _| {
            let mut stmt = tx
                .prepare("SELECT sha256 FROM uploads WHERE complete = 1 AND centre_complete = 0 AND pruned = 0")
                .map_err(db)?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(db)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db)
        })?;
        for sha in waiting {
            let status: EvidenceStatus =
                match http.send("evidence status", &|c| c.get(http_url(opts, &format!("/v1/evidence/{sha}/status")))) {
                    Ok(s) => s,
                    // The server will not say (the record citing it is held back for
                    // review, say): the file stays, nothing else is affected.
                    Err(SyncError::Refused(_)) => continue,
                    Err(e) => return Err(e),
                };
            if status.centre_complete == Some(true) {
                self.store.write(|tx, _| {
                    tx.execute("UPDATE uploads SET centre_complete = 1 WHERE sha256 = ?1", [&sha]).map_err(db)?;
                    Ok(())
                })?;
            }
        }
        Ok(())
    }

    fn pull(&mut self, http: &mut Http<'_>, summary: &mut SyncSummary) -> Result<(), SyncError> {
        let opts = http.opts;
        let limit = opts.page.clamp(1, limits::MAX_PULL_LIMIT);
        let client = http.client.clone();
        // This device's own ops are left out of the pages: it holds them already.
        let mut omit = Some(self.store.read(|tx, _| require_identity(tx))?.origin);
        std::thread::scope(|scope| {
            // The next page, asked for while the current one is read and applied.
            let mut ahead: Option<Ahead<'_>> = None;
            loop {
                let cursor: Option<Cursor> =
                    self.store.read(|tx, _| Ok(sync_meta(tx, "cursor")?.and_then(|c| c.parse().ok())))?;
                let path_at = |cursor: Option<&str>| {
                    let mut path = match cursor {
                        Some(c) => format!("/v1/ops/pull?cursor={c}&limit={limit}"),
                        None => format!("/v1/ops/pull?limit={limit}"),
                    };
                    if let Some(me) = omit {
                        path.push_str(&format!("&omit_origin={me}"));
                    }
                    path
                };
                let path = path_at(cursor.map(|c| c.to_string()).as_deref());
                let next_path = |c: &str| path_at(Some(c));
                // The page asked for ahead, if it is this one and arrived whole; otherwise
                // (a fault, a restart, another cursor) it is asked for again, with retries.
                let ready = ahead
                    .take()
                    .filter(|a: &Ahead<'_>| a.path == path)
                    .and_then(|a| a.answer.join().ok()?.ok())
                    .and_then(|response| read_page(scope, &client, opts, &next_path, response).ok());
                let page = match ready {
                    Some(read) => {
                        summary.pages_asked_ahead += 1;
                        Ok(read)
                    }
                    None => http.send_with("pull", &|c| c.get(http_url(opts, &path)), &mut |response| {
                        read_page(scope, &client, opts, &next_path, response)
                    }),
                };
                let page = match page {
                    // A server from before `omit_origin` (proto §5.4) refuses the parameter:
                    // pull everything from it, as before, rather than not at all.
                    Err(SyncError::Refused(m))
                        if omit.is_some() && m.contains("omit_origin") && m.ends_with("(bad_query)") =>
                    {
                        omit = None;
                        continue;
                    }
                    Err(SyncError::Refused(m)) if m.starts_with("reset_required") => {
                        // Start again: forget the cursor, pull from zero; local ops stay.
                        summary.restarted_pull = true;
                        self.store.write(|tx, _| {
                            tx.execute("DELETE FROM sync_meta WHERE key = 'cursor'", []).map_err(db)?;
                            Ok(())
                        })?;
                        continue;
                    }
                    other => other?,
                };
                let (page, next) = page;
                ahead = next;
                let now = self.now();
                let applied = self.store.write(|tx, _| {
                    let plan = plan_pull_page(cursor, &page, |op| match log::hash_at(tx, op.origin, op.seq) {
                        Ok(Some(h)) if h == op.hash => Held::Same,
                        Ok(Some(h)) => Held::Different(h),
                        _ => Held::No,
                    });
                    let plan = match plan {
                        Ok(p) => p,
                        Err(PullError::StoreChanged { .. }) => {
                            tx.execute("DELETE FROM sync_meta WHERE key = 'cursor'", []).map_err(db)?;
                            return Ok(None);
                        }
                        Err(e) => return Err(FieldError::Invalid(format!("pull: {e}"))),
                    };
                    let n = plan.store.len() as u64;
                    let again = plan.duplicates as u64;
                    for op in &plan.store {
                        log::insert(tx, op)?;
                    }
                    // Mirror the server: apply what it applied, hold what it holds back.
                    for op in &plan.apply {
                        log::apply(tx, op)?;
                    }
                    set_sync_meta(tx, "cursor", &plan.cursor.to_string())?;
                    log::observe_clock(tx, page.server_hlc, now)?;
                    Ok(Some((n, again, plan.more)))
                })?;
                match applied {
                    None => {
                        summary.restarted_pull = true;
                        continue;
                    }
                    Some((n, again, more)) => {
                        summary.pulled += n;
                        summary.pulled_again += again;
                        (http.progress)(Progress::Pulled(summary.pulled));
                        if !more {
                            return Ok(());
                        }
                    }
                }
            }
        })
    }
}

fn http_url(opts: &SyncOptions, path: &str) -> String {
    format!("{}{path}", opts.server)
}
