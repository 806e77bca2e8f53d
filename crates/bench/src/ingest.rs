//! Server ingest: devices push their ops over the real HTTP API (gzip-compressed JSON
//! batches of 500, as the field client sends them), each push durable, merged and
//! recomputed before it is answered; against a bare rusqlite batched UPSERT of the
//! same rows into one table with the same settings (WAL, synchronous=FULL).

use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use sidak_core::canonical::canonical_json;
use sidak_core::instrument::{builtin, Instrument};
use sidak_core::op::Op;
use sidak_core::wire::{PushRequest, PushResponse, PROTOCOL_HEADER};
use sidak_server::auth::Role;
use sidak_server::error::ApiError;
use sidak_server::ledger;

use crate::report::{per_sec, rate, ratio, Row};
use crate::season::{answers_in, DeviceOps, Season};
use crate::server::{now_ms, BenchServer};

/// Ops per push: the field client's default batch.
pub const BATCH: usize = 500;

/// One device's pushes, encoded before the clock starts.
pub struct DeviceLoad {
    /// Its assessor token.
    pub token: String,
    /// Gzip-compressed JSON push bodies, in chain order.
    pub bodies: Vec<Vec<u8>>,
    /// Ops in them.
    pub ops: usize,
}

/// Encodes a push body as the field client does (JSON, gzip level 1).
pub fn gzip_push(ops: &[Op]) -> Vec<u8> {
    let json = serde_json::to_vec(&PushRequest { ops: ops.to_vec(), heads: Vec::new() }).expect("ops serialise");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&json).expect("in memory");
    enc.finish().expect("in memory")
}

/// Pushes every device's batches, `concurrency` devices at a time (each device's
/// batches in order); returns the ops stored and the wall time.
pub fn push_all(url: &str, loads: Vec<DeviceLoad>, concurrency: usize) -> Result<(usize, Duration)> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build()?;
        let queue = Arc::new(Mutex::new(loads));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..concurrency.max(1) {
            let (client, queue, url) = (client.clone(), queue.clone(), url.to_owned());
            tasks.push(tokio::spawn(async move {
                let mut stored = 0usize;
                loop {
                    let Some(load) = queue.lock().map_err(|_| anyhow!("queue poisoned"))?.pop() else { break };
                    for body in load.bodies {
                        let response = client
                            .post(format!("{url}/v1/ops/push"))
                            .bearer_auth(&load.token)
                            .header(PROTOCOL_HEADER, "1")
                            .header("content-type", "application/json")
                            .header("content-encoding", "gzip")
                            .body(body)
                            .send()
                            .await?;
                        let status = response.status();
                        let bytes = response.bytes().await?;
                        if !status.is_success() {
                            bail!("push answered {status}: {}", String::from_utf8_lossy(&bytes));
                        }
                        let answer: PushResponse = serde_json::from_slice(&bytes)?;
                        for o in &answer.origins {
                            if !o.rejected.is_empty() || !o.quarantined.is_empty() {
                                bail!("push refused ops: {:?} {:?}", o.rejected.first(), o.quarantined.first());
                            }
                            stored += o.stored as usize;
                        }
                    }
                }
                Ok::<_, anyhow::Error>(stored)
            }));
        }
        let mut stored = 0;
        for t in tasks {
            stored += t.await.context("push task")??;
        }
        Ok((stored, started.elapsed()))
    })
}

/// Generated ops for a set of devices.
pub struct Workload {
    /// Per device: its assessor, region and ops.
    pub devices: Vec<(String, String, Vec<Op>)>,
}

