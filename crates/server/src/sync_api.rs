//! The sync endpoints of proto/sync-v1.md §5: health, whoami, push, pull, origin
//! status, manifest, evidence, instruments and assignments.

use std::collections::BTreeMap;
use std::io::Write as _;

use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Json;
use rusqlite::{params, OptionalExtension, Transaction};
use serde_json::{json, Value};
use sidak_core::chain::ChainHead;
use sidak_core::hash::Sha256Digest;
use sidak_core::ids::{OriginId, StoreId};
use sidak_core::instrument::InstrumentRef;
use sidak_core::wire::*;

use crate::api::{bytes_response, json_body, raw_body, Caller, JsonBody, Presented, Routes};
use crate::auth::{Principal, Role, TokenCheck};
use crate::error::ApiError;
use crate::ledger::{self, OP_COLUMNS};
use crate::push_group;
use crate::results::{self, fields_of};
use crate::state::AppState;

/// Registers the sync routes.
pub fn routes(r: Routes) -> Routes {
    r.add(Method::GET, "/v1/health", get(health))
        .add(Method::GET, "/v1/whoami", get(whoami))
        .add(Method::POST, "/v1/ops/push", post(push_ops))
        .add(Method::GET, "/v1/ops/pull", get(pull_ops))
        .add(Method::POST, "/v1/origins/status", post(origin_status))
        .add(Method::GET, "/v1/manifest", get(manifest))
        .add(Method::POST, "/v1/evidence/{sha256}", post(evidence_begin))
        .add(Method::PUT, "/v1/evidence/{sha256}", put(evidence_chunk))
        .add(Method::GET, "/v1/evidence/{sha256}", get(evidence_download))
        .add(Method::GET, "/v1/evidence/{sha256}/status", get(evidence_status))
        .add(Method::GET, "/v1/instruments", get(instruments))
        .add(Method::GET, "/v1/instruments/{id}/{version}", get(instrument))
        .add(Method::GET, "/v1/assignments", get(assignments))
}

async fn health(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    if state.shutting_down() {
        return Err(ApiError::shutting_down("the server is shutting down"));
    }
    Ok(Json(json!({"status": "ok", "protocol": PROTOCOL_VERSION})))
}

async fn whoami(State(state): State<AppState>, Caller(who): Caller) -> Json<Whoami> {
    Json(Whoami {
        role: who.role.name().to_owned(),
        region: who.region,
        assessor: who.assessor,
        store: state.store(),
        server_origin: state.server_origin(),
        protocol: PROTOCOL_VERSION,
    })
}

async fn push_ops(
    State(state): State<AppState>,
    Caller(who): Caller,
    request: Request,
) -> Result<Json<PushResponse>, ApiError> {
    who.require(&[Role::Assessor, Role::Peer, Role::Admin])?;
    let request: PushRequest = json_body(request).await?;
    if request.ops.len() > limits::MAX_OPS_PER_PUSH {
        return Err(ApiError::too_many_ops(format!(
            "{} ops in one push; at most {}",
            request.ops.len(),
            limits::MAX_OPS_PER_PUSH
        )));
    }
    // Applied with whatever other pushes wait for the store's writer, in one
    // transaction (`push_group`); answered once that has committed.
    let (response, stored) = push_group::apply(&state, who, request, state.now()).await?;
    if stored > 0 {
        state.notify_changed();
    }
    Ok(Json(response))
}

/// The SQL condition selecting the ops a caller may pull (bound as ?2 region, ?3 assessor).
fn scope_sql(who: &Principal) -> &'static str {
    match who.role {
        Role::Admin => "1 = 1",
        Role::Supervisor | Role::Peer => "region = ?2",
        Role::Assessor => {
            "((class IN ('origin', 'assignment') AND assessor = ?3) OR (class = 'registry' AND region = ?2))"
        }
    }
}

/// Reads a query string: unknown or repeated parameters are `400 bad_query`.
pub fn parse_query(raw: Option<String>, allowed: &[&str]) -> Result<BTreeMap<String, String>, ApiError> {
    let mut out = BTreeMap::new();
    for pair in raw.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if !allowed.contains(&k) {
            return Err(ApiError::bad_query(format!(
                "unknown query parameter `{k}` (allowed: {})",
                allowed.join(", ")
            )));
        }
        if out.insert(k.to_owned(), v.to_owned()).is_some() {
            return Err(ApiError::bad_query(format!("`{k}` is given twice")));
        }
    }
    Ok(out)
}

