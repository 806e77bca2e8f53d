//! A regional server's replication to the centre, over the same protocol a device
//! uses (proto/sync-v1.md), with a `peer` token of its region.
//!
//! One round ([`replicate_once`]): learn who we are at the centre; fetch instrument
//! versions we lack; push every op of this region's origins (devices and this server)
//! that the centre does not hold yet, each with its original origin and seq, and
//! record what the centre acknowledges (that is what a device sees as "the centre
//! holds it"); upload the evidence files the centre lacks; pull what the centre holds
//! for this region (registry, assignments, corrections, devices that synced to the
//! centre directly) and absorb it. Every step resumes where the last one stopped:
//! acknowledged heads, the upstream pull cursor and per-file flags are in the store.
//! [`spawn`] runs rounds continuously until shutdown, and catches up by itself after
//! either server was down.

use std::collections::BTreeSet;
use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::ScopedJoinHandle;
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::StatusCode;
use rusqlite::{params, OptionalExtension};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sidak_core::chain::ChainHead;
use sidak_core::hash::Sha256Digest;
use sidak_core::ids::{OriginId, StoreId};
use sidak_core::instrument::InstrumentRef;
use sidak_core::op::Op;
use sidak_core::sign::SignedHead;
use sidak_core::wire::{
    cursor_ahead, limits, Cursor, EvidenceBegin, EvidenceStatus, InstrumentList, PullResponse, PushRequest,
    PushResponse, StatusRequest, StatusResponse, Whoami, PROTOCOL_HEADER, PROTOCOL_VERSION,
};

use crate::db::{meta, set_meta};
use crate::error::ApiError;
use crate::ledger::{self, Absorbed};
use crate::state::AppState;

/// `meta` key holding the upstream's URL while this server replicates to one.
pub const UPSTREAM_KEY: &str = "upstream_url";

/// How to reach the centre.
#[derive(Clone, Debug)]
pub struct UpstreamConfig {
    /// The centre's base URL.
    pub url: String,
    /// A `peer` token for this region, issued by the centre.
    pub token: String,
    /// Time between rounds while nothing new arrives.
    pub every: Duration,
    /// Timeout of one request.
    pub timeout: Duration,
    /// Certificate authorities (PEM) to trust besides the public ones.
    pub ca_file: Option<std::path::PathBuf>,
    /// Ops per pull page from the centre (at most 1000).
    pub page: usize,
    /// Evidence files sent to the centre at once (1 to [`MAX_FILES_AT_ONCE`]), each
    /// file's chunks in order: while the centre writes one file's chunk, another's
    /// crosses the link.
    pub files_at_once: usize,
}

/// At most this many evidence files are sent to the centre at once, whatever
/// [`UpstreamConfig`] asks.
pub const MAX_FILES_AT_ONCE: usize = 8;

impl UpstreamConfig {
    /// Defaults: a round every 5 s, 30 s per request.
    pub fn new(url: &str, token: &str) -> UpstreamConfig {
        UpstreamConfig {
            url: url.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            every: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            ca_file: None,
            page: limits::MAX_PULL_LIMIT,
            files_at_once: 2,
        }
    }
}

/// What one round did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RoundReport {
    /// Ops the centre newly stored.
    pub pushed: u64,
    /// Evidence files completed at the centre.
    pub files: u64,
    /// Evidence bytes sent.
    pub bytes: u64,
    /// Ops pulled and stored here.
    pub pulled: u64,
    /// Pull pages asked for while the page before was still absorbed (proto §5.4).
    pub pages_asked_ahead: u64,
    /// Instrument versions fetched.
    pub instruments: u64,
    /// Ops the centre refused (chain faults) or that forked: listed in `rejections`.
    pub refused: u64,
    /// True when, at the end of the round, the centre holds every op and file of this
    /// region that this server holds.
    pub caught_up: bool,
}

