#!/usr/bin/env bash
# Restart time with ~10 GB on disk, clean (SIGTERM) and after kill -9. Needs ~12 GB in /tmp and
# the release binaries: cargo build --release --bin strom -p strom && cargo build --release -p strom-benches --bin strom-load
set -u
cd "$(dirname "$0")/.." || exit 1
D=$(mktemp -d /tmp/r10g.XXXX); PORT=19299
S=(./target/release/strom --log-dirs "$D/data" --listeners "PLAINTEXT://127.0.0.1:$PORT" --advertised-listeners "PLAINTEXT://127.0.0.1:$PORT")
wait_port() { local t0=$1; while ! (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null; do sleep 0.002; done; echo $(( ($(date +%s%N) - t0) / 1000000 )); }
"${S[@]}" > "$D/1.log" 2>&1 & P=$!
wait_port "$(date +%s%N)" >/dev/null
./target/release/strom-load produce --bootstrap 127.0.0.1:$PORT --topic big --partitions 3 --acks 1 --count 10485760 --quiet | tail -3 | head -2
du -sh "$D/data"
kill -TERM $P; wait $P
T=$(date +%s%N); "${S[@]}" > "$D/2.log" 2>&1 & P=$!
echo "clean restart to port open: $(wait_port "$T") ms"
kill -9 $P; wait $P 2>/dev/null
T=$(date +%s%N); "${S[@]}" > "$D/3.log" 2>&1 & P=$!
echo "restart after kill -9 (recovery from the last recovery point) to port open: $(wait_port "$T") ms"
kill -TERM $P; wait $P
rm -rf "$D"
