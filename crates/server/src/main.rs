//! `sidak-server`: parses arguments into a configuration, calls one library function,
//! maps the result to an exit code.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use sidak_core::ids::EntityId;
use sidak_server::admin::{self, NewAssignment};
use sidak_server::audit::{self, Action, Actor, Kind};
use sidak_server::auth::{self, create_token, NewToken, Role};
use sidak_server::error::ApiError;
use sidak_server::results;
use sidak_server::review;
use sidak_server::state::{system_clock, AppState};

/// Sidak sync server: receives field data, merges, recomputes and publishes results.
#[derive(Parser)]
#[command(
    name = "sidak-server",
    version,
    after_help = "Exit codes: 0 done · 1 internal error · 2 usage · 3 bad input · 4 not found · 5 store error · 6 the tiers differ (manifest compare)"
)]
struct Cli {
    /// Where the server keeps its data.
    #[arg(long, global = true, default_value = "./sidak-data", env = "SIDAK_DATA_DIR")]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Simulate a season on this machine — a registry of three provinces and two
    /// central agencies, assessors recording visits offline on their own devices and
    /// syncing, with the troubles of real fieldwork — then serve the dashboard.
    Demo {
        /// Where the demo keeps its server store and its devices (replaced on each run).
        #[arg(long, default_value = "./sidak-demo")]
        dir: PathBuf,
        /// Address to serve on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Seed of the simulated answers (the same seed, the same season).
        #[arg(long, default_value_t = 2024)]
        seed: u64,
        /// Print the summary and exit instead of serving the dashboard.
        #[arg(long)]
        no_serve: bool,
    },
    /// Run the sync server.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Log format.
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
        /// Run as a regional server replicating to the central server at this URL.
        #[arg(long, requires = "upstream_token")]
        upstream: Option<String>,
        /// The peer token of this region, issued by the central server.
        #[arg(long, env = "SIDAK_UPSTREAM_TOKEN", hide_env_values = true)]
        upstream_token: Option<String>,
        /// Seconds between replication rounds when nothing new arrives (a push starts
        /// a round at once).
        #[arg(long, default_value_t = 5)]
        replicate_every: u64,
        /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The certificate's private key (PEM).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Also trust the certificate authorities in this PEM file when talking to the
        /// upstream (an office's own CA).
        #[arg(long, env = "SIDAK_UPSTREAM_CA")]
        upstream_ca: Option<PathBuf>,
    },
    /// Access tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Instrument documents.
    #[command(subcommand)]
    Instrument(InstrumentCmd),
    /// The registry of institutions, units and service products.
    #[command(subcommand)]
    Registry(RegistryCmd),
    /// Assignments.
    #[command(subcommand)]
    Assignment(AssignmentCmd),
    /// Recompute every result from scratch.
    Recompute,
    /// Prove where every answer behind an institution's result came from: the device
    /// and assessor that recorded it and its signed, unaltered chain (exit 6 when any
    /// proof fails).
    Provenance {
        /// The institution's code (or record id).
        #[arg(long)]
        institution: String,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// This server's end-of-day manifest, or a comparison with the tier below.
    Manifest {
        /// Only this region's origins.
        #[arg(long)]
        region: Option<String>,
        #[command(subcommand)]
        action: Option<ManifestCmd>,
    },
    /// Copy the store and its evidence files into a new directory, safely while the
    /// server runs; `serve --data-dir <that directory>` starts from the copy.
    Backup {
        /// The backup directory (new or empty; evidence files already there are reused).
        #[arg(long)]
        to: PathBuf,
    },
    /// List conflicts (concurrent edits of the same field) for review.
    Conflicts {
        /// Only this region.
        #[arg(long)]
        region: Option<String>,
    },
    /// List quarantined ops with their reasons.
    Quarantine {
        /// Only this region.
        #[arg(long)]
        region: Option<String>,
    },
    /// Supervisor review of this store, acting as admin: visits, edits after
    /// submission, corrections and conflict resolution.
    Review(ReviewArgs),
    /// The audit log: every admin and supervisor action, oldest first.
    Audit {
        /// Only entries after this id.
        #[arg(long, default_value_t = 0)]
        since: i64,
        /// Only entries concerning this region.
        #[arg(long)]
        region: Option<String>,
        /// JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ManifestCmd {
    /// Compare this server's holdings with the tier below (a regional server, or a
    /// device's `sidak-field manifest`) and print exactly what is missing or differs
    /// (exit 6 when anything does).
    Compare {
        /// The regional server's URL.
        #[arg(long, requires = "token", conflicts_with = "file")]
        with: Option<String>,
        /// A token of that server allowed to read its manifest (admin or supervisor).
        #[arg(long, env = "SIDAK_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// A manifest file instead (e.g. from `sidak-field --json manifest`).
        #[arg(long)]
        file: Option<PathBuf>,
        /// Also trust the certificate authorities in this PEM file.
        #[arg(long, env = "SIDAK_CA_FILE")]
        ca_file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Create a token; it is printed once and only its hash is stored.
    Create {
        /// assessor, supervisor, admin or peer.
        #[arg(long)]
        role: String,
        /// The region (all but admins).
        #[arg(long)]
        region: Option<String>,
        /// The assessor (assessor tokens).
        #[arg(long)]
        assessor: Option<String>,
        /// A label for people.
        #[arg(long)]
        label: Option<String>,
        /// Expire after this long: 90d, 12h, 30m, 45s, 2w (default: never).
        #[arg(long)]
        expires_in: Option<String>,
        /// An assessor token's device key, as `sidak-field init` shows it (repeat for
        /// a phone and a tablet). With keys, only those devices can sync with the
        /// token; without, the first key each new device registers is trusted.
        #[arg(long = "device-key", value_name = "HEX")]
        device_keys: Vec<String>,
    },
    /// List every token: id, role, scope, label, created, expires, last used and
    /// revocation (never a secret or its hash).
    List {
        /// JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token: every request with it is refused from now on.
    Revoke {
        /// The token's id (`tok_…`).
        id: String,
    },
    /// Replace a token by a new secret of the same role, scope and label, printed once;
    /// the old one is revoked (after the grace period).
    Rotate {
        /// The token's id (`tok_…`).
        id: String,
        /// Seconds the old secret keeps working, for a device to switch over.
        #[arg(long, default_value_t = 0)]
        grace: u64,
        /// The new token's lifetime (default: as long as the old one's, or never).
        #[arg(long)]
        expires_in: Option<String>,
    },
}

#[derive(Subcommand)]
enum InstrumentCmd {
    /// Check an instrument file and print every fault (exit 3 if there is any).
    Validate {
        /// The instrument document (.json).
        file: PathBuf,
    },
    /// Validate and publish an instrument file.
    Publish {
        /// The instrument document (.json).
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum RegistryCmd {
    /// Import institutions, units and products from a CSV file.
    Import {
        /// The CSV (header: institution_code,institution_name,institution_type,region,unit_code,unit_name,unit_type,product_code,product_name).
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum AssignmentCmd {
    /// Assign a unit to an assessor.
    Create {
        /// The assessor's code.
        #[arg(long)]
        assessor: String,
        /// The institution's code.
        #[arg(long)]
        institution: String,
        /// The unit's code.
        #[arg(long)]
        unit: String,
        /// Product codes (repeat); default: every product of the unit.
        #[arg(long = "product")]
        products: Vec<String>,
        /// The instrument, id@version.
        #[arg(long, default_value = "penilaian-2023@1")]
        instrument: String,
        /// covert or announced.
        #[arg(long, default_value = "announced")]
        mode: String,
    },
}

/// A failure with its exit code.
struct Failure(u8, String);

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Failure {
        let code = match e.status.as_u16() {
            404 => 4,
            400..=499 => 3,
            _ => 5,
        };
        Failure(code, e.message)
    }
}

fn now() -> i64 {
    system_clock()()
}

fn open(dir: &Path) -> Result<AppState, Failure> {
    // A store that does not open (a directory it cannot write, a store from a newer
    // release) is the operator's to fix: say why, not only that something failed.
    let db = sidak_server::db::Db::open(dir).map_err(|e| Failure(5, e.to_string()))?;
    Ok(AppState::with_db(db, dir, system_clock())?)
}

fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).expect("serialises"));
}

fn run(cli: Cli) -> Result<(), Failure> {
    let dir = cli.data_dir.clone();
    match cli.command {
        Command::Demo { dir, listen, seed, no_serve } => demo(&dir, listen, seed, no_serve),
        Command::Serve {
            listen,
            log_format,
            upstream,
            upstream_token,
            replicate_every,
            tls_cert,
            tls_key,
            upstream_ca,
        } => {
            let upstream = upstream.map(|url| {
                let mut cfg =
                    sidak_server::upstream::UpstreamConfig::new(&url, upstream_token.as_deref().unwrap_or(""));
                cfg.every = std::time::Duration::from_secs(replicate_every.max(1));
                cfg.ca_file = upstream_ca;
                cfg
            });
            let tls = match (tls_cert, tls_key) {
                (Some(cert), Some(key)) => {
                    Some(sidak_server::tls::server_config(&cert, &key).map_err(|e| Failure(3, e.to_string()))?)
                }
                _ => None,
            };
            serve(&dir, listen, log_format, upstream, tls)
        }
        Command::Token(command) => token_command(&dir, command),
        Command::Audit { since, region, json } => {
            let state = open(&dir)?;
            let mut entries = Vec::new();
            let mut after = since;
            loop {
                let page =
                    state.db().read_blocking(|tx| audit::list(tx, region.as_deref(), after, audit::MAX_LIMIT))?;
                let Some(last) = page.last() else { break };
                after = last.id;
                entries.extend(page);
            }
            show(json, &serde_json::json!({ "entries": entries, "next": after }), || {
                lines(&entries, "no audit entries", audit::AuditEntry::line)
            });
            Ok(())
        }
        Command::Instrument(InstrumentCmd::Validate { file }) => {
            let instrument = admin::validate_instrument_file(&file).map_err(|e| Failure(3, e.to_string()))?;
            let indicators = instrument.indicators().count();
            println!(
                "{}: valid — {} ({} dimensions, {indicators} indicators, {} bands), digest {}",
                file.display(),
                instrument.reference,
                instrument.dimensions.len(),
                instrument.bands.len(),
                instrument.digest
            );
            Ok(())
        }
        Command::Instrument(InstrumentCmd::Publish { file }) => {
            let instrument = admin::validate_instrument_file(&file).map_err(|e| Failure(3, e.to_string()))?;
            let state = open(&dir)?;
            let now = now();
            let asked = format!("publish {} ({}) from {}", instrument.reference, instrument.digest, file.display());
            let action = Action::new(Kind::InstrumentPublish, "sidak-server instrument publish", asked);
            let added = audit::audited_blocking(state.db(), &cli_actor(None), &action, now, |tx| {
                let added = admin::publish_instrument(tx, &instrument, now)?;
                Ok((added, audit::published(&instrument.reference, &instrument.digest, added)))
            })?;
            println!("{} {}", instrument.reference, if added { "published" } else { "was already published" });
            Ok(())
        }
        Command::Registry(RegistryCmd::Import { file }) => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| Failure(4, format!("cannot read {}: {e}", file.display())))?;
            let rows = admin::parse_registry(&text)?;
            let state = open(&dir)?;
            let instruments = state.instruments();
            let now = now();
            let asked = format!("import {} row(s) from {}", rows.len(), file.display());
            let action = Action::new(Kind::RegistryImport, "sidak-server registry import", asked);
            let report = audit::audited_blocking(state.db(), &cli_actor(None), &action, now, |tx| {
                let (report, dirty) = admin::import_registry(tx, &instruments, &rows, now)?;
                for i in &dirty {
                    results::recompute(tx, &instruments, i)?;
                }
                let done = audit::imported(&report);
                Ok((report, done))
            })?;
            print_json(&report);
            Ok(())
        }
        Command::Assignment(AssignmentCmd::Create { assessor, institution, unit, products, instrument, mode }) => {
            let state = open(&dir)?;
            let instruments = state.instruments();
            let now = now();
            let new = NewAssignment { assessor, institution, unit, products, instrument, mode, due: None };
            let action =
                Action::new(Kind::AssignmentCreate, "sidak-server assignment create", audit::assignment_asked(&new));
            let id = audit::audited_blocking(state.db(), &cli_actor(None), &action, now, |tx| {
                let (id, dirty) = admin::create_assignment(tx, &instruments, &new, now)?;
                for i in &dirty {
                    results::recompute(tx, &instruments, i)?;
                }
                let done = audit::assigned(tx, &new, &id)?;
                Ok((id, done))
            })?;
            println!("{id}");
            Ok(())
        }
        Command::Recompute => {
            let state = open(&dir)?;
            let instruments = state.instruments();
            let action = Action::new(Kind::Recompute, "sidak-server recompute", "recompute every result");
            let n = audit::audited_blocking(state.db(), &cli_actor(None), &action, now(), |tx| {
                let n = results::recompute_all(tx, &instruments)?;
                Ok((n, audit::recomputed(n)))
            })?;
            println!("recomputed {n} institution(s)");
            Ok(())
        }
        Command::Provenance { institution, json } => {
            let state = open(&dir)?;
            let rows = state.db().read_blocking(|tx| sidak_server::provenance::of_institution(tx, &institution))?;
            use sidak_server::provenance::Proof;
            let broken = rows.iter().filter(|r| matches!(r.proof, Proof::Broken { .. })).count();
            if json {
                print_json(&serde_json::json!({ "answers": rows }));
            } else {
                for r in &rows {
                    let proof = match &r.proof {
                        Proof::Verified { head } => format!("verified (signed head {head})"),
                        Proof::Unsigned => "unsigned origin".into(),
                        Proof::NotCovered => "no signed head yet".into(),
                        Proof::Broken { reason } => format!("BROKEN: {reason}"),
                    };
                    println!("{}  {:<36} {:<10} {:<18} {}", r.record, r.field, r.value, r.recorded_by, proof);
                }
                let verified = rows.iter().filter(|r| matches!(r.proof, Proof::Verified { .. })).count();
                println!("{} answer(s): {verified} verified, {broken} broken", rows.len());
            }
            if broken > 0 {
                return Err(Failure(6, format!("{broken} answer(s) cannot be proven")));
            }
            Ok(())
        }
        Command::Manifest { region, action: None } => {
            let state = open(&dir)?;
            print_json(&sidak_server::manifests::local(&state, region.as_deref())?);
            Ok(())
        }
        Command::Manifest { region, action: Some(ManifestCmd::Compare { with, token, file, ca_file }) } => {
            let below = match (with, file) {
                (Some(url), _) => {
                    sidak_server::manifests::fetch(&url, token.as_deref().unwrap_or(""), ca_file.as_deref())
                        .map_err(|e| Failure(1, e))?
                }
                (None, Some(f)) => {
                    let text = std::fs::read_to_string(&f)
                        .map_err(|e| Failure(4, format!("cannot read {}: {e}", f.display())))?;
                    serde_json::from_str(&text)
                        .map_err(|e| Failure(3, format!("{} is not a manifest: {e}", f.display())))?
                }
                (None, None) => return Err(Failure(2, "give --with URL --token T, or --file F".into())),
            };
            let state = open(&dir)?;
            let diffs = sidak_server::manifests::compare_below(&state, &below, region.as_deref())?;
            for d in &diffs {
                println!("{d}");
            }
            if diffs.is_empty() {
                println!("no differences: {} origin(s) compared", below.origins.len());
                Ok(())
            } else {
                Err(Failure(6, format!("{} difference(s) with the tier below", diffs.len())))
            }
        }
        Command::Backup { to } => {
            let state = open(&dir)?;
            let action =
                Action::new(Kind::Backup, "sidak-server backup", format!("back up the store to {}", to.display()));
            let backed_up = sidak_server::backup::backup(&state, &to);
            let outcome = match &backed_up {
                Ok(r) => Ok(audit::Done::new(format!(
                    "backed up {} op(s) and {} evidence file(s) ({} copied now) to {}",
                    r.ops,
                    r.files,
                    r.files_copied,
                    r.to.display()
                ))),
                Err(e) => Err(ApiError::internal(e)),
            };
            audit::record_blocking(state.db(), &cli_actor(None), &action, now(), outcome.as_ref())?;
            let report = backed_up.map_err(|e| match e {
                sidak_server::backup::BackupError::TargetHasStore(_) => Failure(3, e.to_string()),
                _ => Failure(5, e.to_string()),
            })?;
            println!(
                "backed up {} op(s) and {} evidence file(s) ({} copied now, {} KiB) to {}",
                report.ops,
                report.files,
                report.files_copied,
                report.bytes_copied / 1024,
                report.to.display()
            );
            Ok(())
        }
        Command::Conflicts { region } => {
            let state = open(&dir)?;
            let list = state.db().read_blocking(|tx| admin::conflicts(tx, region.as_deref()))?;
            print_json(&serde_json::json!({ "conflicts": list }));
            Ok(())
        }
        Command::Quarantine { region } => {
            let state = open(&dir)?;
            let list = state.db().read_blocking(|tx| admin::quarantined(tx, region.as_deref()))?;
            print_json(&serde_json::json!({ "quarantine": list }));
            Ok(())
        }
        Command::Review(args) => review_command(&dir, args),
    }
}

fn serve(
    dir: &Path,
    listen: SocketAddr,
    log_format: LogFormat,
    upstream: Option<sidak_server::upstream::UpstreamConfig>,
    tls: Option<std::sync::Arc<tokio_rustls::rustls::ServerConfig>>,
) -> Result<(), Failure> {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,tower_http=info".into());
    use std::io::IsTerminal;
    let ansi = std::io::stdout().is_terminal();
    match log_format {
        LogFormat::Json => tracing_subscriber::fmt().json().with_env_filter(filter).init(),
        LogFormat::Text => tracing_subscriber::fmt().with_ansi(ansi).with_env_filter(filter).init(),
    }
    let fresh = !dir.join(sidak_server::db::DB_FILE).exists();
    let state = open(dir)?;
    if fresh {
        let now = now();
        let (_, secret) = state
            .db()
            .write_blocking(|tx| {
                create_token(
                    tx,
                    &NewToken {
                        role: Role::Admin,
                        region: None,
                        assessor: None,
                        label: Some("first admin".into()),
                        device_keys: Vec::new(),
                    },
                    now,
                )
            })
            .map_err(|e| Failure(5, e.to_string()))?;
        println!("new store in {}; first admin token (shown once): {secret}", dir.display());
    }
    let runtime = tokio::runtime::Runtime::new().map_err(|e| Failure(1, e.to_string()))?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| Failure(1, format!("cannot listen on {listen}: {e}")))?;
        let addr = listener.local_addr().map_err(|e| Failure(1, e.to_string()))?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        println!("sidak-server listening on {scheme}://{addr} (data in {})", dir.display());
        tracing::info!(%addr, data_dir = %dir.display(), "listening");
        let replicator = upstream.map(|cfg| {
            println!("replicating to {} (a regional server)", cfg.url);
            sidak_server::upstream::spawn(state.clone(), cfg)
        });
        let served = match tls {
            Some(config) => {
                let listener =
                    sidak_server::tls::TlsListener::new(listener, config).map_err(|e| Failure(1, e.to_string()))?;
                sidak_server::api::serve_on(listener, state, shutdown_signal()).await
            }
            None => sidak_server::api::serve(listener, state, shutdown_signal()).await,
        };
        if let Some(r) = replicator {
            tokio::task::spawn_blocking(move || r.stop()).await.map_err(|e| Failure(1, e.to_string()))?;
        }
        served.map_err(|e| Failure(1, e.to_string()))
    })
}

