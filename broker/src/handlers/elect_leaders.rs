//! ElectLeaders (key 43): preferred-leader election on demand (the controller also runs it
//! periodically when `auto.leader.rebalance.enable`). Unclean election is refused: Strom never
//! elects a replica outside the ISR.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};
use strom_raft::Command;

use super::{s, Ctx};

const PREFERRED: i8 = 0;

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
        for (topic, p) in &wanted {
            let state = before
                .topic(topic)
                .and_then(|t| t.partitions.get(usize::try_from(*p).ok()?));
            let verdict = match state {
                None => Err((ResponseError::UnknownTopicOrPartition, "no such partition")),
                Some(_) if req.election_type != PREFERRED => Err((
                    ResponseError::EligibleLeadersNotAvailable,
                    "unclean election is disabled: only ISR members may lead",
                )),
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
        if !eligible.is_empty() {
            if let Err(e) = broker
                .change(Command::ElectPreferred {
                    partitions: eligible.clone(),
                })
                .await
            {
                for (topic, p) in &eligible {
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
