//! A national season: the registry and assignments set up as an office does, every
//! assessor's device pushing its season over HTTP, then the full recompute from the
//! store against a scan-and-fold lower bound over the same answer rows, and the
//! incremental recompute of one institution after one more visit.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use sidak_server::error::ApiError;
use sidak_server::results::{recompute, recompute_all};

use crate::ingest::{instrument, push_all, workload, DeviceLoad, BATCH};
use crate::report::{per_sec, percentiles, rate, ratio, time, Row};
use crate::season::{answers_in, DeviceOps, Season};
use crate::server::{now_ms, BenchServer};

/// Visits absorbed by the incremental recompute, one sample each.
const INCREMENTAL_SAMPLES: usize = 21;

/// Rounds of the full recompute over up-to-date results and of the scan-and-fold, taken
/// in turn, and of the floor under the recompute's reading; each figure is the best of
/// its rounds.
const RECOMPUTE_ROUNDS: usize = 3;

/// The shortest of `samples`.
fn best(samples: &[Duration]) -> Duration {
    samples.iter().copied().min().unwrap_or_default()
}

/// Each of `samples`, as `time` writes them, in the order taken.
fn times(samples: &[Duration]) -> String {
    samples.iter().map(|d| time(*d)).collect::<Vec<_>>().join(", ")
}

/// Reads every answer row and folds it: per record, the sum and count of its answers.
/// Returns (answers, records, wall time).
pub fn scan_and_fold(server: &BenchServer) -> Result<(usize, usize, Duration)> {
    let started = Instant::now();
    let (answers, records) = server
        .state
        .db()
        .read_blocking(|tx| {
            let mut stmt = tx.prepare(
                "SELECT entity, value FROM fields WHERE kind IN ('visit', 'respondent') AND field >= 'answer.' AND field < 'answer/'",
            )?;
            let mut rows = stmt.query([])?;
            let mut folded: HashMap<String, (i64, u32)> = HashMap::new();
            let mut n = 0usize;
            while let Some(r) = rows.next()? {
                let entity = r.get_ref(0)?.as_str().map_err(rusqlite::Error::from)?;
                let value: i64 = r.get_ref(1)?.as_str().map_err(rusqlite::Error::from)?.parse().unwrap_or(0);
                match folded.get_mut(entity) {
                    Some(e) => {
                        e.0 += value;
                        e.1 += 1;
                    }
                    None => {
                        folded.insert(entity.to_owned(), (value, 1));
                    }
                }
                n += 1;
            }
            Ok::<_, ApiError>((n, folded.len()))
        })
        .map_err(|e| anyhow!("scan: {e}"))?;
    Ok((answers, records, started.elapsed()))
}

/// Scores one institution's input and writes the result documents the server stores
/// (each unit's, and the institution's without its units, as `results::recompute`
/// does); returns the time of each step, or `None` (printed) where it does not score.
fn score_and_documents(
    instrument: &sidak_core::instrument::Instrument,
    input: &sidak_core::scoring::InstitutionInput,
    institution: &str,
) -> Option<(Duration, Duration)> {
    let t = Instant::now();
    let scored = sidak_core::scoring::score_institution(instrument, input);
    let score = t.elapsed();
    let mut result = match scored {
        Ok(r) => r,
        Err(e) => {
            eprintln!("institution {institution} does not score: {e:?}");
            return None;
        }
    };
    let t = Instant::now();
    let units = std::mem::take(&mut result.units);
    let mut doc = sidak_core::scoring::institution_document(&result).len();
    for u in &units {
        doc += sidak_core::scoring::unit_document(u).len();
    }
    std::hint::black_box(doc);
    Some((score, t.elapsed()))
}

/// Where the full recompute's time goes, per institution and summed, through the
/// public steps `results::recompute` takes: building the scoring input from the store
/// (`results::institution_input`), scoring (`sidak_core::scoring::score_institution`)
/// and writing the result documents it stores (`scoring::unit_document` and
/// `institution_document`, as `results::recompute` does).
fn breakdown(server: &BenchServer, instrument: &sidak_core::instrument::Instrument) -> Result<()> {
    let (input, score, json, n) = server
        .state
        .db()
        .read_blocking(|tx| {
            let institutions = sidak_server::results::ids_of_kind(tx, "institution")?;
            let (mut a, mut b, mut c) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
            for i in &institutions {
                let t = Instant::now();
                let Some(built) = sidak_server::results::institution_input(tx, i, instrument)? else { continue };
                a += t.elapsed();
                let Some((score, json)) = score_and_documents(instrument, &built, i) else { continue };
                b += score;
                c += json;
            }
            Ok::<_, ApiError>((a, b, c, institutions.len()))
        })
        .map_err(|e| anyhow!("breakdown: {e}"))?;
    println!(
        "recompute breakdown over {n} institutions: institution_input (SQL + maps) {}, score_institution (exact rationals) {}, result documents to JSON {}",
        time(input),
        time(score),
        time(json)
    );
    Ok(())
}