fn demo(dir: &Path, listen: SocketAddr, seed: u64, no_serve: bool) -> Result<(), Failure> {
    let store = dir.join("server");
    if store.join(sidak_server::db::DB_FILE).exists() {
        let earlier = open(&store)?;
        let is_demo = earlier
            .db()
            .read_blocking(|tx| {
                Ok::<_, ApiError>(
                    tx.query_row("SELECT value FROM meta WHERE key = 'demo'", [], |r| r.get::<_, String>(0)).ok(),
                )
            })?
            .is_some();
        drop(earlier);
        if !is_demo {
            return Err(Failure(
                3,
                format!("{} holds a store that is not a demo's; choose another --dir", dir.display()),
            ));
        }
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| Failure(5, format!("cannot clear {}: {e}", dir.display())))?;
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt().with_env_filter(filter).init();
    let state = open(&store)?;
    let admin = sidak_server::demo::prepare(&state).map_err(|e| Failure(1, e.to_string()))?;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| Failure(1, e.to_string()))?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
            Failure(1, format!("cannot listen on {listen}: {e} (another program uses it? give --listen 127.0.0.1:0)"))
        })?;
        let addr = listener.local_addr().map_err(|e| Failure(1, e.to_string()))?;
        let url = format!("http://{addr}");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(sidak_server::api::serve(listener, state.clone(), async move {
            tokio::select! {
                _ = shutdown_signal() => {},
                _ = stopped => {},
            }
        }));
        println!("Sidak demo: a season simulated on this machine (server at {url}, data in {})", dir.display());
        let (sim_state, sim_url, work) = (state.clone(), url.clone(), dir.to_owned());
        let summary = tokio::task::spawn_blocking(move || {
            sidak_server::db::on_blocking_thread(|| {
                sidak_server::demo::simulate(&sim_state, &sim_url, &work, seed, &|line| println!("{line}"))
            })
        })
        .await
        .map_err(|e| Failure(1, e.to_string()))?
        .map_err(|e| Failure(1, e.to_string()))?;
        println!(
            "recorded offline and synced: {} visits, {} questionnaires, {} photos ({} KiB), {} records held by the server",
            summary.visits,
            summary.questionnaires,
            summary.photos,
            summary.photo_bytes / 1024,
            summary.ops
        );
        println!(
            "field trouble handled: {} sync(s) broke off and resumed, {} conflict(s) listed for a supervisor, a clock days ahead, an edit after submission",
            summary.interrupted_syncs, summary.conflicts
        );
        println!(
            "results: {} of {} institutions complete; simulation took {:.1} s",
            summary.complete_institutions, summary.institutions, summary.seconds
        );
        let mut rows = state.db().read(|tx| results::rows(tx, "institution", None, -1, None)).await.map_err(Failure::from)?;
        rows.sort_by(|a, b| (&a.region, &a.code).cmp(&(&b.region, &b.code)));
        println!("\n{:<10} {:<22} {:<11} {:>7}  {:<5} {:<6}", "region", "institution", "type", "score", "grade", "zone");
        for r in &rows {
            let score = r.score.clone().or(r.provisional.clone().map(|p| format!("({p})"))).unwrap_or_default();
            println!(
                "{:<10} {:<22} {:<11} {:>7}  {:<5} {:<6}",
                r.region.clone().unwrap_or_default(),
                r.code,
                r.kind,
                score,
                r.grade.clone().unwrap_or_else(|| "-".into()),
                r.zone.clone().unwrap_or_else(|| r.status.clone())
            );
        }
        println!("\nDashboard: {url}/dashboard?token={admin}");
        println!("Admin token (shown once): {admin}");
        if no_serve {
            let _ = stop.send(());
        } else {
            println!("Serving until Ctrl-C.");
        }
        server.await.map_err(|e| Failure(1, e.to_string()))?.map_err(|e| Failure(1, e.to_string()))
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

