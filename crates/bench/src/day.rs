//! A device's day over loopback: visits recorded offline through `sidak_field::Field`,
//! then one `Field::sync` through a counting proxy to an in-process server, with the
//! field client's gzip and with gzip taken out; against the time to send the same
//! bytes raw over loopback. With `devices` above one, also that many devices' days
//! synced to one server at once: a regional office's evening.

use std::path::Path;
use std::time::Instant;

use anyhow::{anyhow, bail, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sidak_core::instrument::{Level, Location, RespondentKind};
use sidak_field::app::StartVisit;
use sidak_field::sync::SyncOptions;
use sidak_field::Field;
use sidak_server::admin::{NewAssignment, REGISTRY_HEADER};
use sidak_server::auth::Role;

use crate::proxy::{raw_loopback, raw_loopback_into, CountingProxy};
use crate::report::{bytes, ratio, time, Row};
use crate::server::BenchServer;

/// The shape of the day.
#[derive(Clone, Copy, Debug)]
pub struct Day {
    /// Visits (each to one product; 4 products of each unit).
    pub visits: usize,
    /// Answers written per visit (the observations, revisited in turn).
    pub answers: usize,
    /// Service-user questionnaires (5 answers each).
    pub respondents: usize,
    /// Photos, spread over the visits.
    pub photos: usize,
    /// Bytes per photo.
    pub photo_bytes: usize,
    /// Evidence chunk size the client uses (by default the field client's, `sidak_field::sync::DEFAULT_CHUNK_BYTES`).
    pub chunk: usize,
    /// Photos a device sends at once (by default the field client's).
    pub files_at_once: usize,
    /// Devices whose days are also synced at once (each its own assessor and city).
    pub devices: usize,
}

const ASSESSOR: &str = "asesor-harian";
/// The region every benchmark device and city is in.
pub const REGION: &str = "jateng";
const PRODUCTS_PER_UNIT: usize = 4;

/// Device `d`'s assessor.
fn assessor(d: usize) -> String {
    format!("{ASSESSOR}-{d}")
}

/// Devices that recorded their day, each with its token; and the ops and photo bytes
/// recorded over all of them.
pub struct Devices {
    /// Each device's store, with its assessor's token.
    pub fields: Vec<(Field, String)>,
    /// Ops recorded.
    pub ops: usize,
    /// Photo bytes taken.
    pub photo_bytes: u64,
}

/// The registry and assignments [`record_on`] needs on a server (or on the centre a
/// region replicates them from): a city for each of `devices` assessors, each assigned
/// its city, with enough units for `day`'s visits.
pub fn registry(day: &Day, devices: usize) -> (String, Vec<NewAssignment>) {
    let units = day.visits.div_ceil(PRODUCTS_PER_UNIT);
    let types = ["disdukcapil", "dpmptsp", "dinkes", "puskesmas", "disdik", "dinsos"];
    let mut csv = REGISTRY_HEADER.to_owned() + "\n";
    let mut assignments = Vec::new();
    for d in 0..devices {
        let city = format!("kota-harian-{d}");
        for u in 0..units {
            let t = types[u % types.len()];
            let code = format!("{t}-{}", u + 1);
            for p in 1..=PRODUCTS_PER_UNIT {
                csv.push_str(&format!(
                    "{city},Pemerintah Kota Harian {d},kota,{REGION},{code},{t} {},{t},layanan-{p},Layanan {p}\n",
                    u + 1
                ));
            }
            assignments.push(NewAssignment {
                assessor: assessor(d),
                institution: city.clone(),
                unit: code,
                products: vec![],
                instrument: "penilaian-2023@1".into(),
                mode: "covert".into(),
                due: None,
            });
        }
    }
    (csv, assignments)
}

/// Records the day on a fresh device; returns its ops count and photo bytes.
fn record(field: &mut Field, day: &Day, camera: &Path, seed: u64) -> Result<(usize, u64)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let assignments = field.assignments()?;
    let instrument = field
        .instruments()
        .into_iter()
        .find(|i| i.reference.id == "penilaian-2023")
        .ok_or_else(|| anyhow!("the device did not receive penilaian-2023"))?
        .clone();
    let observations: Vec<(String, bool)> = instrument
        .indicators()
        .filter(|i| i.source.respondent_kind().is_none() && i.level != Level::Institution)
        .map(|i| (i.id.clone(), i.evidence_required))
        .collect();
    let users: Vec<String> = instrument
        .indicators()
        .filter(|i| i.source.respondent_kind() == Some(RespondentKind::ServiceUser))
        .map(|i| i.id.clone())
        .collect();
    std::fs::create_dir_all(camera)?;
    let mut photo_bytes = 0;
    let mut photos_left = day.photos;
    for v in 0..day.visits {
        let assignment = &assignments[(v / PRODUCTS_PER_UNIT) % assignments.len()];
        let product = &assignment.products[v % assignment.products.len()];
        let visit = field
            .start_visit(&StartVisit {
                assignment: assignment.id.to_string(),
                product: Some(product.code.clone()),
                mode: None,
                location: if v % 2 == 0 { Location::Mpp } else { Location::OwnOffice },
            })?
            .to_string();
        for a in 0..day.answers {
            let (id, _) = &observations[a % observations.len()];
            field.answer(&visit, id, &rng.gen_range(0..=3).to_string())?;
        }
        // Photos: spread evenly, each cited by an observation that needs evidence.
        let here = photos_left.div_ceil(day.visits - v);
        photos_left -= here;
        for (k, (id, _)) in observations.iter().filter(|o| o.1).cycle().take(here).enumerate() {
            let path = camera.join(format!("v{v}-{k}.jpg"));
            // Random bytes: a JPEG does not compress either.
            let data: Vec<u8> = (0..day.photo_bytes).map(|_| rng.gen()).collect();
            std::fs::write(&path, &data)?;
            photo_bytes += data.len() as u64;
            field.attach(&visit, &path, Some(id), Some("image/jpeg"))?;
        }
        if v == 0 {
            for _ in 0..day.respondents {
                let r = field.add_respondent(&visit, RespondentKind::ServiceUser, None)?.to_string();
                for id in &users {
                    field.answer_respondent(&r, id, &rng.gen_range(0..=3).to_string())?;
                }
            }
        }
        field.finish(&visit)?;
    }
    Ok((field.all_ops()?.len(), photo_bytes))
}