/// Reads the rows one institution's results are made from, raw, as `Records::load`
/// reads them (`results::institution_entities_sql`, each record's id once, then
/// `institution_records_sql`, its fields), touching each id's and value's bytes and
/// nothing else; returns the field rows read.
fn read_raw(tx: &rusqlite::Transaction<'_>, institution: &str) -> Result<usize, ApiError> {
    let mut named = tx.prepare_cached(&sidak_server::results::institution_entities_sql())?;
    let mut cursor = named.query([institution])?;
    while let Some(r) = cursor.next()? {
        std::hint::black_box(r.get_ref(1)?.as_bytes().map_err(rusqlite::Error::from)?.len());
    }
    let mut stmt = tx.prepare_cached(&sidak_server::results::institution_records_sql())?;
    let mut cursor = stmt.query([institution])?;
    let (mut n, mut bytes) = (0usize, 0usize);
    while let Some(r) = cursor.next()? {
        bytes += r.get_ref(3)?.as_bytes().map_err(rusqlite::Error::from)?.len();
        n += 1;
    }
    std::hint::black_box(bytes);
    Ok(n)
}

/// The floor under the full recompute's reading: every institution's rows read raw
/// ([`read_raw`]) one institution after another, as `recompute_all` reads them on the
/// store's thread; and, beside it, every row of `fields` in one scan in key order (each
/// row's id, kind, field and value, its id's and value's bytes touched; no index, no
/// seeks), which tells what the seeks cost (B-tree locality) apart from stepping the
/// rows (SQLite's CPU per row). Returns (rows read per institution, their time, rows
/// scanned, the scan's time).
fn season_read_floor(server: &BenchServer) -> Result<(usize, Duration, usize, Duration)> {
    server
        .state
        .db()
        .read_blocking(|tx| {
            let institutions = sidak_server::results::ids_of_kind(tx, "institution")?;
            let t = Instant::now();
            let mut rows = 0;
            for i in &institutions {
                rows += read_raw(tx, i)?;
            }
            let per_institution = t.elapsed();
            let t = Instant::now();
            let mut stmt = tx.prepare("SELECT entity, kind, field, value FROM fields")?;
            let mut cursor = stmt.query([])?;
            let (mut scanned, mut bytes) = (0usize, 0usize);
            while let Some(r) = cursor.next()? {
                bytes += r.get_ref(0)?.as_bytes().map_err(rusqlite::Error::from)?.len();
                bytes += r.get_ref(3)?.as_bytes().map_err(rusqlite::Error::from)?.len();
                scanned += 1;
            }
            std::hint::black_box(bytes);
            Ok::<_, ApiError>((rows, per_institution, scanned, t.elapsed()))
        })
        .map_err(|e| anyhow!("the season's read floor: {e}"))
}

/// A recompute's floor: the rows it reads, and its three steps, each timed alone (the
/// median of its samples).
struct Floor {
    rows: usize,
    read: Duration,
    score: Duration,
    json: Duration,
}

impl Floor {
    /// Medians of `samples` rounds, each taking `step`: the rows read and each step's time.
    fn median_of(
        samples: usize,
        mut step: impl FnMut() -> Result<(usize, Duration, Duration, Duration), ApiError>,
    ) -> Result<Floor, ApiError> {
        let (mut read, mut score, mut json, mut rows) = (Vec::new(), Vec::new(), Vec::new(), 0);
        for _ in 0..samples {
            let (r, rd, s, j) = step()?;
            rows = r;
            read.push(rd);
            score.push(s);
            json.push(j);
        }
        Ok(Floor { rows, read: percentiles(read).0, score: percentiles(score).0, json: percentiles(json).0 })
    }

    /// The three steps together.
    fn total(&self) -> Duration {
        self.read + self.score + self.json
    }
}