/// Bytes of a pull page reserved for each op. A bench op is ~455 bytes of JSON (11.5 MB
/// over 25,328 ops); room for 560 keeps a full page from growing, and copying itself,
/// once more at its end.
const PULLED_OP_ROOM: usize = 560;

/// A pull's query, read and checked.
struct PullQuery {
    /// The caller's own origin, whose ops the page leaves out.
    omit: Option<String>,
    limit: usize,
    /// The `server_seq` the page starts after.
    after: u64,
}

impl PullQuery {
    fn parse(raw: Option<String>, store: StoreId) -> Result<PullQuery, ApiError> {
        let query = parse_query(raw, &["cursor", "limit", "omit_origin"])?;
        // A device names its own origin: it holds those ops already, and a day's sync would
        // otherwise download every op it just pushed.
        let omit: Option<String> = match query.get("omit_origin") {
            None => None,
            Some(o) => Some(
                o.parse::<OriginId>()
                    .map_err(|_| ApiError::bad_query(format!("omit_origin must be an origin id (a UUID), got `{o}`")))?
                    .to_string(),
            ),
        };
        let limit = match query.get("limit") {
            None => limits::DEFAULT_PULL_LIMIT,
            Some(l) => {
                l.parse::<usize>().ok().filter(|n| (1..=limits::MAX_PULL_LIMIT).contains(n)).ok_or_else(|| {
                    ApiError::bad_query(format!("limit must be 1 to {}, got `{l}`", limits::MAX_PULL_LIMIT))
                })?
            }
        };
        let cursor = match query.get("cursor") {
            None => None,
            Some(c) => Some(c.parse::<Cursor>().map_err(ApiError::bad_cursor)?),
        };
        if let Some(c) = cursor {
            if c.store != store {
                return Err(ApiError::reset_required(format!(
                    "the cursor is for store {}, this is store {}: pull again from the start",
                    c.store, store
                )));
            }
        }
        Ok(PullQuery { omit, limit, after: cursor.map(|c| c.seq).unwrap_or(0) })
    }
}

async fn pull_ops(
    State(state): State<AppState>,
    presented: Presented,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let store = state.store();
    let asked = PullQuery::parse(raw, store);
    // The token is checked in the page's own read transaction (`Presented`): a device
    // pulls page after page, and a store task and a transaction of its own for the
    // check were a tenth of a page's time. Its verdict still comes first.
    let token = presented.clone();
    let (check, page) = state
        .db()
        .read(move |tx| {
            let check = token.check(tx)?;
            let TokenCheck::Valid { principal: who, .. } = &check else { return Ok((check, None)) };
            let page = asked.and_then(|q| pull_page(tx, who, &q, store));
            Ok::<_, ApiError>((check, Some(page)))
        })
        .await?;
    presented.settle(&state, check).await?;
    let (page, next) = page.unwrap_or_else(|| Err(ApiError::internal("a pull read no page for a token in force")))?;
    // The page's cursor and `more` ahead of the body too (§5.4), so that a client can ask
    // for the next page while this one travels and is parsed.
    let mut response = bytes_response("application/json", page);
    let headers = response.headers_mut();
    headers.insert(CURSOR_HEADER, HeaderValue::from_str(&next.cursor.to_string()).map_err(ApiError::internal)?);
    headers.insert(MORE_HEADER, HeaderValue::from_static(if next.more { "true" } else { "false" }));
    Ok(response)
}

/// Where a page ends: its cursor and whether more may wait.
struct PageEnd {
    cursor: Cursor,
    more: bool,
}

