//! The commands of `sidak-field`, as library functions returning text for people and
//! JSON for scripts. Names of institutions and units are shown only with `reveal`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::json;
use sidak_core::instrument::{builtin, builtin_ids, load_instrument, Instrument, Location, RespondentKind};
use sidak_core::records::VisitMode;
use sidak_core::scoring::{render_table, score_season, SeasonInput, Status};
use sidak_core::wire::AssignmentList;

use crate::app::{short, Field, StartVisit, VisitView};
use crate::error::FieldError;
use crate::output::Output;

/// Reads a file whole (for small documents: instruments, seasons, assignment lists).
pub(crate) fn read_text(path: &Path) -> Result<String, FieldError> {
    std::fs::read_to_string(path).map_err(|source| FieldError::ReadFile { path: path.to_owned(), source })
}

/// The default data directory: the user's data directory, `…/sidak`.
pub fn default_data_dir() -> PathBuf {
    dirs::data_dir().unwrap_or_else(|| PathBuf::from(".")).join("sidak")
}

/// An instrument by built-in id, or from a `.json` file.
pub fn resolve_instrument(name: &str) -> Result<Instrument, FieldError> {
    let path = PathBuf::from(name);
    if name.ends_with(".json") || path.is_file() {
        return Ok(load_instrument(&read_text(&path)?)?);
    }
    let id = name.split_once('@').map(|(id, _)| id).unwrap_or(name);
    match builtin(id) {
        Some(instrument) if name == id || name == instrument.reference.to_string() => Ok(instrument),
        _ => Err(FieldError::UnknownInstrument { name: name.to_owned(), known: builtin_ids().join(", ") }),
    }
}

/// `sidak-field score`: scores a season file against an instrument.
pub fn score(instrument: &str, season_path: &Path) -> Result<Output, FieldError> {
    let instrument = resolve_instrument(instrument)?;
    let text = read_text(season_path)?;
    let season: SeasonInput = serde_json::from_str(&text).map_err(|e| FieldError::BadJson {
        path: season_path.to_owned(),
        what: "a season (sidak-season/1, see docs/scoring.md)",
        message: e.to_string(),
    })?;
    let results = score_season(&instrument, &season)?;
    let title = format!(
        "{} — {}{}",
        instrument.reference,
        instrument.title,
        season.season.as_deref().map(|s| format!(", season {s}")).unwrap_or_default()
    );
    let json = serde_json::to_value(&results).expect("results serialise");
    Ok(Output::new(render_table(&results, &title), json))
}

/// `sidak-field init`.
pub fn init(field: &mut Field, assessor: &str, region: &str) -> Result<Output, FieldError> {
    let me = field.identity_or_init(assessor, region)?;
    let key = field.device_key()?;
    Ok(Output::new(
        format!(
            "device ready: assessor {}, region {}, origin {}\ndevice key: {key}\n  (an admin can issue this device's token for it: sidak-server token create --device-key {key} …)\ndata directory: {}\n",
            me.assessor,
            me.region,
            me.origin,
            field.dir().display()
        ),
        json!({"origin": me.origin, "assessor": me.assessor, "region": me.region, "device_key": key.to_hex(), "data_dir": field.dir()}),
    ))
}

/// `sidak-field passphrase change`.
pub fn passphrase_change(field: &mut Field, new: &crate::keys::Passphrase) -> Result<Output, FieldError> {
    field.change_passphrase(new)?;
    Ok(Output::new("passphrase changed: only the new one opens this device now\n".to_owned(), json!({"changed": true})))
}

/// `sidak-field instrument load`.
pub fn instrument_load(field: &mut Field, name: &str) -> Result<Output, FieldError> {
    let instrument = resolve_instrument(name)?;
    let added = field.load_instrument(&instrument)?;
    let what = if added { "loaded" } else { "already on this device" };
    Ok(Output::new(
        format!("{} {what} (digest {})\n", instrument.reference, &instrument.digest[..16]),
        json!({"instrument": instrument.reference, "digest": instrument.digest, "added": added}),
    ))
}

