//! Sidak's pure domain: instruments, scoring, records, clocks, ops, merge and the
//! wire types of the sync protocol.
//!
//! **Boundary:** no IO, no async, no SQL, no clock reads, no randomness. Time and new
//! ids are arguments. CI checks that no IO crate is a dependency.

pub mod canonical;
pub mod chain;
pub mod hash;
pub mod hlc;
pub mod ids;
pub mod instrument;
pub mod manifest;
pub mod merge;
#[cfg(test)]
mod merge_tests;
pub mod num;
pub mod op;
pub mod records;
#[cfg(test)]
mod records_tests;
pub mod scoring;
pub mod sign;
pub mod sync;
pub mod wire;
