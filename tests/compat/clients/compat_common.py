"""Shared expectations for the Python compatibility clients.

Record i (0 <= i < N) has key b"k-<i>" and value b"v-<i>-" + 100 bytes of padding
("%05d" % i repeated 20 times) and is sent to partition i % partitions.  So partition p
must hold, at offset o, record i = p + o * partitions.
"""
import sys
import time

N = 10000
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
PARTITIONS = 3
STEP_TIMEOUT = 60.0  # seconds per step (create / produce / read one topic)


def key_of(i):
    return b"k-%d" % i


def value_of(i):
    return b"v-%d-" % i + (b"%05d" % i) * 20


def topic_of(prefix, codec):
    return "%s-%s" % (prefix, codec)


GROUP_MODES = ("groups-produce", "groups-consume", "groups-resume")


def parse_args(argv, client):
    if len(argv) != 4 or argv[3] not in ("produce", "verify") + GROUP_MODES:
        sys.stderr.write("usage: %s <bootstrap host:port> <topic-prefix> produce|verify\n"
                         "       %s <bootstrap host:port> <topic> groups-produce|groups-consume|groups-resume\n"
                         % (argv[0], argv[0]))
        sys.exit(2)
    return argv[1], argv[2], argv[3]


def _short(b):
    if b is None:
        return "None"
    r = repr(bytes(b))
    return r if len(r) <= 40 else r[:37] + "..."


def _parse_i(value):
    try:
        return int(bytes(value).split(b"-")[1])
    except Exception:
        return None


def check_partition(p, nparts, records, end_offset):
    """records: list of (offset, key, value) as read from partition p, in arrival order.
    Returns None if fine, else an error string."""
    expected = len(range(p, N, nparts))
    if end_offset != expected:
        return "partition %d: end offset %d, expected %d" % (p, end_offset, expected)
    if len(records) != end_offset:
        return "partition %d: read %d records, end offset is %d" % (p, len(records), end_offset)
    prev_i = None
    for idx, (off, key, value) in enumerate(records):
        if off != idx:
            return "partition %d: offsets not contiguous from 0: record #%d has offset %d" % (p, idx, off)
        got_i = _parse_i(value)
        if prev_i is not None and (got_i is None or got_i <= prev_i):
            return "partition %d offset %d: value index %s not > previous %d (value %s)" % (
                p, off, got_i, prev_i, _short(value))
        i = p + idx * nparts
        if key is None or bytes(key) != key_of(i):
            return "partition %d offset %d: key %s, expected %s" % (p, off, _short(key), _short(key_of(i)))
        if value is None or bytes(value) != value_of(i):
            return "partition %d offset %d: value %s, expected %s" % (p, off, _short(value), _short(value_of(i)))
        prev_i = got_i
    return None


class Report:
    def __init__(self, client):
        self.client = client
        self.failed = 0

    def ok(self, codec, count):
        print("%s %s %d OK" % (self.client, codec, count), flush=True)

    def fail(self, codec, reason):
        self.failed += 1
        reason = " ".join(str(reason).split())
        print("%s %s FAIL %s" % (self.client, codec, reason), flush=True)

    def exit(self):
        sys.exit(1 if self.failed else 0)


class Deadline:
    def __init__(self, seconds=STEP_TIMEOUT):
        self.end = time.monotonic() + seconds

    def left(self):
        return max(0.0, self.end - time.monotonic())

    def expired(self):
        return time.monotonic() >= self.end
