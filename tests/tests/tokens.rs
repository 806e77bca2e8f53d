//! Tokens against real devices: a token revoked in the middle of a sync stops it with
//! a clear message and loses nothing the device recorded; a token issued for a
//! device's key lets that device in and no other, however the secret was copied.

use rand::SeedableRng;
use serde_json::{json, Value};
use sidak_e2e::harness::*;
use sidak_field::sync::{Progress, SyncError, SyncOptions};
use sidak_server::auth::Role;

/// The id of the token whose secret is `secret`.
fn token_id(server: &Server, secret: &str) -> String {
    server.read(|tx| Ok(sidak_server::auth::principal_for(tx, secret)?.expect("a token with this secret").token_id))
}

/// The device's origin and its own chain, the way [`server_chain`] lists the server's.
fn own_chain(device: &mut Device) -> (String, Vec<(i64, String)>) {
    let me = device.field.identity().unwrap().unwrap().origin;
    (me.to_string(), chain_of(&device.own_ops()))
}

#[test]
fn a_token_revoked_mid_sync_is_refused_at_once_and_nothing_is_lost() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let server = Server::start();
    server.import_registry(&registry(&["jateng"]));
    server.assign("a1", "kota-jateng", "disdukcapil", "penilaian-2023@1");
    server.assign("a1", "kota-jateng", "dinkes", "penilaian-2023@1");
    let mut device = Device::new(&server.state, "a1", "jateng");
    device.sync(&server.url()).unwrap();
    device.record_unit("disdukcapil", 2, 20, &mut rng);
    device.record_unit("dinkes", 1, 0, &mut rng);
    let (origin, recorded) = own_chain(&mut device);
    assert!(recorded.len() > 200, "enough ops for several pushes: {}", recorded.len());

    // The admin revokes the token as soon as the first push has landed.
    let id = token_id(&server, &device.token);
    let mut opts = SyncOptions::new(&server.url(), &device.token);
    opts.batch = 50;
    let mut revoked_after = None;
    let got = device.field.sync(&opts, &mut |p| {
        if let Progress::Pushed(done, _) = p {
            if done > 0 && revoked_after.is_none() {
                server.state.db().write_blocking(|tx| sidak_server::auth::revoke_token(tx, &id, now())).unwrap();
                revoked_after = Some(done);
            }
        }
    });
    let pushed = revoked_after.expect("the sync pushed a first batch");
    match got {
        Err(SyncError::Refused(message)) => {
            assert!(message.contains("revoked"), "the device is told its token was revoked: {message}")
        }
        other => panic!("a revoked token stops the sync: {other:?}"),
    }
    let held = server_chain(&server, &origin);
    assert!(
        !held.is_empty() && held.len() < recorded.len(),
        "the server holds what was pushed before the revocation ({pushed} ops acknowledged) and no more: {}",
        held.len()
    );
    assert_eq!(held[..], recorded[..held.len()], "what the server holds is the device's chain, unaltered");
    let status = device.field.status().unwrap();
    assert_eq!(status.unsent_ops as usize, recorded.len() - held.len(), "the rest is still unsent on the device");
    assert_eq!(own_chain(&mut device).1, recorded, "the device lost nothing");

    // The revoked secret is refused on every later sync, with the same message.
    let again = device.sync(&server.url()).unwrap_err();
    assert!(matches!(&again, SyncError::Refused(m) if m.contains("revoked")), "{again}");

    // With a new token the same device finishes: every op once, none twice.
    device.token = server.token(Role::Assessor, Some("jateng"), Some("a1"));
    let s = device.sync(&server.url()).unwrap();
    assert!(s.complete && s.quarantined.is_empty(), "{s:?}");
    assert_eq!(server_chain(&server, &origin), recorded, "every recorded op arrived exactly once");
    assert_eq!(device.field.status().unwrap().unsent_ops, 0);
}

