//! `strom-jepsen`: Strom's Jepsen-style fault suite. It starts a cluster of `strom` nodes, each
//! in its own network namespace under libfaketime with its data on a small tmpfs, drives it
//! with stock librdkafka producers and consumers while a seeded nemesis kills, pauses,
//! partitions, skews, starves and wipes nodes, then heals everything, reads every partition
//! back, stops the nodes cleanly, reads every replica's files, and hands the whole history to
//! `strom_verify::check`.
//!
//! Outputs (in `--out`, default `target/jepsen/<timestamp>-seed<N>/`): `history.jsonl`,
//! `report.json`, `summary.txt`, `timeline.png`, `logs/`. Exit status: 0 when the checker
//! found nothing and the run itself worked, 1 when it found anomalies, 2 when the harness
//! failed (the message says why), 130 when interrupted. See tests/jepsen/README.md.

mod admin;
mod final_state;
mod nemesis;
mod netns;
mod nodes;
mod recorder;
mod workload;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use strom_verify::history;

use crate::nemesis::{Kind, Nemesis, Settings};
use crate::nodes::Cluster;
use crate::recorder::Recorder;
use crate::workload::Workload;

/// The topic and group the workload uses.
const TOPIC: &str = "jepsen";
const GROUP: &str = "jepsen-group";
/// How long the cluster gets to heal and the readers to catch up after the schedule.
const RECOVERY: Duration = Duration::from_secs(120);

#[derive(Parser, Debug)]
#[command(
    name = "strom-jepsen",
    about = "Strom's Jepsen-style fault suite (run it through tests/jepsen/run.sh, as root)"
)]
struct Args {
    /// Length of the fault schedule in seconds (default 180).
    #[arg(long, conflicts_with = "minutes")]
    seconds: Option<u64>,
    /// Length of the fault schedule in minutes.
    #[arg(long)]
    minutes: Option<u64>,
    /// Cluster size: 3 or 5.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Seed of the schedule (default: from the clock; printed either way).
    #[arg(long)]
    seed: Option<u64>,
    /// Fault kinds, comma-separated: kill, pause, partition, clock, disk, disk-full, wipe,
    /// crash-all, churn; `all` (default) or `none`.
    #[arg(long, default_value = "all")]
    faults: String,
    /// Partitions of the topic.
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// Records per second per producer (three producers).
    #[arg(long, default_value_t = 150)]
    rate: u64,
    /// `assign()` readers (each over every partition).
    #[arg(long, default_value_t = 2)]
    readers: usize,
    /// Members of the consumer group.
    #[arg(long, default_value_t = 2)]
    group_members: usize,
    /// Size of each node's data tmpfs in MiB.
    #[arg(long, default_value_t = 512)]
    tmpfs_mb: u64,
    /// Output directory.
    #[arg(long)]
    out: Option<PathBuf>,
    /// A Python with matplotlib, to render timeline.png (a failing plot then fails the run);
    /// without it, `python3` is tried and the plot skipped if matplotlib is missing.
    #[arg(long)]
    plot_python: Option<PathBuf>,
}

/// Set by SIGINT, SIGTERM or SIGHUP: wind down, clean up, exit 130.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(sig, handler);
        }
    }
}

/// The run was interrupted by a signal.
#[derive(Debug)]
struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