#[derive(clap::Args)]
struct ReviewArgs {
    /// Print JSON instead of lines for people.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: ReviewCmd,
}

#[derive(Subcommand)]
enum ReviewCmd {
    /// List visits with their edits after submission and active corrections.
    Visits {
        /// Only this region.
        #[arg(long)]
        region: Option<String>,
        /// submitted or draft.
        #[arg(long, default_value = "submitted")]
        status: review::VisitStatus,
        /// Only this institution (its code).
        #[arg(long)]
        institution: Option<String>,
    },
    /// List the ops written on visits after they were submitted.
    Edits {
        /// Only this region.
        #[arg(long)]
        region: Option<String>,
        /// Only this visit.
        #[arg(long)]
        visit: Option<String>,
    },
    /// List corrections, active and withdrawn.
    Corrections {
        /// Only this region.
        #[arg(long)]
        region: Option<String>,
        /// Only this visit and its respondents.
        #[arg(long)]
        visit: Option<String>,
    },
    /// Correct an answer of a visit, or of one of its respondents; the field value is
    /// kept and results use the correction.
    Correct {
        /// The visit.
        #[arg(long)]
        visit: EntityId,
        /// A respondent of the visit, to correct its answer instead.
        #[arg(long)]
        respondent: Option<EntityId>,
        /// The field, answer.<indicator>.
        #[arg(long)]
        field: String,
        /// The corrected value as JSON: 2, true, '"opt-a"', '{"na": true}'.
        #[arg(long)]
        value: String,
        /// Why.
        #[arg(long)]
        reason: String,
        /// Who corrects (recorded as admin.<NAME>).
        #[arg(long)]
        by: String,
    },
    /// Withdraw a correction: results use the field value again.
    Withdraw {
        /// The correction's id.
        id: String,
        /// Why.
        #[arg(long)]
        reason: String,
        /// Who withdraws (recorded as admin.<NAME>).
        #[arg(long)]
        by: String,
    },
    /// Resolve a conflict with a correction: one of its versions, or a value entered.
    Resolve {
        /// The visit or respondent whose field is in conflict.
        #[arg(long)]
        entity: EntityId,
        /// The field in conflict.
        #[arg(long)]
        field: String,
        /// The version to keep, origin#seq.
        #[arg(long, required_unless_present = "value", conflicts_with = "value")]
        choose: Option<String>,
        /// Or the value to use, as JSON.
        #[arg(long)]
        value: Option<String>,
        /// Why.
        #[arg(long)]
        reason: String,
        /// Who resolves (recorded as admin.<NAME>).
        #[arg(long)]
        by: String,
    },
}

