//! Encryption at rest through the real CLI: after a day's work nothing under the data
//! directory shows what was recorded (raw bytes searched for the answers, notes, codes
//! and photo); a wrong passphrase changes nothing; a passphrase change keeps every op,
//! chain and photo; and a SIGKILL during the change leaves exactly one passphrase
//! working.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use sidak_core::chain::verify_chains;
use sidak_field::{Field, FieldError, Passphrase};

const ANSWER: &str = "loket tiga meminta uang pelicin";
const NOTE: &str = "papan biaya tidak terlihat di ruang tunggu";
const ROLE: &str = "kepala seksi pelayanan";
const UNIT_CODE: &str = "sukamaju-disdukcapil";
const LATE_NOTE: &str = "catatan terakhir masih di WAL";

/// An instrument with a free-text indicator, so that an answer is a searchable text.
fn text_instrument() -> Value {
    json!({
        "format": "sidak-instrument/1", "id": "uji-teks", "version": 1, "title": "A text answer",
        "regime": "test", "sources": ["this test"], "choices": ["a test instrument"],
        "scale": {"min": "0", "max": "100"},
        "dimensions": [{"id": "a", "title": "A", "weight": "100", "variables": [
            {"id": "a1", "title": "A1", "indicators": [
                {"id": "p-yes", "title": "P yes", "answer": {"kind": "yes_no"}, "source": "observation",
                 "level": "product", "evidence_required": true},
                {"id": "u-text", "title": "U text", "answer": {"kind": "text"}, "source": "observation",
                 "level": "unit"},
                {"id": "q-official", "title": "Q official", "answer": {"kind": "scale", "min": 0, "max": 3},
                 "source": "official_interview", "level": "unit"}
            ]}
        ]}],
        "respondents": [{"kind": "official", "level": "unit", "expected": 1, "min": 1}],
        "rollup": {"units": "unit_type_weights", "unit_type_weights": {"disdukcapil": "1"},
                   "location_weights": {"mpp": "1", "own_office": "1", "online": "1"}},
        "bands": [{"grade": "A", "label": "A", "min": "0.00", "max": "100.00"}]
    })
}

fn text_assignments() -> Value {
    let mut list = assignments();
    for a in list["assignments"].as_array_mut().unwrap() {
        a["instrument"] = json!({"id": "uji-teks", "version": 1});
    }
    list
}

/// Bytes that look like a photo's: no pattern an encryption could hide by chance.
fn photo_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..len).map(|_| rng.gen()).collect()
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Every file under `dir`, byte for byte.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    files_under(dir).into_iter().map(|p| (p.clone(), std::fs::read(&p).unwrap())).collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A device set up with one visit: a text answer, a note, a questionnaire with a role,
/// and a photo. Returns the CLI, the visit id and the photo's bytes and digest.
fn recorded_day(data: &Path, files: &Path, kdf_mib: &str) -> (Cli, String, Vec<u8>, String) {
    std::fs::create_dir_all(files).unwrap();
    let cli = Cli::new(data);
    let instrument = files.join("uji-teks.json");
    std::fs::write(&instrument, text_instrument().to_string()).unwrap();
    let list = files.join("assignments.json");
    std::fs::write(&list, text_assignments().to_string()).unwrap();
    cli.ok(&["init", "--assessor", ASSESSOR, "--region", REGION, "--kdf-memory-mib", kdf_mib]);
    cli.ok(&["instrument", "load", instrument.to_str().unwrap()]);
    cli.ok(&["assignments", "load", list.to_str().unwrap()]);
    let visit = cli.json(&["visit", "start", "--assignment", A_DUKCAPIL, "--product", "ktp-el", "--location", "mpp"])
        ["visit"]
        .as_str()
        .unwrap()
        .to_owned();
    cli.ok(&["visit", "answer", &visit, "u-text", ANSWER]);
    cli.ok(&["visit", "note", &visit, NOTE, "--indicator", "u-text"]);
    let r = cli.json(&["respondent", "add", &visit, "--kind", "official", "--role", ROLE]);
    cli.ok(&["respondent", "answer", r["respondent"].as_str().unwrap(), "q-official", "2"]);
    let photo = photo_bytes(300_000, 7);
    let photo_path = files.join("IMG_0412.jpg");
    std::fs::write(&photo_path, &photo).unwrap();
    let attached = cli.json(&["visit", "attach", &visit, photo_path.to_str().unwrap(), "--indicator", "p-yes"]);
    cli.ok(&["visit", "answer", &visit, "p-yes", "yes"]);
    let digest = attached["sha256"].as_str().unwrap().to_owned();
    (cli, visit, photo, digest)
}

