//! Three-node cluster harness: real `strom` processes (each a combined broker and controller)
//! on distinct loopback addresses, so that faults can be injected per process (`kill -9`,
//! SIGSTOP/SIGCONT, SIGTERM, restart, wiping the data directory) and per address (iptables
//! partitions), plus a checker that streams keyed records through a fault and then proves that
//! no acknowledged write was lost, duplicated, reordered or stored differently on any replica.
//!
//! Node `n` (1-based) has node id `n` and binds 127.0.0.1`n` (node 1 is 127.0.0.11); strom binds
//! its outgoing inter-node connections to that address too, which is what makes address-level
//! rules cut exactly the links between nodes while clients (which connect from 127.0.0.1) can
//! still reach every node.
//!
//! Diagnostics: `STROM_CLUSTER_LOGS=1` prints every node's log even when a test passes (they
//! are always printed when it fails); `STROM_RDKAFKA_DEBUG=<contexts>` (e.g. `broker,metadata`)
//! turns on librdkafka's debug log for the checker's producer.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    metadata_request, FindCoordinatorRequest, MetadataRequest, RequestHeader, ResponseHeader,
    TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientContext;

use crate::strom_bin;

/// Number of nodes in every cluster this harness starts.
pub const NODES: usize = 3;

/// How long a node may take to start (or restart) and join the cluster.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a request from the harness itself may take.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// Settings every node gets: fast failure detection, so faults resolve within seconds.
pub const OVERRIDES: &[(&str, &str)] = &[
    ("broker.session.timeout.ms", "2000"),
    ("broker.heartbeat.interval.ms", "250"),
    ("replica.lag.time.max.ms", "2000"),
    ("controller.quorum.election.timeout.ms", "500"),
    ("group.initial.rebalance.delay.ms", "0"),
    ("offsets.topic.num.partitions", "6"),
];

/// Clusters share fixed loopback addresses and iptables rules on them, so two clusters must
/// never run at once (plain `cargo test` runs the tests of a file on several threads).
static ONE_CLUSTER_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The loopback address of node `n`.
pub fn node_ip(n: usize) -> Ipv4Addr {
    assert!((1..=9).contains(&n), "node index {n} out of range");
    Ipv4Addr::new(127, 0, 0, 10 + n as u8)
}

/// A port that is free on `ip` right now (bind-probe; the OS picks it).
fn free_port_on(ip: Ipv4Addr) -> (TcpListener, u16) {
    let l = TcpListener::bind(SocketAddrV4::new(ip, 0))
        .unwrap_or_else(|e| panic!("cannot bind a probe socket on {ip}: {e}"));
    let port = l.local_addr().expect("probe address").port();
    (l, port)
}

/// One node: its addresses, directories and (while it runs) its process.
pub struct Node {
    pub id: usize,
    pub ip: Ipv4Addr,
    pub port: u16,
    pub controller_port: u16,
    /// The admin HTTP listener (`/metrics`, `/readyz`).
    pub admin_port: u16,
    /// The node's `log.dirs`; partition `t-p` lives in `dir/t-p/`.
    pub dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    paused: bool,
}

impl Node {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.ip, self.port))
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .unwrap_or_else(|| panic!("node {} is not running", self.id))
            .id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A rule this harness inserted: (chain, source, destination), all `-j DROP`.
