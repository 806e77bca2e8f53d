//! A regional office replicating to the centre after its devices' days: the region's
//! `sidak_server::upstream::replicate_once` rounds, run until caught up, through a
//! counting proxy to a second in-process server, the centre. Each device's day is the
//! one [`crate::day`] records (photos and all), synced to the region first, untimed.
//! Timed with the region's default of two files at once and with one at a time, each on
//! its own fresh pair of servers; against the time to send the same bytes raw over
//! loopback, and to send them and write them to disk with one fsync.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use rusqlite::Transaction;
use sidak_field::sync::SyncOptions;
use sidak_server::auth::Role;
use sidak_server::error::ApiError;
use sidak_server::upstream::{replicate_once, RoundReport, UpstreamConfig};

use crate::day::{durable_floor, record_on, registry, Day, Devices, REGION};
use crate::proxy::{raw_loopback, CountingProxy};
use crate::report::{bytes, ratio, time, Row};
use crate::server::BenchServer;

/// At most this many rounds to catch up; a region that needs more is stuck.
const MAX_ROUNDS: usize = 50;

/// What one replication to the centre did and took.
struct Replicated {
    took: Duration,
    rounds: usize,
    /// The rounds' reports, summed (`caught_up` is the last round's).
    total: RoundReport,
    up: u64,
    down: u64,
    /// Ops and photo bytes the devices recorded.
    ops: usize,
    photo_bytes: u64,
}

/// A centre and a region under `dir`; `devices` devices record `day` each and sync it
/// to the region; then the region replicates to the centre, `files` files at once, timed.
fn replicate(dir: &Path, day: &Day, devices: usize, files: usize) -> Result<Replicated> {
    let centre = BenchServer::start(&dir.join("centre"))?;
    let (csv, assignments) = registry(day, devices);
    centre.set_up(&csv, &assignments)?;
    let region = BenchServer::start(&dir.join("region"))?;
    let peer = centre.token(Role::Peer, Some(REGION), None)?;
    // The region's first round fetches its part of the season: registry, assignments and
    // instruments, which its devices then receive in their morning sync.
    let fetched = replicate_once(&region.state, &UpstreamConfig::new(&centre.url(), &peer))
        .map_err(|e| anyhow!("the region's first round: {e}"))?;
    if !fetched.caught_up {
        bail!("the region's first round did not catch up: {fetched:?}");
    }
    let Devices { mut fields, ops, photo_bytes } = record_on(&region, dir, day, devices)?;
    for (d, (field, token)) in fields.iter_mut().enumerate() {
        let summary = field
            .sync(&SyncOptions::new(&region.url(), token), &mut |_| {})
            .map_err(|e| anyhow!("device {d}'s evening sync: {e}"))?;
        if !summary.complete || summary.files_uploaded as usize != day.photos {
            bail!("device {d}'s evening sync did not finish: {summary:?}");
        }
    }

    let proxy = CountingProxy::start(centre.addr, false)?;
    let mut cfg = UpstreamConfig::new(&proxy.url(), &peer);
    cfg.files_at_once = files;
    let started = Instant::now();
    let mut total = RoundReport::default();
    let mut rounds = 0;
    while !total.caught_up {
        if rounds == MAX_ROUNDS {
            bail!("the region had not caught up after {MAX_ROUNDS} rounds: {total:?}");
        }
        let r = replicate_once(&region.state, &cfg).map_err(|e| anyhow!("round {}: {e}", rounds + 1))?;
        rounds += 1;
        total.pushed += r.pushed;
        total.files += r.files;
        total.bytes += r.bytes;
        total.pulled += r.pulled;
        total.refused += r.refused;
        total.caught_up = r.caught_up;
    }
    let took = started.elapsed();
    let (up, down) = proxy.counts();
    if total.refused > 0 {
        bail!("the centre refused {} of the region's ops", total.refused);
    }
    check_same(&region, &centre, devices * day.photos)?;
    Ok(Replicated { took, rounds, total, up, down, ops, photo_bytes })
}