/// Why a round stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    /// The centre could not be reached or did not answer: the next round retries.
    #[error("the centre could not be reached or did not answer: {0}")]
    Network(String),
    /// The centre refused (token, scope, version): retrying will not help until an
    /// operator acts.
    #[error("the centre refused: {0}")]
    Refused(String),
    /// This server's store failed.
    #[error(transparent)]
    Store(#[from] ApiError),
}

struct Upstream<'a> {
    client: Client,
    cfg: &'a UpstreamConfig,
}

impl Upstream<'_> {
    fn send<T: DeserializeOwned>(&self, what: &str, request: RequestBuilder) -> Result<T, ReplicationError> {
        decode(what, self.answer(what, request)?)
    }

    /// The answer's status and headers; its body is read by [`decode`].
    fn answer(&self, what: &str, request: RequestBuilder) -> Result<Response, ReplicationError> {
        self.authorised(request).send().map_err(|e| ReplicationError::Network(format!("{what}: {e}")))
    }

    fn authorised(&self, request: RequestBuilder) -> RequestBuilder {
        request.bearer_auth(&self.cfg.token).header(PROTOCOL_HEADER, PROTOCOL_VERSION.to_string())
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.cfg.url)
    }
}

fn decode<T: DeserializeOwned>(what: &str, response: Response) -> Result<T, ReplicationError> {
    let status = response.status();
    let bytes =
        response.bytes().map_err(|e| ReplicationError::Network(format!("{what}: the answer broke off: {e}")))?;
    if status.is_success() {
        return serde_json::from_slice(&bytes)
            .map_err(|e| ReplicationError::Network(format!("{what}: an unreadable answer: {e}")));
    }
    let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let code = body["code"].as_str().unwrap_or("").to_owned();
    let message = format!("{what}: {} ({code})", body["message"].as_str().unwrap_or(status.as_str()));
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::REQUEST_TIMEOUT {
        Err(ReplicationError::Network(message))
    } else if code == "reset_required" {
        Err(ReplicationError::Refused(format!("reset_required: {message}")))
    } else {
        Err(ReplicationError::Refused(message))
    }
}

/// The upstream as this server knows it.
struct Identity {
    region: String,
    upstream_origin: OriginId,
}

/// Runs one replication round.
pub fn replicate_once(state: &AppState, cfg: &UpstreamConfig) -> Result<RoundReport, ReplicationError> {
    let client = crate::manifests::client(cfg.timeout, cfg.ca_file.as_deref()).map_err(ReplicationError::Refused)?;
    let up = Upstream { client, cfg };
    let mut report = RoundReport::default();
    let id = identify(state, &up)?;
    fetch_instruments(state, &up, &mut report)?;
    push_ops(state, &up, &id, &mut report)?;
    push_evidence(state, &up, &mut report)?;
    pull(state, &up, &id, &mut report)?;
    report.caught_up = caught_up(state, &id)?;
    Ok(report)
}

/// Checks the token and learns the region; starts over cleanly when the store behind
/// the centre's address changed (a restored centre).
fn identify(state: &AppState, up: &Upstream<'_>) -> Result<Identity, ReplicationError> {
    let who: Whoami = up.send("whoami", up.client.get(up.url("/v1/whoami")))?;
    if who.protocol != PROTOCOL_VERSION {
        return Err(ReplicationError::Refused(format!("the centre speaks protocol {}", who.protocol)));
    }
    let region = match (who.role.as_str(), who.region) {
        ("peer", Some(r)) => r,
        (role, region) => {
            return Err(ReplicationError::Refused(format!(
                "the upstream token is a {role} token{}; a regional server needs a peer token of its region",
                region.map(|r| format!(" of {r}")).unwrap_or_default()
            )))
        }
    };
    if who.store == state.store() {
        return Err(ReplicationError::Refused("the upstream is this server itself".into()));
    }
    let own = state.server_origin();
    let url = up.cfg.url.clone();
    let (store, upstream_origin) = (who.store, who.server_origin);
    state.db().write_blocking(|tx| {
        if let Some(known) = meta(tx, "upstream_store")? {
            if known != store.to_string() {
                tracing::warn!(%known, now = %store, "the centre's store changed: replicating everything again");
                tx.execute("DELETE FROM meta WHERE key = 'upstream_cursor'", [])?;
                tx.execute("UPDATE blobs SET upstream_complete = 0", [])?;
                tx.execute("UPDATE origins SET upstream_seq = NULL, upstream_hash = NULL", [])?;
            }
        }
        set_meta(tx, "upstream_store", &store.to_string())?;
        set_meta(tx, "upstream_origin", &upstream_origin.to_string())?;
        set_meta(tx, "region", &region)?;
        set_meta(tx, UPSTREAM_KEY, &url)?;
        // This server writes for its region: its origin is registered there.
        tx.execute(
            "UPDATE origins SET region = ?2 WHERE origin = ?1 AND region IS NULL",
            params![own.to_string(), region],
        )?;
        Ok::<_, ApiError>(())
    })?;
    Ok(Identity { region, upstream_origin })
}

