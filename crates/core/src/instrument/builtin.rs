//! The instruments Sidak ships, compiled in from `crates/core/instruments/`.

use super::{load_instrument, Instrument};

/// Ids of the built-in instruments.
pub const BUILTIN_IDS: [&str; 4] = ["kepatuhan-2021", "penilaian-2023", "ikm-2017", "ipp-2017"];

const SOURCES: [(&str, &str); 4] = [
    ("kepatuhan-2021", include_str!("../../instruments/kepatuhan-2021.json")),
    ("penilaian-2023", include_str!("../../instruments/penilaian-2023.json")),
    ("ikm-2017", include_str!("../../instruments/ikm-2017.json")),
    ("ipp-2017", include_str!("../../instruments/ipp-2017.json")),
];

/// Ids of the built-in instruments.
pub fn builtin_ids() -> &'static [&'static str] {
    &BUILTIN_IDS
}

/// A built-in instrument by id, or `None` when there is none by that name.
pub fn builtin(id: &str) -> Option<Instrument> {
    let (_, text) = SOURCES.iter().find(|(name, _)| *name == id)?;
    // The built-in files are checked by the test suite; a fault here is a build defect.
    Some(load_instrument(text).unwrap_or_else(|e| panic!("built-in instrument {id} is invalid: {e}")))
}

/// The document text of a built-in instrument.
pub fn builtin_text(id: &str) -> Option<&'static str> {
    SOURCES.iter().find(|(name, _)| *name == id).map(|(_, t)| *t)
}
