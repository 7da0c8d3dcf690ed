//! Idempotent producers: a retried batch whose first response was lost is acknowledged with its
//! original offsets and never written twice.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use strom_tests::proxy::DropProxy;
use strom_tests::{free_port, Strom};

const TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn retries_after_lost_responses_are_not_duplicated() {
    let port = free_port();
    // The first three produce responses never reach the client: it must resend those batches.
    let proxy = DropProxy::start(([127, 0, 0, 1], port).into(), 3);
    let broker = Strom::start_advertising(port, proxy.port, &[]);
    let via_proxy = format!("127.0.0.1:{}", proxy.port);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &via_proxy)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("message.timeout.ms", "30000")
        .create()
        .expect("producer");
    let mut pending = Vec::new();
    for i in 0..600 {
        let v = format!("idem-{i}");
        let fut = producer
            .send_result(
                FutureRecord::<str, str>::to("idem")
                    .partition(0)
                    .payload(&v),
            )
            .map_err(|(e, _)| e)
            .expect("enqueue");
        pending.push(fut);
        if i % 50 == 49 {
            // Spread the records over several produce requests.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut offsets = Vec::new();
    for fut in pending {
        let d = fut
            .await
            .expect("future")
            .map_err(|(e, _)| e)
            .expect("delivered");
        offsets.push(d.offset);
    }
    assert_eq!(
        proxy.dropped(),
        3,
        "the proxy did not drop the responses it was asked to"
    );
    // Acknowledged offsets are exactly 0..600: no record was written twice.
    let expected: Vec<i64> = (0..600).collect();
    assert!(
        offsets == expected,
        "acknowledged offsets run {:?}..={:?}, not 0..=599",
        offsets.first(),
        offsets.last()
    );

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "idem-check")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    assert_eq!(
        consumer
            .fetch_watermarks("idem", 0, TIMEOUT)
            .expect("watermarks"),
        (0, 600)
    );
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("idem", 0, Offset::Beginning)
        .expect("tpl");
    consumer.assign(&tpl).expect("assign");
    let mut values = Vec::new();
    let deadline = std::time::Instant::now() + TIMEOUT;
    while values.len() < 600 {
        assert!(
            std::time::Instant::now() < deadline,
            "read {} of 600",
            values.len()
        );
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.expect("message");
            values.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
    }
    assert_eq!(
        values,
        (0..600).map(|i| format!("idem-{i}")).collect::<Vec<_>>()
    );
}