fn fetch_instruments(state: &AppState, up: &Upstream<'_>, report: &mut RoundReport) -> Result<(), ReplicationError> {
    let list: InstrumentList = up.send("instruments", up.client.get(up.url("/v1/instruments")))?;
    let held = state.instruments();
    let mut added = false;
    for item in list.instruments {
        let r = InstrumentRef { id: item.id.clone(), version: item.version };
        if held.contains_key(&r) {
            continue;
        }
        let doc: serde_json::Value =
            up.send("instrument", up.client.get(up.url(&format!("/v1/instruments/{}/{}", item.id, item.version))))?;
        let instrument = sidak_core::instrument::load_instrument(&doc.to_string())
            .map_err(|e| ReplicationError::Refused(format!("instrument {r} from the centre does not load: {e}")))?;
        let now = state.now();
        state.db().write_blocking(|tx| crate::admin::publish_instrument(tx, &instrument, now))?;
        report.instruments += 1;
        added = true;
    }
    if added {
        state.reload_instruments()?;
    }
    Ok(())
}

/// The origins this server replicates: its region's, and its own.
fn own_origins(state: &AppState, id: &Identity) -> Result<Vec<(OriginId, ChainHead)>, ApiError> {
    let own = state.server_origin().to_string();
    let skip = id.upstream_origin.to_string();
    let region = id.region.clone();
    state.db().read_blocking(move |tx| {
        let mut stmt = tx.prepare(
            "SELECT origin, head_seq, head_hash FROM origins
             WHERE (region = ?1 OR origin = ?2) AND origin != ?3 AND head_seq > 0
               AND origin NOT IN (SELECT origin FROM partial_origins) ORDER BY origin",
        )?;
        let rows = stmt.query_map(params![region, own, skip], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (o, seq, hash) = row?;
            let origin: OriginId = o.parse().map_err(ApiError::internal)?;
            let hash: Sha256Digest = hash.parse().map_err(ApiError::internal)?;
            out.push((origin, ChainHead { seq: seq as u64, hash }));
        }
        Ok(out)
    })
}

fn record_upstream(state: &AppState, origin: OriginId, held: ChainHead) -> Result<(), ApiError> {
    state.db().write_blocking(|tx| {
        tx.execute(
            "UPDATE origins SET upstream_seq = ?2, upstream_hash = ?3 WHERE origin = ?1",
            params![origin.to_string(), held.seq as i64, held.hash.to_hex()],
        )?;
        Ok(())
    })
}