#[test]
fn nothing_readable_is_on_disk_without_the_passphrase() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (cli, visit, photo, digest) = recorded_day(&data, &tmp.path().join("in"), "8");
    cli.ok(&["visit", "finish", &visit]);

    // A last note from a process that is still running: its pages are in the WAL.
    let mut field = Field::open(&data, &passphrase()).unwrap();
    field.note(&visit, LATE_NOTE, None).unwrap();
    assert!(data.join("store.sqlite-wal").metadata().unwrap().len() > 0, "the WAL is searched too");

    // The store does hold all of it, decrypted.
    let view = field.visit(&visit).unwrap();
    assert_eq!(view.answers["u-text"], json!(ANSWER));
    assert!(view.notes.iter().any(|n| n.text == NOTE) && view.notes.iter().any(|n| n.text == LATE_NOTE));
    assert_eq!(view.respondents[0].role.as_deref(), Some(ROLE));
    assert_eq!(field.blobs().read_all(&digest.parse().unwrap()).unwrap(), photo);
    let status = field.status().unwrap();
    assert_eq!(status.assessor, ASSESSOR);

    // On disk, none of it: not as text, not the photo, not its digest.
    let needles: Vec<(&str, Vec<u8>)> = vec![
        ("answer", ANSWER.into()),
        ("note", NOTE.into()),
        ("late note", LATE_NOTE.into()),
        ("role", ROLE.into()),
        ("assessor", ASSESSOR.into()),
        ("region", REGION.into()),
        ("unit code", UNIT_CODE.into()),
        ("unit name", "Kependudukan".into()),
        ("institution", "Sukamaju".into()),
        ("photo digest (hex)", digest.clone().into()),
        ("photo digest", hex::decode(&digest).unwrap()),
        ("origin", status.origin.into()),
        ("visit id", visit.clone().into()),
        ("SQLite's plaintext header", b"SQLite format 3".to_vec()),
        ("an SQL schema", b"CREATE TABLE".to_vec()),
    ];
    let windows: HashSet<&[u8]> = photo.windows(32).collect();
    let files = files_under(&data);
    let names: Vec<String> =
        files.iter().map(|p| p.strip_prefix(&data).unwrap().to_string_lossy().into_owned()).collect();
    assert!(names.iter().any(|n| n == "store.sqlite") && names.iter().any(|n| n == "store.sqlite-wal"), "{names:?}");
    assert_eq!(names.iter().filter(|n| n.starts_with("blobs/")).count(), 1, "{names:?}");
    for path in &files {
        let raw = std::fs::read(path).unwrap();
        for (what, needle) in &needles {
            assert!(!contains(&raw, needle), "{} shows the {what}", path.display());
        }
        let leaked = raw.windows(32).filter(|w| windows.contains(w)).count();
        assert_eq!(leaked, 0, "{} holds {leaked} 32-byte windows of the photo", path.display());
        let name = path.to_string_lossy();
        assert!(!name.contains(&digest), "{name} is named by the photo's digest");
    }

    // The one plaintext file is the key header: format, Argon2id cost, salt, wrapped key.
    let header: Value = serde_json::from_str(&std::fs::read_to_string(data.join("store.header")).unwrap()).unwrap();
    assert_eq!(header["format"], "sidak-field-key/1");
    assert_eq!(header["kdf"]["algorithm"], "argon2id");
    assert_eq!(header.as_object().unwrap().len(), 3);
}

