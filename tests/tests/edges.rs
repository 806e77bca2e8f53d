//! The field's awkward cases, end to end: a device whose clock is wrong by days, a
//! device recording with an older instrument version than the server's newest, and two
//! devices editing the same visit (a conflict for a supervisor, both values kept).

use rand::SeedableRng;
use serde_json::{json, Value};
use sidak_e2e::harness::*;
use sidak_e2e::proxy::{FaultProxy, Faults};
use sidak_server::auth::Role;

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

fn get(url: &str, token: &str) -> Value {
    reqwest::blocking::Client::new().get(url).bearer_auth(token).send().unwrap().json().unwrap()
}

#[test]
fn a_device_whose_clock_is_days_ahead_is_flagged_and_cannot_drag_the_clocks() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let server = Server::start();
    server.import_registry(&registry(&["jateng"]));
    server.assign("fast", "kota-jateng", "disdukcapil", "penilaian-2023@1");
    server.assign("right", "kota-jateng", "dpmptsp", "penilaian-2023@1");
    let mut fast = Device::with_clock(&server.state, "fast", "jateng", 3 * DAY_MS);
    let mut right = Device::new(&server.state, "right", "jateng");
    fast.sync(&server.url()).expect("morning sync");
    right.sync(&server.url()).expect("morning sync");
    fast.record_unit("disdukcapil", 2, 0, &mut rng);
    right.record_unit("dpmptsp", 2, 0, &mut rng);

    let s = fast.sync(&server.url()).expect("evening sync");
    assert!(s.complete && s.unsent_ops == 0 && s.unsent_files == 0, "nothing is refused for a wrong date: {s:?}");
    assert!(s.clock_flagged, "the device is told its clock is wrong");
    let s = right.sync(&server.url()).expect("evening sync");
    assert!(s.complete && !s.clock_flagged, "a right clock is not flagged: {s:?}");

    // Every op of the fast device is held with its own stamps, days ahead.
    let origin = fast.field.identity().unwrap().unwrap().origin.to_string();
    let ahead: i64 =
        server.read(|tx| Ok(tx.query_row("SELECT MIN(hlc_ms) FROM ops WHERE origin = ?1", [&origin], |r| r.get(0))?));
    assert!(ahead > now() + 2 * DAY_MS, "the stamps are kept as written");
    // The server's clock did not follow: it answers with its own time, and so does
    // every op the right device writes after syncing with it.
    let admin = server.token(Role::Admin, None, None);
    let page = get(&format!("{}/v1/ops/pull?limit=1", server.url()), &admin);
    let server_ms = page["server_hlc"]["ms"].as_i64().unwrap();
    assert!(server_ms < now() + 60_000, "the server's clock stays at its own time: {server_ms}");
    let visit = right.field.visits(false).unwrap()[0].id.to_string();
    right.field.note(&visit, "ditambahkan setelah sinkronisasi", None).unwrap();
    let last = right.field.all_ops().unwrap().into_iter().max_by_key(|o| o.hlc).unwrap();
    assert!(last.hlc.ms < now() as u64 + 60_000, "another device's clock is not dragged either: {:?}", last.hlc);
    // A supervisor sees the flag.
    let status = reqwest::blocking::Client::new()
        .post(format!("{}/v1/origins/status", server.url()))
        .bearer_auth(&admin)
        .json(&json!({"origins": [origin]}))
        .send()
        .unwrap()
        .json::<Value>()
        .unwrap();
    assert_eq!(status["origins"][0]["clock_flagged"], json!(true), "a supervisor sees the flag: {status}");
}

