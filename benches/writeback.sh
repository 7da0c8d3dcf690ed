#!/usr/bin/env bash
# End-to-end latency tails and kernel writeback: a fresh broker takes a 300 MB burst, then three
# back-to-back 10 s `strom-load e2e` runs at 5,000 records/s (linger.ms=0, new topic each). The
# kernel writes the burst back ~30 s after it was written, i.e. during the third run. Each run
# also prints how long the broker itself took per Produce request in that window (the
# difference of `kafka_network_requestmetrics_totaltimems` before and after it).
# Load tool pinned to CPU 0, broker to CPU 1. Needs the release binaries:
#   cargo build --release --bin strom -p strom && cargo build --release -p strom-benches --bin strom-load
# Usage: bash benches/writeback.sh [acks (all|1)] [trials]
set -u
cd "$(dirname "$0")/.." || exit 1
ACKS=${1:-all}; TRIALS=${2:-2}
D=$(mktemp -d /tmp/writeback.XXXX); PORT=19399; ADMIN=19944
L=./target/release/strom-load
produce_times() {
    curl -s "127.0.0.1:$ADMIN/metrics" | grep -E 'totaltimems_bucket\{request="Produce"' |
        sed -E 's/.*le="([^"]+)"\} ([0-9]+)/\1 \2/'
}
for trial in $(seq 1 "$TRIALS"); do
    rm -rf "$D/data"
    taskset -c 1 ./target/release/strom serve --log-dirs "$D/data" \
        --listeners "PLAINTEXT://127.0.0.1:$PORT" --advertised-listeners "PLAINTEXT://127.0.0.1:$PORT" \
        -o "admin.listener=127.0.0.1:$ADMIN" >"$D/strom-$trial.log" 2>&1 &
    P=$!
    sleep 1
    for i in 1 2 3 4 5; do
        $L produce --bootstrap 127.0.0.1:$PORT --topic fill$i --partitions 3 --count 60000 --acks 1 --quiet >/dev/null 2>&1
    done
    for run in 1 2 3; do
        produce_times >"$D/before"
        taskset -c 0 $L e2e --bootstrap 127.0.0.1:$PORT --topic after$run --partitions 3 --rate 5000 \
            --duration-secs 10 --linger-ms 0 --acks "$ACKS" --quiet 2>&1 | tail -1 |
            python3 -c "import json,sys; d=json.load(sys.stdin); print(f\"trial $trial run $run (starts {($run-1)*11} s after the burst) acks=$ACKS: e2e p50 {d['latency_p50_ms']} p99 {d['latency_p99_ms']} p99.9 {d['latency_p999_ms']} max {d['latency_max_ms']} ms; ack p99 {d['ack_latency_p99_ms']} max {d['ack_latency_max_ms']} ms\")"
        produce_times >"$D/after"
        join "$D/before" "$D/after" | awk '{ d = $3 - $2; if ($1 == "+Inf") total = d; else c[$1] = d }
            END { printf "    broker Produce time: <=1 ms %d, <=25 ms %d, >25 ms %d of %d\n", c["1"], c["25"], total - c["25"], total }'
    done
    kill -TERM $P; wait $P
done
rm -rf "$D"
