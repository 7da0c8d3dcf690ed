#!/usr/bin/env python3
"""aiokafka compatibility client (consumer-group scenario only).

usage: aiokafka_client.py <bootstrap host:port> <topic> groups-produce|groups-consume|groups-resume

groups-produce: create <topic> (3 partitions) with AIOKafkaAdminClient, idempotent produce
                (enable_idempotence=True, acks=all) of keys k-0..k-999, check the acks.
groups-consume: 3 AIOKafkaConsumer instances (one asyncio loop) join group <topic>-g one by one,
                each processing records and committing synchronously after each batch; every event
                goes to $COMPAT_EVENTS (checked by group_check.py).
groups-resume:  produce k-1000..k-1099, then ONE new consumer in the group must read exactly those.
"""
import asyncio
import logging
import os
import sys
import time

import group_check as gc
from compat_common import PARTITIONS, STEP_TIMEOUT, Report

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

CLIENT = "aiokafka"
COMMON = dict(request_timeout_ms=30000, retry_backoff_ms=200)
MODES = ("groups-produce", "groups-consume", "groups-resume")


def err(e):
    return "%s: %s" % (type(e).__name__, e)


async def create_topic(bootstrap, topic):
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="compat-aiokafka-admin",
                                request_timeout_ms=30000)
    await admin.start()
    try:
        resp = await asyncio.wait_for(
            admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)],
                                timeout_ms=30000), STEP_TIMEOUT)
        for t in resp.topic_errors:
            if t[1] != 0:
                raise RuntimeError("CreateTopics %s: error code %d %s" % (t[0], t[1], t[2:] or ""))
    finally:
        await admin.close()


async def groups_produce(bootstrap, topic, first, count, before):
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, client_id="compat-aiokafka-gproducer",
                                acks="all", enable_idempotence=True, linger_ms=5,
                                request_timeout_ms=30000, retry_backoff_ms=200)
    await producer.start()
    try:
        deadline = time.monotonic() + STEP_TIMEOUT
        while True:
            parts = await producer.partitions_for(topic)
            if parts == set(range(PARTITIONS)):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("producer metadata: topic %s has partitions %s" % (topic, parts))
            await asyncio.sleep(0.2)
        futs = []
        for i in range(first, first + count):
            futs.append((i, await producer.send(topic, key=gc.key_of(i), value=gc.value_of(i))))
        by_p = {}
        results = await asyncio.wait_for(asyncio.gather(*(f for _, f in futs), return_exceptions=True),
                                         STEP_TIMEOUT)
        for (i, _), md in zip(futs, results):
            if isinstance(md, BaseException):
                raise RuntimeError("delivery of record k-%d failed: %s" % (i, err(md)))
            by_p.setdefault(md.partition, []).append(md.offset)
        for p, offs in by_p.items():
            offs.sort()
            start = before.get(p, 0)
            if offs != list(range(start, start + len(offs))):
                raise RuntimeError("partition %d: acked offsets not contiguous from %d: %s..."
                                   % (p, start, offs[:5]))
        return {p: len(v) for p, v in sorted(by_p.items())}
    finally:
        await producer.stop()


async def end_offsets(bootstrap, topic):
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, client_id="compat-aiokafka-offsets",
                         enable_auto_commit=False, **COMMON)
    await c.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        res = await asyncio.wait_for(c.end_offsets(tps), STEP_TIMEOUT)
        return {tp.partition: o for tp, o in res.items()}
    finally:
        await c.stop()


async def committed_offsets(bootstrap, topic, group):
    # never subscribes: OffsetFetch only, no group membership
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, client_id="compat-aiokafka-committed", group_id=group,
                         enable_auto_commit=False, **COMMON)
    await c.start()
    try:
        out = {}
        for p in range(PARTITIONS):
            o = await asyncio.wait_for(c.committed(TopicPartition(topic, p)), STEP_TIMEOUT)
            out[p] = -1 if o is None else o
        return out
    finally:
        await c.stop()


