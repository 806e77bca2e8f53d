//! Real servers and field devices on loopback: an in-process server (its store open to
//! the test for inspection), a server as a child process (for SIGKILL), and devices
//! that record visits through the field library and sync through its client.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use rand::Rng;
use serde_json::{json, Value};
use sidak_core::instrument::{Location, RespondentKind};
use sidak_field::app::StartVisit;
use sidak_field::sync::{SyncOptions, SyncSummary};
use sidak_field::Field;
use sidak_server::admin;
use sidak_server::auth::{create_token, NewToken, Role};
use sidak_server::error::ApiError;
use sidak_server::state::{system_clock, AppState};

/// A sidak-server running in this process on 127.0.0.1:0.
pub struct Server {
    /// The store, open for inspection.
    pub state: AppState,
    /// Where it listens.
    pub addr: SocketAddr,
    https: bool,
    dir: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _tmp: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts a server on a fresh store.
    pub fn start() -> Server {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().to_owned();
        let mut s = Server::start_in(&dir);
        s._tmp = Some(tmp);
        s
    }

    /// Starts a server on the store in `dir`.
    pub fn start_in(dir: &Path) -> Server {
        Server::start_at(dir, "127.0.0.1:0".parse().expect("address"))
    }

    /// Starts a server on the store in `dir`, listening on `addr` (to restart a server
    /// where its clients expect it).
    pub fn start_at(dir: &Path, addr: SocketAddr) -> Server {
        Server::start_with(dir, addr, None)
    }

    /// Starts a server on a fresh store that speaks HTTPS with `tls` (see [`Server::url`]
    /// for the scheme).
    pub fn start_tls(tls: Arc<tokio_rustls::rustls::ServerConfig>) -> Server {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().to_owned();
        let mut s = Server::start_with(&dir, "127.0.0.1:0".parse().expect("address"), Some(tls));
        s._tmp = Some(tmp);
        s
    }

    fn start_with(dir: &Path, addr: SocketAddr, tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>) -> Server {
        let https = tls.is_some();
        let state = AppState::open(dir, system_clock()).expect("store opens");
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serve_state = state.clone();
        let thread = std::thread::spawn(move || {
            let rt =
                tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
                addr_tx.send(listener.local_addr().expect("addr")).expect("send addr");
                let shutdown = async move {
                    let _ = stopped.await;
                };
                match tls {
                    Some(config) => {
                        let listener = sidak_server::tls::TlsListener::new(listener, config).expect("TLS listener");
                        sidak_server::api::serve_on(listener, serve_state, shutdown).await.expect("serve");
                    }
                    None => sidak_server::api::serve(listener, serve_state, shutdown).await.expect("serve"),
                }
            });
        });
        let addr = addr_rx.recv().expect("the server started");
        Server { state, addr, https, dir: dir.to_owned(), stop: Some(stop), thread: Some(thread), _tmp: None }
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        if self.https {
            format!("https://localhost:{}", self.addr.port())
        } else {
            format!("http://{}", self.addr)
        }
    }

    /// Its data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes a token.
    pub fn token(&self, role: Role, region: Option<&str>, assessor: Option<&str>) -> String {
        token(&self.state, role, region, assessor)
    }

    /// Imports a registry CSV.
    pub fn import_registry(&self, csv: &str) {
        import_registry(&self.state, csv);
    }

    /// Assigns a unit (every product) to an assessor.
    pub fn assign(&self, assessor: &str, institution: &str, unit: &str, instrument: &str) -> String {
        assign(&self.state, assessor, institution, unit, instrument)
    }

    /// Runs one replication round to the centre at `url` with a peer token, as a
    /// regional server's replication thread does (tests drive rounds themselves so
    /// that every step is deterministic).
    pub fn replicate(
        &self,
        url: &str,
        peer_token: &str,
    ) -> Result<sidak_server::upstream::RoundReport, sidak_server::upstream::ReplicationError> {
        sidak_server::upstream::replicate_once(
            &self.state,
            &sidak_server::upstream::UpstreamConfig::new(url, peer_token),
        )
    }

    /// Runs a blocking read on the store.
    pub fn read<T>(&self, f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, ApiError>) -> T {
        self.state.db().read_blocking(f).expect("read")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Makes a token on a store.
pub fn token(state: &AppState, role: Role, region: Option<&str>, assessor: Option<&str>) -> String {
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
                0,
            )
        })
        .expect("token")
        .1
}

/// Imports a registry CSV into a store.
pub fn import_registry(state: &AppState, csv: &str) {
    let rows = admin::parse_registry(csv).expect("registry parses");
    let instruments = state.instruments();
    state
        .db()
        .write_blocking(|tx| {
            let (_, dirty) = admin::import_registry(tx, &instruments, &rows, now())?;
            for i in &dirty {
                sidak_server::results::recompute(tx, &instruments, i)?;
            }
            Ok::<_, ApiError>(())
        })
        .expect("import");
}