#[test]
fn a_device_on_an_older_instrument_version_is_scored_with_the_version_it_recorded() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let server = Server::start();
    server.import_registry(&registry(&["jateng"]));
    server.assign("a1", "kota-jateng", "disdukcapil", "penilaian-2023@1");
    let mut device = Device::new(&server.state, "a1", "jateng");
    device.sync(&server.url()).expect("morning sync: version 1 arrives");

    // While the device is out, the centre publishes version 2 with other weights.
    let mut v2: Value = serde_json::from_str(sidak_core::instrument::builtin_text("penilaian-2023").unwrap()).unwrap();
    v2["version"] = json!(2);
    let proses = &mut v2["dimensions"][1]["variables"][0]["indicators"];
    assert_eq!(proses[0]["id"], json!("proses.persyaratan"));
    proses[0]["weight"] = json!("3/22");
    proses[1]["weight"] = json!("1/22");
    let v2 = sidak_core::instrument::load_instrument(&v2.to_string()).expect("version 2 is valid");
    server.state.db().write_blocking(|tx| sidak_server::admin::publish_instrument(tx, &v2, now())).expect("published");
    server.state.reload_instruments().unwrap();

    // Offline, the device records with the version its assignment names.
    let visits = device.record_unit("disdukcapil", 2, 30, &mut rng);
    // Answers that the two versions weigh differently.
    device.field.answer(&visits[0], "proses.persyaratan", "3").unwrap();
    device.field.answer(&visits[0], "proses.prosedur", "0").unwrap();
    let s = device.sync(&server.url()).expect("evening sync");
    assert!(s.complete && s.quarantined.is_empty(), "{s:?}");
    assert!(
        device.field.instruments().iter().any(|i| i.reference.version == 2),
        "the device now holds version 2 as well"
    );

    // The server scored it with version 1, the version it was recorded with.
    let units = server.read(|tx| sidak_server::results::rows(tx, "unit", None, -1, None));
    let scored: Vec<&str> = units.iter().filter(|r| r.code == "disdukcapil").map(|r| r.instrument.as_str()).collect();
    assert_eq!(scored, vec!["penilaian-2023@1"]);
    // And to the last digit as the phone does with version 1.
    let view = device.field.visit(&visits[0]).unwrap();
    assert_eq!(view.instrument.version, 1);
    let phone = device.field.provisional_score(&view).unwrap();
    let unit = units.iter().find(|r| r.code == "disdukcapil").unwrap();
    let doc: Value = serde_json::from_str(&server.read(|tx| {
        Ok(tx.query_row("SELECT document FROM results WHERE kind = 'unit' AND entity = ?1", [&unit.id], |r| {
            r.get::<_, String>(0)
        })?)
    }))
    .unwrap();
    let product = doc["products"].as_array().unwrap().iter().find(|p| p["id"] == json!(view.product.code)).unwrap();
    assert_eq!(json!(phone.units[0].products[0].outcome.score), product["score"]);
    // Version 2 would have given another figure for the same answers, so the check
    // above tells the versions apart.
    let mut rescored = view.clone();
    rescored.instrument.version = 2;
    let other = device.field.provisional_score(&rescored).unwrap();
    assert_ne!(json!(other.units[0].products[0].outcome.score), product["score"]);
}

#[test]
fn two_devices_editing_the_same_visit_make_a_conflict_that_keeps_both_values() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(13);
    let server = Server::start();
    server.import_registry(&registry(&["jateng"]));
    server.assign("a1", "kota-jateng", "disdukcapil", "penilaian-2023@1");
    // One assessor, a phone and a tablet.
    let mut phone = Device::new(&server.state, "a1", "jateng");
    let mut tablet = Device::new(&server.state, "a1", "jateng");
    phone.sync(&server.url()).unwrap();
    let visit = phone.record_unit("disdukcapil", 2, 0, &mut rng).remove(0);
    phone.field.answer(&visit, "proses.persyaratan", "2").unwrap();
    phone.sync(&server.url()).unwrap();
    let s = tablet.sync(&server.url()).unwrap();
    assert!(s.pulled > 0, "the tablet receives the phone's visit");
    assert_eq!(tablet.field.visit(&visit).unwrap().answers["proses.persyaratan"], json!(2));

    // Both change the same answer offline, each having seen the phone's 2.
    phone.field.answer(&visit, "proses.persyaratan", "3").unwrap();
    tablet.field.answer(&visit, "proses.persyaratan", "0").unwrap();
    phone.sync(&server.url()).unwrap();
    tablet.sync(&server.url()).unwrap();
    phone.sync(&server.url()).unwrap();

    // A supervisor sees the conflict with both values.
    let supervisor = server.token(Role::Supervisor, Some("jateng"), None);
    let list = get(&format!("{}/v1/admin/conflicts", server.url()), &supervisor);
    let conflicts: Vec<&Value> = list["conflicts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["entity"] == json!(visit) && c["field"] == json!("answer.proses.persyaratan"))
        .collect();
    assert_eq!(conflicts.len(), 1, "{list}");
    let values: std::collections::BTreeSet<String> =
        conflicts[0]["versions"].as_array().unwrap().iter().map(|v| v["value"].to_string()).collect();
    assert_eq!(values, ["0".to_owned(), "3".to_owned()].into(), "both values are kept");
    // Every replica shows the same winner, and it is one of the two.
    let current = conflicts[0]["current"].clone();
    assert!(current == json!(0) || current == json!(3));
    assert_eq!(phone.field.visit(&visit).unwrap().answers["proses.persyaratan"], current);
    assert_eq!(tablet.field.visit(&visit).unwrap().answers["proses.persyaratan"], current);
    // Another region's supervisor does not see it.
    let other = server.token(Role::Supervisor, Some("aceh"), None);
    let list = get(&format!("{}/v1/admin/conflicts", server.url()), &other);
    assert_eq!(list["conflicts"], json!([]));
}

