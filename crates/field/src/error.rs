//! Errors of the field client, and the documented exit codes they map to.

use std::path::PathBuf;

/// Exit codes of `sidak-field` (also in `sidak-field --help` and docs/field.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitCode {
    /// 0: done.
    Ok = 0,
    /// 1: an unexpected internal failure.
    Internal = 1,
    /// 2: wrong usage (unknown command or flag).
    Usage = 2,
    /// 3: bad input: a file, value or answer that does not fit.
    BadInput = 3,
    /// 4: something named does not exist (visit, instrument, assignment).
    NotFound = 4,
    /// 5: the local store could not be read or written.
    Store = 5,
    /// 6: the server could not be reached or did not answer in time: try again later.
    Network = 6,
    /// 7: the server refused (bad token, no permission, unsupported version).
    Refused = 7,
}

/// Everything that can go wrong in the field client.
#[derive(Debug, thiserror::Error)]
pub enum FieldError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A JSON file is malformed.
    #[error("{path} is not valid JSON for {what}: {message}")]
    BadJson {
        /// The file.
        path: PathBuf,
        /// What it should have been.
        what: &'static str,
        /// The parser's message, with line and column.
        message: String,
    },
    /// An instrument is invalid.
    #[error("{source}")]
    Instrument {
        /// Every fault.
        #[from]
        source: sidak_core::instrument::InstrumentErrors,
    },
    /// No such instrument.
    #[error("unknown instrument `{name}` (built-in: {known}; or give the path of a .json file)")]
    UnknownInstrument {
        /// What was asked for.
        name: String,
        /// What exists.
        known: String,
    },
    /// Scoring input faults.
    #[error("{source}")]
    Scoring {
        /// Every fault.
        #[from]
        source: sidak_core::scoring::ScoringErrors,
    },
}

impl FieldError {
    /// The exit code for this error.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            FieldError::ReadFile { source, .. } if source.kind() == std::io::ErrorKind::NotFound => ExitCode::NotFound,
            FieldError::ReadFile { .. } => ExitCode::BadInput,
            FieldError::BadJson { .. } | FieldError::Instrument { .. } | FieldError::Scoring { .. } => {
                ExitCode::BadInput
            }
            FieldError::UnknownInstrument { .. } => ExitCode::NotFound,
        }
    }
}
