#!/usr/bin/env python3
"""kafka-python compatibility client.

usage: kafka_python_client.py <bootstrap host:port> <topic-prefix> produce|verify

produce: for each codec create <prefix>-<codec> (3 partitions, RF 1) with KafkaAdminClient,
         produce N records with acks=all and compression_type=<codec> (record i to partition
         i % 3), wait for every ack, then verify.
verify:  for each codec and partition, assign (no group), read offset 0 .. end offset and check.
"""
import logging
import os
import sys
import threading
import time

import group_check as gc

from compat_common import (CODECS, N, PARTITIONS, STEP_TIMEOUT, Deadline, Report, check_partition,
                           key_of, parse_args, topic_of, value_of)

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
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


# ------------------------------------------------------------------ consumer-group scenario
# usage: kafka_python_client.py <bootstrap> <topic> groups-produce|groups-consume|groups-resume
#        kafka_python_client.py <bootstrap> <topic> groups-create     (CreateTopics only; used by kcat)
#        kafka_python_client.py <bootstrap> <topic> groups-committed  (OffsetFetch only; used by kcat)
# (see group_check.py for the scenario and the event log written to $COMPAT_EVENTS)

GROUP_COMMON = dict(COMMON, heartbeat_interval_ms=500, session_timeout_ms=10000)


def groups_produce(bootstrap, topic, first, count, before):
    producer = KafkaProducer(bootstrap_servers=bootstrap, client_id="compat-kafka-python-gproducer",
                             acks="all", enable_idempotence=True, linger_ms=5, max_block_ms=TIMEOUT_MS,
                             delivery_timeout_ms=TIMEOUT_MS, **COMMON)
    try:
        deadline = Deadline()
        futures = [(i, producer.send(topic, key=gc.key_of(i), value=gc.value_of(i)))
                   for i in range(first, first + count)]
        producer.flush(timeout=max(1.0, deadline.left()))
        by_p = {}
        for i, f in futures:
            if not f.is_done:
                raise RuntimeError("record k-%d not acknowledged within %.0fs" % (i, STEP_TIMEOUT))
            if f.failed():
                raise RuntimeError("delivery of record k-%d failed: %s" % (i, err(f.exception)))
            by_p.setdefault(f.value.partition, []).append(f.value.offset)
        for p, offs in by_p.items():
            offs.sort()
            start = before.get(p, 0)
            if offs != list(range(start, start + len(offs))):
                raise RuntimeError("partition %d: acked offsets not contiguous from %d: %s..."
                                   % (p, start, offs[:5]))
        return {p: len(v) for p, v in sorted(by_p.items())}
    finally:
        producer.close(timeout=10)


def end_offsets(bootstrap, topic):
    c = KafkaConsumer(bootstrap_servers=bootstrap, client_id="compat-kafka-python-offsets", group_id=None,
                      enable_auto_commit=False, **COMMON)
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        return {tp.partition: o for tp, o in c.end_offsets(tps, timeout_ms=TIMEOUT_MS).items()}
    finally:
        c.close(autocommit=False)


def committed_offsets(bootstrap, topic, group):
    # never subscribes: OffsetFetch only, no group membership
    c = KafkaConsumer(bootstrap_servers=bootstrap, client_id="compat-kafka-python-committed", group_id=group,
                      enable_auto_commit=False, **COMMON)
    try:
        return {p: c.committed(TopicPartition(topic, p), timeout_ms=TIMEOUT_MS) for p in range(PARTITIONS)}
    finally:
        c.close(autocommit=False)


