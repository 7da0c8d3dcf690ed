//! Consumer groups with librdkafka: members joining one by one share the partitions, every
//! record is consumed once, a member that dies without leaving loses its partitions after its
//! session timeout, and a new member resumes from the committed offsets after a broker restart.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use strom_tests::Strom;

const TIMEOUT: Duration = Duration::from_secs(30);

async fn setup(broker: &Strom, topic: &str, records: usize) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .expect("admin");
    let res = admin
        .create_topics(
            &[NewTopic::new(topic, 3, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .expect("create");
    assert!(res[0].is_ok(), "{res:?}");
    produce(broker, topic, 0, records).await;
}

async fn produce(broker: &Strom, topic: &str, from: usize, count: usize) {
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .expect("producer");
    let futs: Vec<_> = (from..from + count)
        .map(|i| {
            let (k, v) = (format!("k{i}"), format!("v{i}"));
            p.send_result(FutureRecord::to(topic).key(&k).payload(&v))
                .map_err(|(e, _)| e)
                .expect("enqueue")
        })
        .collect();
    for f in futs {
        f.await
            .expect("future")
            .map_err(|(e, _)| e)
            .expect("delivered");
    }
}

fn member(broker: &Strom, group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .create()
        .expect("consumer")
}

fn assignment(c: &BaseConsumer) -> BTreeSet<i32> {
    c.assignment()
        .map(|tpl| tpl.elements().iter().map(|e| e.partition()).collect())
        .unwrap_or_default()
}

/// Polls every member until the assignments cover all partitions exactly once with `n`
/// non-empty owners, collecting (and committing) any records that arrive meanwhile.
fn poll_until_balanced(
    members: &[&BaseConsumer],
    seen: &mut Vec<String>,
    owners_wanted: usize,
) -> Vec<BTreeSet<i32>> {
    let deadline = Instant::now() + TIMEOUT;
    // Commits that met a rebalance (REBALANCE_IN_PROGRESS while the group completes it, as
    // Kafka answers) are retried once the member has polled again.
    let mut pending: Vec<(usize, TopicPartitionList)> = Vec::new();
    loop {
        pending.retain(|(i, tpl)| match members[*i].commit(tpl, CommitMode::Sync) {
            Ok(()) => false,
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::RebalanceInProgress)) => true,
            // The partition moved to another member, which resumes from the last commit.
            Err(KafkaError::ConsumerCommit(
                RDKafkaErrorCode::IllegalGeneration | RDKafkaErrorCode::UnknownMemberId,
            )) => false,
            Err(e) => panic!("commit: {e:?}"),
        });
        for (i, c) in members.iter().enumerate() {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(50)) {
                seen.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition_offset(m.topic(), m.partition(), Offset::Offset(m.offset() + 1))
                    .expect("tpl");
                pending.push((i, tpl));
            }
        }
        let sets: Vec<BTreeSet<i32>> = members.iter().map(|c| assignment(c)).collect();
        let all: Vec<i32> = sets.iter().flatten().copied().collect();
        let unique: BTreeSet<i32> = all.iter().copied().collect();
        let owners = sets.iter().filter(|s| !s.is_empty()).count();
        if all.len() == 3 && unique.len() == 3 && owners == owners_wanted && pending.is_empty() {
            return sets;
        }
        assert!(Instant::now() < deadline, "group never balanced: {sets:?}");
    }
}

#[tokio::test]
async fn members_join_one_by_one_and_consume_everything_once() {
    let mut broker = Strom::start_with(&[("group.initial.rebalance.delay.ms", "0")]);
    setup(&broker, "grp", 600).await;
    let mut seen = Vec::new();
    let a = member(&broker, "g1");
    a.subscribe(&["grp"]).expect("subscribe");
    poll_until_balanced(&[&a], &mut seen, 1);
    let b = member(&broker, "g1");
    b.subscribe(&["grp"]).expect("subscribe");
    poll_until_balanced(&[&a, &b], &mut seen, 2);
    let c = member(&broker, "g1");
    c.subscribe(&["grp"]).expect("subscribe");
    let sets = poll_until_balanced(&[&a, &b, &c], &mut seen, 3);
    assert!(
        sets.iter().all(|s| s.len() == 1),
        "each member owns one partition: {sets:?}"
    );
    let deadline = Instant::now() + TIMEOUT;
    while seen.len() < 600 {
        assert!(Instant::now() < deadline, "consumed {} of 600", seen.len());
        for m in [&a, &b, &c] {
            if let Some(Ok(msg)) = m.poll(Duration::from_millis(50)) {
                seen.push(String::from_utf8_lossy(msg.payload().unwrap_or_default()).into_owned());
                m.commit_message(&msg, CommitMode::Sync).expect("commit");
            }
        }
    }
    // Synchronous commits per record: nothing is delivered twice.
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(
        unique.len(),
        600,
        "duplicates or gaps in {} records",
        seen.len()
    );
    assert_eq!(seen.len(), 600);
    drop((a, b, c));

    // After a crash of the broker, a new member resumes from the committed offsets.
    broker.kill9();
    broker.restart();
    produce(&broker, "grp", 600, 30).await;
    let d = member(&broker, "g1");
    d.subscribe(&["grp"]).expect("subscribe");
    let mut resumed = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    while resumed.len() < 30 {
        assert!(
            Instant::now() < deadline,
            "resumed consumer read {resumed:?}"
        );
        if let Some(Ok(msg)) = d.poll(Duration::from_millis(100)) {
            resumed.push(String::from_utf8_lossy(msg.payload().unwrap_or_default()).into_owned());
        }
    }
    let expected: BTreeSet<String> = (600..630).map(|i| format!("v{i}")).collect();
    assert_eq!(resumed.iter().cloned().collect::<BTreeSet<_>>(), expected);
}