#[test]
fn a_photo_damaged_on_the_device_is_set_aside_and_never_blocks_the_rest() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(17);
    let server = Server::start();
    server.import_registry(&registry(&["jateng"]));
    server.assign("a1", "kota-jateng", "disdukcapil", "penilaian-2023@1");
    let mut device = Device::new(&server.state, "a1", "jateng");
    device.sync(&server.url()).unwrap();
    let visits = device.record_unit("disdukcapil", 2, 0, &mut rng);
    // The phone's storage flips a byte in one photo.
    let photo = device.field.visit(&visits[0]).unwrap().evidence[0].sha256.clone();
    let path = device.field.blobs().path(&photo.parse().unwrap());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();

    let s = device.sync(&server.url()).expect("the sync goes on past the damaged photo");
    assert_eq!(s.files_damaged, vec![photo.clone()]);
    assert_eq!((s.unsent_ops, s.unsent_files), (0, 1), "every record and every other photo arrived: {s:?}");
    assert!(!s.complete, "and the summary does not claim the damaged one did");
    assert!(server.state.blob_path(&photo).metadata().is_err(), "the server holds no damaged copy");
    // The office sees what the device still holds back (its own report).
    let origin = device.field.identity().unwrap().unwrap().origin.to_string();
    let reported: (i64, i64) = server.read(|tx| {
        Ok(tx.query_row("SELECT pending_ops, pending_files FROM origins WHERE origin = ?1", [&origin], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?)
    });
    assert_eq!(reported, (0, 1));
    // The next sync does not try again, and still tells the truth.
    let s = device.sync(&server.url()).unwrap();
    assert_eq!((s.files_uploaded, s.bytes_uploaded, s.unsent_files, s.complete), (0, 0, 1, false), "{s:?}");
    assert_eq!(device.field.status().unwrap().damaged_files, 1);
}

#[test]
fn a_server_that_does_not_know_omit_origin_is_pulled_from_as_before() {
    // A device updated before its office's server: the server refuses the parameter
    // that leaves the device's own ops out, and the device pulls everything instead of
    // failing its sync.
    let server = Server::start();
    server.import_registry(&registry(&["jateng"]));
    server.assign("jateng-a1", "kota-jateng", "disdukcapil", "penilaian-2023@1");
    let proxy = FaultProxy::start(server.addr, Faults::none()).unwrap();
    proxy.refuse(
        "omit_origin=",
        r#"{"code":"bad_query","message":"unknown query parameter `omit_origin` (allowed: cursor, limit)"}"#,
    );
    let mut device = Device::new(&server.state, "jateng-a1", "jateng");
    let s = device.sync(&proxy.url()).expect("the morning sync completes without omit_origin");
    assert!(s.complete, "{s:?}");
    assert!(proxy.stats().refused >= 1, "the device asked with omit_origin first");
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    device.record_unit("disdukcapil", 2, 0, &mut rng);
    let s = device.sync(&proxy.url()).expect("the evening sync completes");
    assert!(s.complete && s.unsent_ops == 0, "{s:?}");
    assert!(s.pulled_again > 0, "such a server sends the device its own ops back, as before: {s:?}");
}

