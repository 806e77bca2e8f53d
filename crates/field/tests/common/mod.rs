//! Shared fixtures for the field client's tests: an assignment list like the one a
//! server serves, and a runner for the real `sidak-field` binary.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

/// The passphrase every test store is encrypted under (given in SIDAK_PASSPHRASE).
pub const PASSPHRASE: &str = "test passphrase, not a secret";
pub const ASSESSOR: &str = "asr-jateng-01";
pub const REGION: &str = "jawa-tengah";
pub const A_DUKCAPIL: &str = "0190a000-0000-7000-8000-00000000a001";
pub const A_DPMPTSP: &str = "0190a000-0000-7000-8000-00000000a002";

/// Two assignments in Kota Sukamaju: Disdukcapil (two products) and DPMPTSP (one).
pub fn assignments() -> Value {
    let inst = json!({"id": "0190a000-0000-7000-8000-000000000010", "code": "kota-sukamaju", "name": "Pemerintah Kota Sukamaju", "type": "kota", "region": REGION});
    json!({"assignments": [
        {"id": A_DUKCAPIL, "assessor": ASSESSOR, "institution": inst,
         "unit": {"id": "0190a000-0000-7000-8000-000000000011", "code": "sukamaju-disdukcapil", "name": "Dinas Kependudukan dan Pencatatan Sipil", "type": "disdukcapil"},
         "products": [
            {"id": "0190a000-0000-7000-8000-000000000012", "code": "ktp-el", "name": "KTP elektronik"},
            {"id": "0190a000-0000-7000-8000-000000000013", "code": "akta-lahir", "name": "Akta kelahiran"}],
         "instrument": {"id": "penilaian-2023", "version": 1}, "mode": "covert", "status": "active"},
        {"id": A_DPMPTSP, "assessor": ASSESSOR, "institution": inst,
         "unit": {"id": "0190a000-0000-7000-8000-000000000021", "code": "sukamaju-dpmptsp", "name": "Dinas Penanaman Modal dan PTSP", "type": "dpmptsp"},
         "products": [{"id": "0190a000-0000-7000-8000-000000000022", "code": "pbg", "name": "Persetujuan bangunan gedung"}],
         "instrument": {"id": "penilaian-2023", "version": 1}, "mode": "announced", "status": "active"}
    ]})
}

/// The test passphrase, for opening a store in this process.
pub fn passphrase() -> sidak_field::Passphrase {
    sidak_field::Passphrase::new(PASSPHRASE)
}

/// Runs `sidak-field --data-dir <dir> <args>` with SIDAK_PASSPHRASE set.
pub struct Cli {
    pub dir: PathBuf,
}

impl Cli {
    pub fn new(dir: &Path) -> Cli {
        Cli { dir: dir.to_owned() }
    }

    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_sidak-field"))
            .env("SIDAK_PASSPHRASE", PASSPHRASE)
            .arg("--data-dir")
            .arg(&self.dir)
            .args(args)
            .output()
            .expect("sidak-field runs")
    }

    /// Runs and expects success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "sidak-field {args:?} failed ({:?}): {}",
            o.status.code(),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// Runs with --json and expects success.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).unwrap()
    }

    /// Runs and expects the exit code; returns stderr.
    pub fn fails(&self, args: &[&str], code: i32) -> String {
        let o = self.run(args);
        assert_eq!(o.status.code(), Some(code), "sidak-field {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        assert!(o.stdout.is_empty(), "a failed command printed output");
        String::from_utf8(o.stderr).unwrap()
    }
}

/// The random source of a kill test: seeded from `SIDAK_CRASH_SEED` to replay a
/// failure, else at random; the seed is printed either way.
pub fn crash_rng(what: &str) -> rand::rngs::StdRng {
    use rand::{Rng, SeedableRng};
    let seed: u64 =
        std::env::var("SIDAK_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| rand::thread_rng().gen());
    eprintln!("{what} seed {seed} (set SIDAK_CRASH_SEED to replay)");
    rand::rngs::StdRng::seed_from_u64(seed)
}