/// Not a test on its own: the body of a group member run as a separate process by
/// `a_member_killed_with_sigkill_loses_its_partitions`, so that it can be killed for real.
#[test]
#[ignore = "helper process for a_member_killed_with_sigkill_loses_its_partitions"]
fn member_process() {
    let bootstrap = std::env::var("STROM_MEMBER_BOOTSTRAP").expect("run by the parent test");
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "g2")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .create()
        .expect("consumer");
    c.subscribe(&["grp2"]).expect("subscribe");
    loop {
        let _ = c.poll(Duration::from_millis(100));
        println!("assigned {:?}", assignment(&c));
    }
}

#[tokio::test]
async fn a_member_killed_with_sigkill_loses_its_partitions() {
    let broker = Strom::start_with(&[("group.initial.rebalance.delay.ms", "0")]);
    setup(&broker, "grp2", 30).await;
    let mut seen = Vec::new();
    let a = member(&broker, "g2");
    a.subscribe(&["grp2"]).expect("subscribe");
    poll_until_balanced(&[&a], &mut seen, 1);
    let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--ignored", "--exact", "member_process", "--nocapture"])
        .env("STROM_MEMBER_BOOTSTRAP", broker.bootstrap())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn member");
    // Wait until the other process owns something, i.e. the group has two members.
    let deadline = Instant::now() + TIMEOUT;
    while assignment(&a).len() == 3 || assignment(&a).is_empty() {
        assert!(
            Instant::now() < deadline,
            "second member never joined: {:?}",
            assignment(&a)
        );
        if let Some(Ok(m)) = a.poll(Duration::from_millis(50)) {
            seen.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
    }
    child.kill().expect("kill -9 the member");
    let _ = child.wait();
    let killed = Instant::now();
    let sets = poll_until_balanced(&[&a], &mut seen, 1);
    assert_eq!(sets[0], BTreeSet::from([0, 1, 2]));
    let took = killed.elapsed();
    // Session timeout 6 s, plus the rebalance: well under 20 s.
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(20),
        "partitions moved after {took:?}"
    );
}

#[tokio::test]
async fn cooperative_sticky_members_rebalance_incrementally() {
    let broker = Strom::start_with(&[("group.initial.rebalance.delay.ms", "0")]);
    setup(&broker, "coop", 90).await;
    let coop = |group: &str| -> BaseConsumer {
        ClientConfig::new()
            .set("bootstrap.servers", broker.bootstrap())
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("session.timeout.ms", "6000")
            .create()
            .expect("consumer")
    };
    let mut seen = Vec::new();
    let a = coop("g3");
    a.subscribe(&["coop"]).expect("subscribe");
    poll_until_balanced(&[&a], &mut seen, 1);
    let b = coop("g3");
    b.subscribe(&["coop"]).expect("subscribe");
    let sets = poll_until_balanced(&[&a, &b], &mut seen, 2);
    assert_eq!(sets[0].len() + sets[1].len(), 3);
    let deadline = Instant::now() + TIMEOUT;
    while seen.len() < 90 {
        assert!(Instant::now() < deadline, "consumed {} of 90", seen.len());
        for m in [&a, &b] {
            if let Some(Ok(msg)) = m.poll(Duration::from_millis(50)) {
                seen.push(String::from_utf8_lossy(msg.payload().unwrap_or_default()).into_owned());
                m.commit_message(&msg, CommitMode::Sync).expect("commit");
            }
        }
    }
    assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), 90);
}
