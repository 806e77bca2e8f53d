//! Three tiers end to end: two regional servers replicating to a centre over the sync
//! protocol, devices syncing to their regions, one device later syncing directly to
//! the centre, a region offline for a week and catching up, acknowledgements flowing
//! down to the devices (and `prune` freeing only what the centre holds), the centre's
//! results equal to those computed from the union of every device's ops, and
//! manifests that find a deleted and a tampered op.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use serde_json::json;
use sidak_core::op::Op;
use sidak_e2e::harness::*;
use sidak_field::sync::SyncOptions;
use sidak_server::auth::Role;

fn result_documents(server: &Server) -> BTreeMap<String, String> {
    server.read(|tx| {
        let mut stmt = tx.prepare("SELECT kind || '/' || entity || '/' || instrument, document FROM results")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<BTreeMap<_, _>, _>>()?)
    })
}

fn duplicates(server: &Server) -> i64 {
    server.read(|tx| {
        Ok(tx.query_row("SELECT COUNT(*) - COUNT(DISTINCT origin || '#' || seq) FROM ops", [], |r| r.get(0))?)
    })
}

fn origin_of(device: &mut Device) -> String {
    device.field.identity().unwrap().unwrap().origin.to_string()
}

fn evidence_of(device: &mut Device) -> Vec<sidak_field::app::EvidenceView> {
    let visits = device.field.visits(false).unwrap();
    visits.into_iter().flat_map(|v| device.field.visit(&v.id.to_string()).unwrap().evidence).collect()
}

fn server_ops(server: &Server, origin: &str) -> Vec<Op> {
    server.read(|tx| {
        let sql = format!("SELECT {} FROM ops WHERE origin = ?1 ORDER BY seq", sidak_server::ledger::OP_COLUMNS);
        let mut stmt = tx.prepare(&sql)?;
        let mut out = Vec::new();
        for row in stmt.query_map([origin], |r| sidak_server::ledger::row_op(r, 0))? {
            out.push(row??);
        }
        Ok(out)
    })
}