impl Workload {
    /// Every op.
    pub fn all(&self) -> impl Iterator<Item = &Op> {
        self.devices.iter().flat_map(|d| d.2.iter())
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.devices.iter().map(|d| d.2.len()).sum()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Encodes the pushes, with a token per device.
    pub fn loads(&self, server: &BenchServer) -> Result<Vec<DeviceLoad>> {
        let mut out = Vec::new();
        for (assessor, region, ops) in &self.devices {
            out.push(DeviceLoad {
                token: server.token(Role::Assessor, Some(region), Some(assessor))?,
                bodies: ops.chunks(BATCH).map(gzip_push).collect(),
                ops: ops.len(),
            });
        }
        // push_all pops from the end: keep the first device first.
        out.reverse();
        Ok(out)
    }
}

/// The penilaian-2023 instrument every season visit is recorded with.
pub fn instrument() -> Result<Instrument> {
    builtin("penilaian-2023").context("built-in instrument")
}

/// The ops of every assessor of `season` (each visiting all its institutions), at
/// most `limit` per device.
pub fn workload(server: &BenchServer, season: &Season, limit: usize) -> Result<Workload> {
    let instrument = instrument()?;
    let ids = server.registry_ids()?;
    let start = now_ms() as u64 - 86_400_000;
    let mut devices = Vec::new();
    for (n, (assessor, region, institutions)) in season.assessors().into_iter().enumerate() {
        let (mut device, mut ops) = DeviceOps::new(&assessor, &region, start, n as u64);
        for &i in &institutions {
            if ops.len() >= limit {
                break;
            }
            device.institution(&instrument, &ids, &season.institutions[i], &mut ops);
        }
        ops.truncate(limit);
        devices.push((assessor, region, ops));
    }
    Ok(Workload { devices })
}

/// Upserts `ops` as rows of one table in batches (one transaction each), with the
/// server's settings; returns the wall time.
pub fn raw_upsert(path: &Path, ops: &[&Op], batch: usize) -> Result<Duration> {
    let conn = rusqlite::Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(
        "CREATE TABLE ops (origin TEXT NOT NULL, seq INTEGER NOT NULL, hlc_ms INTEGER NOT NULL, hlc_c INTEGER NOT NULL,
            wall INTEGER NOT NULL, kind TEXT NOT NULL, entity TEXT NOT NULL, field TEXT NOT NULL, value TEXT NOT NULL,
            prev TEXT NOT NULL, hash TEXT NOT NULL, PRIMARY KEY (origin, seq)) STRICT",
    )?;
    let started = Instant::now();
    for chunk in ops.chunks(batch) {
        let tx = conn.unchecked_transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO ops (origin, seq, hlc_ms, hlc_c, wall, kind, entity, field, value, prev, hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT (origin, seq) DO UPDATE SET value = excluded.value, hash = excluded.hash",
            )?;
            for op in chunk {
                stmt.execute(rusqlite::params![
                    op.origin.to_string(),
                    op.seq as i64,
                    op.hlc.ms as i64,
                    op.hlc.c as i64,
                    op.wall,
                    op.entity.kind.name(),
                    op.entity.id.to_string(),
                    op.field,
                    canonical_json(&op.value),
                    op.prev.to_hex(),
                    op.hash.to_hex(),
                ])?;
            }
        }
        tx.commit()?;
    }
    Ok(started.elapsed())
}

