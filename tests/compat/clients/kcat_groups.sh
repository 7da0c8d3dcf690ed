#!/usr/bin/env bash
# kcat (librdkafka 2.0.2) consumer-group scenario (see group_check.py for the event log format).
#
# usage: kcat_groups.sh <bootstrap host:port> <topic> groups-produce|groups-consume|groups-resume
# env:   COMPAT_EVENTS (event log), COMPAT_PY (the venv's python, for the helpers below)
#
# kcat has no admin API and no manual commit, so as far as kcat can:
# groups-produce: <topic> (3 partitions) is created with kafka-python's admin client (CreateTopics);
#                 kcat -P -K produces keys k-0..k-999 with enable.idempotence=true, acks=all
#                 (librdkafka's default partitioner); end offsets checked with kcat -Q.
# groups-consume: 3 `kcat -G <topic>-g <topic>` processes (balanced consumer) started one by one,
#                 each waiting for the rebalance to settle (rebalance lines kcat prints on stderr
#                 become assign/revoke events, its output lines become rec events); offsets are
#                 committed by librdkafka's auto-commit (every 200 ms, on revoke and on close after
#                 SIGTERM), so the log has no commit events. Committed offsets are read afterwards
#                 with kafka-python (OffsetFetch).
# groups-resume:  kcat -P k-1000..k-1099, then ONE new kcat -G in the group must read exactly those.
set -uo pipefail

if [ $# -ne 3 ]; then
    echo "usage: $0 <bootstrap host:port> <topic> groups-produce|groups-consume|groups-resume" >&2
    exit 2
fi
BOOT="$1" TOPIC="$2" MODE="$3"
GROUP="$TOPIC-g"
CLIENT=kcat
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="${COMPAT_PY:-$HERE/../../../.cache/compat/venv/bin/python}"
EV="${COMPAT_EVENTS:-}"
PARTITIONS=3 N_FIRST=1000 N_MORE=100
STEP_TIMEOUT=60 STAGE_TIMEOUT=20 CONSUME_TIMEOUT=30
COMMON=(-b "$BOOT" -X socket.timeout.ms=30000 -X reconnect.backoff.max.ms=1000)
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null; done
    rm -rf "$WORK"
}
trap cleanup EXIT

fail() { echo "$CLIENT $MODE FAIL $(echo "$*" | tr '\n\t' '  ')"; exit 1; }
event() { echo "$*" >>"$EV"; }

# end_offsets: prints "<p> <end offset>" lines (ListOffsets latest, via kcat -Q)
end_offsets() {
    local args=() p out
    for ((p = 0; p < PARTITIONS; p++)); do args+=(-t "$TOPIC:$p:-1"); done
    out="$(timeout -k 5 "$STEP_TIMEOUT" kcat -Q "${COMMON[@]}" "${args[@]}" 2>&1)" || {
        echo "kcat -Q failed: $out" >&2
        return 1
    }
    printf '%s\n' "$out" | sed -n "s/^$TOPIC \[\([0-9]*\)\] offset \([0-9-]*\)$/\1 \2/p" | sort -n
}

produce() { # <first> <count>
    local first="$1" count="$2" before after rc
    before="$(end_offsets)" || fail "end offsets before producing: $(end_offsets 2>&1)"
    awk -v f="$first" -v n="$count" 'BEGIN { for (i = f; i < f + n; i++) printf "k-%d\tg-%d\n", i, i }' >"$WORK/in"
    timeout -k 5 $((STEP_TIMEOUT + 30)) kcat -P "${COMMON[@]}" -t "$TOPIC" -K '\t' \
        -X enable.idempotence=true -X acks=all -X message.timeout.ms=$((STEP_TIMEOUT * 1000)) \
        <"$WORK/in" 2>"$WORK/produce.err"
    rc=$?
    cat "$WORK/produce.err" >&2
    [ $rc -eq 0 ] || fail "kcat -P exit code $rc$([ $rc -eq 124 ] && echo ', timed out'): $(tail -n 5 "$WORK/produce.err")"
    after="$(end_offsets)" || fail "end offsets after producing failed"
    # per-partition growth; must sum to count
    PER_P="$(join <(echo "$before") <(echo "$after") | awk '{ printf "%s%d:%d", (NR > 1 ? " " : ""), $1, $3 - $2 }')"
    local total
    total="$(join <(echo "$before") <(echo "$after") | awk '{ t += $3 - $2 } END { print t + 0 }')"
    [ "$(echo "$after" | wc -l)" -eq "$PARTITIONS" ] || fail "end offsets for $(echo "$after" | wc -l) partitions: $after"
    [ "$total" -eq "$count" ] || fail "end offsets grew by $total ($PER_P), produced $count"
}

# rebalance_events <member>: kcat's stderr -> assign/revoke events (and a copy in $WORK/<m>.err).
# Lines like "% Group G rebalanced (memberid M): assigned: topic [0], topic [2]". One echo per
# event on an O_APPEND descriptor: lines from concurrent writers do not interleave.
rebalance_events() {
    local m="$1" line what rest parts
    while IFS= read -r line; do
        printf '%s\n' "$line" >>"$WORK/$m.err"
        case "$line" in
            *rebalanced*assigned:*) what=assign ;;
            *rebalanced*revoked:*) what=revoke ;;
            *) continue ;;
        esac
        rest="${line##*ed: }" parts=""
        while [[ "$rest" =~ \[([0-9]+)\] ]]; do
            parts="$parts${parts:+,}${BASH_REMATCH[1]}"
            rest="${rest#*"${BASH_REMATCH[0]}"}"
        done
        if [ $what = assign ]; then echo "assign $m - ${parts:--}"; else echo "revoke $m ${parts:--}"; fi
    done >>"$EV"
}

