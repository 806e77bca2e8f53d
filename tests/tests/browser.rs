//! The dashboard and the report card in a real browser: headless Chromium (Debian's
//! `chromium`) against a real server holding a small season recorded by field devices
//! and synced. The pages load, the tables show the grades and zones the results hold,
//! rankings follow the scores, every drill-down link from the national table down to
//! the evidence resolves, the report card lists failed indicators with their evidence
//! and compares with the previous season, and a screenshot of the dashboard is written
//! to `target/sidak-dashboard.png`.
//!
//! Chromium is required: without `/usr/bin/chromium` the test fails and says how to
//! install it (CI installs it in `.ci/run`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Command;

use rand::SeedableRng;
use sidak_e2e::harness::*;
use sidak_server::auth::Role;
use sidak_server::results::ResultRow;

const CHROMIUM: &str = "/usr/bin/chromium";

fn chromium() -> &'static Path {
    let path = Path::new(CHROMIUM);
    assert!(
        path.is_file(),
        "{CHROMIUM} is missing: the browser tests need Debian's Chromium. Install it with `apt-get install -y chromium` (CI does this in .ci/run)"
    );
    path
}

/// Runs headless Chromium with a fresh profile and `args`; returns stdout.
fn run_chromium(args: &[&str]) -> String {
    let profile = tempfile::tempdir().expect("profile dir");
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .output()
        .expect("chromium runs");
    assert!(out.status.success(), "chromium {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `url` with the dashboard token added to its query.
fn with_token(url: &str, token: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}token={token}")
}

/// The rendered DOM of a dashboard page (the token goes in the address on every run:
/// each run starts with an empty cookie jar).
fn dom(base: &str, path: &str, token: &str) -> String {
    let dom = run_chromium(&["--dump-dom", &with_token(&format!("{base}{path}"), token)]);
    assert!(dom.contains("</html>"), "{path}: no page: {dom}");
    assert!(!dom.contains(r#"id="login""#), "{path}: the browser was sent to the login page");
    assert!(!dom.contains(r#"class="error""#), "{path}: an error page: {dom}");
    dom
}

/// Every `href` in a page, unescaped.
fn hrefs(html: &str) -> Vec<String> {
    html.split("href=\"").skip(1).filter_map(|rest| rest.split('"').next()).map(|h| h.replace("&amp;", "&")).collect()
}

/// The `<tr …>…</tr>` that starts with `start`.
fn row<'a>(html: &'a str, start: &str) -> &'a str {
    let at = html.find(start).unwrap_or_else(|| panic!("no row `{start}`"));
    let rest = &html[at..];
    &rest[..rest.find("</tr>").expect("row end")]
}

/// The text of `<td class="{class}">…</td>` in a row.
fn cell(row: &str, class: &str) -> String {
    let start = format!(r#"<td class="{class}">"#);
    let Some(at) = row.find(&start) else { return String::new() };
    let rest = &row[at + start.len()..];
    rest[..rest.find("</td>").expect("cell end")].to_owned()
}

fn target_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    // target/debug/deps/browser-… → target
    let exe = std::env::current_exe().expect("test executable");
    exe.ancestors().nth(3).expect("target directory").to_owned()
}

/// The registry: two regions, five institutions of three types, one Disdukcapil each
/// with two services.
fn registry() -> String {
    let mut csv = sidak_server::admin::REGISTRY_HEADER.to_owned() + "\n";
    for (code, name, kind, region) in [
        ("kota-semarang", "Pemerintah Kota Semarang", "kota", "jateng"),
        ("kota-salatiga", "Pemerintah Kota Salatiga", "kota", "jateng"),
        ("kab-demak", "Pemerintah Kabupaten Demak", "kabupaten", "jateng"),
        ("prov-sulbar", "Pemerintah Provinsi Sulawesi Barat", "provinsi", "sulbar"),
        ("kab-mamuju", "Pemerintah Kabupaten Mamuju", "kabupaten", "sulbar"),
    ] {
        for (product, pname) in [("ktp-el", "KTP elektronik"), ("akta-lahir", "Akta kelahiran")] {
            csv.push_str(&format!(
                "{code},{name},{kind},{region},disdukcapil,Dinas Kependudukan dan Pencatatan Sipil,disdukcapil,{product},{pname}\n"
            ));
        }
    }
    csv
}

/// Publishes a copy of `penilaian-2023` as `penilaian-2024` (season 2024).
fn publish_2024(server: &Server) {
    let mut doc: serde_json::Value =
        serde_json::from_str(sidak_core::instrument::builtin_text("penilaian-2023").expect("built-in")).expect("json");
    doc["id"] = "penilaian-2024".into();
    doc["year"] = 2024.into();
    doc["title"] = "Penilaian Kepatuhan Penyelenggaraan Pelayanan Publik Tahun 2024".into();
    let instrument = sidak_core::instrument::Instrument::from_document(doc).expect("a valid instrument");
    server
        .state
        .db()
        .write_blocking(|tx| sidak_server::admin::publish_instrument(tx, &instrument, now()))
        .expect("published");
    server.state.reload_instruments().expect("reloaded");
}

fn rows(server: &Server, instrument: &str) -> Vec<ResultRow> {
    server
        .read(|tx| sidak_server::results::rows(tx, "institution", None, -1, None))
        .into_iter()
        .filter(|r| r.instrument == instrument)
        .collect()
}

#[test]
fn the_dashboard_and_report_cards_in_a_browser() {
    chromium();
    let mut rng = rand::rngs::StdRng::seed_from_u64(24);
    let server = Server::start();
    server.import_registry(&registry());
    publish_2024(&server);
    // (assessor, institution, instrument, quality 0–3, service users)
    let plan = [
        ("smg-24", "kota-semarang", "penilaian-2024@1", 3, 30, "jateng"),
        ("smg-23", "kota-semarang", "penilaian-2023@1", 2, 30, "jateng"),
        ("sla-24", "kota-salatiga", "penilaian-2024@1", 2, 30, "jateng"),
        ("dmk-24", "kab-demak", "penilaian-2024@1", 1, 30, "jateng"),
        ("sulbar-24", "prov-sulbar", "penilaian-2024@1", 0, 30, "sulbar"),
        ("mmj-24", "kab-mamuju", "penilaian-2024@1", 2, 0, "sulbar"),
    ];
    for (assessor, institution, instrument, quality, users, region) in plan {
        server.assign(assessor, institution, "disdukcapil", instrument);
        let mut device = Device::new(&server.state, assessor, region);
        assert!(device.sync(&server.url()).expect("morning sync").complete);
        device.record_unit("disdukcapil", quality, users, &mut rng);
        let s = device.sync(&server.url()).expect("evening sync");
        assert!(s.complete && s.quarantined.is_empty(), "{assessor}: {s:?}");
    }
    let season = rows(&server, "penilaian-2024@1");
    assert_eq!(season.len(), 5);
    let incomplete: Vec<&ResultRow> = season.iter().filter(|r| r.status == "incomplete").collect();
    assert_eq!(incomplete.iter().map(|r| r.code.as_str()).collect::<Vec<_>>(), ["kab-mamuju"]);
    let grades: BTreeSet<&str> = season.iter().filter_map(|r| r.grade.as_deref()).collect();
    assert!(grades.len() >= 3, "the season has different grades: {grades:?}");

    let admin = server.token(Role::Admin, None, None);
    let supervisor = server.token(Role::Supervisor, Some("jateng"), None);
    let base = server.url();

    // The national table: every institution with the grade, zone and status the
    // results hold; incomplete ones with no grade.
    let national = dom(&base, "/dashboard", &admin);
    assert!(national.contains(r#"<table id="national""#));
    for r in &season {
        let tr = row(&national, &format!(r#"<tr data-institution="{}""#, r.code));
        assert_eq!(cell(tr, "grade"), r.grade.clone().unwrap_or_default(), "{}", r.code);
        assert!(tr.contains(&format!(r#"data-zone="{}""#, r.zone.clone().unwrap_or_default())), "{}: {tr}", r.code);
        assert!(cell(tr, "score").contains(r.score.as_deref().or(r.provisional.as_deref()).unwrap()), "{tr}");
        assert_eq!(cell(tr, "status"), r.status);
    }
    let mamuju = row(&national, r#"<tr data-institution="kab-mamuju""#);
    assert!(cell(mamuju, "score").starts_with('(') && cell(mamuju, "grade").is_empty(), "incomplete: {mamuju}");
    for zone in season.iter().filter_map(|r| r.zone.as_deref()) {
        let name = match zone {
            "green" => "hijau",
            "yellow" => "kuning",
            _ => "merah",
        };
        assert!(national.contains(&format!(r#"data-zone="{zone}">{name}</td>"#)), "{zone}");
    }
    // A region's table holds its own institutions only; a supervisor sees its region.
    let sulbar = dom(&base, "/dashboard/regions/sulbar", &admin);
    assert!(
        sulbar.contains(r#"data-institution="prov-sulbar""#) && !sulbar.contains(r#"data-institution="kota-semarang""#)
    );
    let mine = dom(&base, "/dashboard", &supervisor);
    assert!(mine.contains(r#"data-institution="kab-demak""#) && !mine.contains(r#"data-institution="prov-sulbar""#));

    // Rankings within each type follow the scores.
    let rankings = dom(&base, "/dashboard/rankings", &admin);
    for kind in ["kota", "kabupaten", "provinsi"] {
        let at = rankings.find(&format!(r#"<table class="ranking" data-type="{kind}">"#)).expect(kind);
        let table = &rankings[at..at + rankings[at..].find("</table>").unwrap()];
        let shown: Vec<String> =
            table.split(r#"<tr data-institution=""#).skip(1).map(|r| r.split('"').next().unwrap().to_owned()).collect();
        let mut expected: Vec<&ResultRow> = season.iter().filter(|r| r.kind == kind).collect();
        let figure = |r: &ResultRow| r.score.as_deref().map(|s| s.parse::<sidak_core::num::Published>().unwrap());
        expected.sort_by(|a, b| figure(b).cmp(&figure(a)).then_with(|| a.code.cmp(&b.code)));
        assert_eq!(shown, expected.iter().map(|r| r.code.clone()).collect::<Vec<_>>(), "{kind}");
        assert_eq!(cell(row(table, "<tr data-institution="), "rank"), "1", "{kind}");
    }

    // Every drill-down link from the national table down to the evidence resolves
    // (followed over HTTP, fast); one chain of them in the browser as well.
    let client = reqwest::blocking::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let fetch = |path: &str| -> (u16, String) {
        let r = client.get(format!("{base}{path}")).bearer_auth(&admin).send().expect("request");
        (r.status().as_u16(), r.text().unwrap_or_default())
    };
    let drill = |h: &str| h.starts_with("/dashboard/institutions/") || h.starts_with("/dashboard/evidence/");
    let mut queue: VecDeque<String> = hrefs(&national).into_iter().filter(|h| drill(h)).collect();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut levels: BTreeMap<&str, usize> = BTreeMap::new();
    while let Some(path) = queue.pop_front() {
        if !seen.insert(path.clone()) {
            continue;
        }
        let (status, body) = fetch(&path);
        assert_eq!(status, 200, "{path} does not resolve: {body}");
        let level = if path.ends_with("/file") {
            "file"
        } else if path.starts_with("/dashboard/evidence/") {
            "evidence"
        } else if path.contains("/indicators/") {
            "indicator"
        } else if path.contains("/products/") {
            "product"
        } else if path.contains("/units/") {
            "unit"
        } else if path.contains("/rapor") {
            "rapor"
        } else {
            "institution"
        };
        *levels.entry(level).or_default() += 1;
        if level != "file" {
            queue.extend(hrefs(&body).into_iter().filter(|h| drill(h) && !seen.contains(h)));
        }
    }
    for level in ["institution", "unit", "product", "indicator", "evidence", "file", "rapor"] {
        assert!(levels.get(level).copied().unwrap_or(0) > 0, "no {level} page was reached: {levels:?}");
    }
    // The chain in the browser: national → institution → unit → product → a failed
    // indicator → its evidence.
    let pick = |html: &str, part: &str| -> String {
        hrefs(html).into_iter().find(|h| h.contains(part)).unwrap_or_else(|| panic!("no link with {part}"))
    };
    let institution = dom(&base, &pick(&national, "/dashboard/institutions/prov-sulbar"), &admin);
    assert!(institution.contains(r#"data-unit="disdukcapil""#));
    let unit = dom(&base, &pick(&institution, "/units/disdukcapil?"), &admin);
    let product = dom(&base, &pick(&unit, "/products/ktp-el?"), &admin);
    let failed_id = product
        .split(r#"data-verdict="failed""#)
        .next()
        .and_then(|before| before.rsplit(r#"data-node=""#).next())
        .and_then(|rest| rest.split('"').next())
        .expect("a failed indicator on a quality-0 product")
        .to_owned();
    let indicator = dom(&base, &pick(&product, &format!("/indicators/{failed_id}?")), &admin);
    assert!(indicator.contains(r#"id="verdict" class="verdict-failed""#), "{indicator}");
    let evidence = dom(&base, &pick(&indicator, "/dashboard/evidence/"), &admin);
    assert!(evidence.contains(r#"id="sha256""#) && evidence.contains(r#"id="file""#));

    // The report card: failed indicators with evidence links that resolve; the
    // comparison with the previous season; incomplete ones without a grade.
    let card = dom(&base, "/dashboard/institutions/prov-sulbar/rapor", &admin);
    assert!(card.contains(r#"data-verdict="failed""#) && card.contains(r#"class="evidence-link""#), "{card}");
    for link in hrefs(&card).into_iter().filter(|h| h.starts_with("/dashboard/evidence/")) {
        assert_eq!(fetch(&link).0, 200, "{link}");
    }
    assert!(card.contains(r#"id="grade""#) && card.contains("no earlier season"));
    let api_card = client
        .get(format!("{base}/v1/results/institutions/prov-sulbar/rapor.html"))
        .bearer_auth(&admin)
        .send()
        .unwrap()
        .text()
        .unwrap();
    let api_links: Vec<String> = hrefs(&api_card).into_iter().filter(|h| h.starts_with("/v1/evidence/")).collect();
    assert!(!api_links.is_empty());
    for link in &api_links {
        let r = client.get(format!("{base}{link}")).bearer_auth(&admin).send().unwrap();
        assert_eq!(r.status().as_u16(), 200, "{link}");
    }
    let now = season.iter().find(|r| r.code == "kota-semarang").unwrap();
    let then = &rows(&server, "penilaian-2023@1")[0];
    let (a, b): (sidak_core::num::Published, sidak_core::num::Published) =
        (now.score.as_ref().unwrap().parse().unwrap(), then.score.as_ref().unwrap().parse().unwrap());
    let change = sidak_core::num::Published::from_hundredths(a.hundredths() - b.hundredths());
    let change = if change.hundredths() > 0 { format!("+{change}") } else { change.to_string() };
    let semarang = dom(&base, "/dashboard/institutions/kota-semarang/rapor", &supervisor);
    let comparison = &semarang[semarang.find(r#"<table id="comparison""#).expect("a comparison")..];
    assert!(comparison.contains(then.score.as_deref().unwrap()) && comparison.contains(now.score.as_deref().unwrap()));
    assert!(semarang.contains(&format!(r#"<strong id="change">{change}</strong>"#)), "{change}");
    let mamuju = dom(&base, "/dashboard/institutions/kab-mamuju/rapor", &admin);
    assert!(
        mamuju.contains(r#"id="status""#) && !mamuju.contains(r#"id="grade""#) && mamuju.contains(r#"id="missing""#)
    );

    // Sync health lists every device with its last push.
    let health = dom(&base, "/dashboard/sync", &admin);
    for (assessor, ..) in plan {
        let tr = row(&health, &format!(r#"data-assessor="{assessor}""#));
        assert!(!cell(tr, "last-sync").contains("never"), "{assessor}: {tr}");
    }

    // A screenshot of the dashboard.
    let shot = target_dir().join("sidak-dashboard.png");
    let _ = std::fs::remove_file(&shot);
    run_chromium(&[
        &format!("--screenshot={}", shot.display()),
        "--window-size=1280,900",
        "--hide-scrollbars",
        &with_token(&format!("{base}/dashboard"), &admin),
    ]);
    // And of a report card, for people to look at (its content is checked above).
    run_chromium(&[
        &format!("--screenshot={}", target_dir().join("sidak-rapor.png").display()),
        "--window-size=1280,1800",
        "--hide-scrollbars",
        &with_token(&format!("{base}/dashboard/institutions/prov-sulbar/rapor"), &admin),
    ]);
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", shot.display()));
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    assert!(png.len() > 20_000, "a screenshot of a real page, not a blank one ({} bytes)", png.len());
}
