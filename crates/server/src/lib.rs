//! Sidak's sync server: the op log on SQLite, merge, incremental recompute, scoped
//! access, tiers, results and the dashboard. The `sidak-server` binary is a thin shell.

pub mod admin;