fn check_stop() -> Result<()> {
    if STOP.load(Ordering::SeqCst) {
        return Err(Interrupted.into());
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    install_signal_handlers();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) if e.is::<Interrupted>() => {
            eprintln!("strom-jepsen: interrupted; cleaned up");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("strom-jepsen: HARNESS FAILURE (the run did not complete, so there is no verdict): {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Days since 1970-01-01 to (year, month, day) (Howard Hinnant's civil_from_days).
fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn utc_parts(secs: i64) -> (i64, i64, i64, i64, i64, i64) {
    let (y, m, d) = civil(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    (y, m, d, s / 3600, s / 60 % 60, s % 60)
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of a Unix time.
pub fn utc_datetime(secs: i64) -> String {
    let (y, m, d, h, mi, s) = utc_parts(secs);
    format!("{y:04}-{m:02}-{d:02} {h:02}:{mi:02}:{s:02}")
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn parse_faults(s: &str) -> Result<Vec<Kind>> {
    match s.trim() {
        "all" | "" => return Ok(Kind::ALL.to_vec()),
        "none" => return Ok(Vec::new()),
        _ => {}
    }
    let mut kinds = Vec::new();
    for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let k = Kind::parse(name).ok_or_else(|| {
            anyhow!(
                "unknown fault kind `{name}`; choose from {}",
                Kind::ALL.map(Kind::name).join(", ")
            )
        })?;
        if !kinds.contains(&k) {
            kinds.push(k);
        }
    }
    Ok(kinds)
}

/// `$STROM_BIN`, else the workspace's debug or release build.
fn strom_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("STROM_BIN") {
        let p = PathBuf::from(p);
        if !p.exists() {
            bail!("STROM_BIN={} does not exist", p.display());
        }
        return Ok(std::fs::canonicalize(&p).unwrap_or(p));
    }
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    for profile in ["debug", "release"] {
        let p = target.join(profile).join("strom");
        if p.exists() {
            return Ok(std::fs::canonicalize(&p).unwrap_or(p));
        }
    }
    bail!("strom binary not found: run `cargo build --bin strom` or set STROM_BIN")
}

fn require_tool(name: &str, why: &str) -> Result<()> {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(name).is_file()));
    if !found {
        bail!("`{name}` is not installed ({why}); tests/jepsen/run.sh installs it");
    }
    Ok(())
}

fn run(args: &Args) -> Result<bool> {
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64 % 1_000_000_000)
    });
    println!("seed: {seed}");
    let schedule = Duration::from_secs(match (args.seconds, args.minutes) {
        (Some(s), _) => s,
        (None, Some(m)) => m * 60,
        (None, None) => 180,
    });
    if !(args.nodes == 3 || args.nodes == 5) {
        bail!("--nodes must be 3 or 5, not {}", args.nodes);
    }
    if args.partitions < 1 || args.rate == 0 {
        bail!("--partitions and --rate must be at least 1");
    }
    let kinds = parse_faults(&args.faults)?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("must run as root (network namespaces, iptables, tmpfs mounts, strace)");
    }
    require_tool("ip", "network namespaces")?;
    require_tool("iptables", "network partitions")?;
    require_tool("mount", "the data tmpfs")?;
    if kinds.contains(&Kind::Disk) {
        require_tool("strace", "the disk fault")?;
    }
    nodes::faketime_lib()?;
    let bin = strom_binary()?;

    let out = match &args.out {
        Some(o) => o.clone(),
        None => {
            let (y, m, d, h, mi, s) = utc_parts(now_secs());
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/jepsen")
                .join(format!("{y:04}{m:02}{d:02}-{h:02}{mi:02}{s:02}-seed{seed}"))
        }
    };
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let out = std::fs::canonicalize(&out).unwrap_or(out);
    println!("output: {}", out.display());
    let kind_names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
    println!(
        "schedule: {}s of faults ({}) on {} nodes, {} partitions, 3 producers at {}/s each",
        schedule.as_secs(),
        if kind_names.is_empty() {
            "none".to_owned()
        } else {
            kind_names.join(",")
        },
        args.nodes,
        args.partitions,
        args.rate
    );

    let run_started = Instant::now();
    let mut net = netns::Network::create(args.nodes)?;
    let overrides = strom_tests::cluster::OVERRIDES
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let mut cluster = Cluster::new(&out, args.nodes, bin.clone(), args.tmpfs_mb, overrides)?;
    let (rec, writer) = Recorder::create(&out.join("history.jsonl"))?;
    rec.info(format!(
        "strom-jepsen seed={seed} nodes={} faults={} schedule={}s partitions={} rate={}/s \
         readers={} group_members={} strom={}",
        args.nodes,
        kind_names.join(","),
        schedule.as_secs(),
        args.partitions,
        args.rate,
        args.readers,
        args.group_members,
        bin.display()
    ));

    let outcome = drive(args, seed, schedule, &kinds, &mut cluster, &rec, &out);
    // Whatever happened: stop every process, unmount, remove the network.
    let Driven {
        mut problems,
        faults,
    } = match outcome {
        Ok(d) => d,
        Err(e) => {
            cluster.teardown();
            net.teardown();
            drop(rec);
            let _ = writer.close();
            return Err(e);
        }
    };
    drop(rec);
    let events_written = writer.close()?;

    let history_path = out.join("history.jsonl");
    let text = std::fs::read_to_string(&history_path)
        .with_context(|| format!("reading {}", history_path.display()))?;
    let events = history::parse(&text).map_err(|e| anyhow!("history.jsonl: {e}"))?;
    drop(text);
    if events.len() as u64 != events_written {
        problems.harness.push(format!(
            "history.jsonl holds {} events, {events_written} were written",
            events.len()
        ));
    }
    let report = strom_verify::check(&events);
    drop(events);
    if !report.ok() || !problems.is_empty() {
        keep_data(&cluster, &out);
    }
    cluster.teardown();
    net.teardown();

    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(&report).context("serialising the report")?,
    )
    .context("writing report.json")?;

    let plot = render_plot(args, &out);
    if let Err(e) = &plot {
        problems.harness.push(format!("timeline.png: {e:#}"));
    }
    let mut summary = report.table();
    let _ = writeln!(summary, "seed: {seed}");
    let _ = writeln!(
        summary,
        "run: {}s of faults, {}s in all, {} nodes",
        schedule.as_secs(),
        run_started.elapsed().as_secs(),
        args.nodes
    );
    summary.push_str(&faults);
    if let Ok(Some(note)) = &plot {
        let _ = writeln!(summary, "{note}");
    }
    for (what, list) in [
        ("strom failures outside the checker", &problems.strom),
        ("harness problems", &problems.harness),
    ] {
        if !list.is_empty() {
            let _ = writeln!(summary, "{what} ({}):", list.len());
            for p in list {
                let _ = writeln!(summary, "  - {p}");
            }
        }
    }
    if problems.is_empty() {
        let _ = writeln!(
            summary,
            "run: complete (cluster recovered, every chosen fault injected)"
        );
    }
    std::fs::write(out.join("summary.txt"), &summary).context("writing summary.txt")?;
    println!("\n{summary}");
    println!("seed: {seed}");
    println!("output: {}", out.display());
    if !problems.harness.is_empty() {
        bail!(
            "the run itself did not work: {}",
            problems.harness.join("; ")
        );
    }
    if !problems.strom.is_empty() {
        eprintln!(
            "strom-jepsen: FAILED: strom did not survive the schedule: {}",
            problems.strom.join("; ")
        );
        return Ok(false);
    }
    if !report.ok() {
        eprintln!("strom-jepsen: FAILED: the checker found anomalies (see summary.txt)");
    }
    Ok(report.ok())
}

