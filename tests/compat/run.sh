#!/usr/bin/env bash
# Stock-client compatibility run against a Strom broker.
#
# usage: tests/compat/run.sh [path-to-strom-binary]      (default: target/release/strom)
#
# 1. installs the clients (tests/compat/install.sh; cached under .cache/compat/)
# 2. starts the broker on a free port with a fresh temp data dir (and
#    --override group.initial.rebalance.delay.ms=0, for the group scenario)
# 3. `produce` with every client (kcat, confluent, kafka-python, java): 5 topics each
#    (one per codec none/gzip/snappy/lz4/zstd), 10,000 records per topic, then reads them back
# 4. kill -9 the broker, restarts it on the same port and data dir
# 5. `verify` with every client: everything produced in step 3 must still be there, intact
# Consumer-group scenario ("groups"; kcat, confluent, kafka-python, java, aiokafka, kafkajs, sarama),
# against the same broker, started with group.initial.rebalance.delay.ms=0:
# 3b. `groups-produce`: create grp-<client> (3 partitions), idempotent produce of 1,000 keyed records
#     with acks=all
# 3c. `groups-consume`: 3 consumers of that client in group grp-<client>-g joining one by one (each
#     waits for the rebalance to settle), processing records and committing offsets synchronously
#     after each batch; every event goes to .cache/compat/last-run/<client>-<mode>.events, which
#     clients/group_check.py then checks (one owner per partition after each rebalance, every
#     record consumed, none again once committed, committed offsets = end offsets)
# 5b. after the kill -9 restart, `groups-resume`: produce 100 more records, then ONE new consumer
#     in the same group must read exactly those 100 (resuming from the committed offsets)
# Prints a client x scenario table and a final line "N passed, M failed"; exits non-zero on any
# failure. Logs of the last run (broker and each client) are kept in .cache/compat/last-run/.
#
# env: COMPAT_CLIENTS="kcat confluent kafka-python java aiokafka kafkajs sarama" (subset to run; the
#          codec scenario only exists for the first four)
#      COMPAT_SCENARIOS="codecs groups" (subset to run)
#      COMPAT_CLIENT_TIMEOUT=300 (hard limit in seconds for one client invocation, codec scenario)
#      COMPAT_GROUP_TIMEOUT=90 (hard limit in seconds for one client invocation, groups scenario)
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
CLIENTS=(${COMPAT_CLIENTS:-kcat confluent kafka-python java aiokafka kafkajs sarama})
SCENARIOS=" ${COMPAT_SCENARIOS:-codecs groups} "
CLIENT_TIMEOUT="${COMPAT_CLIENT_TIMEOUT:-300}"
GROUP_TIMEOUT="${COMPAT_GROUP_TIMEOUT:-90}"
export PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
export COMPAT_PY="$PY" NODE_PATH="$CACHE/node_modules"

# clients that have the codec scenario (produce / verify)
CODEC_CLIENTS=()
GROUP_CLIENTS=()
for c in "${CLIENTS[@]}"; do
    case "$c" in
        kcat|confluent|kafka-python|java|aiokafka|kafkajs|sarama) ;;
        *) echo "run.sh: unknown client $c" >&2; exit 2 ;;
    esac
    case "$c" in kcat|confluent|kafka-python|java)
        [[ "$SCENARIOS" == *" codecs "* ]] && CODEC_CLIENTS+=("$c") ;;
    esac
    [[ "$SCENARIOS" == *" groups "* ]] && GROUP_CLIENTS+=("$c")
done
has_client() { [[ " ${CLIENTS[*]} " == *" $1 "* ]]; }

log() { echo "[compat] $*" >&2; }

# ------------------------------------------------------------------ setup
bash "$ROOT/tests/compat/install.sh" || { echo "run.sh: install.sh failed" >&2; exit 2; }

if has_client java; then
    log "compiling JavaClient.java"
    mkdir -p "$CACHE/java-classes"
    javac -nowarn -cp "$CACHE/java-lib/*" -d "$CACHE/java-classes" \
        "$CLIENTS_DIR/JavaClient.java" "$CLIENTS_DIR/JavaGroups.java" "$CLIENTS_DIR/StaticLoggerBinder.java" \
        || { echo "run.sh: javac failed" >&2; exit 2; }