/// The floor under ingest that Sidak's storage layout sets: one device's ops written
/// as the rows a push writes for them, by bare SQL through the server's own store, one
/// transaction of [`BATCH`] each, and nothing else. Each op's row in `ops` with its
/// scope tags ([`ledger::insert_op_row`]) and its field's upsert
/// ([`ledger::upsert_field`]), each the server's own function; each record's row in `entities`
/// once, when its institution is known (a visit's `institution` field, a respondent's
/// `visit`); the origin's head once per transaction. Left out: the chain and record
/// checks, the merge's reads, the scope lookups, a record's second `entities` write
/// when it is placed, the recompute, HTTP and JSON. With `keys_only`, the tables keep
/// only their keys: `ops` its row id (the pull's order) and `(origin, seq)` (what makes
/// a pushed op land once), `fields` and `entities` their primary keys; every secondary
/// index is dropped first. Returns the wall time.
pub fn storage_floor(
    server: &BenchServer,
    assessor: &str,
    region: &str,
    ops: &[Op],
    keys_only: bool,
) -> Result<Duration> {
    use sidak_core::records::EntityKind;
    let mut placed: HashMap<String, Option<String>> = HashMap::new();
    let db = server.state.db();
    let received = now_ms();
    let first = ops.first().ok_or_else(|| anyhow!("the storage floor has no ops"))?;
    // The origin's row, as the server binds it at the device's first op.
    db.write_blocking(|tx| {
        tx.prepare_cached(
            "INSERT INTO origins (origin, role, assessor, region, head_seq, head_hash) VALUES (?1, 'device', ?2, ?3, 0, ?4)",
        )?
        .execute(rusqlite::params![first.origin.to_string(), assessor, region, first.prev.to_hex()])?;
        Ok::<_, ApiError>(())
    })
    .map_err(|e| anyhow!("the storage floor's origin: {e}"))?;
    if keys_only {
        // Every index that a table's key or UNIQUE constraint does not make (those have
        // no SQL of their own): the scope tags', the value index, the placement's.
        db.write_blocking(|tx| {
            let names = tx
                .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL AND tbl_name IN ('ops', 'fields', 'entities')")?
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            for name in names {
                tx.execute_batch(&format!("DROP INDEX {name}"))?;
            }
            Ok::<_, ApiError>(())
        })
        .map_err(|e| anyhow!("the storage floor's indexes: {e}"))?;
    }
    let started = Instant::now();
    for chunk in ops.chunks(BATCH) {
        db.write_blocking(|tx| {
            let mut entity = tx.prepare_cached(
                "INSERT INTO entities (entity, kind, region, assessor, institution) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (entity) DO NOTHING",
            )?;
            for op in chunk {
                let id = op.entity.id.to_string();
                ledger::insert_op_row(tx, op, received, false, Some(region), Some(assessor), "origin")?;
                ledger::upsert_field(tx, op, &id)?;
                // Where the record belongs, once it is known; a device is placed nowhere.
                let institution = match (op.entity.kind, op.field.as_str()) {
                    (EntityKind::Visit, "institution") => op.value.as_str().map(str::to_owned),
                    (EntityKind::Respondent, "visit") => {
                        op.value.as_str().and_then(|v| placed.get(v).cloned().flatten())
                    }
                    (EntityKind::Device, _) => None,
                    _ => continue,
                };
                if let std::collections::hash_map::Entry::Vacant(new) = placed.entry(id) {
                    entity.execute(rusqlite::params![
                        new.key(),
                        op.entity.kind.name(),
                        region,
                        assessor,
                        institution
                    ])?;
                    new.insert(institution);
                }
            }
            let last = chunk.last().ok_or_else(|| ApiError::internal("an empty batch"))?;
            tx.prepare_cached("UPDATE origins SET head_seq = ?2, head_hash = ?3 WHERE origin = ?1")?
                .execute(rusqlite::params![last.origin.to_string(), last.seq as i64, last.hash.to_hex()])?;
            Ok::<_, ApiError>(())
        })
        .map_err(|e| anyhow!("the storage floor: {e}"))?;
    }
    Ok(started.elapsed())
}

/// A regional server with `institutions` institutions and their assignments for
/// `devices` assessors (round robin), and `ops` ops of theirs generated (not pushed).
pub fn prepare(dir: &Path, institutions: usize, devices: usize, ops: usize) -> Result<(BenchServer, Workload)> {
    let mut season = Season::regional(institutions, 9);
    for (k, inst) in season.institutions.iter_mut().enumerate() {
        inst.assessor = format!("asesor-jateng-{}", k % devices + 1);
    }
    let server = BenchServer::start(dir)?;
    server.set_up(&season.registry_csv(), &season.assignments())?;
    let w = workload(&server, &season, ops.div_ceil(devices))?;
    Ok((server, w))
}