#[test]
fn a_device_asks_for_each_next_pull_page_ahead_and_holds_its_scope_once() {
    // Pages of 3 ops, so that the registry and a colleague's visit take many. Each page's
    // headers name its cursor (proto §5.4), and the device asks for the next page while it
    // reads and applies the current one.
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let server = Server::start();
    server.import_registry(&registry(&["jateng"]));
    server.assign("jateng-a1", "kota-jateng", "disdukcapil", "penilaian-2023@1");
    let mut colleague = Device::new(&server.state, "jateng-a1", "jateng");
    colleague.sync(&server.url()).expect("the colleague's morning sync");
    colleague.record_unit("disdukcapil", 2, 1, &mut rng);
    assert!(colleague.sync(&server.url()).expect("the colleague's evening sync").complete);

    let mut device = Device::new(&server.state, "jateng-a1", "jateng");
    let mut options = sidak_field::sync::SyncOptions::new(&server.url(), &device.token);
    options.page = 3;
    let s = device.sync_with(&options).expect("a sync in pages of 3");
    assert!(s.complete && s.pulled_again == 0, "{s:?}");
    let (served, pages) = device.scope_served(&server.url(), 3);
    assert!(pages > 20, "the scope takes many pages: {pages}");
    assert_eq!(device.others_ops(), served, "the device holds every op of its scope, each once");
    assert_eq!(s.pulled, served.len() as u64, "{s:?}");
    assert_eq!(s.pages_asked_ahead, pages - 1, "every page after the first was asked for ahead: {s:?}");

    // Through a proxy that drops, cuts and delays answers, pages asked ahead that break
    // off are asked for again: the device ends with the same scope, each op once.
    colleague.record_unit("disdukcapil", 1, 1, &mut rng);
    assert!(colleague.sync(&server.url()).expect("the colleague's next sync").complete);
    let proxy = FaultProxy::start(server.addr, Faults::random(3)).unwrap();
    options.server = proxy.url();
    options.retry_for = std::time::Duration::from_secs(30);
    options.retry_base = std::time::Duration::from_millis(5);
    let s = device.sync_with(&options).expect("a sync through faults completes, retrying");
    assert!(s.complete, "{s:?}");
    let (served, _) = device.scope_served(&server.url(), 3);
    assert_eq!(device.others_ops(), served, "after faults, still every op of its scope, each once");
    let stats = proxy.stats();
    assert!(stats.dropped_responses + stats.truncated_responses + stats.dropped_requests > 0, "{stats:?}");
}

#[test]
fn a_device_sends_two_photos_at_once_each_in_order_and_every_one_arrives_whole() {
    // Photos in chunks of 4 KiB, so that each takes several. The proxy holds the first
    // chunk until a second is in flight beside it (or 20 s pass): a device that sends one
    // file at a time never has two in at once.
    let mut rng = rand::rngs::StdRng::seed_from_u64(23);
    let server = Server::start();
    server.import_registry(&registry(&["jateng"]));
    server.assign("jateng-a1", "kota-jateng", "disdukcapil", "penilaian-2023@1");
    let mut device = Device::new(&server.state, "jateng-a1", "jateng");
    device.sync(&server.url()).expect("the morning sync");
    let visits = device.record_unit("disdukcapil", 2, 0, &mut rng);
    let photos: Vec<String> =
        visits.iter().flat_map(|v| device.field.visit(v).unwrap().evidence).map(|e| e.sha256).collect();
    assert!(photos.len() >= 4, "the day has photos: {}", photos.len());

    let proxy = FaultProxy::start(server.addr, Faults::none()).unwrap();
    proxy.hold_until_company("PUT /v1/evidence/", std::time::Duration::from_secs(20));
    let mut options = sidak_field::sync::SyncOptions::new(&proxy.url(), &device.token);
    options.chunk = 4096;
    assert_eq!(options.files_at_once, 2, "the device's default");
    let s = device.sync_with(&options).expect("the evening sync");
    assert!(s.complete && s.unsent_files == 0, "{s:?}");
    assert_eq!(s.files_uploaded, photos.len() as u64, "{s:?}");
    assert_eq!(proxy.stats().most_at_once, 2, "two files' chunks were in flight at once, never more");
    for sha in &photos {
        let sent = device.field.blobs().read_all(&sha.parse().unwrap()).unwrap();
        let held = std::fs::read(server.state.blob_path(sha)).expect("the server holds every photo");
        assert!(held == sent, "{sha} arrived whole, each chunk in its place");
    }
    assert_eq!(
        s.bytes_uploaded,
        photos.iter().map(|p| std::fs::metadata(server.state.blob_path(p)).unwrap().len()).sum::<u64>()
    );

    // One at a time when asked: the same proxy then never sees two at once.
    let mut one = Device::new(&server.state, "jateng-a1", "jateng");
    one.sync(&server.url()).expect("a second device's morning sync");
    one.record_unit("disdukcapil", 1, 0, &mut rng);
    let proxy = FaultProxy::start(server.addr, Faults::none()).unwrap();
    proxy.hold_until_company("PUT /v1/evidence/", std::time::Duration::from_millis(300));
    let mut options = sidak_field::sync::SyncOptions::new(&proxy.url(), &one.token);
    options.chunk = 4096;
    options.files_at_once = 1;
    let s = one.sync_with(&options).expect("a sync one file at a time");
    assert!(s.complete && s.unsent_files == 0, "{s:?}");
    assert_eq!(proxy.stats().most_at_once, 1);
}