/// `sidak-field instrument list`.
pub fn instrument_list(field: &Field) -> Output {
    let list: Vec<_> = field
        .instruments()
        .iter()
        .map(|i| json!({"id": i.reference.id, "version": i.reference.version, "title": i.title, "digest": i.digest}))
        .collect();
    let mut human = String::new();
    for i in field.instruments() {
        let _ = writeln!(human, "{}  {}", i.reference, i.title);
    }
    if human.is_empty() {
        human = "no instrument on this device yet (sidak-field instrument load <id|file>, or sync)\n".into();
    }
    Output::new(human, json!({"instruments": list}))
}

/// `sidak-field assignments load`.
pub fn assignments_load(field: &mut Field, path: &Path) -> Result<Output, FieldError> {
    let list: AssignmentList = serde_json::from_str(&read_text(path)?).map_err(|e| FieldError::BadJson {
        path: path.to_owned(),
        what: "an assignment list (as served by GET /v1/assignments)",
        message: e.to_string(),
    })?;
    let n = field.load_assignments(&list)?;
    Ok(Output::new(format!("{n} assignment(s) loaded\n"), json!({"loaded": n})))
}

/// `sidak-field assignments`.
pub fn assignments(field: &mut Field, reveal: bool) -> Result<Output, FieldError> {
    let list = field.assignments()?;
    let mut human = String::new();
    for a in &list {
        let place = if reveal {
            format!("{} / {}", a.institution.name, a.unit.name)
        } else {
            format!("{} product(s)", a.products.len())
        };
        let _ = writeln!(human, "{}  {}  {}  {}  {}", short(a.id), a.status, a.mode, a.instrument, place);
    }
    if list.is_empty() {
        human.push_str("no assignments on this device (sidak-field assignments load <file>, or sync)\n");
    } else if !reveal {
        human.push_str("(places are hidden; add --reveal to show them)\n");
    }
    let json = if reveal {
        serde_json::to_value(AssignmentList { assignments: list }).expect("serialises")
    } else {
        json!({"assignments": list.iter().map(|a| json!({"id": a.id, "status": a.status, "mode": a.mode, "instrument": a.instrument, "products": a.products.iter().map(|p| p.id).collect::<Vec<_>>()})).collect::<Vec<_>>()})
    };
    Ok(Output::new(human, json))
}

/// `sidak-field visit start`.
pub fn visit_start(
    field: &mut Field,
    assignment: &str,
    product: Option<&str>,
    mode: Option<VisitMode>,
    location: Location,
) -> Result<Output, FieldError> {
    let id = field.start_visit(&StartVisit {
        assignment: assignment.to_owned(),
        product: product.map(str::to_owned),
        mode,
        location,
    })?;
    Ok(Output::new(format!("visit {} started\n", short(id)), json!({"visit": id})))
}

/// `sidak-field visit answer`.
pub fn visit_answer(field: &mut Field, visit: &str, indicator: &str, value: &str) -> Result<Output, FieldError> {
    let outcome = field.answer(visit, indicator, value)?;
    let flag = if outcome.post_submission { " (edit after submission: flagged for the supervisor)" } else { "" };
    Ok(Output::new(format!("saved {indicator} = {value}{flag}\n"), serde_json::to_value(&outcome).expect("serialises")))
}

/// `sidak-field visit note`.
pub fn visit_note(field: &mut Field, visit: &str, text: &str, indicator: Option<&str>) -> Result<Output, FieldError> {
    let id = field.note(visit, text, indicator)?;
    Ok(Output::new(format!("note {} saved\n", short(id)), json!({"note": id})))
}

/// `sidak-field visit attach`.
pub fn visit_attach(
    field: &mut Field,
    visit: &str,
    file: &Path,
    indicator: Option<&str>,
    media_type: Option<&str>,
) -> Result<Output, FieldError> {
    let (id, digest, size) = field.attach(visit, file, indicator, media_type)?;
    Ok(Output::new(
        format!("evidence {} saved ({size} bytes, sha256 {})\n", short(id), &digest.to_hex()[..16]),
        json!({"evidence": id, "sha256": digest, "size": size}),
    ))
}

