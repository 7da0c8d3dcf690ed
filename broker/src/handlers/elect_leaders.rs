//! ElectLeaders (key 43): preferred-leader election on demand (the controller also runs it
//! periodically when `auto.leader.rebalance.enable`), and unclean election: only for a
//! partition that has no leader and no live in-sync replica (e.g. its last in-sync replica lost
//! its disk), where an operator accepts losing what only the lost replicas held.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};
use strom_raft::Command;

use super::{s, Ctx};

const PREFERRED: i8 = 0;
const UNCLEAN: i8 = 1;

pub fn handle(
    ctx: &Ctx<'_>,
    req: ElectLeadersRequest,
) -> impl std::future::Future<Output = ElectLeadersResponse> + Send + 'static {
    let broker = ctx.broker.clone();
    async move {
        let before = broker.quorum.image();
        // Null: every partition of every topic.
        let wanted: Vec<(String, i32)> = match req.topic_partitions {
            Some(list) => list
                .into_iter()
                .flat_map(|t| {
                    let name = t.topic.as_str().to_owned();
                    t.partitions.into_iter().map(move |p| (name.clone(), p))
                })
                .collect(),
            None => before
                .topics
                .values()
                .flat_map(|t| (0..t.partitions.len() as i32).map(move |p| (t.name.clone(), p)))
                .collect(),
        };
        let mut results: BTreeMap<String, Vec<PartitionResult>> = BTreeMap::new();
        let mut eligible = Vec::new();
        let mut unclean = Vec::new();
        for (topic, p) in &wanted {
            let state = before
                .topic(topic)
                .and_then(|t| t.partitions.get(usize::try_from(*p).ok()?));
            let verdict = match state {
                None => Err((ResponseError::UnknownTopicOrPartition, "no such partition")),
                Some(st) if req.election_type == UNCLEAN => {
                    if st.leader >= 0 {
                        Err((
                            ResponseError::ElectionNotNeeded,
                            "the partition has a leader",
                        ))
                    } else if st.isr.iter().any(|b| before.is_live(*b)) {
                        Err((
                            ResponseError::ElectionNotNeeded,
                            "an in-sync replica is alive and will lead",
                        ))
                    } else if st.replicas.iter().any(|b| before.is_live(*b)) {
                        unclean.push((topic.clone(), *p));
                        Ok(())
                    } else {
                        Err((
                            ResponseError::EligibleLeadersNotAvailable,
                            "no replica of the partition is alive",
                        ))
                    }
                }
                Some(_) if req.election_type != PREFERRED => {
                    Err((ResponseError::InvalidRequest, "unknown election type"))
                }
                Some(st) if st.replicas.first() == Some(&st.leader) => Err((
                    ResponseError::ElectionNotNeeded,
                    "the preferred replica already leads",
                )),
                Some(st) => {
                    let preferred = st.replicas.first().copied().unwrap_or(-1);
                    if st.isr.contains(&preferred) && before.is_live(preferred) {
                        eligible.push((topic.clone(), *p));
                        Ok(())
                    } else {
                        Err((
                            ResponseError::PreferredLeaderNotAvailable,
                            "the preferred replica is not alive and in sync",
                        ))
                    }
                }
            };
            let mut r = PartitionResult::default().with_partition_id(*p);
            if let Err((code, why)) = verdict {
                r.error_code = code.code();
                r.error_message = Some(s(why));
            }
            results.entry(topic.clone()).or_default().push(r);
        }
        for (partitions, cmd) in [
            (
                eligible.clone(),
                Command::ElectPreferred {
                    partitions: eligible,
                },
            ),
            (
                unclean.clone(),
                Command::ElectUnclean {
                    partitions: unclean,
                },
            ),
        ] {
            if partitions.is_empty() {
                continue;
            }
            if let Err(e) = broker.change(cmd).await {
                for (topic, p) in &partitions {
                    if let Some(r) = results
                        .get_mut(topic)
                        .and_then(|v| v.iter_mut().find(|r| r.partition_id == *p))
                    {
                        r.error_code = e.code();
                        r.error_message = e.message.clone().map(s);
                    }
                }
            }
        }
        ElectLeadersResponse::default().with_replica_election_results(
            results
                .into_iter()
                .map(|(t, parts)| {
                    ReplicaElectionResult::default()
                        .with_topic(TopicName(s(t)))
                        .with_partition_result(parts)
                })
                .collect(),
        )
    }
}
