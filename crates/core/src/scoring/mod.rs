//! Scoring: (instrument, organisation tree, answers, questionnaires, deductions) →
//! a result tree, in exact arithmetic, identical on every machine.

mod answer;
mod engine;
mod input;
mod json;
mod result;
mod table;

pub use answer::{parse_answer, AnswerError, AnswerValue};
pub use engine::{score_institution, score_season, ScoringErrors};
pub use input::*;
pub use json::{institution_document, unit_document};
pub use result::*;
pub use table::render_table;

#[cfg(test)]
mod tests;