/// `sidak-field visit finish`.
pub fn visit_finish(field: &mut Field, visit: &str) -> Result<Output, FieldError> {
    let id = field.finish(visit)?;
    Ok(Output::new(
        format!("visit {} submitted; later edits will be flagged for the supervisor\n", short(id)),
        json!({"visit": id, "status": "submitted"}),
    ))
}

/// `sidak-field visit show`.
pub fn visit_show(field: &mut Field, visit: &str, reveal: bool) -> Result<Output, FieldError> {
    let view = field.visit(visit)?;
    let result = field.provisional_score(&view)?;
    let unit = &result.units[0];
    let product = &unit.products[0];
    let figure = |o: &sidak_core::scoring::Outcome| match (o.status, o.score, o.provisional) {
        (Status::Complete, Some(s), _) => s.to_string(),
        (_, _, Some(p)) => format!("{p} (provisional)"),
        _ => "—".into(),
    };
    let mut h = String::new();
    let _ = writeln!(
        h,
        "visit {}  {}  {}  at {}  with {}",
        short(view.id),
        view.status,
        view.mode,
        view.location,
        view.instrument
    );
    if reveal {
        let _ = writeln!(h, "place: {} / {} / {}", view.institution.name, view.unit.name, view.product.name);
    }
    let _ = writeln!(h, "answers ({}):", view.answers.len());
    for (k, v) in &view.answers {
        let _ = writeln!(h, "  {k} = {v}");
    }
    for r in &view.respondents {
        let _ = writeln!(
            h,
            "respondent {} ({}{}): {} answer(s)",
            short(r.id),
            r.kind,
            r.role.as_deref().map(|x| format!(", {x}")).unwrap_or_default(),
            r.answers.len()
        );
    }
    for n in &view.notes {
        let _ = writeln!(
            h,
            "note {}{}: {}",
            short(n.id),
            n.indicator.as_deref().map(|i| format!(" on {i}")).unwrap_or_default(),
            n.text
        );
    }
    for e in &view.evidence {
        let _ = writeln!(
            h,
            "evidence {} {} {} bytes{}",
            short(e.id),
            e.media_type,
            e.size,
            e.indicator.as_deref().map(|i| format!(" for {i}")).unwrap_or_default()
        );
    }
    if !view.post_submission_edits.is_empty() {
        let _ = writeln!(h, "edited after submission: {}", view.post_submission_edits.join(", "));
    }
    let _ = writeln!(
        h,
        "provisional score: product {} · unit {} ({} item(s) missing)",
        figure(&product.outcome),
        figure(&unit.outcome),
        unit.missing.len()
    );
    let mut json = serde_json::to_value(&view).expect("serialises");
    if !reveal {
        for key in ["institution", "unit", "product"] {
            json[key] = json!({"id": json[key]["id"]});
        }
    }
    json["provisional"] = json!({"unit": unit.outcome, "product": product.outcome, "missing": unit.missing});
    Ok(Output::new(h, json))
}

/// `sidak-field visit list`.
pub fn visit_list(field: &mut Field, reveal: bool) -> Result<Output, FieldError> {
    let list = field.visits(reveal)?;
    let mut h = String::new();
    for v in &list {
        let _ = writeln!(
            h,
            "{}  {:<9}  {:<9}  {} answer(s){}",
            short(v.id),
            v.status,
            v.mode,
            v.answers,
            v.place.as_deref().map(|p| format!("  {p}")).unwrap_or_default()
        );
    }
    if list.is_empty() {
        h.push_str("no visits yet\n");
    }
    Ok(Output::new(h, json!({"visits": list})))
}

/// `sidak-field respondent add`.
pub fn respondent_add(
    field: &mut Field,
    visit: &str,
    kind: RespondentKind,
    role: Option<&str>,
) -> Result<Output, FieldError> {
    let id = field.add_respondent(visit, kind, role)?;
    Ok(Output::new(format!("respondent {} ({}) added\n", short(id), kind.name()), json!({"respondent": id})))
}

