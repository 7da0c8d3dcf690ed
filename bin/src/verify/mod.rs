//! `strom verify`: a safety check of any Kafka-compatible cluster, without fault injection.
//! It writes a bounded workload of unique values with three producers (idempotent acks=all,
//! acks=all, acks=1), reads it back with one reader per partition while sampling the
//! watermarks, reads every partition once more at the end, and runs the history through
//! `strom_verify::check`. `strom verify --check FILE` re-checks any history, the fault suite's
//! included.
//!
//! Exit status: 0 no anomaly, 1 anomalies, 2 the run itself failed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use clap::{value_parser, Args};
use serde::Serialize;
use strom_verify::history::{self, Event};
use strom_verify::{Anomaly, Report};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cli::kafka::{error_text, Client};
use crate::cli::{topics, Common, Output};

mod producer;
mod reader;
mod recorder;

use producer::{InFlight, Producer, Spec, SEND_DEADLINE, SPECS};
use reader::{Reader, CATCH_UP};
use recorder::Recorder;

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a new topic may take to have a leader for every partition.
const TOPIC_READY: Duration = Duration::from_secs(30);
/// Slack on top of a task's own deadline before the run aborts it.
const GRACE: Duration = Duration::from_secs(15);

/// Kafka errors a client retries (after refreshing its metadata): UNKNOWN_TOPIC_OR_PARTITION,
/// LEADER_NOT_AVAILABLE, NOT_LEADER_OR_FOLLOWER, REQUEST_TIMED_OUT, NETWORK_EXCEPTION,
/// NOT_ENOUGH_REPLICAS, NOT_ENOUGH_REPLICAS_AFTER_APPEND, KAFKA_STORAGE_ERROR,
/// FENCED_LEADER_EPOCH, UNKNOWN_LEADER_EPOCH.
const RETRIABLE: [i16; 10] = [3, 5, 6, 7, 13, 19, 20, 56, 74, 75];

#[derive(Args)]
pub struct VerifyArgs {
    /// Re-check an existing history (JSON lines, e.g. the fault suite's history.jsonl)
    /// instead of running a workload.
    #[arg(long, value_name = "FILE", conflicts_with_all = [
        "topic", "partitions", "replication_factor", "min_insync_replicas", "seconds", "rate",
        "history", "keep_topic",
    ])]
    check: Option<PathBuf>,
    /// Topic to write to (default `strom-verify-<unix secs>`); created if missing. An existing
    /// topic is read from its current end and never deleted; nothing else may write to it.
    #[arg(long)]
    topic: Option<String>,
    /// Partitions of the topic verify creates.
    #[arg(long, default_value_t = 6, value_parser = value_parser!(i32).range(1..=10_000))]
    partitions: i32,
    /// Replication factor of the topic verify creates (default: min(3, brokers)).
    #[arg(long, value_parser = value_parser!(i16).range(1..))]
    replication_factor: Option<i16>,
    /// min.insync.replicas of the topic verify creates (default: min(2, replication factor)).
    #[arg(long, value_parser = value_parser!(i16).range(1..))]
    min_insync_replicas: Option<i16>,
    /// How long the producers write.
    #[arg(long, default_value_t = 30, value_parser = value_parser!(u64).range(1..=86_400))]
    seconds: u64,
    /// Records per second per producer (at most: each waits for its previous acknowledgement).
    #[arg(long, default_value_t = 100, value_parser = value_parser!(u32).range(1..=100_000))]
    rate: u32,
    /// Where to write the history (JSON lines); must not exist. Default: a new file in the
    /// temporary directory, whose path is printed.
    #[arg(long, value_name = "FILE")]
    history: Option<PathBuf>,
    /// Leave the topic verify created in place (it is deleted at the end otherwise).
    #[arg(long)]
    keep_topic: bool,
}

/// What a live run did, printed beside the verdict.
#[derive(Serialize)]
struct RunInfo {
    bootstrap_server: String,
    topic: String,
    /// The run's tag, in every producer's name and so in every value.
    tag: String,
    partitions: usize,
    /// `None` for a topic that existed before (not looked up).
    replication_factor: Option<i16>,
    min_insync_replicas: Option<i16>,
    seconds: u64,
    rate: u32,
    topic_created: bool,
    topic_deleted: bool,
    /// Every partition got its final read; without one, unread writes count as `unseen`
    /// rather than being settled, and the run exits 2.
    complete: bool,
}

