//! The metadata quorum: openraft among the controller voters, replicating a [`MetadataImage`]
//! (brokers, topics, partitions with their ISR and leaders, configs, producer-id blocks).
//!
//! Every node runs a [`Quorum`]. Proposals made on any node are forwarded to the active
//! controller (the Raft leader); every node applies the committed commands to its own image
//! and publishes it to the broker through a watch channel.

pub mod controller;
pub mod image;
mod network;
mod store;

use std::collections::{BTreeMap, HashMap};
use std::io::Cursor;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Raft, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub use controller::{Heartbeat, HeartbeatReply};
pub use image::{
    BrokerId, BrokerRegistration, Command, Endpoint, MetadataImage, Outcome, PartitionState,
    Rejection, TopicImage,
};
pub use network::connect;

openraft::declare_raft_types!(
    /// Strom's Raft types: metadata commands in, outcomes out.
    pub TypeConfig:
        D = Command,
        R = Outcome,
        NodeId = u64,
        Node = BasicNode,
);

#[derive(Debug, Clone, thiserror::Error, Serialize, Deserialize, PartialEq, Eq)]
pub enum ProposeError {
    #[error("this node is not the active controller")]
    NotLeader,
    #[error("no controller quorum: {0}")]
    NoQuorum(String),
    #[error("{0}")]
    Rejected(String),
    #[error("the metadata quorum is shutting down")]
    Shutdown,
}

#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    #[error("metadata storage in {dir}: {source}")]
    Storage {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot listen for controllers on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("raft: {0}")]
    Raft(String),
}

#[derive(Debug, Clone)]
pub struct QuorumConfig {
    pub node_id: u64,
    /// `controller.quorum.voters`: id -> host:port. Empty: a single-node quorum of this node,
    /// without any network.
    pub voters: BTreeMap<u64, String>,
    /// Where the Raft log, vote and snapshots live.
    pub dir: PathBuf,
    /// The controller listener (required when there are voters).
    pub listen: Option<SocketAddr>,
    /// Outgoing connections are made from this address.
    pub bind_ip: Option<IpAddr>,
    pub election_timeout_ms: u64,
    pub heartbeat_ms: u64,
    /// `broker.session.timeout.ms`.
    pub session_timeout_ms: u64,
    /// A snapshot is taken after this many new entries.
    pub snapshot_every: u64,
    /// `auto.leader.rebalance.enable` and `leader.imbalance.check.interval.seconds`.
    pub auto_leader_rebalance: bool,
    pub imbalance_check_ms: u64,
    /// How long a proposal waits for a controller before failing.
    pub propose_timeout_ms: u64,
}

type SharedPeer = Arc<tokio::sync::Mutex<network::Peer>>;

pub struct Quorum {
    cfg: QuorumConfig,
    raft: Raft<TypeConfig>,
    image: watch::Receiver<Arc<MetadataImage>>,
    /// Connections to other controllers for forwarded proposals, and separate ones for
    /// heartbeats so that a slow proposal never delays a heartbeat past the session timeout.
    peers: parking_lot::Mutex<HashMap<(u64, bool), SharedPeer>>,
    sessions: controller::Sessions,
    /// Set while this voter must not vote: see [`Abstention`].
    abstention: parking_lot::Mutex<Abstention>,
}

/// A voter whose Raft state is empty although the quorum already existed (its disk was wiped
/// or replaced) has forgotten its votes and its log: voting now could elect a candidate that
/// misses committed entries, or vote twice in one term. It abstains (answers no vote request
/// beyond a brand-new cluster's first election) until it has applied everything that was
/// committed when it first heard from a leader, then records that in `VOTER_MARKER`. This is
/// the guarantee of KIP-853's rejoin-as-observer rule, without a membership change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Abstention {
    /// A voter in good standing (its log survived, or it caught up since).
    Voting,
    /// Blank; no leader seen yet.
    Waiting,
    /// Blank; catching up to this committed index.
    CatchingUp(u64),
}

/// Present in the Raft directory once this node may vote.
const VOTER_MARKER: &str = "voter";