fi
if has_client sarama; then
    log "building sarama_client.go"
    mkdir -p "$CACHE/go-build"
    # (cgo warnings from Debian's DataDog/zstd go to the build log)
    GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE="$CACHE/go-build" \
        go build -o "$CACHE/sarama-client" "$CLIENTS_DIR/sarama_client.go" 2>"$CACHE/go-build.log" \
        || { cat "$CACHE/go-build.log" >&2; echo "run.sh: go build sarama_client.go failed" >&2; exit 2; }
fi

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
        --log-dirs "$DATADIR" --override group.initial.rebalance.delay.ms=0 \
        --override admin.listener=127.0.0.1:0 >>"$BROKER_LOG" 2>&1 &
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

client_cmd() { # <client>: sets CMD
    case "$1" in
        kcat)         CMD=(bash "$CLIENTS_DIR/kcat_client.sh") ;;
        confluent)    CMD=("$PY" "$CLIENTS_DIR/confluent_client.py") ;;
        kafka-python) CMD=("$PY" "$CLIENTS_DIR/kafka_python_client.py") ;;
        aiokafka)     CMD=("$PY" "$CLIENTS_DIR/aiokafka_client.py") ;;
        java)         CMD=(java -cp "$CACHE/java-classes:$CACHE/java-lib/*" JavaClient) ;;
        kafkajs)      CMD=(node "$CLIENTS_DIR/kafkajs_client.js") ;;
        sarama)       CMD=("$CACHE/sarama-client") ;;
        *) echo "unknown client $1" >&2; return 2 ;;
    esac
}

run_client() { # <client> <mode>
    local client="$1" mode="$2" prefix limit
    case "$mode" in
        groups-*) prefix="grp-$client" limit="$GROUP_TIMEOUT" ;;
        *)        prefix="compat-$client" limit="$CLIENT_TIMEOUT" ;;
    esac
    client_cmd "$client" || return 2
    local out="$RUNLOG/$client-$mode.out" err="$RUNLOG/$client-$mode.log" ev="$RUNLOG/$client-$mode.events"
    local rc t0=$SECONDS
    log "$client $mode ..."
    if [ -z "$BROKER_PID" ] || ! kill -0 "$BROKER_PID" 2>/dev/null; then
        echo "$client $mode FAIL broker process is not running (crashed?); client not started" >"$out"
        log "    -> FAIL (broker process is not running)"
        return 1
    fi
    rm -f "$ev"
    COMPAT_EVENTS="$ev" timeout -k 10 "$limit" "${CMD[@]}" "$BOOT" "$prefix" "$mode" >"$out" 2>"$err"
    rc=$?
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
        echo "$client $mode FAIL killed after ${limit}s (hung)" >>"$out"
        log "    $client $mode killed after ${limit}s"
    fi
    local pass=0 what
    case "$mode" in
        produce|verify)
            # pass = exit 0 and one OK line per codec
            local oks
            oks="$(grep -cE "^$client (none|gzip|snappy|lz4|zstd) [0-9]+ OK$" "$out")"
            [ $rc -eq 0 ] && [ "$oks" -eq 5 ] && pass=1
            what="$oks/5 codecs OK" ;;
        groups-produce)
            [ $rc -eq 0 ] && grep -qE "^$client $mode OK" "$out" && pass=1
            what="groups-produce" ;;
        groups-consume|groups-resume)
            # the client writes events; the checker decides (and prints the OK / FAIL lines)
            "$PY" "$CLIENTS_DIR/group_check.py" "${mode#groups-}" "$client" "$ev" >>"$out" 2>>"$err"
            local crc=$?
            [ $rc -eq 0 ] && [ $crc -eq 0 ] && pass=1
            what="checker exit code $crc" ;;
    esac
    sed "s/^/    /" "$out" >&2
    if [ $pass = 1 ]; then
        log "    -> pass ($((SECONDS - t0))s)"
        return 0
    fi
    grep -q " FAIL " "$out" || echo "$client $mode FAIL exit code $rc, no diagnosis printed (see $err)" >>"$out"
    log "    -> FAIL (exit code $rc, $what, $((SECONDS - t0))s; stderr in $err)"
    tail -n 15 "$err" | sed "s/^/      | /" >&2
    return 1
}

declare -A RESULT
for c in "${CLIENTS[@]}"; do
    for ph in produce verify group resume; do RESULT[$c,$ph]=-; done
