#!/usr/bin/env python3
"""Consumer-group scenario: shared event log format, in-process tracker and the checker.

Every client's `groups-consume` / `groups-resume` mode appends one line per event to the file
named by $COMPAT_EVENTS (written by the client itself, whatever its language):

    strict 1|0            1: the client reports revocations (so ownership is exact at any time)
    end <p> <offset>      end offset (high watermark) of partition p before consuming
    assign <m> <gen|-> <p,p,..|->   member m was assigned these partitions (eager: replaces)
    revoke <m> <p,p,..|*> member m gave up these partitions (* = all)
    rec <m> <p> <o> <i>   member m processed the record at partition p, offset o, key k-<i>
    commit <m> <p> <next> ok|fail [error]   synchronous commit of offset <next> for partition p
    stage <k>             the client saw k members owning disjoint, complete assignments
    final <p> <offset>    committed offset of partition p, fetched after all members closed
    error <text>          anything the client considers a failure

usage: group_check.py consume|resume <client> <events-file>
Prints "<client> groups-consume OK <summary>" (or groups-resume), or one FAIL line per problem;
exits non-zero on failure.

Record keys: groups-produce writes keys k-0 .. k-999; groups-resume writes k-1000 .. k-1099 and
must then read exactly those 100 records (resuming from the committed offsets).
"""
import sys
import threading
import time

PARTITIONS = 3
N_FIRST = 1000
N_MORE = 100


def key_of(i):
    return b"k-%d" % i


def value_of(i):
    return b"g-%d" % i


def index_of_key(key):
    try:
        k = bytes(key)
        if not k.startswith(b"k-"):
            return None
        return int(k[2:])
    except Exception:
        return None


def _parts(s):
    if s in ("-", ""):
        return set()
    return set(int(x) for x in s.split(","))


def _fmt_parts(parts):
    parts = sorted(parts)
    return ",".join(str(p) for p in parts) if parts else "-"