/// Waits for a condition that a background thread brings about (no fixed sleeps).
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn two_regions_and_a_centre() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(2024);
    let centre = Server::start();
    centre.import_registry(&registry(&["jateng", "aceh"]));
    centre.assign("a1", "kota-jateng", "disdukcapil", "penilaian-2023@1");
    centre.assign("a2", "kota-jateng", "dpmptsp", "penilaian-2023@1");
    centre.assign("b1", "kota-aceh", "disdukcapil", "penilaian-2023@1");
    let jateng = Server::start();
    let aceh = Server::start();
    let peer_j = centre.token(Role::Peer, Some("jateng"), None);
    let peer_a = centre.token(Role::Peer, Some("aceh"), None);

    // The regions fetch their part of the season: registry, assignments, instruments.
    let r = jateng.replicate(&centre.url(), &peer_j).expect("jateng replicates");
    assert!(r.pulled > 0 && r.caught_up, "{r:?}");
    aceh.replicate(&centre.url(), &peer_a).expect("aceh replicates");
    let aceh_units_at_jateng: i64 =
        jateng.read(|tx| Ok(tx.query_row("SELECT COUNT(*) FROM ops WHERE region = 'aceh'", [], |r| r.get(0))?));
    assert_eq!(aceh_units_at_jateng, 0, "a region receives its own region only");

    // Devices sync with their regions and see their assignments.
    let mut a1 = Device::new(&jateng.state, "a1", "jateng");
    let mut a2 = Device::new(&jateng.state, "a2", "jateng");
    let mut b1 = Device::new(&aceh.state, "b1", "aceh");
    for d in [&mut a1, &mut a2, &mut b1] {
        d.sync(&d_url(d, &jateng, &aceh)).expect("morning sync");
        assert_eq!(d.field.assignments().unwrap().len(), 1, "{}: its assignment came from the centre", d.assessor);
    }
    a1.record_unit("disdukcapil", 3, 30, &mut rng);
    a2.record_unit("dpmptsp", 2, 0, &mut rng);
    b1.record_unit("disdukcapil", 1, 30, &mut rng);
    for d in [&mut a1, &mut a2, &mut b1] {
        let s = d.sync(&d_url(d, &jateng, &aceh)).expect("evening sync");
        assert!(s.complete, "{s:?}");
    }
    // Before the regions replicate, nothing may be pruned: the centre holds nothing yet.
    assert_eq!(a1.field.prune().unwrap().freed, 0);

    // The regions replicate: the centre holds every device's chain, unaltered, once.
    jateng.replicate(&centre.url(), &peer_j).unwrap();
    aceh.replicate(&centre.url(), &peer_a).unwrap();
    for d in [&mut a1, &mut a2, &mut b1] {
        let origin = origin_of(d);
        assert_eq!(server_chain(&centre, &origin), chain_of(&d.own_ops()), "{} reached the centre", d.assessor);
    }
    for e in evidence_of(&mut a1) {
        let here = a1.field.blobs().read_all(&e.sha256.parse().unwrap()).unwrap();
        assert_eq!(std::fs::read(centre.state.blob_path(&e.sha256)).expect("the photo reached the centre"), here);
    }

    // Acknowledgements flow down: the region tells the device what the centre holds.
    let s = a1.sync(&jateng.url()).unwrap();
    let head = a1.own_ops().len() as u64;
    assert_eq!(s.upstream_held, Some(head), "the device learns that the centre holds all of it");
    let status = a1.field.status().unwrap();
    assert!(!status.visit_acks.is_empty() && status.visit_acks.iter().all(|v| v.server && v.centre), "{status:?}");
    // b1's region has not told it yet: its visits are held by the region only.
    let status = b1.field.status().unwrap();
    assert!(status.visit_acks.iter().all(|v| v.server && !v.centre), "{status:?}");

    // One device later syncs directly to the centre, with a token the centre issued.
    a2.record_unit("dpmptsp", 3, 0, &mut rng);
    let direct = centre.token(Role::Assessor, Some("jateng"), Some("a2"));
    let s = a2.sync_with(&SyncOptions::new(&centre.url(), &direct)).expect("a direct sync to the centre");
    assert!(s.complete && s.upstream_held.is_none(), "the centre is the top: {s:?}");
    let a2_origin = origin_of(&mut a2);
    assert_eq!(server_chain(&centre, &a2_origin), chain_of(&a2.own_ops()));
    // The region receives those ops from the centre, and the device's next sync with
    // its region sends nothing twice.
    jateng.replicate(&centre.url(), &peer_j).unwrap();
    assert_eq!(server_chain(&jateng, &a2_origin), chain_of(&a2.own_ops()), "the region holds them too");
    let s = a2.sync(&jateng.url()).unwrap();
    assert_eq!((s.pushed, s.unsent_ops), (0, 0), "{s:?}");
    a2.record_unit("dpmptsp", 1, 0, &mut rng);
    a2.sync(&jateng.url()).unwrap();
    jateng.replicate(&centre.url(), &peer_j).unwrap();
    assert_eq!(server_chain(&centre, &a2_origin), chain_of(&a2.own_ops()));
    for s in [&centre, &jateng] {
        assert_eq!(duplicates(s), 0, "an op that came both ways is stored once");
    }

    // Aceh is offline for a week: b1 keeps working and syncing with the region, the
    // centre assigns it more work; then aceh comes back and catches up in one go.
    centre.assign("b1", "kota-aceh", "dinkes", "penilaian-2023@1");
    for _day in 0..7 {
        b1.record_unit("disdukcapil", 2, 0, &mut rng);
        assert!(b1.sync(&aceh.url()).unwrap().complete);
    }
    let r = aceh.replicate(&centre.url(), &peer_a).expect("aceh catches up");
    assert!(r.caught_up && r.pushed > 0 && r.files > 0 && r.pulled > 0, "{r:?}");
    let b1_origin = origin_of(&mut b1);
    assert_eq!(server_chain(&centre, &b1_origin), chain_of(&b1.own_ops()));
    b1.sync(&aceh.url()).unwrap();
    assert_eq!(b1.field.assignments().unwrap().len(), 2, "the week's new assignment reached the device");

    // The centre's results equal those computed from the union of all device ops (and
    // the registry and assignments the centre wrote), fed to a fresh server.
    let fresh = Server::start();
    let admin = fresh.token(Role::Admin, None, None);
    let client = reqwest::blocking::Client::new();
    // Each origin's chain with the heads it signed: the devices' from the centre (which
    // kept them), the servers' signed with their own keys.
    let centre_origin = centre.state.server_origin();
    let mut feeds: Vec<(Vec<Op>, HeadSigner)> =
        vec![(server_ops(&centre, &centre_origin.to_string()), head_signer(&centre, centre_origin))];
    for d in [&mut a1, &mut a2, &mut b1] {
        let origin = d.field.identity().unwrap().unwrap().origin;
        feeds.push((d.own_ops(), head_signer(&centre, origin)));
    }
    for region in [&jateng, &aceh] {
        let origin = region.state.server_origin();
        feeds.push((server_ops(region, &origin.to_string()), head_signer(region, origin)));
    }
    for (ops, signer) in &feeds {
        for (batch, head) in signed_batches(ops, signer, 900) {
            let r: serde_json::Value = client
                .post(format!("{}/v1/ops/push", fresh.url()))
                .bearer_auth(&admin)
                .json(&json!({ "ops": batch, "heads": head.into_iter().collect::<Vec<_>>() }))
                .send()
                .unwrap()
                .json()
                .unwrap();
            assert!(
                r["origins"].as_array().unwrap().iter().all(|o| o["rejected"].is_null()
                    && !o["quarantined"].as_array().is_some_and(|q| q.iter().any(|x| x["code"] == "bad_signature"))),
                "{r}"
            );
        }
    }
    for d in [&mut a1, &mut a2, &mut b1] {
        for e in evidence_of(d) {
            if !e.on_device {
                continue;
            }
            let bytes = d.field.blobs().read_all(&e.sha256.parse().unwrap()).unwrap();
            let url = format!("{}/v1/evidence/{}", fresh.url(), e.sha256);
            client
                .post(&url)
                .bearer_auth(&admin)
                .json(&json!({"size": bytes.len(), "media_type": e.media_type}))
                .send()
                .unwrap();
            client
                .put(format!("{url}?offset=0"))
                .bearer_auth(&admin)
                .header("content-type", "application/octet-stream")
                .body(bytes)
                .send()
                .unwrap();
        }
    }
    // The region servers' registration ops are theirs, the rest identical.
    assert_eq!(result_documents(&fresh), result_documents(&centre), "centre results = results of the union");

    // Manifests: the centre and a region agree, and so do a region and its device.
    let jateng_admin = jateng.token(Role::Admin, None, None);
    let out = server_cli(centre.dir(), &["manifest", "compare", "--with", &jateng.url(), "--token", &jateng_admin]);
    assert!(out.contains("no differences"), "{out}");
    let device_manifest = a1.dir.join("manifest.json");
    std::fs::write(&device_manifest, serde_json::to_vec(&a1.field.manifest().unwrap()).unwrap()).unwrap();
    let out = server_cli(jateng.dir(), &["manifest", "compare", "--file", device_manifest.to_str().unwrap()]);
    assert!(out.contains("no differences: 1 origin(s)"), "{out}");

    // An op deleted at the centre and an op tampered with at the region are both found.
    let a1_origin = origin_of(&mut a1);
    centre
        .state
        .db()
        .write_blocking(|tx| {
            tx.execute("DELETE FROM ops WHERE origin = ?1 AND seq = 25", [&a2_origin])?;
            Ok::<_, sidak_server::error::ApiError>(())
        })
        .unwrap();
    jateng
        .state
        .db()
        .write_blocking(|tx| {
            tx.execute("UPDATE ops SET value = '\"diubah\"' WHERE origin = ?1 AND seq = 40", [&a1_origin])?;
            Ok::<_, sidak_server::error::ApiError>(())
        })
        .unwrap();
    let o = server_run(centre.dir(), &["manifest", "compare", "--with", &jateng.url(), "--token", &jateng_admin]);
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(o.status.code(), Some(6), "differences exit 6: {text}");
    let a2_head = a2.own_ops().len();
    let a1_head = a1.own_ops().len();
    assert!(text.contains(&format!("{a2_origin}: ops 25..{a2_head} held below, missing here")), "{text}");
    assert!(text.contains(&format!("{a2_origin}: here, op 25 is missing")), "{text}");
    assert!(text.contains(&format!("{a1_origin}: ops 40..{a1_head} held here, missing below")), "{text}");
    assert!(text.contains(&format!("{a1_origin}: below, op 40 was altered")), "{text}");

    // Finally the devices free what the centre holds, and only that.
    let before = std::fs::read_dir(a1.field.dir().join("blobs")).map(|d| d.count()).unwrap_or(0);
    let freed = a1.field.prune().unwrap();
    assert!(freed.freed > 0 && freed.kept == 0, "{freed:?} (of {before} directories)");
    for v in a1.field.visits(false).unwrap() {
        assert!(a1.field.visit(&v.id.to_string()).unwrap().evidence.iter().all(|e| !e.on_device));
    }
}

