//! The replicated metadata image and the pure function that applies a command to it.
//!
//! Every node applies the same committed commands in the same order, so everything here must
//! be deterministic: no clocks, no randomness, no I/O. Choices that need either (replica
//! placement, new topic ids) are made by the proposer and carried inside the command.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Kafka's broker id.
pub type BrokerId = i32;

/// Size of a producer-id block handed to a broker (Kafka allocates 1000 at a time).
pub const PRODUCER_ID_BLOCK: i64 = 1000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    pub id: BrokerId,
    /// Random per data directory: a different incarnation is a different disk behind the id.
    pub incarnation: Uuid,
    /// The metadata offset of the registration; a broker is unfenced only once it has applied
    /// the log up to here.
    pub epoch: u64,
    pub endpoint: Endpoint,
    pub rack: Option<String>,
    pub fenced: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    pub replicas: Vec<BrokerId>,
    pub isr: Vec<BrokerId>,
    /// -1 when no in-sync replica is available.
    pub leader: BrokerId,
    pub leader_epoch: i32,
    /// Bumped by every change; AlterPartition is compare-and-set on it.
    pub partition_epoch: i32,
    /// An ongoing reassignment: replicas being added (not yet in sync) and removed (once
    /// every target replica is in the ISR). `replicas` holds both while it runs.
    #[serde(default)]
    pub adding: Vec<BrokerId>,
    #[serde(default)]
    pub removing: Vec<BrokerId>,
    /// Replicas that left an otherwise empty ISR because they came back with an empty data
    /// directory: an unclean election picks them only if no other replica is alive.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub emptied: Vec<BrokerId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicImage {
    pub name: String,
    pub id: Uuid,
    pub partitions: Vec<PartitionState>,
    /// Topic-level overrides (only keys that were set).
    pub configs: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataImage {
    /// Index of the last command applied (0 before any).
    pub offset: u64,
    pub brokers: BTreeMap<BrokerId, BrokerRegistration>,
    pub topics: BTreeMap<String, Arc<TopicImage>>,
    /// Cluster-wide dynamic broker configs (IncrementalAlterConfigs with an empty broker name).
    pub broker_configs: BTreeMap<String, String>,
    pub next_producer_id: i64,
    /// Set by the first broker registration and never changed.
    pub cluster_id: String,
}

/// A change to the metadata, as proposed to the quorum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    RegisterBroker {
        id: BrokerId,
        incarnation: Uuid,
        endpoint: Endpoint,
        rack: Option<String>,
        /// The broker's own cluster id, adopted when the cluster has none yet.
        cluster_id: String,
    },
    /// The broker stopped heartbeating (or shut down): it leaves every ISR it can and loses
    /// leadership. `epoch` names the registration the decision was about: a command for an
    /// older registration of the id (the process restarted meanwhile) is refused.
    FenceBroker {
        id: BrokerId,
        #[serde(default)]
        epoch: Option<u64>,
    },
    /// The broker caught up with the metadata and heartbeats: partitions without a leader whose
    /// ISR holds it get it back as leader. Refused unless `epoch` is the current registration's.
    UnfenceBroker {
        id: BrokerId,
        #[serde(default)]
        epoch: Option<u64>,
    },
    CreateTopic {
        name: String,
        id: Uuid,
        assignments: Vec<Vec<BrokerId>>,
        configs: BTreeMap<String, String>,
    },
    DeleteTopic {
        name: String,
    },
    CreatePartitions {
        name: String,
        assignments: Vec<Vec<BrokerId>>,
    },
    SetTopicConfigs {
        name: String,
        configs: BTreeMap<String, String>,
    },
    SetBrokerConfigs {
        configs: BTreeMap<String, String>,
    },
    /// Kafka's AlterPartition: the leader changes the ISR, compare-and-set on the epochs.
    AlterPartition {
        topic: String,
        partition: i32,
        leader: BrokerId,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<BrokerId>,
    },
    /// Moves leadership to the first replica where it is eligible (preferred-leader election).
    ElectPreferred {
        partitions: Vec<(String, i32)>,
    },
    /// Unclean election (an operator's ElectLeaders UNCLEAN, or `unclean.leader.election.
    /// enable`): a partition with no leader and no live ISR member is given to its first live
    /// replica, which becomes the whole ISR. Whatever only the lost replicas held is gone.
    ElectUnclean {
        partitions: Vec<(String, i32)>,
    },
    AllocateProducerIds {
        broker: BrokerId,
    },
    /// Starts moving a partition to `replicas` (None cancels an ongoing move). New replicas
    /// join and catch up first; the old ones leave in [`Command::CompleteReassignment`].
    Reassign {
        topic: String,
        partition: i32,
        replicas: Option<Vec<BrokerId>>,
    },
    /// Every target replica is in the ISR: drop the replicas being removed.
    CompleteReassignment {
        topic: String,
        partition: i32,
    },
}