/// Assigns a unit to an assessor.
pub fn assign(state: &AppState, assessor: &str, institution: &str, unit: &str, instrument: &str) -> String {
    let instruments = state.instruments();
    let new = admin::NewAssignment {
        assessor: assessor.into(),
        institution: institution.into(),
        unit: unit.into(),
        products: vec![],
        instrument: instrument.into(),
        mode: "covert".into(),
        due: None,
    };
    state
        .db()
        .write_blocking(|tx| admin::create_assignment(tx, &instruments, &new, now()).map(|(id, _)| id))
        .expect("assignment")
}

/// Now, ms since 1970.
pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A registry of `regions` provinces, each with a city whose Disdukcapil, DPMPTSP and
/// Dinkes offer two services each.
pub fn registry(regions: &[&str]) -> String {
    let mut csv = admin::REGISTRY_HEADER.to_owned() + "\n";
    for r in regions {
        for (unit, unit_type, products) in [
            ("disdukcapil", "disdukcapil", [("ktp-el", "KTP elektronik"), ("akta-lahir", "Akta kelahiran")]),
            ("dpmptsp", "dpmptsp", [("pbg", "Persetujuan bangunan gedung"), ("nib", "Nomor induk berusaha")]),
            ("dinkes", "dinkes", [("sip", "Surat izin praktik"), ("pirt", "Sertifikat PIRT")]),
        ] {
            for (code, name) in products {
                csv.push_str(&format!(
                    "kota-{r},Pemerintah Kota {r},kota,{r},{unit},{unit},{unit_type},{code},{name}\n"
                ));
            }
        }
    }
    csv
}

/// The passphrase every test device's store is encrypted under.
pub const PASSPHRASE: &str = "test passphrase, not a secret";

/// [`PASSPHRASE`], for opening a device's store.
pub fn passphrase() -> sidak_field::Passphrase {
    sidak_field::Passphrase::new(PASSPHRASE)
}

/// What the server at `url` serves `token`, a page of `limit` at a time (leaving out
/// `omit`'s ops, if named), as sorted (origin, seq, hash); and how many pages it took.
pub fn served(url: &str, token: &str, limit: usize, omit: Option<&str>) -> (Vec<(String, u64, String)>, u64) {
    let client = reqwest::blocking::Client::new();
    let (mut served, mut pages, mut cursor) = (Vec::new(), 0, None::<String>);
    loop {
        let mut path = format!("{url}/v1/ops/pull?limit={limit}");
        if let Some(o) = omit {
            path.push_str(&format!("&omit_origin={o}"));
        }
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page: sidak_core::wire::PullResponse =
            client.get(path).bearer_auth(token).send().unwrap().error_for_status().unwrap().json().unwrap();
        pages += 1;
        served.extend(page.ops.iter().map(|p| (p.op.origin.to_string(), p.op.seq, p.op.hash.to_hex())));
        if !page.more {
            served.sort();
            return (served, pages);
        }
        cursor = Some(page.cursor.to_string());
    }
}

/// A field device: a data directory with the field client set up for an assessor.
pub struct Device {
    /// The field client.
    pub field: Field,
    /// Its assessor.
    pub assessor: String,
    /// Its token.
    pub token: String,
    /// Its data directory (kept for reopening).
    pub dir: PathBuf,
    _tmp: Arc<tempfile::TempDir>,
}

impl Device {
    /// A device for `assessor` in `region`, with a token from `server`.
    pub fn new(state: &AppState, assessor: &str, region: &str) -> Device {
        Device::with_clock(state, assessor, region, 0)
    }

    /// A device whose clock is off by `offset_ms`.
    pub fn with_clock(state: &AppState, assessor: &str, region: &str, offset_ms: i64) -> Device {
        let tmp = Arc::new(tempfile::tempdir().expect("temp dir"));
        let dir = tmp.path().join("field");
        let clock: sidak_field::app::Clock = Box::new(move || (now() + offset_ms).max(0) as u64);
        let mut field = Field::open_with_clock(&dir, &passphrase(), clock).expect("field store");
        field.init(assessor, region).expect("init");
        let token = token(state, Role::Assessor, Some(region), Some(assessor));
        Device { field, assessor: assessor.to_owned(), token, dir, _tmp: tmp }
    }

    /// Syncs with a server (or a proxy in front of it).
    pub fn sync(&mut self, url: &str) -> Result<SyncSummary, sidak_field::sync::SyncError> {
        let opts = SyncOptions::new(url, &self.token);
        self.sync_with(&opts)
    }