fn d_url(d: &Device, jateng: &Server, aceh: &Server) -> String {
    if d.assessor.starts_with('b') {
        aceh.url()
    } else {
        jateng.url()
    }
}

#[test]
fn replication_runs_by_itself_and_catches_up_after_the_centre_was_down() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(99);
    let centre_dir = tempfile::tempdir().unwrap();
    let centre = Server::start_in(centre_dir.path());
    centre.import_registry(&registry(&["jateng"]));
    centre.assign("a1", "kota-jateng", "disdukcapil", "penilaian-2023@1");
    let peer = centre.token(Role::Peer, Some("jateng"), None);
    let region = Server::start();
    let mut cfg = sidak_server::upstream::UpstreamConfig::new(&centre.url(), &peer);
    cfg.every = Duration::from_millis(200);
    cfg.timeout = Duration::from_secs(5);
    let replicator = sidak_server::upstream::spawn(region.state.clone(), cfg);

    let mut device = Device::new(&region.state, "a1", "jateng");
    eventually("the assignment reached the region", || {
        device.sync(&region.url()).is_ok() && !device.field.assignments().unwrap().is_empty()
    });
    device.record_unit("disdukcapil", 2, 30, &mut rng);
    device.sync(&region.url()).unwrap();
    let origin = origin_of(&mut device);
    eventually("the centre holds the device's day", || server_chain(&centre, &origin) == chain_of(&device.own_ops()));

    // The centre goes down; the region keeps accepting the device's work.
    let addr = centre.addr;
    drop(centre);
    device.record_unit("disdukcapil", 1, 0, &mut rng);
    assert!(device.sync(&region.url()).unwrap().complete);
    // It comes back where it was: replication catches up without anyone's help.
    let centre = Server::start_at(centre_dir.path(), addr);
    eventually("the centre caught up", || server_chain(&centre, &origin) == chain_of(&device.own_ops()));
    eventually("the device learnt it", || {
        device.sync(&region.url()).ok().and_then(|s| s.upstream_held) == Some(device.own_ops().len() as u64)
    });
    replicator.stop();
}