/// The JSON output: the checker's report with the run's context.
#[derive(Serialize)]
struct Verdict<'a> {
    #[serde(flatten)]
    report: &'a Report,
    history: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    run: Option<&'a RunInfo>,
    warnings: &'a [String],
}

pub async fn run(args: VerifyArgs, common: Common) -> ExitCode {
    if let Some(path) = &args.check {
        return check_file(path, &common);
    }
    match live(&args, &common).await {
        Ok((report, history, info, warnings)) => {
            let printed = print(&common, &report, &history, Some(&info), &warnings);
            if let Err(e) = printed {
                eprintln!("strom verify: {e:#}");
                return ExitCode::from(2);
            }
            let acked: usize = report
                .stats
                .sends
                .values()
                .filter_map(|by| by.get("ok"))
                .sum();
            // Without every final read, `unseen` writes may only be unread; any other
            // class stands on its own.
            let settled = report
                .counts
                .iter()
                .any(|(a, n)| *a != Anomaly::Unseen && *n > 0);
            if !info.complete && !settled {
                eprintln!("strom verify: the run is incomplete: some partitions have no final read (see the warnings), so writes they hold may count as unseen");
                ExitCode::from(2)
            } else if !report.ok() {
                ExitCode::from(1)
            } else if acked == 0 {
                eprintln!("strom verify: no send was acknowledged, so nothing was checked");
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("strom verify: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// `--check FILE`: the checker's verdict on an existing history.
fn check_file(path: &Path, common: &Common) -> ExitCode {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("strom verify: cannot read {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let events = match history::parse(&text) {
        Ok(ev) => ev,
        Err(e) => {
            eprintln!("strom verify: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    if events.is_empty() {
        eprintln!("strom verify: {} holds no events", path.display());
        return ExitCode::from(2);
    }
    let report = strom_verify::check(&events);
    if let Err(e) = print(common, &report, path, None, &[]) {
        eprintln!("strom verify: {e:#}");
        return ExitCode::from(2);
    }
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn print(
    common: &Common,
    report: &Report,
    history: &Path,
    run: Option<&RunInfo>,
    warnings: &[String],
) -> Result<()> {
    match common.output {
        Output::Json => {
            let v = Verdict {
                report,
                history: history.display().to_string(),
                run,
                warnings,
            };
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Output::Table => {
            if let Some(r) = run {
                let fate = match (r.topic_created, r.topic_deleted) {
                    (true, true) => "created, then deleted",
                    (true, false) => "created, kept",
                    (false, _) => "existing, kept",
                };
                let setting = |v: Option<i16>| v.map_or_else(|| "?".to_owned(), |v| v.to_string());
                println!(
                    "run: topic {} ({fate}), {} partitions, replication factor {}, min.insync.replicas {}; {} s at up to {} records/s per producer; tag {}",
                    r.topic,
                    r.partitions,
                    setting(r.replication_factor),
                    setting(r.min_insync_replicas),
                    r.seconds,
                    r.rate,
                    r.tag
                );
            }
            println!("history: {}", history.display());
            for w in warnings {
                println!("warning: {w}");
            }
            print!("{}", report.table());
        }
    }
    Ok(())
}

/// Milliseconds of backoff before retry number `attempt` (1, 2, ...): 100 ms doubling to 1 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64 << attempt.saturating_sub(1).min(4)).min(Duration::from_secs(1))
}

/// The id and address of a partition's leader, from the client's metadata (refreshed when
/// asked to, or when it names no leader).
async fn leader(
    client: &mut Client,
    topic: &str,
    partition: i32,
    refresh: bool,
) -> Result<(i32, String)> {
    let find = |client: &Client| {
        client
            .metadata
            .as_ref()
            .and_then(|m| m.topics.get(topic))
            .and_then(|t| t.partitions.iter().find(|p| p.index == partition))
            .map(|p| p.leader)
            .filter(|&l| l >= 0)
    };
    let id = match find(client).filter(|_| !refresh) {
        Some(id) => id,
        None => {
            client.refresh(Some(&[topic.to_owned()])).await?;
            find(client).ok_or_else(|| anyhow!("{topic}-{partition} has no leader now"))?
        }
    };
    Ok((id, client.broker_addr(id)?))
}

/// A client of its own for one task.
async fn connect(bootstrap: &str) -> Result<Client> {
    let mut client = Client::connect(bootstrap).await?;
    client.set_timeout(REQUEST_TIMEOUT);
    Ok(client)
}

/// The topic the run writes to.
struct Target {
    name: String,
    partitions: Vec<i32>,
    /// Where each partition's readers start: 0 on a new topic, the high watermark at the start
    /// on one that existed.
    starts: BTreeMap<i32, i64>,
    created: bool,
    replication_factor: Option<i16>,
    min_insync_replicas: Option<i16>,
}

/// Creates the topic (or takes the existing one) and waits for a leader on every partition.
async fn prepare_topic(client: &mut Client, args: &VerifyArgs, topic: &str) -> Result<Target> {
    let md = client.refresh(Some(&[topic.to_owned()])).await?;
    let brokers = md.brokers.len().max(1);
    let existing = md.topics.get(topic).filter(|t| t.error == 0).map(|t| {
        (
            t.partitions.len(),
            t.partitions.first().map(|p| p.replicas.len()),
        )
    });
    if let Some((count, rf)) = existing {
        tracing::info!(
            topic,
            partitions = count,
            "the topic exists: reading from its current end"
        );
        let partitions = wait_for_leaders(client, topic, count).await?;
        let wanted = partitions.iter().map(|p| (topic.to_owned(), *p)).collect();
        let mut starts = BTreeMap::new();
        for ((_, p), offset) in client.list_offsets(&wanted, -1).await? {
            starts.insert(
                p,
                offset.with_context(|| format!("the end of {topic}-{p}"))?,
            );
        }
        return Ok(Target {
            name: topic.to_owned(),
            partitions,
            starts,
            created: false,
            replication_factor: rf.and_then(|n| i16::try_from(n).ok()),
            min_insync_replicas: None,
        });
    }
    let rf = args
        .replication_factor
        .unwrap_or_else(|| brokers.min(3) as i16);
    let min_isr = args.min_insync_replicas.unwrap_or_else(|| rf.min(2));
    if min_isr > rf {
        bail!("--min-insync-replicas {min_isr} is above the replication factor {rf}: no acks=all write could succeed");
    }
    let configs = [("min.insync.replicas".to_owned(), min_isr.to_string())];
    topics::create(client, topic, args.partitions, rf, &configs).await?;
    tracing::info!(
        topic,
        partitions = args.partitions,
        replication_factor = rf,
        min_insync_replicas = min_isr,
        "created the topic"
    );
    let count = usize::try_from(args.partitions).unwrap_or(0);
    let partitions = wait_for_leaders(client, topic, count).await?;
    let starts = partitions.iter().map(|p| (*p, 0)).collect();
    Ok(Target {
        name: topic.to_owned(),
        partitions,
        starts,
        created: true,
        replication_factor: Some(rf),
        min_insync_replicas: Some(min_isr),
    })
}

/// Waits until the metadata shows `count` partitions of `topic`, each with a leader.
async fn wait_for_leaders(client: &mut Client, topic: &str, count: usize) -> Result<Vec<i32>> {
    let deadline = Instant::now() + TOPIC_READY;
    let names = [topic.to_owned()];
    loop {
        let md = client.refresh(Some(&names)).await?;
        let ready = md
            .topics
            .get(topic)
            .filter(|t| t.error == 0 && t.partitions.len() == count)
            .filter(|t| t.partitions.iter().all(|p| p.leader >= 0))
            .map(|t| t.partitions.iter().map(|p| p.index).collect());
        if let Some(partitions) = ready {
            return Ok(partitions);
        }
        if Instant::now() >= deadline {
            bail!(
                "topic {topic} has no leader on every partition after {} s",
                TOPIC_READY.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A running producer and what the run needs to finish it.
struct Running {
    name: String,
    spec: Spec,
    in_flight: InFlight,
    task: JoinHandle<Option<String>>,
}

/// The workload, from setting up the topic to the check.
async fn live(
    args: &VerifyArgs,
    common: &Common,
) -> Result<(Report, PathBuf, RunInfo, Vec<String>)> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let tag = format!("v{secs}");
    let topic = args
        .topic
        .clone()
        .unwrap_or_else(|| format!("strom-verify-{secs}"));
    let bootstrap = common.bootstrap_server.as_str();
    let mut admin = connect(bootstrap).await?;
    let history = args.history.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("strom-verify-{secs}-{}.jsonl", std::process::id()))
    });
    let rec = Arc::new(Recorder::create(&history)?);
    eprintln!("strom verify: writing the history to {}", history.display());
    let target = prepare_topic(&mut admin, args, &topic).await?;
    rec.info(format!(
        "strom verify {}: bootstrap {bootstrap}, topic {topic}, partitions {:?}, starts {:?}, {} s at {} records/s per producer, tag {tag}",
        env!("CARGO_PKG_VERSION"),
        target.partitions,
        target.starts,
        args.seconds,
        args.rate
    ));
    // Every task connects through any broker that answers, not only the one given.
    let mut all: Vec<String> = bootstrap.split(',').map(|s| s.trim().to_owned()).collect();
    for addr in admin.broker_addrs() {
        if !all.contains(&addr) {
            all.push(addr);
        }
    }
    let all = all.join(",");
    let mut warnings = Vec::new();
    let workload = workload(args, &all, &tag, &target, &rec, &mut warnings).await;
    let mut deleted = false;
    if target.created && !args.keep_topic {
        let deletion = match connect(&all).await {
            Ok(mut admin) => delete_topic(&mut admin, &topic).await,
            Err(e) => Err(e),
        };
        match deletion {
            Ok(()) => deleted = true,
            Err(e) => warnings.push(format!("could not delete topic {topic}: {e:#}")),
        }
    }
    let complete = match workload {
        Ok(c) => c,
        Err(e) => {
            let _ = rec.finish();
            let history = history.display();
            return Err(e.context(format!("the run failed (its history so far: {history})")));
        }
    };
    let events = rec.finish()?;
    let report = strom_verify::check(&events);
    let info = RunInfo {
        complete,
        bootstrap_server: bootstrap.to_owned(),
        topic,
        tag,
        partitions: target.partitions.len(),
        replication_factor: target.replication_factor,
        min_insync_replicas: target.min_insync_replicas,
        seconds: args.seconds,
        rate: args.rate,
        topic_created: target.created,
        topic_deleted: deleted,
    };
    Ok((report, history, info, warnings))
}

/// Produces for `--seconds` while reading and sampling, then winds down in order: producers
/// finish their last send, readers catch up to the high watermark, the sampler stops, and
/// every partition gets its final read. `false` when some final read could not be made.
async fn workload(
    args: &VerifyArgs,
    bootstrap: &str,
    tag: &str,
    target: &Target,
    rec: &Arc<Recorder>,
    warnings: &mut Vec<String>,
) -> Result<bool> {
    let topic = &target.name;
    let (sample_stop, sample_rx) = watch::channel(false);
    let sampler = tokio::spawn(reader::sample(
        connect(bootstrap).await?,
        Arc::clone(rec),
        topic.clone(),
        target.partitions.clone(),
        sample_rx,
    ));
    let mut readers = Vec::new();
    for &p in &target.partitions {
        let start = target.starts.get(&p).copied().unwrap_or(0);
        let (goal, goal_rx) = watch::channel(None);
        let reader = Reader::new(
            topic.clone(),
            p,
            start,
            connect(bootstrap).await?,
            Arc::clone(rec),
        );
        readers.push((p, goal, tokio::spawn(reader.run(goal_rx))));
    }
    let (stop, stop_rx) = watch::channel(false);
    let mut producers = Vec::new();
    for spec in SPECS {
        let name = format!("{tag}-{}-0", spec.kind);
        let producer = Producer::new(
            name.clone(),
            spec,
            topic.clone(),
            target.partitions.len() as i32,
            connect(bootstrap).await?,
            Arc::clone(rec),
        );
        producers.push(Running {
            name,
            spec,
            in_flight: producer.in_flight(),
            task: tokio::spawn(producer.run(args.rate, stop_rx.clone())),
        });
    }
    tracing::info!(topic, seconds = args.seconds, rate = args.rate, "producing");

    let run_for = tokio::time::sleep(Duration::from_secs(args.seconds));
    tokio::pin!(run_for);
    tokio::select! {
        _ = &mut run_for => {}
        interrupted = tokio::signal::ctrl_c() => match interrupted {
            Ok(()) => {
                warnings.push("interrupted: the producers stopped early".into());
                rec.info("interrupted");
            }
            Err(_) => run_for.await,
        },
    }
    // Once watched, Ctrl-C no longer ends the process by itself: a (second) Ctrl-C during
    // the wind-down gives up at once, keeping the history written so far.
    let abandon = Arc::clone(rec);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            let _ = abandon.finish();
            eprintln!("strom verify: interrupted during the wind-down; the history so far is kept");
            std::process::exit(2);
        }
    });

    // Producers: the send under way completes or, past its deadline, is recorded unknown.
    let _ = stop.send(true);
    tracing::info!("stopping the producers");
    let deadline = tokio::time::Instant::now() + SEND_DEADLINE + GRACE;
    for mut p in producers {
        match tokio::time::timeout_at(deadline, &mut p.task).await {
            Ok(Ok(None)) => {}
            Ok(Ok(Some(why))) => warnings.push(why),
            Ok(Err(e)) => warnings.push(format!("producer {} failed: {e}", p.name)),
            Err(_) => {
                p.task.abort();
                let _ = p.task.await;
                warnings.push(format!(
                    "producer {} did not finish its last send in time",
                    p.name
                ));
            }
        }
        let pending = p.in_flight.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(pending) = pending {
            rec.emit(producer::unknown(pending, &p.name, p.spec, topic, rec.ms()));
        }
    }

    // Readers: catch up to the high watermark as it is now, within CATCH_UP.
    tracing::info!("letting the readers catch up");
    let mut admin = connect(bootstrap).await?;
    let t_ms = rec.ms();
    let marks = match reader::watermarks(&mut admin, topic, &target.partitions).await {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "no high watermarks to catch up to; readers stop at what their fetches report");
            Vec::new()
        }
    };
    let mut goals = BTreeMap::new();
    for m in marks {
        goals.insert(m.partition, m.high_watermark);
        rec.emit(Event::Watermarks {
            t_ms,
            topic: topic.clone(),
            partition: m.partition,
            node: m.node,
            log_start: m.log_start,
            high_watermark: m.high_watermark,
        });
    }
    for (p, goal, _) in &readers {
        let _ = goal.send(Some(goals.get(p).copied().unwrap_or(i64::MAX)));
    }
    let deadline = tokio::time::Instant::now() + CATCH_UP + GRACE;
    for (p, _goal, mut task) in readers {
        match tokio::time::timeout_at(deadline, &mut task).await {
            Ok(Ok(reader)) => warnings.extend(reader.notes),
            Ok(Err(e)) => warnings.push(format!("reader of partition {p} failed: {e}")),
            Err(_) => {
                task.abort();
                let _ = task.await;
                warnings.push(format!("reader of partition {p} did not stop in time"));
            }
        }
    }
    let _ = sample_stop.send(true);
    let mut sampler = sampler;
    if tokio::time::timeout(GRACE, &mut sampler).await.is_err() {
        sampler.abort();
        warnings.push("the watermark sampler did not stop in time".into());
    }

    // Final reads.
    tracing::info!("final reads");
    let deadline = Instant::now() + reader::FINAL_READS;
    let mut complete = true;
    for &p in &target.partitions {
        let from = target.starts.get(&p).copied().unwrap_or(0);
        if let Err(e) = reader::final_read(&mut admin, rec, topic, p, from, deadline).await {
            warnings.push(format!("no final read of partition {p}: {e:#}"));
            complete = false;
        }
    }
    Ok(complete)
}

async fn delete_topic(client: &mut Client, topic: &str) -> Result<()> {
    let req = topics::delete_request(client, &[topic.to_owned()])?;
    let resp = client.send(&req).await?;
    for r in resp.responses {
        if r.error_code != 0 {
            bail!("{}", error_text(r.error_code, r.error_message.as_ref()));
        }
    }
    tracing::info!(topic, "deleted the topic");
    Ok(())
}