    /// The ops this device wrote itself (its own origin), in seq order.
    pub fn own_ops(&mut self) -> Vec<sidak_core::op::Op> {
        let me = self.field.identity().expect("identity").expect("set up").origin;
        self.field.all_ops().expect("ops").into_iter().filter(|o| o.origin == me).collect()
    }

    /// The ops of other origins this device holds, as (origin, seq, hash), in order.
    pub fn others_ops(&mut self) -> Vec<(String, u64, String)> {
        let me = self.field.identity().expect("identity").expect("set up").origin;
        let mut held: Vec<_> = self
            .field
            .all_ops()
            .expect("ops")
            .into_iter()
            .filter(|o| o.origin != me)
            .map(|o| (o.origin.to_string(), o.seq, o.hash.to_hex()))
            .collect();
        held.sort();
        held
    }

    /// What the server at `url` serves this device's token, a page of `limit` at a time
    /// with the device's own ops left out, as [`Device::others_ops`] lists them; and the
    /// pages.
    pub fn scope_served(&mut self, url: &str, limit: usize) -> (Vec<(String, u64, String)>, u64) {
        let me = self.field.identity().expect("identity").expect("set up").origin;
        served(url, &self.token, limit, Some(&me.to_string()))
    }

    /// Syncs with options.
    pub fn sync_with(&mut self, opts: &SyncOptions) -> Result<SyncSummary, sidak_field::sync::SyncError> {
        self.field.sync(opts, &mut |_| {})
    }

    /// Records a complete covert visit to every product of the assignment for `unit`,
    /// with photos, the unit's questionnaires, and the institution's service users when
    /// `service_users` is set. Answers are drawn from `rng` around `quality` (0..=3).
    pub fn record_unit(&mut self, unit: &str, quality: i64, service_users: u32, rng: &mut impl Rng) -> Vec<String> {
        let assignment = self
            .field
            .assignments()
            .expect("assignments")
            .into_iter()
            .find(|a| a.unit.code == unit)
            .unwrap_or_else(|| panic!("{} has no assignment for {unit}", self.assessor));
        let instrument = self
            .field
            .instruments()
            .into_iter()
            .find(|i| i.reference == assignment.instrument)
            .expect("instrument on the device")
            .clone();
        let photo_dir = self.dir.join("camera");
        std::fs::create_dir_all(&photo_dir).expect("camera dir");
        let mut visits = Vec::new();
        let value = |rng: &mut dyn rand::RngCore| (quality + rng.gen_range(-1i64..=1)).clamp(0, 3).to_string();
        for (p, product) in assignment.products.iter().enumerate() {
            let visit = self
                .field
                .start_visit(&StartVisit {
                    assignment: assignment.id.to_string(),
                    product: Some(product.code.clone()),
                    mode: None,
                    location: if p == 0 { Location::Mpp } else { Location::OwnOffice },
                })
                .expect("visit starts")
                .to_string();
            for ind in instrument.indicators() {
                let level_ok = match ind.level {
                    sidak_core::instrument::Level::Product => true,
                    sidak_core::instrument::Level::Unit => p == 0,
                    sidak_core::instrument::Level::Institution => false,
                };
                if !level_ok || ind.source.respondent_kind().is_some() {
                    continue;
                }
                self.field.answer(&visit, &ind.id, &value(rng)).expect("answer");
                if ind.evidence_required {
                    let photo = photo_dir.join(format!("{}.jpg", uuid::Uuid::now_v7().simple()));
                    let bytes: Vec<u8> = (0..rng.gen_range(2_000..40_000)).map(|_| rng.gen()).collect();
                    std::fs::write(&photo, bytes).expect("photo");
                    self.field.attach(&visit, &photo, Some(&ind.id), None).expect("attach");
                }
            }
            if p == 0 {
                for rule in &instrument.respondents {
                    let count = match (rule.kind, rule.level) {
                        (RespondentKind::ServiceUser, sidak_core::instrument::Level::Institution) => service_users,
                        (_, sidak_core::instrument::Level::Unit) => rule.min,
                        _ => 0,
                    };
                    for _ in 0..count {
                        let r = self.field.add_respondent(&visit, rule.kind, None).expect("respondent").to_string();
                        for ind in instrument.indicators().filter(|i| i.source.respondent_kind() == Some(rule.kind)) {
                            self.field.answer_respondent(&r, &ind.id, &value(rng)).expect("respondent answer");
                        }
                    }
                }
                self.field.note(&visit, "antrean panjang; informasi biaya tidak terpasang", None).expect("note");
            }
            self.field.finish(&visit).expect("finish");
            visits.push(visit);
        }
        visits
    }
}

