//! End-to-end test support: real servers and field clients on loopback, faults injected.

pub mod harness;
pub mod proxy;