impl Quorum {
    /// Opens the Raft storage, joins (or bootstraps) the quorum and starts the controller RPC
    /// listener and the controller duties.
    pub async fn start(cfg: QuorumConfig) -> Result<Arc<Self>, QuorumError> {
        let storage = |source| QuorumError::Storage {
            dir: cfg.dir.clone(),
            source,
        };
        let log = store::LogStore::open(&cfg.dir).map_err(storage)?;
        let sm = store::StateMachine::open(&cfg.dir).map_err(storage)?;
        let blank = log.is_blank();
        let abstention = if blank && !cfg.dir.join(VOTER_MARKER).exists() {
            Abstention::Waiting
        } else {
            Abstention::Voting
        };
        let image = sm.subscribe();
        let raft_config = openraft::Config {
            cluster_name: "strom".into(),
            election_timeout_min: cfg.election_timeout_ms,
            election_timeout_max: cfg.election_timeout_ms * 2,
            heartbeat_interval: cfg.heartbeat_ms,
            install_snapshot_timeout: 10_000,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(cfg.snapshot_every),
            max_in_snapshot_log_to_keep: 100,
            ..Default::default()
        }
        .validate()
        .map_err(|e| QuorumError::Raft(e.to_string()))?;
        let network = network::Network { bind: cfg.bind_ip };
        let raft = Raft::new(cfg.node_id, Arc::new(raft_config), network, log, sm)
            .await
            .map_err(|e| QuorumError::Raft(e.to_string()))?;
        let listener = match cfg.listen {
            Some(addr) if !cfg.voters.is_empty() => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| QuorumError::Listen { addr, source })?,
            ),
            _ => None,
        };
        let quorum = Arc::new(Self {
            cfg,
            raft,
            image,
            peers: parking_lot::Mutex::new(HashMap::new()),
            sessions: controller::Sessions::default(),
            abstention: parking_lot::Mutex::new(abstention),
        });
        if let Some(listener) = listener {
            tokio::spawn(quorum.clone().serve(listener));
        }
        if blank {
            quorum.bootstrap().await?;
        }
        if quorum.cfg.voters.is_empty() {
            // Alone: no need to wait for an election timeout.
            let _ = quorum.raft.trigger().elect().await;
        }
        tokio::spawn(quorum.clone().run_controller());
        Ok(quorum)
    }

    /// One explicit initialisation, by the lowest voter id and only on a blank log and only
    /// when no reachable voter already belongs to a quorum (a wiped node rejoins instead).
    async fn bootstrap(&self) -> Result<(), QuorumError> {
        let members: BTreeMap<u64, BasicNode> = if self.cfg.voters.is_empty() {
            BTreeMap::from([(self.cfg.node_id, BasicNode::new("local"))])
        } else {
            self.cfg
                .voters
                .iter()
                .map(|(id, addr)| (*id, BasicNode::new(addr)))
                .collect()
        };
        if members.keys().next() != Some(&self.cfg.node_id) {
            tracing::info!("waiting for the lowest controller id to initialise the quorum");
            return Ok(());
        }
        for (id, addr) in &self.cfg.voters {
            if *id == self.cfg.node_id {
                continue;
            }
            let mut peer = network::Peer::new(addr.clone(), self.cfg.bind_ip);
            if let Ok(network::Reply::Status { initialized: true }) = peer
                .call(&network::Request::Status, Duration::from_secs(1))
                .await
            {
                tracing::info!(
                    peer = id,
                    "a voter already belongs to a quorum: rejoining it, not initialising"
                );
                return Ok(());
            }
        }
        match self.raft.initialize(members).await {
            Ok(()) => {
                tracing::info!(voters = ?self.cfg.voters.keys().collect::<Vec<_>>(), "initialised the metadata quorum");
                self.may_vote();
                Ok(())
            }
            Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(QuorumError::Raft(e.to_string())),
        }
    }

    pub fn node_id(&self) -> u64 {
        self.cfg.node_id
    }

    /// Whether to answer a vote request. A blank voter only takes part in a brand-new
    /// cluster's first election (the candidate has no entry beyond the initial membership, so
    /// nothing committed can be lost).
    fn votes_for(&self, rpc: &openraft::raft::VoteRequest<u64>) -> bool {
        let state = *self.abstention.lock();
        state == Abstention::Voting || rpc.last_log_id.is_none_or(|l| l.index == 0)
    }

    /// After an AppendEntries from a leader: a blank voter learns how far it must catch up,
    /// and starts voting once it has applied that far.
    fn note_leader_commit(&self, commit: Option<u64>) {
        let mut state = self.abstention.lock();
        let target = match *state {
            Abstention::Voting => return,
            Abstention::Waiting => match commit {
                Some(c) => {
                    tracing::info!(
                        committed = c,
                        "this controller's metadata log was empty although the quorum exists (a wiped or new disk): not voting until it has caught up"
                    );
                    *state = Abstention::CatchingUp(c);
                    c
                }
                None => return,
            },
            Abstention::CatchingUp(c) => c,
        };
        let applied = self
            .raft
            .metrics()
            .borrow()
            .last_applied
            .map_or(0, |l| l.index);
        if applied >= target {
            drop(state);
            tracing::info!(applied, "caught up with the metadata quorum: voting again");
            self.may_vote();
        }
    }

    /// Records that this voter's Raft state is complete, so it votes from now on (restarts
    /// included).
    fn may_vote(&self) {
        *self.abstention.lock() = Abstention::Voting;
        if let Err(e) = std::fs::write(self.cfg.dir.join(VOTER_MARKER), b"1\n")
            .and_then(|()| std::fs::File::open(&self.cfg.dir)?.sync_all())
        {
            tracing::warn!(error = %e, "cannot record the voter marker; this node will abstain again after a restart until caught up");
        }
    }

    /// The latest applied image.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.image.clone()
    }

    /// The active controller, if one is known.
    pub fn leader(&self) -> Option<u64> {
        self.raft.metrics().borrow().current_leader
    }

    fn is_leader(&self) -> bool {
        self.leader() == Some(self.cfg.node_id)
    }

    /// Waits until the local image has applied `offset`.
    pub async fn wait_applied(&self, offset: u64, timeout: Duration) -> bool {
        let mut rx = self.image.clone();
        tokio::time::timeout(timeout, rx.wait_for(|i| i.offset >= offset))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Commits `cmd` through the active controller, wherever it is; returns the log offset
    /// and the outcome of applying it.
    pub async fn propose(&self, cmd: Command) -> Result<(u64, Outcome), ProposeError> {
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(self.cfg.propose_timeout_ms);
        loop {
            let attempt = match self.leader() {
                Some(l) if l == self.cfg.node_id => self.propose_here(cmd.clone()).await,
                Some(l) => self
                    .forward(l, network::Request::Propose(cmd.clone()), false)
                    .await
                    .and_then(|r| match r {
                        network::Reply::Propose(r) => r,
                        _ => Err(ProposeError::NotLeader),
                    }),
                None => Err(ProposeError::NotLeader),
            };
            // A known leader that refused (moving, unreachable): do not spin on it.
            let attempt_failed_with_leader = self.leader().is_some();
            match attempt {
                Err(ProposeError::NotLeader) | Err(ProposeError::NoQuorum(_))
                    if tokio::time::Instant::now() < deadline =>
                {
                    // Retry as soon as a leader is known (at start-up, the election is
                    // usually milliseconds away), or after 50 ms.
                    let mut metrics = self.raft.metrics();
                    let _ = tokio::time::timeout(
                        Duration::from_millis(50),
                        metrics.wait_for(|m| m.current_leader.is_some()),
                    )
                    .await;
                    if attempt_failed_with_leader {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                Err(ProposeError::NotLeader) => {
                    return Err(ProposeError::NoQuorum(format!(
                        "no active controller among voters {:?} within {} ms",
                        self.voter_ids(),
                        self.cfg.propose_timeout_ms
                    )))
                }
                other => return other,
            }
        }
    }

    fn voter_ids(&self) -> Vec<u64> {
        if self.cfg.voters.is_empty() {
            vec![self.cfg.node_id]
        } else {
            self.cfg.voters.keys().copied().collect()
        }
    }

    /// Sends a broker heartbeat to the active controller.
    pub async fn heartbeat(&self, hb: Heartbeat) -> Result<HeartbeatReply, ProposeError> {
        match self.leader() {
            Some(l) if l == self.cfg.node_id => self.heartbeat_here(hb).await,
            Some(l) => match self
                .forward(l, network::Request::Heartbeat(hb), true)
                .await?
            {
                network::Reply::Heartbeat(r) => r,
                _ => Err(ProposeError::NotLeader),
            },
            None => Err(ProposeError::NotLeader),
        }
    }

    async fn forward(
        &self,
        leader: u64,
        req: network::Request,
        heartbeat: bool,
    ) -> Result<network::Reply, ProposeError> {
        let Some(addr) = self.cfg.voters.get(&leader) else {
            return Err(ProposeError::NotLeader);
        };
        let peer = self
            .peers
            .lock()
            .entry((leader, heartbeat))
            .or_insert_with(|| {
                Arc::new(tokio::sync::Mutex::new(network::Peer::new(
                    addr.clone(),
                    self.cfg.bind_ip,
                )))
            })
            .clone();
        // A heartbeat stuck on a controller that went away must give up well within the
        // session timeout, so the broker reaches the next controller in time.
        let timeout = if heartbeat {
            Duration::from_millis((self.cfg.session_timeout_ms / 4).clamp(100, 2000))
        } else {
            Duration::from_millis(self.cfg.propose_timeout_ms.clamp(500, 5000))
        };
        let Ok(mut peer) = tokio::time::timeout(timeout, peer.lock()).await else {
            return Err(ProposeError::NoQuorum(format!(
                "controller {leader}: connection busy"
            )));
        };
        peer.call(&req, timeout)
            .await
            .map_err(|e| ProposeError::NoQuorum(format!("controller {leader}: {e}")))
    }

    async fn propose_here(&self, cmd: Command) -> Result<(u64, Outcome), ProposeError> {
        if let Command::RegisterBroker {
            id, incarnation, ..
        } = &cmd
        {
            if self.sessions.live_with_other_incarnation(
                *id,
                *incarnation,
                self.cfg.session_timeout_ms,
            ) {
                return Err(ProposeError::Rejected(format!(
                    "broker id {id} is already registered by a live process with another data directory (node ids must not be reused)"
                )));
            }
        }
        // Bounded: a write accepted in the moment this node held a stale leadership (e.g. the
        // term of its own committed vote, restored at start-up, before it saw the newer term)
        // may never be answered; the caller retries instead of waiting forever (a restarted
        // broker's registration hung for 72 s that way in the fault suite).
        let timeout = Duration::from_millis(self.cfg.propose_timeout_ms.max(500));
        let Ok(written) = tokio::time::timeout(timeout, self.raft.client_write(cmd)).await else {
            return Err(ProposeError::NoQuorum(format!(
                "the metadata write was not committed within {} ms",
                timeout.as_millis()
            )));
        };
        match written {
            Ok(r) => Ok((r.log_id.index, r.data)),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                Err(ProposeError::NotLeader)
            }
            Err(RaftError::APIError(e)) => Err(ProposeError::Rejected(e.to_string())),
            Err(RaftError::Fatal(e)) => {
                tracing::error!(error = %e, "metadata quorum stopped");
                Err(ProposeError::Shutdown)
            }
        }
    }

    async fn heartbeat_here(&self, hb: Heartbeat) -> Result<HeartbeatReply, ProposeError> {
        if !self.is_leader() {
            return Err(ProposeError::NotLeader);
        }
        // A leader cut off from the other voters still believes it leads. The answer grants
        // the broker a lease (it serves reads as leader on it), so confirm with a quorum first:
        // a newer controller is then elected only after this check, and fences the broker no
        // sooner than a full session after that, when the lease has long run out.
        let confirm = Duration::from_millis((self.cfg.session_timeout_ms / 4).clamp(100, 2000));
        match tokio::time::timeout(confirm, self.raft.get_read_log_id()).await {
            Ok(Ok(_)) => {}
            _ => return Err(ProposeError::NotLeader),
        }
        let image = self.image();
        let Some(reg) = image
            .brokers
            .get(&hb.broker)
            .filter(|r| r.incarnation == hb.incarnation)
        else {
            return Ok(HeartbeatReply {
                registered: false,
                fenced: true,
            });
        };
        self.sessions.seen(hb.broker, hb.incarnation);
        if hb.shutting_down {
            if !reg.fenced {
                tracing::info!(
                    broker = hb.broker,
                    "controlled shutdown: moving leadership away"
                );
                self.propose_here(Command::FenceBroker {
                    id: hb.broker,
                    epoch: Some(reg.epoch),
                })
                .await?;
            }
            return Ok(HeartbeatReply {
                registered: true,
                fenced: true,
            });
        }
        if reg.fenced && hb.applied >= reg.epoch {
            tracing::info!(
                broker = hb.broker,
                "broker caught up with the metadata: unfencing it"
            );
            // Carries the registration's epoch: if the broker re-registered meanwhile, the
            // command is refused instead of unfencing a process that has not caught up.
            let (_, outcome) = self
                .propose_here(Command::UnfenceBroker {
                    id: hb.broker,
                    epoch: Some(reg.epoch),
                })
                .await?;
            return Ok(HeartbeatReply {
                registered: true,
                fenced: outcome != Outcome::Done,
            });
        }
        Ok(HeartbeatReply {
            registered: true,
            fenced: reg.fenced,
        })
    }

    /// The active controller's periodic duties: fencing expired sessions, preferred leaders.
    async fn run_controller(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(
            (self.cfg.session_timeout_ms / 8).clamp(20, 500),
        ));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut was_leader = false;
        let mut last_rebalance = tokio::time::Instant::now();
        loop {
            tick.tick().await;
            let leader = self.is_leader();
            if !leader {
                was_leader = false;
                continue;
            }
            let image = self.image();
            if !was_leader {
                was_leader = true;
                self.sessions.reset(&image);
                last_rebalance = tokio::time::Instant::now();
                tracing::info!(node = self.cfg.node_id, "became the active controller");
                continue;
            }
            for id in self.sessions.expired(&image, self.cfg.session_timeout_ms) {
                tracing::warn!(
                    broker = id,
                    timeout_ms = self.cfg.session_timeout_ms,
                    "broker session expired: fencing it"
                );
                let epoch = image.brokers.get(&id).map(|b| b.epoch);
                if let Err(e) = self.propose_here(Command::FenceBroker { id, epoch }).await {
                    tracing::warn!(broker = id, error = %e, "could not fence broker");
                }
            }
            for (topic, partition) in controller::reassignments_done(&image) {
                tracing::info!(%topic, partition, "reassignment caught up: removing old replicas");
                let _ = self
                    .propose_here(Command::CompleteReassignment { topic, partition })
                    .await;
            }
            if self.cfg.auto_leader_rebalance
                && last_rebalance.elapsed() >= Duration::from_millis(self.cfg.imbalance_check_ms)
            {
                last_rebalance = tokio::time::Instant::now();
                let partitions = controller::imbalanced(&image);
                if !partitions.is_empty() {
                    tracing::info!(count = partitions.len(), "electing preferred leaders");
                    let _ = self
                        .propose_here(Command::ElectPreferred { partitions })
                        .await;
                }
            }
        }
    }

    async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(self.clone().serve_conn(stream));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "controller listener accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn serve_conn(self: Arc<Self>, mut stream: TcpStream) {
        loop {
            let req: network::Request = match network::read_frame(&mut stream).await {
                Ok(r) => r,
                Err(e) => {
                    if e.kind() != std::io::ErrorKind::UnexpectedEof {
                        tracing::debug!(error = %e, "controller connection closed");
                    }
                    return;
                }
            };
            let reply = match req {
                network::Request::Append(rpc) => {
                    let commit = rpc.leader_commit.map(|l| l.index);
                    let reply = self.raft.append_entries(rpc).await;
                    if reply.is_ok() {
                        self.note_leader_commit(commit);
                    }
                    network::Reply::Append(reply)
                }
                network::Request::Vote(rpc) => {
                    if !self.votes_for(&rpc) {
                        // As if unreachable: the candidate retries and wins elsewhere or later.
                        tracing::debug!(candidate = %rpc.vote, "abstaining from a vote until caught up");
                        return;
                    }
                    network::Reply::Vote(self.raft.vote(rpc).await)
                }
                network::Request::Snapshot(rpc) => {
                    network::Reply::Snapshot(self.raft.install_snapshot(rpc).await)
                }
                network::Request::Propose(cmd) => network::Reply::Propose(if self.is_leader() {
                    self.propose_here(cmd).await
                } else {
                    Err(ProposeError::NotLeader)
                }),
                network::Request::Heartbeat(hb) => {
                    network::Reply::Heartbeat(self.heartbeat_here(hb).await)
                }
                network::Request::Status => network::Reply::Status {
                    initialized: self.raft.is_initialized().await.unwrap_or(false),
                },
            };
            if let Err(e) = network::write_frame(&mut stream, &reply).await {
                tracing::debug!(error = %e, "controller connection closed");
                return;
            }
        }
    }

    /// Why the metadata quorum stopped on this node (a storage error in its log, vote or
    /// snapshot), if it did: the node then acts on metadata that no longer advances.
    pub fn fatal(&self) -> Option<String> {
        self.raft
            .metrics()
            .borrow()
            .running_state
            .as_ref()
            .err()
            .map(|e| e.to_string())
    }

    /// Stops Raft (the log is already durable).
    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }
}