/// The floor under recomputing one whole institution, as the code stands: reading the
/// rows its results are made from (`results::institution_entities_sql` and
/// `institution_records_sql`, each id's and value's bytes touched and nothing else),
/// scoring its input and writing its documents, each timed alone, medians of `samples`.
fn institution_floor(
    server: &BenchServer,
    instrument: &sidak_core::instrument::Instrument,
    institution: &str,
    samples: usize,
) -> Result<Floor> {
    server
        .state
        .db()
        .read_blocking(|tx| {
            let Some(input) = sidak_server::results::institution_input(tx, institution, instrument)? else {
                return Err(ApiError::internal("the institution has no scoring input"));
            };
            Floor::median_of(samples, || {
                let t = Instant::now();
                let rows = read_raw(tx, institution)?;
                let read = t.elapsed();
                let (score, json) = score_and_documents(instrument, &input, institution)
                    .ok_or_else(|| ApiError::internal("the institution does not score"))?;
                Ok((rows, read, score, json))
            })
        })
        .map_err(|e| anyhow!("the institution's floor: {e}"))
}

/// One unit's rows read raw, as a recompute of that unit alone would have to read them
/// with today's store, which places records in institutions but not in units: the unit,
/// and the assignments, products and visits that name it, looked up through the value
/// index ([`sidak_server::results::children`]), then the questionnaires and evidence of
/// each visit; then each of those records' fields, each value's bytes touched. (The
/// season records no corrections or deductions; a unit's would be read too.) Returns
/// the rows read.
fn read_unit_raw(tx: &rusqlite::Transaction<'_>, unit: &str) -> Result<usize, ApiError> {
    use sidak_server::results::children;
    let mut records = vec![unit.to_owned()];
    for kind in ["assignment", "product"] {
        records.extend(children(tx, kind, "unit", unit)?);
    }
    for visit in children(tx, "visit", "unit", unit)? {
        for kind in ["respondent", "evidence"] {
            records.extend(children(tx, kind, "visit", &visit)?);
        }
        records.push(visit);
    }
    let mut stmt = tx.prepare_cached("SELECT kind, field, value FROM fields WHERE entity = ?1")?;
    let (mut n, mut bytes) = (0usize, 0usize);
    for id in &records {
        let mut cursor = stmt.query([id])?;
        while let Some(r) = cursor.next()? {
            bytes += r.get_ref(2)?.as_bytes().map_err(rusqlite::Error::from)?.len();
            n += 1;
        }
    }
    std::hint::black_box(bytes);
    Ok(n)
}

/// The floor under a recompute of one unit instead of its whole institution (the
/// per-unit design of docs/benchmarks.md, not built), each step alone, medians of
/// `samples`: the unit's rows read raw ([`read_unit_raw`]); the institution's input
/// with that unit alone in it, scored; that unit's result document. Conservative where
/// it cannot be exact: the institution-level answers and questionnaires stay in the
/// scored input (the design would store their parts, not score them again), and the
/// roll-up of the institution from its units' stored parts is left out (a weighted mean
/// of seven).
fn unit_floor(
    server: &BenchServer,
    instrument: &sidak_core::instrument::Instrument,
    institution: &str,
    unit: (&str, &str),
    samples: usize,
) -> Result<Floor> {
    let (unit_id, unit_code) = unit;
    server
        .state
        .db()
        .read_blocking(|tx| {
            let Some(mut input) = sidak_server::results::institution_input(tx, institution, instrument)? else {
                return Err(ApiError::internal("the institution has no scoring input"));
            };
            input.units.retain(|u| u.id == unit_code);
            if input.units.len() != 1 {
                return Err(ApiError::internal(format!("unit {unit_code} is not in its institution's input")));
            }
            Floor::median_of(samples, || {
                let t = Instant::now();
                let rows = read_unit_raw(tx, unit_id)?;
                let read = t.elapsed();
                let t = Instant::now();
                let result = sidak_core::scoring::score_institution(instrument, &input)
                    .map_err(|e| ApiError::internal(format!("the unit does not score: {e}")))?;
                let score = t.elapsed();
                let t = Instant::now();
                std::hint::black_box(sidak_core::scoring::unit_document(&result.units[0]).len());
                Ok((rows, read, score, t.elapsed()))
            })
        })
        .map_err(|e| anyhow!("the unit's floor: {e}"))
}

