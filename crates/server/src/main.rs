//! `sidak-server`: parses arguments, calls one library function, maps the result to an
//! exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Sidak sync server: receives field data, merges, recomputes and publishes results.
#[derive(Parser)]
#[command(name = "sidak-server", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Instrument documents.
    #[command(subcommand)]
    Instrument(InstrumentCommand),
}

#[derive(Subcommand)]
enum InstrumentCommand {
    /// Check an instrument file and print every fault (exit 3 if there is any).
    Validate {
        /// The instrument document (.json).
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Instrument(InstrumentCommand::Validate { file }) => {
            match sidak_server::admin::validate_instrument_file(&file) {
                Ok(instrument) => {
                    let indicators = instrument.indicators().count();
                    println!(
                        "{}: valid — {} ({} dimensions, {indicators} indicators, {} bands), digest {}",
                        file.display(),
                        instrument.reference,
                        instrument.dimensions.len(),
                        instrument.bands.len(),
                        instrument.digest
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("sidak-server: {e}");
                    ExitCode::from(3)
                }
            }
        }
    }
}
