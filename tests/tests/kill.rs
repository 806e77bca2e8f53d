//! SIGKILL of the server during pushes and of the client during sync, repeatedly; then
//! restart and converge with nothing lost and nothing duplicated.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use sidak_core::chain::verify_chains;
use sidak_e2e::harness::*;
use sidak_field::sync::SyncOptions;
use sidak_field::Field;

const REGIONS: [&str; 1] = ["jateng"];

/// A device recorded with the field library against a store prepared through the CLI.
fn device(dir: &std::path::Path, server_dir: &std::path::Path, assessor: &str) -> (Field, String) {
    let token = server_cli(
        server_dir,
        &["token", "create", "--role", "assessor", "--region", "jateng", "--assessor", assessor],
    )
    .trim()
    .to_owned();
    let mut field = Field::open(dir, &passphrase()).unwrap();
    field.init(assessor, "jateng").unwrap();
    (field, token)
}

fn fast(url: &str, token: &str) -> SyncOptions {
    let mut o = SyncOptions::new(url, token);
    o.timeout = Duration::from_secs(5);
    o.retry_for = Duration::from_millis(300);
    o.batch = 40;
    o.chunk = 8 * 1024;
    o
}

#[test]
fn the_server_is_killed_during_pushes_again_and_again() {
    let seed: u64 =
        std::env::var("SIDAK_KILL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| rand::thread_rng().gen());
    eprintln!("server kill seed {seed} (SIDAK_KILL_SEED replays it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let tmp = tempfile::tempdir().unwrap();
    let sdir = tmp.path().join("server");
    let csv = tmp.path().join("registry.csv");
    std::fs::write(&csv, registry(&REGIONS)).unwrap();
    server_cli(&sdir, &["registry", "import", csv.to_str().unwrap()]);
    for (a, unit) in [("a1", "disdukcapil"), ("a2", "dpmptsp"), ("a3", "dinkes")] {
        server_cli(
            &sdir,
            &[
                "assignment",
                "create",
                "--assessor",
                a,
                "--institution",
                "kota-jateng",
                "--unit",
                unit,
                "--mode",
                "covert",
            ],
        );
    }
    let mut devices: Vec<(Field, String, &str)> = [("a1", "disdukcapil"), ("a2", "dpmptsp"), ("a3", "dinkes")]
        .iter()
        .map(|(a, unit)| {
            let (f, t) = device(&tmp.path().join(a), &sdir, a);
            (f, t, *unit)
        })
        .collect();
    let mut server = ServerProcess::start(&binary("sidak-server"), &sdir, "127.0.0.1:0".parse().unwrap());
    // Morning sync, then a day recorded offline.
    for (field, token, unit) in devices.iter_mut() {
        field.sync(&fast(&format!("http://{}", server.addr), token), &mut |_| {}).expect("morning sync");
        let mut dev = DeviceRef { field, rng: &mut rng };
        dev.record(unit);
    }
    // Evening: syncs while the server is killed at random moments, eight times.
    let mut kills = 0;
    while kills < 8 {
        let url = format!("http://{}", server.addr);
        let handles: Vec<_> = devices
            .drain(..)
            .map(|(mut field, token, unit)| {
                let opts = fast(&url, &token);
                std::thread::spawn(move || {
                    let _ = field.sync(&opts, &mut |_| {});
                    (field, token, unit)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(rng.gen_range(5..120)));
        server.kill();
        kills += 1;
        devices = handles.into_iter().map(|h| h.join().unwrap()).collect();
        server = ServerProcess::start(&binary("sidak-server"), &sdir, "127.0.0.1:0".parse().unwrap());
    }
    // Faults over: one clean sync each converges.
    let url = format!("http://{}", server.addr);
    for (field, token, _) in devices.iter_mut() {
        let s = field.sync(&fast(&url, token), &mut |_| {}).expect("a clean sync after the kills");
        assert!(s.complete, "{s:?}");
    }
    server.kill();
    let check = Server::start_in(&sdir);
    for (field, _, _) in devices.iter_mut() {
        let me = field.identity().unwrap().unwrap().origin;
        let mine: Vec<(i64, String)> = field
            .all_ops()
            .unwrap()
            .into_iter()
            .filter(|o| o.origin == me)
            .map(|o| (o.seq as i64, o.hash.to_hex()))
            .collect();
        assert_eq!(server_chain(&check, &me.to_string()), mine, "every op exactly once, unaltered");
        for v in field.visits(false).unwrap() {
            for e in field.visit(&v.id.to_string()).unwrap().evidence {
                let there = std::fs::read(check.state.blob_path(&e.sha256)).expect("every photo arrived");
                assert_eq!(sidak_core::hash::sha256_hex(&there), e.sha256);
            }
        }
    }
    let duplicates: i64 = check.read(|tx| {
        Ok(tx.query_row("SELECT COUNT(*) - COUNT(DISTINCT origin || '#' || seq) FROM ops", [], |r| r.get(0))?)
    });
    assert_eq!(duplicates, 0);
}

struct DeviceRef<'a> {
    field: &'a mut Field,
    rng: &'a mut rand::rngs::StdRng,
}

impl DeviceRef<'_> {
    /// Two visits' worth of answers and photos.
    fn record(&mut self, unit: &str) {
        let a = self.field.assignments().unwrap().into_iter().find(|a| a.unit.code == unit).unwrap();
        let photos = self.field.dir().join("camera");
        std::fs::create_dir_all(&photos).unwrap();
        for p in &a.products {
            let v = self
                .field
                .start_visit(&sidak_field::app::StartVisit {
                    assignment: a.id.to_string(),
                    product: Some(p.code.clone()),
                    mode: None,
                    location: sidak_core::instrument::Location::Mpp,
                })
                .unwrap()
                .to_string();
            for ind in [
                "persyaratan",
                "prosedur",
                "jangka-waktu",
                "biaya-tarif",
                "produk",
                "maklumat-publikasi",
                "maklumat-substansi",
                "pelayanan-khusus",
                "visi-misi",
                "moto",
                "atribut",
                "pelayanan-terpadu",
            ] {
                let id = format!("proses.{ind}");
                self.field.answer(&v, &id, &self.rng.gen_range(0..=3).to_string()).unwrap();
                let photo = photos.join(format!("{}.jpg", uuid::Uuid::now_v7().simple()));
                std::fs::write(
                    &photo,
                    (0..self.rng.gen_range(10_000..30_000)).map(|_| self.rng.gen::<u8>()).collect::<Vec<_>>(),
                )
                .unwrap();
                self.field.attach(&v, &photo, Some(&id), None).unwrap();
            }
            self.field.finish(&v).unwrap();
        }
    }
}

#[test]
fn the_client_is_killed_during_sync_again_and_again() {
    let seed: u64 =
        std::env::var("SIDAK_KILL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| rand::thread_rng().gen());
    eprintln!("client kill seed {seed} (SIDAK_KILL_SEED replays it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let server = Server::start();
    server.import_registry(&registry(&REGIONS));
    server.assign("a1", "kota-jateng", "disdukcapil", "penilaian-2023@1");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("field");
    let token = server.token(sidak_server::auth::Role::Assessor, Some("jateng"), Some("a1"));
    {
        let mut field = Field::open(&dir, &passphrase()).unwrap();
        field.init("a1", "jateng").unwrap();
        field.sync(&fast(&server.url(), &token), &mut |_| {}).unwrap();
        DeviceRef { field: &mut field, rng: &mut rng }.record("disdukcapil");
    }
    let field_bin = binary("sidak-field");
    let mut kills = 0;
    let mut finished = 0;
    while kills < 25 {
        let mut child = std::process::Command::new(&field_bin)
            .env("SIDAK_PASSPHRASE", PASSPHRASE)
            .args([
                "--data-dir",
                dir.to_str().unwrap(),
                "sync",
                "--quiet",
                "--server",
                &server.url(),
                "--token",
                &token,
                "--retry-for",
                "1",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.gen_range(1..800)));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            kills += 1;
        } else {
            finished += 1;
            // Everything was sent: more work for the next round.
            let mut field = Field::open(&dir, &passphrase()).unwrap();
            DeviceRef { field: &mut field, rng: &mut rng }.record("disdukcapil");
        }
        let _ = child.wait();
        let mut field = Field::open(&dir, &passphrase()).expect("the store opens after a kill");
        // The device's own chain; pulled origins arrive filtered by scope, not whole.
        let me = field.identity().unwrap().unwrap().origin;
        let own: Vec<_> = field.all_ops().unwrap().into_iter().filter(|o| o.origin == me).collect();
        assert!(verify_chains(&own).is_clean());
    }
    let mut field = Field::open(&dir, &passphrase()).unwrap();
    let s = field.sync(&fast(&server.url(), &token), &mut |_| {}).expect("a clean sync");
    assert!(s.complete && s.unsent_ops == 0 && s.unsent_files == 0, "{s:?}");
    let me = field.identity().unwrap().unwrap().origin;
    let mine: Vec<(i64, String)> = field
        .all_ops()
        .unwrap()
        .into_iter()
        .filter(|o| o.origin == me)
        .map(|o| (o.seq as i64, o.hash.to_hex()))
        .collect();
    assert_eq!(server_chain(&server, &me.to_string()), mine);
    let status = field.status().unwrap();
    assert_eq!(status.unsent_ops, 0);
    eprintln!("{kills} kills, {finished} syncs finished before their kill");
}
