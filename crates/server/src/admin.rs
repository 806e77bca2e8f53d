//! Administrative commands that work on files and stores without a running server.

use std::path::Path;

use sidak_core::instrument::{load_instrument, Instrument, InstrumentErrors};

/// Why an instrument file could not be validated.
#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The document has faults.
    #[error("{path}: {faults}")]
    Invalid {
        /// The file.
        path: String,
        /// Every fault.
        faults: InstrumentErrors,
    },
}

/// `sidak-server instrument validate <file>`: loads the file and reports every fault.
pub fn validate_instrument_file(path: &Path) -> Result<Instrument, ValidateError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ValidateError::Read { path: shown.clone(), source })?;
    load_instrument(&text).map_err(|faults| ValidateError::Invalid { path: shown, faults })
}
