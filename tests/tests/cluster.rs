//! Three-node clusters under faults, driven by librdkafka: a leader killed with `kill -9`, a
//! leader frozen past its session timeout, a leader cut off by a network partition, two of three
//! replicas gone (acks=all must refuse), a replica wiped and rebuilt, and a group coordinator
//! killed. After each fault the checker proves that every acknowledged write is present exactly
//! once, in send order per key, at its acknowledged offset, and identical on all three replicas
//! on disk.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{BrokerId, ListOffsetsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use strom_tests::cluster::{block_on, raw_call, verify, Cluster, Stream, NODES, TIMEOUT};

const TOPIC: &str = "stream";
const PARTITIONS: i32 = 3;
/// Records per second of the checker's stream.
const RATE: u64 = 1000;

/// Nodes other than `n`.
fn others(n: usize) -> Vec<usize> {
    (1..=NODES).filter(|&m| m != n).collect()
}

#[test]
fn leader_kill9_loses_no_acknowledged_write() {
    let started = Instant::now();
    let mut c = Cluster::start();
    c.create_topic(TOPIC, PARTITIONS);
    let stream = Stream::start(&c.bootstrap(), TOPIC, PARTITIONS, RATE, None);
    stream.wait_acks_since(started, 300, Duration::from_secs(20));

    let victim = c.leader(TOPIC, 0);
    c.kill9(victim);
    let killed = Instant::now();
    let moved = c.wait_leader_moved(TOPIC, 0, victim, &others(victim), Duration::from_secs(15));
    // Keep producing through the failover for about 5 s, then bring the node back.
    std::thread::sleep((killed + Duration::from_secs(5)).saturating_duration_since(Instant::now()));
    c.restart(victim);
    let restarted = Instant::now();
    stream.wait_acks_since(restarted, 300, Duration::from_secs(30));
    let d = stream.finish();

    let failover = d.failover(0, killed);
    let summary = verify(&mut c, TOPIC, PARTITIONS, &d);
    let failover = failover.unwrap_or_else(|| {
        panic!("{summary}: no acknowledgement on partition 0 after killing its leader")
    });
    println!(
        "leader_kill9_loses_no_acknowledged_write: killed node {victim}: {summary}, leader moved \
         after {moved:?}, failover (kill to first new ack on partition 0) {failover:?}, \
         took {:?}",
        started.elapsed()
    );
}

#[test]
fn paused_node_past_session_timeout() {
    let started = Instant::now();
    let mut c = Cluster::start();
    c.create_topic(TOPIC, PARTITIONS);
    let stream = Stream::start(&c.bootstrap(), TOPIC, PARTITIONS, RATE, None);
    stream.wait_acks_since(started, 300, Duration::from_secs(20));

    let victim = c.leader(TOPIC, 1);
    c.pause(victim);
    let paused = Instant::now();
    // 5 s frozen is well past the 2 s session timeout: the others must fence it and move the
    // leadership while it is still frozen.
    let moved = c.wait_leader_moved(TOPIC, 1, victim, &others(victim), Duration::from_secs(5));
    std::thread::sleep((paused + Duration::from_secs(5)).saturating_duration_since(Instant::now()));
    c.resume(victim);
    let resumed = Instant::now();
    stream.wait_acks_since(resumed, 300, Duration::from_secs(30));
    let d = stream.finish();

    let failover = d.failover(1, paused);
    let summary = verify(&mut c, TOPIC, PARTITIONS, &d);
    println!(
        "paused_node_past_session_timeout: paused node {victim} for 5 s: {summary}, leader \
         moved after {moved:?}, failover on partition 1 {failover:?}, took {:?}",
        started.elapsed()
    );
}

