#!/usr/bin/env bash
# Runs the acceptance scenarios that need a live broker and the Python clients installed by
# tests/compat/install.sh:  tests/acceptance/run.sh [path-to-strom]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STROM="${1:-$ROOT/target/debug/strom}"
PY="$ROOT/.cache/compat/venv/bin/python"
[ -x "$PY" ] || bash "$ROOT/tests/compat/install.sh"
WORK="$(mktemp -d)"
PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$STROM" --listeners "PLAINTEXT://127.0.0.1:$PORT" --advertised-listeners "PLAINTEXT://127.0.0.1:$PORT" \
    --log-dirs "$WORK/data" --override group.initial.rebalance.delay.ms=0 >"$WORK/broker.log" 2>&1 &
BROKER=$!
disown "$BROKER" # no job-control chatter when it is killed at exit
trap 'kill -9 $BROKER 2>/dev/null; rm -rf "$WORK"' EXIT
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
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
