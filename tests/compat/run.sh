#!/usr/bin/env bash
# Stock-client compatibility run against a Strom broker.
#
# usage: tests/compat/run.sh [path-to-strom-binary]      (default: target/release/strom)
#
# 1. installs the clients (tests/compat/install.sh; cached under .cache/compat/)
# 2. starts the broker on a free port with a fresh temp data dir
# 3. `produce` with every client (kcat, confluent, kafka-python, java): 5 topics each
#    (one per codec none/gzip/snappy/lz4/zstd), 10,000 records per topic, then reads them back
# 4. kill -9 the broker, restarts it on the same port and data dir
# 5. `verify` with every client: everything produced in step 3 must still be there, intact
# Prints a client x phase table and a final line "N passed, M failed"; exits non-zero on any failure.
# Logs of the last run (broker and each client) are kept in .cache/compat/last-run/.
#
# env: COMPAT_CLIENTS="kcat confluent kafka-python java" (subset to run)
#      COMPAT_CLIENT_TIMEOUT=300 (hard limit in seconds for one client invocation)
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STROM="${1:-target/release/strom}"
# a relative path is taken relative to the caller's directory if it exists there, else to the repo root
case "$STROM" in
    /*) ;;
    *) if [ -n "${1:-}" ] && [ -e "$STROM" ]; then STROM="$(pwd)/$STROM"; else STROM="$ROOT/$STROM"; fi ;;
esac
cd "$ROOT" || exit 2
if [ ! -x "$STROM" ]; then
    echo "run.sh: broker binary $STROM not found or not executable (build it first: cargo build --release)" >&2
    exit 2
fi

CACHE="$ROOT/.cache/compat"
CLIENTS_DIR="$ROOT/tests/compat/clients"
PY="$CACHE/venv/bin/python"
CLIENTS=(${COMPAT_CLIENTS:-kcat confluent kafka-python java})
CLIENT_TIMEOUT="${COMPAT_CLIENT_TIMEOUT:-300}"
export PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1

log() { echo "[compat] $*" >&2; }

# ------------------------------------------------------------------ setup
bash "$ROOT/tests/compat/install.sh" || { echo "run.sh: install.sh failed" >&2; exit 2; }

log "compiling JavaClient.java"
mkdir -p "$CACHE/java-classes"
javac -nowarn -cp "$CACHE/java-lib/*" -d "$CACHE/java-classes" \
    "$CLIENTS_DIR/JavaClient.java" "$CLIENTS_DIR/StaticLoggerBinder.java" \
    || { echo "run.sh: javac failed" >&2; exit 2; }

RUNLOG="$CACHE/last-run"
rm -rf "$RUNLOG"
mkdir -p "$RUNLOG"
BROKER_LOG="$RUNLOG/broker.log"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/strom-compat.XXXXXX")"
DATADIR="$TMP/data"
mkdir -p "$DATADIR"
BROKER_PID=""

stop_broker() {
    if [ -n "$BROKER_PID" ] && kill -0 "$BROKER_PID" 2>/dev/null; then
        kill -9 "$BROKER_PID" 2>/dev/null
        wait "$BROKER_PID" 2>/dev/null
    fi
    BROKER_PID=""
}
cleanup() {
    stop_broker
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
BOOT="127.0.0.1:$PORT"

start_broker() {
    echo "===== [compat] $(date -u +%FT%TZ) starting $STROM on $BOOT (data dir $DATADIR) =====" >>"$BROKER_LOG"
    NO_COLOR=1 "$STROM" --listeners "PLAINTEXT://$BOOT" --advertised-listeners "PLAINTEXT://$BOOT" \
        --log-dirs "$DATADIR" >>"$BROKER_LOG" 2>&1 &
    BROKER_PID=$!
    local deadline=$((SECONDS + 30))
    while ! (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do
        if ! kill -0 "$BROKER_PID" 2>/dev/null; then
            wait "$BROKER_PID"
            local st=$?
            log "broker exited with status $st before accepting connections"
            echo "broker FAIL exited with status $st before accepting connections" >>"$RUNLOG/broker.out"
            BROKER_PID=""
            return 1
        fi
        if [ $SECONDS -ge $deadline ]; then
            log "broker did not accept connections on $BOOT within 30s"
            echo "broker FAIL did not accept connections on $BOOT within 30s" >>"$RUNLOG/broker.out"
            return 1
        fi
        sleep 0.2
    done
    log "broker pid $BROKER_PID accepting connections on $BOOT"
}

run_client() { # <client> <mode>
    local client="$1" mode="$2" prefix="compat-$1"
    local cmd
    case "$client" in
        kcat)         cmd=(bash "$CLIENTS_DIR/kcat_client.sh") ;;
        confluent)    cmd=("$PY" "$CLIENTS_DIR/confluent_client.py") ;;
        kafka-python) cmd=("$PY" "$CLIENTS_DIR/kafka_python_client.py") ;;
        java)         cmd=(java -cp "$CACHE/java-classes:$CACHE/java-lib/*" JavaClient) ;;
        *) echo "unknown client $client" >&2; return 2 ;;
    esac
    local out="$RUNLOG/$client-$mode.out" err="$RUNLOG/$client-$mode.log" rc t0=$SECONDS
    log "$client $mode ..."
    if [ -z "$BROKER_PID" ] || ! kill -0 "$BROKER_PID" 2>/dev/null; then
        echo "$client all FAIL broker process is not running (crashed?); client not started" >"$out"
        log "    -> FAIL (broker process is not running)"
        return 1
    fi
    timeout -k 10 "$CLIENT_TIMEOUT" "${cmd[@]}" "$BOOT" "$prefix" "$mode" >"$out" 2>"$err"
    rc=$?
    sed "s/^/    /" "$out" >&2
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
        echo "$client all FAIL killed after ${CLIENT_TIMEOUT}s (hung)" >>"$out"
        log "    $client $mode killed after ${CLIENT_TIMEOUT}s"
    fi
    # pass = exit 0 and one OK line per codec
    local oks
    oks="$(grep -cE "^$client (none|gzip|snappy|lz4|zstd) [0-9]+ OK$" "$out")"
    if [ $rc -eq 0 ] && [ "$oks" -eq 5 ]; then
        log "    -> pass ($((SECONDS - t0))s)"
        return 0
    fi
    log "    -> FAIL (exit code $rc, $oks/5 codecs OK, $((SECONDS - t0))s; stderr in $err)"
    tail -n 15 "$err" | sed "s/^/      | /" >&2
    return 1
}

declare -A RESULT
PHASES=(produce verify)

# ------------------------------------------------------------------ phase 1: produce
if start_broker; then
    for c in "${CLIENTS[@]}"; do
        if run_client "$c" produce; then RESULT[$c,produce]=pass; else RESULT[$c,produce]=FAIL; fi
    done
    if [ -n "$BROKER_PID" ] && ! kill -0 "$BROKER_PID" 2>/dev/null; then
        log "broker process died during the produce phase"
        echo "broker FAIL process died during the produce phase" >>"$RUNLOG/broker.out"
    fi
else
    for c in "${CLIENTS[@]}"; do RESULT[$c,produce]=FAIL; done
fi

# ------------------------------------------------------------------ phase 2: kill -9, restart, verify
log "kill -9 broker (pid ${BROKER_PID:-none})"
stop_broker
if start_broker; then
    for c in "${CLIENTS[@]}"; do
        if run_client "$c" verify; then RESULT[$c,verify]=pass; else RESULT[$c,verify]=FAIL; fi
    done
else
    log "broker did not restart after kill -9"
    for c in "${CLIENTS[@]}"; do RESULT[$c,verify]=FAIL; done
fi

# ------------------------------------------------------------------ report
PASSED=0 FAILED=0
echo
printf '%-14s %-9s %s\n' client produce verify-after-kill-9
for c in "${CLIENTS[@]}"; do
    printf '%-14s %-9s %s\n' "$c" "${RESULT[$c,produce]}" "${RESULT[$c,verify]}"
    for ph in "${PHASES[@]}"; do
        if [ "${RESULT[$c,$ph]}" = pass ]; then PASSED=$((PASSED + 1)); else FAILED=$((FAILED + 1)); fi
    done
done
echo
if [ "$FAILED" -gt 0 ]; then
    echo "FAIL lines:"
    cat "$RUNLOG"/*.out 2>/dev/null | grep ' FAIL ' | sed 's/^/  /'
    echo
    echo "----- last 50 lines of broker log ($BROKER_LOG) -----"
    tail -n 50 "$BROKER_LOG" | sed 's/\x1b\[[0-9;]*m//g'
    echo "-----"
    echo
fi
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
