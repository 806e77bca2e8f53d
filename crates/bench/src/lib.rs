//! Sidak's benchmarks. Each one measures Sidak and a raw baseline in the same run on
//! the same machine and reports the ratio, so figures from different machines can be
//! compared. Results and the commands that reproduce them are in docs/benchmarks.md.

pub mod day;
pub mod field;
pub mod ingest;
pub mod national;
pub mod proxy;
pub mod pull;
pub mod region;
pub mod report;
pub mod season;
pub mod server;

/// The passphrase the benchmark devices' stores are encrypted under.
pub fn passphrase() -> sidak_field::Passphrase {
    sidak_field::Passphrase::new("sidak bench device")
}
