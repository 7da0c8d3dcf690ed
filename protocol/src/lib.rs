//! Strom's bottom layer: everything about bytes on the wire and in record batches.
//!
//! It owns Kafka request framing, the record-batch (magic v2) header view and its CRC32C
//! validation, and the four compression codecs with the framings real clients use. It knows
//! nothing about partitions, files or sockets; `storage` and `broker` build on it. Message
//! structs come from the `kafka-protocol` crate, re-exported here so that every layer links the
//! same version.

pub mod batch;
pub mod codec;
pub mod frame;
pub mod records;

pub use kafka_protocol;
