//! What operators see: Prometheus metrics named as Kafka's JMX exporter and Kafka Exporter name
//! them (so existing dashboards and alerts work unchanged), and the admin HTTP listener with
//! `/metrics`, `/healthz`, `/readyz` and `POST /shutdown`.
//!
//! Events (requests, bytes in and out, ISR changes) are counted through the `metrics` crate.
//! State (leaders, offsets, lag, log sizes) is read from the broker at scrape time and printed
//! directly, so a deleted topic or a moved group leaves no stale series behind.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use kafka_protocol::messages::ApiKey;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::client::{list_offsets_request, Conn};
use crate::replica::Partition;
use crate::Broker;
use strom_raft::image::PartitionState;

const REQUESTS: &str = "kafka_network_requestmetrics_requestspersec";
const REQUEST_TIME: &str = "kafka_network_requestmetrics_totaltimems";
const MESSAGES_IN: &str = "kafka_server_brokertopicmetrics_messagesinpersec";
const BYTES_IN: &str = "kafka_server_brokertopicmetrics_bytesinpersec";
const BYTES_OUT: &str = "kafka_server_brokertopicmetrics_bytesoutpersec";
const REPLICATION_BYTES_OUT: &str = "kafka_server_brokertopicmetrics_replicationbytesoutpersec";
const ISR_SHRINKS: &str = "kafka_server_replicamanager_isrshrinkspersec";
const ISR_EXPANDS: &str = "kafka_server_replicamanager_isrexpandspersec";

static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide metrics recorder once; `None` when another recorder owns the
/// process (an embedding application), in which case `/metrics` shows only broker state.
pub fn install_recorder() -> Option<&'static PrometheusHandle> {
    RECORDER
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(REQUEST_TIME.to_owned()),
                    &[
                        0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0,
                        1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
                    ],
                )
                .ok()?;
            let handle = builder.install_recorder().ok()?;
            describe();
            Some(handle)
        })
        .as_ref()
}

fn describe() {
    metrics::describe_counter!(REQUESTS, "Requests handled, by Kafka API");
    metrics::describe_histogram!(
        REQUEST_TIME,
        metrics::Unit::Milliseconds,
        "Time from receiving a request to its response being ready, by Kafka API"
    );
    metrics::describe_counter!(MESSAGES_IN, "Records appended by producers, by topic");
    metrics::describe_counter!(
        BYTES_IN,
        "Record-batch bytes appended by producers, by topic"
    );
    metrics::describe_counter!(BYTES_OUT, "Record-batch bytes sent to consumers, by topic");
    metrics::describe_counter!(
        REPLICATION_BYTES_OUT,
        "Record-batch bytes sent to follower replicas, by topic"
    );
    metrics::describe_counter!(ISR_SHRINKS, "ISR shrinks of partitions this broker leads");
    metrics::describe_counter!(
        ISR_EXPANDS,
        "ISR expansions of partitions this broker leads"
    );
    // Present from the start, so alerts on their rate see a zero rather than no data.
    metrics::counter!(ISR_SHRINKS).absolute(0);
    metrics::counter!(ISR_EXPANDS).absolute(0);
}

/// One request answered (its response is ready to be written).
pub fn request_done(api: ApiKey, started: Instant) {
    let name = api_name(api);
    metrics::counter!(REQUESTS, "request" => name).increment(1);
    metrics::histogram!(REQUEST_TIME, "request" => name)
        .record(started.elapsed().as_secs_f64() * 1000.0);
}

/// A producer's batch appended.
pub fn produced(topic: &str, records: u64, bytes: u64) {
    let topic = topic.to_owned();
    metrics::counter!(MESSAGES_IN, "topic" => topic.clone()).increment(records);
    metrics::counter!(BYTES_IN, "topic" => topic).increment(bytes);
}

/// Record bytes returned by a fetch, to a consumer or to a follower.
pub fn fetched(topic: &str, bytes: u64, replica: bool) {
    let name = if replica {
        REPLICATION_BYTES_OUT
    } else {
        BYTES_OUT
    };
    metrics::counter!(name, "topic" => topic.to_owned()).increment(bytes);
}

/// An ISR change of a partition this broker leads went through the quorum.
pub fn isr_changed(from: usize, to: usize) {
    if to < from {
        metrics::counter!(ISR_SHRINKS).increment(1);
    } else if to > from {
        metrics::counter!(ISR_EXPANDS).increment(1);
    }
}