/// A page of the ops `who` may pull, as `PullResponse` JSON, written as it is read
/// (each op's from its row).
fn pull_page(
    tx: &Transaction<'_>,
    who: &Principal,
    q: &PullQuery,
    store: StoreId,
) -> Result<(Vec<u8>, PageEnd), ApiError> {
    let (after, limit) = (q.after, q.limit);
    let last: i64 = tx.prepare_cached("SELECT COALESCE(MAX(server_seq), 0) FROM ops")?.query_row([], |r| r.get(0))?;
    if after > last as u64 {
        return Err(ApiError::reset_required(format!("the cursor is at {after} but this store ends at {last} (restored from a backup?): pull again from the start")));
    }
    let sql = format!("SELECT server_seq, received_at, quarantined, {OP_COLUMNS} FROM ops WHERE server_seq > ?1 AND origin IS NOT ?5 AND {} ORDER BY server_seq LIMIT ?4", scope_sql(who));
    let mut stmt = tx.prepare_cached(&sql)?;
    let mut rows = stmt.query(params![after as i64, who.region, who.assessor, limit as i64 + 1, q.omit])?;
    let mut body = Vec::with_capacity(limit * PULLED_OP_ROOM + 200);
    body.extend_from_slice(br#"{"ops":["#);
    let (mut n, mut seq_written, mut more) = (0usize, after, false);
    while let Some(r) = rows.next()? {
        if n == limit {
            more = true;
            break;
        }
        if n > 0 {
            body.push(b',');
        }
        ledger::write_pulled_op(r, &mut body)?;
        seq_written = r.get::<_, i64>(0)? as u64;
        n += 1;
    }
    let seq = if more { seq_written } else { last as u64 };
    let hlc = ledger::clock(tx)?.last();
    body.extend_from_slice(br#"],"cursor":"#);
    serde_json::to_writer(&mut body, &Cursor { store, seq })?;
    write!(body, r#","more":{more},"server_hlc":"#).map_err(ApiError::internal)?;
    serde_json::to_writer(&mut body, &hlc)?;
    body.push(b'}');
    Ok((body, PageEnd { cursor: Cursor { store, seq }, more }))
}

/// True when the caller's scope covers an origin's binding.
fn sees_origin(who: &Principal, b: &ledger::Binding) -> bool {
    match who.role {
        Role::Admin => true,
        Role::Supervisor | Role::Peer => b.region.is_some() && b.region == who.region,
        Role::Assessor => b.assessor.is_some() && b.assessor == who.assessor,
    }
}

async fn origin_status(
    State(state): State<AppState>,
    Caller(who): Caller,
    JsonBody(request): JsonBody<StatusRequest>,
) -> Result<Json<StatusResponse>, ApiError> {
    if request.origins.len() > 1000 {
        return Err(ApiError::invalid_body(format!("{} origins asked about; at most 1000", request.origins.len())));
    }
    // A device's report of its backlog: kept (latest wins) for the sync-health view.
    if let (Some(p), [origin]) = (request.pending, request.origins.as_slice()) {
        let origin = *origin;
        let now = state.now();
        let who = who.clone();
        state
            .db()
            .write(move |tx| {
                if let Some(b) = ledger::binding(tx, origin)? {
                    if who.role == Role::Assessor && b.role == "device" && sees_origin(&who, &b) {
                        tx.execute(
                            "UPDATE origins SET pending_ops = ?2, pending_files = ?3, pending_at = ?4 WHERE origin = ?1",
                            params![origin.to_string(), p.ops as i64, p.files as i64, now],
                        )?;
                    }
                }
                Ok::<_, ApiError>(())
            })
            .await?;
    }
    let response = state
        .db()
        .read(move |tx| {
            let mut out = Vec::new();
            for origin in request.origins {
                out.push(match ledger::binding(tx, origin)? {
                    None => OriginStatus {
                        origin,
                        held: ChainHead::EMPTY,
                        quarantined: 0,
                        upstream: None,
                        clock_flagged: false,
                    },
                    Some(b) if !sees_origin(&who, &b) => {
                        return Err(ApiError::scope_forbidden(format!("origin {origin} is outside this token's scope")))
                    }
                    Some(b) => OriginStatus {
                        origin,
                        held: ChainHead { seq: b.head_seq, hash: b.head_hash },
                        quarantined: b.quarantined as u32,
                        upstream: upstream_head(tx, origin)?,
                        clock_flagged: tx.query_row(
                            "SELECT clock_flagged FROM origins WHERE origin = ?1",
                            [origin.to_string()],
                            |r| r.get::<_, i64>(0),
                        )? == 1,
                    },
                });
            }
            Ok(StatusResponse { origins: out })
        })
        .await?;
    Ok(Json(response))
}

/// What the tier above holds of an origin, as last reported.
pub fn upstream_head(tx: &Transaction<'_>, origin: OriginId) -> Result<Option<ChainHead>, ApiError> {
    let row: Option<(Option<i64>, Option<String>)> = tx
        .query_row("SELECT upstream_seq, upstream_hash FROM origins WHERE origin = ?1", [origin.to_string()], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    Ok(match row {
        Some((Some(seq), Some(hash))) => {
            Some(ChainHead { seq: seq as u64, hash: hash.parse().map_err(ApiError::internal)? })
        }
        _ => None,
    })
}

/// The manifest of the origins a caller may see.
pub fn build_manifest(
    tx: &Transaction<'_>,
    who: &Principal,
    store: sidak_core::ids::StoreId,
) -> Result<Manifest, ApiError> {
    // Origins of which this tier holds only the part in its scope have no complete
    // chain to vouch for here; the tier that holds them whole lists them.
    let origins: Vec<String> = tx
        .prepare("SELECT origin FROM origins WHERE origin NOT IN (SELECT origin FROM partial_origins) ORDER BY origin")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut entries = Vec::new();
    let sql = format!("SELECT {OP_COLUMNS} FROM ops WHERE origin = ?1 ORDER BY seq");
    for o in origins {
        let origin: OriginId = o.parse().map_err(ApiError::internal)?;
        let Some(b) = ledger::binding(tx, origin)? else { continue };
        if !sees_origin(who, &b) {
            continue;
        }
        let mut stmt = tx.prepare_cached(&sql)?;
        let mut ops = Vec::new();
        for row in stmt.query_map([&o], |r| ledger::row_op(r, 0))? {
            ops.push(row??);
        }
        if ops.is_empty() {
            continue;
        }
        // Every hash recomputed and every link checked: a deleted or altered op shows.
        let facts = sidak_core::manifest::OriginFacts { region: b.region.clone(), quarantined: b.quarantined };
        entries.push(sidak_core::manifest::entry_for(origin, &ops, &facts));
    }
    Ok(Manifest { store, origins: entries })
}

async fn manifest(State(state): State<AppState>, Caller(who): Caller) -> Result<Json<Manifest>, ApiError> {
    let store = state.store();
    Ok(Json(state.db().read(move |tx| build_manifest(tx, &who, store)).await?))
}

fn digest_param(sha: &str) -> Result<Sha256Digest, ApiError> {
    sha.parse().map_err(|_| ApiError::not_found("evidence is addressed by its SHA-256: 64 lowercase hex digits"))
}

fn evidence_row(tx: &Transaction<'_>, sha: &Sha256Digest) -> Result<Option<EvidenceStatus>, ApiError> {
    let regional = crate::db::meta(tx, crate::upstream::UPSTREAM_KEY)?.is_some();
    Ok(tx
        .query_row(
            "SELECT size, received, complete, upstream_complete FROM blobs WHERE sha256 = ?1",
            [sha.to_hex()],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?, r.get::<_, i64>(3)?)),
        )
        .optional()?
        .map(|(size, received, complete, upstream)| EvidenceStatus {
            sha256: *sha,
            size: size as u64,
            received: received as u64,
            complete: complete == 1,
            // The centre is the top: what it holds complete, the centre holds.
            centre_complete: Some(if regional { upstream == 1 } else { complete == 1 }),
        }))
}

async fn evidence_begin(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(sha): Path<String>,
    request: Request,
) -> Result<Json<EvidenceStatus>, ApiError> {
    who.require(&[Role::Assessor, Role::Peer, Role::Admin])?;
    let begin: EvidenceBegin = json_body(request).await?;
    let sha = digest_param(&sha)?;
    if begin.size > limits::MAX_EVIDENCE_BYTES {
        return Err(ApiError::evidence_too_large(format!(
            "{} bytes; evidence files are at most {}",
            begin.size,
            limits::MAX_EVIDENCE_BYTES
        )));
    }
    let media_ok = begin.media_type.len() <= 100
        && begin.media_type.split_once('/').is_some_and(|(a, b)| !a.is_empty() && !b.is_empty())
        && begin.media_type.bytes().all(|c| c.is_ascii_graphic());
    if !media_ok {
        return Err(ApiError::invalid_body(format!("`{}` is not a media type such as image/jpeg", begin.media_type)));
    }
    let now = state.now();
    let st = state.clone();
    let status = state
        .db()
        .write(move |tx| {
            if let Some(held) = evidence_row(tx, &sha)? {
                let held = reconcile_upload(tx, &st, held)?;
                if held.size != begin.size {
                    return Err(ApiError::size_mismatch(format!(
                        "{sha} was announced with {} bytes, not {}",
                        held.size, begin.size
                    )));
                }
                return Ok(held);
            }
            tx.execute(
                "INSERT INTO blobs (sha256, size, media_type, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![sha.to_hex(), begin.size as i64, begin.media_type, now],
            )?;
            Ok(EvidenceStatus {
                sha256: sha,
                size: begin.size,
                received: 0,
                complete: false,
                centre_complete: Some(false),
            })
        })
        .await?;
    if status.size == 0 && !status.complete {
        return finish_empty(&state, sha).await.map(Json);
    }
    Ok(Json(status))
}

/// An empty file is complete as soon as it is announced (if its digest is right).
async fn finish_empty(state: &AppState, sha: Sha256Digest) -> Result<EvidenceStatus, ApiError> {
    let st = state.clone();
    state.db().write(move |tx| complete_upload(tx, &st, &sha, &st.instruments())).await?
}

async fn evidence_chunk(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(sha): Path<String>,
    RawQuery(raw): RawQuery,
    request: Request,
) -> Result<Json<EvidenceStatus>, ApiError> {
    who.require(&[Role::Assessor, Role::Peer, Role::Admin])?;
    let sha = digest_param(&sha)?;
    let query = parse_query(raw, &["offset"])?;
    let offset: u64 = query
        .get("offset")
        .and_then(|o| o.parse().ok())
        .ok_or_else(|| ApiError::bad_query("give ?offset=<bytes already received>"))?;
    let chunk = raw_body(request, limits::MAX_CHUNK_BYTES, "application/octet-stream").await?;
    // One chunk of a file at a time. The bytes are written and synced outside the
    // store's writer (which every push and review waits for): where the upload stands
    // is read first, and only what it now holds is written, in one short transaction.
    let _turn = state.upload_turn(&sha).await;
    // Only a crash's repair needs the writer here: nearly every chunk just reads. (The
    // part file's length is read on the store's thread too, not on this async one.)
    let st = state.clone();
    let (held, damaged) = state
        .db()
        .read(move |tx| {
            let held = announced(tx, &sha)?;
            let damaged = needs_repair(&st, &held);
            Ok::<_, ApiError>((held, damaged))
        })
        .await?;
    let held = if damaged {
        let st = state.clone();
        state.db().write(move |tx| reconcile_upload(tx, &st, announced(tx, &sha)?)).await?
    } else {
        held
    };
    if held.complete || offset + (chunk.len() as u64) <= held.received {
        return Ok(Json(held)); // a replay: acknowledged, nothing written
    }
    if offset > held.received {
        return Err(ApiError::offset_mismatch(format!(
            "{} bytes of {sha} are held; send from offset {}",
            held.received, held.received
        )));
    }
    if offset + chunk.len() as u64 > held.size {
        return Err(ApiError::size_mismatch(format!("the chunk runs past the announced size of {} bytes", held.size)));
    }
    // Synced to disk before the store records it, so that the part file is never shorter
    // than recorded (see `reconcile_upload`).
    let st = state.clone();
    let new_bytes = tokio::task::spawn_blocking(move || -> Result<usize, ApiError> {
        let new_bytes = &chunk[(held.received - offset) as usize..];
        let part = st.upload_path(&sha.to_hex());
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&part)?;
            // A crash may have left bytes past what the store acknowledged: drop them.
            f.set_len(held.received)?;
            use std::io::Seek;
            f.seek(std::io::SeekFrom::Start(held.received))?;
            f.write_all(new_bytes)?;
            f.sync_all()
        };
        write().map_err(ApiError::internal)?;
        st.hash_upload(&sha, held.received, new_bytes);
        Ok(new_bytes.len())
    })
    .await
    .map_err(ApiError::internal)??;
    let st = state.clone();
    let status = state
        .db()
        .write(move |tx| {
            let now = announced(tx, &sha)?;
            if now.complete || now.received != held.received {
                // It moved meanwhile (only `reconcile_upload`'s repair after a crash
                // moves it outside this upload's turn): the client continues from what
                // it says.
                return Ok(Ok(now));
            }
            let received = held.received + new_bytes as u64;
            tx.execute("UPDATE blobs SET received = ?2 WHERE sha256 = ?1", params![sha.to_hex(), received as i64])?;
            if received == held.size {
                return complete_upload(tx, &st, &sha, &st.instruments());
            }
            Ok(Ok(EvidenceStatus { received, ..now }))
        })
        .await??;
    if status.complete {
        state.notify_changed();
    }
    Ok(Json(status))
}

