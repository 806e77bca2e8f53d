//! Errors of the field client, and the documented exit codes they map to.

use std::path::PathBuf;

use sidak_core::records::Rejection;

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
    /// 8: wrong passphrase; nothing was read or changed.
    WrongPassphrase = 8,
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
    /// A file or directory could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The SQLite store failed.
    #[error("the local store {path} failed: {source}")]
    Store {
        /// The database file.
        path: PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
    /// The store holds something it should not (a bug or tampering).
    #[error("the local store is damaged: {0}")]
    Corrupt(String),
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
    #[error("unknown instrument `{name}` (available: {known}; or give the path of a .json file)")]
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
    /// The passphrase does not open this device's store.
    #[error("wrong passphrase: the store was not opened and nothing was changed")]
    WrongPassphrase,
    /// No passphrase was given and there is no terminal to ask on.
    #[error("this command needs the device's passphrase: type it when asked, or give it in SIDAK_PASSPHRASE or with --passphrase-file ({0})")]
    PassphraseNeeded(String),
    /// The data directory holds a store from before encryption at rest.
    #[error("{path} is an unencrypted store made by an earlier sidak-field; sync it with that version, then set the device up again in an empty data directory")]
    Unencrypted {
        /// The database file.
        path: PathBuf,
    },
    /// A stored evidence file no longer decrypts (damaged storage or tampering).
    #[error("the evidence file {path} is damaged: it no longer decrypts")]
    DamagedEvidence {
        /// The file.
        path: PathBuf,
    },
    /// The device has not been set up.
    #[error("this device is not set up yet: run `sidak-field init --assessor <code> --region <code>` first")]
    NotInitialised,
    /// `init` on a device that is set up.
    #[error("this device is already set up (origin {origin}, assessor {assessor}); its data directory is {dir}")]
    AlreadyInitialised {
        /// The origin.
        origin: String,
        /// The assessor.
        assessor: String,
        /// The directory.
        dir: PathBuf,
    },
    /// Nothing by that name.
    #[error("no {what} matches `{name}`")]
    NotFound {
        /// What was looked for.
        what: &'static str,
        /// The name given.
        name: String,
    },
    /// Several things match a short id.
    #[error("`{name}` matches {count} {what}s; give more of the id")]
    Ambiguous {
        /// What was looked for.
        what: &'static str,
        /// The name given.
        name: String,
        /// How many matched.
        count: usize,
    },
    /// A value or action the record model refuses.
    #[error("refused: {0}")]
    Rejected(Rejection),
    /// Bad input in words.
    #[error("{0}")]
    Invalid(String),
    /// A sync stopped.
    #[error("{0}")]
    Sync(Box<crate::sync::SyncError>),
}

impl FieldError {
    /// The exit code for this error.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            FieldError::ReadFile { source, .. } if source.kind() == std::io::ErrorKind::NotFound => ExitCode::NotFound,
            FieldError::ReadFile { .. } => ExitCode::BadInput,
            FieldError::BadJson { .. }
            | FieldError::Instrument { .. }
            | FieldError::Scoring { .. }
            | FieldError::Rejected(_)
            | FieldError::Invalid(_)
            | FieldError::AlreadyInitialised { .. }
            | FieldError::Ambiguous { .. } => ExitCode::BadInput,
            FieldError::UnknownInstrument { .. } | FieldError::NotFound { .. } | FieldError::NotInitialised => {
                ExitCode::NotFound
            }
            FieldError::Io { .. }
            | FieldError::Store { .. }
            | FieldError::Corrupt(_)
            | FieldError::Unencrypted { .. }
            | FieldError::DamagedEvidence { .. } => ExitCode::Store,
            FieldError::WrongPassphrase => ExitCode::WrongPassphrase,
            FieldError::PassphraseNeeded(_) => ExitCode::Usage,
            FieldError::Sync(e) => e.exit_code(),
        }
    }
}

/// Converts an SQLite error inside a transaction closure (the path is filled in by
/// the store).
pub(crate) fn db(source: rusqlite::Error) -> FieldError {
    FieldError::Store { path: PathBuf::from(crate::store::DB_FILE), source }
}