/// The command line as the audit log names it: `cli`, labelled with the operator's
/// login name, or for review commands the reviewer (`admin.<NAME>`).
fn cli_actor(reviewer: Option<&review::Reviewer>) -> Actor {
    let operator = || std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).ok();
    Actor::cli(reviewer.map(|r| r.by.clone()).or_else(operator))
}

fn token_command(dir: &Path, command: TokenCmd) -> Result<(), Failure> {
    let state = open(dir)?;
    let now = now();
    let db = state.db();
    match command {
        TokenCmd::Create { role, region, assessor, label, expires_in, device_keys } => {
            let role: Role = role.parse().map_err(|e| Failure(3, e))?;
            let lifetime = expires_in.as_deref().map(auth::parse_lifetime).transpose().map_err(|e| Failure(3, e))?;
            let device_keys = sidak_server::access_api::parse_device_keys(&device_keys).map_err(|e| Failure(3, e))?;
            let new = NewToken { role, region, assessor, label, device_keys };
            let asked = sidak_server::access_api::create_asked(&new, expires_in.as_deref());
            let action = Action::new(Kind::TokenCreate, "sidak-server token create", asked);
            let view = audit::audited_blocking(db, &cli_actor(None), &action, now, |tx| {
                let (id, secret) = auth::create_token_until(tx, &new, lifetime.map(|ms| now + ms), now)?;
                let view = auth::token(tx, &id, now)?;
                let done = audit::token_created(&view);
                Ok(((view, secret), done))
            })?;
            let (view, secret) = view;
            let expires =
                view.expires_at.map(|at| format!("; it expires {}", sidak_server::html::time(at))).unwrap_or_default();
            println!("{secret}");
            eprintln!("token {} created{expires}; it is shown once and only its hash is stored", view.id);
        }
        TokenCmd::List { json } => {
            let tokens = db.read_blocking(|tx| auth::list_tokens(tx, now).map_err(ApiError::from))?;
            show(json, &serde_json::json!({ "tokens": tokens }), || lines(&tokens, "no tokens", auth::TokenView::line));
        }
        TokenCmd::Revoke { id } => {
            let action = Action::new(Kind::TokenRevoke, "sidak-server token revoke", format!("revoke {id}"));
            let view = audit::audited_blocking(db, &cli_actor(None), &action, now, |tx| {
                let view = auth::revoke_token(tx, &id, now)?;
                let done = audit::token_revoked(&view);
                Ok((view, done))
            })?;
            println!("{}", view.line());
        }
        TokenCmd::Rotate { id, grace, expires_in } => {
            let lifetime = expires_in.as_deref().map(auth::parse_lifetime).transpose().map_err(|e| Failure(3, e))?;
            let asked = sidak_server::access_api::rotate_asked(&id, grace, expires_in.as_deref());
            let action = Action::new(Kind::TokenRotate, "sidak-server token rotate", asked);
            let grace_ms = i64::try_from(grace).unwrap_or(i64::MAX / 1000).saturating_mul(1000);
            let rotated = audit::audited_blocking(db, &cli_actor(None), &action, now, |tx| {
                let rotated = auth::rotate_token(tx, &id, grace_ms, lifetime, now)?;
                let done = audit::token_rotated(&rotated);
                Ok((rotated, done))
            })?;
            println!("{}", rotated.secret);
            let until = rotated.replaced.revoked_at.map(sidak_server::html::time).unwrap_or_default();
            eprintln!(
                "token {} replaces {} (same role, scope and label); it is shown once. The old secret works until {until}",
                rotated.token.id, rotated.replaced.id
            );
        }
    }
    Ok(())
}

