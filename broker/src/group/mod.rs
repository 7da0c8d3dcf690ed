//! The classic group coordinator: consumer-group membership, rebalances and committed offsets.
//!
//! The state machine follows Kafka's (Empty → PreparingRebalance → CompletingRebalance → Stable,
//! and Dead for deleted groups). Joins and syncs that must wait for other members park a
//! oneshot sender on the member; a tick every [`TICK`] completes rebalances whose members have
//! all rejoined or whose deadline passed and expires members whose session ran out. Offsets are
//! written to the internal `__consumer_offsets` topic (see [`store`]) before a commit is
//! acknowledged and loaded back from it at start-up.

pub mod store;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use parking_lot::Mutex;
use tokio::sync::oneshot;

/// How often rebalance deadlines and session timeouts are checked.
pub const TICK: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::PreparingRebalance => "PreparingRebalance",
            State::CompletingRebalance => "CompletingRebalance",
            State::Stable => "Stable",
            State::Dead => "Dead",
        }
    }
}

/// What a JoinGroup caller eventually receives.
#[derive(Debug, Clone, Default)]
pub struct JoinResult {
    pub error: Option<ResponseError>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// (member id, group instance id, metadata) — only for the leader.
    pub members: Vec<(String, Option<String>, Bytes)>,
    /// KIP-814: the (static) leader rejoined a stable group and must not assign again.
    pub skip_assignment: bool,
}

/// What a SyncGroup caller eventually receives.
#[derive(Debug, Clone, Default)]
pub struct SyncResult {
    pub error: Option<ResponseError>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

/// A JoinGroup request, decoded.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub group_id: String,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// v4+: a first join without a member id gets MEMBER_ID_REQUIRED (KIP-394).
    pub require_known_member_id: bool,
    /// v9+: the response can tell a rejoining static leader to skip assignment (KIP-814).
    pub supports_skip_assignment: bool,
}

struct Member {
    id: String,
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    join_waiter: Option<oneshot::Sender<JoinResult>>,
    sync_waiter: Option<oneshot::Sender<SyncResult>>,
    last_heartbeat: Instant,
}

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
}

struct Group {
    state: State,
    generation: i32,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, not yet joined.
    pending: HashMap<String, Instant>,
    rebalance_deadline: Option<Instant>,
    /// The running join phase started from Empty: it waits out the initial delay even when
    /// every known member has joined, so that more consumers can arrive.
    initial_delay: bool,
    /// The leader's assignment for this generation is being stored; SyncGroup answers wait for
    /// it (Kafka's storeGroup before propagating the assignment).
    storing: bool,
    offsets: HashMap<(String, i32), Committed>,
}

impl Group {
    fn new() -> Self {
        Self {
            state: State::Empty,
            generation: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: BTreeMap::new(),
            pending: HashMap::new(),
            storing: false,
            rebalance_deadline: None,
            initial_delay: false,
            offsets: HashMap::new(),
        }
    }

    fn static_member(&self, instance: &str) -> Option<String> {
        self.members
            .values()
            .find(|m| m.instance_id.as_deref() == Some(instance))
            .map(|m| m.id.clone())
    }

