#!/usr/bin/env python3
"""Issue acceptance: a Python service written the way Confluent's documentation shows runs
unchanged against Strom.

- an idempotent Producer with acks=all;
- three Consumer processes in one group with enable.auto.commit=False that commit each message
  synchronously after processing it (commit(message=msg)), with on_assign/on_revoke callbacks
  that commit synchronously;
- one consumer is killed with SIGKILL while it works: its partitions must move to the other two
  within the session timeout, and no record is delivered again after its commit point.

usage: confluent_service.py BOOTSTRAP WORKDIR        (exit status 0 = pass)
"""
import json
import os
import signal
import subprocess
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

TOPIC = "svc-orders"
GROUP = "svc-billing"
RECORDS = 3000
SESSION_MS = 6000


def log_event(path, **event):
    event["t"] = time.time()
    with open(path, "a") as f:
        f.write(json.dumps(event) + "\n")


def consumer_main(bootstrap, events):
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": GROUP,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": SESSION_MS,
        "heartbeat.interval.ms": 500,
    })

    def on_assign(consumer, partitions):
        log_event(events, kind="assign", partitions=[p.partition for p in partitions])

    def on_revoke(consumer, partitions):
        try:
            consumer.commit(asynchronous=False)
        except KafkaException:
            pass  # nothing consumed since the last commit
        log_event(events, kind="revoke", partitions=[p.partition for p in partitions])

    c.subscribe([TOPIC], on_assign=on_assign, on_revoke=on_revoke)
    while True:
        msg = c.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            log_event(events, kind="error", error=str(msg.error()))
            continue
        time.sleep(0.003)  # "processing"
        log_event(events, kind="processed", p=msg.partition(), o=msg.offset(), v=msg.value().decode())
        c.commit(message=msg, asynchronous=False)
        log_event(events, kind="committed", p=msg.partition(), o=msg.offset() + 1)


def read_events(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def current_assignment(events):
    owned = set()
    for e in events:
        if e["kind"] == "assign":
            owned = set(e["partitions"])
        elif e["kind"] == "revoke":
            owned -= set(e["partitions"])
    return owned


def main(bootstrap, workdir):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(TOPIC, 3, 1)])[TOPIC].result(30)
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    for i in range(RECORDS):
        p.produce(TOPIC, key=str(i), value=str(i))
        p.poll(0)
    assert p.flush(30) == 0, "producer did not deliver everything"

    files = [os.path.join(workdir, f"consumer-{i}.jsonl") for i in range(3)]
    procs = []
    for i, f in enumerate(files):
        procs.append(subprocess.Popen([sys.executable, __file__, "--consumer", bootstrap, f]))
        # Members join one by one, as deployments roll out.
        deadline = time.time() + 30
        while time.time() < deadline:
            owned = [current_assignment(read_events(x)) for x in files[: i + 1]]
            if all(owned) and sorted(sum((sorted(o) for o in owned), [])) == [0, 1, 2]:
                break
            time.sleep(0.2)
        else:
            raise SystemExit(f"FAIL: group did not balance over {i + 1} members: {owned}")

    # Let everyone work a little, then kill member 0 mid-stream.
    time.sleep(1.5)
    victim_owned = current_assignment(read_events(files[0]))
    os.kill(procs[0].pid, signal.SIGKILL)
    procs[0].wait()
    killed_at = time.time()
    deadline = killed_at + SESSION_MS / 1000 + 20
    while time.time() < deadline:
        owned = [current_assignment(read_events(x)) for x in files[1:]]
        if sorted(sum((sorted(o) for o in owned), [])) == [0, 1, 2]:
            break
        time.sleep(0.2)
    else:
        raise SystemExit(f"FAIL: partitions {sorted(victim_owned)} of the killed member never moved: {owned}")
    moved_after = time.time() - killed_at

    # Wait until every record has been processed by someone.
    deadline = time.time() + 90
    while time.time() < deadline:
        processed = {e["v"] for x in files for e in read_events(x) if e["kind"] == "processed"}
        if len(processed) == RECORDS:
            break
        time.sleep(0.5)
    for proc in procs[1:]:
        proc.kill()
        proc.wait()

    events = sorted((e for x in files for e in read_events(x)), key=lambda e: e["t"])
    processed = {e["v"] for e in events if e["kind"] == "processed"}
    missing = RECORDS - len(processed)
    # A redelivery is legal only if the first delivery was never committed.
    committed = {}
    violations = []
    seen = {}
    for e in events:
        if e["kind"] == "committed":
            committed[e["p"]] = max(committed.get(e["p"], 0), e["o"])
        elif e["kind"] == "processed":
            key = (e["p"], e["o"])
            if key in seen and committed.get(e["p"], 0) > e["o"]:
                violations.append(key)
            seen[key] = True
    errors = [e for e in events if e["kind"] == "error"]
    print(f"killed member owned {sorted(victim_owned)}; its partitions moved after {moved_after:.1f} s "
          f"(session timeout {SESSION_MS / 1000:.0f} s)")
    print(f"processed {len(processed)}/{RECORDS} distinct records; redelivered after commit: {len(violations)}; "
          f"client errors: {len(errors)}")
    ok = missing == 0 and not violations and moved_after < SESSION_MS / 1000 + 15
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    if sys.argv[1] == "--consumer":
        consumer_main(sys.argv[2], sys.argv[3])
    else:
        sys.exit(main(sys.argv[1], sys.argv[2]))
