//! Answer recording on the field store with durable commits (WAL, synchronous=FULL)
//! against a bare SQLite insert per transaction, and the store size per visit.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::json;
use sidak_core::instrument::{builtin, Location, RespondentKind};
use sidak_field::app::StartVisit;
use sidak_field::Field;

use crate::report::{ratio, time, Row};

struct Stats {
    median: Duration,
    p99: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    Stats { median: at(0.5), p99: at(0.99) }
}

/// Writes a fixture assignment list for one assessor.
fn setup(dir: &Path) -> Result<Field> {
    let mut field = Field::open(dir, &crate::passphrase())?;
    field.init("bench-assessor", "bench-region")?;
    field.load_instrument(&builtin("penilaian-2023").context("built-in")?)?;
    let list = json!({"assignments": [{
        "id": "0190a000-0000-7000-8000-00000000a001", "assessor": "bench-assessor",
        "institution": {"id": "0190a000-0000-7000-8000-000000000010", "code": "kota-bench", "name": "Kota Bench", "type": "kota", "region": "bench-region"},
        "unit": {"id": "0190a000-0000-7000-8000-000000000011", "code": "bench-disdukcapil", "name": "Disdukcapil", "type": "disdukcapil"},
        "products": [{"id": "0190a000-0000-7000-8000-000000000012", "code": "ktp-el", "name": "KTP-el"}],
        "instrument": {"id": "penilaian-2023", "version": 1}, "mode": "covert", "status": "active"}]});
    field.load_assignments(&serde_json::from_value(list)?)?;
    Ok(field)
}

fn start(field: &mut Field) -> Result<String> {
    let id = field.start_visit(&StartVisit {
        assignment: "0190a000-0000-7000-8000-00000000a001".into(),
        product: None,
        mode: None,
        location: Location::Mpp,
    })?;
    Ok(id.to_string())
}

pub fn run(n: usize, visits: usize) -> Result<Vec<Row>> {
    let tmp = tempfile::tempdir()?;
    let mut field = setup(&tmp.path().join("field"))?;
    let visit = start(&mut field)?;
    let indicators = ["proses.persyaratan", "proses.prosedur", "proses.jangka-waktu", "proses.produk"];

    // Sidak: one durable transaction per answer (record-model check, op, chain, state).
    let mut ours = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        field.answer(&visit, indicators[i % indicators.len()], &(i % 4).to_string())?;
        ours.push(t.elapsed());
    }

    // Baseline: the same SQLite settings, one INSERT of a similar row per transaction.
    let conn = rusqlite::Connection::open(tmp.path().join("raw.sqlite"))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch("CREATE TABLE raw (id INTEGER PRIMARY KEY, entity TEXT, field TEXT, value TEXT, hash TEXT)")?;
    let mut raw = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        let tx = conn.unchecked_transaction()?;
        tx.execute(
            "INSERT INTO raw (entity, field, value, hash) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![visit, indicators[i % 4], (i % 4).to_string(), "0".repeat(64)],
        )?;
        tx.commit()?;
        raw.push(t.elapsed());
    }
    let (o, r) = (stats(ours), stats(raw));
    println!("answer recording, {n} durable commits (WAL, synchronous=FULL):");
    println!("  sidak-field answer   median {:>9.3?}  p99 {:>9.3?}", o.median, o.p99);
    println!("  raw SQLite insert    median {:>9.3?}  p99 {:>9.3?}", r.median, r.p99);
    println!(
        "  ratio (median)       {:.2}×   (p99) {:.2}×",
        o.median.as_secs_f64() / r.median.as_secs_f64(),
        o.p99.as_secs_f64() / r.p99.as_secs_f64()
    );

    // Store size per complete visit: 13 product/unit answers, 4 officials × 15 answers,
    // 2 complaint officers × 3, two notes, 13 evidence records (files not counted).
    let size_dir = tmp.path().join("size");
    let mut field = setup(&size_dir)?;
    let photo = tmp.path().join("photo.jpg");
    std::fs::write(&photo, vec![1u8; 1024])?;
    let instrument = builtin("penilaian-2023").context("built-in")?;
    let before = db_bytes(&mut field, &size_dir)?;
    for _ in 0..visits {
        let v = start(&mut field)?;
        for ind in instrument.indicators().filter(|i| i.source.respondent_kind().is_none()) {
            field.answer(&v, &ind.id, "2")?;
            field.attach(&v, &photo, Some(&ind.id), None)?;
        }
        for (kind, count) in [(RespondentKind::Official, 4), (RespondentKind::ComplaintOfficer, 2)] {
            for _ in 0..count {
                let r = field.add_respondent(&v, kind, None)?.to_string();
                for ind in instrument.indicators().filter(|i| i.source.respondent_kind() == Some(kind)) {
                    field.answer_respondent(&r, &ind.id, "2")?;
                }
            }
        }
        field.note(&v, "Antrean panjang; papan informasi biaya tidak terlihat dari ruang tunggu.", None)?;
        field.note(&v, "Petugas ramah, tetapi formulir pengaduan tidak tersedia.", Some("pengaduan.kanal-aktif"))?;
        field.finish(&v)?;
    }
    let ops = field.all_ops()?.len();
    let after = db_bytes(&mut field, &size_dir)?;
    drop(field);
    let per_visit = (after - before) as f64 / visits as f64;
    println!("store size: {visits} complete visits, {ops} ops: {:.1} KiB per visit (database only; photos are stored once each, by content)", per_visit / 1024.0);
    let x = |a: Duration, b: Duration| ratio(a.as_secs_f64() / b.as_secs_f64());
    Ok(vec![
        Row::info("field answer write, median", time(o.median), time(r.median), x(o.median, r.median)),
        Row::info("field answer write, p99", time(o.p99), time(r.p99), x(o.p99, r.p99))
            .target("p99 < 5 ms", o.p99 < Duration::from_millis(5)),
        Row::info(
            format!("field store per complete visit ({} ops)", ops / visits.max(1)),
            format!("{:.1} KiB", per_visit / 1024.0),
            String::new(),
            String::new(),
        ),
    ])
}

/// The database's size after a checkpoint (main file + WAL).
fn db_bytes(field: &mut Field, dir: &Path) -> Result<u64> {
    field.checkpoint()?;
    let mut total = 0;
    for name in [sidak_field::store::DB_FILE.to_owned(), format!("{}-wal", sidak_field::store::DB_FILE)] {
        if let Ok(m) = std::fs::metadata(dir.join(name)) {
            total += m.len();
        }
    }
    Ok(total)
}
