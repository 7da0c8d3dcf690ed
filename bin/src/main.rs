//! `strom`: the single binary. `strom` or `strom serve` starts a broker; with no flags it is a
//! complete single-node broker on localhost:9092 with data in `./data`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};
use strom_broker::config::{self, BrokerConfig};
use strom_broker::server::Server;
use strom_broker::Broker;

mod cli;
mod dev_cluster;
mod verify;

#[derive(Parser)]
#[command(
    name = "strom",
    version,
    about = "Strom: a Kafka-protocol-compatible message broker"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run a broker (the default).
    Serve(ServeArgs),
    /// Run a local cluster of combined broker+controller nodes on loopback; Ctrl-C stops it.
    DevCluster(dev_cluster::DevClusterArgs),
    /// Controlled shutdown of a running node through its admin listener (a Kubernetes preStop
    /// hook): leadership moves away and the node is fenced; it exits on SIGTERM.
    Shutdown(ShutdownArgs),
    /// List, describe, create, delete, alter topics; `apply -f` a topics file.
    Topics {
        #[command(subcommand)]
        cmd: cli::TopicsCmd,
        #[command(flatten)]
        common: cli::Common,
    },
    /// List and describe consumer groups, show lag, reset offsets, delete groups.
    Groups {
        #[command(subcommand)]
        cmd: cli::GroupsCmd,
        #[command(flatten)]
        common: cli::Common,
    },
    /// Write stdin lines to a topic.
    Produce {
        #[command(flatten)]
        args: cli::ProduceArgs,
        #[command(flatten)]
        common: cli::Common,
    },
    /// Print a topic's records to stdout.
    Consume {
        #[command(flatten)]
        args: cli::ConsumeArgs,
        #[command(flatten)]
        common: cli::Common,
    },
    /// Cluster overview: brokers, controller, under-replicated and offline partitions.
    Cluster {
        #[command(subcommand)]
        cmd: cli::ClusterCmd,
        #[command(flatten)]
        common: cli::Common,
    },
    /// Check any Kafka-compatible cluster for lost, duplicated, reordered or vanished writes:
    /// run a short workload, read it back, print the anomaly table.
    ///
    /// Three producers (idempotent acks=all, acks=all, acks=1; one record per batch, one
    /// request at a time, partitions round robin) write unique values to a new topic for
    /// --seconds; one reader per partition fetches them back from the leader while a sampler
    /// records every partition's log start and high watermark each 500 ms; at the end each
    /// partition is read once more from its log start to its high watermark, and the history
    /// (JSON lines, kept in --history) goes through the same checker as the fault suite.
    ///
    /// It injects no faults, runs no consumer group and compares no replica files on disk:
    /// the fault suite (tests/jepsen/) does those. `--check FILE` re-checks any history.
    ///
    /// Exit status: 0 no anomaly, 1 anomalies found, 2 the run itself failed (cannot
    /// connect, cannot create the topic, nothing acknowledged, a partition without its final
    /// read and no anomaly but `unseen`, an unreadable or malformed history).
    Verify {
        #[command(flatten)]
        args: verify::VerifyArgs,
        #[command(flatten)]
        common: cli::Common,
    },
}

#[derive(Args)]
struct ShutdownArgs {
    /// The node's admin listener, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:9644")]
    admin: String,
}

#[derive(Args, Default)]
struct ServeArgs {
    /// A Kafka-style server.properties file.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// `listeners`, e.g. PLAINTEXT://0.0.0.0:9092.
    #[arg(long)]
    listeners: Option<String>,
    /// `advertised.listeners`, e.g. PLAINTEXT://broker-0.example:9092.
    #[arg(long)]
    advertised_listeners: Option<String>,
    /// `log.dirs`: the data directory.
    #[arg(long)]
    log_dirs: Option<String>,
    /// `node.id`.
    #[arg(long)]
    node_id: Option<i32>,
    /// Any other config key, as KEY=VALUE (repeatable); wins over the file and environment.
    #[arg(long = "override", short = 'o', value_name = "KEY=VALUE")]
    overrides: Vec<String>,
}