    /// Protocols every member supports; the group's choice is the one most members rank first.
    fn select_protocol(&self) -> Option<String> {
        let mut candidates: Option<HashSet<&str>> = None;
        for m in self.members.values() {
            let mine: HashSet<&str> = m.protocols.iter().map(|(n, _)| n.as_str()).collect();
            candidates = Some(match candidates {
                None => mine,
                Some(c) => c.intersection(&mine).copied().collect(),
            });
        }
        let candidates = candidates?;
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some((name, _)) = m
                .protocols
                .iter()
                .find(|(n, _)| candidates.contains(n.as_str()))
            {
                *votes.entry(name.as_str()).or_default() += 1;
            }
        }
        votes
            .into_iter()
            .max_by_key(|(_, v)| *v)
            .map(|(n, _)| n.to_owned())
    }

    fn supports(&self, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocols.is_empty();
        }
        let theirs: HashSet<&str> = protocols.iter().map(|(n, _)| n.as_str()).collect();
        let mut common: Option<HashSet<&str>> = None;
        for m in self.members.values() {
            let mine: HashSet<&str> = m.protocols.iter().map(|(n, _)| n.as_str()).collect();
            common = Some(match common {
                None => mine,
                Some(c) => c.intersection(&mine).copied().collect(),
            });
        }
        common.is_some_and(|c| c.iter().any(|p| theirs.contains(p)))
    }

    fn join_result_for(&self, member_id: &str) -> JoinResult {
        let leader = self.leader.clone().unwrap_or_default();
        let members = if leader == member_id {
            self.members
                .values()
                .map(|m| {
                    let meta = m
                        .protocols
                        .iter()
                        .find(|(n, _)| Some(n) == self.protocol_name.as_ref())
                        .map(|(_, b)| b.clone())
                        .unwrap_or_default();
                    (m.id.clone(), m.instance_id.clone(), meta)
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinResult {
            error: None,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader,
            member_id: member_id.to_owned(),
            members,
            skip_assignment: false,
        }
    }
}

/// Timing knobs (Kafka's `group.*` broker configs).
#[derive(Debug, Clone, Copy)]
pub struct GroupConfig {
    pub initial_rebalance_delay: Duration,
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
}

/// A group's membership as stored in the offsets topic after each rebalance, so that a
/// restarted broker resumes the generation instead of forcing every member to rejoin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSnapshot {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol_name: Option<String>,
    pub leader: Option<String>,
    pub members: Vec<MemberSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSnapshot {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    /// The member's metadata for the group's chosen protocol.
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// One group's stored state: (group id, committed offsets, membership).
pub type GroupState = (
    String,
    Vec<((String, i32), Option<Committed>)>,
    Option<GroupSnapshot>,
);

pub struct Coordinator {
    groups: Mutex<HashMap<String, Group>>,
    config: GroupConfig,
    /// Membership changes to persist, in the order they happened, drained by the broker.
    dirty: Mutex<Vec<PendingWrite>>,
    /// Wakes the broker's writer when a write has callers waiting on it.
    pub wake: tokio::sync::Notify,
}

/// A membership change waiting to be written to the offsets topic.
pub struct PendingWrite {
    pub group: String,
    /// `None`: the group was deleted.
    pub snapshot: Option<GroupSnapshot>,
    /// The generation whose SyncGroup answers wait for this write ([`Coordinator::stored`]).
    pub completes: Option<i32>,
}

fn snapshot(g: &Group) -> GroupSnapshot {
    GroupSnapshot {
        protocol_type: g.protocol_type.clone().unwrap_or_default(),
        generation: g.generation,
        protocol_name: g.protocol_name.clone(),
        leader: g.leader.clone(),
        members: g
            .members
            .values()
            .map(|m| MemberSnapshot {
                member_id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                rebalance_timeout_ms: m.rebalance_timeout.as_millis().min(i32::MAX as u128) as i32,
                session_timeout_ms: m.session_timeout.as_millis().min(i32::MAX as u128) as i32,
                subscription: m
                    .protocols
                    .iter()
                    .find(|(n, _)| Some(n) == g.protocol_name.as_ref())
                    .map(|(_, b)| b.clone())
                    .unwrap_or_default(),
                assignment: m.assignment.clone(),
            })
            .collect(),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Coordinator {
    pub fn new(config: GroupConfig) -> Arc<Self> {
        Arc::new(Self {
            groups: Mutex::new(HashMap::new()),
            config,
            dirty: Mutex::new(Vec::new()),
            wake: tokio::sync::Notify::new(),
        })
    }

    /// Installs what was loaded from the offsets topic at start-up. Groups that had members
    /// come back Stable with a fresh session for each member, as after a coordinator move in
    /// Kafka: members that are still alive carry on without a rebalance.
    pub fn load(&self, loaded: store::Loaded) {
        let now = Instant::now();
        let mut groups = self.groups.lock();
        for (id, snap) in loaded.groups {
            let g = groups.entry(id).or_insert_with(Group::new);
            g.generation = snap.generation;
            g.protocol_type = Some(snap.protocol_type);
            g.protocol_name = snap.protocol_name.clone();
            g.leader = snap.leader;
            for m in snap.members {
                let protocols = snap
                    .protocol_name
                    .clone()
                    .map(|p| vec![(p, m.subscription)])
                    .unwrap_or_default();
                g.members.insert(
                    m.member_id.clone(),
                    Member {
                        id: m.member_id,
                        instance_id: m.instance_id,
                        client_id: m.client_id,
                        client_host: m.client_host,
                        session_timeout: Duration::from_millis(m.session_timeout_ms.max(0) as u64),
                        rebalance_timeout: Duration::from_millis(
                            m.rebalance_timeout_ms.max(0) as u64
                        ),
                        protocols,
                        assignment: m.assignment,
                        join_waiter: None,
                        sync_waiter: None,
                        last_heartbeat: now,
                    },
                );
            }
            g.state = if g.members.is_empty() {
                State::Empty
            } else {
                State::Stable
            };
        }
        for (id, committed) in loaded.offsets {
            groups.entry(id).or_insert_with(Group::new).offsets = committed;
        }
    }

    /// Forgets the groups `owned` selects (their offsets partition moved to another node).
    /// Waiting members are answered NOT_COORDINATOR so they look the coordinator up again.
    pub fn unload(&self, owned: impl Fn(&str) -> bool) {
        let mut groups = self.groups.lock();
        let doomed: Vec<String> = groups.keys().filter(|g| owned(g)).cloned().collect();
        for id in doomed {
            if let Some(g) = groups.remove(&id) {
                for m in g.members.into_values() {
                    if let Some(w) = m.join_waiter {
                        let _ = w.send(JoinResult {
                            error: Some(ResponseError::NotCoordinator),
                            generation: -1,
                            member_id: m.id.clone(),
                            ..Default::default()
                        });
                    }
                    if let Some(w) = m.sync_waiter {
                        let _ = w.send(SyncResult {
                            error: Some(ResponseError::NotCoordinator),
                            ..Default::default()
                        });
                    }
                }
            }
        }
        self.dirty.lock().retain(|w| !owned(&w.group));
    }

    /// The full state of every group stored in offsets-topic partition `partition`: what a
    /// compacted copy of that partition would hold.
    pub fn state_of_partition(&self, partition: i32, partitions: i32) -> Vec<GroupState> {
        let groups = self.groups.lock();
        let mut out: Vec<_> = groups
            .iter()
            .filter(|(id, g)| {
                g.state != State::Dead && store::partition_for(id, partitions) == partition
            })
            .map(|(id, g)| {
                let offsets = g
                    .offsets
                    .iter()
                    .map(|(k, c)| (k.clone(), Some(c.clone())))
                    .collect();
                let membership = (g.generation > 0).then(|| snapshot(g));
                (id.clone(), offsets, membership)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Membership changes waiting to be written to the offsets topic.
    pub fn take_dirty(&self) -> Vec<PendingWrite> {
        std::mem::take(&mut *self.dirty.lock())
    }

    fn mark_dirty(&self, id: &str, g: Option<&Group>) {
        self.dirty.lock().push(PendingWrite {
            group: id.to_owned(),
            snapshot: g.map(snapshot),
            completes: None,
        });
    }

    /// JoinGroup. The receiver resolves when the join phase completes (or at once).
    pub fn join(&self, req: JoinRequest) -> oneshot::Receiver<JoinResult> {
        let (tx, rx) = oneshot::channel();
        let fail = |tx: oneshot::Sender<JoinResult>, e: ResponseError, member_id: String| {
            let _ = tx.send(JoinResult {
                error: Some(e),
                generation: -1,
                member_id,
                ..Default::default()
            });
        };
        if req.group_id.is_empty() {
            fail(tx, ResponseError::InvalidGroupId, req.member_id);
            return rx;
        }
        if req.session_timeout_ms < self.config.min_session_timeout_ms
            || req.session_timeout_ms > self.config.max_session_timeout_ms
        {
            fail(tx, ResponseError::InvalidSessionTimeout, req.member_id);
            return rx;
        }
        let mut groups = self.groups.lock();
        let g = groups
            .entry(req.group_id.clone())
            .or_insert_with(Group::new);
        if g.state == State::Dead {
            fail(tx, ResponseError::CoordinatorNotAvailable, req.member_id);
            return rx;
        }
        let type_mismatch =
            !g.members.is_empty() && g.protocol_type.as_deref() != Some(req.protocol_type.as_str());
        if req.protocols.is_empty() || type_mismatch || !g.supports(&req.protocols) {
            fail(tx, ResponseError::InconsistentGroupProtocol, req.member_id);
            return rx;
        }
        let now = Instant::now();
        let mut member_id = req.member_id.clone();
        if member_id.is_empty() {
            if let Some(instance) = &req.instance_id {
                if let Some(old_id) = g.static_member(instance) {
                    // KIP-345: a static member rejoining takes a new id without a rebalance when
                    // nothing about it changed; the old id is fenced from now on.
                    let new_id = format!("{instance}-{}", uuid::Uuid::new_v4());
                    let Some(mut m) = g.members.remove(&old_id) else {
                        fail(tx, ResponseError::UnknownMemberId, member_id);
                        return rx;
                    };
                    let unchanged = m.protocols == req.protocols;
                    m.id = new_id.clone();
                    m.protocols = req.protocols.clone();
                    m.last_heartbeat = now;
                    if let Some(w) = m.join_waiter.take() {
                        let _ = w.send(JoinResult {
                            error: Some(ResponseError::FencedInstanceId),
                            generation: -1,
                            member_id: old_id.clone(),
                            ..Default::default()
                        });
                    }
                    let was_leader = g.leader.as_deref() == Some(old_id.as_str());
                    if was_leader {
                        g.leader = Some(new_id.clone());
                    }
                    g.members.insert(new_id.clone(), m);
                    if g.state == State::Stable && unchanged {
                        let mut result = g.join_result_for(&new_id);
                        if was_leader && req.supports_skip_assignment {
                            result.skip_assignment = true;
                        } else if was_leader {
                            // Older clients cannot be told to skip: answer as to a follower, so
                            // the current assignment stays in force.
                            result.leader = old_id.clone();
                            result.members.clear();
                        }
                        let _ = tx.send(result);
                        return rx;
                    }
                    member_id = new_id;
                    if let Some(m) = g.members.get_mut(&member_id) {
                        m.join_waiter = Some(tx);
                    }
                    self.prepare_rebalance(g);
                    return rx;
                }
            }
            // Kafka names members after their static instance id, else their client id.
            let prefix = match (&req.instance_id, req.client_id.as_str()) {
                (Some(instance), _) => instance.as_str(),
                (None, "") => "member",
                (None, client) => client,
            };
            let new_id = format!("{prefix}-{}", uuid::Uuid::new_v4());
            if req.require_known_member_id && req.instance_id.is_none() {
                // Kafka forgets an id handed out this way after the session timeout.
                let session = Duration::from_millis(req.session_timeout_ms.max(0) as u64);
                g.pending.insert(new_id.clone(), now + session);
                fail(tx, ResponseError::MemberIdRequired, new_id);
                return rx;
            }
            member_id = new_id;
        } else if !g.members.contains_key(&member_id) && g.pending.remove(&member_id).is_none() {
            fail(tx, ResponseError::UnknownMemberId, member_id);
            return rx;
        }
        if let (Some(instance), Some(m)) = (&req.instance_id, g.members.get(&member_id)) {
            if m.instance_id.as_deref() != Some(instance.as_str()) {
                fail(tx, ResponseError::FencedInstanceId, member_id);
                return rx;
            }
        }
        let existing = g.members.contains_key(&member_id);
        if g.members.is_empty() {
            g.protocol_type = Some(req.protocol_type.clone());
        }
        let changed = g
            .members
            .get(&member_id)
            .is_none_or(|m| m.protocols != req.protocols);
        let member = g
            .members
            .entry(member_id.clone())
            .or_insert_with(|| Member {
                id: member_id.clone(),
                instance_id: req.instance_id.clone(),
                client_id: req.client_id.clone(),
                client_host: req.client_host.clone(),
                session_timeout: Duration::from_millis(req.session_timeout_ms.max(0) as u64),
                rebalance_timeout: Duration::from_millis(req.rebalance_timeout_ms.max(0) as u64),
                protocols: req.protocols.clone(),
                assignment: Bytes::new(),
                join_waiter: None,
                sync_waiter: None,
                last_heartbeat: now,
            });
        member.protocols = req.protocols.clone();
        member.session_timeout = Duration::from_millis(req.session_timeout_ms.max(0) as u64);
        member.rebalance_timeout = Duration::from_millis(req.rebalance_timeout_ms.max(0) as u64);
        member.last_heartbeat = now;
        let is_leader = g.leader.as_deref() == Some(member_id.as_str());
        match g.state {
            State::CompletingRebalance | State::Stable
                if existing && !changed && !(g.state == State::Stable && is_leader) =>
            {
                // A rejoin that changes nothing: answer with the current generation.
                let _ = tx.send(g.join_result_for(&member_id));
            }
            _ => {
                if let Some(m) = g.members.get_mut(&member_id) {
                    m.join_waiter = Some(tx);
                }
                if g.state != State::PreparingRebalance {
                    self.prepare_rebalance(g);
                }
            }
        }
        rx
    }

    fn prepare_rebalance(&self, g: &mut Group) {
        // Members waiting in SyncGroup learn that the generation they synced for is gone.
        for m in g.members.values_mut() {
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(SyncResult {
                    error: Some(ResponseError::RebalanceInProgress),
                    ..Default::default()
                });
            }
        }
        let longest = g
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default();
        g.initial_delay = g.state == State::Empty && !self.config.initial_rebalance_delay.is_zero();
        let delay = if g.initial_delay {
            // Kafka's group.initial.rebalance.delay.ms: let a fleet of consumers arrive first.
            self.config.initial_rebalance_delay.min(longest)
        } else {
            longest
        };
        g.state = State::PreparingRebalance;
        g.rebalance_deadline = Some(Instant::now() + delay);
    }

    /// Ends the join phase when every member has rejoined or the deadline passed.
    fn maybe_complete_join(&self, id: &str, g: &mut Group, now: Instant) {
        if g.state != State::PreparingRebalance {
            return;
        }
        let all_joined =
            g.members.values().all(|m| m.join_waiter.is_some()) && g.pending.is_empty();
        let initial_delay_running =
            g.initial_delay && g.rebalance_deadline.is_some_and(|d| now < d);

        let deadline_passed = g.rebalance_deadline.is_none_or(|d| now >= d);
        if !(deadline_passed || (all_joined && !initial_delay_running)) {
            return;
        }
        // Static members keep their place until their session times out (KIP-345).
        g.members
            .retain(|_, m| m.join_waiter.is_some() || m.instance_id.is_some());
        g.pending.clear();
        g.generation += 1;
        g.storing = false;
        g.rebalance_deadline = None;
        g.initial_delay = false;
        if g.members.is_empty() {
            g.state = State::Empty;
            g.protocol_name = None;
            g.leader = None;
            self.mark_dirty(id, Some(g));
            return;
        }
        g.protocol_name = g.select_protocol();
        if !g.leader.as_ref().is_some_and(|l| g.members.contains_key(l)) {
            g.leader = g.members.keys().next().cloned();
        }
        g.state = State::CompletingRebalance;
        let ids: Vec<String> = g.members.keys().cloned().collect();
        for id in ids {
            let result = g.join_result_for(&id);
            if let Some(m) = g.members.get_mut(&id) {
                if let Some(w) = m.join_waiter.take() {
                    let _ = w.send(result);
                    m.last_heartbeat = now;
                }
            }
        }
    }

    fn check_member(
        g: &Group,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), ResponseError> {
        Self::validate_member(g, member_id, instance_id)?;
        if generation != g.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        Ok(())
    }

    /// The member exists and, if it names a static instance, is that instance's current id.
    fn validate_member(
        g: &Group,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), ResponseError> {
        if let Some(instance) = instance_id {
            if let Some(current) = g.static_member(instance) {
                if current != member_id {
                    return Err(ResponseError::FencedInstanceId);
                }
            }
        }
        let m = g
            .members
            .get(member_id)
            .ok_or(ResponseError::UnknownMemberId)?;
        if instance_id.is_some() && m.instance_id.as_deref() != instance_id {
            return Err(ResponseError::FencedInstanceId);
        }
        Ok(())
    }

    /// SyncGroup. The leader's assignments are stored untouched and handed to each member.
    pub fn sync(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        protocol: (Option<&str>, Option<&str>),
        assignments: Vec<(String, Bytes)>,
    ) -> oneshot::Receiver<SyncResult> {
        let (tx, rx) = oneshot::channel();
        let fail = |tx: oneshot::Sender<SyncResult>, e: ResponseError| {
            let _ = tx.send(SyncResult {
                error: Some(e),
                ..Default::default()
            });
        };
        let mut groups = self.groups.lock();
        let Some(g) = groups.get_mut(group_id) else {
            fail(tx, ResponseError::UnknownMemberId);
            return rx;
        };
        if let Err(e) = Self::check_member(g, member_id, instance_id, generation) {
            fail(tx, e);
            return rx;
        }
        let (ptype, pname) = protocol;
        if ptype.is_some_and(|t| Some(t) != g.protocol_type.as_deref())
            || pname.is_some_and(|n| Some(n) != g.protocol_name.as_deref())
        {
            fail(tx, ResponseError::InconsistentGroupProtocol);
            return rx;
        }
        match g.state {
            State::PreparingRebalance => fail(tx, ResponseError::RebalanceInProgress),
            State::CompletingRebalance => {
                if let Some(m) = g.members.get_mut(member_id) {
                    m.sync_waiter = Some(tx);
                    m.last_heartbeat = Instant::now();
                }
                if g.leader.as_deref() == Some(member_id) && !g.storing {
                    let mut given: HashMap<String, Bytes> = assignments.into_iter().collect();
                    for m in g.members.values_mut() {
                        m.assignment = given.remove(&m.id).unwrap_or_default();
                    }
                    // Nobody learns the assignment before it is durable: a coordinator that
                    // takes over must know this generation, or it would hand it out again.
                    g.storing = true;
                    self.dirty.lock().push(PendingWrite {
                        group: group_id.to_owned(),
                        snapshot: Some(snapshot(g)),
                        completes: Some(g.generation),
                    });
                    self.wake.notify_one();
                }
            }
            State::Stable => {
                let assignment = g
                    .members
                    .get(member_id)
                    .map(|m| m.assignment.clone())
                    .unwrap_or_default();
                let _ = tx.send(SyncResult {
                    error: None,
                    protocol_type: g.protocol_type.clone(),
                    protocol_name: g.protocol_name.clone(),
                    assignment,
                });
            }
            State::Empty | State::Dead => fail(tx, ResponseError::UnknownMemberId),
        }
        rx
    }

    /// The write of `generation`'s assignment finished: on success the group is Stable and
    /// every member waiting in SyncGroup gets its assignment; on failure they get `result`'s
    /// error and must rejoin (Kafka's resetAndPropagateAssignmentError).
    pub fn stored(&self, group_id: &str, generation: i32, result: Result<(), ResponseError>) {
        let mut groups = self.groups.lock();
        let Some(g) = groups.get_mut(group_id) else {
            return;
        };
        if !g.storing || g.generation != generation || g.state != State::CompletingRebalance {
            return;
        }
        g.storing = false;
        if result.is_ok() {
            g.state = State::Stable;
        }
        let (ptype, pname) = (g.protocol_type.clone(), g.protocol_name.clone());
        for m in g.members.values_mut() {
            if result.is_err() {
                m.assignment = Bytes::new();
            }
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(SyncResult {
                    error: result.err(),
                    protocol_type: ptype.clone(),
                    protocol_name: pname.clone(),
                    assignment: m.assignment.clone(),
                });
            }
        }
    }

    /// Heartbeat: keeps the session alive and tells the member when to rejoin.
    pub fn heartbeat(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), ResponseError> {
        let mut groups = self.groups.lock();
        let g = groups
            .get_mut(group_id)
            .ok_or(ResponseError::UnknownMemberId)?;
        if g.state == State::Dead {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        // Kafka's order: membership, then generation, then the group's state.
        Self::check_member(g, member_id, instance_id, generation)?;
        if let Some(m) = g.members.get_mut(member_id) {
            m.last_heartbeat = Instant::now();
        }
        match g.state {
            State::PreparingRebalance => Err(ResponseError::RebalanceInProgress),
            _ => Ok(()),
        }
    }

    /// LeaveGroup for one member, identified by member id or (static) instance id.
    pub fn leave(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), ResponseError> {
        let mut groups = self.groups.lock();
        let g = groups
            .get_mut(group_id)
            .ok_or(ResponseError::UnknownMemberId)?;
        let id = match instance_id {
            Some(instance) => {
                let id = g
                    .static_member(instance)
                    .ok_or(ResponseError::UnknownMemberId)?;
                if !member_id.is_empty() && member_id != id {
                    return Err(ResponseError::FencedInstanceId);
                }
                id
            }
            None => member_id.to_owned(),
        };
        let mut m = g
            .members
            .remove(&id)
            .ok_or(ResponseError::UnknownMemberId)?;
        if let Some(w) = m.join_waiter.take() {
            let _ = w.send(JoinResult {
                error: Some(ResponseError::UnknownMemberId),
                generation: -1,
                member_id: id.clone(),
                ..Default::default()
            });
        }
        tracing::info!(group = group_id, member = %id, "member left");
        self.after_member_removed(group_id, g);
        Ok(())
    }

    fn after_member_removed(&self, id: &str, g: &mut Group) {
        match g.state {
            State::Stable | State::CompletingRebalance => self.prepare_rebalance(g),
            State::PreparingRebalance => {}
            State::Empty | State::Dead => {}
        }
        self.maybe_complete_join(id, g, Instant::now());
    }

    /// Completes rebalances and expires silent members; call every [`TICK`].
    pub fn tick(&self) {
        let now = Instant::now();
        let mut groups = self.groups.lock();
        for (id, g) in groups.iter_mut() {
            let expired: Vec<String> = g
                .members
                .values()
                .filter(|m| {
                    m.join_waiter.is_none()
                        && m.sync_waiter.is_none()
                        && now.duration_since(m.last_heartbeat) > m.session_timeout
                })
                .map(|m| m.id.clone())
                .collect();
            g.pending.retain(|_, deadline| now < *deadline);
            for member in expired {
                tracing::info!(group = %id, %member, "member session expired");
                g.members.remove(&member);
                self.after_member_removed(id, g);
            }
            self.maybe_complete_join(id, g, now);
        }
    }

    /// Validates an OffsetCommit against group membership and returns whether it may proceed.
    pub fn check_commit(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        version: i16,
    ) -> Result<(), ResponseError> {
        if group_id.is_empty() {
            return Err(ResponseError::InvalidGroupId);
        }
        let mut groups = self.groups.lock();
        let Some(g) = groups.get(group_id) else {
            if generation < 0 {
                // A simple commit creates the (empty) group, as in Kafka.
                groups.insert(group_id.to_owned(), Group::new());
                return Ok(());
            }
            return Err(if version >= 9 {
                ResponseError::GroupIdNotFound
            } else {
                ResponseError::IllegalGeneration
            });
        };
        // Kafka's validateOffsetCommit, in its order.
        if g.state == State::Dead {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        if generation < 0 && g.state == State::Empty {
            return Ok(());
        }
        if generation >= 0 || !member_id.is_empty() || instance_id.is_some() {
            Self::check_member(g, member_id, instance_id, generation)?;
        } else if g.state != State::Empty {
            return Err(ResponseError::UnknownMemberId);
        }
        if g.state == State::CompletingRebalance {
            return Err(ResponseError::RebalanceInProgress);
        }
        Ok(())
    }

    /// Records offsets that are now durable.
    pub fn apply_commits(&self, group_id: &str, records: &[((String, i32), Option<Committed>)]) {
        let mut groups = self.groups.lock();
        // The group exists: check_commit created it for a simple commit, or it has members.
        let Some(g) = groups.get_mut(group_id) else {
            return;
        };
        for (key, value) in records {
            match value {
                Some(c) => {
                    g.offsets.insert(key.clone(), c.clone());
                }
                None => {
                    g.offsets.remove(key);
                }
            }
        }
    }

    /// Committed offsets of a group: all of them, or those asked for.
    pub fn fetch_offsets(&self, group_id: &str) -> HashMap<(String, i32), Committed> {
        self.groups
            .lock()
            .get(group_id)
            .map(|g| g.offsets.clone())
            .unwrap_or_default()
    }

    /// (group id, protocol type, state) of every group.
    pub fn list(&self) -> Vec<(String, String, State)> {
        let groups = self.groups.lock();
        let mut out: Vec<_> = groups
            .iter()
            .filter(|(_, g)| g.state != State::Dead)
            .map(|(id, g)| {
                (
                    id.clone(),
                    g.protocol_type.clone().unwrap_or_default(),
                    g.state,
                )
            })
            .collect();
        out.sort();
        out
    }

    /// A description of one group for DescribeGroups.
    pub fn describe(&self, group_id: &str) -> Option<GroupDescription> {
        let groups = self.groups.lock();
        let g = groups.get(group_id)?;
        Some(GroupDescription {
            state: g.state,
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol_name: if g.state == State::Stable {
                g.protocol_name.clone().unwrap_or_default()
            } else {
                String::new()
            },
            members: g
                .members
                .values()
                .map(|m| MemberDescription {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: m
                        .protocols
                        .iter()
                        .find(|(n, _)| Some(n) == g.protocol_name.as_ref())
                        .map(|(_, b)| b.clone())
                        .unwrap_or_default(),
                    assignment: if g.state == State::Stable {
                        m.assignment.clone()
                    } else {
                        Bytes::new()
                    },
                })
                .collect(),
        })
    }

    /// Marks an empty group deleted; returns its offsets so tombstones can be written.
    pub fn delete(&self, group_id: &str) -> Result<Vec<(String, i32)>, ResponseError> {
        let mut groups = self.groups.lock();
        let g = groups
            .get_mut(group_id)
            .ok_or(ResponseError::GroupIdNotFound)?;
        match g.state {
            State::Dead => Err(ResponseError::GroupIdNotFound),
            State::Empty => {
                let keys = g.offsets.keys().cloned().collect();
                groups.remove(group_id);
                self.mark_dirty(group_id, None);
                Ok(keys)
            }
            _ => Err(ResponseError::NonEmptyGroup),
        }
    }

    /// Topics the group's members subscribe to (consumer protocol), for OffsetDelete.
    pub fn subscribed_topics(&self, group_id: &str) -> Result<HashSet<String>, ResponseError> {
        use kafka_protocol::protocol::Decodable;
        let groups = self.groups.lock();
        let g = groups.get(group_id).ok_or(ResponseError::GroupIdNotFound)?;
        let mut topics = HashSet::new();
        if g.protocol_type.as_deref() != Some("consumer") {
            return Ok(topics);
        }
        for m in g.members.values() {
            let Some((_, meta)) = m
                .protocols
                .iter()
                .find(|(n, _)| Some(n) == g.protocol_name.as_ref())
            else {
                continue;
            };
            let mut buf = meta.clone();
            if buf.len() < 2 {
                continue;
            }
            let version = i16::from_be_bytes([buf[0], buf[1]]);
            bytes::Buf::advance(&mut buf, 2);
            if let Ok(sub) = kafka_protocol::messages::ConsumerProtocolSubscription::decode(
                &mut buf,
                version.clamp(0, 3),
            ) {
                topics.extend(sub.topics.iter().map(|t| t.as_str().to_owned()));
            }
        }
        Ok(topics)
    }

    /// Offsets of empty groups older than `retention` (`offsets.retention.minutes`).
    pub fn expired_offsets(&self, retention_ms: i64) -> Vec<(String, Vec<(String, i32)>)> {
        let now = now_ms();
        let groups = self.groups.lock();
        groups
            .iter()
            .filter(|(_, g)| g.state == State::Empty)
            .map(|(id, g)| {
                let keys = g
                    .offsets
                    .iter()
                    .filter(|(_, c)| now - c.commit_timestamp > retention_ms)
                    .map(|(k, _)| k.clone())
                    .collect::<Vec<_>>();
                (id.clone(), keys)
            })
            .filter(|(_, keys)| !keys.is_empty())
            .collect()
    }
}

pub struct GroupDescription {
    pub state: State,
    pub protocol_type: String,
    pub protocol_name: String,
    pub members: Vec<MemberDescription>,
}

pub struct MemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// The commit timestamp for new offsets.
pub fn commit_timestamp() -> i64 {
    now_ms()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coordinator() -> Arc<Coordinator> {
        Coordinator::new(GroupConfig {
            initial_rebalance_delay: Duration::ZERO,
            min_session_timeout_ms: 10,
            max_session_timeout_ms: 60_000,
        })
    }

    fn join_req(member: &str, instance: Option<&str>) -> JoinRequest {
        JoinRequest {
            group_id: "g".into(),
            member_id: member.into(),
            instance_id: instance.map(Into::into),
            client_id: "c".into(),
            client_host: "127.0.0.1".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 10_000,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"meta"))],
            require_known_member_id: true,
            supports_skip_assignment: false,
        }
    }

    fn now_or_fail<T>(mut rx: oneshot::Receiver<T>) -> T {
        rx.try_recv().expect("answered without waiting")
    }

    /// What the broker's writer does: every pending membership write succeeds.
    fn store_all(c: &Coordinator) {
        for w in c.take_dirty() {
            if let Some(generation) = w.completes {
                c.stored(&w.group, generation, Ok(()));
            }
        }
    }

    /// A leader's SyncGroup, answered once its assignment is stored.
    fn leader_sync(c: &Coordinator, rx: oneshot::Receiver<SyncResult>) -> SyncResult {
        let mut rx = rx;
        assert!(
            rx.try_recv().is_err(),
            "answered before the assignment was stored"
        );
        store_all(c);
        now_or_fail(rx)
    }

    /// Joins as a new member through MEMBER_ID_REQUIRED; returns the pending join.
    fn join_new(c: &Coordinator) -> (String, oneshot::Receiver<JoinResult>) {
        let first = now_or_fail(c.join(join_req("", None)));
        assert_eq!(first.error, Some(ResponseError::MemberIdRequired));
        let id = first.member_id.clone();
        (id.clone(), c.join(join_req(&id, None)))
    }

    #[test]
    fn a_group_forms_syncs_and_rebalances_when_a_member_joins() {
        let c = coordinator();
        let (a, rx) = join_new(&c);
        c.tick();
        let joined = now_or_fail(rx);
        assert_eq!(
            (joined.error, joined.generation, joined.leader.as_str()),
            (None, 1, a.as_str())
        );
        assert_eq!(joined.members.len(), 1);
        let synced = leader_sync(
            &c,
            c.sync(
                "g",
                &a,
                None,
                1,
                (None, None),
                vec![(a.clone(), Bytes::from_static(b"p0"))],
            ),
        );
        assert_eq!(synced.assignment, Bytes::from_static(b"p0"));
        assert_eq!(c.heartbeat("g", &a, None, 1), Ok(()));
        assert_eq!(c.describe("g").map(|d| d.state), Some(State::Stable));

        // A second member: the first learns through its heartbeat and rejoins.
        let (b, rx_b) = join_new(&c);
        assert_eq!(
            c.heartbeat("g", &a, None, 1),
            Err(ResponseError::RebalanceInProgress)
        );
        let rx_a = c.join(join_req(&a, None));
        c.tick();
        let (ja, jb) = (now_or_fail(rx_a), now_or_fail(rx_b));
        assert_eq!((ja.generation, jb.generation), (2, 2));
        assert_eq!(ja.leader, a);
        assert_eq!(ja.members.len(), 2);
        assert!(jb.members.is_empty(), "only the leader sees the members");
        // Old generations are fenced; unknown members rejected.
        assert_eq!(
            c.heartbeat("g", &b, None, 1),
            Err(ResponseError::IllegalGeneration)
        );
        // Kafka checks membership and generation first, then the rebalance in progress.
        assert_eq!(
            c.check_commit("g", "nobody", None, 2, 8),
            Err(ResponseError::UnknownMemberId)
        );
        assert_eq!(
            c.check_commit("g", &b, None, 2, 8),
            Err(ResponseError::RebalanceInProgress)
        );
        // The follower's SyncGroup waits for the leader's.
        let mut follower = c.sync("g", &b, None, 2, (None, None), vec![]);
        assert!(follower.try_recv().is_err());
        leader_sync(
            &c,
            c.sync(
                "g",
                &a,
                None,
                2,
                (None, None),
                vec![(b.clone(), Bytes::from_static(b"p1"))],
            ),
        );
        assert_eq!(now_or_fail(follower).assignment, Bytes::from_static(b"p1"));
        assert_eq!(
            c.check_commit("g", "nobody", None, 2, 8),
            Err(ResponseError::UnknownMemberId)
        );
        assert_eq!(
            c.check_commit("g", &b, None, 1, 8),
            Err(ResponseError::IllegalGeneration)
        );
        assert_eq!(c.check_commit("g", &b, None, 2, 8), Ok(()));
        // Leaving empties the group after the rebalance completes.
        assert_eq!(c.leave("g", &a, None), Ok(()));
        assert_eq!(c.leave("g", &b, None), Ok(()));
        assert_eq!(c.describe("g").map(|d| d.state), Some(State::Empty));
        assert_eq!(c.check_commit("g", "", None, -1, 8), Ok(()));
        assert_eq!(c.check_commit("g", "anyone", None, -1, 8), Ok(()));
        assert_eq!(
            c.check_commit("missing", "m", None, 3, 8),
            Err(ResponseError::IllegalGeneration)
        );
        assert_eq!(
            c.check_commit("missing", "m", None, 3, 9),
            Err(ResponseError::GroupIdNotFound)
        );
        assert!(
            c.describe("missing").is_none(),
            "a refused commit creates no group"
        );
    }

    #[test]
    fn an_assignment_that_could_not_be_stored_is_never_handed_out() {
        let c = coordinator();
        let (a, rx) = join_new(&c);
        c.tick();
        assert_eq!(now_or_fail(rx).generation, 1);
        let mut rx = c.sync(
            "g",
            &a,
            None,
            1,
            (None, None),
            vec![(a.clone(), Bytes::from_static(b"p0"))],
        );
        assert!(rx.try_recv().is_err());
        let writes = c.take_dirty();
        let w = writes
            .iter()
            .find(|w| w.completes == Some(1))
            .expect("a write for generation 1");
        assert_eq!(w.snapshot.as_ref().map(|s| s.generation), Some(1));
        c.stored("g", 1, Err(ResponseError::NotCoordinator));
        let r = now_or_fail(rx);
        assert_eq!(
            (r.error, r.assignment),
            (Some(ResponseError::NotCoordinator), Bytes::new())
        );
        assert_eq!(
            c.describe("g").map(|d| d.state),
            Some(State::CompletingRebalance),
            "not Stable on an assignment nobody stored"
        );
        // A late answer for another generation changes nothing.
        c.stored("g", 7, Ok(()));
        assert_eq!(
            c.describe("g").map(|d| d.state),
            Some(State::CompletingRebalance)
        );
    }

    #[test]
    fn a_static_member_rejoins_without_a_rebalance() {
        let c = coordinator();
        let rx = c.join(join_req("", Some("i-1")));
        c.tick();
        let first = now_or_fail(rx);
        leader_sync(
            &c,
            c.sync("g", &first.member_id, Some("i-1"), 1, (None, None), vec![]),
        );
        let again = now_or_fail(c.join(join_req("", Some("i-1"))));
        assert_eq!(again.generation, 1, "no new generation");
        assert_ne!(again.member_id, first.member_id);
        // The old id of a static instance is fenced.
        assert_eq!(
            c.heartbeat("g", &first.member_id, Some("i-1"), 1),
            Err(ResponseError::FencedInstanceId)
        );
        assert_eq!(
            c.heartbeat("g", &first.member_id, None, 1),
            Err(ResponseError::UnknownMemberId)
        );
        assert_eq!(c.heartbeat("g", &again.member_id, Some("i-1"), 1), Ok(()));
    }

    #[test]
    fn inconsistent_protocols_and_bad_timeouts_are_refused() {
        let c = coordinator();
        let (_, rx) = join_new(&c);
        c.tick();
        now_or_fail(rx);
        let mut other = join_req("", None);
        other.protocols = vec![("roundrobin".into(), Bytes::new())];
        assert_eq!(
            now_or_fail(c.join(other)).error,
            Some(ResponseError::InconsistentGroupProtocol)
        );
        let mut slow = join_req("", None);
        slow.session_timeout_ms = 5;
        assert_eq!(
            now_or_fail(c.join(slow)).error,
            Some(ResponseError::InvalidSessionTimeout)
        );
    }
}
