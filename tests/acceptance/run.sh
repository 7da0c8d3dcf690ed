#!/usr/bin/env bash
# Runs the acceptance scenarios that need a live broker and the Python and Java clients installed
# by tests/compat/install.sh:  tests/acceptance/run.sh [path-to-strom]
#   1. confluent-kafka service against a single broker (confluent_service.py)
#   2. Java client across a leader kill: a 3-node `strom dev-cluster`, JavaFailover.java produces
#      idempotently with acks=all while the leader of partition 0 is killed with kill -9
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STROM="${1:-$ROOT/target/debug/strom}"
PY="$ROOT/.cache/compat/venv/bin/python"
JLIB="$ROOT/.cache/compat/java-lib"
if [ ! -x "$PY" ] || ! compgen -G "$JLIB/kafka-clients*.jar" >/dev/null; then
    bash "$ROOT/tests/compat/install.sh"
fi
WORK="$(mktemp -d)"
PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$STROM" --listeners "PLAINTEXT://127.0.0.1:$PORT" --advertised-listeners "PLAINTEXT://127.0.0.1:$PORT" \
    --log-dirs "$WORK/data" --override group.initial.rebalance.delay.ms=0 \
    --override admin.listener=127.0.0.1:0 >"$WORK/broker.log" 2>&1 &
BROKER=$!
disown "$BROKER" # no job-control chatter when it is killed at exit
CLUSTER="" # dev-cluster pid (scenario 2)
stop_cluster() {
    [ -n "$CLUSTER" ] || return 0
    kill -TERM "$CLUSTER" 2>/dev/null || true
    for _ in $(seq 1 50); do # it stops its nodes; give it up to 5 s
        kill -0 "$CLUSTER" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$CLUSTER" 2>/dev/null || true
    pkill -9 -f -- "--log-dirs $WORK/cluster/node-" 2>/dev/null || true # the nodes, should any be left
    CLUSTER=""
}
trap 'kill -9 $BROKER 2>/dev/null || true; stop_cluster; rm -rf "$WORK"' EXIT
for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 0.1
done
passed=0 failed=0
echo "--- confluent-kafka service (idempotent producer, manual commits, kill -9 of one of three consumers)"
mkdir -p "$WORK/svc"
if timeout 300 "$PY" "$ROOT/tests/acceptance/confluent_service.py" "127.0.0.1:$PORT" "$WORK/svc"; then
    passed=$((passed + 1))
else
    failed=$((failed + 1))
    tail -n 50 "$WORK/broker.log"
fi
kill -9 "$BROKER" 2>/dev/null || true # scenario 2 runs its own cluster

echo "--- Java client across a leader kill (3-node dev-cluster, idempotent acks=all producer, kill -9 of a leader)"
CDIR="$WORK/cluster"
mkdir -p "$CDIR"
JCLASSES="$ROOT/.cache/compat/acceptance-java-classes"
mkdir -p "$JCLASSES"
# a base port P with P, P+1 (node 1), P+100, P+101 (node 2), P+200, P+201 (node 3) free
BASE="$(python3 - <<'EOF'
import random, socket
for _ in range(200):
    p = random.randrange(20000, 60000)
    socks = []
    try:
        for port in (p, p + 1, p + 100, p + 101, p + 200, p + 201):
            s = socket.socket()
            socks.append(s)
            s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        for s in socks:
            s.close()
    print(p)
    break
EOF
)"
java_ok=0
if ! javac -nowarn -cp "$JLIB/*" -d "$JCLASSES" "$ROOT/tests/acceptance/JavaFailover.java" \
        "$ROOT/tests/compat/clients/StaticLoggerBinder.java"; then
    echo "javac failed"
elif [ -z "$BASE" ]; then
    echo "no free base port found"
else
    NO_COLOR=1 "$STROM" dev-cluster --nodes 3 --data-dir "$CDIR" --base-port "$BASE" \
        -o broker.session.timeout.ms=2000 -o broker.heartbeat.interval.ms=250 \
        -o replica.lag.time.max.ms=2000 -o controller.quorum.election.timeout.ms=500 \
        >"$WORK/dev-cluster.log" 2>&1 &
    CLUSTER=$!
    disown "$CLUSTER"
    up=0
    deadline=$((SECONDS + 60))
    while [ $SECONDS -lt $deadline ] && kill -0 "$CLUSTER" 2>/dev/null; do
        up=1
        for port in "$BASE" $((BASE + 100)) $((BASE + 200)); do
            (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { up=0; break; }
        done
        [ $up = 1 ] && break
        sleep 0.2
    done
    BOOT="127.0.0.1:$BASE,127.0.0.1:$((BASE + 100)),127.0.0.1:$((BASE + 200))"
    # kills -9 node <id> of this cluster (the id is appended); exits non-zero if there was no such process
    KILL_CMD="kill_node() { pkill -9 -f -- \"serve --node-id \$1 --log-dirs $CDIR/node-\$1 \"; }; kill_node"
    if [ $up = 0 ]; then
        echo "dev-cluster did not accept connections on $BOOT within 60 s"
        cat "$WORK/dev-cluster.log"
    elif timeout 300 java -cp "$JCLASSES:$JLIB/*" JavaFailover "$BOOT" failover-orders "$KILL_CMD" \
            2>"$WORK/java-failover.err"; then
        java_ok=1
    else
        echo "----- last 30 lines of the Java client's stderr -----"
        tail -n 30 "$WORK/java-failover.err"
    fi
fi
if [ $java_ok = 1 ]; then
    passed=$((passed + 1))
else
    failed=$((failed + 1))
    for n in 1 2 3; do
        [ -f "$CDIR/node-$n.log" ] || continue
        echo "----- last 40 lines of $CDIR/node-$n.log -----"
        tail -n 40 "$CDIR/node-$n.log" | sed 's/\x1b\[[0-9;]*m//g'
    done
fi
stop_cluster

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
