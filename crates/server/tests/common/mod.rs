//! Shared fixtures for server tests: a store with a registry, tokens of every role,
//! a device that writes valid ops, and requests through the router without a socket.

#![allow(dead_code, unreachable_pub)]

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use sidak_core::hash::Sha256Digest;
use sidak_core::hlc::Hlc;
use sidak_core::ids::{EntityId, OriginId};
use sidak_core::op::{Op, OpRef};
use sidak_core::records::{EntityKind, EntityRef};
use sidak_server::admin;
use sidak_server::auth::{create_token, NewToken, Role};
use sidak_server::state::AppState;
use tower::ServiceExt;

pub const REGISTRY: &str =
    "institution_code,institution_name,institution_type,region,unit_code,unit_name,unit_type,product_code,product_name
kota-sukamaju,Pemerintah Kota Sukamaju,kota,jateng,disdukcapil,Disdukcapil,disdukcapil,ktp-el,KTP elektronik
kota-sukamaju,Pemerintah Kota Sukamaju,kota,jateng,disdukcapil,Disdukcapil,disdukcapil,akta-lahir,Akta kelahiran
kota-sukamaju,Pemerintah Kota Sukamaju,kota,jateng,dpmptsp,DPMPTSP,dpmptsp,pbg,Persetujuan bangunan gedung
kab-mamuju,Pemerintah Kabupaten Mamuju,kabupaten,sulbar,disdukcapil,Disdukcapil,disdukcapil,ktp-el,KTP elektronik
";

/// A server with a registry, assignments and a token of every kind.
pub struct Harness {
    pub _dir: tempfile::TempDir,
    pub state: AppState,
    pub router: Router,
    pub routes: Vec<(Method, &'static str)>,
    pub admin: String,
    pub supervisor: String,
    pub peer: String,
    pub assessor: String,
    pub other_assessor: String,
    pub other_supervisor: String,
    pub other_region_assessor: String,
    pub clock: Arc<AtomicI64>,
}

pub const T0: i64 = 1_790_000_000_000;

impl Harness {
    pub fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(AtomicI64::new(T0));
        let c = clock.clone();
        let state = AppState::open(dir.path(), Arc::new(move || c.load(Ordering::SeqCst))).unwrap();
        let token = |role, region: Option<&str>, assessor: Option<&str>| {
            state
                .db()
                .write_blocking(|tx| {
                    create_token(
                        tx,
                        &NewToken {
                            role,
                            region: region.map(str::to_owned),
                            assessor: assessor.map(str::to_owned),
                            label: None,
                            device_keys: Vec::new(),
                        },
                        T0,
                    )
                })
                .unwrap()
                .1
        };
        let admin = token(Role::Admin, None, None);
        let supervisor = token(Role::Supervisor, Some("jateng"), None);
        let peer = token(Role::Peer, Some("jateng"), None);
        let assessor = token(Role::Assessor, Some("jateng"), Some("a1"));
        let other_assessor = token(Role::Assessor, Some("jateng"), Some("a2"));
        let other_supervisor = token(Role::Supervisor, Some("sulbar"), None);
        let other_region_assessor = token(Role::Assessor, Some("sulbar"), Some("b1"));
        let rows = admin::parse_registry(REGISTRY).unwrap();
        let instruments = state.instruments();
        state.db().write_blocking(|tx| admin::import_registry(tx, &instruments, &rows, T0).map(|_| ())).unwrap();
        for (assessor, inst, unit) in [
            ("a1", "kota-sukamaju", "disdukcapil"),
            ("a2", "kota-sukamaju", "dpmptsp"),
            ("b1", "kab-mamuju", "disdukcapil"),
        ] {
            let new = admin::NewAssignment {
                assessor: assessor.into(),
                institution: inst.into(),
                unit: unit.into(),
                products: vec![],
                instrument: "penilaian-2023@1".into(),
                mode: "covert".into(),
                due: None,
            };
            state.db().write_blocking(|tx| admin::create_assignment(tx, &instruments, &new, T0).map(|_| ())).unwrap();
        }
        let (router, routes) = sidak_server::api::app(state.clone());
        Harness {
            _dir: dir,
            state,
            router,
            routes,
            admin,
            supervisor,
            peer,
            assessor,
            other_assessor,
            other_supervisor,
            other_region_assessor,
            clock,
        }
    }

    /// Sends a request through the router; returns (status, JSON body or text).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req.header("content-type", "application/json").body(Body::from(b.to_string())).unwrap(),
            None => req.body(Body::empty()).unwrap(),
        };
        self.send(req).await
    }

    pub async fn send(&self, req: Request<Body>) -> (StatusCode, Value) {
        let (status, _, value) = self.send_for_headers(req).await;
        (status, value)
    }

    /// [`Harness::send`], with the answer's headers.
    pub async fn send_for_headers(&self, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Value) {
        let response = self.router.clone().oneshot(req).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, headers, value)
    }

    /// The registry id of a record by kind and code.
    pub fn id_of(&self, kind: &str, code: &str) -> String {
        self.state
            .db()
            .read_blocking(|tx| {
                tx.query_row(
                    "SELECT entity FROM fields WHERE kind = ?1 AND field = 'code' AND value = json_quote(?2) AND field NOT GLOB 'answer.*'",
                    [kind, code],
                    |r| r.get::<_, String>(0),
                )
                .map_err(sidak_server::error::ApiError::from)
            })
            .unwrap()
    }

    /// A fingerprint of everything stored (to prove a refused request changed nothing).
    pub fn fingerprint(&self) -> String {
        self.state
            .db()
            .read_blocking(|tx| {
                let mut out = String::new();
                for table in [
                    "ops",
                    "origins",
                    "quarantine",
                    "fields",
                    "entities",
                    "instruments",
                    "blobs",
                    "results",
                    "rejections",
                ] {
                    let n: i64 = tx.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))?;
                    out.push_str(&format!("{table}={n};"));
                }
                let last: Option<String> = tx.query_row(
                    "SELECT group_concat(hash) FROM (SELECT hash FROM ops ORDER BY server_seq)",
                    [],
                    |r| r.get(0),
                )?;
                out.push_str(&last.unwrap_or_default());
                let results: Option<String> = tx.query_row(
                    "SELECT group_concat(document) FROM (SELECT document FROM results ORDER BY kind, entity)",
                    [],
                    |r| r.get(0),
                )?;
                out.push_str(&sidak_core::hash::sha256_hex(results.unwrap_or_default().as_bytes()));
                Ok::<_, sidak_server::error::ApiError>(out)
            })
            .unwrap()
    }
}

