#!/usr/bin/env bash
# kcat (librdkafka) compatibility client.
#
# usage: kcat_client.sh <bootstrap host:port> <topic-prefix> produce|verify
#
# produce: for each codec, let the broker auto-create <prefix>-<codec> (kcat has no admin API;
#          a Metadata request with allow_auto_topic_creation does it), read its partition count P
#          from metadata, produce N records with acks=all and -z <codec> (record i to partition
#          i % P, one kcat -P -p <p> run per partition), then verify.
# verify:  for each codec and partition, kcat -C -p <p> -o beginning -e (simple consumer, no
#          group), and compare offset/key/value of every record with the expectation.
# groups-*: consumer-group scenario, see kcat_groups.sh.
set -uo pipefail

if [ $# -eq 3 ] && [[ "$3" == groups-* ]]; then
    exec bash "$(dirname "${BASH_SOURCE[0]}")/kcat_groups.sh" "$@"
fi
if [ $# -ne 3 ] || { [ "$3" != produce ] && [ "$3" != verify ]; }; then
    echo "usage: $0 <bootstrap host:port> <topic-prefix> produce|verify" >&2
    echo "       $0 <bootstrap host:port> <topic> groups-produce|groups-consume|groups-resume (kcat_groups.sh)" >&2
    exit 2
fi
BOOT="$1" PREFIX="$2" MODE="$3"
CLIENT=kcat
N=10000
CODECS=(none gzip snappy lz4 zstd)
STEP_TIMEOUT=60
COMMON=(-b "$BOOT" -X socket.timeout.ms=30000 -X reconnect.backoff.max.ms=1000)
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
FAILED=0

ok()   { echo "$CLIENT $1 $2 OK"; }
fail() { echo "$CLIENT $1 FAIL $(echo "$2" | tr '\n\t' '  ')"; FAILED=$((FAILED + 1)); }

# expected <p> <P>: lines "<offset>\tk-<i>\tv-<i>-<pad>" for partition p of P
expected() {
    awk -v p="$1" -v P="$2" -v N="$N" 'BEGIN {
        o = 0
        for (i = p; i < N; i += P) {
            s = sprintf("%05d", i); pad = ""
            for (j = 0; j < 20; j++) pad = pad s
            printf "%d\tk-%d\tv-%d-%s\n", o, i, i, pad
            o++
        }
    }'
}

# input <p> <P>: producer input lines "k-<i>\tv-<i>-<pad>" for partition p of P
input() { expected "$1" "$2" | cut -f2-; }

# partitions <topic> <allow-auto-create> <timeout>: prints the partition count once every
# partition has a leader; retries for up to <timeout> seconds. On failure prints the last
# metadata to stderr.
partitions() {
    local topic="$1" auto="$2" wait="$3" md count leaders
    local deadline=$((SECONDS + wait))
    while :; do
        md="$(timeout -k 5 20 kcat -L "${COMMON[@]}" -t "$topic" -m 10 \
                -X allow.auto.create.topics="$auto" 2>&1)"
        count="$(printf '%s\n' "$md" | sed -n "s/^ *topic \"$topic\" with \([0-9]*\) partitions:.*/\1/p")"
        leaders="$(printf '%s\n' "$md" | grep -cE '^ *partition [0-9]+, leader [0-9]+,' || true)"
        if [ -n "$count" ] && [ "$count" -gt 0 ] && [ "$leaders" = "$count" ]; then
            echo "$count"
            return 0
        fi
        if [ $SECONDS -ge $deadline ]; then
            echo "metadata for $topic not ready after ${wait}s: $(printf '%s' "$md" | tr '\n' ' ')" >&2
            return 1
        fi
        sleep 0.5
    done
}

produce_codec() {
    local codec="$1" topic="$PREFIX-$1" P p rc t0=$SECONDS
    if ! P="$(partitions "$topic" true "$STEP_TIMEOUT" 2>"$WORK/md.err")"; then
        fail "$codec" "auto-create topic $topic: $(cat "$WORK/md.err")"
        return 1
    fi
    for ((p = 0; p < P; p++)); do
        input "$p" "$P" >"$WORK/in"
        timeout -k 5 $((STEP_TIMEOUT + 30)) kcat -P "${COMMON[@]}" -t "$topic" -p "$p" -K '\t' \
            -z "$codec" -X acks=all -X message.timeout.ms=$((STEP_TIMEOUT * 1000)) -m 30 \
            <"$WORK/in" 2>"$WORK/produce.err"
        rc=$?
        if [ $rc -ne 0 ]; then
            fail "$codec" "produce to $topic partition $p (kcat exit code $rc$([ $rc -eq 124 ] && echo ', timed out')): $(tail -n 5 "$WORK/produce.err")"
            cat "$WORK/produce.err" >&2
            return 1
        fi
        cat "$WORK/produce.err" >&2
    done
    echo "$CLIENT: produced $N records to $topic ($P partitions) in $((SECONDS - t0))s" >&2
}

verify_codec() {
    local codec="$1" topic="$PREFIX-$1" P p rc total=0 n first
    if ! P="$(partitions "$topic" false 20 2>"$WORK/md.err")"; then
        fail "$codec" "verify: $(cat "$WORK/md.err")"
        return 1
    fi
    for ((p = 0; p < P; p++)); do
        timeout -k 5 "$STEP_TIMEOUT" kcat -C "${COMMON[@]}" -t "$topic" -p "$p" -o beginning -e \
            -f '%o\t%k\t%s\n' -m 30 -X enable.auto.commit=false >"$WORK/out" 2>"$WORK/consume.err"
        rc=$?
        if [ $rc -ne 0 ]; then
            fail "$codec" "verify: consume $topic partition $p (kcat exit code $rc$([ $rc -eq 124 ] && echo ', timed out after '"$STEP_TIMEOUT"'s'), read $(wc -l <"$WORK/out") records): $(tail -n 5 "$WORK/consume.err")"
            return 1
        fi
        expected "$p" "$P" >"$WORK/exp"
        if ! cmp -s "$WORK/exp" "$WORK/out"; then
            n="$(wc -l <"$WORK/out")"
            first="$(diff "$WORK/exp" "$WORK/out" | grep -E '^[<>]' | head -n 2 | cut -c1-60 | tr '\t\n' ' |')"
            fail "$codec" "verify: partition $p: read $n records (expected $(wc -l <"$WORK/exp")); first difference (< expected, > got; offset key value): $first"
            return 1
        fi
        total=$((total + $(wc -l <"$WORK/out")))
    done
    if [ "$total" -ne "$N" ]; then
        fail "$codec" "verify: read $total records in total, expected $N"
        return 1
    fi
    ok "$codec" "$total"
}

for codec in "${CODECS[@]}"; do
    if [ "$MODE" = produce ]; then
        produce_codec "$codec" || continue
    fi
    verify_codec "$codec"
done
[ "$FAILED" -eq 0 ]