#[test]
fn isolated_node_by_network_partition() {
    let started = Instant::now();
    let mut c = Cluster::start();
    c.create_topic(TOPIC, PARTITIONS);
    let stream = Stream::start(&c.bootstrap(), TOPIC, PARTITIONS, RATE, None);
    stream.wait_acks_since(started, 300, Duration::from_secs(20));

    let victim = c.leader(TOPIC, 2);
    // A topic the victim leads, written only after it moved, to compare high watermarks.
    let order: Vec<i32> = std::iter::once(victim)
        .chain(others(victim))
        .map(|n| n as i32)
        .collect();
    c.create_topic_assigned(LEASE_TOPIC, &[&order]);
    produce_to(&c.bootstrap(), LEASE_TOPIC, 10);
    c.isolate(victim);
    let isolated = Instant::now();
    // The isolated node still serves clients (they connect from 127.0.0.1), but the majority
    // side must elect another leader within the 6 s partition.
    let moved = c.wait_leader_moved(TOPIC, 2, victim, &others(victim), Duration::from_secs(6));
    // Once the new leader has moved the high watermark on, the cut-off node (whose lease from
    // the controller lapsed before it was fenced) must not answer with its stale one.
    c.wait_leader_moved(
        LEASE_TOPIC,
        0,
        victim,
        &others(victim),
        Duration::from_secs(2),
    );
    let new_leader = c.leader_seen_by(others(victim)[0], LEASE_TOPIC, 0);
    produce_to(&c.node(new_leader).addr().to_string(), LEASE_TOPIC, 1);
    let (_, fresh) = latest_offset_at(&c, new_leader, LEASE_TOPIC);
    let (code, stale) = latest_offset_at(&c, victim, LEASE_TOPIC);
    assert!(
        code == NOT_LEADER_OR_FOLLOWER || stale >= fresh,
        "node {victim}, cut off from the controller, answered ListOffsets for {LEASE_TOPIC}/0 \
         with error {code} and high watermark {stale} after node {new_leader} had reported \
         {fresh}"
    );
    std::thread::sleep(
        (isolated + Duration::from_secs(6)).saturating_duration_since(Instant::now()),
    );
    c.heal();
    let healed = Instant::now();
    stream.wait_acks_since(healed, 300, Duration::from_secs(30));
    let d = stream.finish();

    let failover = d.failover(2, isolated);
    let summary = verify(&mut c, TOPIC, PARTITIONS, &d);
    println!(
        "isolated_node_by_network_partition: isolated node {victim} for 6 s: {summary}, leader \
         moved after {moved:?} (ListOffsets: new leader {fresh}, cut-off node error {code} \
         offset {stale}), failover on partition 2 {failover:?}, took {:?}",
        started.elapsed()
    );
}

const NOT_LEADER_OR_FOLLOWER: i16 = 6;
/// A one-partition topic for comparing high watermarks across a leader change.
const LEASE_TOPIC: &str = "lease";

/// ListOffsets (latest, as a consumer) for partition 0 of `topic` asked of node `n` alone:
/// the error code and the offset (the high watermark).
fn latest_offset_at(c: &Cluster, n: usize, topic: &'static str) -> (i16, i64) {
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(StrBytes::from_static_str(topic)))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(-1)])]);
    let resp = raw_call(c.node(n).addr(), 1, &req).expect("ListOffsets");
    let p = &resp.topics[0].partitions[0];
    (p.error_code, p.offset)
}

#[test]
fn two_nodes_down_refuse_acks_all() {
    let started = Instant::now();
    let mut c = Cluster::start();
    c.create_topic(TOPIC, PARTITIONS);
    let warmup: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", c.bootstrap())
        .set("acks", "all")
        .set("message.timeout.ms", "20000")
        .create()
        .expect("producer");
    for i in 0..10 {
        let v = format!("before-{i}");
        block_on(
            warmup.send(
                FutureRecord::<str, str>::to(TOPIC)
                    .partition(0)
                    .key("k")
                    .payload(&v),
                TIMEOUT,
            ),
        )
        .map_err(|(e, _)| e)
        .expect("acks=all with three replicas");
    }
    drop(warmup);

    let leader = c.leader(TOPIC, 0);
    for n in others(leader) {
        c.kill9(n);
    }
    // Longer than replica.lag.time.max.ms (2 s): the dead followers are out of sync by now.
    std::thread::sleep(Duration::from_secs(3));

    let lone = c.node(leader).addr().to_string();
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &lone)
        .set("acks", "all")
        .set("enable.idempotence", "false")
        .set("retries", "0")
        .set("message.timeout.ms", "10000")
        .create()
        .expect("producer");
    let sent_at = Instant::now();
    let res = block_on(
        p.send(
            FutureRecord::<str, str>::to(TOPIC)
                .partition(0)
                .key("k")
                .payload("with-one-replica"),
            Duration::from_secs(15),
        ),
    );
    let took = sent_at.elapsed();
    match res {
        Ok(d) => panic!(
            "acks=all write to {TOPIC}/0 was acknowledged (offset {}) with only node {leader} of \
             3 alive and min.insync.replicas=2",
            d.offset
        ),
        Err((e, _)) => assert_eq!(
            e,
            KafkaError::MessageProduction(RDKafkaErrorCode::NotEnoughReplicas),
            "acks=all write with one live replica failed after {took:?}, but not with \
             NOT_ENOUGH_REPLICAS (19)"
        ),
    }
    println!(
        "two_nodes_down_refuse_acks_all: leader node {leader} alone refused acks=all with \
         NOT_ENOUGH_REPLICAS after {took:?}; took {:?}",
        started.elapsed()
    );
}