/// A field device writing valid ops.
pub struct Device {
    pub origin: OriginId,
    pub seq: u64,
    pub prev: Sha256Digest,
    pub ms: u64,
    pub ops: Vec<Op>,
}

impl Device {
    /// A device registered to `assessor` in `region` (its first two ops).
    pub fn new(n: u8, assessor: &str, region: &str) -> Device {
        let mut d = Device {
            origin: OriginId(uuid::Uuid::from_bytes([n; 16])),
            seq: 0,
            prev: Sha256Digest::ZERO,
            ms: T0 as u64,
            ops: Vec::new(),
        };
        let me = EntityRef { kind: EntityKind::Device, id: EntityId(d.origin.0) };
        d.write(me, "assessor", json!(assessor), None);
        d.write(me, "region", json!(region), None);
        d
    }

    pub fn write(&mut self, entity: EntityRef, field: &str, value: Value, parent: Option<OpRef>) -> Op {
        self.seq += 1;
        self.ms += 1000;
        let op = Op::new(
            self.origin,
            self.seq,
            Hlc { ms: self.ms, c: 0 },
            self.ms as i64,
            entity,
            field,
            value,
            parent,
            self.prev,
        );
        self.prev = op.hash;
        self.ops.push(op.clone());
        op
    }

    /// A submitted visit with every product and unit observation answered with `value`.
    pub fn visit(&mut self, h: &Harness, institution: &str, unit: &str, product: &str, value: i64) -> EntityRef {
        let visit = EntityRef { kind: EntityKind::Visit, id: EntityId(uuid::Uuid::now_v7()) };
        let inst = h.id_of("institution", institution);
        let unit_id = unit_id(h, &inst, unit);
        let product_id = product_id(h, &unit_id, product);
        self.write(visit, "instrument", json!({"id": "penilaian-2023", "version": 1}), None);
        self.write(visit, "institution", json!(inst), None);
        self.write(visit, "unit", json!(unit_id), None);
        self.write(visit, "product", json!(product_id), None);
        self.write(visit, "mode", json!("covert"), None);
        self.write(visit, "location", json!("mpp"), None);
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
            self.write(visit, &format!("answer.proses.{ind}"), json!(value), None);
        }
        self.write(visit, "answer.pengaduan.kanal-aktif", json!(value), None);
        self.write(visit, "finished_at", json!(self.ms), None);
        self.write(visit, "status", json!("submitted"), None);
        visit
    }

    /// Ops from `from` (0-based index into everything written).
    pub fn batch(&self, from: usize) -> Value {
        json!({"ops": self.ops[from..]})
    }
}

pub fn unit_id(h: &Harness, institution: &str, code: &str) -> String {
    h.state
        .db()
        .read_blocking(|tx| {
            tx.query_row(
                "SELECT c.entity FROM fields c JOIN fields p ON p.entity = c.entity AND p.field = 'institution' AND p.value = json_quote(?1) WHERE c.kind = 'unit' AND c.field = 'code' AND c.value = json_quote(?2) AND c.field NOT GLOB 'answer.*'",
                [institution, code],
                |r| r.get::<_, String>(0),
            )
            .map_err(sidak_server::error::ApiError::from)
        })
        .unwrap()
}

pub fn product_id(h: &Harness, unit: &str, code: &str) -> String {
    h.state
        .db()
        .read_blocking(|tx| {
            tx.query_row(
                "SELECT c.entity FROM fields c JOIN fields p ON p.entity = c.entity AND p.field = 'unit' AND p.value = json_quote(?1) WHERE c.kind = 'product' AND c.field = 'code' AND c.value = json_quote(?2) AND c.field NOT GLOB 'answer.*'",
                [unit, code],
                |r| r.get::<_, String>(0),
            )
            .map_err(sidak_server::error::ApiError::from)
        })
        .unwrap()
}

/// Runs the real `sidak-server` binary on the harness's store, as the login
/// `operator-7` (the name the audit log records for the command line).
pub fn server_cli(h: &Harness, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_sidak-server"))
        .arg("--data-dir")
        .arg(h._dir.path())
        .args(args)
        .env_remove("SIDAK_DATA_DIR")
        .env("USER", "operator-7")
        .output()
        .expect("runs")
}

/// A command's standard output.
pub fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A command's standard error.
pub fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts a command succeeded and hands its output on.
pub fn ok(o: std::process::Output) -> std::process::Output {
    assert!(o.status.success(), "exit {:?}: {}", o.status.code(), stderr(&o));
    o
}