/// `sidak-field respondent answer`.
pub fn respondent_answer(
    field: &mut Field,
    respondent: &str,
    indicator: &str,
    value: &str,
) -> Result<Output, FieldError> {
    let outcome = field.answer_respondent(respondent, indicator, value)?;
    Ok(Output::new(format!("saved {indicator} = {value}\n"), serde_json::to_value(&outcome).expect("serialises")))
}

/// `sidak-field status`.
pub fn status(field: &mut Field) -> Result<Output, FieldError> {
    let s = field.status()?;
    let key = field.device_key()?;
    let mut h = String::new();
    let _ = writeln!(h, "assessor {} · region {} · origin {}", s.assessor, s.region, s.origin);
    let _ = writeln!(h, "device key: {key}");
    let _ = writeln!(h, "ops written: {} (chain head {}…)", s.head_seq, &s.head_hash[..16]);
    let _ = writeln!(h, "unsent ops: {} · unsent files: {}", s.unsent_ops, s.unsent_files);
    if s.damaged_files > 0 {
        let _ = writeln!(h, "damaged files (not sent; they no longer match their digest): {}", s.damaged_files);
    }
    let upstream = s.upstream_acked.map(|u| u.to_string()).unwrap_or_else(|| "unknown".into());
    let _ = writeln!(h, "held by the server: {} · by the centre: {upstream}", s.server_acked);
    let last = match (s.last_sync, &s.last_sync_result) {
        (Some(at), Some(r)) => format!("{} ({r})", format_time(at)),
        (Some(at), None) => format_time(at),
        (None, Some(r)) => format!("never completed ({r})"),
        (None, None) => "never".into(),
    };
    let _ = writeln!(h, "last complete sync: {last}");
    let visits: Vec<String> = s.visits.iter().map(|(k, v)| format!("{v} {k}")).collect();
    let _ = writeln!(h, "visits: {}", if visits.is_empty() { "none".into() } else { visits.join(", ") });
    for v in &s.visit_acks {
        let _ = writeln!(h, "  visit {}: server {} · centre {}", short(v.id), yes_no(v.server), yes_no(v.centre));
    }
    let mut json = serde_json::to_value(&s).expect("serialises");
    json["device_key"] = json!(key.to_hex());
    Ok(Output::new(h, json))
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "holds it"
    } else {
        "not yet"
    }
}

/// Formats ms since 1970 as a UTC time.
pub fn format_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// Reads a visit view's provisional figure (used by tests and the demo).
pub fn provisional_unit_score(field: &mut Field, view: &VisitView) -> Result<Option<String>, FieldError> {
    let r = field.provisional_score(view)?;
    Ok(r.units[0].outcome.score.or(r.units[0].outcome.provisional).map(|p| p.to_string()))
}

/// `sidak-field prune`.
pub fn prune(field: &mut Field) -> Result<Output, FieldError> {
    let r = field.prune()?;
    let human =
        format!("{} photo(s) freed ({} KiB); {} kept until the centre holds them\n", r.freed, r.bytes / 1024, r.kept);
    Ok(Output::new(human, serde_json::to_value(&r).expect("serialises")))
}

/// `sidak-field manifest`: always JSON, the format servers compare.
pub fn manifest(field: &mut Field) -> Result<Output, FieldError> {
    let m = field.manifest()?;
    let json = serde_json::to_value(&m).expect("serialises");
    let human = format!("{}\n", serde_json::to_string_pretty(&json).expect("serialises"));
    Ok(Output::new(human, json))
}

/// How `sidak-field sync` talks to the network.
#[derive(Clone, Debug)]
pub struct Network {
    /// Seconds per request.
    pub timeout: u64,
    /// Seconds to keep retrying transient failures.
    pub retry_for: u64,
    /// Extra certificate authorities (PEM).
    pub ca_file: Option<std::path::PathBuf>,
}

