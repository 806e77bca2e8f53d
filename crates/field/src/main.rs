//! `sidak-field`: the assessor's command line. Parses arguments, calls one library
//! function, prints its output and maps errors to the documented exit codes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode as ProcessExit;

use clap::{Parser, Subcommand, ValueEnum};
use sidak_core::instrument::{Location, RespondentKind};
use sidak_core::records::VisitMode;
use sidak_field::{commands, output::Output, Field, FieldError, KdfParams, Passphrase};

const EXIT_CODES: &str = "Passphrase: every command that opens the store asks for it on the terminal (without echo), or takes it from --passphrase-file or SIDAK_PASSPHRASE.

Exit codes: 0 done · 1 internal error · 2 usage · 3 bad input · 4 not found · 5 local store error · 6 network (try again later) · 7 refused by the server · 8 wrong passphrase";

/// Sidak field client: record assessment visits offline and sync them.
#[derive(Parser)]
#[command(name = "sidak-field", version, after_help = EXIT_CODES)]
struct Cli {
    /// Where the device keeps its data (default: the user's data directory).
    #[arg(long, global = true, env = "SIDAK_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Write machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Read the store's passphrase from the first line of this file (for scripts;
    /// also SIDAK_PASSPHRASE; otherwise it is asked for on the terminal).
    #[arg(long, global = true, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Set this device up for an assessor.
    Init {
        /// The assessor's code.
        #[arg(long)]
        assessor: String,
        /// The assessor's region (province office) code.
        #[arg(long)]
        region: String,
        /// Memory for deriving the key from the passphrase (Argon2id), in MiB, when
        /// the store is created; more is slower to open and far slower to guess.
        #[arg(long, default_value_t = 64, value_name = "MIB")]
        kdf_memory_mib: u32,
    },
    /// The passphrase that unlocks this device's store.
    #[command(subcommand)]
    Passphrase(PassphraseCmd),
    /// Instruments on this device.
    #[command(subcommand)]
    Instrument(InstrumentCmd),
    /// List the assignments on this device, or load them from a file.
    Assignments {
        /// Show institution and unit names (hidden by default: covert visits).
        #[arg(long)]
        reveal: bool,
        #[command(subcommand)]
        action: Option<AssignmentsCmd>,
    },
    /// Record visits.
    #[command(subcommand)]
    Visit(VisitCmd),
    /// Respondent questionnaires taken during a visit.
    #[command(subcommand)]
    Respondent(RespondentCmd),
    /// Score a season file (sidak-season/1) and print the result tree.
    Score {
        /// A built-in instrument id (kepatuhan-2021, penilaian-2023, ikm-2017, ipp-2017) or a .json file.
        #[arg(long)]
        instrument: String,
        /// The season file.
        season: PathBuf,
    },
    /// What is unsent, when the device last synced, where its visits are held.
    Status,
    /// Free the local copies of photos the centre holds (with the records citing
    /// them), as last learnt by `sync`; everything else stays.
    Prune,
    /// Print this device's end-of-day manifest (its chain, verified) for
    /// `sidak-server manifest compare`.
    Manifest,
    /// Send everything unsent to the server and receive what is new.
    Sync {
        /// The server's URL (remembered for next time).
        #[arg(long, env = "SIDAK_SERVER")]
        server: Option<String>,
        /// The device's token (remembered for next time).
        #[arg(long, env = "SIDAK_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// No progress display.
        #[arg(long, short)]
        quiet: bool,
        /// Timeout of one request, in seconds.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
        /// Keep retrying transient failures for this many seconds.
        #[arg(long, default_value_t = 120)]
        retry_for: u64,
        /// Also trust the certificate authorities in this PEM file (an office's own CA).
        #[arg(long, env = "SIDAK_CA_FILE")]
        ca_file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum PassphraseCmd {
    /// Replace the passphrase (asked for twice, or from --new-passphrase-file or
    /// SIDAK_NEW_PASSPHRASE); the old one stops working, no data changes.
    Change {
        /// Read the new passphrase from the first line of this file.
        #[arg(long, value_name = "FILE")]
        new_passphrase_file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum InstrumentCmd {
    /// Load an instrument: a built-in id or a .json file.
    Load {
        /// Id or file.
        instrument: String,
    },
    /// List the instruments on this device.
    List,
}

#[derive(Subcommand)]
enum AssignmentsCmd {
    /// Replace the assignments with those in a file (the JSON of GET /v1/assignments).
    Load {
        /// The file.
        file: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    Covert,
    Announced,
}

#[derive(Clone, Copy, ValueEnum)]
enum LocationArg {
    Mpp,
    Dpmptsp,
    OwnOffice,
    Online,
}

#[derive(Clone, Copy, ValueEnum)]
enum KindArg {
    Official,
    ComplaintOfficer,
    ServiceUser,
}

#[derive(Subcommand)]
enum VisitCmd {
    /// Start a visit for an assignment.
    Start {
        /// The assignment (id or its first characters).
        #[arg(long)]
        assignment: String,
        /// The service product observed (code or id); optional when the assignment has one.
        #[arg(long)]
        product: Option<String>,
        /// Covert or announced (default: the assignment's).
        #[arg(long, value_enum)]
        mode: Option<ModeArg>,
        /// Where the service was delivered.
        #[arg(long, value_enum)]
        location: LocationArg,
    },
    /// Answer an indicator: yes/no, a number, an option id, a decimal, text, or `na`.
    Answer {
        /// The visit (id or its first characters).
        visit: String,
        /// The indicator id.
        indicator: String,
        /// The answer.
        value: String,
    },
    /// Add a note.
    Note {
        /// The visit.
        visit: String,
        /// The text.
        text: String,
        /// The indicator it is about.
        #[arg(long)]
        indicator: Option<String>,
    },
    /// Attach an evidence file (photo, scan).
    Attach {
        /// The visit.
        visit: String,
        /// The file.
        file: PathBuf,
        /// The indicator it supports.
        #[arg(long)]
        indicator: Option<String>,
        /// Its media type (default: from the file extension).
        #[arg(long)]
        media_type: Option<String>,
    },
    /// Show a visit with its provisional score.
    Show {
        /// The visit.
        visit: String,
        /// Show institution, unit and product names.
        #[arg(long)]
        reveal: bool,
    },
    /// Submit a visit.
    Finish {
        /// The visit.
        visit: String,
    },
    /// List visits.
    List {
        /// Show institution and unit names.
        #[arg(long)]
        reveal: bool,
    },
}

#[derive(Subcommand)]
enum RespondentCmd {
    /// Start a questionnaire in a visit.
    Add {
        /// The visit.
        visit: String,
        /// Who answers.
        #[arg(long, value_enum)]
        kind: KindArg,
        /// Their role (e.g. "kepala seksi"); never their name.
        #[arg(long)]
        role: Option<String>,
    },
    /// Record a respondent's answer.
    Answer {
        /// The respondent (id or its first characters).
        respondent: String,
        /// The indicator id.
        indicator: String,
        /// The answer.
        value: String,
    },
}

fn data_dir(cli: &Cli) -> PathBuf {
    cli.data_dir.clone().unwrap_or_else(commands::default_data_dir)
}

/// Opens the device's store; never creates one.
fn open(cli: &Cli) -> Result<Field, FieldError> {
    let dir = data_dir(cli);
    if !Field::exists(&dir) {
        return Err(FieldError::NotInitialised);
    }
    Field::open_existing(&dir, &passphrase(cli)?)
}

/// `init`: opens the store, or creates it under a new passphrase.
fn open_for_init(cli: &Cli, kdf_memory_mib: u32) -> Result<Field, FieldError> {
    let dir = data_dir(cli);
    if Field::exists(&dir) {
        return Field::open_existing(&dir, &passphrase(cli)?);
    }
    let new = given_passphrase(cli).unwrap_or_else(ask_new)?;
    let kdf = KdfParams { memory_kib: kdf_memory_mib.saturating_mul(1024), ..KdfParams::default() };
    Field::open_or_create(&dir, &new, kdf, sidak_field::app::system_clock())
}

/// The passphrase: `--passphrase-file`, else `SIDAK_PASSPHRASE`, else typed.
fn passphrase(cli: &Cli) -> Result<Passphrase, FieldError> {
    given_passphrase(cli).unwrap_or_else(|| ask("passphrase: "))
}

/// The passphrase given for scripts, if any: `--passphrase-file`, else `SIDAK_PASSPHRASE`.
fn given_passphrase(cli: &Cli) -> Option<Result<Passphrase, FieldError>> {
    match (&cli.passphrase_file, std::env::var("SIDAK_PASSPHRASE")) {
        (Some(path), _) => Some(Passphrase::from_file(path)),
        (None, Ok(text)) => Some(Ok(Passphrase::new(text))),
        (None, Err(_)) => None,
    }
}

/// A new passphrase from `file`, else `SIDAK_NEW_PASSPHRASE`, else typed twice.
fn new_passphrase(file: Option<&Path>) -> Result<Passphrase, FieldError> {
    match (file, std::env::var("SIDAK_NEW_PASSPHRASE")) {
        (Some(path), _) => Passphrase::from_file(path),
        (None, Ok(text)) => Ok(Passphrase::new(text)),
        (None, Err(_)) => ask_new(),
    }
}

fn ask_new() -> Result<Passphrase, FieldError> {
    let first = ask("new passphrase: ")?;
    first.check_new()?;
    if first != ask("the same again: ")? {
        return Err(FieldError::Invalid("the two passphrases differ; nothing was changed".into()));
    }
    Ok(first)
}

/// Reads a passphrase from the terminal without echo.
fn ask(prompt: &str) -> Result<Passphrase, FieldError> {
    rpassword::prompt_password(prompt).map(Passphrase::new).map_err(|e| FieldError::PassphraseNeeded(e.to_string()))
}

fn run(cli: &Cli) -> Result<Output, FieldError> {
    match &cli.command {
        Command::Score { instrument, season } => commands::score(instrument, season),
        Command::Init { assessor, region, kdf_memory_mib } => {
            commands::init(&mut open_for_init(cli, *kdf_memory_mib)?, assessor, region)
        }
        Command::Passphrase(PassphraseCmd::Change { new_passphrase_file }) => {
            let mut field = open(cli)?;
            commands::passphrase_change(&mut field, &new_passphrase(new_passphrase_file.as_deref())?)
        }
        Command::Instrument(InstrumentCmd::Load { instrument }) => {
            commands::instrument_load(&mut open(cli)?, instrument)
        }
        Command::Instrument(InstrumentCmd::List) => Ok(commands::instrument_list(&open(cli)?)),
        Command::Assignments { action: Some(AssignmentsCmd::Load { file }), .. } => {
            commands::assignments_load(&mut open(cli)?, file)
        }
        Command::Assignments { action: None, reveal } => commands::assignments(&mut open(cli)?, *reveal),
        Command::Visit(cmd) => {
            let mut field = open(cli)?;
            match cmd {
                VisitCmd::Start { assignment, product, mode, location } => {
                    let mode = mode.map(|m| match m {
                        ModeArg::Covert => VisitMode::Covert,
                        ModeArg::Announced => VisitMode::Announced,
                    });
                    let location = match location {
                        LocationArg::Mpp => Location::Mpp,
                        LocationArg::Dpmptsp => Location::Dpmptsp,
                        LocationArg::OwnOffice => Location::OwnOffice,
                        LocationArg::Online => Location::Online,
                    };
                    commands::visit_start(&mut field, assignment, product.as_deref(), mode, location)
                }
                VisitCmd::Answer { visit, indicator, value } => {
                    commands::visit_answer(&mut field, visit, indicator, value)
                }
                VisitCmd::Note { visit, text, indicator } => {
                    commands::visit_note(&mut field, visit, text, indicator.as_deref())
                }
                VisitCmd::Attach { visit, file, indicator, media_type } => {
                    commands::visit_attach(&mut field, visit, file, indicator.as_deref(), media_type.as_deref())
                }
                VisitCmd::Show { visit, reveal } => commands::visit_show(&mut field, visit, *reveal),
                VisitCmd::Finish { visit } => commands::visit_finish(&mut field, visit),
                VisitCmd::List { reveal } => commands::visit_list(&mut field, *reveal),
            }
        }
        Command::Respondent(cmd) => {
            let mut field = open(cli)?;
            match cmd {
                RespondentCmd::Add { visit, kind, role } => {
                    let kind = match kind {
                        KindArg::Official => RespondentKind::Official,
                        KindArg::ComplaintOfficer => RespondentKind::ComplaintOfficer,
                        KindArg::ServiceUser => RespondentKind::ServiceUser,
                    };
                    commands::respondent_add(&mut field, visit, kind, role.as_deref())
                }
                RespondentCmd::Answer { respondent, indicator, value } => {
                    commands::respondent_answer(&mut field, respondent, indicator, value)
                }
            }
        }
        Command::Status => commands::status(&mut open(cli)?),
        Command::Prune => commands::prune(&mut open(cli)?),
        Command::Manifest => commands::manifest(&mut open(cli)?),
        Command::Sync { server, token, quiet, timeout, retry_for, ca_file } => {
            let mut field = open(cli)?;
            let show = !quiet && !cli.json && std::io::IsTerminal::is_terminal(&std::io::stderr());
            let network = commands::Network { timeout: *timeout, retry_for: *retry_for, ca_file: ca_file.clone() };
            commands::sync(&mut field, server.as_deref(), token.as_deref(), show, &network)
        }
    }
}

/// Writes to stdout; a closed pipe (`| head`) ends quietly instead of panicking.
fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
}

fn main() -> ProcessExit {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(output) => {
            if cli.json {
                emit(&format!("{}\n", serde_json::to_string_pretty(&output.json).expect("JSON output")));
            } else {
                emit(&output.human);
            }
            ProcessExit::SUCCESS
        }
        Err(err) => {
            let code = err.exit_code();
            if cli.json {
                let body = serde_json::json!({"error": {"exit_code": code as u8, "message": err.to_string()}});
                eprintln!("{body}");
            } else {
                eprintln!("sidak-field: {err}");
            }
            ProcessExit::from(code as u8)
        }
    }
}