class Member:
    def __init__(self, bootstrap, topic, group, name, ev):
        self.bootstrap, self.topic, self.group, self.m, self.ev = bootstrap, topic, group, name, ev
        self.stopping = False
        self.task = None

    async def run(self):
        ev, m, topic = self.ev, self.m, self.topic
        c = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, client_id="compat-aiokafka-" + m,
                             group_id=self.group, enable_auto_commit=False, auto_offset_reset="earliest",
                             heartbeat_interval_ms=500, session_timeout_ms=10000,
                             max_poll_records=gc.MAX_BATCH, **COMMON)

        # aiokafka rebalances in a background task while this loop may be mid-batch: the
        # (awaited) revocation callback takes the processing lock, so a rebalance waits for the
        # batch in flight to be processed and committed; records of partitions revoked meanwhile
        # are skipped (their new owner starts from the committed offset).
        lock = asyncio.Lock()
        owned = set()

        class Listener(ConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked):
                async with lock:
                    owned.difference_update(tp.partition for tp in revoked)
                    ev.revoke(m, [tp.partition for tp in revoked])

            async def on_partitions_assigned(self, assigned):
                async with lock:
                    owned.clear()
                    owned.update(tp.partition for tp in assigned)
                    ev.assign(m, [tp.partition for tp in assigned])

        try:
            await c.start()
            c.subscribe([topic], listener=Listener())
            while not self.stopping:
                batch = await c.getmany(timeout_ms=200, max_records=gc.MAX_BATCH)
                async with lock:
                    nxt = {}
                    for tp, recs in batch.items():
                        if tp.partition not in owned:
                            continue
                        for r in recs:
                            ev.rec(m, r.partition, r.offset, gc.index_of_key(r.key))
                            await asyncio.sleep(gc.PROCESS_DELAY)
                            nxt[r.partition] = r.offset + 1
                    if nxt:
                        try:
                            await asyncio.wait_for(
                                c.commit({TopicPartition(topic, p): o for p, o in nxt.items()}), 30)
                            for p, o in nxt.items():
                                ev.commit(m, p, o, True)
                        except (KafkaError, asyncio.TimeoutError) as e:
                            for p, o in nxt.items():
                                ev.commit(m, p, o, False, err(e))
        except Exception as e:
            ev.error("%s: %s" % (m, err(e)))
        finally:
            ev.revoke(m)     # processes nothing from here on
            await c.stop()   # LeaveGroup


async def groups_consume(bootstrap, topic, members, keys):
    ev = gc.Events(os.environ["COMPAT_EVENTS"], strict=True)
    group = topic + "-g"
    ends = await end_offsets(bootstrap, topic)
    for p, e in sorted(ends.items()):
        ev.end(p, e)
    running = []
    ok = True
    try:
        for k, name in enumerate(members, 1):
            mem = Member(bootstrap, topic, group, name, ev)
            mem.task = asyncio.create_task(mem.run())
            running.append(mem)
            t0 = time.monotonic()
            while not ev.stage_reached(k) and time.monotonic() - t0 < gc.STAGE_TIMEOUT:
                await asyncio.sleep(0.05)
            if not ev.stage_or_error(k, gc.STAGE_TIMEOUT):
                ok = False
                break
            sys.stderr.write("%s: stage %d reached %.1fs after starting %s\n" % (CLIENT, k, time.monotonic() - t0, name))
        if ok:
            deadline = time.monotonic() + gc.CONSUME_TIMEOUT
            while not ev.done(keys, ends):
                if time.monotonic() >= deadline:
                    ev.error("not everything consumed and committed within %.0fs of the last rebalance: "
                             "%d of %d records missing, committed %s, end offsets %s"
                             % (gc.CONSUME_TIMEOUT, len(keys - ev.seen), len(keys), ev.committed, ends))
                    break
                await asyncio.sleep(0.05)
    finally:
        for mem in reversed(running):
            mem.stopping = True
            try:
                await asyncio.wait_for(mem.task, 20)
            except asyncio.TimeoutError:
                ev.error("member %s did not close within 20s" % mem.m)
    for p, o in sorted((await committed_offsets(bootstrap, topic, group)).items()):
        ev.final(p, o)
    ev.close()


async def amain(bootstrap, topic, mode):
    if mode == "groups-produce":
        await create_topic(bootstrap, topic)
        per_p = await groups_produce(bootstrap, topic, 0, gc.N_FIRST, {})
        if sorted(per_p) != list(range(PARTITIONS)):
            raise RuntimeError("records landed in partitions %s only" % per_p)
        print("%s %s OK %d records, per partition %s" % (CLIENT, mode, gc.N_FIRST, per_p), flush=True)
    elif mode == "groups-consume":
        await groups_consume(bootstrap, topic, ["c1", "c2", "c3"], set(range(gc.N_FIRST)))
    else:
        before = await end_offsets(bootstrap, topic)
        await groups_produce(bootstrap, topic, gc.N_FIRST, gc.N_MORE, before)
        await groups_consume(bootstrap, topic, ["r1"], set(range(gc.N_FIRST, gc.N_FIRST + gc.N_MORE)))


def main():
    logging.basicConfig(level=logging.ERROR, format="%(asctime)s aiokafka %(levelname)s %(name)s: %(message)s")
    if len(sys.argv) != 4 or sys.argv[3] not in MODES:
        sys.stderr.write("usage: %s <bootstrap host:port> <topic> %s\n" % (sys.argv[0], "|".join(MODES)))
        sys.exit(2)
    bootstrap, topic, mode = sys.argv[1:]
    report = Report(CLIENT)
    try:
        asyncio.run(amain(bootstrap, topic, mode))
    except Exception as e:
        report.fail(mode, err(e))
    report.exit()


if __name__ == "__main__":
    main()