#[test]
fn wiped_node_rejoins_and_catches_up() {
    let started = Instant::now();
    let mut c = Cluster::start();
    c.create_topic(TOPIC, PARTITIONS);
    let d = Stream::start(&c.bootstrap(), TOPIC, PARTITIONS, 10_000, Some(5_000))
        .finish_when_sent(Duration::from_secs(30));
    assert_eq!(
        d.failed_count(),
        0,
        "sends failed with a healthy cluster: {}",
        d.failures()
    );

    c.kill9(3);
    c.wipe(3);
    assert!(!c.data_dir(3).exists());
    c.restart(3);
    let restarted = Instant::now();
    c.wait_in_isr(TOPIC, PARTITIONS, 3, Duration::from_secs(60));
    let caught_up = restarted.elapsed();

    let summary = verify(&mut c, TOPIC, PARTITIONS, &d);
    assert_eq!(summary.acked, 5_000, "{summary}");
    println!(
        "wiped_node_rejoins_and_catches_up: {summary}, node 3 back in every ISR {caught_up:?} \
         after its restart, took {:?}",
        started.elapsed()
    );
}

fn group_member(bootstrap: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "g")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .create()
        .expect("consumer")
}

fn topic_partitions() -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(TOPIC, p);
    }
    tpl
}

/// Committed offset per partition (`None` when the group has none).
fn offsets(tpl: &TopicPartitionList) -> BTreeMap<i32, Option<i64>> {
    tpl.elements_for_topic(TOPIC)
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => (e.partition(), Some(o)),
            _ => (e.partition(), None),
        })
        .collect()
}

/// Produces `count` records to every partition; returns (partition, offset) → value.
fn produce_each(bootstrap: &str, tag: &str, count: usize) -> BTreeMap<(i32, i64), String> {
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "60000")
        .create()
        .expect("producer");
    let futures: Vec<_> = (0..count)
        .flat_map(|i| (0..PARTITIONS).map(move |part| (i, part)))
        .map(|(i, part)| {
            let value = format!("{tag}-{part}-{i}");
            let f = p
                .send_result(
                    FutureRecord::to(TOPIC)
                        .partition(part)
                        .key(&value)
                        .payload(&value),
                )
                .map_err(|(e, _)| e)
                .expect("enqueue");
            (value, f)
        })
        .collect();
    block_on(async {
        let mut out = BTreeMap::new();
        for (value, f) in futures {
            let d = f
                .await
                .expect("delivery future")
                .map_err(|(e, _)| e)
                .unwrap_or_else(|e| panic!("{value} not delivered: {e}"));
            out.insert((d.partition, d.offset), value);
        }
        out
    })
}

