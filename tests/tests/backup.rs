//! An office's backup and restore, as docs/operations.md describes it: `sidak-server
//! backup` while the server runs, then the store is lost and the server restarted from
//! the backup. Devices that synced after the backup resend what it lacks, by
//! themselves, and pull again from the start; nothing is lost.

use rand::SeedableRng;
use sidak_e2e::harness::*;

#[test]
fn a_server_restored_from_a_backup_is_refilled_by_its_devices() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let server = Server::start();
    server.import_registry(&registry(&["jateng"]));
    server.assign("a1", "kota-jateng", "disdukcapil", "penilaian-2023@1");
    server.assign("a1", "kota-jateng", "dinkes", "penilaian-2023@1");
    let mut device = Device::new(&server.state, "a1", "jateng");
    device.sync(&server.url()).unwrap();
    device.record_unit("disdukcapil", 2, 30, &mut rng);
    device.sync(&server.url()).unwrap();

    // The nightly backup, taken while the server runs.
    let backups = tempfile::tempdir().unwrap();
    let copy = backups.path().join("monday");
    let out = server_cli(server.dir(), &["backup", "--to", copy.to_str().unwrap()]);
    assert!(out.contains("evidence file(s)"), "{out}");
    // A second backup into the same directory is refused: it never overwrites a store.
    let o = server_run(server.dir(), &["backup", "--to", copy.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", String::from_utf8_lossy(&o.stderr));

    // Tuesday's work reaches the server, then the server's disk dies.
    device.record_unit("dinkes", 1, 0, &mut rng);
    device.sync(&server.url()).unwrap();
    let me = device.field.identity().unwrap().unwrap().origin.to_string();
    let full = server_chain(&server, &me);
    let photos = std::fs::read_dir(server.dir().join("blobs")).unwrap().count();
    drop(server);

    // Restored from Monday's backup: it lacks Tuesday.
    let restored = Server::start_in(&copy);
    let held = server_chain(&restored, &me);
    assert!(held.len() < full.len() && full.starts_with(&held), "the backup is Monday's prefix of the chain");

    // The device syncs as usual and the server is whole again.
    let s = device.sync(&restored.url()).expect("sync to the restored server");
    assert!(s.complete && s.unsent_ops == 0 && s.unsent_files == 0, "{s:?}");
    assert!(s.restarted_pull, "the device noticed and pulled from the start");
    assert_eq!(server_chain(&restored, &me), full, "every op is back, once");
    for v in device.field.visits(false).unwrap() {
        for e in device.field.visit(&v.id.to_string()).unwrap().evidence {
            let here = device.field.blobs().read_all(&e.sha256.parse().unwrap()).unwrap();
            let there = std::fs::read(restored.state.blob_path(&e.sha256)).expect("every photo is back");
            assert_eq!(here, there);
        }
    }
    assert_eq!(std::fs::read_dir(restored.dir().join("blobs")).unwrap().count(), photos);
    // And its results are what a recompute from scratch gives.
    let before = restored.read(|tx| sidak_server::results::rows(tx, "unit", None, -1, None));
    let instruments = restored.state.instruments();
    restored.state.db().write_blocking(|tx| sidak_server::results::recompute_all(tx, &instruments)).unwrap();
    let after = restored.read(|tx| sidak_server::results::rows(tx, "unit", None, -1, None));
    let scores = |rows: &[sidak_server::results::ResultRow]| {
        rows.iter().map(|r| (r.id.clone(), r.score.clone(), r.status.clone())).collect::<Vec<_>>()
    };
    assert_eq!(scores(&before), scores(&after));
    assert_eq!(after.iter().filter(|r| r.status == "complete").count(), 2, "{after:?}");
}