#[test]
fn corrections_flow_from_the_region_to_the_centre_and_back() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let centre = Server::start();
    centre.import_registry(&registry(&["jateng"]));
    centre.assign("a1", "kota-jateng", "disdukcapil", "penilaian-2023@1");
    let region = Server::start();
    let peer = centre.token(Role::Peer, Some("jateng"), None);
    region.replicate(&centre.url(), &peer).unwrap();
    let mut device = Device::new(&region.state, "a1", "jateng");
    device.sync(&region.url()).unwrap();
    let visits = device.record_unit("disdukcapil", 2, 30, &mut rng);
    device.field.answer(&visits[0], "proses.persyaratan", "3").unwrap();
    device.field.answer(&visits[0], "proses.prosedur", "3").unwrap();
    device.sync(&region.url()).unwrap();
    region.replicate(&centre.url(), &peer).unwrap();
    let unit_scores = |s: &Server| -> Vec<(String, Option<String>)> {
        s.read(|tx| sidak_server::results::rows(tx, "unit", None, -1, None))
            .into_iter()
            .filter(|r| r.code == "disdukcapil")
            .map(|r| (r.id, r.score))
            .collect()
    };
    let original = unit_scores(&centre);
    assert_eq!(unit_scores(&region), original);
    let client = reqwest::blocking::Client::new();
    let correct = |s: &Server, token: &str, field: &str| {
        let r = client
            .post(format!("{}/v1/review/corrections", s.url()))
            .bearer_auth(token)
            .json(&json!({"target": {"kind": "visit", "id": visits[0]}, "field": field, "value": 0, "reason": "papan persyaratan tidak ada di foto"}))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 201, "{}", r.text().unwrap());
    };

    // A regional supervisor corrects; the centre's results follow after replication.
    let supervisor = region.token(Role::Supervisor, Some("jateng"), None);
    correct(&region, &supervisor, "answer.proses.persyaratan");
    let corrected = unit_scores(&region);
    assert_ne!(corrected, original, "the correction changes the region's result");
    region.replicate(&centre.url(), &peer).unwrap();
    assert_eq!(unit_scores(&centre), corrected, "the centre uses the region's correction");

    // The centre corrects another answer; the region's results follow.
    let admin = centre.token(Role::Admin, None, None);
    correct(&centre, &admin, "answer.proses.prosedur");
    let both = unit_scores(&centre);
    assert_ne!(both, corrected);
    region.replicate(&centre.url(), &peer).unwrap();
    assert_eq!(unit_scores(&region), both, "the region uses the centre's correction");
    // The field values stay as the device wrote them, on both tiers.
    for s in [&centre, &region] {
        let v = s.read(|tx| sidak_server::ledger::field(tx, &visits[0], "answer.proses.persyaratan"));
        assert_eq!(v, Some(json!(3)));
    }
    // And the published documents agree to the byte, corrections and field values
    // side by side.
    let unit_docs = |s: &Server| -> BTreeMap<String, String> {
        result_documents(s).into_iter().filter(|(k, _)| k.starts_with("unit/")).collect()
    };
    assert_eq!(unit_docs(&region), unit_docs(&centre));
}