/// An upload's record, which a chunk needs announced first.
fn announced(tx: &Transaction<'_>, sha: &Sha256Digest) -> Result<EvidenceStatus, ApiError> {
    evidence_row(tx, sha)?.ok_or_else(|| ApiError::not_found(format!("announce {sha} first (POST /v1/evidence/{sha})")))
}

/// Brings an unfinished upload's record in line with its files after a crash. Chunks
/// are synced to disk before the store records them, so the partial file is never
/// shorter than recorded — except when a crash fell between moving the completed file
/// into place and committing that: then the file is finished here.
fn reconcile_upload(tx: &Transaction<'_>, state: &AppState, held: EvidenceStatus) -> Result<EvidenceStatus, ApiError> {
    if !needs_repair(state, &held) {
        return Ok(held);
    }
    let hex = held.sha256.to_hex();
    let on_disk = part_len(state, &hex);
    let blob = state.blob_path(&hex);
    if blob.is_file() && file_digest(&blob)? == held.sha256 {
        tx.execute("UPDATE blobs SET complete = 1, received = size WHERE sha256 = ?1", [&hex])?;
        let institutions = citing_institutions(tx, &hex)?;
        let instruments = state.instruments();
        for i in institutions {
            results::recompute(tx, &instruments, &i)?;
        }
        return Ok(EvidenceStatus { received: held.size, complete: true, ..held });
    }
    tracing::warn!(sha256 = %hex, recorded = held.received, on_disk, "an upload lost bytes in a crash; resuming from what is on disk");
    tx.execute("UPDATE blobs SET received = ?2 WHERE sha256 = ?1", params![hex, on_disk as i64])?;
    Ok(EvidenceStatus { received: on_disk, ..held })
}