/// Ingest with 1 and 16 devices against the raw UPSERT. Returns the table rows and the
/// 16-device server (for the pull benchmark).
pub fn run(tmp: &Path, ops: usize) -> Result<(Vec<Row>, BenchServer, usize)> {
    let mut rows = Vec::new();
    let mut kept = None;
    let mut one_device = None;
    for devices in [1usize, 16] {
        let (server, w) = prepare(&tmp.join(format!("ingest-{devices}")), 16, devices, ops)?;
        let total = w.len();
        let answers = answers_in(&w.all().cloned().collect::<Vec<_>>());
        let loads = w.loads(&server)?;
        let (stored, took) = push_all(&server.url(), loads, devices)?;
        if stored != total {
            bail!("{devices} device(s): the server stored {stored} of {total} ops");
        }
        let raw = raw_upsert(&tmp.join(format!("raw-upsert-{devices}.sqlite")), &w.all().collect::<Vec<_>>(), BATCH)?;
        let (ours, theirs) = (per_sec(total, took), per_sec(total, raw));
        println!(
            "ingest, {devices} device(s): {total} ops ({answers} answers) in {:.2} s over HTTP = {}; raw UPSERT {:.2} s = {}",
            took.as_secs_f64(),
            rate(ours),
            raw.as_secs_f64(),
            rate(theirs)
        );
        rows.push(
            Row::info(
                format!("server ingest, {devices} device(s), {total} ops"),
                rate(ours),
                rate(theirs),
                ratio(ours / theirs),
            )
            .target("≥ 100k ops/s and ≥ 0.33× raw", ours >= 100_000.0 && ours >= theirs / 3.0),
        );
        if devices == 1 {
            one_device = Some((ours, theirs));
        }
        kept = Some((server, total));
    }
    let (server, total) = kept.ok_or_else(|| anyhow!("no run"))?;
    let (ours, theirs) = one_device.ok_or_else(|| anyhow!("no one-device run"))?;
    for keys_only in [false, true] {
        let (floor_server, w) = prepare(&tmp.join(format!("ingest-floor-{keys_only}")), 16, 1, ops)?;
        let (assessor, region, device_ops) = &w.devices[0];
        let floor = per_sec(device_ops.len(), storage_floor(&floor_server, assessor, region, device_ops, keys_only)?);
        let what = if keys_only { "the tables' keys alone" } else { "a push's rows alone" };
        println!(
            "ingest storage floor, 1 device, {what}: {} ops written by bare SQL, in-process = {} ({} raw UPSERT); Sidak over HTTP is {} of it",
            device_ops.len(),
            rate(floor),
            ratio(floor / theirs),
            ratio(ours / floor)
        );
        rows.push(Row::info(
            format!("server ingest floor, {what}, 1 device, {} ops", device_ops.len()),
            rate(floor),
            rate(theirs),
            ratio(floor / theirs),
        ));
    }
    breakdown(&tmp.join("ingest-breakdown"), ops)?;
    Ok((rows, server, total))
}

