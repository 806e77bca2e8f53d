//! `sidak-server demo`: a season on this machine, end to end. A realistic registry
//! (three provinces with a city and a regency each, their service units as the
//! assessment samples them, and two central agencies), assessors with their own
//! devices recording visits offline through the real field library — answers,
//! officials' and complaint officers' interviews, service users' questionnaires,
//! photos — and syncing over HTTP to a real server, some with the troubles of real
//! fieldwork: a sync that breaks off and resumes, a phone whose date is days ahead, an
//! answer edited after submission, two devices changing the same answer, a unit left
//! without its complaint-officer interviews. The server merges and scores it all.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use sidak_core::instrument::{Instrument, Level, Location, RespondentKind};
use sidak_field::app::StartVisit;
use sidak_field::sync::SyncOptions;
use sidak_field::Field;

use crate::admin;
use crate::auth::{create_token, NewToken, Role};
use crate::error::ApiError;
use crate::season::{Institution, Season, CENTRE_REGION, INSTRUMENT};
use crate::state::AppState;

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The server's store failed.
    #[error(transparent)]
    Store(#[from] ApiError),
    /// A device failed (a bug: the demo records only valid data).
    #[error("device {device}: {message}")]
    Device {
        /// Which.
        device: String,
        /// What happened.
        message: String,
    },
    /// A file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What the simulation did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DemoSummary {
    /// Provinces (regions) in the registry, the centre's agencies included.
    pub regions: usize,
    /// Institutions.
    pub institutions: usize,
    /// Service units.
    pub units: usize,
    /// Service products.
    pub products: usize,
    /// Devices that recorded.
    pub devices: usize,
    /// Visits recorded.
    pub visits: usize,
    /// Respondent questionnaires.
    pub questionnaires: usize,
    /// Photos taken.
    pub photos: usize,
    /// Their bytes.
    pub photo_bytes: u64,
    /// Ops the server holds.
    pub ops: u64,
    /// Syncs that broke off and were resumed.
    pub interrupted_syncs: usize,
    /// Conflicts for a supervisor.
    pub conflicts: usize,
    /// Institutions with a complete result.
    pub complete_institutions: usize,
    /// Seconds the simulation took.
    pub seconds: f64,
}

/// The demo's institutions, drawn from the national season that `sidak-bench season`
/// measures (`crate::season`): three provinces with a city and a regency each, and two
/// central agencies.
const DEMO_INSTITUTIONS: [&str; 11] = [
    "prov-aceh",
    "kota-banda-aceh",
    "kab-aceh-besar",
    "prov-jateng",
    "kota-magelang",
    "kab-kendal",
    "prov-sulsel",
    "kota-makassar",
    "kab-maros",
    "kementerian-atr-bpn",
    "badan-pom",
];

/// The seed of the national season the demo's institutions come from.
const SEASON_SEED: u64 = 2024;

/// How well each demo institution serves, in the order above: spread across the bands,
/// A and B (green), C (yellow), D and E (red).
const QUALITIES: [i64; 11] = [3, 2, 1, 3, 3, 2, 2, 0, 1, 3, 2];

/// The demo's season: its institutions with two products a unit and the instrument's
/// 30 service users each, so that a laptop records it through the field library in
/// seconds.
fn demo_season() -> Season {
    Season::national(1.0, 1, SEASON_SEED)
        .sample(&DEMO_INSTITUTIONS, 2, 30, &QUALITIES)
        .expect("the demo's institutions are in the national season")
}

/// One assessor's device and what it is to visit.
struct Assessor {
    code: String,
    region: String,
    /// (institution, unit code) pairs.
    units: Vec<(usize, String)>,
}

fn assessors(season: &Season) -> Vec<Assessor> {
    let institutions = &season.institutions;
    let mut by_region: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, inst) in institutions.iter().enumerate() {
        by_region.entry(inst.region.as_str()).or_default().push(i);
    }
    let mut out = Vec::new();
    for (region, insts) in by_region {
        // Two assessors per province share its units; one for the centre's agencies.
        let n = if region == CENTRE_REGION { 1 } else { 2 };
        let mut team: Vec<Assessor> = (1..=n)
            .map(|k| Assessor { code: format!("asr-{region}-{k:02}"), region: region.to_owned(), units: Vec::new() })
            .collect();
        let mut k = 0;
        for &i in &insts {
            for u in &institutions[i].units {
                team[k % n].units.push((i, u.code.clone()));
                k += 1;
            }
        }
        out.extend(team);
    }
    out
}

