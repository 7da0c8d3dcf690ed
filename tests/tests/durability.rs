//! Durability and lifecycle: clean restarts, `kill -9` in the middle of a produce stream,
//! retention deleting old segments.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use strom_tests::Strom;

const TIMEOUT: Duration = Duration::from_secs(20);

fn read_partition(bootstrap: &str, topic: &str, partition: i32) -> Vec<(i64, String)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "strom-tests")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let (low, high) = consumer
        .fetch_watermarks(topic, partition, TIMEOUT)
        .expect("watermarks");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)
        .expect("tpl");
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    let mut next = low;
    while next < high {
        assert!(
            Instant::now() < deadline,
            "timed out reading {topic}/{partition} at {next} of {high}"
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                next = m.offset() + 1;
                out.push((
                    m.offset(),
                    String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
                ));
            }
            Some(Err(e)) => panic!("consume error: {e}"),
            None => {}
        }
    }
    out
}

fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("message.timeout.ms", "5000")
        .set("linger.ms", "1")
        .create()
        .expect("producer")
}

#[tokio::test]
async fn clean_restart_keeps_all_data() {
    let mut broker = Strom::start();
    let bs = broker.bootstrap();
    let p = producer(&bs);
    for i in 0..300 {
        let v = format!("r{i}");
        p.send(
            FutureRecord::<str, str>::to("restart")
                .partition(0)
                .payload(&v),
            TIMEOUT,
        )
        .await
        .expect("send");
    }
    let before = read_partition(&bs, "restart", 0);
    assert_eq!(before.len(), 300);
    let status = broker.terminate();
    assert!(status.success(), "SIGTERM exit status {status}");
    assert!(broker.log().contains("clean shutdown"));
    broker.restart();
    assert_eq!(read_partition(&bs, "restart", 0), before);
    // And appends continue after the last offset.
    let d = p
        .send(
            FutureRecord::<str, str>::to("restart")
                .partition(0)
                .payload("after"),
            TIMEOUT,
        )
        .await
        .expect("send after restart");
    assert_eq!(d.offset, 300);
}

#[tokio::test]
async fn kill_9_mid_stream_loses_no_acknowledged_record() {
    let mut broker = Strom::start();
    let bs = broker.bootstrap();
    let admin: rdkafka::admin::AdminClient<_> = ClientConfig::new()
        .set("bootstrap.servers", &bs)
        .create()
        .expect("admin");
    let created = admin
        .create_topics(
            &[rdkafka::admin::NewTopic::new(
                "crash",
                3,
                rdkafka::admin::TopicReplication::Fixed(1),
            )],
            &rdkafka::admin::AdminOptions::new(),
        )
        .await
        .expect("create");
    assert!(created[0].is_ok(), "{created:?}");
    let p = producer(&bs);
    // Keep ~1000 sends in flight so the kill lands while batches are being written.
    let mut acked: Vec<(i32, i64, String)> = Vec::new();
    let mut pending = std::collections::VecDeque::new();
    let mut i = 0;
    while acked.len() < 5_000 {
        let v = format!("k9-{i}");
        let partition = i % 3;
        i += 1;
        let fut = p
            .send_result(
                FutureRecord::<str, str>::to("crash")
                    .partition(partition)
                    .payload(&v),
            )
            .map_err(|(e, _)| e)
            .expect("enqueue");
        pending.push_back((partition, v, fut));
        if pending.len() > 1_000 {
            let (partition, v, fut) = pending.pop_front().expect("pending");
            let d = fut
                .await
                .expect("future")
                .map_err(|(e, _)| e)
                .expect("delivered before the crash");
            assert_eq!(d.partition, partition);
            acked.push((d.partition, d.offset, v));
        }
    }
    broker.kill9();
    for (partition, v, fut) in pending {
        // In flight at the crash: acknowledged or not, both are fine; only acks are promises.
        if let Ok(Ok(d)) = fut.await {
            assert_eq!(d.partition, partition);
            acked.push((d.partition, d.offset, v));
        }
    }
    broker.restart();
    assert!(
        broker.log().contains("recovering"),
        "restart after kill -9 did not run recovery"
    );
    for partition in 0..3 {
        let stored = read_partition(&bs, "crash", partition);
        // The log is readable to its end with dense offsets.
        for (i, (offset, _)) in stored.iter().enumerate() {
            assert_eq!(*offset, i as i64, "gap in partition {partition}");
        }
        for (_, offset, v) in acked.iter().filter(|a| a.0 == partition) {
            let found = stored.get(*offset as usize).map(|s| s.1.as_str());
            assert_eq!(
                found,
                Some(v.as_str()),
                "acknowledged record at {partition}/{offset} lost"
            );
        }
    }
}

#[tokio::test]
async fn retention_deletes_old_segments() {
    let broker = Strom::start_with(&[("log.retention.check.interval.ms", "200")]);
    let bs = broker.bootstrap();
    let admin: rdkafka::admin::AdminClient<_> = ClientConfig::new()
        .set("bootstrap.servers", &bs)
        .create()
        .expect("admin");
    let topic = rdkafka::admin::NewTopic::new("ret", 1, rdkafka::admin::TopicReplication::Fixed(1))
        .set("segment.bytes", "2000")
        .set("retention.bytes", "6000");
    let old =
        rdkafka::admin::NewTopic::new("ret-time", 1, rdkafka::admin::TopicReplication::Fixed(1))
            .set("segment.bytes", "2000")
            .set("retention.ms", "60000");
    let res = admin
        .create_topics(&[topic, old], &rdkafka::admin::AdminOptions::new())
        .await
        .expect("create");
    assert!(res.iter().all(Result::is_ok), "{res:?}");
    let p = producer(&bs);
    let hour_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
        - 3_600_000;
    for i in 0..300 {
        let v = format!("{i:0>100}");
        p.send(
            FutureRecord::<str, str>::to("ret").partition(0).payload(&v),
            TIMEOUT,
        )
        .await
        .expect("send");
        p.send(
            FutureRecord::<str, str>::to("ret-time")
                .partition(0)
                .payload(&v)
                .timestamp(hour_ago),
            TIMEOUT,
        )
        .await
        .expect("send");
    }
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bs)
        .set("group.id", "strom-tests")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (low, high) = consumer.fetch_watermarks("ret", 0, TIMEOUT).expect("wm");
        let (tlow, thigh) = consumer
            .fetch_watermarks("ret-time", 0, TIMEOUT)
            .expect("wm");
        if low > 0 && tlow == thigh {
            assert_eq!(high, 300);
            assert_eq!(thigh, 300);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "retention did not run: ret low={low}, ret-time low={tlow}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dir_bytes: u64 = std::fs::read_dir(broker.data_dir().join("ret-0"))
        .expect("dir")
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .sum();
    assert!(
        dir_bytes <= 6000 + 2000,
        "log still holds {dir_bytes} bytes"
    );
    // What is left is readable from the new start.
    let rest = read_partition(&bs, "ret", 0);
    assert_eq!(rest.last().map(|r| r.0), Some(299));
}