/// True when an unfinished upload's part file is shorter than its record says: a crash
/// that [`reconcile_upload`] repairs.
fn needs_repair(state: &AppState, held: &EvidenceStatus) -> bool {
    !held.complete && part_len(state, &held.sha256.to_hex()) < held.received
}

/// The length of an upload's part file (0 when there is none).
fn part_len(state: &AppState, hex: &str) -> u64 {
    std::fs::metadata(state.upload_path(hex)).map(|m| m.len()).unwrap_or(0)
}

fn file_digest(path: &std::path::Path) -> Result<Sha256Digest, ApiError> {
    use sha2::{Digest, Sha256};
    let mut f = std::fs::File::open(path).map_err(ApiError::internal)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(ApiError::internal)?;
    Ok(Sha256Digest(h.finalize().into()))
}

/// Institutions whose visits cite a file.
fn citing_institutions(tx: &Transaction<'_>, hex: &str) -> Result<Vec<String>, ApiError> {
    Ok(tx
        .prepare(
            "SELECT DISTINCT e.institution FROM fields f
             JOIN fields v ON v.entity = f.entity AND v.field = 'visit'
             JOIN entities e ON e.entity = json_extract(v.value, '$')
             WHERE f.kind = 'evidence' AND f.field = 'sha256' AND f.value = json_quote(?1) AND f.field NOT GLOB 'answer.*'
               AND e.institution IS NOT NULL",
        )?
        .query_map([hex], |r| r.get(0))?
        .collect::<Result<_, _>>()?)
}

