//! Instruments: a year's methodology as data — the tree, answer kinds, roll-up rules
//! and grade bands — loaded from JSON with every fault reported at once.

mod builtin;
mod load;
mod model;

pub use builtin::{builtin, builtin_ids, builtin_text, BUILTIN_IDS};
pub use load::{load_instrument, Fault, InstrumentErrors};
pub use model::*;

#[cfg(test)]
mod tests;