class Member(threading.Thread):
    def __init__(self, bootstrap, topic, group, name, ev):
        super().__init__(name=name, daemon=True)
        self.bootstrap, self.topic, self.group, self.m, self.ev = bootstrap, topic, group, name, ev
        self.stop = threading.Event()

    def run(self):
        ev, m, topic = self.ev, self.m, self.topic
        c = None
        try:
            c = KafkaConsumer(bootstrap_servers=self.bootstrap, client_id="compat-kafka-python-" + m,
                              group_id=self.group, enable_auto_commit=False, auto_offset_reset="earliest",
                              max_poll_records=gc.MAX_BATCH, **GROUP_COMMON)
            consumer = c

            class Listener(ConsumerRebalanceListener):
                def on_partitions_revoked(self, revoked):
                    ev.revoke(m, [tp.partition for tp in revoked])

                def on_partitions_assigned(self, assigned):
                    ev.assign(m, [tp.partition for tp in assigned], consumer.group_metadata().generation_id)

                def on_partitions_lost(self, lost):
                    ev.revoke(m, [tp.partition for tp in lost])

            # kafka-python 3.0.12 client bug worked around here: its first join happens before its
            # coordinator has a metadata snapshot, so it rejoins right after the first SyncGroup;
            # if that second JoinGroup/SyncGroup completes after poll()'s timeout, the join
            # completion (assignment callback, re-enabling heartbeats) never runs and the member
            # sits without partitions until its session expires (the broker answered both joins
            # correctly). Fetching the metadata first gives the first join a real assignment; a
            # poll timeout of 1 s leaves the rejoin time to complete inside poll().
            if c.partitions_for_topic(topic) != set(range(PARTITIONS)):
                raise RuntimeError("metadata: topic %s partitions %s" % (topic, c.partitions_for_topic(topic)))
            c.subscribe([topic], listener=Listener())
            while not self.stop.is_set():
                batch = c.poll(timeout_ms=1000, max_records=gc.MAX_BATCH)
                nxt = {}
                for tp, recs in batch.items():
                    for r in recs:
                        ev.rec(m, r.partition, r.offset, gc.index_of_key(r.key))
                        time.sleep(gc.PROCESS_DELAY)
                        nxt[r.partition] = r.offset + 1
                if nxt:
                    try:
                        c.commit({TopicPartition(topic, p): OffsetAndMetadata(o, "", -1) for p, o in nxt.items()},
                                 timeout_ms=30000)
                        for p, o in nxt.items():
                            ev.commit(m, p, o, True)
                    except KafkaError as e:
                        for p, o in nxt.items():
                            ev.commit(m, p, o, False, err(e))
        except Exception as e:
            ev.error("%s: %s" % (m, err(e)))
        finally:
            ev.revoke(m)   # processes nothing from here on
            if c is not None:
                c.close(autocommit=False)   # LeaveGroup


def groups_consume(bootstrap, topic, members, keys):
    ev = gc.Events(os.environ["COMPAT_EVENTS"], strict=True)
    group = topic + "-g"
    ends = end_offsets(bootstrap, topic)
    for p, e in sorted(ends.items()):
        ev.end(p, e)
    threads = {}

    def start(m):
        threads[m] = Member(bootstrap, topic, group, m, ev)
        threads[m].start()

    def stop(m):
        threads[m].stop.set()
        threads[m].join(20)
        if threads[m].is_alive():
            ev.error("member %s did not close within 20s" % m)

    gc.drive(ev, start, stop, members, keys, ends,
             log=lambda s: sys.stderr.write("%s: %s\n" % (CLIENT, s)))
    for p, o in sorted(committed_offsets(bootstrap, topic, group).items()):
        ev.final(p, -1 if o is None else o)
    ev.close()


def groups_main(bootstrap, topic, mode):
    report = Report(CLIENT)
    try:
        if mode == "groups-create":
            create_topic(bootstrap, topic)
            print("%s %s OK" % (CLIENT, mode), flush=True)
        elif mode == "groups-produce":
            create_topic(bootstrap, topic)
            per_p = groups_produce(bootstrap, topic, 0, gc.N_FIRST, {})
            if sorted(per_p) != list(range(PARTITIONS)):
                raise RuntimeError("records landed in partitions %s only" % per_p)
            print("%s %s OK %d records, per partition %s" % (CLIENT, mode, gc.N_FIRST, per_p), flush=True)
        elif mode == "groups-consume":
            groups_consume(bootstrap, topic, ["c1", "c2", "c3"], set(range(gc.N_FIRST)))
        else:
            groups_produce(bootstrap, topic, gc.N_FIRST, gc.N_MORE, end_offsets(bootstrap, topic))
            groups_consume(bootstrap, topic, ["r1"], set(range(gc.N_FIRST, gc.N_FIRST + gc.N_MORE)))
    except Exception as e:
        report.fail(mode, err(e))
    report.exit()


def main():
    logging.basicConfig(level=getattr(logging, os.environ.get("COMPAT_PY_LOG", "ERROR")), format="%(asctime)s kafka-python %(levelname)s %(name)s: %(message)s")
    if len(sys.argv) == 4 and sys.argv[3] == "groups-create":
        return groups_main(sys.argv[1], sys.argv[2], sys.argv[3])
    if len(sys.argv) == 4 and sys.argv[3] == "groups-committed":
        # prints "final <p> <committed offset>" for group <topic>-g (OffsetFetch; used by kcat)
        for p, o in sorted(committed_offsets(sys.argv[1], sys.argv[2], sys.argv[2] + "-g").items()):
            print("final %d %d" % (p, -1 if o is None else o))
        return
    bootstrap, prefix, mode = parse_args(sys.argv, CLIENT)
    if mode.startswith("groups-"):
        return groups_main(bootstrap, prefix, mode)
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