fn new_token(
    state: &AppState,
    role: Role,
    region: Option<&str>,
    assessor: Option<&str>,
    label: &str,
) -> Result<String, ApiError> {
    let now = state.now();
    let new = NewToken {
        role,
        region: region.map(str::to_owned),
        assessor: assessor.map(str::to_owned),
        label: Some(label.to_owned()),
        device_keys: Vec::new(),
    };
    let made = state.db().write_blocking(|tx| create_token(tx, &new, now)).map_err(ApiError::from)?;
    Ok(made.1)
}

/// Sets up the registry, assignments and tokens; returns an admin token.
pub fn prepare(state: &AppState) -> Result<String, DemoError> {
    let season = demo_season();
    let institutions = &season.institutions;
    let rows = admin::parse_registry(&season.registry_csv())?;
    let instruments = state.instruments();
    let now = state.now();
    state.db().write_blocking(|tx| {
        let (_, dirty) = admin::import_registry(tx, &instruments, &rows, now)?;
        for i in &dirty {
            crate::results::recompute(tx, &instruments, i)?;
        }
        crate::db::set_meta(tx, "demo", "1")?;
        Ok::<_, ApiError>(())
    })?;
    for a in assessors(&season) {
        for (i, unit) in &a.units {
            let new = institutions[*i].assignment(unit, &a.code);
            state.db().write_blocking(|tx| admin::create_assignment(tx, &instruments, &new, now).map(|_| ()))?;
        }
    }
    Ok(new_token(state, Role::Admin, None, None, "demo admin")?)
}

/// Records a season on devices under `work` and syncs it to the server at `url`.
pub fn simulate(
    state: &AppState,
    url: &str,
    work: &Path,
    seed: u64,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<DemoSummary, DemoError> {
    let started = Instant::now();
    let season = demo_season();
    let team = assessors(&season);
    let (institutions, units, products, _) = season.counts();
    let institutions_list = &season.institutions;
    let mut summary = DemoSummary {
        regions: institutions_list.iter().map(|i| i.region.as_str()).collect::<std::collections::BTreeSet<_>>().len(),
        institutions,
        units,
        products,
        devices: team.len() + 1,
        ..DemoSummary::default()
    };
    progress(&format!(
        "registry: {} regions, {} institutions, {} units, {} service products; {} assessors",
        summary.regions,
        summary.institutions,
        summary.units,
        summary.products,
        team.len()
    ));
    let tokens: Vec<String> = team
        .iter()
        .map(|a| new_token(state, Role::Assessor, Some(&a.region), Some(&a.code), &format!("{} phone", a.code)))
        .collect::<Result<_, _>>()?;

    // Devices work in parallel, as assessors do.
    let results: Vec<Result<DeviceReport, DemoError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = team
            .iter()
            .zip(&tokens)
            .enumerate()
            .map(|(k, (a, token))| {
                let institutions = institutions_list;
                scope.spawn(move || fieldwork(k, a, token, institutions, url, work, seed, progress))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(panicked()))).collect()
    });
    for r in results {
        let r = r?;
        summary.visits += r.visits;
        summary.questionnaires += r.questionnaires;
        summary.photos += r.photos;
        summary.photo_bytes += r.photo_bytes;
        summary.interrupted_syncs += r.interrupted;
    }

    // A tablet of the first assessor changes an answer the phone also changed.
    let first = &team[0];
    conflict(first, &tokens[0], url, work)?;

    summary.ops = state.db().read_blocking(|tx| {
        Ok::<_, ApiError>(tx.query_row("SELECT COUNT(*) FROM ops", [], |r| r.get::<_, i64>(0))? as u64)
    })?;
    summary.conflicts = state.db().read_blocking(|tx| crate::admin::conflicts(tx, None))?.len();
    summary.complete_institutions = state
        .db()
        .read_blocking(|tx| crate::results::rows(tx, "institution", None, -1, None))?
        .into_iter()
        .filter(|r| r.status == "complete")
        .count();
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

fn panicked() -> DemoError {
    DemoError::Device { device: "?".into(), message: "a device thread panicked".into() }
}

struct DeviceReport {
    visits: usize,
    questionnaires: usize,
    photos: usize,
    photo_bytes: u64,
    interrupted: usize,
}