/// Verifies a fully received upload, moves it into place and recomputes the results
/// of the visits that cite it. A digest mismatch is a refusal that must still be
/// committed (the upload is discarded), so it is the inner error.
fn complete_upload(
    tx: &Transaction<'_>,
    state: &AppState,
    sha: &Sha256Digest,
    instruments: &ledger::Instruments,
) -> Result<Result<EvidenceStatus, ApiError>, ApiError> {
    let hex = sha.to_hex();
    let part = state.upload_path(&hex);
    if !part.exists() {
        std::fs::File::create(&part).map_err(ApiError::internal)?;
    }
    // The running hash of the chunks as they were written; the file read back when
    // there is none (the server restarted mid-upload, a chunk's commit failed).
    let size = std::fs::metadata(&part).map_err(ApiError::internal)?.len();
    let bytes_hash = match state.take_upload_hash(sha, size) {
        Some(digest) => digest,
        None => file_digest(&part)?,
    };
    if bytes_hash != *sha {
        // Discard the upload entirely: the client announces it again and resends.
        tx.execute("DELETE FROM blobs WHERE sha256 = ?1", [&hex])?;
        std::fs::remove_file(&part).map_err(ApiError::internal)?;
        return Ok(Err(ApiError::evidence_mismatch(format!(
            "the bytes received hash to {bytes_hash}, not {sha}; the upload was discarded: announce it and send it again"
        ))));
    }
    let dest = state.blob_path(&hex);
    let dir = dest.parent().expect("blob paths have a parent");
    if !dir.is_dir() {
        std::fs::create_dir_all(dir).map_err(ApiError::internal)?;
        crate::state::sync_dir(dir.parent().expect("blob directories have a parent")).map_err(ApiError::internal)?;
    }
    // The file is in place on disk before the store says it is complete: after a power
    // cut, a store that says so never points at a file that is still a part file.
    std::fs::rename(&part, &dest).map_err(ApiError::internal)?;
    crate::state::sync_dir(dir).map_err(ApiError::internal)?;
    tx.execute("UPDATE blobs SET complete = 1, received = size WHERE sha256 = ?1", [&hex])?;
    for i in citing_institutions(tx, &hex)? {
        results::recompute(tx, instruments, &i)?;
    }
    Ok(Ok(evidence_row(tx, sha)?.ok_or_else(|| ApiError::internal("completed evidence vanished"))?))
}