#[test]
fn group_offsets_survive_coordinator_kill() {
    let started = Instant::now();
    let mut c = Cluster::start();
    c.create_topic(TOPIC, PARTITIONS);
    let mut written = produce_each(&c.bootstrap(), "first", 1000 / PARTITIONS as usize + 1);
    let total = written.len();

    // A member consumes the first half of every partition and commits synchronously. It
    // stores offsets itself (auto store off) so that the commit covers exactly that half even
    // when librdkafka delivers more of one partition first.
    let half: BTreeMap<i32, i64> = (0..PARTITIONS)
        .map(|p| {
            (
                p,
                written.keys().filter(|(wp, _)| *wp == p).count() as i64 / 2,
            )
        })
        .collect();
    let a = group_member(&c.bootstrap());
    a.subscribe(&[TOPIC]).expect("subscribe");
    let mut next: BTreeMap<i32, i64> = (0..PARTITIONS).map(|p| (p, 0)).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while next != half {
        assert!(
            Instant::now() < deadline,
            "the first member consumed only {next:?} of {half:?}"
        );
        if let Some(Ok(m)) = a.poll(Duration::from_millis(100)) {
            let p = m.partition();
            if m.offset() < half[&p] {
                assert_eq!(
                    m.offset(),
                    next[&p],
                    "the first member skipped records on partition {p}"
                );
                a.store_offset_from_message(&m).expect("store offset");
                next.insert(p, m.offset() + 1);
            }
        }
    }
    let consumed: i64 = next.values().sum();
    a.commit_consumer_state(CommitMode::Sync)
        .expect("synchronous commit");
    let committed = offsets(
        &a.committed_offsets(topic_partitions(), TIMEOUT)
            .expect("committed offsets"),
    );
    let expected: BTreeMap<i32, Option<i64>> = next.iter().map(|(&p, &o)| (p, Some(o))).collect();
    assert_eq!(
        committed, expected,
        "committed offsets right after the commit"
    );
    drop(a);

    let coordinator = c.find_coordinator("g");
    c.kill9(coordinator);
    let killed = Instant::now();

    // More records everywhere, so that every partition has something after the committed
    // position for the new member to start with.
    written.extend(produce_each(&c.bootstrap(), "second", 10));

    let b = group_member(&c.bootstrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    let after_kill = loop {
        let res = b.committed_offsets(topic_partitions(), Duration::from_secs(5));
        match &res {
            Ok(tpl) if tpl.elements().iter().all(|e| e.error().is_ok()) => break offsets(tpl),
            _ => assert!(
                Instant::now() < deadline,
                "OffsetFetch never succeeded after the coordinator died: {res:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let fetched_after = killed.elapsed();
    assert_eq!(
        after_kill, expected,
        "committed offsets of group g after killing its coordinator (node {coordinator})"
    );

    // The new member resumes exactly at the committed offsets.
    let ends: BTreeMap<i32, i64> = (0..PARTITIONS)
        .map(|p| {
            let last = written
                .keys()
                .filter(|(wp, _)| *wp == p)
                .map(|(_, o)| *o)
                .max()
                .expect("written");
            (p, last + 1)
        })
        .collect();
    b.subscribe(&[TOPIC]).expect("subscribe");
    let mut got: BTreeMap<i32, Vec<(i64, String)>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let at_end = |got: &BTreeMap<i32, Vec<(i64, String)>>| {
        ends.iter().all(|(p, end)| {
            got.get(p)
                .and_then(|v| v.last())
                .is_some_and(|(o, _)| o + 1 >= *end)
        })
    };
    while !at_end(&got) {
        assert!(
            Instant::now() < deadline,
            "the new member did not read to the end {ends:?}: (partition, first, last, count) {:?}",
            got.iter()
                .map(|(p, v)| (p, v.first().map(|r| r.0), v.last().map(|r| r.0), v.len()))
                .collect::<Vec<_>>()
        );
        match b.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
                got.entry(m.partition())
                    .or_default()
                    .push((m.offset(), value));
            }
            Some(Err(e)) => eprintln!("new member: {e}"),
            None => {}
        }
    }
    for p in 0..PARTITIONS {
        let start = expected[&p].unwrap_or(0);
        let want: Vec<(i64, String)> = (start..ends[&p])
            .map(|o| (o, written[&(p, o)].clone()))
            .collect();
        let have = &got[&p];
        assert_eq!(
            have.first().map(|r| r.0),
            Some(start),
            "partition {p}: the new member's first record is not the committed offset"
        );
        assert!(
            *have == want,
            "partition {p}: the new member read {} records from {:?} to {:?}, want {} from \
             {start} to {}",
            have.len(),
            have.first().map(|r| r.0),
            have.last().map(|r| r.0),
            want.len(),
            ends[&p] - 1
        );
    }
    println!(
        "group_offsets_survive_coordinator_kill: committed {expected:?} ({consumed} of {total} \
         consumed), killed coordinator node {coordinator}, OffsetFetch answered {fetched_after:?} \
         after the kill, new member resumed at the committed offsets; took {:?}",
        started.elapsed()
    );
}

/// Reads every record of `topic`/`partition` from the beginning to the high watermark.
fn read_partition(bootstrap: &str, topic: &str, partition: i32) -> Vec<(i64, String)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    // A new leader answers OFFSET_NOT_AVAILABLE until its high watermark caught up.
    let deadline = Instant::now() + TIMEOUT;
    let high = loop {
        match c.fetch_watermarks(topic, partition, TIMEOUT) {
            Ok((_, high)) => break high,
            Err(e) if Instant::now() > deadline => panic!("watermarks: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)
        .expect("partition");
    c.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    while out.last().is_none_or(|(o, _)| o + 1 < high) && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            let v = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
            out.push((m.offset(), v));
        }
    }
    out
}

/// The first compound fault: both followers die, the ISR shrinks to the leader, and
/// the leader comes back on an empty disk. It must not be elected (which would make the
/// followers truncate every acknowledged record); the partition stays offline, the follower's
/// data stays on its disk, and an explicit unclean election brings it back from there.
#[test]
fn last_in_sync_replica_back_on_an_empty_disk_is_not_elected() {
    const T: &str = "lastisr";
    let mut c = Cluster::start();
    // Replicas on nodes 2 and 3 only: node 1 keeps the controller quorum alive with either.
    c.create_topic_assigned(T, &[&[2, 3]]);
    let acked = produce_to(&c.bootstrap(), T, 200);

    c.kill9(3);
    let deadline = Instant::now() + Duration::from_secs(30);
    while c
        .node_metadata(1, T)
        .ok()
        .and_then(|ps| ps.first().map(|p| p.isr.clone()))
        != Some(vec![2])
    {
        assert!(Instant::now() < deadline, "the ISR never shrank to [2]");
        std::thread::sleep(Duration::from_millis(100));
    }
    c.kill9(2);
    c.wipe(2);
    // Node 3 first: with node 1 it forms the quorum that a blank node 2 may not vote in.
    c.start_node(3);
    c.start_node(2);
    c.wait_serving(3);
    c.wait_serving(2);

    // Offline, not led by the empty node 2 nor by node 3 that missed nothing but is not in sync.
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        for n in 1..=NODES {
            if let Ok(ps) = c.node_metadata(n, T) {
                assert_eq!(ps[0].leader, -1, "node {n} reports a leader: {ps:?}");
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let on_disk = strom_tests::cluster::read_log_dir(&c.data_dir(3).join(format!("{T}-0")))
        .expect("node 3's log");
    assert_eq!(on_disk.len(), acked.len(), "node 3 lost records");
    assert!(
        c.node(2).log().contains("partition offline"),
        "node 2 logged no offline partition"
    );

    // The operator accepts node 3's copy.
    let req = kafka_protocol::messages::ElectLeadersRequest::default()
        .with_election_type(1)
        .with_topic_partitions(Some(vec![
            kafka_protocol::messages::elect_leaders_request::TopicPartitions::default()
                .with_topic(kafka_protocol::messages::TopicName(
                    kafka_protocol::protocol::StrBytes::from_static_str(T),
                ))
                .with_partitions(vec![0]),
        ]));
    let resp = strom_tests::cluster::raw_call(c.node(1).addr(), 1, &req).expect("ElectLeaders");
    let code = resp.replica_election_results[0].partition_result[0].error_code;
    assert_eq!(code, 0, "unclean election refused: {resp:?}");
    assert_eq!(c.leader(T, 0), 3);
    assert_eq!(read_partition(&c.bootstrap(), T, 0), acked);
}

/// The second compound fault: the leader restarts while the controller quorum is
/// unreachable. Its metadata on disk still names it leader; it must not serve from it.
#[test]
fn restarted_leader_without_a_quorum_serves_nothing() {
    const T: &str = "stale";
    let mut c = Cluster::start();
    c.create_topic(T, 1);
    let leader = c.leader(T, 0);
    let before = produce_to(&c.bootstrap(), T, 50);
    for n in others(leader) {
        c.kill9(n);
    }
    c.kill9(leader);
    c.start_node(leader);
    std::thread::sleep(Duration::from_secs(8));
    assert!(
        std::net::TcpStream::connect_timeout(&c.node(leader).addr(), Duration::from_secs(1))
            .is_err(),
        "node {leader} serves clients without having registered with a controller"
    );
    for n in others(leader) {
        c.start_node(n);
    }
    for n in 1..=NODES {
        c.wait_serving(n);
    }
    c.wait_full_isr(T, 1, Duration::from_secs(30));
    assert_eq!(read_partition(&c.bootstrap(), T, 0), before);
}

/// Produces `count` acknowledged records (acks=all) to partition 0 of `topic`.
fn produce_to(bootstrap: &str, topic: &str, count: usize) -> Vec<(i64, String)> {
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    block_on(async {
        let mut out = Vec::new();
        for i in 0..count {
            let v = format!("v{i}");
            let delivery = p
                .send(
                    FutureRecord::to(topic).partition(0).key(&v).payload(&v),
                    TIMEOUT,
                )
                .await
                .unwrap_or_else(|(e, _)| panic!("{v} not acknowledged: {e}"));
            out.push((delivery.offset, v));
        }
        out
    })
}
