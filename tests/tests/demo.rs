//! `sidak-server demo`, the README's first command: it simulates a season through the
//! real field library and server, prints what it did, a results table, the dashboard
//! URL and a token, and (with --no-serve) exits cleanly.

use std::process::Command;

use sidak_e2e::harness::binary;

#[test]
fn the_demo_simulates_a_season_and_prints_the_dashboard() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let run = || {
        Command::new(binary("sidak-server"))
            .args(["demo", "--no-serve", "--listen", "127.0.0.1:0", "--dir"])
            .arg(&dir)
            .output()
            .expect("sidak-server demo runs")
    };
    let out = run();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    for expected in [
        "registry: 4 regions, 11 institutions",
        "1 conflict(s) listed for a supervisor",
        "sync(s) broke off and resumed",
        "kota-magelang",
        "kab-maros",
        "incomplete",
        "/dashboard?token=sdk_",
    ] {
        assert!(text.contains(expected), "the demo output lacks `{expected}`:\n{text}");
    }
    // Every grade band is represented in the demo season.
    for zone in ["green", "yellow", "red"] {
        assert!(text.contains(zone), "no {zone} institution:\n{text}");
    }
    // Run again: the demo replaces its own earlier season, and gives the same figures.
    let again = run();
    assert!(again.status.success());
    let table = |t: &str| {
        t.lines()
            .filter(|l| l.contains("kota-") || l.contains("kab-") || l.contains("prov-"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(table(&String::from_utf8_lossy(&again.stdout)), table(&text), "the same seed gives the same season");
    // It refuses a directory holding another server's store.
    let other = tmp.path().join("other");
    std::fs::create_dir_all(other.join("server")).unwrap();
    sidak_server::state::AppState::open(&other.join("server"), sidak_server::state::system_clock()).unwrap();
    let out = Command::new(binary("sidak-server"))
        .args(["demo", "--no-serve", "--listen", "127.0.0.1:0", "--dir"])
        .arg(&other)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
}
