#!/usr/bin/env python3
"""confluent-kafka (librdkafka) compatibility client.

usage: confluent_client.py <bootstrap host:port> <topic-prefix> produce|verify

produce: for each codec create <prefix>-<codec> (3 partitions, RF 1) with AdminClient,
         produce N records with acks=all and compression.type=<codec> (record i to partition
         i % 3), wait for every delivery report, then verify.
verify:  for each codec and partition, assign (no subscribe; librdkafka insists on a group.id,
         but nothing is ever committed), read offset 0 .. high watermark and check.
"""
import os
import sys
import threading
import time

import group_check as gc

from compat_common import (CODECS, N, PARTITIONS, STEP_TIMEOUT, Deadline, Report, check_partition,
                           key_of, parse_args, topic_of, value_of)

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

CLIENT = "confluent"
TIMEOUT_MS = int(STEP_TIMEOUT * 1000)


def err(e):
    return "%s: %s" % (type(e).__name__, e)


def base_conf(bootstrap, client_id):
    errors = []

    def error_cb(e):
        # Transient errors are logged by librdkafka; only fatal ones are collected here.
        sys.stderr.write("%s %s error_cb: %s\n" % (CLIENT, client_id, e))
        if e.fatal():
            errors.append(e)

    conf = {
        "bootstrap.servers": bootstrap,
        "client.id": client_id,
        "socket.timeout.ms": 30000,
        "reconnect.backoff.max.ms": 1000,
        "error_cb": error_cb,
    }
    return conf, errors


def wait_topic(admin, topic, deadline):
    last = "no metadata"
    while not deadline.expired():
        md = admin.list_topics(topic=topic, timeout=max(1.0, min(10.0, deadline.left())))
        t = md.topics.get(topic)
        if t is not None and t.error is None and len(t.partitions) == PARTITIONS and \
                all(p.error is None and p.leader >= 0 for p in t.partitions.values()):
            return
        last = "topic %s: error=%s partitions=%s" % (
            topic, t.error if t else "missing", sorted(t.partitions) if t else [])
        time.sleep(0.2)
    raise RuntimeError("topic not ready after %.0fs: %s" % (STEP_TIMEOUT, last))


def create_topic(bootstrap, topic):
    conf, errors = base_conf(bootstrap, "compat-confluent-admin")
    admin = AdminClient(conf)
    deadline = Deadline()
    futures = admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)],
                                  request_timeout=30, operation_timeout=30)
    futures[topic].result(timeout=STEP_TIMEOUT)
    wait_topic(admin, topic, deadline)
    if errors:
        raise RuntimeError("fatal client error: %s" % errors[0])