#[test]
fn a_wrong_passphrase_is_refused_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (_cli, visit, _, _) = recorded_day(&data, &tmp.path().join("in"), "8");
    let before = snapshot(&data);
    let wrong = tmp.path().join("wrong");
    std::fs::write(&wrong, "not the passphrase\n").unwrap();
    let run = |env: &str, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_sidak-field"))
            .env("SIDAK_PASSPHRASE", env)
            .env("SIDAK_NEW_PASSPHRASE", "a brand new passphrase")
            .arg("--data-dir")
            .arg(&data)
            .args(args)
            .output()
            .unwrap()
    };
    for args in [
        vec!["status"],
        vec!["visit", "note", visit.as_str(), "a note that must not be written"],
        vec!["init", "--assessor", ASSESSOR, "--region", REGION],
        vec!["passphrase", "change"],
        vec!["--json", "visit", "list"],
    ] {
        let o = run("not the passphrase", &args);
        assert_eq!(o.status.code(), Some(8), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stderr).contains("wrong passphrase"), "{args:?}");
        assert!(o.stdout.is_empty());
    }
    // The file overrides the (right) passphrase in the environment.
    let o = run(PASSPHRASE, &["--passphrase-file", wrong.to_str().unwrap(), "status"]);
    assert_eq!(o.status.code(), Some(8));
    assert!(matches!(Field::open(&data, &Passphrase::new("not the passphrase")), Err(FieldError::WrongPassphrase)));
    assert_eq!(snapshot(&data), before, "not a byte changed");
    // And the right one still opens it.
    assert!(run(PASSPHRASE, &["status"]).status.success());
}

#[test]
fn commands_before_set_up_create_nothing_and_a_short_passphrase_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cli = Cli::new(&data);
    assert!(cli.fails(&["status"], 4).contains("sidak-field init"));
    assert!(!data.exists(), "nothing was created");
    let o = Command::new(env!("CARGO_BIN_EXE_sidak-field"))
        .env("SIDAK_PASSPHRASE", "short")
        .args(["--data-dir", data.to_str().unwrap(), "init", "--assessor", ASSESSOR, "--region", REGION])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("at least 8 characters"));
    assert!(!Field::exists(&data));

    // A plain store from before encryption is refused with what to do, and kept.
    std::fs::create_dir_all(&data).unwrap();
    let plain = rusqlite::Connection::open(data.join("store.sqlite")).unwrap();
    plain.execute_batch("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)").unwrap();
    drop(plain);
    let before = snapshot(&data);
    assert!(cli.fails(&["status"], 5).contains("unencrypted store made by an earlier sidak-field"));
    assert!(cli.fails(&["init", "--assessor", ASSESSOR, "--region", REGION], 5).contains("unencrypted"));
    assert_eq!(snapshot(&data), before);
}

/// Everything a device holds, decrypted: ops, the visit, the photo.
fn contents(data: &Path, pass: &Passphrase, visit: &str, digest: &str) -> (Vec<sidak_core::op::Op>, Value, Vec<u8>) {
    let mut field = Field::open(data, pass).unwrap();
    let ops = field.all_ops().unwrap();
    assert!(verify_chains(&ops).is_clean(), "the chain verifies");
    let view = serde_json::to_value(field.visit(visit).unwrap()).unwrap();
    let photo = field.blobs().read_all(&digest.parse().unwrap()).unwrap();
    (ops, view, photo)
}