#[test]
fn a_region_asks_the_centre_for_each_next_page_ahead_and_holds_its_scope_once() {
    // Pages of 7, so that the region's registry, its assignments and a device's day that
    // reached the centre directly take many. The region asks for each next page while it
    // absorbs the current one (proto §5.4).
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let centre = Server::start();
    centre.import_registry(&registry(&["jateng", "aceh"]));
    centre.assign("a1", "kota-jateng", "disdukcapil", "penilaian-2023@1");
    let mut device = Device::new(&centre.state, "a1", "jateng");
    device.sync(&centre.url()).expect("the device's morning sync, at the centre");
    device.record_unit("disdukcapil", 2, 1, &mut rng);
    assert!(device.sync(&centre.url()).expect("its evening sync").complete);
    let peer = centre.token(Role::Peer, Some("jateng"), None);
    let region = Server::start();
    let mut cfg = sidak_server::upstream::UpstreamConfig::new(&centre.url(), &peer);
    cfg.page = 7;
    let r = sidak_server::upstream::replicate_once(&region.state, &cfg).expect("a round in pages of 7");
    // The device's ops reached the region by the pull: the next round learns that the
    // centre holds them.
    let again = sidak_server::upstream::replicate_once(&region.state, &cfg).expect("the next round");
    assert!(again.caught_up && again.pulled == 0, "{again:?}");

    // What the centre serves the region's peer token, a page of 7 at a time.
    let (served, pages) = served(&centre.url(), &peer, 7, None);
    let mut held: Vec<(String, u64, String)> = region.read(|tx| {
        let mut stmt = tx.prepare("SELECT origin, seq, hash FROM ops ORDER BY origin, seq")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    });
    held.sort();
    assert!(pages > 20, "the scope takes many pages: {pages}");
    assert_eq!(held, served, "the region holds every op the centre serves it, each once");
    // (Its own registration, pushed first, comes back with the rest and is not stored twice.)
    assert_eq!(r.pushed + r.pulled, served.len() as u64, "{r:?}");
    assert_eq!(r.pages_asked_ahead, pages - 1, "every page after the first was asked for ahead: {r:?}");
    assert_eq!(duplicates(&region), 0);
}

