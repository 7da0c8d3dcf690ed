//! Strom's safety checker. A workload writes a [`history`] of what its clients did and saw
//! (sends, polls, commits, watermarks, the faults injected, and after healing a final read and
//! each replica's files); [`check`] finds every anomaly class a Jepsen-style queue checker
//! looks for in Kafka-like systems. The fault suite (`tests/jepsen/`) and `strom verify`
//! share it.

pub mod check;
pub mod history;

pub use check::{check, Anomaly, Report};