done
set_result() { # <client> <phase> <command...>
    local c="$1" ph="$2"
    shift 2
    if "$@"; then RESULT[$c,$ph]=pass; else RESULT[$c,$ph]=FAIL; fi
}

# ------------------------------------------------------------------ phase 1: produce, groups
if start_broker; then
    for c in "${CODEC_CLIENTS[@]}"; do
        set_result "$c" produce run_client "$c" produce
    done
    for c in "${GROUP_CLIENTS[@]}"; do
        if run_client "$c" groups-produce; then
            set_result "$c" group run_client "$c" groups-consume
        else
            RESULT[$c,group]=FAIL
        fi
    done
    if [ -n "$BROKER_PID" ] && ! kill -0 "$BROKER_PID" 2>/dev/null; then
        log "broker process died during phase 1 (produce, groups)"
        echo "broker FAIL process died during phase 1 (produce, groups)" >>"$RUNLOG/broker.out"
    fi
else
    for c in "${CODEC_CLIENTS[@]}"; do RESULT[$c,produce]=FAIL; done
    for c in "${GROUP_CLIENTS[@]}"; do RESULT[$c,group]=FAIL; done
fi

# ------------------------------------------------------------------ phase 2: kill -9, restart, verify, resume
log "kill -9 broker (pid ${BROKER_PID:-none})"
stop_broker
if start_broker; then
    for c in "${CODEC_CLIENTS[@]}"; do
        set_result "$c" verify run_client "$c" verify
    done
    for c in "${GROUP_CLIENTS[@]}"; do
        set_result "$c" resume run_client "$c" groups-resume
    done
    if [ -n "$BROKER_PID" ] && ! kill -0 "$BROKER_PID" 2>/dev/null; then
        log "broker process died during phase 2 (verify, resume)"
        echo "broker FAIL process died during phase 2 (verify, resume)" >>"$RUNLOG/broker.out"
    fi
else
    log "broker did not restart after kill -9"
    for c in "${CODEC_CLIENTS[@]}"; do RESULT[$c,verify]=FAIL; done
    for c in "${GROUP_CLIENTS[@]}"; do RESULT[$c,resume]=FAIL; done
fi

# ------------------------------------------------------------------ report
PASSED=0 FAILED=0
echo
printf '%-14s %-9s %-20s %-7s %s\n' client produce verify-after-kill-9 group resume-after-kill-9
for c in "${CLIENTS[@]}"; do
    printf '%-14s %-9s %-20s %-7s %s\n' "$c" "${RESULT[$c,produce]}" "${RESULT[$c,verify]}" \
        "${RESULT[$c,group]}" "${RESULT[$c,resume]}"
    for ph in produce verify group resume; do
        case "${RESULT[$c,$ph]}" in
            pass) PASSED=$((PASSED + 1)) ;;
            FAIL) FAILED=$((FAILED + 1)) ;;
        esac
    done
done
if [ -n "${GROUP_CLIENTS[*]}" ]; then
    echo "(- = not run for this client. groups: kcat = 3 'kcat -G' processes, librdkafka auto-commit (kcat has no"
    echo " manual commit), topic created and committed offsets read with kafka-python (kcat has no admin API);"
    echo " sarama commits with a synchronous OffsetCommit v1 (its own default) to the coordinator (1.22 has no sync commit))"
fi
# The README's compatibility table must say what this run measured (full runs only).
if [ -z "${COMPAT_CLIENTS:-}" ] && [ -z "${COMPAT_SCENARIOS:-}" ]; then
    measured="$(for c in "${CLIENTS[@]}"; do
        echo "| $c | ${RESULT[$c,produce]} | ${RESULT[$c,verify]} | ${RESULT[$c,group]} | ${RESULT[$c,resume]} |"
    done)"
    documented="$(sed -n '/<!-- compat:start -->/,/<!-- compat:end -->/p' "$ROOT/README.md" | grep -E '^\| [a-z]' | grep -v '^| client ')"
    if [ "$measured" = "$documented" ]; then
        echo "README compatibility table matches this run"
    else
        echo "README compatibility table disagrees with this run:"
        diff <(echo "$documented") <(echo "$measured") | sed 's/^/  /'
        FAILED=$((FAILED + 1))
    fi
fi
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
