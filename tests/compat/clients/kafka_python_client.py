#!/usr/bin/env python3
"""kafka-python compatibility client.

usage: kafka_python_client.py <bootstrap host:port> <topic-prefix> produce|verify

produce: for each codec create <prefix>-<codec> (3 partitions, RF 1) with KafkaAdminClient,
         produce N records with acks=all and compression_type=<codec> (record i to partition
         i % 3), wait for every ack, then verify.
verify:  for each codec and partition, assign (no group), read offset 0 .. end offset and check.
"""
import logging
import sys
import time

from compat_common import (CODECS, N, PARTITIONS, STEP_TIMEOUT, Deadline, Report, check_partition,
                           key_of, parse_args, topic_of, value_of)

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

CLIENT = "kafka-python"
TIMEOUT_MS = int(STEP_TIMEOUT * 1000)
COMMON = dict(request_timeout_ms=30000, bootstrap_timeout_ms=30000,
              reconnect_backoff_max_ms=1000)


def err(e):
    return "%s: %s" % (type(e).__name__, e)


def create_topic(bootstrap, topic):
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="compat-kafka-python-admin", **COMMON)
    try:
        admin.create_topics({topic: {"num_partitions": PARTITIONS, "replication_factor": 1}},
                            timeout_ms=30000)
        admin.wait_for_topics([topic], timeout_ms=TIMEOUT_MS)
    finally:
        admin.close()


def produce(bootstrap, topic, codec):
    producer = KafkaProducer(bootstrap_servers=bootstrap, client_id="compat-kafka-python-producer",
                             acks="all", compression_type=None if codec == "none" else codec,
                             linger_ms=5, max_block_ms=TIMEOUT_MS, delivery_timeout_ms=TIMEOUT_MS,
                             **COMMON)
    try:
        parts = producer.partitions_for(topic)
        if parts != set(range(PARTITIONS)):
            raise RuntimeError("producer metadata: topic %s has partitions %s, expected %d"
                               % (topic, sorted(parts or []), PARTITIONS))
        deadline = Deadline()
        futures = []
        for i in range(N):
            futures.append(producer.send(topic, key=key_of(i), value=value_of(i), partition=i % PARTITIONS))
        producer.flush(timeout=max(1.0, deadline.left()))
        for i, f in enumerate(futures):
            if not f.is_done:
                raise RuntimeError("record %d not acknowledged within %.0fs" % (i, STEP_TIMEOUT))
            if f.failed():
                raise RuntimeError("delivery of record %d failed: %s" % (i, err(f.exception)))
            md = f.value
            if md.partition != i % PARTITIONS:
                raise RuntimeError("record %d acked on partition %d, sent to %d" % (i, md.partition, i % PARTITIONS))
            if md.offset != i // PARTITIONS:
                raise RuntimeError("record %d acked at offset %d, expected %d" % (i, md.offset, i // PARTITIONS))
    finally:
        producer.close(timeout=10)


def read_partition(consumer, topic, p):
    tp = TopicPartition(topic, p)
    consumer.assign([tp])
    end = consumer.end_offsets([tp], timeout_ms=TIMEOUT_MS)[tp]
    consumer.seek(tp, 0)
    records = []
    deadline = Deadline()
    next_off = 0
    while next_off < end:
        if deadline.expired():
            raise RuntimeError("partition %d: timed out after %.0fs having read %d of %d records"
                               % (p, STEP_TIMEOUT, len(records), end))
        batch = consumer.poll(timeout_ms=500, max_records=2000)
        for rtp, recs in batch.items():
            if rtp != tp:
                raise RuntimeError("got records for unassigned %s" % (rtp,))
            for r in recs:
                records.append((r.offset, r.key, r.value))
                next_off = r.offset + 1
    return records, end


def verify(bootstrap, prefix, report, codecs):
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, client_id="compat-kafka-python-consumer",
                             group_id=None, enable_auto_commit=False, auto_offset_reset="none",
                             allow_auto_create_topics=False, **COMMON)
    try:
        for codec in codecs:
            topic = topic_of(prefix, codec)
            try:
                parts = consumer.partitions_for_topic(topic)
                if parts != set(range(PARTITIONS)):
                    raise RuntimeError("metadata: topic %s has partitions %s, expected %d"
                                       % (topic, sorted(parts or []), PARTITIONS))
                total = 0
                for p in range(PARTITIONS):
                    records, end = read_partition(consumer, topic, p)
                    problem = check_partition(p, PARTITIONS, records, end)
                    if problem:
                        raise RuntimeError(problem)
                    total += len(records)
                if total != N:
                    raise RuntimeError("read %d records in total, expected %d" % (total, N))
                report.ok(codec, total)
            except (KafkaError, RuntimeError, AssertionError, ValueError) as e:
                report.fail(codec, "verify: " + err(e))
    finally:
        consumer.close(autocommit=False)


def main():
    logging.basicConfig(level=logging.ERROR, format="%(asctime)s kafka-python %(levelname)s %(name)s: %(message)s")
    bootstrap, prefix, mode = parse_args(sys.argv, CLIENT)
    report = Report(CLIENT)
    codecs = list(CODECS)
    if mode == "produce":
        for codec in CODECS:
            topic = topic_of(prefix, codec)
            t0 = time.monotonic()
            try:
                create_topic(bootstrap, topic)
            except Exception as e:
                report.fail(codec, "create topic %s: %s" % (topic, err(e)))
                codecs.remove(codec)
                continue
            try:
                produce(bootstrap, topic, codec)
            except Exception as e:
                report.fail(codec, "produce to %s: %s" % (topic, err(e)))
                codecs.remove(codec)
                continue
            sys.stderr.write("%s: produced %d records to %s in %.1fs\n" % (CLIENT, N, topic, time.monotonic() - t0))
    try:
        if codecs:
            verify(bootstrap, prefix, report, codecs)
    except Exception as e:
        report.fail("all", "verify: " + err(e))
    report.exit()


if __name__ == "__main__":
    main()