/// `sidak-field sync`.
pub fn sync(
    field: &mut Field,
    server: Option<&str>,
    token: Option<&str>,
    show_progress: bool,
    network: &Network,
) -> Result<Output, FieldError> {
    let (timeout, retry_for) = (network.timeout, network.retry_for);
    let (saved_server, saved_token) = field.saved_server()?;
    let server = server
        .map(str::to_owned)
        .or(saved_server)
        .ok_or_else(|| FieldError::Invalid("no server yet: give --server URL (it is remembered)".into()))?;
    let token = token
        .map(str::to_owned)
        .or(saved_token)
        .ok_or_else(|| FieldError::Invalid("no token yet: give --token (it is remembered)".into()))?;
    let mut opts = crate::sync::SyncOptions::new(&server, &token);
    opts.timeout = std::time::Duration::from_secs(timeout.max(1));
    opts.retry_for = std::time::Duration::from_secs(retry_for);
    opts.ca_file = network.ca_file.clone();
    // A bar while the amount of work is known (records, bytes), a spinner otherwise.
    let spinner = indicatif::ProgressStyle::with_template("{spinner} {prefix}: {msg}")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner());
    let bar_style = indicatif::ProgressStyle::with_template("{prefix:>20} [{bar:30}] {pos}/{len} {msg}")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ");
    let bar = show_progress.then(|| {
        let b = indicatif::ProgressBar::new_spinner().with_style(spinner.clone());
        b.enable_steady_tick(std::time::Duration::from_millis(120));
        b
    });
    let mut report = |p: crate::sync::Progress| {
        if let Some(b) = &bar {
            use crate::sync::Progress as P;
            match p {
                P::Phase(s) => {
                    b.set_style(spinner.clone());
                    b.set_prefix(s);
                    b.set_message("");
                }
                P::Pushed(n, total) => {
                    b.set_style(bar_style.clone());
                    b.set_length(total);
                    b.set_position(n);
                    b.set_message("records held by the server");
                }
                P::Uploaded(n, total) => {
                    b.set_style(bar_style.clone());
                    b.set_length(total.div_ceil(1024));
                    b.set_position(n / 1024);
                    b.set_message("KiB");
                }
                P::Pulled(n) => b.set_message(format!("{n} received")),
                P::Retrying(why, delay) => b.set_message(format!("retrying in {:.1}s: {why}", delay.as_secs_f64())),
            }
        }
    };
    let result = field.sync(&opts, &mut report);
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let s = result.map_err(|e| FieldError::Sync(Box::new(e)))?;
    let mut h = String::new();
    let state = if s.complete { "sync complete" } else { "sync finished with work left" };
    let _ = writeln!(
        h,
        "{state}: {} record(s) sent, {} file(s) ({} KiB) uploaded, {} received",
        s.pushed,
        s.files_uploaded,
        s.bytes_uploaded / 1024,
        s.pulled
    );
    let centre = s.upstream_held.map(|u| u.to_string()).unwrap_or_else(|| "not yet known".into());
    let _ = writeln!(
        h,
        "held by the server: {} · by the centre: {centre} · still unsent: {} record(s), {} file(s)",
        s.server_held, s.unsent_ops, s.unsent_files
    );
    if s.retries > 0 {
        let _ = writeln!(h, "{} transient failure(s) retried", s.retries);
    }
    for q in &s.quarantined {
        let _ = writeln!(h, "held back by the server for review: {q}");
    }
    for sha in &s.files_damaged {
        let _ = writeln!(
            h,
            "photo {} is damaged on this device (it no longer matches its digest) and was not sent",
            short_digest(sha)
        );
    }
    if s.clock_flagged {
        let _ = writeln!(
            h,
            "warning: this device's clock is far ahead of the server's; set the date and time (nothing was lost)"
        );
    }
    Ok(Output::new(h, serde_json::to_value(&s).expect("serialises")))
}

/// The first twelve characters of a digest, for people.
fn short_digest(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}