fn push_ops(
    state: &AppState,
    up: &Upstream<'_>,
    id: &Identity,
    report: &mut RoundReport,
) -> Result<(), ReplicationError> {
    let origins = own_origins(state, id)?;
    // What the centre holds of each: the truth to push from.
    let mut held = std::collections::BTreeMap::new();
    for chunk in origins.chunks(1000) {
        let request = StatusRequest { origins: chunk.iter().map(|(o, _)| *o).collect(), pending: None };
        let status: StatusResponse =
            up.send("origin status", up.client.post(up.url("/v1/origins/status")).json(&request))?;
        for s in status.origins {
            record_upstream(state, s.origin, s.held)?;
            held.insert(s.origin, s.held.seq);
        }
    }
    let mut queue: Vec<(OriginId, u64, u64)> = origins
        .iter()
        .filter_map(|(o, head)| {
            let acked = held.get(o).copied().unwrap_or(0);
            (head.seq > acked).then_some((*o, acked + 1, head.seq))
        })
        .collect();
    let own = state.server_origin();
    let keys = state.db().read_blocking(ledger::signing_keys)?;
    while !queue.is_empty() {
        // One request: up to the op limit, origin by origin, each in seq order, each
        // ending at a head its origin signed (this server signs its own on the spot;
        // a device's heads are the ones it signed when it pushed here).
        let mut ops: Vec<Op> = Vec::new();
        let mut heads: Vec<SignedHead> = Vec::new();
        let mut sent: Vec<(OriginId, u64)> = Vec::new();
        let mut unforwardable: Vec<OriginId> = Vec::new();
        for (origin, from, to) in queue.iter_mut() {
            let room = (limits::MAX_OPS_PER_PUSH - ops.len()) as u64;
            if room == 0 {
                break;
            }
            let (o, f, t) = (*origin, *from, *to);
            let plan = state.db().read_blocking(move |tx| -> Result<Option<(u64, Option<SignedHead>)>, ApiError> {
                if o == own || ledger::public_key(tx, o)?.is_none() {
                    return Ok(Some((t.min(f + room - 1), None)));
                }
                let signed = ledger::signed_heads(tx, o, f, t)?;
                let within = signed.iter().rev().find(|h| h.seq < f + room).cloned();
                Ok(within.map(|h| (h.seq, Some(h))))
            })?;
            let Some((last, head)) = plan else {
                if ops.is_empty() {
                    // Nothing this server holds signs the next stretch: it cannot vouch
                    // for those ops; the device will push them itself.
                    unforwardable.push(o);
                }
                break;
            };
            let batch = state.db().read_blocking(move |tx| ledger::ops_of(tx, o, f, last))?;
            match (head, batch.last()) {
                (Some(h), _) => heads.push(h),
                (None, Some(l)) if o == own => {
                    heads.push(SignedHead::sign(&keys, o, ChainHead { seq: l.seq, hash: l.hash }))
                }
                _ => {}
            }
            sent.push((o, last));
            ops.extend(batch);
            *from = last + 1;
        }
        for o in &unforwardable {
            tracing::warn!(origin = %o, "no signed head covers the next ops of this origin; the centre gets them from the device");
        }
        queue.retain(|(o, from, to)| from <= to && !unforwardable.contains(o));
        if ops.is_empty() {
            if unforwardable.is_empty() {
                break;
            }
            continue;
        }
        let body = gzip_json(&PushRequest { ops, heads });
        let response: PushResponse = up.send(
            "push",
            up.client
                .post(up.url("/v1/ops/push"))
                .header("content-type", "application/json")
                .header("content-encoding", "gzip")
                .body(body),
        )?;
        for r in response.origins {
            report.pushed += r.stored as u64;
            record_upstream(state, r.origin, r.held)?;
            if !r.rejected.is_empty() {
                report.refused += r.rejected.len() as u64;
                tracing::warn!(origin = %r.origin, rejected = ?r.rejected, "the centre refused ops");
            }
            // An origin whose chain the centre will not take further is left for an
            // operator (its rejections say why); the others go on.
            if let Some((_, last)) = sent.iter().find(|(o, _)| *o == r.origin) {
                if r.held.seq < *last {
                    queue.retain(|(o, _, _)| *o != r.origin);
                }
            }
        }
    }
    Ok(())
}

fn gzip_json(value: &impl Serialize) -> Vec<u8> {
    let json = serde_json::to_vec(value).unwrap_or_default();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let _ = enc.write_all(&json);
    enc.finish().unwrap_or_default()
}