/// Kafka error codes a command can fail with (the proposer maps them to responses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rejection {
    TopicAlreadyExists,
    UnknownTopicOrPartition,
    InvalidPartitions,
    InvalidReplicaAssignment,
    /// AlterPartition from a broker that is not the current leader / has an old epoch.
    FencedLeaderEpoch,
    NotLeaderOrFollower,
    /// AlterPartition with a stale partition epoch.
    InvalidUpdateVersion,
    /// AlterPartition adding a fenced or non-replica broker.
    IneligibleReplica,
    UnknownBroker,
    /// Fence or unfence for a registration that is no longer current (Kafka's
    /// STALE_BROKER_EPOCH).
    StaleBrokerEpoch,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Done,
    Rejected(Rejection),
    Partition(PartitionState),
    ProducerIds {
        start: i64,
        len: i64,
    },
    /// Log entries that carry no command (blank, membership).
    #[default]
    None,
}

impl PartitionState {
    fn new(replicas: Vec<BrokerId>, brokers: &BTreeMap<BrokerId, BrokerRegistration>) -> Self {
        let live = |b: &BrokerId| brokers.get(b).is_some_and(|r| !r.fenced);
        let mut isr: Vec<BrokerId> = replicas.iter().copied().filter(live).collect();
        if isr.is_empty() {
            // Nobody is alive yet: the first replica to come back leads with an empty log.
            isr = replicas.clone();
        }
        let leader = replicas.iter().copied().find(|b| live(b)).unwrap_or(-1);
        Self {
            replicas,
            isr,
            leader,
            leader_epoch: 0,
            partition_epoch: 0,
            adding: Vec::new(),
            removing: Vec::new(),
            emptied: Vec::new(),
        }
    }

    fn set_leader(&mut self, leader: BrokerId) {
        if self.leader != leader {
            self.leader = leader;
            self.leader_epoch += 1;
        }
    }

    /// After the replica set changed: a leader that is no longer a replica hands over to the
    /// first live ISR member in replica order (or none).
    fn keep_leader_among_replicas(&mut self, brokers: &BTreeMap<BrokerId, BrokerRegistration>) {
        if self.replicas.contains(&self.leader) {
            return;
        }
        let next = self
            .replicas
            .iter()
            .copied()
            .find(|b| self.isr.contains(b) && brokers.get(b).is_some_and(|r| !r.fenced))
            .unwrap_or(-1);
        self.set_leader(next);
    }

    /// `broker` went away: out of the ISR unless it is the last member (so that no replica
    /// that might miss data is ever elected), and a new leader from the ISR if it led.
    fn remove_broker(&mut self, broker: BrokerId, is_live: impl Fn(BrokerId) -> bool) -> bool {
        let before = self.clone();
        if self.isr.len() > 1 {
            self.isr.retain(|b| *b != broker);
        }
        if self.leader == broker || self.leader < 0 {
            let next = self
                .replicas
                .iter()
                .copied()
                .find(|b| *b != broker && self.isr.contains(b) && is_live(*b))
                .unwrap_or(-1);
            self.set_leader(next);
        }
        let changed = *self != before;
        if changed {
            self.partition_epoch += 1;
        }
        changed
    }
}