fn device_error(a: &Assessor) -> impl Fn(String) -> DemoError + '_ {
    move |message| DemoError::Device { device: a.code.clone(), message }
}

fn options(url: &str, token: &str) -> SyncOptions {
    let mut o = SyncOptions::new(url, token);
    o.retry_for = Duration::from_secs(30);
    o
}

#[allow(clippy::too_many_arguments)]
fn fieldwork(
    k: usize,
    a: &Assessor,
    token: &str,
    institutions: &[Institution],
    url: &str,
    work: &Path,
    seed: u64,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<DeviceReport, DemoError> {
    let err = device_error(a);
    let mut rng = StdRng::seed_from_u64(seed.wrapping_add(k as u64));
    let dir = work.join("devices").join(&a.code);
    // The second jateng phone's date is two days ahead.
    let ahead = if a.code == "asr-jateng-02" { 2 * 24 * 3600 * 1000 } else { 0 };
    let clock: sidak_field::app::Clock = Box::new(move || {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        now + ahead
    });
    let mut field = Field::open_with_clock(&dir, &demo_passphrase(), clock).map_err(|e| err(e.to_string()))?;
    field.init(&a.code, &a.region).map_err(|e| err(e.to_string()))?;
    // Morning, at the office: assignments and the instrument arrive.
    field.sync(&options(url, token), &mut |_| {}).map_err(|e| err(e.to_string()))?;
    let instrument: Instrument = field
        .instruments()
        .into_iter()
        .find(|i| i.reference.to_string() == INSTRUMENT)
        .cloned()
        .ok_or_else(|| err("no instrument after sync".into()))?;
    let camera = dir.join("camera");
    std::fs::create_dir_all(&camera).map_err(|source| DemoError::Io { path: camera.clone(), source })?;
    let mut report = DeviceReport { visits: 0, questionnaires: 0, photos: 0, photo_bytes: 0, interrupted: 0 };
    let mut served_users: std::collections::BTreeSet<usize> = std::collections::BTreeSet::new();
    let assignments = field.assignments().map_err(|e| err(e.to_string()))?;
    // Offline, the day's visits.
    for (i, unit) in &a.units {
        let inst = &institutions[*i];
        let assignment = assignments
            .iter()
            .find(|x| x.unit.code == *unit && x.institution.code == inst.code)
            .ok_or_else(|| err(format!("no assignment for {}/{unit}", inst.code)))?;
        let value = |rng: &mut StdRng| (inst.quality + rng.gen_range(-1i64..=1)).clamp(0, 3).to_string();
        for (p, product) in assignment.products.iter().enumerate() {
            let location = match (unit.as_str(), p) {
                ("disdukcapil", 0) => Location::Mpp,
                ("dpmptsp", _) => Location::Dpmptsp,
                (_, 1) if rng.gen_bool(0.2) => Location::Online,
                _ => Location::OwnOffice,
            };
            let visit = field
                .start_visit(&StartVisit {
                    assignment: assignment.id.to_string(),
                    product: Some(product.code.clone()),
                    mode: None,
                    location,
                })
                .map_err(|e| err(e.to_string()))?
                .to_string();
            report.visits += 1;
            for ind in instrument.indicators() {
                let here = match ind.level {
                    Level::Product => true,
                    Level::Unit => p == 0,
                    Level::Institution => false,
                };
                if !here || ind.source.respondent_kind().is_some() {
                    continue;
                }
                field.answer(&visit, &ind.id, &value(&mut rng)).map_err(|e| err(e.to_string()))?;
                if ind.evidence_required {
                    let photo = camera.join(format!("IMG_{:04}.jpg", report.photos));
                    let bytes = fake_jpeg(&mut rng);
                    report.photo_bytes += bytes.len() as u64;
                    std::fs::write(&photo, &bytes).map_err(|source| DemoError::Io { path: photo.clone(), source })?;
                    field.attach(&visit, &photo, Some(&ind.id), None).map_err(|e| err(e.to_string()))?;
                    // The camera roll is cleared: the store keeps the photo.
                    let _ = std::fs::remove_file(&photo);
                    report.photos += 1;
                }
            }
            if p == 0 {
                for rule in &instrument.respondents {
                    let count = match (rule.kind, rule.level) {
                        (RespondentKind::ServiceUser, Level::Institution) if served_users.insert(*i) => rule.min,
                        // Kabupaten Maros' Dinsos: the complaint officers were not there.
                        (RespondentKind::ComplaintOfficer, _) if inst.code == "kab-maros" && unit == "dinsos" => 0,
                        (_, Level::Unit) => rule.min,
                        _ => 0,
                    };
                    for _ in 0..count {
                        let r =
                            field.add_respondent(&visit, rule.kind, None).map_err(|e| err(e.to_string()))?.to_string();
                        report.questionnaires += 1;
                        for ind in instrument.indicators().filter(|x| x.source.respondent_kind() == Some(rule.kind)) {
                            field.answer_respondent(&r, &ind.id, &value(&mut rng)).map_err(|e| err(e.to_string()))?;
                        }
                    }
                }
                field
                    .note(
                        &visit,
                        "antrean panjang; informasi biaya tidak terpasang di loket",
                        Some("proses.biaya-tarif"),
                    )
                    .map_err(|e| err(e.to_string()))?;
            }
            field.finish(&visit).map_err(|e| err(e.to_string()))?;
            // An answer corrected on the spot after submission: flagged for review.
            if a.code == "asr-sulsel-01" && report.visits == 1 {
                field.answer(&visit, "proses.jangka-waktu", "1").map_err(|e| err(e.to_string()))?;
            }
        }
    }
    // Evening: the first sync of an Aceh phone breaks off on a bad connection...
    if a.code == "asr-aceh-01" {
        let mut flaky = options(url, token);
        flaky.timeout = Duration::from_millis(20);
        flaky.batch = 50;
        flaky.retry_for = Duration::ZERO;
        if field.sync(&flaky, &mut |_| {}).is_err() {
            report.interrupted += 1;
        }
    }
    // ... and every phone syncs; a sync resumes where the last one stopped.
    let s = field.sync(&options(url, token), &mut |_| {}).map_err(|e| err(e.to_string()))?;
    if !s.complete {
        return Err(err(format!("the evening sync left work: {s:?}")));
    }
    progress(&format!("  {}: {} visits, {} photos synced", a.code, report.visits, report.photos));
    Ok(report)
}

/// A photo-sized blob with a JPEG header, 8–24 KiB.
fn fake_jpeg(rng: &mut StdRng) -> Vec<u8> {
    let mut bytes = vec![0xff, 0xd8, 0xff, 0xe0];
    bytes.extend((0..rng.gen_range(8 * 1024..24 * 1024)).map(|_| rng.gen::<u8>()));
    bytes.extend([0xff, 0xd9]);
    bytes
}

/// The passphrase the simulated devices' stores are encrypted under.
fn demo_passphrase() -> sidak_field::Passphrase {
    sidak_field::Passphrase::new("sidak demo device")
}

/// The assessor's tablet pulls the phone's first visit and changes an answer the
/// phone changes too: a conflict for the supervisor, both values kept.
fn conflict(a: &Assessor, token: &str, url: &str, work: &Path) -> Result<(), DemoError> {
    let err = device_error(a);
    let mut phone =
        Field::open(&work.join("devices").join(&a.code), &demo_passphrase()).map_err(|e| err(e.to_string()))?;
    let tablet_dir = work.join("devices").join(format!("{}-tablet", a.code));
    let mut tablet = Field::open(&tablet_dir, &demo_passphrase()).map_err(|e| err(e.to_string()))?;
    tablet.init(&a.code, &a.region).map_err(|e| err(e.to_string()))?;
    tablet.sync(&options(url, token), &mut |_| {}).map_err(|e| err(e.to_string()))?;
    let visit = phone
        .visits(false)
        .map_err(|e| err(e.to_string()))?
        .first()
        .map(|v| v.id.to_string())
        .ok_or_else(|| err("no visit".into()))?;
    phone.answer(&visit, "proses.persyaratan", "3").map_err(|e| err(e.to_string()))?;
    // The tablet's change comes later (so the same seed always shows the same winner).
    std::thread::sleep(Duration::from_millis(5));
    tablet.answer(&visit, "proses.persyaratan", "1").map_err(|e| err(e.to_string()))?;
    phone.sync(&options(url, token), &mut |_| {}).map_err(|e| err(e.to_string()))?;
    tablet.sync(&options(url, token), &mut |_| {}).map_err(|e| err(e.to_string()))?;
    Ok(())
}