type Rule = (&'static str, Ipv4Addr, Ipv4Addr);

/// Three running `strom` nodes. Dropping it kills every node, removes any iptables rules it
/// added, and prints every node's log if the test is failing.
pub struct Cluster {
    nodes: Vec<Node>,
    voters: String,
    rules: Vec<Rule>,
    root: tempfile::TempDir,
    _exclusive: MutexGuard<'static, ()>,
}

impl Cluster {
    /// Starts three nodes and waits (up to 60 s) until each accepts client connections, i.e.
    /// has joined the cluster.
    pub fn start() -> Self {
        Self::start_in(|root, n| root.join(format!("node-{n}")))
    }

    /// Like [`Cluster::start`], but node `n` keeps its data in `dirs[n - 1]` (an existing
    /// directory, e.g. a mount point) instead of a fresh directory under the harness's own.
    pub fn start_with_dirs(dirs: &[PathBuf]) -> Self {
        assert_eq!(dirs.len(), NODES, "one data directory per node");
        Self::start_in(|_, n| dirs[n - 1].clone())
    }

    fn start_in(dir_of: impl Fn(&Path, usize) -> PathBuf) -> Self {
        let exclusive = ONE_CLUSTER_AT_A_TIME
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let root = tempfile::tempdir().expect("tempdir");
        let mut probes = Vec::new();
        let nodes: Vec<Node> = (1..=NODES)
            .map(|n| {
                let ip = node_ip(n);
                // Hold both probes until every port is chosen so none is picked twice.
                let (l1, port) = free_port_on(ip);
                let (l2, controller_port) = free_port_on(ip);
                let (l3, admin_port) = free_port_on(ip);
                probes.extend([l1, l2, l3]);
                Node {
                    id: n,
                    ip,
                    port,
                    controller_port,
                    admin_port,
                    dir: dir_of(root.path(), n),
                    log: root.path().join(format!("node-{n}.log")),
                    child: None,
                    paused: false,
                }
            })
            .collect();
        drop(probes);
        let voters = nodes
            .iter()
            .map(|n| format!("{}@{}:{}", n.id, n.ip, n.controller_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = Self {
            nodes,
            voters,
            rules: Vec::new(),
            root,
            _exclusive: exclusive,
        };
        for n in 1..=NODES {
            c.spawn(n);
        }
        let deadline = Instant::now() + READY_TIMEOUT;
        for n in 1..=NODES {
            c.wait_ready(n, deadline);
        }
        c
    }

    pub fn node(&self, n: usize) -> &Node {
        &self.nodes[n - 1]
    }

    fn node_mut(&mut self, n: usize) -> &mut Node {
        &mut self.nodes[n - 1]
    }

    /// Node indexes (= node ids) whose process is running (paused ones included).
    pub fn running(&self) -> Vec<usize> {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|n| n.id)
            .collect()
    }

    /// `bootstrap.servers` naming every node.
    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.addr().to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The data directory (`log.dirs`) of node `n`.
    pub fn data_dir(&self, n: usize) -> &Path {
        &self.node(n).dir
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }

    fn spawn(&mut self, n: usize) {
        let voters = self.voters.clone();
        let node = self.node_mut(n);
        assert!(node.child.is_none(), "node {n} is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("node log file");
        let out = log.try_clone().expect("node log file");
        let mut cmd = Command::new(strom_bin());
        cmd.arg("serve")
            .arg("--node-id")
            .arg(n.to_string())
            .arg("--log-dirs")
            .arg(&node.dir)
            .arg("--listeners")
            .arg(format!(
                "PLAINTEXT://{}:{},CONTROLLER://{}:{}",
                node.ip, node.port, node.ip, node.controller_port
            ))
            .arg("--advertised-listeners")
            .arg(format!("PLAINTEXT://{}:{}", node.ip, node.port))
            .arg("-o")
            .arg(format!("controller.quorum.voters={voters}"))
            .arg("-o")
            .arg(format!("admin.listener={}:{}", node.ip, node.admin_port));
        for (k, v) in OVERRIDES {
            cmd.arg("-o").arg(format!("{k}={v}"));
        }
        // The harness's own switches are not strom settings (strom warns about unknown STROM_*).
        cmd.env_remove("STROM_CLUSTER_LOGS")
            .env_remove("STROM_RDKAFKA_DEBUG")
            .env("STROM_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(log);
        node.child = Some(cmd.spawn().expect("spawn strom"));
        node.paused = false;
    }

    /// Waits until node `n` accepts client connections; panics with its log if it exits or
    /// misses `deadline`.
    fn wait_ready(&mut self, n: usize, deadline: Instant) {
        loop {
            let node = self.node_mut(n);
            if TcpStream::connect_timeout(&node.addr(), Duration::from_millis(200)).is_ok() {
                return;
            }
            if let Some(status) = node
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("node {n} exited during start-up with {status}");
            }
            assert!(
                Instant::now() < deadline,
                "node {n} did not accept client connections within {READY_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: the node gets no chance to flush, close or hand anything over.
    pub fn kill9(&mut self, n: usize) {
        let node = self.node_mut(n);
        let mut c = node
            .child
            .take()
            .unwrap_or_else(|| panic!("kill9: node {n} is not running"));
        c.kill().expect("SIGKILL");
        c.wait().expect("reap");
        node.paused = false;
    }

    fn signal(&self, n: usize, sig: &str) {
        let pid = self.node(n).pid();
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} {pid} (node {n}) failed");
    }

    /// SIGSTOP: the process freezes with its sockets open, like a long GC pause or a VM stall.
    pub fn pause(&mut self, n: usize) {
        self.signal(n, "STOP");
        self.node_mut(n).paused = true;
    }

    /// SIGCONT after [`Cluster::pause`].
    pub fn resume(&mut self, n: usize) {
        self.signal(n, "CONT");
        self.node_mut(n).paused = false;
    }

    /// SIGTERM (a controlled shutdown) and wait up to 30 s for the exit.
    pub fn terminate(&mut self, n: usize) -> ExitStatus {
        self.signal(n, "TERM");
        self.reap(n, Instant::now() + Duration::from_secs(30))
    }

    /// SIGTERM to every running node at once, then wait for all of them.
    pub fn terminate_all(&mut self) -> Vec<(usize, ExitStatus)> {
        let running = self.running();
        for &n in &running {
            if self.node(n).paused {
                self.resume(n);
            }
            self.signal(n, "TERM");
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        running
            .into_iter()
            .map(|n| (n, self.reap(n, deadline)))
            .collect()
    }

    fn reap(&mut self, n: usize, deadline: Instant) -> ExitStatus {
        let node = self.node_mut(n);
        let mut child = node.child.take().expect("running");
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("node {n} did not exit within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts node `n` again with the same arguments, ports and data directory, and waits until
    /// it accepts client connections.
    pub fn restart(&mut self, n: usize) {
        self.spawn(n);
        self.wait_ready(n, Instant::now() + READY_TIMEOUT);
    }

    /// Starts node `n` again without waiting for it to serve (it may not, e.g. without a
    /// controller quorum); [`Cluster::wait_serving`] waits.
    pub fn start_node(&mut self, n: usize) {
        self.spawn(n);
    }

    /// Waits until node `n`, started with [`Cluster::start_node`], accepts client connections.
    pub fn wait_serving(&mut self, n: usize) {
        self.wait_ready(n, Instant::now() + READY_TIMEOUT);
    }

    /// Deletes node `n`'s data directory (the node must be stopped).
    pub fn wipe(&mut self, n: usize) {
        let node = self.node(n);
        assert!(!node.is_running(), "wipe: node {n} is still running");
        if node.dir.exists() {
            std::fs::remove_dir_all(&node.dir).expect("remove data dir");
        }
    }

    // -----------------------------------------------------------------------------------------
    // Network partitions
    // -----------------------------------------------------------------------------------------

    /// Drops every packet between node `n`'s address and the other nodes' addresses, in both
    /// directions. Panics (failing the test) if iptables is missing or refuses.
    pub fn isolate(&mut self, n: usize) {
        let me = node_ip(n);
        for other in (1..=NODES).filter(|&m| m != n).map(node_ip) {
            for (src, dst) in [(me, other), (other, me)] {
                for chain in ["INPUT", "OUTPUT"] {
                    let rule = (chain, src, dst);
                    iptables("-I", rule).unwrap_or_else(|e| panic!("{e}"));
                    self.rules.push(rule);
                }
            }
        }
    }

    /// Removes exactly the rules [`Cluster::isolate`] added.
    pub fn heal(&mut self) {
        let mut failures = Vec::new();
        for rule in std::mem::take(&mut self.rules) {
            if let Err(e) = iptables("-D", rule) {
                failures.push(e);
            }
        }
        assert!(failures.is_empty(), "heal failed: {failures:?}");
    }

    // -----------------------------------------------------------------------------------------
    // Metadata
    // -----------------------------------------------------------------------------------------

    /// Creates `topic` with `partitions` partitions, replication factor 3 and
    /// `min.insync.replicas=2`, then waits until every partition has a leader and three in-sync
    /// replicas.
    pub fn create_topic(&self, topic: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .expect("admin client");
        let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(3))
            .set("min.insync.replicas", "2");
        let res = block_on(admin.create_topics(
            &[new],
            &AdminOptions::new().operation_timeout(Some(TIMEOUT)),
        ))
        .expect("CreateTopics request");
        assert!(
            res.iter().all(Result::is_ok),
            "create topic {topic}: {res:?}"
        );
        self.wait_full_isr(topic, partitions, Duration::from_secs(30));
    }

    /// Creates `topic` with one partition per entry of `assignments` (its replicas, preferred
    /// leader first) and waits until every partition has a leader and all its replicas in sync.
    pub fn create_topic_assigned(&self, topic: &str, assignments: &[&[i32]]) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .expect("admin client");
        let new = NewTopic::new(
            topic,
            assignments.len() as i32,
            TopicReplication::Variable(assignments),
        );
        let res = block_on(admin.create_topics(
            &[new],
            &AdminOptions::new().operation_timeout(Some(TIMEOUT)),
        ))
        .expect("CreateTopics request");
        assert!(
            res.iter().all(Result::is_ok),
            "create topic {topic}: {res:?}"
        );
        let sizes: Vec<usize> = assignments.iter().map(|a| a.len()).collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ps = self.metadata(topic);
            if ps.len() == sizes.len()
                && ps
                    .iter()
                    .all(|p| p.leader >= 1 && p.isr.len() == sizes[p.partition as usize])
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{topic} not fully in sync: {ps:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Partition states of `topic` as librdkafka's metadata reports them (from whichever node
    /// it asks).
    pub fn metadata(&self, topic: &str) -> Vec<PartitionState> {
        let client = metadata_client(&self.bootstrap());
        rd_metadata(&client, topic).expect("metadata")
    }

    /// The node leading `topic`/`partition` (librdkafka's metadata, waiting for a leader).
    pub fn leader(&self, topic: &str, partition: i32) -> usize {
        let client = metadata_client(&self.bootstrap());
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let leader = rd_metadata(&client, topic)
                .ok()
                .and_then(|ps| ps.into_iter().find(|p| p.partition == partition))
                .map_or(-1, |p| p.leader);
            if leader >= 1 {
                return leader as usize;
            }
            assert!(
                Instant::now() < deadline,
                "{topic}/{partition} has no leader"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Partition states of `topic` as node `n` itself reports them (a raw Metadata request to
    /// that node only).
    pub fn node_metadata(&self, n: usize, topic: &str) -> std::io::Result<Vec<PartitionState>> {
        let req = MetadataRequest::default()
            .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default(
            )
            .with_name(Some(TopicName(StrBytes::from_string(topic.to_owned()))))]));
        let resp = raw_call(self.node(n).addr(), 1, &req)?;
        let t = resp
            .topics
            .into_iter()
            .next()
            .ok_or_else(|| std::io::Error::other("no topic in the response"))?;
        if t.error_code != 0 {
            return Err(std::io::Error::other(format!(
                "topic error code {}",
                t.error_code
            )));
        }
        let mut out: Vec<PartitionState> = t
            .partitions
            .into_iter()
            .map(|p| PartitionState {
                partition: p.partition_index,
                leader: *p.leader_id,
                isr: p.isr_nodes.iter().map(|b| **b).collect(),
            })
            .collect();
        out.sort_by_key(|p| p.partition);
        Ok(out)
    }

    /// The leader of `topic`/`partition` in node `n`'s own metadata.
    pub fn leader_seen_by(&self, n: usize, topic: &str, partition: i32) -> usize {
        let leader = self
            .node_metadata(n, topic)
            .expect("metadata")
            .into_iter()
            .find(|p| p.partition == partition)
            .map_or(-1, |p| p.leader);
        assert!(
            leader >= 1,
            "node {n} knows no leader of {topic}/{partition}"
        );
        leader as usize
    }

    /// Waits until every node in `observers` reports a leader for `topic`/`partition` other
    /// than `old`; returns how long that took.
    pub fn wait_leader_moved(
        &self,
        topic: &str,
        partition: i32,
        old: usize,
        observers: &[usize],
        timeout: Duration,
    ) -> Duration {
        let start = Instant::now();
        loop {
            let last = observers
                .iter()
                .map(|&n| {
                    let leader = self
                        .node_metadata(n, topic)
                        .ok()
                        .and_then(|ps| ps.into_iter().find(|p| p.partition == partition))
                        .map(|p| p.leader);
                    (n, leader)
                })
                .collect::<Vec<_>>();
            if last
                .iter()
                .all(|(_, l)| l.is_some_and(|l| l >= 1 && l as usize != old))
            {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < timeout,
                "leadership of {topic}/{partition} did not move off node {old} within \
                 {timeout:?}: (observer, leader) = {last:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until every partition of `topic` has a leader and an ISR of all three nodes, both
    /// in librdkafka's metadata and in the metadata of every running node; returns the time
    /// it took.
    pub fn wait_full_isr(&self, topic: &str, partitions: i32, timeout: Duration) -> Duration {
        self.wait_isr(topic, partitions, timeout, |isr| {
            let mut isr = isr.to_vec();
            isr.sort_unstable();
            isr == (1..=NODES as i32).collect::<Vec<_>>()
        })
    }

    /// Waits until node `n` is in the ISR of every partition of `topic` (in every view).
    pub fn wait_in_isr(&self, topic: &str, partitions: i32, n: usize, timeout: Duration) {
        self.wait_isr(topic, partitions, timeout, |isr| isr.contains(&(n as i32)));
    }

    fn wait_isr(
        &self,
        topic: &str,
        partitions: i32,
        timeout: Duration,
        ok: impl Fn(&[i32]) -> bool,
    ) -> Duration {
        let start = Instant::now();
        let client = metadata_client(&self.bootstrap());
        let good = |ps: &[PartitionState]| {
            ps.len() == partitions as usize && ps.iter().all(|p| p.leader >= 1 && ok(&p.isr))
        };
        loop {
            let rd = rd_metadata(&client, topic);
            let per_node: Vec<(usize, std::io::Result<Vec<PartitionState>>)> = self
                .running()
                .into_iter()
                .filter(|&n| !self.node(n).paused)
                .map(|n| (n, self.node_metadata(n, topic)))
                .collect();
            let rd_ok = rd.as_ref().is_ok_and(|ps| good(ps));
            let nodes_ok = per_node
                .iter()
                .all(|(_, r)| r.as_ref().is_ok_and(|ps| good(ps)));
            if rd_ok && nodes_ok {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < timeout,
                "ISR of {topic} not as expected within {timeout:?}: librdkafka sees {rd:?}; \
                 nodes see {per_node:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The coordinator of `group` according to a raw FindCoordinator v1 request (asked of the
    /// running nodes in turn until one answers without error).
    pub fn find_coordinator(&self, group: &str) -> usize {
        let req = FindCoordinatorRequest::default()
            .with_key(StrBytes::from_string(group.to_owned()))
            .with_key_type(0);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = Vec::new();
        loop {
            for n in self.running() {
                match raw_call(self.node(n).addr(), 1, &req) {
                    Ok(r) if r.error_code == 0 && *r.node_id >= 1 => return *r.node_id as usize,
                    Ok(r) => last.push(format!(
                        "node {n}: error {} {:?} node {}",
                        r.error_code, r.error_message, *r.node_id
                    )),
                    Err(e) => last.push(format!("node {n}: {e}")),
                }
            }
            assert!(
                Instant::now() < deadline,
                "no coordinator for group {group}: {last:?}"
            );
            last.clear();
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for rule in std::mem::take(&mut self.rules) {
            if let Err(e) = iptables("-D", rule) {
                eprintln!("cluster harness: {e}");
            }
        }
        for node in &mut self.nodes {
            if let Some(mut c) = node.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        // STROM_CLUSTER_LOGS=1 prints the logs of passing tests too.
        if std::thread::panicking() || std::env::var_os("STROM_CLUSTER_LOGS").is_some() {
            for node in &self.nodes {
                eprintln!(
                    "---- node {} ({}, client port {}, controller port {}) log {} ----\n{}",
                    node.id,
                    node.ip,
                    node.port,
                    node.controller_port,
                    node.log.display(),
                    node.log()
                );
            }
        }
    }
}

fn iptables_bin() -> Result<PathBuf, String> {
    ["/usr/sbin/iptables", "/sbin/iptables", "/usr/bin/iptables"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| {
            "iptables is not installed (looked in /usr/sbin, /sbin, /usr/bin): the network \
             partition tests need it, and root"
                .to_owned()
        })
}

fn iptables(op: &str, (chain, src, dst): Rule) -> Result<(), String> {
    let bin = iptables_bin()?;
    let args = [
        "-w",
        op,
        chain,
        "-s",
        &src.to_string(),
        "-d",
        &dst.to_string(),
        "-j",
        "DROP",
    ]
    .map(str::to_owned);
    let out = Command::new(&bin)
        .args(&args)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`iptables {}` failed with {} (the partition tests must run as root): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs a future to completion on a throwaway runtime (for rdkafka's async admin API and the
/// FutureProducer from synchronous tests).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// Polls `cond` every 50 ms until it holds; panics with `what()` after `timeout`.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool, what: impl Fn() -> String) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {}",
            what()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------
// Metadata through librdkafka
// ---------------------------------------------------------------------------------------------

/// One partition's leader and ISR (node ids).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    pub partition: i32,
    pub leader: i32,
    pub isr: Vec<i32>,
}

fn metadata_client(bootstrap: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "strom-cluster-metadata")
        .set("enable.auto.commit", "false")
        .set("allow.auto.create.topics", "false")
        .create()
        .expect("metadata client")
}

fn rd_metadata(client: &BaseConsumer, topic: &str) -> Result<Vec<PartitionState>, String> {
    let md = client
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or("topic missing from metadata")?;
    if let Some(e) = t.error() {
        return Err(format!("topic error {e:?}"));
    }
    let mut out: Vec<PartitionState> = t
        .partitions()
        .iter()
        .map(|p| PartitionState {
            partition: p.id(),
            leader: p.leader(),
            isr: p.isr().to_vec(),
        })
        .collect();
    out.sort_by_key(|p| p.partition);
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Raw requests
// ---------------------------------------------------------------------------------------------

/// Sends one request (header v-appropriate, correlation id 1) on a fresh connection and
/// decodes the response.
pub fn raw_call<R: Request>(
    addr: SocketAddr,
    version: i16,
    req: &R,
) -> std::io::Result<R::Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut body = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("strom-cluster-tests")))
        .encode(&mut body, R::header_version(version))
        .map_err(std::io::Error::other)?;
    req.encode(&mut body, version)
        .map_err(std::io::Error::other)?;
    let mut frame = Vec::with_capacity(body.len() + 4);
    frame.extend_from_slice(&(body.len() as i32).to_be_bytes());
    frame.extend_from_slice(&body);
    stream.write_all(&frame)?;
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let len = i32::from_be_bytes(len);
    if !(4..=64 << 20).contains(&len) {
        return Err(std::io::Error::other(format!(
            "response frame of {len} bytes"
        )));
    }
    let mut buf = vec![0u8; len as usize];
    stream.read_exact(&mut buf)?;
    let mut buf = Bytes::from(buf);
    let header = ResponseHeader::decode(&mut buf, R::Response::header_version(version))
        .map_err(std::io::Error::other)?;
    if header.correlation_id != 1 {
        return Err(std::io::Error::other(format!(
            "correlation id {} in the response",
            header.correlation_id
        )));
    }
    R::Response::decode(&mut buf, version).map_err(std::io::Error::other)
}

// ---------------------------------------------------------------------------------------------
// The keyed stream
// ---------------------------------------------------------------------------------------------

/// Keys of the stream: `k0`..`k9`; key `i` always goes to partition `i % partitions`.
pub const KEYS: usize = 10;

/// One send of the stream and what became of it.
#[derive(Debug, Clone)]
pub struct Sent {
    pub key: usize,
    pub seq: u64,
    pub partition: i32,
    pub value: String,
    pub outcome: Option<Outcome>,
}

#[derive(Debug, Clone)]
pub enum Outcome {
    Acked {
        partition: i32,
        offset: i64,
        at: Instant,
    },
    Failed {
        error: String,
        at: Instant,
    },
}

#[derive(Default)]
struct Shared {
    sent: Vec<Sent>,
    /// Delivery reports for a send that already had one (librdkafka bug or ours).
    repeated_reports: usize,
    /// Errors librdkafka reported outside delivery reports.
    client_errors: Vec<String>,
}

struct StreamContext {
    shared: Arc<Mutex<Shared>>,
}

impl ClientContext for StreamContext {
    /// librdkafka's own log, shown when `STROM_RDKAFKA_DEBUG` names debug contexts.
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        if std::env::var_os("STROM_RDKAFKA_DEBUG").is_some() {
            eprintln!("rdkafka {level:?} {fac}: {message}");
        }
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        eprintln!("stream producer error: {error}: {reason}");
        let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        shared.client_errors.push(format!("{error}: {reason}"));
    }
}

impl ProducerContext for StreamContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, index: usize) {
        let at = Instant::now();
        let outcome = match result {
            Ok(m) => Outcome::Acked {
                partition: m.partition(),
                offset: m.offset(),
                at,
            },
            Err((e, _)) => Outcome::Failed {
                error: e.to_string(),
                at,
            },
        };
        let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        match shared.sent.get_mut(index) {
            Some(s) if s.outcome.is_none() => s.outcome = Some(outcome),
            _ => shared.repeated_reports += 1,
        }
    }
}

/// A producer thread sending `k{key}-{seq}` values with `acks=all` and idempotence, recording
/// every delivery report.
pub struct Stream {
    producer: Arc<ThreadedProducer<StreamContext>>,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    partitions: i32,
}

impl Stream {
    /// Starts sending at about `rate` records per second until [`Stream::finish`], or until
    /// `limit` records have been sent.
    pub fn start(
        bootstrap: &str,
        topic: &str,
        partitions: i32,
        rate: u64,
        limit: Option<u64>,
    ) -> Self {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let mut config = ClientConfig::new();
        if let Ok(debug) = std::env::var("STROM_RDKAFKA_DEBUG") {
            config
                .set("debug", debug)
                .set_log_level(rdkafka::config::RDKafkaLogLevel::Debug);
        }
        let producer: ThreadedProducer<StreamContext> = config
            .set("bootstrap.servers", bootstrap)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", "60000")
            .set("request.timeout.ms", "10000")
            .set("linger.ms", "5")
            .create_with_context(StreamContext {
                shared: shared.clone(),
            })
            .expect("stream producer");
        let producer = Arc::new(producer);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (producer, shared, stop) = (producer.clone(), shared.clone(), stop.clone());
            let topic = topic.to_owned();
            std::thread::spawn(move || {
                let start = Instant::now();
                let mut n: u64 = 0;
                while !stop.load(Ordering::Relaxed) && limit.is_none_or(|l| n < l) {
                    let key = (n % KEYS as u64) as usize;
                    let seq = n / KEYS as u64;
                    let partition = key as i32 % partitions;
                    let key_s = format!("k{key}");
                    let value = format!("k{key}-{seq}");
                    let index = {
                        let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
                        s.sent.push(Sent {
                            key,
                            seq,
                            partition,
                            value: value.clone(),
                            outcome: None,
                        });
                        s.sent.len() - 1
                    };
                    let mut record = BaseRecord::with_opaque_to(&topic, index)
                        .partition(partition)
                        .key(&key_s)
                        .payload(&value);
                    loop {
                        match producer.send(record) {
                            Ok(()) => break,
                            Err((e, r))
                                if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) =>
                            {
                                record = r;
                                std::thread::sleep(Duration::from_millis(5));
                            }
                            Err((e, _)) => {
                                let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
                                s.sent[index].outcome = Some(Outcome::Failed {
                                    error: format!("enqueue: {e}"),
                                    at: Instant::now(),
                                });
                                break;
                            }
                        }
                    }
                    n += 1;
                    let due = start + Duration::from_micros(n * 1_000_000 / rate.max(1));
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                }
            })
        };
        Self {
            producer,
            shared,
            stop,
            thread: Some(thread),
            partitions,
        }
    }

    /// Acknowledgements per partition received at or after `since`.
    pub fn acks_since(&self, since: Instant) -> Vec<usize> {
        let s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = vec![0; self.partitions as usize];
        for sent in &s.sent {
            if let Some(Outcome::Acked { partition, at, .. }) = sent.outcome {
                if at >= since {
                    out[partition as usize] += 1;
                }
            }
        }
        out
    }

    /// Failures, sends still waiting for a report, and librdkafka's errors, for messages.
    fn state(&self) -> String {
        let s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        let pending = s.sent.iter().filter(|s| s.outcome.is_none()).count();
        let errors = &s.client_errors[s.client_errors.len().saturating_sub(10)..];
        format!(
            "{} sent, {pending} without a delivery report ({} in flight in librdkafka), \
             failures {}, last client errors {errors:?}",
            s.sent.len(),
            self.producer.in_flight_count(),
            failure_summary(&s.sent)
        )
    }

    /// Waits until every partition has at least `min` acknowledgements received at or after
    /// `since`: the stream is flowing (again).
    pub fn wait_acks_since(&self, since: Instant, min: usize, timeout: Duration) {
        wait_until(
            timeout,
            || self.acks_since(since).iter().all(|&n| n >= min),
            || {
                format!(
                    "the stream did not reach {min} acknowledgements per partition: acks per \
                     partition since then {:?}; {}",
                    self.acks_since(since),
                    self.state()
                )
            },
        );
    }

    /// Stops sending, waits for every outstanding delivery report, and returns the record of
    /// every send.
    pub fn finish(mut self) -> Deliveries {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("stream thread");
        }
        // The stream runs to its natural end when it has a limit: wait for the thread first.
        let flushed = self.producer.flush(Duration::from_secs(75));
        let s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        let pending = s.sent.iter().filter(|s| s.outcome.is_none()).count();
        assert!(
            flushed.is_ok() && pending == 0,
            "{pending} of {} sends have no delivery report after a 75 s flush ({flushed:?})",
            s.sent.len()
        );
        assert_eq!(
            s.repeated_reports, 0,
            "librdkafka reported the delivery of some sends twice"
        );
        Deliveries {
            sent: s.sent.clone(),
        }
    }

    /// Waits for a stream started with a `limit` to send all of it, then finishes it.
    pub fn finish_when_sent(self, timeout: Duration) -> Deliveries {
        if let Some(t) = &self.thread {
            let deadline = Instant::now() + timeout;
            while !t.is_finished() {
                assert!(Instant::now() < deadline, "stream did not send everything");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.finish()
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn failure_summary(sent: &[Sent]) -> String {
    let mut errors: BTreeMap<&str, usize> = BTreeMap::new();
    for s in sent {
        if let Some(Outcome::Failed { error, .. }) = &s.outcome {
            *errors.entry(error.as_str()).or_default() += 1;
        }
    }
    if errors.is_empty() {
        "none".to_owned()
    } else {
        format!("{errors:?}")
    }
}

/// Every send of a finished stream with its outcome.
pub struct Deliveries {
    pub sent: Vec<Sent>,
}

impl Deliveries {
    pub fn acked(&self) -> impl Iterator<Item = (&Sent, i32, i64, Instant)> {
        self.sent.iter().filter_map(|s| match s.outcome {
            Some(Outcome::Acked {
                partition,
                offset,
                at,
            }) => Some((s, partition, offset, at)),
            _ => None,
        })
    }

    pub fn failed_count(&self) -> usize {
        self.sent
            .iter()
            .filter(|s| matches!(s.outcome, Some(Outcome::Failed { .. })))
            .count()
    }

    pub fn failures(&self) -> String {
        failure_summary(&self.sent)
    }

    /// Time from `fault` until the first acknowledgement on `partition` with an offset above
    /// every offset acknowledged on it before `fault`.
    pub fn failover(&self, partition: i32, fault: Instant) -> Option<Duration> {
        let before = self
            .acked()
            .filter(|&(_, p, _, at)| p == partition && at < fault)
            .map(|(_, _, offset, _)| offset)
            .max()
            .unwrap_or(-1);
        self.acked()
            .filter(|&(_, p, offset, at)| p == partition && at >= fault && offset > before)
            .map(|(_, _, _, at)| at - fault)
            .min()
    }
}

// ---------------------------------------------------------------------------------------------
// Reading back
// ---------------------------------------------------------------------------------------------

/// (key, value) of one record, `<null>` for a null field.
pub type Rec = (String, String);

/// A record field as text, `<null>` for a null one.
pub fn text(b: Option<&[u8]>) -> String {
    b.map_or_else(
        || "<null>".to_owned(),
        |b| String::from_utf8_lossy(b).into_owned(),
    )
}

/// Reads every partition of `topic` from the beginning to its high watermark with an
/// assign-mode consumer; returns offset → record per partition.
///
/// `committed[p]` is the end of what was acknowledged on partition `p`: a leader elected a
/// moment ago raises its high watermark only once its followers fetched from it, so the read
/// waits (up to 30 s) for the watermark to get there before it starts.
pub fn read_all(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    committed: &[i64],
) -> Vec<BTreeMap<i64, Rec>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "strom-cluster-check")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .expect("consumer");
    (0..partitions)
        .map(|partition| {
            let wanted = committed.get(partition as usize).copied().unwrap_or(0);
            let settle = Instant::now() + Duration::from_secs(30);
            let (low, high) = loop {
                // A new leader answers OFFSET_NOT_AVAILABLE until its high watermark caught up.
                match consumer.fetch_watermarks(topic, partition, TIMEOUT) {
                    Ok((low, high)) if high >= wanted || Instant::now() > settle => {
                        break (low, high)
                    }
                    Ok(_) => {}
                    Err(e) if Instant::now() > settle => panic!("watermarks: {e}"),
                    Err(_) => {}
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            let mut out = BTreeMap::new();
            if high <= low {
                return out;
            }
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(topic, partition, Offset::Beginning)
                .expect("tpl");
            consumer.assign(&tpl).expect("assign");
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut next = low;
            let mut errors = Vec::new();
            while next < high {
                assert!(
                    Instant::now() < deadline,
                    "timed out reading {topic}/{partition} at {next} of {high}; errors {errors:?}"
                );
                match consumer.poll(Duration::from_millis(200)) {
                    Some(Ok(m)) => {
                        next = m.offset() + 1;
                        out.insert(m.offset(), (text(m.key()), text(m.payload())));
                    }
                    Some(Err(e)) => errors.push(e.to_string()),
                    None => {}
                }
            }
            out
        })
        .collect()
}

/// Decodes a partition directory's segments from disk: offset → record.
pub fn read_log_dir(dir: &Path) -> Result<BTreeMap<i64, Rec>, String> {
    let mut segments: Vec<(i64, PathBuf)> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let base = name.strip_suffix(".log")?.parse::<i64>().ok()?;
            Some((base, e.path()))
        })
        .collect();
    segments.sort();
    let mut out = BTreeMap::new();
    for (_, path) in segments {
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut batches = strom_protocol::batch::BatchIter::new(&bytes);
        for (header, range) in &mut batches {
            if header.is_control() {
                continue;
            }
            let records = strom_protocol::records::decode(&bytes[range], 64 << 20)
                .map_err(|e| format!("{}: batch at {}: {e}", path.display(), header.base_offset))?;
            for r in records {
                let rec = (text(r.key.as_deref()), text(r.value.as_deref()));
                if out.insert(r.offset, rec).is_some() {
                    return Err(format!(
                        "{}: offset {} stored twice",
                        path.display(),
                        r.offset
                    ));
                }
            }
        }
        if let Some(e) = batches.error() {
            return Err(format!(
                "{}: unreadable at byte {} of {}: {e}",
                path.display(),
                batches.position(),
                bytes.len()
            ));
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// The checker
// ---------------------------------------------------------------------------------------------

/// Counts of a verified stream.
#[derive(Debug, Clone)]
pub struct Summary {
    pub sent: usize,
    pub acked: usize,
    pub failed: usize,
    pub read: usize,
    pub lost: usize,
    pub duplicated: usize,
    /// Records on disk in each replica (all three are equal), over all partitions.
    pub stored_per_replica: usize,
    pub failures: String,
    /// How long the ISRs took to become full again once the checker started.
    pub full_isr_after: Duration,
    /// How long the SIGTERM shutdown of all nodes took.
    pub shutdown_took: Duration,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sent={} acked={} failed={} read={} lost={} duplicated={} stored_per_replica={} \
             full_isr_after={:.1?} shutdown_took={:.1?} (failures: {})",
            self.sent,
            self.acked,
            self.failed,
            self.read,
            self.lost,
            self.duplicated,
            self.stored_per_replica,
            self.full_isr_after,
            self.shutdown_took,
            self.failures
        )
    }
}

fn parse_value(v: &str) -> Option<(usize, u64)> {
    let (k, seq) = v.strip_prefix('k')?.split_once('-')?;
    Some((k.parse().ok()?, seq.parse().ok()?))
}

fn first<T: std::fmt::Debug>(v: &[T]) -> String {
    format!("{:?}", &v[..v.len().min(5)])
}

/// After a fault has been healed and the stream finished: waits for a full ISR everywhere,
/// reads the topic back and checks it against `d`; then stops every node with SIGTERM and
/// checks that the three replicas of each partition hold the same offset → record map on
/// disk, containing every acknowledged record.
pub fn verify(c: &mut Cluster, topic: &str, partitions: i32, d: &Deliveries) -> Summary {
    let full_isr_after = c.wait_full_isr(topic, partitions, Duration::from_secs(60));
    let mut committed = vec![0i64; partitions.max(0) as usize];
    for (_, p, o, _) in d.acked() {
        if let Some(c) = committed.get_mut(p as usize) {
            *c = (*c).max(o + 1);
        }
    }
    let read = read_all(&c.bootstrap(), topic, partitions, &committed);

    let acked: Vec<(&Sent, i32, i64)> = d.acked().map(|(s, p, o, _)| (s, p, o)).collect();
    let mut summary = Summary {
        sent: d.sent.len(),
        acked: acked.len(),
        failed: d.failed_count(),
        read: read.iter().map(BTreeMap::len).sum(),
        lost: 0,
        duplicated: 0,
        stored_per_replica: 0,
        failures: d.failures(),
        full_isr_after,
        shutdown_took: Duration::ZERO,
    };

    // Where each value was read.
    let mut found: HashMap<&str, Vec<(i32, i64)>> = HashMap::new();
    let mut unknown = Vec::new();
    let known: HashMap<&str, &Sent> = d.sent.iter().map(|s| (s.value.as_str(), s)).collect();
    for (p, recs) in read.iter().enumerate() {
        for (&offset, (key, value)) in recs {
            match known.get(value.as_str()) {
                Some(s) if *key == format!("k{}", s.key) && s.partition == p as i32 => {
                    found.entry(value).or_default().push((p as i32, offset));
                }
                _ => unknown.push((p, offset, key.clone(), value.clone())),
            }
        }
    }
    let duplicated: Vec<(&str, &Vec<(i32, i64)>)> = found
        .iter()
        .filter(|(_, at)| at.len() > 1)
        .map(|(v, at)| (*v, at))
        .collect();
    let lost: Vec<(&str, i32, i64)> = acked
        .iter()
        .filter(|(s, _, _)| !found.contains_key(s.value.as_str()))
        .map(|(s, p, o)| (s.value.as_str(), *p, *o))
        .collect();
    let misplaced: Vec<(&str, i32, i64, Option<&Rec>)> = acked
        .iter()
        .filter_map(|&(s, p, o)| {
            let at = read.get(p as usize).and_then(|m| m.get(&o));
            (at.map(|r| r.1.as_str()) != Some(s.value.as_str())).then_some((
                s.value.as_str(),
                p,
                o,
                at,
            ))
        })
        .collect();
    // Per key, offsets must increase with seq.
    let mut per_key: BTreeMap<usize, Vec<(i32, i64, u64)>> = BTreeMap::new();
    for (p, recs) in read.iter().enumerate() {
        for (&offset, (_, value)) in recs {
            if let Some((key, seq)) = parse_value(value) {
                per_key
                    .entry(key)
                    .or_default()
                    .push((p as i32, offset, seq));
            }
        }
    }
    let mut out_of_order = Vec::new();
    for (key, mut recs) in per_key {
        recs.sort_unstable();
        for w in recs.windows(2) {
            if w[1].2 <= w[0].2 {
                out_of_order.push((key, w[0], w[1]));
            }
        }
    }
    summary.lost = lost.len();
    summary.duplicated = duplicated.len();
    let ok = lost.is_empty()
        && duplicated.is_empty()
        && misplaced.is_empty()
        && out_of_order.is_empty()
        && unknown.is_empty();
    assert!(
        ok,
        "{summary}: lost {} acknowledged (first {}), duplicated {} (first {}), acknowledged \
         offset holds another record {} (first {}), per-key order violations {} (first {}), \
         records nobody sent {} (first {})",
        lost.len(),
        first(&lost),
        duplicated.len(),
        first(&duplicated),
        misplaced.len(),
        first(&misplaced),
        out_of_order.len(),
        first(&out_of_order),
        unknown.len(),
        first(&unknown),
    );

    // The replicas on disk, after a clean shutdown of every node.
    let stopping = Instant::now();
    let statuses = c.terminate_all();
    summary.shutdown_took = stopping.elapsed();
    assert!(
        statuses.iter().all(|(_, s)| s.success()),
        "a node did not shut down cleanly on SIGTERM: {statuses:?}"
    );
    for p in 0..partitions {
        let replicas: Vec<BTreeMap<i64, Rec>> = (1..=NODES)
            .map(|n| {
                read_log_dir(&c.data_dir(n).join(format!("{topic}-{p}")))
                    .unwrap_or_else(|e| panic!("{summary}: node {n}, {topic}-{p}: {e}"))
            })
            .collect();
        let lens: Vec<usize> = replicas.iter().map(BTreeMap::len).collect();
        let shortest = *lens.iter().min().expect("three replicas");
        for (i, r) in replicas.iter().enumerate().skip(1) {
            let diff = replicas[0]
                .iter()
                .zip(r.iter())
                .take(shortest)
                .find(|(a, b)| a != b);
            assert!(
                diff.is_none(),
                "{summary}: {topic}-{p}: node 1 and node {} differ on disk (lengths {lens:?}): \
                 first difference {diff:?}",
                i + 1
            );
        }
        assert!(
            lens.iter().all(|&l| l == lens[0]),
            "{summary}: {topic}-{p}: replicas hold different numbers of records on disk: \
             {lens:?} (nodes 1..3; last offsets {:?})",
            replicas
                .iter()
                .map(|r| r.keys().next_back())
                .collect::<Vec<_>>()
        );
        // What the consumer read (up to the high watermark) is what is stored.
        let stored = &replicas[0];
        let consumed = &read[p as usize];
        let differs: Vec<_> = consumed
            .iter()
            .filter(|(o, r)| stored.get(o) != Some(r))
            .map(|(o, r)| (*o, r.clone(), stored.get(o).cloned()))
            .collect();
        assert!(
            differs.is_empty(),
            "{summary}: {topic}-{p}: {} consumed records differ from the stored replicas \
             (first {})",
            differs.len(),
            first(&differs)
        );
        let missing: Vec<_> = acked
            .iter()
            .filter(|(s, ap, o)| {
                *ap == p && stored.get(o).map(|r| r.1.as_str()) != Some(s.value.as_str())
            })
            .map(|(s, _, o)| (s.value.as_str(), *o))
            .collect();
        assert!(
            missing.is_empty(),
            "{summary}: {topic}-{p}: {} acknowledged records missing on disk (first {})",
            missing.len(),
            first(&missing)
        );
        summary.stored_per_replica += stored.len();
        if stored.len() > consumed.len() {
            eprintln!(
                "note: {topic}-{p}: replicas hold {} records beyond the high watermark read",
                stored.len() - consumed.len()
            );
        }
    }
    summary
}