/// Every result document the region holds, and every photo its devices sent, is at the
/// centre as the region holds it: the same data, the same published figures.
fn check_same(region: &BenchServer, centre: &BenchServer, photos: usize) -> Result<()> {
    /// Each result row's kind, record and document, in order; and the complete files.
    type Held = (Vec<(String, String, String)>, usize);
    fn held(server: &BenchServer) -> Result<Held> {
        server
            .state
            .db()
            .read_blocking(|tx: &Transaction<'_>| {
                let results = tx
                    .prepare("SELECT kind, entity, document FROM results ORDER BY kind, entity, instrument")?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<Result<Vec<_>, _>>()?;
                let files: i64 = tx.query_row("SELECT count(*) FROM blobs WHERE complete = 1", [], |r| r.get(0))?;
                Ok::<_, ApiError>((results, files as usize))
            })
            .map_err(|e| anyhow!("reading results: {e}"))
    }
    let (at_region, region_files) = held(region)?;
    let (at_centre, centre_files) = held(centre)?;
    if at_region.is_empty() || at_region != at_centre {
        bail!(
            "the centre's results differ from the region's ({} rows at the region, {} at the centre)",
            at_region.len(),
            at_centre.len()
        );
    }
    if region_files != photos || centre_files != photos {
        bail!("{photos} photos were taken; the region holds {region_files}, the centre {centre_files}");
    }
    Ok(())
}

/// `n` devices' days, in words.
fn days(n: usize) -> String {
    match n {
        1 => "one device's day".to_owned(),
        n => format!("{n} devices' days"),
    }
}

/// How the region sent its files.
fn how(files: usize) -> String {
    match files {
        1 => "one file at a time".to_owned(),
        n => format!("{n} files at once"),
    }
}

/// `devices` devices' days replicated from their region to the centre: with the region's
/// default number of files at once, then one at a time, each on fresh servers.
pub fn run(tmp: &Path, day: &Day, devices: usize) -> Result<Vec<Row>> {
    let default = UpstreamConfig::new("", "").files_at_once;
    let mut rows = Vec::new();
    let mut ways = vec![default];
    if default != 1 {
        ways.push(1);
    }
    let mut first: Option<Duration> = None;
    for files in ways {
        let r = replicate(&tmp.join(format!("region-{files}")), day, devices, files)?;
        let raw = raw_loopback(r.up, r.down)?;
        let durable = durable_floor(tmp, r.up, r.down)?;
        let way = how(files);
        println!(
            "a region's {} to the centre ({way}): {} ops recorded, of which {} new to the centre, and {} files ({}), sent in {} round(s) in {} — {} up, {} down; raw loopback for the same bytes {}, and written to disk with one fsync {}",
            days(devices),
            r.ops,
            r.total.pushed,
            r.total.files,
            bytes(r.photo_bytes),
            r.rounds,
            time(r.took),
            bytes(r.up),
            bytes(r.down),
            time(raw),
            time(durable)
        );
        rows.push(Row::info(
            format!("a region's {} to the centre, {way}: {} up", days(devices), bytes(r.up)),
            time(r.took),
            time(raw),
            ratio(r.took.as_secs_f64() / raw.as_secs_f64()),
        ));
        rows.push(Row::info(
            format!("the same, {way}, against the same bytes sent and made durable"),
            time(r.took),
            time(durable),
            ratio(r.took.as_secs_f64() / durable.as_secs_f64()),
        ));
        match first {
            None => first = Some(r.took),
            Some(before) => rows.push(Row::info(
                format!("the region's default ({}) against {way}", how(default)),
                time(before),
                time(r.took),
                ratio(before.as_secs_f64() / r.took.as_secs_f64()),
            )),
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small region's catch-up runs to the end both ways: every round's report adds up,
    /// and the centre ends with the region's results and every photo (`check_same`).
    #[test]
    fn a_small_region_catches_up_with_the_centre_both_ways() {
        let tmp = tempfile::tempdir().unwrap();
        let day = Day {
            visits: 4,
            answers: 10,
            respondents: 2,
            photos: 3,
            photo_bytes: 40_000,
            chunk: 16 * 1024,
            files_at_once: 2,
            devices: 1,
        };
        let r = replicate(&tmp.path().join("two"), &day, 1, 2).unwrap();
        assert!(r.total.caught_up);
        assert_eq!(r.total.files, 3, "{:?}", r.total);
        assert_eq!(r.total.bytes, 3 * 40_000, "{:?}", r.total);
        assert!(r.total.pushed > 0 && r.total.pushed as usize <= r.ops, "{:?} of {} recorded", r.total, r.ops);
        assert!(r.up > r.total.bytes, "the proxy counted the photos and the ops: {} bytes up", r.up);
        let rows = run(tmp.path(), &day, 1).unwrap();
        assert_eq!(rows.len(), 5, "two rows for each way, and the two ways compared");
    }
}