#[test]
fn a_region_sends_the_centre_two_photos_at_once_and_every_one_arrives_whole() {
    // The proxy before the centre holds the first chunk until a second is in flight
    // beside it (or 20 s pass): a region that sends one file at a time never has two in.
    let mut rng = rand::rngs::StdRng::seed_from_u64(29);
    let centre = Server::start();
    centre.import_registry(&registry(&["jateng"]));
    centre.assign("a1", "kota-jateng", "disdukcapil", "penilaian-2023@1");
    let region = Server::start();
    let peer = centre.token(Role::Peer, Some("jateng"), None);
    region.replicate(&centre.url(), &peer).expect("the region fetches its part of the season");
    let mut device = Device::new(&region.state, "a1", "jateng");
    device.sync(&region.url()).expect("the device's morning sync");
    device.record_unit("disdukcapil", 2, 0, &mut rng);
    assert!(device.sync(&region.url()).expect("its evening sync").complete);
    let photos = evidence_of(&mut device);
    assert!(photos.len() >= 4, "the day has photos: {}", photos.len());

    let proxy = sidak_e2e::proxy::FaultProxy::start(centre.addr, sidak_e2e::proxy::Faults::none()).unwrap();
    proxy.hold_until_company("PUT /v1/evidence/", Duration::from_secs(20));
    let cfg = sidak_server::upstream::UpstreamConfig::new(&proxy.url(), &peer);
    assert_eq!(cfg.files_at_once, 2, "the region's default");
    let r = sidak_server::upstream::replicate_once(&region.state, &cfg).expect("a round");
    assert_eq!(r.files, photos.len() as u64, "{r:?}");
    assert_eq!(proxy.stats().most_at_once, 2, "two files' chunks were in flight at once, never more");
    for e in &photos {
        let sent = std::fs::read(region.state.blob_path(&e.sha256)).unwrap();
        let held = std::fs::read(centre.state.blob_path(&e.sha256)).expect("the centre holds every photo");
        assert!(held == sent, "{} arrived whole", e.sha256);
    }
    assert_eq!(
        r.bytes,
        photos.iter().map(|e| std::fs::metadata(centre.state.blob_path(&e.sha256)).unwrap().len()).sum::<u64>()
    );
    let again = sidak_server::upstream::replicate_once(&region.state, &cfg).expect("the next round");
    assert!(again.caught_up && again.files == 0, "every file is recorded as held by the centre: {again:?}");
}