/// The evidence files the centre lacks, sent `files_at_once` at a time (each file's
/// chunks in order, §6.4), as a device sends its own.
fn push_evidence(state: &AppState, up: &Upstream<'_>, report: &mut RoundReport) -> Result<(), ReplicationError> {
    let pending: Vec<(String, u64, String)> = state.db().read_blocking(|tx| {
        let mut stmt = tx.prepare(
            "SELECT sha256, size, media_type FROM blobs WHERE complete = 1 AND upstream_complete = 0 ORDER BY created_at",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, r.get(2)?)))?;
        Ok::<_, ApiError>(rows.collect::<Result<Vec<_>, _>>()?)
    })?;
    let senders = up.cfg.files_at_once.clamp(1, MAX_FILES_AT_ONCE).min(pending.len());
    let files = Files { queue: Mutex::new(pending.into_iter()), stop: AtomicBool::new(false) };
    let sent: Vec<(u64, u64, Result<(), ReplicationError>)> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..senders).map(|_| scope.spawn(|| send_files(state, up, &files))).collect();
        threads.into_iter().map(|t| t.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    });
    let mut first_error = None;
    for (files, bytes, result) in sent {
        report.files += files;
        report.bytes += bytes;
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// The files the centre lacks, shared by the sending threads.
struct Files {
    queue: Mutex<std::vec::IntoIter<(String, u64, String)>>,
    /// Set at the first failure: no thread starts another file.
    stop: AtomicBool,
}

/// One sending thread: takes the next file until none is left or one failed; returns
/// the files it completed, the bytes it sent, and its failure.
fn send_files(state: &AppState, up: &Upstream<'_>, files: &Files) -> (u64, u64, Result<(), ReplicationError>) {
    let (mut complete, mut bytes) = (0, 0);
    while !files.stop.load(Ordering::Relaxed) {
        let Some((sha, size, media_type)) = files.queue.lock().unwrap_or_else(|p| p.into_inner()).next() else {
            break;
        };
        match push_file(state, up, &sha, size, media_type, &mut bytes) {
            Ok(done) => complete += done as u64,
            Err(e) => {
                // Start no other file; the one in flight beside it finishes.
                files.stop.store(true, Ordering::Relaxed);
                return (complete, bytes, Err(e));
            }
        }
    }
    (complete, bytes, Ok(()))
}

/// Sends one file from where the centre says it stands; true once the centre holds it
/// whole (and this server has recorded that).
fn push_file(
    state: &AppState,
    up: &Upstream<'_>,
    sha: &str,
    size: u64,
    media_type: String,
    bytes: &mut u64,
) -> Result<bool, ReplicationError> {
    let begin = EvidenceBegin { size, media_type };
    let mut status: EvidenceStatus =
        up.send("evidence", up.client.post(up.url(&format!("/v1/evidence/{sha}"))).json(&begin))?;
    let path = state.blob_path(sha);
    let mut file = std::fs::File::open(&path).map_err(ApiError::internal)?;
    while !status.complete {
        let Some((offset, len)) =
            sidak_core::sync::next_chunk(status.size, status.received, limits::MAX_CHUNK_BYTES as u64)
        else {
            break;
        };
        let mut chunk = vec![0u8; len as usize];
        file.seek(SeekFrom::Start(offset)).map_err(ApiError::internal)?;
        file.read_exact(&mut chunk).map_err(ApiError::internal)?;
        status = up.send(
            "evidence chunk",
            up.client
                .put(up.url(&format!("/v1/evidence/{sha}?offset={offset}")))
                .header("content-type", "application/octet-stream")
                .body(chunk),
        )?;
        *bytes += len;
    }
    if status.complete {
        state.db().write_blocking(|tx| {
            tx.execute("UPDATE blobs SET upstream_complete = 1 WHERE sha256 = ?1", [sha])?;
            Ok::<_, ApiError>(())
        })?;
    }
    Ok(status.complete)
}

fn pull(state: &AppState, up: &Upstream<'_>, id: &Identity, report: &mut RoundReport) -> Result<(), ReplicationError> {
    let limit = up.cfg.page.clamp(1, limits::MAX_PULL_LIMIT);
    let path_at = |cursor: Option<&str>| match cursor {
        Some(c) => format!("/v1/ops/pull?cursor={c}&limit={limit}"),
        None => format!("/v1/ops/pull?limit={limit}"),
    };
    std::thread::scope(|scope| {
        // The next page, asked for as soon as a page's headers name its cursor (§5.4), so
        // that the centre writes it while this server absorbs the current one. Used only
        // if it continues from the cursor held after that; otherwise asked for again.
        let mut ahead: Option<(String, ScopedJoinHandle<'_, reqwest::Result<Response>>)> = None;
        loop {
            let cursor: Option<Cursor> = state
                .db()
                .read_blocking(|tx| Ok::<_, ApiError>(meta(tx, "upstream_cursor")?.and_then(|c| c.parse().ok())))?;
            let path = path_at(cursor.map(|c| c.to_string()).as_deref());
            let asked = ahead.take().filter(|(p, _)| *p == path).and_then(|(_, answer)| answer.join().ok()?.ok());
            let response = match asked {
                Some(response) => {
                    report.pages_asked_ahead += 1;
                    response
                }
                None => up.answer("pull", up.client.get(up.url(&path)))?,
            };
            let next =
                response.status().is_success().then(|| cursor_ahead(|h| response.headers().get(h)?.to_str().ok()));
            if let Some(next) = next.flatten() {
                let next = path_at(Some(&next.to_string()));
                let request = up.authorised(up.client.get(up.url(&next)));
                ahead = Some((next, scope.spawn(move || request.send())));
            }
            let page: PullResponse = match decode("pull", response) {
                Err(ReplicationError::Refused(m)) if m.starts_with("reset_required") => {
                    state.db().write_blocking(|tx| {
                        tx.execute("DELETE FROM meta WHERE key = 'upstream_cursor'", [])?;
                        Ok::<_, ApiError>(())
                    })?;
                    continue;
                }
                other => other?,
            };
            check_page(cursor, &page)?;
            let instruments = state.instruments();
            let now = state.now();
            let region = id.region.clone();
            let (stored, refused) = state.db().write_blocking(move |tx| {
                let mut dirty = BTreeSet::new();
                let (mut stored, mut refused) = (0u64, 0u64);
                for pulled in &page.ops {
                    match ledger::absorb(
                        tx,
                        &instruments,
                        &pulled.op,
                        pulled.quarantined,
                        Some(&region),
                        now,
                        &mut dirty,
                    )? {
                        Absorbed::Stored => stored += 1,
                        Absorbed::Duplicate => {}
                        Absorbed::Fork | Absorbed::Malformed => refused += 1,
                    }
                }
                let mut effects = crate::push::PushEffects::default();
                crate::push::retry_waiting(tx, &instruments, now, &mut effects)?;
                dirty.extend(effects.dirty);
                for institution in &dirty {
                    crate::results::recompute(tx, &instruments, institution)?;
                }
                set_meta(tx, "upstream_cursor", &page.cursor.to_string())?;
                let mut clock = ledger::clock(tx)?;
                let _ = clock.observe(page.server_hlc, now.max(0) as u64);
                ledger::save_clock(tx, &clock)?;
                Ok::<_, ApiError>((stored, refused))
            })?;
            report.pulled += stored;
            report.refused += refused;
            if !page.more {
                return Ok(());
            }
        }
    })
}

/// A page must continue from the cursor, in rising order, from the same store.
fn check_page(cursor: Option<Cursor>, page: &PullResponse) -> Result<(), ReplicationError> {
    let mut after = 0;
    if let Some(c) = cursor {
        if c.store != page.cursor.store {
            return Err(ReplicationError::Refused(format!(
                "the centre's pull cursor names store {} where {} was expected",
                page.cursor.store, c.store
            )));
        }
        after = c.seq;
    }
    for p in &page.ops {
        if p.server_seq <= after {
            return Err(ReplicationError::Network(format!("the centre sent a page out of order at {}", p.server_seq)));
        }
        after = p.server_seq;
    }
    Ok(())
}

/// True when the centre acknowledged every op and file of ours.
fn caught_up(state: &AppState, id: &Identity) -> Result<bool, ApiError> {
    let origins = own_origins(state, id)?;
    state.db().read_blocking(move |tx| {
        for (origin, head) in &origins {
            let up: Option<i64> = tx
                .query_row("SELECT upstream_seq FROM origins WHERE origin = ?1", [origin.to_string()], |r| r.get(0))
                .optional()?
                .flatten();
            if up.unwrap_or(0) < head.seq as i64 {
                return Ok(false);
            }
        }
        let files: i64 =
            tx.query_row("SELECT COUNT(*) FROM blobs WHERE complete = 1 AND upstream_complete = 0", [], |r| r.get(0))?;
        Ok(files == 0)
    })
}

/// The replication loop of a running regional server.
pub struct Replicator {
    wake: Arc<(Mutex<bool>, Condvar)>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Replicator {
    /// Asks for a round now (after a push arrived).
    pub fn wake(&self) {
        let (lock, cv) = &*self.wake;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_one();
    }

    /// Stops after the round in progress.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Replicator {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Starts replicating to the centre until stopped: a round every `cfg.every`, at once
/// when woken, and after a failure again with backoff (up to a minute), so that it
/// catches up by itself whichever side was down.
pub fn spawn(state: AppState, cfg: UpstreamConfig) -> Replicator {
    let wake = state.change_signal();
    state.notify_changed();
    let stop = Arc::new(AtomicBool::new(false));
    let (w, s) = (wake.clone(), stop.clone());
    let thread = std::thread::Builder::new()
        .name("sidak-upstream".into())
        .spawn(move || {
            let mut failures = 0u32;
            while !s.load(Ordering::SeqCst) {
                let started = Instant::now();
                let wait = match replicate_once(&state, &cfg) {
                    Ok(r) => {
                        failures = 0;
                        if r.pushed + r.pulled + r.files > 0 {
                            tracing::info!(
                                pushed = r.pushed,
                                pulled = r.pulled,
                                files = r.files,
                                caught_up = r.caught_up,
                                ms = started.elapsed().as_millis() as u64,
                                "replicated with the centre"
                            );
                        }
                        note(&state, None);
                        if r.caught_up {
                            cfg.every
                        } else {
                            Duration::ZERO
                        }
                    }
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        tracing::warn!(error = %e, "replication with the centre failed; retrying");
                        note(&state, Some(&e.to_string()));
                        let ms = sidak_core::sync::backoff_ms(failures, 250, 60_000, rand::random::<f64>());
                        Duration::from_millis(ms)
                    }
                };
                let (lock, cv) = &*w;
                let mut woken = lock.lock().unwrap_or_else(|p| p.into_inner());
                if !*woken && !wait.is_zero() {
                    woken = cv.wait_timeout(woken, wait).unwrap_or_else(|p| p.into_inner()).0;
                }
                *woken = false;
            }
        })
        .ok();
    Replicator { wake, stop, thread }
}

/// Records the outcome of the last round for status pages.
fn note(state: &AppState, error: Option<&str>) {
    let now = state.now();
    let _ = state.db().write_blocking(|tx| {
        match error {
            None => set_meta(tx, "upstream_last_ok", &now.to_string())?,
            Some(e) => set_meta(tx, "upstream_last_error", &format!("{now} {e}"))?,
        }
        Ok::<_, ApiError>(())
    });
}

/// The upstream's store id, when this server replicates to one.
pub fn upstream_store(state: &AppState) -> Result<Option<StoreId>, ApiError> {
    state.db().read_blocking(|tx| Ok(meta(tx, "upstream_store")?.and_then(|s| s.parse().ok())))
}
