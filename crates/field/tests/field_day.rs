//! A scripted day of fieldwork through the real CLI, in a temporary directory: set up,
//! load, record a covert visit with answers, questionnaires, notes and photos, see the
//! provisional score, submit, edit after submission, and get clear errors for bad input.

mod common;

use common::*;
use serde_json::Value;

#[test]
fn a_day_of_fieldwork() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cli = Cli::new(&data);
    let files = tmp.path().join("in");
    std::fs::create_dir_all(&files).unwrap();
    let list = files.join("assignments.json");
    std::fs::write(&list, assignments().to_string()).unwrap();

    // Before set-up, commands say what to do.
    assert!(cli.fails(&["status"], 4).contains("sidak-field init"));
    // The cheapest key derivation: a hundred commands each derive the key once.
    cli.ok(&["init", "--assessor", ASSESSOR, "--region", REGION, "--kdf-memory-mib", "8"]);
    cli.ok(&["init", "--assessor", ASSESSOR, "--region", REGION]); // repeatable
    assert!(cli.fails(&["init", "--assessor", "someone-else", "--region", REGION], 3).contains("already set up"));
    cli.ok(&["instrument", "load", "penilaian-2023"]);
    cli.ok(&["assignments", "load", list.to_str().unwrap()]);
    let listed = cli.ok(&["assignments"]);
    assert!(!listed.contains("Disdukcapil") && !listed.contains("Kependudukan"), "names hidden by default: {listed}");
    assert!(cli.ok(&["assignments", "--reveal"]).contains("Kependudukan"));

    // A covert visit to Disdukcapil about KTP-el, served at the MPP.
    let started = cli.json(&["visit", "start", "--assignment", A_DUKCAPIL, "--product", "ktp-el", "--location", "mpp"]);
    let visit = started["visit"].as_str().unwrap().to_owned();
    let v = &visit[visit.len() - 8..];
    let photo = files.join("IMG_20230801_disdukcapil_loket.jpg");
    std::fs::write(&photo, vec![0xffu8; 300_000]).unwrap();
    let proses = [
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
    ];
    for (i, p) in proses.iter().enumerate() {
        let ind = format!("proses.{p}");
        cli.ok(&["visit", "answer", v, &ind, &((i % 4).min(3)).to_string()]);
        cli.ok(&["visit", "attach", v, photo.to_str().unwrap(), "--indicator", &ind]);
    }
    cli.ok(&["visit", "answer", v, "pengaduan.kanal-aktif", "3"]);
    cli.ok(&["visit", "attach", v, photo.to_str().unwrap(), "--indicator", "pengaduan.kanal-aktif"]);
    cli.ok(&[
        "visit",
        "note",
        v,
        "Antrean panjang, papan informasi biaya tidak terlihat",
        "--indicator",
        "proses.biaya-tarif",
    ]);
    for n in 0..4 {
        let r = cli.json(&["respondent", "add", v, "--kind", "official", "--role", &format!("pejabat {n}")]);
        let r = r["respondent"].as_str().unwrap().to_owned();
        for ind in [
            "pengetahuan-standar",
            "pengetahuan-tugas",
            "pengetahuan-ombudsman",
            "pengetahuan-maladministrasi",
            "pengetahuan-rekomendasi",
            "pengetahuan-kelompok-rentan",
            "pengawasan-internal",
            "jumlah-pelaksana",
            "jaminan-pelayanan",
            "jaminan-keamanan",
            "evaluasi-kinerja",
            "dasar-hukum",
            "sarana-pengguna",
            "sarana-berkebutuhan-khusus",
            "penyuluhan",
        ] {
            cli.ok(&["respondent", "answer", &r, &format!("input.{ind}"), "2"]);
        }
    }
    for _ in 0..2 {
        let r = cli.json(&["respondent", "add", v, "--kind", "complaint-officer"]);
        let r = r["respondent"].as_str().unwrap().to_owned();
        for ind in ["pengelolaan", "pembinaan-pengelola", "kecepatan-penyelesaian"] {
            cli.ok(&["respondent", "answer", &r, &format!("pengaduan.{ind}"), "3"]);
        }
    }

    // The provisional score: the product is complete; the unit waits for the 30
    // service users sampled per institution.
    let shown = cli.json(&["visit", "show", v]);
    assert_eq!(shown["provisional"]["product"]["status"], "complete", "{shown:#}");
    assert_eq!(shown["provisional"]["unit"]["status"], "incomplete");
    assert!(shown["provisional"]["unit"]["provisional"].is_string());
    assert_eq!(shown["evidence"].as_array().unwrap().len(), 13);
    assert_eq!(shown["respondents"].as_array().unwrap().len(), 6);
    assert!(shown["institution"].get("name").is_none(), "names hidden unless revealed");
    let text = cli.ok(&["visit", "show", v]);
    assert!(text.contains("provisional score: product"), "{text}");
    assert!(!text.contains("Kependudukan"));

    // Submit; an edit afterwards is kept and flagged.
    cli.ok(&["visit", "finish", v]);
    assert!(cli.fails(&["visit", "finish", v], 3).contains("already submitted"));
    let edit = cli.json(&["visit", "answer", v, "proses.moto", "3"]);
    assert_eq!(edit["post_submission"], Value::Bool(true));
    let shown = cli.json(&["visit", "show", v]);
    assert_eq!(shown["status"], "submitted");
    assert_eq!(shown["post_submission_edits"], serde_json::json!(["answer.proses.moto"]));

    // Bad input: a clear error, exit 3 or 4, and nothing written.
    let head = |cli: &Cli| cli.json(&["status"])["head_seq"].as_u64().unwrap();
    let before = head(&cli);
    assert!(cli
        .fails(&["visit", "answer", v, "proses.persyaratan", "4"], 3)
        .contains("takes a whole number from 0 to 3, found 4"));
    assert!(cli
        .fails(&["visit", "answer", v, "proses.persyaratan", "banyak"], 3)
        .contains("takes a whole number from 0 to 3"));
    assert!(cli
        .fails(&["visit", "answer", v, "proses.tidak-ada", "1"], 3)
        .contains("has no indicator `proses.tidak-ada`"));
    assert!(cli.fails(&["visit", "answer", v, "output.permintaan-imbalan", "1"], 3).contains("questionnaires"));
    assert!(cli.fails(&["visit", "answer", v, "proses.persyaratan", "na"], 3).contains("does not allow"));
    assert!(cli.fails(&["visit", "answer", "ffffffff", "proses.persyaratan", "1"], 4).contains("no visit matches"));
    assert!(cli.fails(&["visit", "attach", v, "/no/such/photo.jpg"], 4).contains("cannot read"));
    assert!(cli.fails(&["visit", "start", "--assignment", A_DUKCAPIL, "--location", "mpp"], 3).contains("--product"));
    // A service user met during the visit: counted at institution level.
    cli.ok(&["respondent", "add", v, "--kind", "service-user"]);
    assert_eq!(head(&cli), before + 2, "only the service-user questionnaire (2 ops) was written");

    // A second, announced visit to DPMPTSP.
    let second = cli.json(&["visit", "start", "--assignment", A_DPMPTSP, "--location", "dpmptsp"]);
    let second = second["visit"].as_str().unwrap().to_owned();
    cli.ok(&["visit", "answer", &second, "proses.persyaratan", "3"]);

    let listed = cli.ok(&["visit", "list"]);
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(!listed.contains("Sukamaju") && !listed.contains("PTSP"), "{listed}");
    assert!(cli.ok(&["visit", "list", "--reveal"]).contains("Dinas Penanaman Modal"));

    let status = cli.json(&["status"]);
    assert_eq!(status["unsent_ops"], status["head_seq"]);
    assert_eq!(status["unsent_files"], 1, "one photo, stored once however often cited");
    assert_eq!(status["visits"]["submitted"], 1);
    assert_eq!(status["visits"]["draft"], 1);
    assert!(status["last_sync"].is_null());

    // Nothing under the data directory is named after what was assessed.
    for entry in walk(&data) {
        let name = entry.to_string_lossy().to_lowercase();
        for word in ["sukamaju", "dukcapil", "ktp", "dpmptsp", "img_", ".jpg"] {
            assert!(!name.contains(word), "{name} reveals `{word}`");
        }
    }

    // The chain verifies.
    let mut field = sidak_field::Field::open(&data, &passphrase()).unwrap();
    let ops = field.all_ops().unwrap();
    assert!(sidak_core::chain::verify_chains(&ops).is_clean());
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        out.push(p.strip_prefix(dir).unwrap().to_owned());
        if p.is_dir() {
            out.extend(walk(&p).into_iter().map(|c| p.strip_prefix(dir).unwrap().join(c)));
        }
    }
    out
}