/// A server under `dir` and `devices` devices, each its own assessor with its own city:
/// each received its assignments in a morning sync (not measured) and recorded the day.
fn recorded(dir: &Path, day: &Day, devices: usize) -> Result<(BenchServer, Devices)> {
    let server = BenchServer::start(&dir.join("server"))?;
    let (csv, assignments) = registry(day, devices);
    server.set_up(&csv, &assignments)?;
    let devices = record_on(&server, dir, day, devices)?;
    Ok((server, devices))
}

/// `devices` devices under `dir`, each its own assessor of [`REGION`], which received
/// their assignments from `server` in a morning sync and recorded `day` offline.
pub fn record_on(server: &BenchServer, dir: &Path, day: &Day, devices: usize) -> Result<Devices> {
    let mut out = Devices { fields: Vec::new(), ops: 0, photo_bytes: 0 };
    for d in 0..devices {
        let assessor = assessor(d);
        let token = server.token(Role::Assessor, Some(REGION), Some(&assessor))?;
        let mut field = Field::open(&dir.join(format!("field-{d}")), &crate::passphrase())?;
        field.init(&assessor, REGION)?;
        field
            .sync(&SyncOptions::new(&server.url(), &token), &mut |_| {})
            .map_err(|e| anyhow!("device {d}'s first sync: {e}"))?;
        let (ops, photo_bytes) = record(&mut field, day, &dir.join(format!("camera-{d}")), 7 + d as u64)?;
        out.ops += ops;
        out.photo_bytes += photo_bytes;
        out.fields.push((field, token));
    }
    Ok(out)
}

/// The time to send `up` and `down` bytes over loopback and write them to disk with one
/// fsync: the floor under a sync that makes them durable.
pub fn durable_floor(tmp: &Path, up: u64, down: u64) -> Result<std::time::Duration> {
    let sink = tmp.join("raw-upload.bin");
    let took = raw_loopback_into(up, down, Some(&sink))?;
    std::fs::remove_file(&sink)?;
    Ok(took)
}

