//! `sidak-field`: the assessor's command line. Parses arguments, calls one library
//! function, prints its output and maps errors to the documented exit codes.

use std::path::PathBuf;
use std::process::ExitCode as ProcessExit;

use clap::{Parser, Subcommand};
use sidak_field::{commands, output::Output, FieldError};

const EXIT_CODES: &str = "Exit codes: 0 done · 1 internal error · 2 usage · 3 bad input · 4 not found · 5 local store error · 6 network (try again) · 7 refused by the server";

/// Sidak field client: record assessment visits offline and sync them.
#[derive(Parser)]
#[command(name = "sidak-field", version, after_help = EXIT_CODES)]
struct Cli {
    /// Write machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Score a season file (sidak-season/1) and print the result tree.
    Score {
        /// A built-in instrument id (kepatuhan-2021, penilaian-2023, ikm-2017, ipp-2017) or a .json file.
        #[arg(long)]
        instrument: String,
        /// The season file.
        season: PathBuf,
    },
}

fn run(cli: &Cli) -> Result<Output, FieldError> {
    match &cli.command {
        Command::Score { instrument, season } => commands::score(instrument, season),
    }
}

fn main() -> ProcessExit {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(output) => {
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&output.json).expect("JSON output"));
            } else {
                print!("{}", output.human);
            }
            ProcessExit::SUCCESS
        }
        Err(err) => {
            let code = err.exit_code();
            if cli.json {
                let body = serde_json::json!({"error": {"code": code as u8, "message": err.to_string()}});
                eprintln!("{body}");
            } else {
                eprintln!("sidak-field: {err}");
            }
            ProcessExit::from(code as u8)
        }
    }
}