#[test]
fn changing_the_passphrase_keeps_every_op_and_photo() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (cli, visit, photo, digest) = recorded_day(&data, &tmp.path().join("in"), "64");
    let before = contents(&data, &passphrase(), &visit, &digest);
    assert_eq!(before.2, photo);
    let new = "sate ayam dua puluh tusuk";
    let change = |old: &str, args: &[&str], new_env: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_sidak-field"));
        c.env("SIDAK_PASSPHRASE", old).arg("--data-dir").arg(&data).args(["passphrase", "change"]).args(args);
        match new_env {
            Some(n) => c.env("SIDAK_NEW_PASSPHRASE", n),
            None => c.env_remove("SIDAK_NEW_PASSPHRASE"),
        };
        c.output().unwrap()
    };

    // Too short: refused, nothing changed.
    let o = change(PASSPHRASE, &[], Some("kurang"));
    assert_eq!(o.status.code(), Some(3), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(Field::open(&data, &passphrase()).is_ok());

    let o = change(PASSPHRASE, &[], Some(new));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(cli.fails(&["status"], 8).contains("wrong passphrase"), "the old passphrase no longer opens it");
    assert!(matches!(Field::open(&data, &passphrase()), Err(FieldError::WrongPassphrase)));
    assert_eq!(contents(&data, &Passphrase::new(new), &visit, &digest), before, "everything, unchanged");

    // And back, with the new one from a file; work goes on as before.
    let file = tmp.path().join("next");
    std::fs::write(&file, format!("{PASSPHRASE}\n")).unwrap();
    let o = change(new, &["--new-passphrase-file", file.to_str().unwrap()], None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(contents(&data, &passphrase(), &visit, &digest), before);
    cli.ok(&["visit", "note", &visit, "after two changes"]);
    assert!(matches!(Field::open(&data, &Passphrase::new(new)), Err(FieldError::WrongPassphrase)));
    assert!(!data.join("store.header.new").exists());
}

#[test]
fn sigkill_during_a_passphrase_change_leaves_exactly_one_passphrase_working() {
    let mut rng = crash_rng("passphrase kill");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (_cli, visit, photo, digest) = recorded_day(&data, &tmp.path().join("in"), "8");
    let before = contents(&data, &passphrase(), &visit, &digest);
    let passphrases = [PASSPHRASE, "sate ayam dua puluh tusuk"];
    let spawn = |current: usize| {
        Command::new(env!("CARGO_BIN_EXE_sidak-field"))
            .env("SIDAK_PASSPHRASE", passphrases[current])
            .env("SIDAK_NEW_PASSPHRASE", passphrases[1 - current])
            .arg("--data-dir")
            .arg(&data)
            .args(["passphrase", "change"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };

    // How long one change takes here, to spread kills over its whole life.
    let mut current = 0;
    let t = Instant::now();
    for _ in 0..4 {
        assert!(spawn(current).wait().unwrap().success());
        current = 1 - current;
    }
    let typical = t.elapsed() / 4;

    let (mut kills, mut completed, mut old_kept, mut new_took, mut mid_write) = (0, 0, 0, 0, 0);
    while kills < 60 {
        let mut child = spawn(current);
        // Half the kills anywhere in the command's life, half near its end, where the
        // new header is written and renamed.
        let micros = typical.as_micros() as u64;
        let delay = if rng.gen_bool(0.5) {
            rng.gen_range(0..(micros * 6 / 5).max(1))
        } else {
            rng.gen_range(micros * 7 / 10..(micros * 11 / 10).max(micros * 7 / 10 + 1))
        };
        std::thread::sleep(Duration::from_micros(delay));
        let killed = child.try_wait().unwrap().is_none() && child.kill().is_ok();
        let status = child.wait().unwrap();
        // Killed after the new header was written, before it was renamed into place.
        mid_write += usize::from(data.join("store.header.new").exists());
        let opens: Vec<bool> = passphrases
            .iter()
            .map(|p| match Field::open(&data, &Passphrase::new(*p)) {
                Ok(_) => true,
                Err(FieldError::WrongPassphrase) => false,
                Err(e) => panic!("after kill {kills}: the store does not open: {e}"),
            })
            .collect();
        assert_eq!(opens.iter().filter(|o| **o).count(), 1, "exactly one passphrase opens it: {opens:?}");
        let working = opens.iter().position(|o| *o).unwrap();
        if killed && !status.success() {
            kills += 1;
            if working == current {
                old_kept += 1;
            } else {
                new_took += 1;
            }
        } else {
            assert!(status.success(), "a change failed without being killed: {status:?}");
            assert_ne!(working, current, "a completed change took effect");
            completed += 1;
        }
        current = working;
        assert_eq!(contents(&data, &Passphrase::new(passphrases[current]), &visit, &digest), before);
    }
    assert_eq!(before.2, photo);
    assert!(!data.join("store.header.new").exists(), "no stale header is left once the store is opened");
    eprintln!(
        "{kills} kills ({old_kept} kept the old passphrase, {mid_write} of them with the new header written but not yet in place; {new_took} the new), {completed} completed, typical change {typical:?}"
    );
    assert!(completed > 0 || new_took > 0, "the kill schedule never let a change take effect");
}
