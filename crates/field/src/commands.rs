//! The commands of `sidak-field`, as library functions.

use std::path::{Path, PathBuf};

use sidak_core::instrument::{builtin, builtin_ids, load_instrument, Instrument};
use sidak_core::scoring::{render_table, score_season, SeasonInput};

use crate::error::FieldError;
use crate::output::Output;

/// Reads a file whole (for small documents: instruments, seasons).
pub(crate) fn read_text(path: &Path) -> Result<String, FieldError> {
    std::fs::read_to_string(path).map_err(|source| FieldError::ReadFile { path: path.to_owned(), source })
}

/// An instrument by built-in id, or from a `.json` file.
pub fn resolve_instrument(name: &str) -> Result<Instrument, FieldError> {
    let path = PathBuf::from(name);
    if name.ends_with(".json") || path.is_file() {
        return Ok(load_instrument(&read_text(&path)?)?);
    }
    let id = name.split_once('@').map(|(id, _)| id).unwrap_or(name);
    match builtin(id) {
        Some(instrument) if name == id || name == instrument.reference.to_string() => Ok(instrument),
        _ => Err(FieldError::UnknownInstrument { name: name.to_owned(), known: builtin_ids().join(", ") }),
    }
}

/// `sidak-field score`: scores a season file against an instrument.
pub fn score(instrument: &str, season_path: &Path) -> Result<Output, FieldError> {
    let instrument = resolve_instrument(instrument)?;
    let text = read_text(season_path)?;
    let season: SeasonInput = serde_json::from_str(&text).map_err(|e| FieldError::BadJson {
        path: season_path.to_owned(),
        what: "a season (sidak-season/1, see docs/scoring.md)",
        message: e.to_string(),
    })?;
    let results = score_season(&instrument, &season)?;
    let title = format!(
        "{} — {}{}",
        instrument.reference,
        instrument.title,
        season.season.as_deref().map(|s| format!(", season {s}")).unwrap_or_default()
    );
    let json = serde_json::to_value(&results).expect("results serialise");
    Ok(Output::new(render_table(&results, &title), json))
}