def produce(bootstrap, topic, codec):
    conf, errors = base_conf(bootstrap, "compat-confluent-producer")
    conf.update({"acks": "all", "compression.type": codec, "linger.ms": 5,
                 "message.timeout.ms": TIMEOUT_MS})
    producer = Producer(conf)
    failures = []
    acked = {}

    def on_delivery(e, msg):
        i = int(msg.key()[2:])
        if e is not None:
            failures.append("record %d: %s" % (i, e))
        else:
            acked[i] = (msg.partition(), msg.offset())

    deadline = Deadline()
    for i in range(N):
        while True:
            try:
                producer.produce(topic, key=key_of(i), value=value_of(i), partition=i % PARTITIONS,
                                 on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
                if deadline.expired():
                    raise RuntimeError("local queue full for %.0fs" % STEP_TIMEOUT)
        producer.poll(0)
    remaining = producer.flush(max(1.0, deadline.left()))
    if failures:
        raise RuntimeError("%d delivery failures, first: %s" % (len(failures), failures[0]))
    if remaining or len(acked) != N:
        raise RuntimeError("%d of %d records not acknowledged within %.0fs"
                           % (N - len(acked), N, STEP_TIMEOUT))
    for i in range(N):
        if acked[i] != (i % PARTITIONS, i // PARTITIONS):
            raise RuntimeError("record %d acked at partition/offset %s, expected %s"
                               % (i, acked[i], (i % PARTITIONS, i // PARTITIONS)))
    if errors:
        raise RuntimeError("fatal client error: %s" % errors[0])


def read_partition(consumer, topic, p):
    tp = TopicPartition(topic, p, 0)
    consumer.assign([tp])
    low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=STEP_TIMEOUT, cached=False)
    records = []
    deadline = Deadline()
    next_off = 0
    while next_off < high:
        if deadline.expired():
            raise RuntimeError("partition %d: timed out after %.0fs having read %d of %d records"
                               % (p, STEP_TIMEOUT, len(records), high))
        for m in consumer.consume(num_messages=1000, timeout=0.5):
            if m.error():
                raise RuntimeError("partition %d: consumer error: %s" % (p, m.error()))
            if m.topic() != topic or m.partition() != p:
                raise RuntimeError("got message for unassigned %s[%d]" % (m.topic(), m.partition()))
            records.append((m.offset(), m.key(), m.value()))
            next_off = m.offset() + 1
    consumer.unassign()
    return records, high


def verify(bootstrap, prefix, report, codecs):
    conf, errors = base_conf(bootstrap, "compat-confluent-consumer")
    conf.update({
        # librdkafka's Python binding refuses to create a consumer without group.id; the group
        # is never joined (assign() only) and nothing is committed.
        "group.id": "compat-confluent-unused-%s" % prefix,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "error",
        "enable.partition.eof": False,
        "allow.auto.create.topics": False,
    })
    consumer = Consumer(conf)
    try:
        for codec in codecs:
            topic = topic_of(prefix, codec)
            try:
                md = consumer.list_topics(topic=topic, timeout=STEP_TIMEOUT)
                t = md.topics.get(topic)
                if t is None or t.error is not None or len(t.partitions) != PARTITIONS:
                    raise RuntimeError("metadata: topic %s error=%s partitions=%s, expected %d" % (
                        topic, t.error if t else "missing", sorted(t.partitions) if t else [], PARTITIONS))
                total = 0
                for p in range(PARTITIONS):
                    records, end = read_partition(consumer, topic, p)
                    problem = check_partition(p, PARTITIONS, records, end)
                    if problem:
                        raise RuntimeError(problem)
                    total += len(records)
                if total != N:
                    raise RuntimeError("read %d records in total, expected %d" % (total, N))
                if errors:
                    raise RuntimeError("fatal client error: %s" % errors[0])
                report.ok(codec, total)
            except (KafkaException, RuntimeError) as e:
                report.fail(codec, "verify: " + err(e))
    finally:
        consumer.close()


# ------------------------------------------------------------------ consumer-group scenario
# usage: confluent_client.py <bootstrap> <topic> groups-produce|groups-consume|groups-resume
# (see group_check.py for the scenario and the event log written to $COMPAT_EVENTS)

def groups_produce(bootstrap, topic, first, count):
    conf, errors = base_conf(bootstrap, "compat-confluent-gproducer")
    conf.update({"enable.idempotence": True, "acks": "all", "linger.ms": 5,
                 "message.timeout.ms": TIMEOUT_MS})
    producer = Producer(conf)
    failures = []
    acked = {}

    def on_delivery(e, msg):
        i = gc.index_of_key(msg.key())
        if e is not None:
            failures.append("record k-%s: %s" % (i, e))
        elif i in acked:
            failures.append("record k-%d acknowledged twice" % i)
        else:
            acked[i] = (msg.partition(), msg.offset())

    deadline = Deadline()
    for i in range(first, first + count):
        producer.produce(topic, key=gc.key_of(i), value=gc.value_of(i), on_delivery=on_delivery)
        producer.poll(0)
    remaining = producer.flush(max(1.0, deadline.left()))
    if failures:
        raise RuntimeError("%d delivery failures, first: %s" % (len(failures), failures[0]))
    if remaining or len(acked) != count:
        raise RuntimeError("%d of %d records not acknowledged within %.0fs"
                           % (count - len(acked), count, STEP_TIMEOUT))
    if errors:
        raise RuntimeError("fatal client error: %s" % errors[0])
    return acked


def check_acks(acked, first_offsets):
    """acked: i -> (partition, offset). Offsets per partition must be contiguous from first_offsets[p]."""
    by_p = {}
    for i, (p, o) in acked.items():
        by_p.setdefault(p, []).append(o)
    for p, offs in by_p.items():
        offs.sort()
        start = first_offsets.get(p, 0)
        if offs != list(range(start, start + len(offs))):
            raise RuntimeError("partition %d: acked offsets not contiguous from %d: %s..."
                               % (p, start, offs[:5]))
    return {p: len(v) for p, v in sorted(by_p.items())}


def end_offsets(bootstrap, topic):
    conf, _ = base_conf(bootstrap, "compat-confluent-offsets")
    conf.update({"group.id": topic + "-offsets-probe", "enable.auto.commit": False})
    c = Consumer(conf)
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=STEP_TIMEOUT, cached=False)[1]
                for p in range(PARTITIONS)}
    finally:
        c.close()


def committed_offsets(bootstrap, topic, group):
    conf, _ = base_conf(bootstrap, "compat-confluent-committed")
    conf.update({"group.id": group, "enable.auto.commit": False})
    c = Consumer(conf)   # never subscribes: OffsetFetch only, no group membership
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=STEP_TIMEOUT)
        for tp in tps:
            if tp.error:
                raise RuntimeError("committed offset of partition %d: %s" % (tp.partition, tp.error))
        return {tp.partition: tp.offset for tp in tps}
    finally:
        c.close()


class Member(threading.Thread):
    def __init__(self, bootstrap, topic, group, name, ev):
        super().__init__(name=name, daemon=True)
        self.topic, self.name_, self.ev = topic, name, ev
        self.stop = threading.Event()
        conf, self.errors = base_conf(bootstrap, "compat-confluent-" + name)
        conf.update({
            "group.id": group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "heartbeat.interval.ms": 500,
            "session.timeout.ms": 10000,
            "enable.partition.eof": False,
        })
        self.consumer = Consumer(conf)

    def run(self):
        c, ev, m = self.consumer, self.ev, self.name_

        def on_assign(_c, parts):
            ev.assign(m, [tp.partition for tp in parts])

        def on_revoke(_c, parts):
            ev.revoke(m, [tp.partition for tp in parts])

        try:
            c.subscribe([self.topic], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_revoke)
            while not self.stop.is_set():
                msgs = c.consume(num_messages=gc.MAX_BATCH, timeout=0.2)
                nxt = {}
                for msg in msgs:
                    if msg.error():
                        sys.stderr.write("%s %s: consume error: %s\n" % (CLIENT, m, msg.error()))
                        if msg.error().fatal():
                            ev.error("%s: fatal consume error: %s" % (m, msg.error()))
                        continue
                    ev.rec(m, msg.partition(), msg.offset(), gc.index_of_key(msg.key()))
                    time.sleep(gc.PROCESS_DELAY)
                    nxt[msg.partition()] = msg.offset() + 1
                if nxt:
                    try:
                        res = c.commit(offsets=[TopicPartition(self.topic, p, o) for p, o in nxt.items()],
                                       asynchronous=False)
                        for tp in res:
                            ev.commit(m, tp.partition, tp.offset, tp.error is None, tp.error)
                    except KafkaException as e:
                        for p, o in nxt.items():
                            ev.commit(m, p, o, False, e)
                for e in self.errors:
                    ev.error("%s: fatal client error: %s" % (m, e))
                del self.errors[:]
        except Exception as e:
            ev.error("%s: %s" % (m, err(e)))
        finally:
            ev.revoke(m)   # processes nothing from here on
            c.close()      # LeaveGroup


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
        ev.final(p, o)
    ev.close()


def groups_main(bootstrap, topic, mode):
    report = Report(CLIENT)
    try:
        if mode == "groups-produce":
            create_topic(bootstrap, topic)
            per_p = check_acks(groups_produce(bootstrap, topic, 0, gc.N_FIRST), {})
            if sorted(per_p) != list(range(PARTITIONS)):
                raise RuntimeError("records landed in partitions %s only" % per_p)
            print("%s %s OK %d records, per partition %s" % (CLIENT, mode, gc.N_FIRST, per_p), flush=True)
        elif mode == "groups-consume":
            groups_consume(bootstrap, topic, ["c1", "c2", "c3"], set(range(gc.N_FIRST)))
        else:
            before = end_offsets(bootstrap, topic)
            check_acks(groups_produce(bootstrap, topic, gc.N_FIRST, gc.N_MORE), before)
            groups_consume(bootstrap, topic, ["r1"], set(range(gc.N_FIRST, gc.N_FIRST + gc.N_MORE)))
    except Exception as e:
        report.fail(mode, err(e))
    report.exit()


def main():
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
