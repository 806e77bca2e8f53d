//! Crash safety: the real `sidak-field` binary is killed with SIGKILL at random points
//! while recording, over and over. After every kill the store opens, every origin's
//! chain verifies, and every command that had reported success has its change present.

mod common;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use rand::Rng;
use serde_json::Value;
use sidak_core::chain::verify_chains;
use sidak_field::Field;

const KILLS: usize = 220;
/// Every this many commands, one is left to finish: it proves acknowledged work
/// survives the kills that follow, and re-measures how long a command takes.
const LET_FINISH: usize = 6;

enum Action {
    Note(String),
    Answer(String, String),
    Attach(usize),
    Respondent,
    Visit,
}

#[test]
fn sigkill_while_recording_loses_nothing_that_was_acknowledged() {
    let mut rng = crash_rng("crash test");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cli = Cli::new(&data);
    let list = tmp.path().join("assignments.json");
    std::fs::write(&list, assignments().to_string()).unwrap();
    // The cheapest key derivation: the test opens the store a thousand times.
    cli.ok(&["init", "--assessor", ASSESSOR, "--region", REGION, "--kdf-memory-mib", "8"]);
    cli.ok(&["instrument", "load", "penilaian-2023"]);
    cli.ok(&["assignments", "load", list.to_str().unwrap()]);
    let visit = cli.json(&["visit", "start", "--assignment", A_DUKCAPIL, "--product", "ktp-el", "--location", "mpp"])
        ["visit"]
        .as_str()
        .unwrap()
        .to_owned();
    let photos: Vec<_> = (0..4)
        .map(|i| {
            let p = tmp.path().join(format!("photo{i}.jpg"));
            // Ten 64 KiB segments and more: a kill can land between any two of them.
            std::fs::write(&p, vec![i as u8; 640_000 + i * 1000]).unwrap();
            p
        })
        .collect();

    // How long one command takes here, to spread kills over its whole life. Commands
    // slow down as the store grows, and a loaded machine is slower than the warm-up
    // said, so the estimate follows the commands that ran to their end.
    let mut recent: VecDeque<Duration> = VecDeque::new();
    for i in 0..5 {
        let t = Instant::now();
        cli.ok(&["visit", "note", &visit, &format!("warm-up {i}")]);
        recent.push_back(t.elapsed());
    }

    let mut acked_notes = vec![];
    let mut acked_answers: BTreeMap<String, String> = BTreeMap::new();
    let mut tried_answers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut acked_attachments = 0usize;
    let mut acked_visits = vec![visit.clone()];
    let mut acked_respondents = 0usize;
    let (mut kills, mut completed, mut n) = (0usize, 0usize, 0usize);
    let indicators = ["proses.persyaratan", "proses.prosedur", "proses.jangka-waktu", "proses.produk"];

    while kills < KILLS {
        n += 1;
        let action = match rng.gen_range(0..10) {
            0..=3 => Action::Note(format!("catatan-{n}")),
            4..=6 => Action::Answer(
                indicators[rng.gen_range(0..indicators.len())].to_owned(),
                rng.gen_range(0..=3).to_string(),
            ),
            7 => Action::Attach(rng.gen_range(0..photos.len())),
            8 => Action::Respondent,
            _ => Action::Visit,
        };
        let args: Vec<String> = match &action {
            Action::Note(text) => vec!["visit".into(), "note".into(), visit.clone(), text.clone()],
            Action::Answer(ind, v) => vec!["visit".into(), "answer".into(), visit.clone(), ind.clone(), v.clone()],
            Action::Attach(i) => vec!["visit".into(), "attach".into(), visit.clone(), photos[*i].display().to_string()],
            Action::Respondent => {
                vec!["respondent".into(), "add".into(), visit.clone(), "--kind".into(), "official".into()]
            }
            Action::Visit => vec![
                "visit".into(),
                "start".into(),
                "--assignment".into(),
                A_DPMPTSP.into(),
                "--location".into(),
                "dpmptsp".into(),
            ],
        };
        // Only an attachment writes evidence files: the files are checked after one.
        let writes_files = matches!(action, Action::Attach(_));
        if let Action::Answer(ind, v) = &action {
            tried_answers.entry(ind.clone()).or_default().push(v.clone());
        }
        let started = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_sidak-field"))
            .env("SIDAK_PASSPHRASE", PASSPHRASE)
            .arg("--json")
            .arg("--data-dir")
            .arg(&data)
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let killed = if n % LET_FINISH == 0 {
            false
        } else {
            let typical = median(&recent);
            let delay = Duration::from_micros(rng.gen_range(0..(typical.as_micros() as u64 * 6 / 5).max(1)));
            std::thread::sleep(delay);
            child.try_wait().unwrap().is_none() && child.kill().is_ok()
        };
        let output = child.wait_with_output().unwrap();
        if !killed && output.status.success() {
            recent.push_back(started.elapsed());
            if recent.len() > 16 {
                recent.pop_front();
            }
        }
        if killed && !output.status.success() {
            kills += 1;
        } else if output.status.success() {
            completed += 1;
            let json: Value = serde_json::from_slice(&output.stdout).expect("a successful command prints its JSON");
            match action {
                Action::Note(text) => acked_notes.push(text),
                Action::Answer(ind, v) => {
                    acked_answers.insert(ind.clone(), v);
                    tried_answers.insert(ind, Vec::new());
                }
                Action::Attach(_) => acked_attachments += 1,
                Action::Respondent => acked_respondents += 1,
                Action::Visit => acked_visits.push(json["visit"].as_str().unwrap().to_owned()),
            }
        } else {
            panic!("sidak-field {args:?} failed without being killed: {:?}", output.status);
        }

        // After every run: the store opens, chains verify, acknowledged work is there.
        let mut field = Field::open(&data, &passphrase()).expect("the store opens after a kill");
        let ops = field.all_ops().unwrap();
        let report = verify_chains(&ops);
        assert!(report.is_clean(), "chain faults after kill {kills}: {:?}", report.faults);
        let view = field.visit(&visit).unwrap();
        for text in &acked_notes {
            assert!(view.notes.iter().any(|n| &n.text == text), "acknowledged note {text} lost");
        }
        for (ind, v) in &acked_answers {
            let held = view.answers.get(ind).map(|x| x.to_string()).unwrap_or_default();
            // The last acknowledged value, or a later attempt that was killed after committing.
            assert!(&held == v || tried_answers[ind].contains(&held), "{ind}: acknowledged {v}, store has {held}");
        }
        assert!(view.evidence.len() >= acked_attachments, "acknowledged evidence lost");
        // Each stored file once (attachments of the same photo cite the same file), and
        // only after a command that could have written one: decrypting and hashing
        // megabytes after every kill would be most of the test's time.
        if writes_files {
            let cited: BTreeSet<(&str, u64)> = view.evidence.iter().map(|e| (e.sha256.as_str(), e.size)).collect();
            for (sha256, size) in cited {
                let digest = sha256.parse().unwrap();
                let (actual, stored) = field.blobs().hash_stored(&digest).expect("a cited file is stored");
                assert_eq!((actual, stored), (digest, size), "a cited file is damaged");
            }
        }
        assert!(view.respondents.len() >= acked_respondents, "acknowledged questionnaire lost");
        for v in &acked_visits {
            let shown = field.visit(v).expect("an acknowledged visit is there");
            assert_eq!(shown.status, "draft");
        }
    }
    eprintln!("{kills} kills, {completed} commands completed, typical command at the end {:?}", median(&recent));
    assert!(completed > 10, "the kill schedule never let a command finish");
}

/// The middle of the recent durations.
fn median(recent: &VecDeque<Duration>) -> Duration {
    let mut sorted: Vec<Duration> = recent.iter().copied().collect();
    sorted.sort();
    sorted[sorted.len() / 2]
}