/// A sidak-server child process (for SIGKILL tests).
pub struct ServerProcess {
    /// The child.
    pub child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl ServerProcess {
    /// Starts `sidak-server serve` on `dir`, on `addr` (port 0 picks one).
    pub fn start(binary: &Path, dir: &Path, addr: SocketAddr) -> ServerProcess {
        let mut child = Command::new(binary)
            .arg("--data-dir")
            .arg(dir)
            .args(["serve", "--listen", &addr.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("sidak-server starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
        let addr = loop {
            let line = lines.next().expect("the server prints where it listens").expect("line");
            if let Some(rest) = line.strip_prefix("sidak-server listening on http://") {
                break rest.split_whitespace().next().expect("address").parse().expect("socket address");
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        ServerProcess { child, addr }
    }

    /// SIGKILL, and wait for it to be gone.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Everything a server holds of one origin: (seq, hash) of each op.
pub fn server_chain(server: &Server, origin: &str) -> Vec<(i64, String)> {
    server.read(|tx| {
        let mut stmt = tx.prepare("SELECT seq, hash FROM ops WHERE origin = ?1 ORDER BY seq")?;
        let rows = stmt.query_map([origin], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    })
}

/// A JSON value for assertions.
pub fn j(v: &impl serde::Serialize) -> Value {
    serde_json::to_value(v).unwrap_or(json!(null))
}

/// A binary built by this workspace (`cargo test --workspace` builds them all), found
/// next to the test executable.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let dir = exe.parent().and_then(Path::parent).expect("target directory");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is not built: run `cargo build -p {name}` (or `cargo test --workspace`, which builds it)",
        path.display()
    );
    path
}

/// Runs a `sidak-server` command on a data directory; its output, whatever the exit.
pub fn server_run(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(binary("sidak-server")).arg("--data-dir").arg(dir).args(args).output().expect("sidak-server runs")
}

/// Runs a `sidak-server` admin command that must succeed; returns stdout.
pub fn server_cli(dir: &Path, args: &[&str]) -> String {
    let out = server_run(dir, args);
    assert!(out.status.success(), "sidak-server {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

/// A chain as (seq, hash) pairs, the way [`server_chain`] lists a server's.
pub fn chain_of(ops: &[sidak_core::op::Op]) -> Vec<(i64, String)> {
    ops.iter().map(|o| (o.seq as i64, o.hash.to_hex())).collect()
}

/// Every chain head a server holds signed for an origin (as devices pushed them), or,
/// for the server's own origin, a signer with its key.
pub fn head_signer(server: &Server, origin: sidak_core::ids::OriginId) -> HeadSigner {
    if origin == server.state.server_origin() {
        let keys = server.state.db().read_blocking(sidak_server::ledger::signing_keys).expect("server keys");
        return HeadSigner::Own(keys);
    }
    let heads = server
        .state
        .db()
        .read_blocking(|tx| sidak_server::ledger::signed_heads(tx, origin, 0, u64::MAX))
        .expect("signed heads");
    HeadSigner::Held(heads)
}

/// Where the signatures of an origin's pushes come from.
pub enum HeadSigner {
    /// A server's own origin: any head can be signed.
    Own(sidak_core::sign::KeyPair),
    /// A device's: only the heads it signed when it pushed (none for unsigned origins).
    Held(Vec<sidak_core::sign::SignedHead>),
}

/// One push of one origin: its ops and the signed head they end at (if it signs).
pub type SignedBatch = (Vec<sidak_core::op::Op>, Option<sidak_core::sign::SignedHead>);

/// One origin's ops (in seq order) split into pushes of at most `max` ops that each
/// end at a head the origin signed, each with that signed head; unsigned origins are
/// split by size alone.
pub fn signed_batches(ops: &[sidak_core::op::Op], signer: &HeadSigner, max: usize) -> Vec<SignedBatch> {
    use sidak_core::chain::ChainHead;
    use sidak_core::sign::SignedHead;
    let mut out = Vec::new();
    let mut at = 0;
    while at < ops.len() {
        let end = match signer {
            HeadSigner::Own(_) => (at + max).min(ops.len()),
            HeadSigner::Held(heads) if heads.is_empty() => (at + max).min(ops.len()),
            HeadSigner::Held(heads) => {
                let first = ops[at].seq;
                let signed: Vec<u64> = heads.iter().map(|h| h.seq).filter(|s| *s >= first).collect();
                let within = signed.iter().rev().find(|s| **s < first + max as u64).or(signed.first());
                let last = *within.expect("a signed head covers every op a device pushed");
                at + (last - first) as usize + 1
            }
        };
        let batch = ops[at..end].to_vec();
        let last = batch.last().expect("a batch");
        let head = match signer {
            HeadSigner::Own(keys) => {
                Some(SignedHead::sign(keys, last.origin, ChainHead { seq: last.seq, hash: last.hash }))
            }
            HeadSigner::Held(heads) => heads.iter().find(|h| h.seq == last.seq).cloned(),
        };
        out.push((batch, head));
        at = end;
    }
    out
}