/// Where a push's time goes: the calls the push handler makes, made here in-process
/// and timed one by one (gunzip + JSON parse, `push::push` — chain, check, store,
/// merge —, `results::recompute` of the dirty institutions, commit). One device.
pub fn breakdown(dir: &Path, ops: usize) -> Result<()> {
    use std::io::Read as _;
    let (server, w) = prepare(dir, 16, 1, ops)?;
    let (assessor, region, device_ops) = &w.devices[0];
    let token = server.token(Role::Assessor, Some(region), Some(assessor))?;
    let bodies: Vec<Vec<u8>> = device_ops.chunks(BATCH).map(gzip_push).collect();
    let instruments = server.state.instruments();
    let who = server
        .state
        .db()
        .read_blocking(|tx| sidak_server::auth::principal_for(tx, &token).map_err(sidak_server::error::ApiError::from))
        .map_err(|e| anyhow!("{e}"))?
        .ok_or_else(|| anyhow!("no principal"))?;
    let (mut parse, mut push, mut recompute, mut total) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut recomputes = 0;
    for body in &bodies {
        let all = Instant::now();
        let t = Instant::now();
        let mut json = Vec::new();
        flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut json)?;
        let request: PushRequest = serde_json::from_slice(&json)?;
        parse += t.elapsed();
        let (p, r, n) = server
            .state
            .db()
            .write_blocking(|tx| {
                let t = Instant::now();
                let (_, effects) = sidak_server::push::push(tx, &instruments, &who, request, now_ms())?;
                let p = t.elapsed();
                let t = Instant::now();
                for i in &effects.dirty {
                    sidak_server::results::recompute(tx, &instruments, i)?;
                }
                Ok::<_, sidak_server::error::ApiError>((p, t.elapsed(), effects.dirty.len()))
            })
            .map_err(|e| anyhow!("push: {e}"))?;
        push += p;
        recompute += r;
        recomputes += n;
        total += all.elapsed();
    }
    let n = device_ops.len();
    let share = |d: Duration| {
        format!("{:.0}% ({:.1} µs/op)", 100.0 * d.as_secs_f64() / total.as_secs_f64(), d.as_secs_f64() * 1e6 / n as f64)
    };
    println!(
        "ingest breakdown, 1 device, {n} ops in {} pushes, in-process: {} total = {}; gunzip+parse {}, push::push {}, recompute ({recomputes} institution recomputes) {}, commit+rest {}",
        bodies.len(),
        crate::report::time(total),
        rate(per_sec(n, total)),
        share(parse),
        share(push),
        share(recompute),
        share(total.saturating_sub(parse + push + recompute)),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rows of `server`'s store that hold `ops`: each op's row with its scope tags,
    /// the fields they set, the records' placement.
    fn rows_of(server: &BenchServer, ops: &[Op]) -> Vec<Vec<String>> {
        let origin = ops[0].origin.to_string();
        let entities: std::collections::BTreeSet<String> = ops.iter().map(|o| o.entity.id.to_string()).collect();
        server
            .state
            .db()
            .read_blocking(|tx| {
                let mut out = Vec::new();
                let mut stmt = tx.prepare(
                    "SELECT seq || ' ' || hash || ' ' || quarantined || ' ' || IFNULL(region, '-') || ' ' || IFNULL(assessor, '-') || ' ' || class
                     FROM ops WHERE origin = ?1 ORDER BY seq",
                )?;
                out.push(stmt.query_map([&origin], |r| r.get::<_, String>(0))?.collect::<Result<Vec<_>, _>>()?);
                for entity in &entities {
                    let mut stmt = tx.prepare(
                        "SELECT field || ' ' || kind || ' ' || value || ' ' || v_seq FROM fields WHERE entity = ?1 ORDER BY field",
                    )?;
                    out.push(stmt.query_map([entity], |r| r.get::<_, String>(0))?.collect::<Result<Vec<_>, _>>()?);
                    let mut stmt = tx.prepare(
                        "SELECT kind || ' ' || IFNULL(region, '-') || ' ' || IFNULL(assessor, '-') || ' ' || IFNULL(institution, '-') FROM entities WHERE entity = ?1",
                    )?;
                    out.push(stmt.query_map([entity], |r| r.get::<_, String>(0))?.collect::<Result<Vec<_>, _>>()?);
                }
                Ok::<_, ApiError>(out)
            })
            .unwrap()
    }

    /// The storage floor writes the very rows that pushing the same ops writes, with and
    /// without the secondary indexes: it measures the layout, not less than it.
    #[test]
    fn the_storage_floor_writes_the_rows_a_push_writes() {
        let tmp = tempfile::tempdir().unwrap();
        let (pushed, w) = prepare(&tmp.path().join("pushed"), 2, 1, 1_200).unwrap();
        let (assessor, region, ops) = w.devices[0].clone();
        assert!(ops.len() > BATCH * 2, "more than two transactions: {}", ops.len());
        let (stored, _) = push_all(&pushed.url(), w.loads(&pushed).unwrap(), 1).unwrap();
        assert_eq!(stored, ops.len());
        let expected = rows_of(&pushed, &ops);
        assert_eq!(expected[0].len(), ops.len());
        assert!(expected.iter().skip(2).step_by(2).all(|placed| placed.len() == 1), "every record is placed");
        for keys_only in [false, true] {
            let (floor, _) = prepare(&tmp.path().join(format!("floor-{keys_only}")), 2, 1, 1).unwrap();
            storage_floor(&floor, &assessor, &region, &ops, keys_only).unwrap();
            let written = rows_of(&floor, &ops);
            let first = written.iter().flatten().zip(expected.iter().flatten()).find(|(w, e)| w != e);
            assert_eq!(first, None, "the first row the floor wrote otherwise (keys only: {keys_only})");
            assert_eq!(written, expected, "keys only: {keys_only}");
            let indexes: i64 = floor
                .state
                .db()
                .read_blocking(|tx| {
                    tx.query_row(
                        "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL AND tbl_name IN ('ops', 'fields', 'entities')",
                        [],
                        |r| r.get(0),
                    )
                    .map_err(ApiError::from)
                })
                .unwrap();
            assert_eq!(indexes == 0, keys_only, "{indexes} secondary indexes left");
        }
    }
}
