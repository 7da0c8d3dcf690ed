//! `strom topics|groups|produce|consume|cluster`: the operations of Kafka's `kafka-*.sh`
//! scripts, over the Kafka protocol against any broker. Tables for people, `--output json`
//! for scripts (field names are part of the interface), a clear message and exit code 1 on
//! failure.

use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;

mod cluster;
mod groups;
mod io;
pub(crate) mod kafka;
pub(crate) mod topics;

#[derive(Args, Clone)]
pub struct Common {
    /// A broker to bootstrap from, HOST:PORT (any broker of the cluster).
    #[arg(long, short = 'b', default_value = "localhost:9092", global = true)]
    pub bootstrap_server: String,
    /// `table` for people, `json` for scripts.
    #[arg(long, short = 'o', value_enum, default_value = "table", global = true)]
    pub output: Output,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
pub enum TopicsCmd {
    /// Topic names with their partition count and replication factor.
    List {
        /// Leave out internal topics such as __consumer_offsets.
        #[arg(long)]
        exclude_internal: bool,
    },
    /// Partitions (leader, replicas, ISR) and non-default configs of topics (all when none given).
    Describe { topics: Vec<String> },
    /// Create a topic.
    Create {
        topic: String,
        /// Partitions (the broker's num.partitions when omitted).
        #[arg(long)]
        partitions: Option<i32>,
        /// Replication factor (the broker's default.replication.factor when omitted).
        #[arg(long)]
        replication_factor: Option<i16>,
        /// Topic config KEY=VALUE (repeatable).
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
        /// Succeed when the topic already exists.
        #[arg(long)]
        if_not_exists: bool,
    },
    /// Delete topics.
    Delete {
        #[arg(required = true)]
        topics: Vec<String>,
        /// Succeed when a topic does not exist.
        #[arg(long)]
        if_exists: bool,
    },
    /// Add partitions and change topic configs.
    Alter {
        topic: String,
        /// New (larger) partition count.
        #[arg(long)]
        partitions: Option<i32>,
        /// Set a topic config KEY=VALUE (repeatable).
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
        /// Remove a topic config override, back to the broker default (repeatable).
        #[arg(long = "delete-config", value_name = "KEY")]
        delete_configs: Vec<String>,
    },
    /// Make the cluster match a topics file: create missing topics, raise partitions, set
    /// configs, and report drift that cannot be fixed in place. Idempotent.
    Apply {
        /// YAML (or JSON) file: `topics: [{name, partitions, replicationFactor, configs}]`.
        #[arg(long, short = 'f')]
        file: std::path::PathBuf,
        /// Show what would change without changing it.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
pub enum GroupsCmd {
    /// Consumer groups of every broker.
    List,
    /// A group's state, members and per-partition offsets and lag.
    Describe { group: String },
    /// Committed offset, log end and lag per partition, for one group or all.
    Lag { group: Option<String> },
    /// Move a stopped group's committed offsets (a dry run unless --execute).
    ResetOffsets(groups::ResetArgs),
    /// Delete groups (they must have no active members).
    Delete {
        #[arg(required = true)]
        groups: Vec<String>,
    },
}

#[derive(Subcommand)]
pub enum ClusterCmd {
    /// Cluster id, brokers, controller, and partitions that are under-replicated or offline.
    Info,
}

pub async fn topics(cmd: TopicsCmd, common: Common) -> ExitCode {
    finish("topics", topics::run(cmd, &common).await)
}

pub async fn groups(cmd: GroupsCmd, common: Common) -> ExitCode {
    finish("groups", groups::run(cmd, &common).await)
}

pub async fn produce(args: io::ProduceArgs, common: Common) -> ExitCode {
    finish("produce", io::produce(args, &common).await)
}

pub async fn consume(args: io::ConsumeArgs, common: Common) -> ExitCode {
    finish("consume", io::consume(args, &common).await)
}

pub async fn cluster(cmd: ClusterCmd, common: Common) -> ExitCode {
    finish("cluster", cluster::run(cmd, &common).await)
}

pub use io::{ConsumeArgs, ProduceArgs};

fn finish(what: &str, result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strom {what}: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Prints `value` as JSON, or `rows` under `headers` as an aligned table.
fn emit<T: Serialize>(
    common: &Common,
    value: &T,
    headers: &[&str],
    rows: Vec<Vec<String>>,
) -> anyhow::Result<()> {
    match common.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Output::Table => print_table(headers, &rows),
    }
    Ok(())
}

fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// `KEY=VALUE` arguments.
fn parse_pairs(pairs: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    pairs
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .ok_or_else(|| anyhow::anyhow!("`{kv}` is not KEY=VALUE"))
        })
        .collect()
}

fn ids(v: &[i32]) -> String {
    v.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}
