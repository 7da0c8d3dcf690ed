//! Strom's broker layer: the Kafka API handlers, the topic catalog and the network server.
//!
//! It sits above `storage` (partition logs) and `raft` (the metadata quorum, for the cluster
//! issue) and below the `strom` binary. Only this crate and `protocol` know kafka-protocol's
//! message types; failures become Kafka error codes in one place, [`error`].

pub mod admin;
pub mod broker;
pub mod catalog;
pub mod client;
pub mod cluster;
pub mod config;
pub mod error;
mod fetcher;
pub mod group;
pub mod handlers;
pub mod lease;
pub mod observe;
pub mod producer_ids;
pub mod replica;
pub mod server;

pub use broker::Broker;
pub use config::BrokerConfig;

/// Runs blocking work (disk I/O) off the async workers; see `strom_storage::io`.
pub use strom_storage::io::blocking;
