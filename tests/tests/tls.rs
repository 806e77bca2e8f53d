//! TLS: the server terminates HTTPS itself (rustls, PEM certificate and key), the field
//! client verifies the certificate — against an office's own CA when given one with
//! `--ca-file`, and refuses an untrusted server at once, without retrying and without
//! any switch to accept it. `sidak-server serve --tls-cert/--tls-key` prints https.

use std::io::BufRead;
use std::process::{Command, Stdio};

use rand::SeedableRng;
use sidak_e2e::harness::*;
use sidak_field::sync::{SyncError, SyncOptions};

/// An office CA and a certificate it issued for localhost and 127.0.0.1.
struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn pki(name: &str) -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name.push(rcgen::DnType::CommonName, format!("{name} CA"));
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let cert = leaf.signed_by(&key, &ca_cert, &ca_key).unwrap();
    Pki { ca_pem: ca_cert.pem(), cert_pem: cert.pem(), key_pem: key.serialize_pem() }
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn devices_sync_over_verified_tls_and_refuse_untrusted_servers() {
    let tmp = tempfile::tempdir().unwrap();
    let office = pki("Perwakilan Jawa Tengah");
    let cert = write(tmp.path(), "server.pem", &office.cert_pem);
    let key = write(tmp.path(), "server.key", &office.key_pem);
    let ca = write(tmp.path(), "office-ca.pem", &office.ca_pem);
    let config = sidak_server::tls::server_config(&cert, &key).expect("a TLS configuration");
    let server = Server::start_tls(config);
    assert!(server.url().starts_with("https://"));
    server.import_registry(&registry(&["jateng"]));
    server.assign("a1", "kota-jateng", "disdukcapil", "penilaian-2023@1");

    // Trusting the office CA: a full day syncs.
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut device = Device::new(&server.state, "a1", "jateng");
    let mut opts = SyncOptions::new(&server.url(), &device.token);
    opts.ca_file = Some(ca);
    device.sync_with(&opts).expect("the morning sync over TLS");
    device.record_unit("disdukcapil", 2, 0, &mut rng);
    let s = device.sync_with(&opts).expect("the evening sync over TLS");
    assert!(s.complete && s.unsent_ops == 0 && s.unsent_files == 0, "{s:?}");

    // Without it, or with another office's CA: refused at once, nothing sent.
    let visit = device.field.visits(false).unwrap()[0].id.to_string();
    device.field.note(&visit, "catatan", None).unwrap();
    let waiting = device.field.status().unwrap().unsent_ops;
    assert!(waiting > 0);
    let stranger = pki("Another office");
    let other_ca = write(tmp.path(), "other-ca.pem", &stranger.ca_pem);
    for ca_file in [None, Some(other_ca)] {
        let mut o = SyncOptions::new(&server.url(), &device.token);
        o.ca_file = ca_file.clone();
        o.retry_for = std::time::Duration::from_secs(60);
        let started = std::time::Instant::now();
        match device.sync_with(&o) {
            Err(SyncError::Refused(m)) => assert!(m.contains("certificate"), "{m}"),
            other => panic!("{ca_file:?}: an untrusted server must be refused: {other:?}"),
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "no retrying an untrusted certificate");
        assert_eq!(device.field.status().unwrap().unsent_ops, waiting, "the note still waits");
    }
    // A bad CA file is a clear local error.
    let junk = write(tmp.path(), "junk.pem", "not a certificate");
    let mut o = SyncOptions::new(&server.url(), &device.token);
    o.ca_file = Some(junk);
    assert!(matches!(device.sync_with(&o), Err(SyncError::Local(_))));
    // Plain HTTP to the TLS port gets nowhere.
    let plain =
        reqwest::blocking::Client::new().get(format!("http://127.0.0.1:{}/v1/health", server.addr.port())).send();
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));
}

#[test]
fn serve_terminates_tls_from_pem_files() {
    let tmp = tempfile::tempdir().unwrap();
    let office = pki("Pusat");
    let cert = write(tmp.path(), "server.pem", &office.cert_pem);
    let key = write(tmp.path(), "server.key", &office.key_pem);
    let mut child = Command::new(binary("sidak-server"))
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .args(["serve", "--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    let port = loop {
        let line = lines.next().expect("the server prints where it listens").unwrap();
        if let Some(rest) = line.strip_prefix("sidak-server listening on https://") {
            break rest.split_whitespace().next().unwrap().rsplit(':').next().unwrap().parse::<u16>().unwrap();
        }
    };
    let ca = reqwest::Certificate::from_pem(office.ca_pem.as_bytes()).unwrap();
    let client = reqwest::blocking::Client::builder().add_root_certificate(ca).build().unwrap();
    let health: serde_json::Value =
        client.get(format!("https://localhost:{port}/v1/health")).send().unwrap().json().unwrap();
    assert_eq!(health["status"], "ok");
    let _ = child.kill();
    let _ = child.wait();
    // A key that is not a key is refused with exit 3 and a message naming the file.
    let bad = write(tmp.path(), "bad.key", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
    let out = Command::new(binary("sidak-server"))
        .arg("--data-dir")
        .arg(tmp.path().join("data2"))
        .args(["serve", "--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&cert)
        .arg("--tls-key")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bad.key")
            || String::from_utf8_lossy(&out.stderr).contains("fit")
    );
}

#[test]
fn a_region_replicates_to_a_centre_over_verified_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let pusat = pki("Pusat");
    let cert = write(tmp.path(), "server.pem", &pusat.cert_pem);
    let key = write(tmp.path(), "server.key", &pusat.key_pem);
    let ca = write(tmp.path(), "pusat-ca.pem", &pusat.ca_pem);
    let centre = Server::start_tls(sidak_server::tls::server_config(&cert, &key).unwrap());
    centre.import_registry(&registry(&["jateng"]));
    let region = Server::start();
    let peer = centre.token(sidak_server::auth::Role::Peer, Some("jateng"), None);
    let mut cfg = sidak_server::upstream::UpstreamConfig::new(&centre.url(), &peer);
    match sidak_server::upstream::replicate_once(&region.state, &cfg) {
        Err(sidak_server::upstream::ReplicationError::Network(m))
        | Err(sidak_server::upstream::ReplicationError::Refused(m)) => {
            assert!(m.contains("certificate") || m.contains("error sending request"), "{m}")
        }
        other => panic!("an untrusted centre must be refused: {other:?}"),
    }
    cfg.ca_file = Some(ca);
    let r = sidak_server::upstream::replicate_once(&region.state, &cfg).expect("replicates over TLS");
    assert!(r.pulled > 0 && r.caught_up, "{r:?}");
}