#[test]
fn a_token_issued_for_a_device_key_lets_only_that_device_in() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(8);
    let server = Server::start();
    server.import_registry(&registry(&["jateng"]));
    server.assign("a1", "kota-jateng", "disdukcapil", "penilaian-2023@1");
    let mut phone = Device::new(&server.state, "a1", "jateng");
    let key = phone.field.device_key().unwrap().to_hex();

    // `sidak-field init` and `status` show the key the admin issues the token for.
    let shown = sidak_field::commands::status(&mut phone.field).unwrap();
    assert_eq!(shown.json["device_key"], json!(key));
    assert!(shown.human.contains(&key), "{}", shown.human);

    let made = server_run(
        server.dir(),
        &["token", "create", "--role", "assessor", "--region", "jateng", "--assessor", "a1", "--device-key", &key],
    );
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let secret = String::from_utf8(made.stdout).unwrap().trim().to_owned();
    let listed: Value = serde_json::from_slice(&server_run(server.dir(), &["token", "list", "--json"]).stdout)
        .expect("token list --json");
    let issued = listed["tokens"].as_array().unwrap().iter().find(|t| t["device_keys"] == json!([key])).cloned();
    let issued = issued.expect("the token is listed with its device key");

    // The phone syncs with it.
    phone.token = secret.clone();
    phone.sync(&server.url()).unwrap();
    phone.record_unit("disdukcapil", 2, 5, &mut rng);
    let s = phone.sync(&server.url()).unwrap();
    assert!(s.complete && s.quarantined.is_empty(), "{s:?}");

    // Another device with a copy of the secret is refused and nothing of it is stored.
    let mut other = Device::new(&server.state, "a1", "jateng");
    other.token = secret;
    let (other_origin, other_ops) = own_chain(&mut other);
    let err = other.sync(&server.url()).unwrap_err();
    match &err {
        SyncError::Refused(m) => {
            assert!(m.contains("not one this token") && m.contains(&issued["id"].as_str().unwrap().to_owned()), "{m}")
        }
        e => panic!("another device's key is refused: {e}"),
    }
    assert!(server_chain(&server, &other_origin).is_empty(), "nothing of the other device is stored");
    assert_eq!(own_chain(&mut other).1, other_ops, "and it keeps all it holds");
    // A token issued without keys trusts the first key each new device registers.
    other.token = server.token(Role::Assessor, Some("jateng"), Some("a1"));
    assert!(other.sync(&server.url()).unwrap().complete);

    // Rotation keeps the keys; keys are for assessor tokens and must be keys.
    let rotated = server_run(server.dir(), &["token", "rotate", issued["id"].as_str().unwrap()]);
    assert!(rotated.status.success(), "{}", String::from_utf8_lossy(&rotated.stderr));
    let listed: Value = serde_json::from_slice(&server_run(server.dir(), &["token", "list", "--json"]).stdout).unwrap();
    let keyed = listed["tokens"].as_array().unwrap().iter().filter(|t| t["device_keys"] == json!([key])).count();
    assert_eq!(keyed, 2, "the rotated token and its successor are both issued for the phone: {listed}");
    for (args, says) in [
        (vec!["--role", "assessor", "--region", "jateng", "--assessor", "a1", "--device-key", "zz"], "device key `zz`"),
        (vec!["--role", "supervisor", "--region", "jateng", "--device-key", key.as_str()], "only assessor tokens"),
    ] {
        let before = listed["tokens"].as_array().unwrap().len();
        let out = server_run(server.dir(), &[&["token", "create"][..], &args].concat());
        assert!(!out.status.success(), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(says), "{}", String::from_utf8_lossy(&out.stderr));
        let now: Value =
            serde_json::from_slice(&server_run(server.dir(), &["token", "list", "--json"]).stdout).unwrap();
        assert_eq!(now["tokens"].as_array().unwrap().len(), before, "a refused create makes no token");
    }

    // Over HTTP, the same.
    let admin = server.token(Role::Admin, None, None);
    let http = reqwest::blocking::Client::new();
    let post = |body: Value| {
        let r = http.post(format!("{}/v1/admin/tokens", server.url())).bearer_auth(&admin).json(&body).send().unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap())
    };
    let (status, body) = post(json!({"role": "assessor", "region": "jateng", "assessor": "a1", "device_keys": [key]}));
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["token"]["device_keys"], json!([key]));
    let (status, body) = post(json!({"role": "assessor", "region": "jateng", "assessor": "a1", "device_keys": ["00"]}));
    assert_eq!((status, body["code"].as_str()), (422, Some("invalid_body")), "{body}");
}
