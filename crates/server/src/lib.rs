//! Sidak's sync server: the op log on SQLite, merge, incremental recompute, scoped
//! access, results and administration. The `sidak-server` binary is a thin shell;
//! [`api::serve`] runs the HTTP API on a listener the caller binds.

pub mod admin;
pub mod admin_api;
pub mod api;
pub mod auth;
pub mod backup;
pub mod db;
pub mod demo;
pub mod error;
pub mod ledger;
pub mod manifests;
pub mod push;
pub mod results;
pub mod results_api;
pub mod review;
pub mod review_api;
pub mod state;
pub mod sync_api;
pub mod upstream;