/// One day, synced with or without gzip, sending `files` photos at once; returns (wall,
/// bytes up, bytes down, ops, photo bytes).
fn one(tmp: &Path, day: &Day, identity: bool, files: usize) -> Result<(std::time::Duration, u64, u64, usize, u64)> {
    let dir = tmp.join(format!("day-{}-{files}", if identity { "identity" } else { "gzip" }));
    let (server, Devices { fields: mut devices, ops, photo_bytes }) = recorded(&dir, day, 1)?;
    let (mut field, token) = devices.pop().ok_or_else(|| anyhow!("no device was set up"))?;
    let t = Instant::now();
    field.status()?;
    println!("  Field::status() after the day's recording: {}", time(t.elapsed()));
    let proxy = CountingProxy::start(server.addr, identity)?;
    let mut opts = SyncOptions::new(&proxy.url(), &token);
    opts.chunk = day.chunk;
    opts.files_at_once = files;
    let started = Instant::now();
    let mut phases: Vec<(&'static str, Instant)> = Vec::new();
    let summary = field
        .sync(&opts, &mut |p| {
            if let sidak_field::sync::Progress::Phase(name) = p {
                phases.push((name, Instant::now()));
            }
        })
        .map_err(|e| anyhow!("evening sync: {e}"))?;
    let took = started.elapsed();
    if !summary.complete || summary.files_uploaded as usize != day.photos {
        bail!("the sync did not finish: {summary:?}");
    }
    let (up, down) = proxy.counts();
    let end = Instant::now();
    let spans: Vec<String> = phases
        .iter()
        .enumerate()
        .map(|(k, (name, at))| {
            let next = phases.get(k + 1).map(|p| p.1).unwrap_or(end);
            format!("{name} {}", time(next - *at))
        })
        .collect();
    println!("  sync phases ({}): {}", how(identity, files), spans.join(", "));
    Ok((took, up, down, ops, photo_bytes))
}

/// `day.devices` days recorded on as many devices, then synced to one server at once
/// (gzip, as the field client sends); returns (wall, bytes up, bytes down, ops, photo
/// bytes).
fn at_once(tmp: &Path, day: &Day) -> Result<(std::time::Duration, u64, u64, usize, u64)> {
    let (server, Devices { fields: mut devices, ops, photo_bytes }) =
        recorded(&tmp.join(format!("days-{}", day.devices)), day, day.devices)?;
    let proxy = CountingProxy::start(server.addr, false)?;
    let url = proxy.url();
    let cpu_before = process_cpu();
    let started = Instant::now();
    let synced = std::thread::scope(|s| {
        let running: Vec<_> = devices
            .iter_mut()
            .map(|(field, token)| {
                let mut opts = SyncOptions::new(&url, token);
                opts.chunk = day.chunk;
                opts.files_at_once = day.files_at_once;
                s.spawn(move || field.sync(&opts, &mut |_| {}))
            })
            .collect();
        running
            .into_iter()
            .map(|r| r.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect::<Vec<_>>()
    });
    let took = started.elapsed();
    if let (Some(before), Some(after)) = (cpu_before, process_cpu()) {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let cpu = after - before;
        println!(
            "  the devices, the proxy and the server used {cpu:.2} s of CPU in {:.2} s: {:.0} % of {cores} core(s)",
            took.as_secs_f64(),
            100.0 * cpu / (took.as_secs_f64() * cores as f64)
        );
    }
    for (d, summary) in synced.into_iter().enumerate() {
        let summary = summary.map_err(|e| anyhow!("device {d}'s evening sync: {e}"))?;
        if !summary.complete || summary.files_uploaded as usize != day.photos {
            bail!("device {d}'s sync did not finish: {summary:?}");
        }
    }
    let (up, down) = proxy.counts();
    Ok((took, up, down, ops, photo_bytes))
}

/// CPU seconds this process has used (user and system, every thread), where Linux's
/// `/proc/self/stat` tells; `None` elsewhere.
fn process_cpu() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name (which is in parentheses and may hold spaces):
    // utime and stime are the 12th and 13th of them, in clock ticks (100 a second).
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let utime: f64 = fields.nth(11)?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// How a day was synced.
fn how(identity: bool, files: usize) -> String {
    let coding = if identity { "without gzip" } else { "gzip" };
    match files {
        1 => format!("{coding}, one photo at a time"),
        n => format!("{coding}, {n} photos at once"),
    }
}

/// The day with gzip (as the field client sends) and without, and with gzip one photo
/// at a time; with more than one device, that many days at once.
pub fn run(tmp: &Path, day: &Day) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let mut passes = vec![(false, day.files_at_once), (true, day.files_at_once)];
    if day.files_at_once != 1 {
        passes.push((false, 1));
    }
    for (identity, files) in passes {
        let (took, up, down, ops, photo_bytes) = one(tmp, day, identity, files)?;
        let raw = raw_loopback(up, down)?;
        let durable = durable_floor(tmp, up, down)?;
        let how = how(identity, files);
        println!(
            "device's day ({how}): {ops} ops, {} photos ({}), synced in {} — {} up, {} down; raw loopback for the same bytes {}, and written to disk with one fsync {}",
            day.photos,
            bytes(photo_bytes),
            time(took),
            bytes(up),
            bytes(down),
            time(raw),
            time(durable)
        );
        let x = took.as_secs_f64() / raw.as_secs_f64();
        let row = Row::info(
            format!("device's day, {how}: {} up + {} down", bytes(up), bytes(down)),
            time(took),
            time(raw),
            ratio(x),
        );
        // The target is the device's own way of sending; one at a time is for comparison.
        rows.push(if files == day.files_at_once { row.target("< 2× raw send", x < 2.0) } else { row });
        rows.push(Row::info(
            format!("device's day, {how}, against the same bytes sent and made durable"),
            time(took),
            time(durable),
            ratio(took.as_secs_f64() / durable.as_secs_f64()),
        ));
    }
    if day.devices > 1 {
        let (took, up, down, ops, photo_bytes) = at_once(tmp, day)?;
        let durable = durable_floor(tmp, up, down)?;
        println!(
            "{} devices' days at once ({} on each): {ops} ops, {} photos ({}), all synced in {} — {} up, {} down; the same bytes sent and written to disk with one fsync {}",
            day.devices,
            how(false, day.files_at_once),
            day.photos * day.devices,
            bytes(photo_bytes),
            time(took),
            bytes(up),
            bytes(down),
            time(durable)
        );
        rows.push(Row::info(
            format!("{} devices' days at once, gzip, against the same bytes sent and made durable", day.devices),
            time(took),
            time(durable),
            ratio(took.as_secs_f64() / durable.as_secs_f64()),
        ));
    }
    Ok(rows)
}