async fn evidence_status(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(sha): Path<String>,
) -> Result<Json<EvidenceStatus>, ApiError> {
    let sha = digest_param(&sha)?;
    let status = state
        .db()
        .read(move |tx| {
            let status =
                evidence_row(tx, &sha)?.ok_or_else(|| ApiError::not_found(format!("no upload of {sha} here")))?;
            // An uploader resumes an upload it has not finished; once a file is
            // complete, only callers whose scope cites it may read its status (a
            // device pushes the ops citing its files before it uploads them).
            let resuming = !status.complete && matches!(who.role, Role::Assessor | Role::Peer);
            if !resuming && !cited_in_scope(tx, &who, &sha.to_hex())? {
                return Err(ApiError::scope_forbidden("no record in this token's scope cites that file"));
            }
            Ok(status)
        })
        .await?;
    Ok(Json(status))
}

/// True when a record in the caller's scope cites the file.
fn cited_in_scope(tx: &Transaction<'_>, who: &Principal, hex: &str) -> Result<bool, ApiError> {
    if who.role == Role::Admin {
        return Ok(true);
    }
    let mut stmt = tx.prepare_cached(
        "SELECT e.region, e.assessor FROM fields f JOIN entities e ON e.entity = f.entity
         WHERE f.kind = 'evidence' AND f.field = 'sha256' AND f.value = json_quote(?1) AND f.field NOT GLOB 'answer.*'",
    )?;
    let cites: Vec<(Option<String>, Option<String>)> =
        stmt.query_map([hex], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
    Ok(cites.iter().any(|(region, assessor)| match who.role {
        Role::Assessor => assessor.is_some() && *assessor == who.assessor,
        _ => region.is_some() && *region == who.region,
    }))
}

async fn evidence_download(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(sha): Path<String>,
) -> Result<Response, ApiError> {
    let sha = digest_param(&sha)?;
    let hex = sha.to_hex();
    let media = state
        .db()
        .read(move |tx| {
            let row: Option<(String, i64)> = tx
                .query_row("SELECT media_type, complete FROM blobs WHERE sha256 = ?1", [&hex], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            let Some((media, 1)) = row else {
                return Err(ApiError::not_found(format!("{hex} is not held here in full")));
            };
            if !cited_in_scope(tx, &who, &hex)? {
                return Err(ApiError::scope_forbidden("no record in this token's scope cites that file"));
            }
            Ok(media)
        })
        .await?;
    let path = state.blob_path(&sha.to_hex());
    let bytes = tokio::fs::read(&path).await.map_err(ApiError::internal)?;
    Ok(bytes_response(&media, bytes))
}

async fn instruments(State(state): State<AppState>, Caller(_who): Caller) -> Json<InstrumentList> {
    let list = state
        .instruments()
        .values()
        .map(|i| InstrumentSummary {
            id: i.reference.id.clone(),
            version: i.reference.version,
            title: i.title.clone(),
            digest: i.digest.clone(),
        })
        .collect();
    Json(InstrumentList { instruments: list })
}

async fn instrument(
    State(state): State<AppState>,
    Caller(_who): Caller,
    Path((id, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let version: u32 = version.parse().map_err(|_| ApiError::not_found(format!("no instrument {id}@{version}")))?;
    let r = InstrumentRef { id, version };
    match state.instruments().get(&r) {
        Some(i) => Ok(Json(i.document.clone()).into_response()),
        None => Err(ApiError::not_found(format!("instrument {r} is not published here"))),
    }
}

fn registry_item(tx: &Transaction<'_>, id: &str) -> Result<Option<RegistryItem>, ApiError> {
    let f = fields_of(tx, id)?;
    let text = |k: &str| f.get(k).and_then(Value::as_str).map(str::to_owned);
    let Some(code) = text("code") else { return Ok(None) };
    Ok(Some(RegistryItem {
        id: id.parse().map_err(ApiError::internal)?,
        code,
        name: text("name").unwrap_or_default(),
        kind: text("type"),
        region: text("region"),
    }))
}

/// The assignments a caller may see, materialised.
pub fn assignment_list(tx: &Transaction<'_>, who: &Principal) -> Result<AssignmentList, ApiError> {
    let ids = crate::results::ids_of_kind(tx, "assignment")?;
    let mut out = Vec::new();
    for id in ids {
        let scope = ledger::entity_scope(tx, &id)?;
        let visible = match who.role {
            Role::Admin => true,
            Role::Assessor => scope.assessor.is_some() && scope.assessor == who.assessor,
            _ => scope.region.is_some() && scope.region == who.region,
        };
        if !visible {
            continue;
        }
        let f = fields_of(tx, &id)?;
        let text = |k: &str| f.get(k).and_then(Value::as_str).map(str::to_owned);
        let (Some(inst), Some(unit)) = (
            text("institution").and_then(|i| registry_item(tx, &i).transpose()).transpose()?,
            text("unit").and_then(|u| registry_item(tx, &u).transpose()).transpose()?,
        ) else {
            continue;
        };
        let products = f
            .get("products")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(Value::as_str)
            .map(|p| registry_item(tx, p))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flatten()
            .collect();
        let Some(instrument) = f.get("instrument").and_then(|v| serde_json::from_value(v.clone()).ok()) else {
            continue;
        };
        out.push(Assignment {
            id: id.parse().map_err(ApiError::internal)?,
            assessor: text("assessor").unwrap_or_default(),
            institution: inst,
            unit,
            products,
            instrument,
            mode: text("mode").unwrap_or_else(|| "announced".into()),
            due: f.get("due").and_then(Value::as_i64),
            status: text("status").unwrap_or_else(|| "active".into()),
        });
    }
    Ok(AssignmentList { assignments: out })
}

async fn assignments(State(state): State<AppState>, Caller(who): Caller) -> Result<Json<AssignmentList>, ApiError> {
    Ok(Json(state.db().read(move |tx| assignment_list(tx, &who)).await?))
}
