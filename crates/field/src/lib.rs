//! Sidak's field client: everything an assessor does offline, in one SQLite file, and
//! the sync client that carries it to a server. The `sidak-field` binary is a thin
//! shell over [`commands`].

pub mod commands;
pub mod error;
pub mod output;

pub use error::{ExitCode, FieldError};