impl ServeArgs {
    fn flag_layer(&self) -> Result<BTreeMap<String, String>, String> {
        let mut layer = BTreeMap::new();
        for kv in &self.overrides {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("--override `{kv}` is not KEY=VALUE"))?;
            layer.insert(k.trim().to_owned(), v.trim().to_owned());
        }
        let named = [
            ("listeners", self.listeners.clone()),
            ("advertised.listeners", self.advertised_listeners.clone()),
            ("log.dirs", self.log_dirs.clone()),
            ("node.id", self.node_id.map(|n| n.to_string())),
        ];
        for (k, v) in named {
            if let Some(v) = v {
                layer.insert(k.to_owned(), v);
            }
        }
        Ok(layer)
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STROM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("STROM_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn load_config(args: &ServeArgs) -> Result<BrokerConfig, String> {
    let mut layers = vec![config::pod_layer(std::env::vars())];
    if let Some(path) = &args.config {
        layers.push(config::read_properties(path).map_err(|e| e.to_string())?);
    }
    layers.push(config::env_layer(std::env::vars()));
    layers.push(args.flag_layer()?);
    BrokerConfig::from_layers(&layers).map_err(|e| e.to_string())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the broker");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn serve(args: ServeArgs) -> ExitCode {
    let started = Instant::now();
    let config = match load_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("strom: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let data_dir = config.log_dir.clone();
    let broker = match Broker::start(config).await {
        Ok(b) => b,
        Err(e) => {
            eprintln!(
                "strom: cannot start with data directory {}: {e}",
                data_dir.display()
            );
            return ExitCode::from(1);
        }
    };
    let background = tokio::spawn(Arc::clone(&broker).run_background());
    strom_broker::observe::install_recorder();
    let (admin_stop, admin_stop_rx) = tokio::sync::watch::channel(false);
    if let Some(addr) = broker.config.admin_listener.clone() {
        match tokio::net::TcpListener::bind(&addr).await {
            Ok(l) => {
                tracing::info!(address = %l.local_addr().map(|a| a.to_string()).unwrap_or(addr), "admin listener (/metrics, /healthz, /readyz, POST /shutdown)");
                tokio::spawn(strom_broker::observe::serve_admin(
                    broker.clone(),
                    l,
                    admin_stop_rx,
                ));
            }
            Err(e) => {
                eprintln!(
                    "strom: cannot open the admin listener on {addr}: {e} (set `admin.listener` to a free HOST:PORT, or empty to disable it)"
                );
                background.abort();
                return ExitCode::from(1);
            }
        }
    }
    tokio::select! {
        _ = broker.wait_ready() => {}
        reason = broker.fatal() => halt(&reason),
        _ = shutdown_signal() => {
            tracing::info!("stopped before joining the cluster");
            background.abort();
            return ExitCode::SUCCESS;
        }
    }
    let server = match Server::bind(broker.clone()).await {
        Ok(s) => s,
        Err(e) => {
            let l = &broker.config.listener;
            eprintln!(
                "strom: cannot listen on {}:{}: {e} (is another broker running? set `listeners` to a free port)",
                l.host, l.port
            );
            return ExitCode::from(1);
        }
    };
    broker.set_serving();
    let adv = &broker.config.advertised;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        node_id = broker.node_id(),
        cluster_id = %broker.cluster_id(),
        listener = %server.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        advertised = %format!("{}:{}", adv.host, adv.port),
        data_dir = %broker.config.log_dir.display(),
        voters = broker.config.cluster.voters.len().max(1),
        controller = ?broker.quorum.leader(),
        topics = broker.catalog.all().len(),
        startup_ms = started.elapsed().as_millis() as u64,
        "strom is ready"
    );
    let stopping = broker.clone();
    server
        .run(async move {
            tokio::select! {
                _ = shutdown_signal() => {}
                // No controlled shutdown: a node whose disk or metadata store failed may act
                // on state that is no longer true (a leadership already moved, a high
                // watermark gone stale) for as long as it keeps answering.
                reason = stopping.fatal() => halt(&reason),
            }
            // Leadership moves away while this node still answers, so clients fail over
            // without waiting for a session timeout.
            stopping.controlled_shutdown().await;
        })
        .await;
    // Membership changes of the last moments, so that groups resume after the restart (the
    // flusher in the background task must still run for these writes).
    broker.persist_groups().await;
    let _ = admin_stop.send(true);
    background.abort();
    broker.quorum.shutdown().await;
    tracing::info!("flushing and closing logs");
    match strom_broker::blocking(move || broker.close()).await {
        Ok(Ok(())) => {
            tracing::info!("clean shutdown");
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "shutdown could not flush everything; the next start will recover");
            ExitCode::from(1)
        }
        Err(e) => {
            tracing::error!(error = %e, "shutdown task failed");
            ExitCode::from(1)
        }
    }
}

/// Like Kafka's halt after a failed disk: nothing more is written, no task is waited for (a
/// blocking call stuck on the failed disk would hold up an orderly runtime shutdown), and the
/// next start recovers from what is on disk.
fn halt(reason: &str) -> ! {
    tracing::error!(%reason, "halting");
    eprintln!("strom: stopped: {reason}");
    std::process::exit(1)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match cli.command {
        Some(Command::Serve(args)) => serve(args).await,
        Some(Command::DevCluster(args)) => dev_cluster::run(args, shutdown_signal()).await,
        Some(Command::Shutdown(args)) => shutdown_node(&args.admin).await,
        Some(Command::Topics { cmd, common }) => cli::topics(cmd, common).await,
        Some(Command::Groups { cmd, common }) => cli::groups(cmd, common).await,
        Some(Command::Produce { args, common }) => cli::produce(args, common).await,
        Some(Command::Consume { args, common }) => cli::consume(args, common).await,
        Some(Command::Cluster { cmd, common }) => cli::cluster(cmd, common).await,
        Some(Command::Verify { args, common }) => verify::run(args, common).await,
        None => serve(cli.serve).await,
    }
}

/// `strom shutdown`: POST /shutdown to the node's admin listener and wait for the answer.
async fn shutdown_node(admin: &str) -> ExitCode {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let run = async {
        let mut s = tokio::net::TcpStream::connect(admin).await?;
        let req = format!(
            "POST /shutdown HTTP/1.1\r\nHost: {admin}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await?;
        let mut answer = String::new();
        s.read_to_string(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    match tokio::time::timeout(std::time::Duration::from_secs(60), run).await {
        Ok(Ok(answer)) if answer.starts_with("HTTP/1.1 200") => {
            println!("controlled shutdown complete");
            ExitCode::SUCCESS
        }
        Ok(Ok(answer)) => {
            eprintln!(
                "strom: the node at {admin} refused the shutdown: {}",
                answer.lines().next().unwrap_or("(no answer)")
            );
            ExitCode::from(1)
        }
        Ok(Err(e)) => {
            eprintln!("strom: cannot reach the admin listener at {admin}: {e}");
            ExitCode::from(1)
        }
        Err(_) => {
            eprintln!("strom: no answer from {admin} within 60 s");
            ExitCode::from(1)
        }
    }
}