fn json_arg(flag: &str, text: &str) -> Result<serde_json::Value, Failure> {
    serde_json::from_str(text)
        .map_err(|e| Failure(3, format!("{flag} takes JSON ({e}): write 2, true, '\"opt-a\"' or '{{\"na\": true}}'")))
}

/// Prints `value` as JSON, or `human` for people.
fn show(json: bool, value: &impl serde::Serialize, human: impl FnOnce() -> String) {
    if json {
        print_json(value);
    } else {
        println!("{}", human());
    }
}

fn lines<T>(items: &[T], empty: &str, line: impl Fn(&T) -> String) -> String {
    if items.is_empty() {
        empty.to_owned()
    } else {
        items.iter().map(line).collect::<Vec<_>>().join("\n")
    }
}

fn written_lines(w: &review::Written) -> String {
    let ops = if w.ops.is_empty() { "nothing written".to_owned() } else { format!("ops {}", w.ops.join(", ")) };
    format!("{}\n{ops}", w.correction.line())
}

fn review_command(dir: &Path, args: ReviewArgs) -> Result<(), Failure> {
    let state = open(dir)?;
    let json = args.json;
    match args.command {
        ReviewCmd::Visits { region, status, institution } => {
            let list =
                state.db().read_blocking(|tx| review::visits(tx, region.as_deref(), status, institution.as_deref()))?;
            show(json, &serde_json::json!({ "visits": list }), || lines(&list, "no visits", review::VisitView::line));
        }
        ReviewCmd::Edits { region, visit } => {
            let list = state.db().read_blocking(|tx| review::edits(tx, region.as_deref(), visit.as_deref()))?;
            show(json, &serde_json::json!({ "edits": list }), || {
                lines(&list, "no edits after submission", review::EditView::line)
            });
        }
        ReviewCmd::Corrections { region, visit } => {
            let list = state.db().read_blocking(|tx| review::corrections(tx, region.as_deref(), visit.as_deref()))?;
            show(json, &serde_json::json!({ "corrections": list }), || {
                lines(&list, "no corrections", review::CorrectionView::line)
            });
        }
        ReviewCmd::Correct { visit, respondent, field, value, reason, by } => {
            let reviewer = review::Reviewer::local_admin(&by)?;
            let value = json_arg("--value", &value)?;
            let instruments = state.instruments();
            let now = now();
            let asked = format!("correct visit/{visit} `{field}` to {value} (reason: {reason})");
            let action = Action::new(Kind::CorrectionCreate, "sidak-server review correct", asked);
            let written = audit::audited_blocking(state.db(), &cli_actor(Some(&reviewer)), &action, now, |tx| {
                let target = review::cli_target(tx, visit, respondent)?;
                let new = review::NewCorrection { target, field, value, reason };
                let written = review::correct(tx, &instruments, &reviewer, &new, now)?;
                let done = audit::corrected(&written);
                Ok((written, done))
            })?;
            show(json, &written, || written_lines(&written));
        }
        ReviewCmd::Withdraw { id, reason, by } => {
            let reviewer = review::Reviewer::local_admin(&by)?;
            let instruments = state.instruments();
            let now = now();
            let withdrawal = review::Withdrawal { reason };
            let action = Action::new(
                Kind::CorrectionWithdraw,
                "sidak-server review withdraw",
                audit::withdrawal_asked(&id, &withdrawal),
            );
            let written = audit::audited_blocking(state.db(), &cli_actor(Some(&reviewer)), &action, now, |tx| {
                let written = review::withdraw(tx, &instruments, &reviewer, &id, &withdrawal, now)?;
                let done = audit::withdrawn(&written);
                Ok((written, done))
            })?;
            show(json, &written, || written_lines(&written));
        }
        ReviewCmd::Resolve { entity, field, choose, value, reason, by } => {
            let reviewer = review::Reviewer::local_admin(&by)?;
            let value = value.map(|v| json_arg("--value", &v)).transpose()?;
            let instruments = state.instruments();
            let now = now();
            let resolution = review::Resolution { entity, field, choose, value, reason };
            let action =
                Action::new(Kind::ConflictResolve, "sidak-server review resolve", audit::resolution_asked(&resolution));
            let resolved = audit::audited_blocking(state.db(), &cli_actor(Some(&reviewer)), &action, now, |tx| {
                let resolved = review::resolve(tx, &instruments, &reviewer, &resolution, now)?;
                let done = audit::resolved(&resolved);
                Ok((resolved, done))
            })?;
            show(json, &resolved, || format!("conflict resolved by\n{}", written_lines(&resolved.correction)));
        }
    }
    Ok(())
}

/// mimalloc rather than the system allocator: see the workspace manifest.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(code, message)) => {
            eprintln!("sidak-server: {message}");
            ExitCode::from(code)
        }
    }
}