class Events:
    """Thread-safe event writer + the bit of state the client needs to drive the scenario."""

    def __init__(self, path, strict):
        self.lock = threading.Lock()
        self.f = open(path, "a", buffering=1)
        self.owned = {}
        self.seen = set()
        self.committed = {}
        self.errors = []
        self._write("strict %d" % (1 if strict else 0))

    def _write(self, line):
        with self.lock:
            self.f.write(line + "\n")
            self.f.flush()

    def end(self, p, off):
        self._write("end %d %d" % (p, off))

    def assign(self, m, parts, gen=None):
        with self.lock:
            self.owned[m] = set(parts)
        self._write("assign %s %s %s" % (m, "-" if gen is None else gen, _fmt_parts(parts)))

    def revoke(self, m, parts=None):
        with self.lock:
            if parts is None:
                self.owned[m] = set()
            else:
                self.owned[m] = self.owned.get(m, set()) - set(parts)
        self._write("revoke %s %s" % (m, "*" if parts is None else _fmt_parts(parts)))

    def rec(self, m, p, o, i):
        with self.lock:
            self.seen.add(i)
        self._write("rec %s %d %d %s" % (m, p, o, i))

    def commit(self, m, p, nxt, ok, err=""):
        if ok:
            with self.lock:
                self.committed[p] = max(self.committed.get(p, 0), nxt)
        self._write("commit %s %d %d %s%s" % (m, p, nxt, "ok" if ok else "fail",
                                            "" if ok else " " + " ".join(str(err).split())))

    def stage(self, k):
        self._write("stage %d" % k)

    def final(self, p, off):
        self._write("final %d %d" % (p, off))

    def error(self, text):
        with self.lock:
            self.errors.append(text)
        self._write("error " + " ".join(str(text).split()))

    # ---- queries used to drive the scenario
    def stage_reached(self, k):
        with self.lock:
            owners = [s for s in self.owned.values() if s]
            union = set()
            total = 0
            for s in owners:
                union |= s
                total += len(s)
            return len(owners) == k and total == len(union) and union == set(range(PARTITIONS))

    def wait_stage(self, k, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.stage_reached(k):
                self.stage(k)
                return True
            time.sleep(0.05)
        return self.stage_or_error(k, timeout)

    def stage_or_error(self, k, timeout):
        """Final check after waiting `timeout` seconds for stage k: logs the stage or an error."""
        if self.stage_reached(k):
            self.stage(k)
            return True
        with self.lock:
            own = {m: sorted(s) for m, s in self.owned.items()}
        self.error("stage %d (%d members owning disjoint partitions covering all %d) not reached "
                   "within %.0fs; ownership %s" % (k, k, PARTITIONS, timeout, own))
        return False

    def done(self, keys, end_offsets):
        with self.lock:
            return keys <= self.seen and all(self.committed.get(p, 0) >= e for p, e in end_offsets.items())

    def close(self):
        self.f.close()


STAGE_TIMEOUT = 20.0    # seconds for a rebalance to settle after a member starts
CONSUME_TIMEOUT = 30.0  # seconds to consume and commit everything once all members are in
PROCESS_DELAY = 0.01    # seconds of "processing" per record, so that consumption spans the rebalances
MAX_BATCH = 10          # records per poll; offsets are committed synchronously after each batch


def drive(ev, start_member, stop_member, members, keys, end_offsets, log=None):
    """Start members one by one, waiting after each for the rebalance to settle (stage k: k members
    own disjoint partitions covering the topic); then wait until every record in `keys` has been
    processed and every partition's committed offset reached its end offset; then stop the members
    (last started first). start_member/stop_member take the member name."""
    started = []
    ok = True
    try:
        for k, m in enumerate(members, 1):
            start_member(m)
            started.append(m)
            t0 = time.monotonic()
            if not ev.wait_stage(k, STAGE_TIMEOUT):
                ok = False
                break
            if log:
                log("stage %d reached %.1fs after starting %s" % (k, time.monotonic() - t0, m))
        if ok:
            deadline = time.monotonic() + CONSUME_TIMEOUT
            while not ev.done(keys, end_offsets):
                if time.monotonic() >= deadline:
                    with ev.lock:
                        missing = len(keys - ev.seen)
                        committed = dict(ev.committed)
                    ev.error("not everything consumed and committed within %.0fs of the last rebalance: "
                             "%d of %d records missing, committed %s, end offsets %s"
                             % (CONSUME_TIMEOUT, missing, len(keys), committed, end_offsets))
                    ok = False
                    break
                time.sleep(0.05)
    finally:
        for m in reversed(started):
            try:
                stop_member(m)
            except Exception as e:  # noqa
                ev.error("stopping member %s: %s: %s" % (m, type(e).__name__, e))
                ok = False
    return ok


# ------------------------------------------------------------------------------------------ checker

def check(kind, client, path):
    fails = []
    strict = False
    owned = {}
    committed = {}
    seen = {}       # (p, o) -> i
    count_by_i = {}
    dups = 0
    per_member = {}
    end = {}
    final = {}
    stages = []
    commits_ok = commits_failed = 0
    rebalances = 0
    try:
        lines = open(path).read().splitlines()
    except OSError as e:
        return ["no event log: %s" % e], ""
    for ln, line in enumerate(lines, 1):
        f = line.split(" ")
        ev = f[0]
        try:
            if ev == "strict":
                strict = f[1] == "1"
            elif ev == "end":
                end[int(f[1])] = int(f[2])
            elif ev == "assign":
                m, gen, parts = f[1], f[2], _parts(f[3])
                rebalances += 1
                if strict:
                    for p in parts:
                        for m2, s in owned.items():
                            if m2 != m and p in s:
                                fails.append("line %d: partition %d assigned to %s (generation %s) while "
                                             "still owned by %s" % (ln, p, m, gen, m2))
                owned[m] = set(parts)
            elif ev == "revoke":
                m = f[1]
                if f[2] == "*":
                    owned[m] = set()
                else:
                    owned[m] = owned.get(m, set()) - _parts(f[2])
            elif ev == "rec":
                m, p, o, i = f[1], int(f[2]), int(f[3]), int(f[4])
                per_member[m] = per_member.get(m, 0) + 1
                if strict and p not in owned.get(m, set()):
                    fails.append("line %d: %s processed partition %d offset %d but does not own "
                                 "partition %d (owns %s)" % (ln, m, p, o, p, sorted(owned.get(m, set()))))
                if (p, o) in seen:
                    if seen[(p, o)] != i:
                        fails.append("line %d: partition %d offset %d returned key k-%d, earlier k-%d"
                                     % (ln, p, o, i, seen[(p, o)]))
                    if o < committed.get(p, 0):
                        fails.append("line %d: %s got partition %d offset %d (k-%d) again although "
                                     "offset %d was already committed" % (ln, m, p, o, i, committed[p]))
                    dups += 1
                else:
                    seen[(p, o)] = i
                count_by_i[i] = count_by_i.get(i, 0) + 1
            elif ev == "commit":
                p, nxt, ok = int(f[2]), int(f[3]), f[4] == "ok"
                if ok:
                    commits_ok += 1
                    committed[p] = max(committed.get(p, 0), nxt)
                else:
                    commits_failed += 1
            elif ev == "stage":
                k = int(f[1])
                stages.append(k)
                owners = {m: s for m, s in owned.items() if s}
                union = set()
                for s in owners.values():
                    union |= s
                if len(owners) != k or sum(len(s) for s in owners.values()) != len(union) \
                        or union != set(range(PARTITIONS)):
                    fails.append("line %d: stage %d claimed but ownership is %s"
                                 % (ln, k, {m: sorted(s) for m, s in owned.items()}))
            elif ev == "final":
                final[int(f[1])] = int(f[2])
            elif ev == "error":
                fails.append(" ".join(f[1:]))
            else:
                fails.append("line %d: unknown event %r" % (ln, line[:80]))
        except (IndexError, ValueError) as e:
            fails.append("line %d: malformed event %r (%s)" % (ln, line[:80], e))

    if kind == "consume":
        want = set(range(N_FIRST))
        want_end = N_FIRST
        if stages != [1, 2, 3]:
            fails.append("stages reached %s, expected [1, 2, 3] (consumers joining one by one)" % stages)
    else:
        want = set(range(N_FIRST, N_FIRST + N_MORE))
        want_end = N_FIRST + N_MORE
        if stages != [1]:
            fails.append("stages reached %s, expected [1] (one consumer owning all partitions)" % stages)
    if sorted(end) != list(range(PARTITIONS)):
        fails.append("end offsets reported for partitions %s" % sorted(end))
    elif sum(end.values()) != want_end:
        fails.append("end offsets %s sum to %d, expected %d records in the topic"
                     % (end, sum(end.values()), want_end))
    got = set(count_by_i)
    old = sorted(i for i in got if i < min(want))
    if old:
        fails.append("read %d records from before the committed offsets (keys k-%d..k-%d): did not "
                     "resume from the committed offsets" % (len(old), old[0], old[-1]))
    missing = sorted(want - got)
    if missing:
        fails.append("%d of %d records never consumed (first: k-%d)" % (len(missing), len(want), missing[0]))
    stray = sorted(i for i in got - want if i >= min(want))
    if stray:
        fails.append("unexpected keys consumed: %s" % stray[:5])
    if kind == "resume" and dups:
        fails.append("%d records consumed more than once by the single resuming consumer" % dups)
    if sorted(final) != list(range(PARTITIONS)):
        fails.append("committed offsets fetched for partitions %s, expected all %d" % (sorted(final), PARTITIONS))
    else:
        for p in range(PARTITIONS):
            if final[p] != end.get(p):
                fails.append("partition %d: committed offset %d after consuming, end offset %s"
                             % (p, final[p], end.get(p)))
    summary = ("%d records, %d redelivered after a rebalance (uncommitted), per member %s, "
               "%d assignments, %d commits ok / %d failed, committed %s"
               % (len(got), dups, dict(sorted(per_member.items())), rebalances, commits_ok,
                  commits_failed, [final.get(p) for p in range(PARTITIONS)]))
    return fails, summary


def replay(path):
    """(ownership by member, set of key indexes seen) after the events logged so far."""
    owned, seen = {}, set()
    try:
        lines = open(path).read().splitlines()
    except OSError:
        return owned, seen
    for line in lines:
        f = line.split(" ")
        try:
            if f[0] == "assign":
                owned[f[1]] = _parts(f[3])
            elif f[0] == "revoke":
                owned[f[1]] = set() if f[2] == "*" else owned.get(f[1], set()) - _parts(f[2])
            elif f[0] == "rec":
                seen.add(int(f[4]))
        except (IndexError, ValueError):
            pass  # a line being written; the final check reports malformed lines
    return owned, seen


def main():
    # helpers for clients driven from the shell (kcat):
    #   group_check.py stage <k> <events-file>          exit 0 iff k members own disjoint, complete assignments
    #   group_check.py seen <from> <count> <events-file>  exit 0 iff keys k-<from>.. k-<from+count-1> all seen
    if len(sys.argv) == 4 and sys.argv[1] == "stage":
        owned, _ = replay(sys.argv[3])
        owners = [s for s in owned.values() if s]
        union = set().union(*owners) if owners else set()
        ok = len(owners) == int(sys.argv[2]) and sum(map(len, owners)) == len(union) \
            and union == set(range(PARTITIONS))
        if not ok:
            print({m: sorted(s) for m, s in sorted(owned.items())})
        sys.exit(0 if ok else 1)
    if len(sys.argv) == 5 and sys.argv[1] == "seen":
        _, seen = replay(sys.argv[4])
        first, count = int(sys.argv[2]), int(sys.argv[3])
        missing = set(range(first, first + count)) - seen
        print("%d of %d missing" % (len(missing), count))
        sys.exit(1 if missing else 0)
    if len(sys.argv) != 4 or sys.argv[1] not in ("consume", "resume"):
        sys.stderr.write("usage: group_check.py consume|resume <client> <events-file>\n")
        sys.exit(2)
    kind, client, path = sys.argv[1:]
    fails, summary = check(kind, client, path)
    mode = "groups-" + kind
    for f in fails[:10]:
        print("%s %s FAIL %s" % (client, mode, " ".join(f.split())))
    if len(fails) > 10:
        print("%s %s FAIL ... and %d more problems" % (client, mode, len(fails) - 10))
    if not fails:
        print("%s %s OK %s" % (client, mode, summary))
    else:
        sys.stderr.write("summary: %s\n" % summary)
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