/// The floor under a full recompute into an empty results table, beyond reading and
/// scoring: the result documents it stored, written raw (key and document only, no
/// other column or index) in one transaction into a store of their own with the
/// server's durability (WAL, `synchronous = FULL`), emptied as the benchmark empties
/// the results table first. Returns (rows, bytes, time).
fn write_floor(server: &BenchServer, dir: &Path) -> Result<(usize, usize, Duration)> {
    let rows: Vec<(String, String, String, String)> = server
        .state
        .db()
        .read_blocking(|tx| {
            let mut stmt = tx.prepare("SELECT kind, entity, instrument, document FROM results")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
            Ok::<_, ApiError>(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .map_err(|e| anyhow!("reading the stored documents: {e}"))?;
    let bytes = rows.iter().map(|r| r.3.len()).sum();
    let mut conn = rusqlite::Connection::open(dir.join("write-floor.sqlite"))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(
        "CREATE TABLE results (kind TEXT NOT NULL, entity TEXT NOT NULL, instrument TEXT NOT NULL, document TEXT NOT NULL,
         PRIMARY KEY (kind, entity, instrument)) STRICT",
    )?;
    let write_all = |conn: &mut rusqlite::Connection| -> Result<Duration> {
        let started = Instant::now();
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare_cached("INSERT INTO results VALUES (?1, ?2, ?3, ?4)")?;
            for (kind, entity, instrument, document) in &rows {
                insert.execute([kind, entity, instrument, document])?;
            }
        }
        tx.commit()?;
        Ok(started.elapsed())
    };
    // Timed the second time, into the pages the first left free, as the server's
    // recompute into an emptied table writes (not growing a new file).
    write_all(&mut conn)?;
    conn.execute("DELETE FROM results", [])?;
    let took = write_all(&mut conn)?;
    Ok((rows.len(), bytes, took))
}

/// The season at `scale`.
pub fn run(tmp: &Path, scale: f64, concurrency: usize) -> Result<Vec<Row>> {
    let season = Season::national(scale, 4, 2024);
    let (institutions, units, products, users) = season.counts();
    let server = BenchServer::start(&tmp.join(format!("season-{scale}")))?;
    let setup = server.set_up(&season.registry_csv(), &season.assignments())?;
    println!(
        "season at scale {scale}: {institutions} institutions, {units} units, {products} products, {users} service users; registry and {units} assignments set up in {}",
        time(setup)
    );
    let w = workload(&server, &season, usize::MAX)?;
    let (total, answers) = (w.len(), w.devices.iter().map(|d| answers_in(&d.2)).sum::<usize>());
    let loads: Vec<DeviceLoad> = w.loads(&server)?;
    drop(w);
    let devices = loads.len();
    let (stored, took) = push_all(&server.url(), loads, concurrency)?;
    if stored != total {
        bail!("the server stored {stored} of {total} ops");
    }
    let ingest = per_sec(total, took);
    println!(
        "season ingest: {devices} devices ({concurrency} at a time) pushed {total} ops ({answers} answers) in {} = {}",
        time(took),
        rate(ingest)
    );

    let instruments = server.state.instruments();
    // Twice: into an empty results table (after a restore, or an instrument change that
    // alters every document), then over results already up to date (what an operator's
    // `sidak-server recompute` usually finds: every row is compared, none written).
    server
        .state
        .db()
        .write_blocking(|tx| Ok::<_, ApiError>(tx.execute("DELETE FROM results", [])?))
        .map_err(|e| anyhow!("emptying results: {e}"))?;
    let timed_recompute_all = || -> Result<(usize, Duration)> {
        let started = Instant::now();
        let n = server
            .state
            .db()
            .write_blocking(|tx| recompute_all(tx, &instruments))
            .map_err(|e| anyhow!("recompute_all: {e}"))?;
        Ok((n, started.elapsed()))
    };
    let (n, full) = timed_recompute_all()?;
    // Over up-to-date results and the bound in turn, a few rounds, each the best of its
    // rounds: on a shared machine one pass of either can lose a tenth or more to a
    // neighbour, and the ratio of two single passes carries both losses.
    let (mut agains, mut bounds) = (Vec::new(), Vec::new());
    let (mut scanned, mut records) = (0, 0);
    for _ in 0..RECOMPUTE_ROUNDS {
        agains.push(timed_recompute_all()?.1);
        let (s, r, b) = scan_and_fold(&server)?;
        (scanned, records) = (s, r);
        bounds.push(b);
    }
    if scanned != answers {
        bail!("the store holds {scanned} answers, {answers} were pushed");
    }
    let (again, bound) = (best(&agains), best(&bounds));
    println!(
        "full recompute of {n} institutions: {} into an empty results table, {} over up-to-date results (best of {RECOMPUTE_ROUNDS}: {}); scan-and-fold of {scanned} answer rows over {records} records: {} (best of {RECOMPUTE_ROUNDS}: {}); over up-to-date results against the bound in the first round alone (one pass each, as measured before): {}",
        time(full),
        time(again),
        times(&agains),
        time(bound),
        times(&bounds),
        ratio(agains[0].as_secs_f64() / bounds[0].as_secs_f64())
    );

    let (rows, bytes): (i64, i64) = server
        .state
        .db()
        .read_blocking(|tx| {
            Ok(tx.query_row("SELECT COUNT(*), COALESCE(SUM(LENGTH(document)), 0) FROM results", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?)
        })
        .map_err(|e: sidak_server::error::ApiError| anyhow!("result sizes: {e}"))?;
    println!("  the recompute stored {rows} result rows holding {:.1} MB of documents", bytes as f64 / 1e6);
    let (written, written_bytes, write_took) = write_floor(&server, tmp)?;
    println!(
        "  writing those {written} documents ({:.1} MB) raw into an emptied table, durably, in one transaction: {} (into empty results took {} more than over up-to-date)",
        written_bytes as f64 / 1e6,
        time(write_took),
        time(full.saturating_sub(again))
    );
    // The season's instrument as the server holds it (published at set-up), which its
    // recompute scores with.
    let instrument = instrument()?;
    let published =
        instruments.get(&instrument.reference).ok_or_else(|| anyhow!("{} is not published", instrument.reference))?;
    breakdown(&server, published)?;
    // Best of its rounds too, as the bound it is set against.
    let (mut rows, mut read, mut scanned_rows, mut scan) = (0, Duration::MAX, 0, Duration::MAX);
    for _ in 0..RECOMPUTE_ROUNDS {
        let (r, this_read, s, this_scan) = season_read_floor(&server)?;
        (rows, scanned_rows) = (r, s);
        (read, scan) = (read.min(this_read), scan.min(this_scan));
    }
    println!(
        "  the full recompute's reading, its floor on the store's thread: every institution's {rows} rows read raw, as the recompute reads them, {} ({} the scan-and-fold); all {scanned_rows} rows of `fields` in one scan, no seeks, {} ({}); each the best of {RECOMPUTE_ROUNDS}",
        time(read),
        ratio(read.as_secs_f64() / bound.as_secs_f64()),
        time(scan),
        ratio(scan.as_secs_f64() / bound.as_secs_f64())
    );

    // One more visit to the first institution, by a second device of its assessor.
    let ids = server.registry_ids()?;
    // The largest institution (a city: seven units): the dearest recompute.
    let first = season
        .institutions
        .iter()
        .max_by_key(|i| i.units.iter().map(|u| u.products.len()).sum::<usize>())
        .ok_or_else(|| anyhow!("an empty season"))?;
    let (mut device, mut ops) = DeviceOps::new(&first.assessor, &first.region, now_ms() as u64 - 60_000, 99);
    let unit = &first.units[0];
    device.visit(&instrument, &ids, first, unit, &unit.products[0].0, false, 0, &mut ops);
    let visit_ops = ops.len();
    let token = server.token(sidak_server::auth::Role::Assessor, Some(&first.region), Some(&first.assessor))?;
    let load = DeviceLoad {
        token: token.clone(),
        bodies: ops.chunks(BATCH).map(crate::ingest::gzip_push).collect(),
        ops: visit_ops,
    };
    let (_, push_took) = push_all(&server.url(), vec![load], 1)?;
    let who = server
        .state
        .db()
        .read_blocking(|tx| Ok::<_, ApiError>(sidak_server::auth::principal_for(tx, &token)?))
        .map_err(|e| anyhow!("the benchmark's token: {e}"))?
        .ok_or_else(|| anyhow!("the benchmark's token is not in the store"))?;
    let inst_id = ids.institutions[&first.code].clone();
    // The incremental recompute proper: one more visit's ops applied as a push applies
    // them (`push::push`, which leaves the recompute to its caller), then the recompute
    // of the institution they dirtied, timed alone, in the same transaction. A new visit
    // each time, to each unit in turn, so every sample has a visit to absorb.
    let mut samples = Vec::new();
    let mut changed_rows = 0;
    for k in 0..INCREMENTAL_SAMPLES {
        let unit = &first.units[k % first.units.len()];
        let mut ops = Vec::new();
        device.visit(&instrument, &ids, first, unit, &unit.products[0].0, false, 0, &mut ops);
        let (took, changed) = server
            .state
            .db()
            .write_blocking(|tx| {
                let request = sidak_core::wire::PushRequest { ops, heads: Vec::new() };
                let (_, effects) = sidak_server::push::push(tx, &instruments, &who, request, now_ms())?;
                if !effects.dirty.contains(&inst_id) {
                    return Err(ApiError::internal("the visit did not dirty its institution"));
                }
                let started = Instant::now();
                let changed = recompute(tx, &instruments, &inst_id)?;
                Ok::<_, ApiError>((started.elapsed(), changed))
            })
            .map_err(|e| anyhow!("push and recompute: {e}"))?;
        samples.push(took);
        changed_rows += changed;
    }
    let (incremental, worst) = percentiles(samples);
    println!(
        "one visit ({visit_ops} ops) pushed, durable and recomputed in {}; then {INCREMENTAL_SAMPLES} more visits, each applied and its institution ({} units) recomputed: median {}, p99 {} ({changed_rows} result rows changed)",
        time(push_took),
        first.units.len(),
        time(incremental),
        time(worst)
    );
    let f = institution_floor(&server, published, &inst_id, INCREMENTAL_SAMPLES)?;
    println!(
        "  its floor while a recompute redoes the whole institution, each step alone (medians): reading its {} rows from SQLite {}, scoring its input {}, its result documents to JSON {}: {} together",
        f.rows,
        time(f.read),
        time(f.score),
        time(f.json),
        time(f.total())
    );

    // Each unit in turn; the dearest is the floor a visit to any of them has under it.
    let mut dearest: Option<(&str, Floor)> = None;
    for unit in &first.units {
        let unit_id = ids.units[&(inst_id.clone(), unit.code.clone())].clone();
        let f = unit_floor(&server, published, &inst_id, (&unit_id, &unit.code), INCREMENTAL_SAMPLES)?;
        if dearest.as_ref().is_none_or(|(_, d)| d.total() < f.total()) {
            dearest = Some((&unit.code, f));
        }
    }
    let (code, f) = dearest.ok_or_else(|| anyhow!("the institution has no unit"))?;
    println!(
        "  its floor if a recompute redid only the visited unit (the per-unit design, not built), each step alone (medians), for the dearest of its {} units: reading unit {code}'s {} rows from SQLite through the value index {}, scoring its input {}, its document to JSON {}: {} together, against the target of 1 ms",
        first.units.len(),
        f.rows,
        time(f.read),
        time(f.score),
        time(f.json),
        time(f.total())
    );

    let full_row = |what: &str, took: Duration| {
        let x = took.as_secs_f64() / bound.as_secs_f64();
        Row::info(
            format!("full recompute {what}, {n} institutions, {scanned} answers"),
            time(took),
            time(bound),
            ratio(x),
        )
        .target("< 1 s and ≤ 2× scan-and-fold", took.as_secs_f64() < 1.0 && x <= 2.0)
    };
    Ok(vec![
        Row::info(
            format!("season ingest, {devices} devices ({concurrency} at a time), {total} ops"),
            rate(ingest),
            String::new(),
            String::new(),
        ),
        full_row("into empty results", full),
        full_row("over up-to-date results", again),
        Row::info(
            format!("incremental recompute, one institution ({} units) after one visit", first.units.len()),
            time(incremental),
            String::new(),
            String::new(),
        )
        .target("< 1 ms", incremental < Duration::from_millis(1)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The season benchmark at its smallest scale (one institution of each type) runs to
    /// the end: every pushed op and answer is in the store (checked inside `run`), the
    /// full recompute scores every institution, and each row with a target says whether
    /// it is met.
    #[test]
    fn the_smallest_season_runs_to_the_end() {
        let tmp = tempfile::tempdir().unwrap();
        let scale = 0.001;
        let institutions = Season::national(scale, 4, 2024).institutions.len();
        assert_eq!(institutions, 5, "one institution of each type");
        let rows = run(tmp.path(), scale, 2).unwrap();
        assert_eq!(rows.len(), 4, "ingest, the two full recomputes and the incremental one");
        for full in &rows[1..3] {
            assert!(full.name.contains(&format!("{institutions} institutions")), "{}", full.name);
            assert!(full.met.is_some(), "{} has a target", full.name);
        }
        assert!(rows[3].name.starts_with("incremental recompute"), "{}", rows[3].name);
        assert!(rows[3].met.is_some());
    }
}
