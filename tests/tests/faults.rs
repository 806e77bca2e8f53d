//! Syncing through a proxy that drops connections mid-request and mid-response,
//! truncates bodies, delays and duplicates requests, with random seeds: at least 100
//! schedules. After the faults stop, one clean sync converges: no op lost, none
//! duplicated, every chain verified, every evidence file identical byte for byte.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use sidak_core::chain::verify_chains;
use sidak_e2e::harness::*;
use sidak_e2e::proxy::{FaultProxy, Faults};
use sidak_field::sync::SyncOptions;

/// Schedules in CI; `SIDAK_FAULT_SCHEDULES` changes it for a local replay.
const SCHEDULES: u64 = 104;

fn record_small_visit(device: &mut Device, rng: &mut impl Rng) {
    let a = device.field.assignments().unwrap().into_iter().next().unwrap();
    let v = device
        .field
        .start_visit(&sidak_field::app::StartVisit {
            assignment: a.id.to_string(),
            product: Some(a.products[0].code.clone()),
            mode: None,
            location: sidak_core::instrument::Location::Mpp,
        })
        .unwrap()
        .to_string();
    let photos = device.dir.join("camera");
    std::fs::create_dir_all(&photos).unwrap();
    for (i, ind) in ["persyaratan", "prosedur", "jangka-waktu", "biaya-tarif", "produk", "moto"].iter().enumerate() {
        let id = format!("proses.{ind}");
        device.field.answer(&v, &id, &rng.gen_range(0..=3).to_string()).unwrap();
        if i % 2 == 0 {
            let photo = photos.join(format!("{}.jpg", uuid::Uuid::now_v7().simple()));
            std::fs::write(&photo, (0..rng.gen_range(3_000..20_000)).map(|_| rng.gen::<u8>()).collect::<Vec<_>>())
                .unwrap();
            device.field.attach(&v, &photo, Some(&id), None).unwrap();
        }
    }
    device.field.note(&v, "catatan lapangan", None).unwrap();
    device.field.finish(&v).unwrap();
}

fn options(url: &str, token: &str) -> SyncOptions {
    let mut o = SyncOptions::new(url, token);
    o.timeout = Duration::from_secs(3);
    o.retry_for = Duration::from_millis(400);
    o.retry_base = Duration::from_millis(5);
    o.batch = 7;
    // Small pull pages too, so that pages asked ahead (§5.4) meet the faults.
    o.page = 25;
    o.chunk = 4 * 1024;
    o
}

fn run_schedule(server: &Server, k: u64, seed: u64) -> (u64, u64) {
    let started = std::time::Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // An assessor per schedule, so that each pull carries one schedule's ops, not all.
    let assessor = format!("a{k}");
    server.assign(&assessor, "kota-jateng", "disdukcapil", "penilaian-2023@1");
    let mut device = Device::new(&server.state, &assessor, "jateng");
    device.sync(&server.url()).expect("morning sync, no faults");
    record_small_visit(&mut device, &mut rng);
    let proxy = FaultProxy::start(server.addr, Faults::random(seed)).expect("proxy");
    let mut failed = 0;
    for _ in 0..3 {
        if device.sync_with(&options(&proxy.url(), &device.token)).is_err() {
            failed += 1;
        }
        if rng.gen_bool(0.5) {
            record_small_visit(&mut device, &mut rng);
        }
    }
    proxy.set_faults(Faults::none());
    let summary = device
        .sync_with(&options(&proxy.url(), &device.token))
        .unwrap_or_else(|e| panic!("seed {seed}: the clean sync failed: {e}"));
    assert!(summary.complete && summary.unsent_ops == 0 && summary.unsent_files == 0, "seed {seed}: {summary:?}");

    // No op lost, none duplicated, the chain verified.
    let me = device.field.identity().unwrap().unwrap().origin;
    let mine = device.own_ops();
    let held = server_chain(server, &me.to_string());
    assert_eq!(
        held,
        mine.iter().map(|o| (o.seq as i64, o.hash.to_hex())).collect::<Vec<_>>(),
        "seed {seed}: the server's copy of the chain differs"
    );
    assert!(verify_chains(&mine).is_clean());
    // And every op of its scope pulled, each once, though pages were asked for ahead.
    let (served, _) = device.scope_served(&server.url(), 25);
    assert_eq!(device.others_ops(), served, "seed {seed}: the device's copy of its scope differs");
    // Every file identical.
    for v in device.field.visits(false).unwrap() {
        // Visits of other devices of the same assessor arrive too, without their files.
        for e in device.field.visit(&v.id.to_string()).unwrap().evidence.into_iter().filter(|e| e.on_device) {
            let here = device.field.blobs().read_all(&e.sha256.parse().unwrap()).unwrap();
            let there = std::fs::read(server.state.blob_path(&e.sha256))
                .unwrap_or_else(|_| panic!("seed {seed}: photo {} missing", e.sha256));
            assert!(here == there, "seed {seed}: photo {} differs", e.sha256);
        }
    }
    let stats = proxy.stats();
    eprintln!("seed {seed}: {failed} failed syncs, {stats:?}, {:?}", started.elapsed());
    (
        failed,
        stats.dropped_requests + stats.dropped_responses + stats.truncated_responses + stats.delayed + stats.duplicated,
    )
}

#[test]
fn sync_converges_after_any_fault_schedule() {
    let server = Server::start();
    server.import_registry(&registry(&["jateng"]));
    let base: u64 =
        std::env::var("SIDAK_FAULT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| rand::thread_rng().gen());
    eprintln!("fault schedules from seed {base} (SIDAK_FAULT_SEED replays them)");
    let schedules: u64 = std::env::var("SIDAK_FAULT_SCHEDULES").ok().and_then(|s| s.parse().ok()).unwrap_or(SCHEDULES);
    let server = std::sync::Arc::new(server);
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let server = server.clone();
            std::thread::spawn(move || {
                let mut failed = 0;
                let mut faults = 0;
                for k in (t..schedules).step_by(4) {
                    let (f, n) = run_schedule(&server, k, base.wrapping_add(k));
                    failed += f;
                    faults += n;
                }
                (failed, faults)
            })
        })
        .collect();
    let (mut failed, mut faults) = (0, 0);
    for t in threads {
        let (f, n) = t.join().expect("a schedule failed");
        failed += f;
        faults += n;
    }
    eprintln!("{schedules} schedules: {faults} faults injected, {failed} syncs failed and were resumed");
    assert!(faults >= schedules, "the schedules injected too few faults to mean anything");
    // Nothing duplicated across all schedules.
    let duplicates: i64 = server.read(|tx| {
        Ok(tx.query_row("SELECT COUNT(*) - COUNT(DISTINCT origin || '#' || seq) FROM ops", [], |r| r.get(0))?)
    });
    assert_eq!(duplicates, 0);
}