# record_events <member>: kcat's output ("<p> <o> k-<i>") -> rec events
record_events() {
    local m="$1" p o k
    while read -r p o k; do echo "rec $m $p $o ${k#k-}"; done >>"$EV"
}

# start_member <name>: kcat -G in the background (-u: unbuffered output), its output and rebalance
# lines turned into events as they come
start_member() {
    local m="$1"
    kcat "${COMMON[@]}" -G "$GROUP" -u -f '%p %o %k\n' \
        -X auto.offset.reset=earliest -X enable.auto.commit=true -X auto.commit.interval.ms=200 \
        -X heartbeat.interval.ms=500 -X session.timeout.ms=10000 -X client.id="compat-kcat-$m" \
        "$TOPIC" > >(record_events "$m") 2> >(rebalance_events "$m") &
    PIDS+=($!)
    MEMBER_PID[$m]=$!
}

stop_member() { # <name>: SIGTERM (kcat commits and leaves the group), bounded wait
    local m="$1" pid="${MEMBER_PID[$1]}" t=0
    kill -TERM "$pid" 2>/dev/null
    while kill -0 "$pid" 2>/dev/null; do
        if [ $t -ge 200 ]; then
            event "error member $m (kcat pid $pid) did not exit within 20s of SIGTERM"
            kill -9 "$pid" 2>/dev/null
            break
        fi
        sleep 0.1
        t=$((t + 1))
    done
    wait "$pid" 2>/dev/null
    event "revoke $m *"   # processes nothing from here on
}

consume() { # <first key> <count> <member names...>
    local first="$1" count="$2" k=0 m t0 own ok=1
    shift 2
    declare -gA MEMBER_PID=()
    event "strict 0"   # kcat's output and rebalance lines come through separate pipes
    end_offsets >"$WORK/ends" || fail "end offsets failed"
    while read -r p o; do event "end $p $o"; done <"$WORK/ends"
    local started=()
    for m in "$@"; do
        k=$((k + 1))
        start_member "$m"
        started+=("$m")
        t0=$SECONDS
        until own="$("$PY" "$HERE/group_check.py" stage "$k" "$EV")"; do
            if [ $((SECONDS - t0)) -ge "$STAGE_TIMEOUT" ]; then
                event "error stage $k ($k members owning disjoint partitions covering all $PARTITIONS) not reached within ${STAGE_TIMEOUT}s; ownership $own; kcat $m stderr: $(tail -n 3 "$WORK/$m.err" | tr '\n' ' ')"
                ok=0
                break 2
            fi
            sleep 0.2
        done
        event "stage $k"
        echo "$CLIENT: stage $k reached $((SECONDS - t0))s after starting $m" >&2
    done
    if [ $ok = 1 ]; then
        t0=$SECONDS
        until "$PY" "$HERE/group_check.py" seen "$first" "$count" "$EV" >"$WORK/seen"; do
            if [ $((SECONDS - t0)) -ge "$CONSUME_TIMEOUT" ]; then
                event "error not everything consumed within ${CONSUME_TIMEOUT}s of the last rebalance: $(cat "$WORK/seen")"
                break
            fi
            sleep 0.2
        done
        sleep 1   # a few auto-commit intervals (kcat also commits on close)
    fi
    local i
    for ((i = ${#started[@]} - 1; i >= 0; i--)); do stop_member "${started[$i]}"; done
    sleep 0.3   # let the event pipes drain
    timeout -k 5 "$STEP_TIMEOUT" "$PY" "$HERE/kafka_python_client.py" "$BOOT" "$TOPIC" groups-committed >"$WORK/final" 2>"$WORK/final.err" \
        || event "error reading committed offsets with kafka-python: $(tail -n 3 "$WORK/final.err" | tr '\n' ' ')"
    cat "$WORK/final" >>"$EV"
    for m in "${started[@]}"; do
        grep -iE 'error|fail' "$WORK/$m.err" | sed "s/^/kcat $m: /" >&2
    done
    return 0
}

[ -n "$EV" ] || [ "$MODE" = groups-produce ] || fail "COMPAT_EVENTS not set"
case "$MODE" in
    groups-produce)
        out="$(timeout -k 5 $((STEP_TIMEOUT + 10)) "$PY" "$HERE/kafka_python_client.py" "$BOOT" "$TOPIC" groups-create 2>&1)" \
            || fail "create topic $TOPIC with kafka-python's admin client: $out"
        produce 0 "$N_FIRST"
        [ "$(echo "$PER_P" | grep -c ':0\b')" -eq 0 ] || fail "records landed in partitions $PER_P only"
        echo "$CLIENT $MODE OK $N_FIRST records, per partition $PER_P (topic created with kafka-python)"
        ;;
    groups-consume)
        consume 0 "$N_FIRST" c1 c2 c3
        ;;
    groups-resume)
        produce "$N_FIRST" "$N_MORE"
        consume "$N_FIRST" "$N_MORE" r1
        ;;
    *)
        echo "usage: $0 <bootstrap host:port> <topic> groups-produce|groups-consume|groups-resume" >&2
        exit 2
        ;;
esac
exit 0
