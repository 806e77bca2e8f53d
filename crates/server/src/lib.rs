//! Sidak's sync server: the op log on SQLite, merge, incremental recompute, scoped
//! access, results and administration. The `sidak-server` binary is a thin shell;
//! [`api::serve`] runs the HTTP API on a listener the caller binds.

pub mod access_api;
pub mod admin;
pub mod admin_api;
pub mod api;
pub mod audit;
pub mod auth;
pub mod backup;
pub mod dashboard;
pub mod db;
pub mod demo;
pub mod error;
pub mod exports;
pub mod fieldwork;
pub mod html;
pub mod ledger;
pub mod lockout;
pub mod manifests;
pub mod provenance;
pub mod push;
pub mod push_group;
pub mod rapor;
pub mod reports_api;
pub mod results;
pub mod results_api;
pub mod review;
pub mod review_api;
pub mod season;
pub mod state;
pub mod sync_api;
pub mod synchealth;
pub mod tls;
pub mod upstream;