/// Kafka's request names ("Produce", "Fetch", ...) as label values, without an allocation
/// per request.
fn api_name(api: ApiKey) -> &'static str {
    static NAMES: OnceLock<Vec<(i16, &'static str)>> = OnceLock::new();
    let names = NAMES.get_or_init(|| {
        // API keys are small numbers; the names are leaked once per process.
        (0..=300i16)
            .filter_map(|k| {
                let api = ApiKey::try_from(k).ok()?;
                let name: &'static str = Box::leak(format!("{api:?}").into_boxed_str());
                Some((k, name))
            })
            .collect()
    });
    names
        .iter()
        .find(|(k, _)| *k == api as i16)
        .map_or("Unknown", |(_, n)| n)
}

/// The whole `/metrics` page: counters and histograms, then the state gauges. `lag` holds the
/// committed offsets of the groups this broker coordinates (see [`group_offsets`]).
pub fn render(broker: &Broker, lag: &[GroupOffset]) -> String {
    let mut out = match install_recorder() {
        Some(h) => {
            h.run_upkeep();
            h.render()
        }
        None => String::new(),
    };
    render_state(broker, lag, &mut out);
    out
}

/// A committed offset of a group this broker coordinates, with the partition's high watermark
/// when it is known.
pub struct GroupOffset {
    group: String,
    topic: String,
    partition: i32,
    committed: i64,
    high_watermark: Option<i64>,
}

/// How long a scrape waits for a partition leader's high watermark before leaving that
/// partition's lag out.
const REMOTE_HW_TIMEOUT: Duration = Duration::from_secs(1);

/// The committed offsets of the groups this broker coordinates, each with its partition's high
/// watermark: the local replica's (every replica knows it), else asked of the partition's leader
/// with ListOffsets, so lag covers partitions that have no replica on the coordinator.
pub async fn group_offsets(broker: &Broker) -> Vec<GroupOffset> {
    let mut rows = Vec::new();
    for (group, _, _) in broker.groups.list() {
        for ((topic, partition), c) in broker.groups.fetch_offsets(&group) {
            let high_watermark = broker
                .catalog
                .get(&topic)
                .and_then(|t| t.partition(partition))
                .map(|p| p.log.high_watermark());
            rows.push(GroupOffset {
                group: group.clone(),
                topic,
                partition,
                committed: c.offset,
                high_watermark,
            });
        }
    }
    let image = broker.quorum.image();
    let mut by_leader: BTreeMap<i32, BTreeSet<(String, i32)>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.high_watermark.is_none()) {
        let leader = image
            .topics
            .get(&r.topic)
            .and_then(|t| t.partitions.get(usize::try_from(r.partition).ok()?))
            .map(|p| p.leader);
        if let Some(leader) = leader.filter(|l| *l >= 0 && *l != broker.node_id()) {
            by_leader
                .entry(leader)
                .or_default()
                .insert((r.topic.clone(), r.partition));
        }
    }
    let asks = by_leader.into_iter().filter_map(|(leader, partitions)| {
        let reg = image.brokers.get(&leader)?;
        let addr = format!("{}:{}", reg.endpoint.host, reg.endpoint.port);
        Some(latest_offsets(broker, addr, partitions))
    });
    let remote: BTreeMap<(String, i32), i64> = futures::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .collect();
    for r in &mut rows {
        if r.high_watermark.is_none() {
            r.high_watermark = remote.get(&(r.topic.clone(), r.partition)).copied();
        }
    }
    rows.sort_by(|a, b| (&a.group, &a.topic, a.partition).cmp(&(&b.group, &b.topic, b.partition)));
    rows
}

/// The latest offsets (high watermarks) of `partitions` from their leader at `addr`; empty
/// when the leader cannot be reached in time.
async fn latest_offsets(
    broker: &Broker,
    addr: String,
    partitions: BTreeSet<(String, i32)>,
) -> Vec<((String, i32), i64)> {
    let mut topics: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for (topic, partition) in partitions {
        topics.entry(topic).or_default().push(partition);
    }
    let req = list_offsets_request(topics, -1);
    let bind = broker.config.listener.host.parse().ok();
    let client_id = format!("strom-metrics-{}", broker.node_id());
    let asked = async {
        let mut conn = Conn::connect(&addr, bind, client_id, REMOTE_HW_TIMEOUT).await?;
        conn.call(4, &req, REMOTE_HW_TIMEOUT).await
    };
    match asked.await {
        Ok(resp) => resp
            .topics
            .into_iter()
            .flat_map(|t| {
                let topic = t.name.to_string();
                t.partitions
                    .into_iter()
                    .filter(|p| p.error_code == 0)
                    .map(move |p| ((topic.clone(), p.partition_index), p.offset))
            })
            .collect(),
        Err(e) => {
            tracing::debug!(%addr, error = %e, "no high watermarks from a leader for consumer lag");
            Vec::new()
        }
    }
}

struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn header(&mut self, name: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} gauge");
    }
    fn value(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn under_replicated(st: &PartitionState) -> bool {
    st.isr.len() < st.replicas.len()
}

/// Per-broker state as Kafka reports it: each broker counts what it leads; the active
/// controller alone reports cluster-wide counts, so sums over brokers are right.
fn render_state(broker: &Broker, lag: &[GroupOffset], out: &mut String) {
    let me = broker.node_id();
    let image = broker.quorum.image();
    let active_controller = broker.quorum.leader() == Some(u64::from(me.max(0) as u32));
    let partitions = broker.catalog.partitions();
    // Each led partition's state, read once per scrape.
    let leading: Vec<(&Arc<Partition>, PartitionState)> = partitions
        .iter()
        .filter(|p| p.is_leader())
        .map(|p| (p, p.state()))
        .collect();

    let mut f = Family { out };
    f.header(
        "kafka_server_replicamanager_underreplicatedpartitions",
        "Partitions this broker leads whose ISR is smaller than their replica set",
    );
    let urp = leading
        .iter()
        .filter(|(_, st)| under_replicated(st))
        .count();
    f.value(
        "kafka_server_replicamanager_underreplicatedpartitions",
        &[],
        urp,
    );
    f.header(
        "kafka_server_replicamanager_leadercount",
        "Partitions this broker leads",
    );
    f.value(
        "kafka_server_replicamanager_leadercount",
        &[],
        leading.len(),
    );
    f.header(
        "kafka_server_replicamanager_partitioncount",
        "Partition replicas on this broker",
    );
    f.value(
        "kafka_server_replicamanager_partitioncount",
        &[],
        partitions.len(),
    );
    f.header(
        "kafka_controller_kafkacontroller_activecontrollercount",
        "1 on the active controller (the metadata quorum's leader), else 0",
    );
    f.value(
        "kafka_controller_kafkacontroller_activecontrollercount",
        &[],
        u8::from(active_controller),
    );
    let offline = if active_controller {
        image
            .topics
            .values()
            .flat_map(|t| t.partitions.iter())
            .filter(|p| p.leader < 0 || !image.is_live(p.leader))
            .count()
    } else {
        0
    };
    f.header(
        "kafka_controller_kafkacontroller_offlinepartitionscount",
        "Partitions without a live leader (reported by the active controller)",
    );
    f.value(
        "kafka_controller_kafkacontroller_offlinepartitionscount",
        &[],
        offline,
    );
    f.header(
        "kafka_brokers",
        "Live (registered, unfenced) brokers in the cluster metadata",
    );
    f.value("kafka_brokers", &[], image.live_brokers().count());

    f.header(
        "kafka_log_log_size",
        "Bytes of a partition replica's log on this broker",
    );
    for p in &partitions {
        let index = p.index.to_string();
        f.value(
            "kafka_log_log_size",
            &[("topic", &p.topic), ("partition", &index)],
            p.log.size_bytes(),
        );
    }

    // Kafka Exporter's per-partition view, from each partition's leader.
    type Value = fn(&Partition, &PartitionState) -> i64;
    const PARTITION_GAUGES: [(&str, &str, Value); 6] = [
        (
            "kafka_topic_partition_current_offset",
            "High watermark of a partition (reported by its leader)",
            |p, _| p.log.high_watermark(),
        ),
        (
            "kafka_topic_partition_oldest_offset",
            "Log start offset of a partition (reported by its leader)",
            |p, _| p.log.log_start_offset(),
        ),
        (
            "kafka_topic_partition_replicas",
            "Replicas of a partition",
            |_, st| st.replicas.len() as i64,
        ),
        (
            "kafka_topic_partition_in_sync_replica",
            "In-sync replicas of a partition",
            |_, st| st.isr.len() as i64,
        ),
        (
            "kafka_topic_partition_leader",
            "Leader broker id of a partition",
            |_, st| i64::from(st.leader),
        ),
        (
            "kafka_topic_partition_under_replicated_partition",
            "1 when a partition's ISR is smaller than its replica set",
            |_, st| i64::from(under_replicated(st)),
        ),
    ];
    for (name, help, value) in PARTITION_GAUGES {
        f.header(name, help);
        for (p, st) in &leading {
            let index = p.index.to_string();
            let labels = [("topic", p.topic.as_str()), ("partition", index.as_str())];
            f.value(name, &labels, value(p, st));
        }
    }

    f.header(
        "kafka_consumergroup_current_offset",
        "Committed offset of a consumer group on a partition",
    );
    for r in lag {
        let index = r.partition.to_string();
        let labels = [
            ("consumergroup", r.group.as_str()),
            ("topic", r.topic.as_str()),
            ("partition", index.as_str()),
        ];
        f.value("kafka_consumergroup_current_offset", &labels, r.committed);
    }
    f.header(
        "kafka_consumergroup_lag",
        "High watermark minus the committed offset of a consumer group on a partition",
    );
    for r in lag {
        let Some(hw) = r.high_watermark else { continue };
        let index = r.partition.to_string();
        let labels = [
            ("consumergroup", r.group.as_str()),
            ("topic", r.topic.as_str()),
            ("partition", index.as_str()),
        ];
        f.value(
            "kafka_consumergroup_lag",
            &labels,
            (hw - r.committed).max(0),
        );
    }

    let dir = broker.config.log_dir.display().to_string();
    if let Some((total, free)) = disk_space(&broker.config.log_dir) {
        f.header(
            "strom_log_dir_total_bytes",
            "Size of the file system holding log.dirs",
        );
        f.value("strom_log_dir_total_bytes", &[("dir", &dir)], total);
        f.header(
            "strom_log_dir_free_bytes",
            "Free space on the file system holding log.dirs",
        );
        f.value("strom_log_dir_free_bytes", &[("dir", &dir)], free);
    }
}

fn disk_space(dir: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid NUL-terminated string and `st` a writable statvfs.
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let frag = st.f_frsize as u64;
    Some((st.f_blocks as u64 * frag, st.f_bavail as u64 * frag))
}

/// Why the node is not ready to serve, or `None` when it is: joined the quorum (a leader is
/// known), its own registration is current and unfenced, it has applied that metadata, the
/// Kafka listener is open and no shutdown has begun.
pub fn not_ready(broker: &Broker) -> Option<String> {
    if broker.shutting_down.load(Ordering::Acquire) {
        return Some("shutting down".to_owned());
    }
    if broker.quorum.leader().is_none() {
        return Some("no metadata quorum leader known".to_owned());
    }
    if *broker.fenced.borrow() {
        return Some("fenced: waiting for the controller to admit this broker".to_owned());
    }
    if !broker.serving.load(Ordering::Acquire) {
        return Some("Kafka listener not open yet".to_owned());
    }
    None
}

/// Serves the admin HTTP listener until `stop` turns true.
pub async fn serve_admin(
    broker: Arc<Broker>,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "admin listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let broker = broker.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let broker = broker.clone();
                async move { Ok::<_, Infallible>(route(&broker, req).await) }
            });
            let conn = http1::Builder::new()
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), svc);
            // A stuck or slow client never holds a task for long.
            let _ = tokio::time::timeout(Duration::from_secs(60), conn).await;
        });
    }
}

async fn route(broker: &Arc<Broker>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r
    };
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => {
            let lag = group_offsets(broker).await;
            let b = broker.clone();
            let page = strom_storage::io::blocking(move || render(&b, &lag))
                .await
                .unwrap_or_default();
            let mut r = text(StatusCode::OK, page);
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n".to_owned()),
        (&Method::GET, "/readyz") => match not_ready(broker) {
            None => text(StatusCode::OK, "ready\n".to_owned()),
            Some(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
        },
        (&Method::POST, "/shutdown") => {
            tracing::info!("controlled shutdown requested over the admin listener");
            broker.controlled_shutdown().await;
            text(StatusCode::OK, "controlled shutdown complete\n".to_owned())
        }
        (_, "/metrics" | "/healthz" | "/readyz" | "/shutdown") => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n".to_owned(),
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz, /readyz or POST /shutdown\n".to_owned(),
        ),
    }
}