impl MetadataImage {
    pub fn topic(&self, name: &str) -> Option<&Arc<TopicImage>> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, id: &Uuid) -> Option<&Arc<TopicImage>> {
        self.topics.values().find(|t| t.id == *id)
    }

    pub fn is_live(&self, broker: BrokerId) -> bool {
        self.brokers.get(&broker).is_some_and(|b| !b.fenced)
    }

    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerRegistration> {
        self.brokers.values().filter(|b| !b.fenced)
    }

    /// Applies one committed command at log index `offset`.
    pub fn apply(&mut self, offset: u64, cmd: &Command) -> Outcome {
        self.offset = offset;
        match cmd {
            Command::RegisterBroker {
                id,
                incarnation,
                endpoint,
                rack,
                cluster_id,
            } => {
                if self.cluster_id.is_empty() {
                    self.cluster_id = cluster_id.clone();
                }
                let previous = self.brokers.get(id);
                let fenced_before = previous.is_none_or(|b| b.fenced);
                let new_disk = previous.is_some_and(|b| b.incarnation != *incarnation);
                self.brokers.insert(
                    *id,
                    BrokerRegistration {
                        id: *id,
                        incarnation: *incarnation,
                        epoch: offset,
                        endpoint: endpoint.clone(),
                        rack: rack.clone(),
                        fenced: true,
                    },
                );
                if new_disk {
                    // Whatever this id held is gone with its old data directory.
                    self.forget_replicas(*id);
                } else if !fenced_before {
                    // A restart without a controlled shutdown: the old process is gone.
                    self.fence(*id);
                }
                Outcome::Done
            }
            Command::FenceBroker { id, epoch } => {
                let Some(b) = self.brokers.get(id) else {
                    return Outcome::Rejected(Rejection::UnknownBroker);
                };
                if epoch.is_some_and(|e| e != b.epoch) {
                    return Outcome::Rejected(Rejection::StaleBrokerEpoch);
                }
                self.fence(*id);
                Outcome::Done
            }
            Command::UnfenceBroker { id, epoch } => {
                let Some(b) = self.brokers.get_mut(id) else {
                    return Outcome::Rejected(Rejection::UnknownBroker);
                };
                if epoch.is_some_and(|e| e != b.epoch) {
                    return Outcome::Rejected(Rejection::StaleBrokerEpoch);
                }
                b.fenced = false;
                let id = *id;
                self.update_partitions(|p| {
                    if p.leader < 0 && p.isr.contains(&id) {
                        p.set_leader(id);
                        p.partition_epoch += 1;
                    }
                });
                Outcome::Done
            }
            Command::CreateTopic {
                name,
                id,
                assignments,
                configs,
            } => {
                if self.topics.contains_key(name) {
                    return Outcome::Rejected(Rejection::TopicAlreadyExists);
                }
                if assignments.is_empty() {
                    return Outcome::Rejected(Rejection::InvalidPartitions);
                }
                if !self.valid_assignments(assignments) {
                    return Outcome::Rejected(Rejection::InvalidReplicaAssignment);
                }
                let partitions = assignments
                    .iter()
                    .map(|r| PartitionState::new(r.clone(), &self.brokers))
                    .collect();
                self.topics.insert(
                    name.clone(),
                    Arc::new(TopicImage {
                        name: name.clone(),
                        id: *id,
                        partitions,
                        configs: configs.clone(),
                    }),
                );
                Outcome::Done
            }
            Command::DeleteTopic { name } => match self.topics.remove(name) {
                Some(_) => Outcome::Done,
                None => Outcome::Rejected(Rejection::UnknownTopicOrPartition),
            },
            Command::CreatePartitions { name, assignments } => {
                if !self.valid_assignments(assignments) {
                    return Outcome::Rejected(Rejection::InvalidReplicaAssignment);
                }
                let brokers = self.brokers.clone();
                let Some(topic) = self.topics.get_mut(name) else {
                    return Outcome::Rejected(Rejection::UnknownTopicOrPartition);
                };
                let topic = Arc::make_mut(topic);
                topic.partitions.extend(
                    assignments
                        .iter()
                        .map(|r| PartitionState::new(r.clone(), &brokers)),
                );
                Outcome::Done
            }
            Command::SetTopicConfigs { name, configs } => match self.topics.get_mut(name) {
                Some(t) => {
                    Arc::make_mut(t).configs = configs.clone();
                    Outcome::Done
                }
                None => Outcome::Rejected(Rejection::UnknownTopicOrPartition),
            },
            Command::SetBrokerConfigs { configs } => {
                self.broker_configs = configs.clone();
                Outcome::Done
            }
            Command::AlterPartition {
                topic,
                partition,
                leader,
                leader_epoch,
                partition_epoch,
                isr,
            } => self.alter_partition(
                topic,
                *partition,
                *leader,
                *leader_epoch,
                *partition_epoch,
                isr,
            ),
            Command::ElectPreferred { partitions } => {
                let brokers = self.brokers.clone();
                for (name, index) in partitions {
                    let Some(p) = self.partition_mut(name, *index) else {
                        continue;
                    };
                    let Some(&preferred) = p.replicas.first() else {
                        continue;
                    };
                    let live = brokers.get(&preferred).is_some_and(|b| !b.fenced);
                    if p.leader != preferred && live && p.isr.contains(&preferred) {
                        p.set_leader(preferred);
                        p.partition_epoch += 1;
                    }
                }
                Outcome::Done
            }
            Command::ElectUnclean { partitions } => {
                let brokers = self.brokers.clone();
                let live = |b: &BrokerId| brokers.get(b).is_some_and(|r| !r.fenced);
                let mut elected = false;
                for (name, index) in partitions {
                    let Some(p) = self.partition_mut(name, *index) else {
                        continue;
                    };
                    if p.leader >= 0 || p.isr.iter().any(live) {
                        continue;
                    }
                    let with_data = p
                        .replicas
                        .iter()
                        .copied()
                        .find(|b| live(b) && !p.emptied.contains(b));
                    if let Some(next) = with_data.or_else(|| p.replicas.iter().copied().find(live))
                    {
                        p.isr = vec![next];
                        p.emptied.clear();
                        p.set_leader(next);
                        p.partition_epoch += 1;
                        elected = true;
                    }
                }
                if elected {
                    Outcome::Done
                } else {
                    Outcome::Rejected(Rejection::IneligibleReplica)
                }
            }
            Command::AllocateProducerIds { broker } => {
                if !self.brokers.contains_key(broker) {
                    return Outcome::Rejected(Rejection::UnknownBroker);
                }
                let start = self.next_producer_id;
                self.next_producer_id += PRODUCER_ID_BLOCK;
                Outcome::ProducerIds {
                    start,
                    len: PRODUCER_ID_BLOCK,
                }
            }
            Command::Reassign {
                topic,
                partition,
                replicas,
            } => {
                if let Some(target) = replicas {
                    if target.is_empty() || !self.valid_assignments(std::slice::from_ref(target)) {
                        return Outcome::Rejected(Rejection::InvalidReplicaAssignment);
                    }
                }
                let brokers = self.brokers.clone();
                let Some(p) = self.partition_mut(topic, *partition) else {
                    return Outcome::Rejected(Rejection::UnknownTopicOrPartition);
                };
                let original: Vec<BrokerId> = p
                    .replicas
                    .iter()
                    .copied()
                    .filter(|b| !p.adding.contains(b))
                    .collect();
                match replicas {
                    Some(target) => {
                        p.adding = target
                            .iter()
                            .copied()
                            .filter(|b| !original.contains(b))
                            .collect();
                        p.removing = original
                            .iter()
                            .copied()
                            .filter(|b| !target.contains(b))
                            .collect();
                        p.replicas = target.iter().chain(p.removing.iter()).copied().collect();
                    }
                    None => {
                        p.replicas = original;
                        p.adding.clear();
                        p.removing.clear();
                    }
                }
                let kept: Vec<BrokerId> = p
                    .isr
                    .iter()
                    .copied()
                    .filter(|b| p.replicas.contains(b))
                    .collect();
                if !kept.is_empty() {
                    p.isr = kept;
                }
                p.keep_leader_among_replicas(&brokers);
                p.partition_epoch += 1;
                Outcome::Partition(p.clone())
            }
            Command::CompleteReassignment { topic, partition } => {
                let brokers = self.brokers.clone();
                let Some(p) = self.partition_mut(topic, *partition) else {
                    return Outcome::Rejected(Rejection::UnknownTopicOrPartition);
                };
                if p.adding.is_empty() && p.removing.is_empty() {
                    return Outcome::Done;
                }
                let target: Vec<BrokerId> = p
                    .replicas
                    .iter()
                    .copied()
                    .filter(|b| !p.removing.contains(b))
                    .collect();
                if !target.iter().all(|b| p.isr.contains(b)) {
                    return Outcome::Rejected(Rejection::IneligibleReplica);
                }
                p.isr.retain(|b| target.contains(b));
                p.replicas = target;
                p.adding.clear();
                p.removing.clear();
                p.keep_leader_among_replicas(&brokers);
                p.partition_epoch += 1;
                Outcome::Partition(p.clone())
            }
        }
    }

    fn valid_assignments(&self, assignments: &[Vec<BrokerId>]) -> bool {
        assignments.iter().all(|r| {
            !r.is_empty()
                && r.iter().all(|b| self.brokers.contains_key(b))
                && r.iter().enumerate().all(|(i, b)| !r[..i].contains(b))
        })
    }

    fn partition_mut(&mut self, topic: &str, index: i32) -> Option<&mut PartitionState> {
        let t = Arc::make_mut(self.topics.get_mut(topic)?);
        t.partitions.get_mut(usize::try_from(index).ok()?)
    }

    fn update_partitions(&mut self, mut f: impl FnMut(&mut PartitionState)) {
        for topic in self.topics.values_mut() {
            let mut probe = topic.partitions.clone();
            for p in &mut probe {
                f(p);
            }
            if probe != topic.partitions {
                Arc::make_mut(topic).partitions = probe;
            }
        }
    }

    fn fence(&mut self, id: BrokerId) {
        if let Some(b) = self.brokers.get_mut(&id) {
            b.fenced = true;
        }
        let live: BTreeMap<BrokerId, bool> =
            self.brokers.iter().map(|(k, b)| (*k, !b.fenced)).collect();
        self.update_partitions(|p| {
            if p.replicas.contains(&id) {
                p.remove_broker(id, |b| live.get(&b).copied().unwrap_or(false));
            }
        });
    }

    /// `id` came back with a new data directory: it holds none of its replicas' data any more,
    /// so it leaves every ISR, even as the last member. A partition whose ISR empties that way
    /// goes offline (no leader) instead of being led by an empty log: only an explicit unclean
    /// election may bring it back with less than it had.
    fn forget_replicas(&mut self, id: BrokerId) {
        let live: BTreeMap<BrokerId, bool> =
            self.brokers.iter().map(|(k, b)| (*k, !b.fenced)).collect();
        self.update_partitions(|p| {
            // A leader is always in its ISR, so a replica outside it has nothing to give up.
            if !p.isr.contains(&id) {
                return;
            }
            p.isr.retain(|b| *b != id);
            if p.isr.is_empty() {
                p.emptied.push(id);
            }
            if p.leader == id || p.leader < 0 {
                let next = p
                    .replicas
                    .iter()
                    .copied()
                    .find(|b| p.isr.contains(b) && live.get(b).copied().unwrap_or(false))
                    .unwrap_or(-1);
                p.set_leader(next);
            }
            p.partition_epoch += 1;
        });
    }

    /// Partitions that lost every in-sync replica (no member left to elect).
    pub fn offline_partitions(&self) -> impl Iterator<Item = (&str, i32)> {
        self.topics.values().flat_map(|t| {
            t.partitions
                .iter()
                .enumerate()
                .filter(|(_, p)| p.isr.is_empty())
                .map(|(i, _)| (t.name.as_str(), i as i32))
        })
    }

    fn alter_partition(
        &mut self,
        topic: &str,
        partition: i32,
        leader: BrokerId,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: &[BrokerId],
    ) -> Outcome {
        let brokers = self.brokers.clone();
        let Some(p) = self.partition_mut(topic, partition) else {
            return Outcome::Rejected(Rejection::UnknownTopicOrPartition);
        };
        if p.leader != leader {
            return Outcome::Rejected(Rejection::NotLeaderOrFollower);
        }
        if p.leader_epoch != leader_epoch {
            return Outcome::Rejected(Rejection::FencedLeaderEpoch);
        }
        if p.partition_epoch != partition_epoch {
            return Outcome::Rejected(Rejection::InvalidUpdateVersion);
        }
        let eligible = |b: &BrokerId| {
            p.replicas.contains(b)
                && (p.isr.contains(b) || brokers.get(b).is_some_and(|r| !r.fenced))
        };
        if !isr.contains(&leader) || !isr.iter().all(eligible) {
            return Outcome::Rejected(Rejection::IneligibleReplica);
        }
        let mut ordered: Vec<BrokerId> = p
            .replicas
            .iter()
            .copied()
            .filter(|b| isr.contains(b))
            .collect();
        ordered.dedup();
        p.isr = ordered;
        p.partition_epoch += 1;
        Outcome::Partition(p.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image_with(brokers: &[BrokerId]) -> MetadataImage {
        let mut img = MetadataImage::default();
        for (i, b) in brokers.iter().enumerate() {
            img.apply(
                i as u64 + 1,
                &Command::RegisterBroker {
                    id: *b,
                    incarnation: Uuid::new_v4(),
                    endpoint: Endpoint {
                        host: "h".into(),
                        port: 9092,
                    },
                    rack: None,
                    cluster_id: "c".into(),
                },
            );
            img.apply(
                i as u64 + 1,
                &Command::UnfenceBroker {
                    id: *b,
                    epoch: None,
                },
            );
        }
        img.apply(
            10,
            &Command::CreateTopic {
                name: "t".into(),
                id: Uuid::new_v4(),
                assignments: vec![vec![1, 2, 3], vec![2, 3, 1]],
                configs: BTreeMap::new(),
            },
        );
        img
    }

    fn part(img: &MetadataImage, i: usize) -> PartitionState {
        img.topics["t"].partitions[i].clone()
    }

    #[test]
    fn new_partitions_are_led_by_the_first_live_replica() {
        let img = image_with(&[1, 2, 3]);
        let p = part(&img, 0);
        assert_eq!(
            (p.leader, p.isr.as_slice(), p.leader_epoch),
            (1, &[1, 2, 3][..], 0)
        );
        assert_eq!(part(&img, 1).leader, 2);
    }

    #[test]
    fn fencing_moves_leadership_within_the_isr_and_never_empties_it() {
        let mut img = image_with(&[1, 2, 3]);
        img.apply(11, &Command::FenceBroker { id: 1, epoch: None });
        let p = part(&img, 0);
        assert_eq!(
            (p.leader, p.isr.clone(), p.leader_epoch, p.partition_epoch),
            (2, vec![2, 3], 1, 1)
        );
        img.apply(12, &Command::FenceBroker { id: 2, epoch: None });
        img.apply(13, &Command::FenceBroker { id: 3, epoch: None });
        let p = part(&img, 0);
        // The last ISR member stays in it, leaderless: no unclean election.
        assert_eq!((p.leader, p.isr.clone()), (-1, vec![3]));
        // Broker 1 is not in the ISR: coming back does not make it leader.
        img.apply(14, &Command::UnfenceBroker { id: 1, epoch: None });
        assert_eq!(part(&img, 0).leader, -1);
        img.apply(15, &Command::UnfenceBroker { id: 3, epoch: None });
        assert_eq!(part(&img, 0).leader, 3);
    }

    #[test]
    fn alter_partition_is_compare_and_set() {
        let mut img = image_with(&[1, 2, 3]);
        let shrink = |pe| Command::AlterPartition {
            topic: "t".into(),
            partition: 0,
            leader: 1,
            leader_epoch: 0,
            partition_epoch: pe,
            isr: vec![1, 2],
        };
        assert!(matches!(img.apply(11, &shrink(0)), Outcome::Partition(_)));
        assert_eq!(
            img.apply(12, &shrink(0)),
            Outcome::Rejected(Rejection::InvalidUpdateVersion)
        );
        let stale_leader = Command::AlterPartition {
            topic: "t".into(),
            partition: 0,
            leader: 2,
            leader_epoch: 0,
            partition_epoch: 1,
            isr: vec![2],
        };
        assert_eq!(
            img.apply(13, &stale_leader),
            Outcome::Rejected(Rejection::NotLeaderOrFollower)
        );
        img.apply(14, &Command::FenceBroker { id: 3, epoch: None });
        let grow = Command::AlterPartition {
            topic: "t".into(),
            partition: 0,
            leader: 1,
            leader_epoch: 0,
            partition_epoch: 1,
            isr: vec![1, 2, 3],
        };
        assert_eq!(
            img.apply(15, &grow),
            Outcome::Rejected(Rejection::IneligibleReplica)
        );
    }

    #[test]
    fn preferred_election_and_producer_blocks() {
        let mut img = image_with(&[1, 2, 3]);
        img.apply(11, &Command::FenceBroker { id: 1, epoch: None });
        img.apply(12, &Command::UnfenceBroker { id: 1, epoch: None });
        assert_eq!(part(&img, 0).leader, 2);
        let grow = Command::AlterPartition {
            topic: "t".into(),
            partition: 0,
            leader: 2,
            leader_epoch: 1,
            partition_epoch: 1,
            isr: vec![2, 3, 1],
        };
        assert!(matches!(img.apply(13, &grow), Outcome::Partition(_)));
        img.apply(
            14,
            &Command::ElectPreferred {
                partitions: vec![("t".into(), 0)],
            },
        );
        let p = part(&img, 0);
        assert_eq!(
            (p.leader, p.leader_epoch, p.isr.clone()),
            (1, 2, vec![1, 2, 3])
        );
        let a = img.apply(15, &Command::AllocateProducerIds { broker: 1 });
        let b = img.apply(16, &Command::AllocateProducerIds { broker: 2 });
        assert_eq!(
            a,
            Outcome::ProducerIds {
                start: 0,
                len: PRODUCER_ID_BLOCK
            }
        );
        assert_eq!(
            b,
            Outcome::ProducerIds {
                start: PRODUCER_ID_BLOCK,
                len: PRODUCER_ID_BLOCK
            }
        );
    }

    #[test]
    fn reassignment_adds_first_and_removes_once_in_sync() {
        let mut img = image_with(&[1, 2, 3, 4]);
        let start = Command::Reassign {
            topic: "t".into(),
            partition: 0,
            replicas: Some(vec![4, 2, 3]),
        };
        img.apply(11, &start);
        let p = part(&img, 0);
        assert_eq!(
            (p.replicas.clone(), p.adding.clone(), p.removing.clone()),
            (vec![4, 2, 3, 1], vec![4], vec![1])
        );
        assert_eq!(
            p.leader, 1,
            "the old leader keeps leading while 4 catches up"
        );
        let done = Command::CompleteReassignment {
            topic: "t".into(),
            partition: 0,
        };
        assert_eq!(
            img.apply(12, &done),
            Outcome::Rejected(Rejection::IneligibleReplica)
        );
        let p = part(&img, 0);
        let grow = Command::AlterPartition {
            topic: "t".into(),
            partition: 0,
            leader: 1,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            isr: vec![1, 2, 3, 4],
        };
        assert!(matches!(img.apply(13, &grow), Outcome::Partition(_)));
        assert!(matches!(img.apply(14, &done), Outcome::Partition(_)));
        let p = part(&img, 0);
        assert_eq!(
            (p.replicas.clone(), p.isr.clone(), p.leader),
            (vec![4, 2, 3], vec![4, 2, 3], 4)
        );
        assert!(p.adding.is_empty() && p.removing.is_empty());
    }

    #[test]
    fn reregistration_of_a_live_broker_fences_its_old_self() {
        let mut img = image_with(&[1, 2, 3]);
        img.apply(
            11,
            &Command::RegisterBroker {
                id: 1,
                incarnation: Uuid::new_v4(),
                endpoint: Endpoint {
                    host: "h".into(),
                    port: 1,
                },
                rack: None,
                cluster_id: "other".into(),
            },
        );
        assert_eq!(part(&img, 0).leader, 2);
        assert!(img.brokers[&1].fenced);
    }

    fn register(img: &mut MetadataImage, offset: u64, id: BrokerId, incarnation: Uuid) {
        img.apply(
            offset,
            &Command::RegisterBroker {
                id,
                incarnation,
                endpoint: Endpoint {
                    host: "h".into(),
                    port: 9092,
                },
                rack: None,
                cluster_id: "c".into(),
            },
        );
    }

    #[test]
    fn a_last_isr_member_back_with_an_empty_disk_is_never_elected() {
        let mut img = image_with(&[1, 2, 3]);
        // Both followers die: the ISR shrinks to the leader, which then dies too.
        img.apply(11, &Command::FenceBroker { id: 2, epoch: None });
        img.apply(12, &Command::FenceBroker { id: 3, epoch: None });
        img.apply(13, &Command::FenceBroker { id: 1, epoch: None });
        assert_eq!(
            (part(&img, 0).leader, part(&img, 0).isr.clone()),
            (-1, vec![1])
        );
        // The leader comes back on a new volume: it holds nothing, so it leaves the ISR and the
        // partition stays offline rather than being led by an empty log.
        register(&mut img, 14, 1, Uuid::new_v4());
        let p = part(&img, 0);
        assert_eq!((p.leader, p.isr.clone()), (-1, vec![]));
        assert_eq!(
            img.offline_partitions().count(),
            2,
            "both partitions had only it left"
        );
        let epoch = img.brokers[&1].epoch;
        img.apply(
            15,
            &Command::UnfenceBroker {
                id: 1,
                epoch: Some(epoch),
            },
        );
        img.apply(16, &Command::UnfenceBroker { id: 2, epoch: None });
        assert_eq!(
            part(&img, 0).leader,
            -1,
            "neither the wiped node nor a stale follower leads"
        );
        // An operator's unclean election picks a live replica, knowingly.
        let unclean = Command::ElectUnclean {
            partitions: vec![("t".into(), 0)],
        };
        assert_eq!(img.apply(17, &unclean), Outcome::Done);
        let p = part(&img, 0);
        assert_eq!(
            (p.leader, p.isr.clone()),
            (2, vec![2]),
            "a replica that kept its data, not the emptied preferred one"
        );
        assert!(p.emptied.is_empty());
        // A restart on the same disk keeps the last-replica-standing rule (KIP-966's case).
        let mut img = image_with(&[1, 2, 3]);
        img.apply(11, &Command::FenceBroker { id: 2, epoch: None });
        img.apply(12, &Command::FenceBroker { id: 3, epoch: None });
        img.apply(13, &Command::FenceBroker { id: 1, epoch: None });
        let same_disk = img.brokers[&1].incarnation;
        register(&mut img, 14, 1, same_disk);
        img.apply(
            15,
            &Command::UnfenceBroker {
                id: 1,
                epoch: Some(14),
            },
        );
        assert_eq!(part(&img, 0).leader, 1);
    }

    #[test]
    fn a_wiped_follower_leaves_the_isr_when_it_registers() {
        let mut img = image_with(&[1, 2, 3]);
        register(&mut img, 11, 3, Uuid::new_v4());
        let p = part(&img, 0);
        assert_eq!((p.leader, p.isr.clone()), (1, vec![1, 2]));
        assert_eq!(p.partition_epoch, 1);
    }

    #[test]
    fn fence_and_unfence_for_an_old_registration_are_refused() {
        let mut img = image_with(&[1, 2, 3]);
        let old = img.brokers[&2].epoch;
        let disk = img.brokers[&2].incarnation;
        register(&mut img, 11, 2, disk);
        assert_eq!(
            img.apply(
                12,
                &Command::UnfenceBroker {
                    id: 2,
                    epoch: Some(old)
                }
            ),
            Outcome::Rejected(Rejection::StaleBrokerEpoch)
        );
        assert!(img.brokers[&2].fenced);
        img.apply(
            13,
            &Command::UnfenceBroker {
                id: 2,
                epoch: Some(11),
            },
        );
        assert_eq!(
            img.apply(
                14,
                &Command::FenceBroker {
                    id: 2,
                    epoch: Some(old)
                }
            ),
            Outcome::Rejected(Rejection::StaleBrokerEpoch)
        );
        assert!(!img.brokers[&2].fenced);
    }
}