/// What went wrong besides the checker's anomalies.
#[derive(Default)]
struct Problems {
    /// Strom's own failures: a node that crashed by itself, a cluster that did not recover,
    /// an unclean shutdown, unreadable files.
    strom: Vec<String>,
    /// The harness's: a fault kind never injected, a client thread stuck, an output missing.
    harness: Vec<String>,
}

impl Problems {
    fn is_empty(&self) -> bool {
        self.strom.is_empty() && self.harness.is_empty()
    }
}

/// What `drive` hands back: the problems, and the fault counts for summary.txt.
struct Driven {
    problems: Problems,
    faults: String,
}

/// Everything between a running network and a closed history: start the cluster, create the
/// topic, run the workload under the schedule, heal, collect the final state. Returns the
/// problems that make the run not count (a cluster that never recovered, a fault kind never
/// injected, …) and the fault counts; an `Err` is a failure that left nothing worth checking.
fn drive(
    args: &Args,
    seed: u64,
    schedule: Duration,
    kinds: &[Kind],
    c: &mut Cluster,
    rec: &Recorder,
    out: &Path,
) -> Result<Driven> {
    let mut problems = Problems::default();
    for n in c.ids() {
        c.spawn(n)?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for n in c.ids() {
        check_stop()?;
        if let Err(e) = c.wait_ready(n, deadline) {
            eprintln!(
                "---- the end of logs/n{n}.log ----\n{}",
                c.node(n).log_tail(30)
            );
            return Err(e);
        }
    }
    rec.info("all nodes ready");
    create_topic(c, args.partitions)?;
    wait_healthy(c, args.partitions, Duration::from_secs(60))
        .map_err(|e| anyhow!("the new topic never became fully replicated: {e}"))?;
    rec.info(format!("topic {TOPIC} created and fully replicated"));

    let cfg = workload::Config {
        bootstrap: c.bootstrap(),
        topic: TOPIC.into(),
        partitions: args.partitions,
        rate: args.rate,
        group: GROUP.into(),
        group_members: args.group_members,
        readers: args.readers,
    };
    let mut w = Workload::start(cfg.clone(), rec)?;
    // Warm up: the producers must get acknowledgements before any fault.
    let warm = Instant::now() + Duration::from_secs(30);
    while w.acked.load(Ordering::Relaxed) < 10 * args.partitions as u64 {
        check_stop()?;
        if Instant::now() > warm {
            bail!(
                "the workload got only {} acknowledgements in 30 s on a healthy cluster",
                w.acked.load(Ordering::Relaxed)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    rec.info("workload running; nemesis starts");
    println!("workload running; nemesis starts");

    let mut nem = Nemesis::new(
        seed,
        kinds.to_vec(),
        rec.clone(),
        Settings {
            topic: TOPIC.into(),
            partitions: args.partitions,
            group: GROUP.into(),
            logs: out.join("logs"),
        },
    );
    nem.run(c, Instant::now() + schedule, &STOP);
    nem.heal_all(c);
    check_stop()?;
    println!(
        "schedule done after {} fault windows; healing and recovering",
        nem.starts()
    );

    // Every chosen kind must have been injected once the deck went round once.
    for k in kinds {
        if nem.injected.get(k).copied().unwrap_or(0) == 0 && nem.starts() >= kinds.len() {
            let errors: Vec<&str> = nem
                .errors
                .iter()
                .filter(|(e, _)| e == k)
                .map(|(_, m)| m.as_str())
                .collect();
            problems.harness.push(format!(
                "fault kind {} was never injected in {} windows (errors: {errors:?})",
                k.name(),
                nem.starts()
            ));
        }
    }
    for (n, status, t) in &nem.crashes {
        problems.strom.push(format!(
            "n{n} exited with {status} at {t}ms although no fault expected it (see logs/n{n}.log)"
        ));
    }
    let mut faults = String::from("faults injected:");
    for (k, n) in &nem.injected {
        let _ = write!(faults, " {}={n}", k.name());
    }
    faults.push('\n');
    let detailed: Vec<String> = nem
        .variants
        .iter()
        .filter(|(v, _)| v.contains('/'))
        .map(|(v, n)| format!("{v}={n}"))
        .collect();
    if !detailed.is_empty() {
        let _ = writeln!(faults, "  by variant: {}", detailed.join(", "));
    }
    if !nem.errors.is_empty() {
        let _ = writeln!(faults, "fault injection errors ({}):", nem.errors.len());
        for (k, e) in nem.errors.iter().take(10) {
            let _ = writeln!(faults, "  - {}: {e}", k.name());
        }
    }

    // Every node back.
    let deadline = Instant::now() + Duration::from_secs(60);
    for n in c.ids() {
        if let Err(e) = c.wait_ready(n, deadline) {
            problems.strom.push(format!("after healing: {e:#}"));
        }
    }
    let stuck = w.stop_producers(Instant::now() + Duration::from_secs(45));
    problems.harness.extend(stuck);
    rec.info("producers stopped");

    let crashes_before = nem.crashes.len();
    match wait_recovered(c, &mut nem, &w, args.partitions, rec) {
        Ok(took) => rec.info(format!(
            "cluster recovered and readers caught up in {took:?}"
        )),
        Err(e) if e.is::<Interrupted>() => return Err(e),
        Err(e) => problems.strom.push(format!(
            "the cluster did not recover within {RECOVERY:?} after healing: {e:#}"
        )),
    }
    for (n, status, t) in nem.crashes.iter().skip(crashes_before) {
        problems.strom.push(format!(
            "n{n} exited with {status} at {t}ms, during recovery (see logs/n{n}.log)"
        ));
    }
    let stuck = w.stop_readers(Instant::now() + Duration::from_secs(30));
    problems.harness.extend(stuck);
    check_stop()?;

    println!("final reads");
    match final_state::final_reads(
        &cfg.bootstrap,
        TOPIC,
        args.partitions,
        rec,
        Duration::from_secs(60),
    ) {
        Ok(reads) => {
            let total: usize = reads.iter().map(|r| r.records).sum();
            let hws: Vec<String> = reads
                .iter()
                .map(|r| format!("{}:[{},{})", r.partition, r.log_start, r.high_watermark))
                .collect();
            rec.info(format!("final reads: {total} records; {}", hws.join(" ")));
        }
        Err(e) => problems.strom.push(format!("final read: {e:#}")),
    }

    // Which nodes hold which partition now (a reassignment may have moved replicas).
    let mut replicas: BTreeMap<i32, Vec<(usize, PathBuf)>> = BTreeMap::new();
    let md = c
        .ids()
        .into_iter()
        .find_map(|n| admin::metadata(c.node(n).addr()).ok());
    match md.as_ref().and_then(|m| m.topics.get(TOPIC)) {
        Some(parts) => {
            for (&p, info) in parts {
                let holders = info
                    .replicas
                    .iter()
                    .filter_map(|&r| usize::try_from(r).ok())
                    .filter(|r| (1..=c.len()).contains(r))
                    .map(|r| (r, c.node(r).data.clone()))
                    .collect();
                replicas.insert(p, holders);
            }
        }
        None => problems
            .strom
            .push("no node answered Metadata before the shutdown".into()),
    }

    println!("stopping every node with SIGTERM");
    let running: Vec<usize> = c
        .ids()
        .into_iter()
        .filter(|&n| c.node(n).running())
        .collect();
    for &n in &running {
        if let Err(e) = c.sigterm(n) {
            problems.harness.push(format!("SIGTERM n{n}: {e:#}"));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for &n in &running {
        match c.reap(n, deadline) {
            Some(s) if s.success() => {}
            Some(s) => problems.strom.push(format!(
                "n{n} exited with {s} on SIGTERM (see logs/n{n}.log)"
            )),
            None => {
                c.kill9(n);
                problems
                    .strom
                    .push(format!("n{n} did not exit within 30 s of SIGTERM"));
            }
        }
    }
    problems
        .strom
        .extend(final_state::replica_events(TOPIC, &replicas, rec));
    rec.info("replicas read; history complete");
    Ok(Driven { problems, faults })
}

/// Creates the topic: replication factor 3, `min.insync.replicas=2`, 1 MiB segments (so
/// segments roll during the run), no retention (a skewed clock must not delete data).
fn create_topic(c: &Cluster, partitions: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", c.bootstrap())
        .create()
        .context("admin client")?;
    let new = NewTopic::new(TOPIC, partitions, TopicReplication::Fixed(3))
        .set("min.insync.replicas", "2")
        .set("segment.bytes", "1048576")
        .set("retention.ms", "-1")
        .set("retention.bytes", "-1");
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(20)));
    let mut last = String::new();
    for _ in 0..5 {
        match strom_tests::cluster::block_on(admin.create_topics(std::slice::from_ref(&new), &opts))
        {
            Ok(rs) => match rs.into_iter().next() {
                Some(Ok(_)) => return Ok(()),
                Some(Err((_, code))) => last = format!("{code:?}"),
                None => last = "no result".into(),
            },
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    bail!("cannot create topic {TOPIC}: {last}")
}

/// What is missing for every node's metadata to show every partition of every topic led and
/// fully in sync (`None`: nothing).
fn unhealthy(c: &Cluster, partitions: i32) -> Option<String> {
    for n in c.ids() {
        if !c.node(n).running() {
            return Some(format!("n{n} is not running"));
        }
        let md = match admin::metadata(c.node(n).addr()) {
            Ok(md) => md,
            Err(e) => return Some(format!("n{n}: metadata: {e}")),
        };
        match md.topics.get(TOPIC) {
            Some(t) if t.len() == partitions as usize => {}
            other => {
                return Some(format!(
                    "n{n} knows {} partitions of {TOPIC}",
                    other.map_or(0, |t| t.len())
                ))
            }
        }
        for (topic, parts) in &md.topics {
            if let Some((p, info)) = parts.iter().find(|(_, i)| !i.healthy()) {
                return Some(format!("n{n} sees {topic}/{p} as {info:?}"));
            }
        }
    }
    None
}

fn wait_healthy(c: &Cluster, partitions: i32, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        check_stop()?;
        match unhealthy(c, partitions) {
            None => return Ok(()),
            Some(why) if Instant::now() > deadline => bail!("{why}"),
            Some(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

/// Waits (up to [`RECOVERY`]) until every partition is fully in sync on every node and every
/// `assign()` reader has read up to each partition's high watermark. Readers still behind
/// after 60 s of a healthy cluster start over with fresh clients (a `Seek` each). Returns how
/// long it took.
fn wait_recovered(
    c: &mut Cluster,
    nem: &mut Nemesis,
    w: &Workload,
    partitions: i32,
    rec: &Recorder,
) -> Result<Duration> {
    let start = Instant::now();
    let client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", c.bootstrap())
        .set("group.id", "jepsen-recovery")
        .set("enable.auto.commit", "false")
        .create()
        .context("recovery client")?;
    let mut healthy_since: Option<Instant> = None;
    let mut restarted = false;
    loop {
        check_stop()?;
        nem.watch_exits(c);
        let why = match unhealthy(c, partitions) {
            Some(why) => {
                healthy_since = None;
                why
            }
            None => {
                let since = *healthy_since.get_or_insert_with(Instant::now);
                match readers_behind(&client, w, partitions) {
                    None => return Ok(start.elapsed()),
                    Some(why) => {
                        if !restarted && since.elapsed() > Duration::from_secs(60) {
                            rec.info(format!(
                                "readers still behind 60 s into a healthy cluster ({why}); restarting them"
                            ));
                            w.restart_readers();
                            restarted = true;
                        }
                        why
                    }
                }
            }
        };
        if start.elapsed() > RECOVERY {
            bail!("{why}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Which reader is behind which partition's high watermark (`None`: all caught up).
fn readers_behind(client: &BaseConsumer, w: &Workload, partitions: i32) -> Option<String> {
    for p in 0..partitions {
        let hw = match client.fetch_watermarks(TOPIC, p, Duration::from_secs(2)) {
            Ok((_, hw)) => hw,
            Err(e) => return Some(format!("watermarks of {TOPIC}/{p}: {e}")),
        };
        for r in &w.readers {
            let next = r
                .next
                .lock()
                .map(|v| v.get(p as usize).copied().unwrap_or(-1));
            let next = next.unwrap_or(-1).max(0);
            if next < hw {
                return Some(format!(
                    "{} at {next} of {TOPIC}/{p}, high watermark {hw}",
                    r.name
                ));
            }
        }
    }
    None
}

/// Copies each node's data directory next to the history (the tmpfs goes away with the run),
/// for a post-mortem of anomalies.
fn keep_data(c: &Cluster, out: &Path) {
    for n in c.ids() {
        let to = out.join("data").join(format!("n{n}"));
        if let Err(e) = copy_tree(&c.node(n).data, &to) {
            eprintln!("strom-jepsen: keeping n{n}'s data: {e:#}");
        }
    }
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let name = e.file_name();
        if name.to_string_lossy().starts_with(".strjep") {
            continue;
        }
        let (src, dst) = (e.path(), to.join(&name));
        if e.file_type()?.is_dir() {
            copy_tree(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst).with_context(|| format!("copying {}", src.display()))?;
        }
    }
    Ok(())
}

/// Renders timeline.png with tests/jepsen/plot.py. `Ok(Some(note))` when skipped.
fn render_plot(args: &Args, out: &Path) -> Result<Option<String>> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("jepsen/plot.py");
    let python = match &args.plot_python {
        Some(p) => p.clone(),
        None => {
            let has = Command::new("python3")
                .args(["-c", "import matplotlib"])
                .output()
                .is_ok_and(|o| o.status.success());
            if !has {
                return Ok(Some(
                    "timeline.png: skipped (no python3 with matplotlib; run.sh passes --plot-python)"
                        .into(),
                ));
            }
            PathBuf::from("python3")
        }
    };
    let o = Command::new(&python)
        .arg(&script)
        .arg(out.join("history.jsonl"))
        .arg(out.join("timeline.png"))
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    if !o.status.success() {
        bail!(
            "{} {} failed with {}: {}",
            python.display(),
            script.display(),
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(None)
}
