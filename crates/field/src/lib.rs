//! Sidak's field client: everything an assessor does offline, in one SQLite file and
//! its evidence files, all encrypted under the assessor's passphrase, and the sync
//! client that carries it to a server. A mobile app embeds [`Field`]; the
//! `sidak-field` binary is a thin shell over [`commands`].

pub mod app;
pub mod blobs;
pub mod commands;
pub mod error;
pub mod keys;
pub mod log;
pub mod output;
pub mod store;
pub mod sync;
pub mod view;

pub use app::Field;
pub use error::{ExitCode, FieldError};
pub use keys::{KdfParams, Passphrase};
