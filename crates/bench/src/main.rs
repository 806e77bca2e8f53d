//! `sidak-bench`: Sidak's benchmarks, each next to a raw baseline measured in the same
//! run, with the ratio. Results and the commands that reproduce them are in
//! docs/benchmarks.md. Run with `--release`.

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use sidak_bench::report::{self, Row};
use sidak_bench::{day, field, ingest, national, pull, region};

#[derive(Parser)]
#[command(name = "sidak-bench")]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Args, Clone, Copy)]
struct FieldArgs {
    /// Answers to record.
    #[arg(long, default_value_t = 2000)]
    answers: usize,
    /// Complete visits to record for the size measurement.
    #[arg(long, default_value_t = 50)]
    visits: usize,
}

#[derive(Args, Clone, Copy)]
struct IngestArgs {
    /// Ops pushed in each run (split among the devices).
    #[arg(long, default_value_t = 40_000)]
    ops: usize,
}

#[derive(Args, Clone, Copy)]
struct PullArgs {
    /// Ops on the server (pushed by 16 devices first).
    #[arg(long, default_value_t = 20_000)]
    ops: usize,
    /// Concurrent clients in the second run.
    #[arg(long, default_value_t = 64)]
    clients: usize,
}

#[derive(Args, Clone, Copy)]
struct DayArgs {
    /// Visits.
    #[arg(long, default_value_t = 20)]
    visits: usize,
    /// Answers written per visit.
    #[arg(long, default_value_t = 60)]
    answers: usize,
    /// Service-user questionnaires.
    #[arg(long, default_value_t = 30)]
    respondents: usize,
    /// Photos.
    #[arg(long, default_value_t = 40)]
    photos: usize,
    /// Megabytes per photo.
    #[arg(long, default_value_t = 2.0)]
    photo_mb: f64,
    /// Evidence chunk size in KiB (the field client's default, which is also the most the protocol allows).
    #[arg(long, default_value_t = sidak_field::sync::DEFAULT_CHUNK_BYTES / 1024)]
    chunk_kib: usize,
    /// Photos the device sends at once (the field client's default); the gzip day is also
    /// timed one file at a time, in the same run.
    #[arg(long, default_value_t = sidak_field::sync::SyncOptions::new("", "").files_at_once)]
    files_at_once: usize,
    /// Above 1: also this many devices (each its own assessor and city) record the same
    /// day and sync it to one server at once, as a regional office's evening.
    #[arg(long, default_value_t = 1)]
    devices: usize,
}

#[derive(Args, Clone, Copy)]
struct RegionArgs {
    /// Devices whose days (each `sidak-bench day`'s: 20 visits, 40 photos) the region
    /// holds when it replicates.
    #[arg(long, default_value_t = 4)]
    devices: usize,
    /// Photos in each device's day.
    #[arg(long, default_value_t = DayArgs::default().photos)]
    photos: usize,
    /// Megabytes per photo.
    #[arg(long, default_value_t = DayArgs::default().photo_mb)]
    photo_mb: f64,
}

#[derive(Args, Clone, Copy)]
struct SeasonArgs {
    /// Fraction of the national season (1.0: 587 institutions, ~1M answers).
    #[arg(long, default_value_t = 0.05)]
    scale: f64,
    /// Devices pushing at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
}

#[derive(Subcommand)]
enum Bench {
    /// Answer recording on the field store with durable commits, and store size per visit.
    FieldAnswers(FieldArgs),
    /// Server ingest over HTTP with 1 and 16 devices vs a raw batched UPSERT.
    Ingest(IngestArgs),
    /// Pull to 1 and to many clients vs serde_json serialisation of the same ops.
    Pull(PullArgs),
    /// A device's day synced over loopback, with and without gzip, vs raw loopback.
    Day(DayArgs),
    /// A region replicating its devices' days (ops and photos) to the centre, two files at
    /// once and one at a time, vs raw loopback.
    Region(RegionArgs),
    /// A national season: ingest, full recompute vs scan-and-fold, incremental recompute.
    Season(SeasonArgs),
    /// Everything, at a season scale; one table.
    All {
        /// Fraction of the national season.
        #[arg(long, default_value_t = 0.05)]
        scale: f64,
        /// Ops per ingest run (the pull benchmark serves the 16-device run's ops).
        #[arg(long, default_value_t = 40_000)]
        ops: usize,
    },
}

/// `sidak-bench day`'s flags alone, to read their defaults from.
#[derive(Parser)]
struct DayOnly {
    #[command(flatten)]
    day: DayArgs,
}

impl Default for DayArgs {
    /// The day `sidak-bench day` measures when given no flags: its flags' defaults,
    /// written once, on the flags.
    fn default() -> DayArgs {
        DayOnly::parse_from(["sidak-bench day"]).day
    }
}

fn day_of(a: DayArgs) -> day::Day {
    day::Day {
        visits: a.visits,
        answers: a.answers,
        respondents: a.respondents,
        photos: a.photos,
        photo_bytes: (a.photo_mb * 1_000_000.0) as usize,
        chunk: a.chunk_kib * 1024,
        files_at_once: a.files_at_once,
        devices: a.devices.max(1),
    }
}

/// The allocator `sidak-server` runs on (see the workspace manifest), so that the
/// server this benchmark runs in-process allocates as the real one does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<()> {
    let mut tmp = tempfile::tempdir()?;
    // SIDAK_BENCH_KEEP=1 leaves the stores behind for a look (sqlite3 on the path printed).
    if std::env::var_os("SIDAK_BENCH_KEEP").is_some() {
        tmp.disable_cleanup(true);
        eprintln!("stores kept in {}", tmp.path().display());
    }
    let (title, rows): (&str, Vec<Row>) = match Cli::parse().bench {
        Bench::FieldAnswers(a) => ("field", field::run(a.answers, a.visits)?),
        Bench::Ingest(a) => ("server ingest", ingest::run(tmp.path(), a.ops)?.0),
        Bench::Pull(a) => {
            let (server, w) = ingest::prepare(&tmp.path().join("pull"), 16, 16, a.ops)?;
            let total = w.len();
            ingest::push_all(&server.url(), w.loads(&server)?, 16)?;
            ("pull", pull::run(&server, total, a.clients)?)
        }
        Bench::Day(a) => ("a device's day", day::run(tmp.path(), &day_of(a))?),
        Bench::Region(a) => {
            let d = DayArgs { photos: a.photos, photo_mb: a.photo_mb, ..DayArgs::default() };
            ("a region to the centre", region::run(tmp.path(), &day_of(d), a.devices.max(1))?)
        }
        Bench::Season(a) => ("national season", national::run(tmp.path(), a.scale, a.concurrency)?),
        Bench::All { scale, ops } => {
            let mut rows = Vec::new();
            let (ingest_rows, server, total) = ingest::run(tmp.path(), ops)?;
            rows.extend(ingest_rows);
            rows.extend(pull::run(&server, total, 64)?);
            drop(server);
            rows.extend(day::run(tmp.path(), &day_of(DayArgs::default()))?);
            rows.extend(region::run(tmp.path(), &day_of(DayArgs::default()), 2)?);
            rows.extend(national::run(tmp.path(), scale, 16)?);
            rows.extend(field::run(2000, 50)?);
            ("all benchmarks", rows)
        }
    };
    report::print(title, &rows);
    Ok(())
}
