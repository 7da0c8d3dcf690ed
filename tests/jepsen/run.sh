#!/usr/bin/env bash
# Strom's Jepsen-style fault suite (see tests/jepsen/README.md):
#
#   bash tests/jepsen/run.sh [--seconds N | --minutes N] [--nodes 3|5] [--seed N] [--faults kill,pause,...]
#
# Must run as root (network namespaces, iptables, tmpfs mounts, strace). Installs what it
# needs when missing (Debian: iproute2, iptables, faketime, strace; a venv under
# .cache/jepsen/ with matplotlib for the timeline plot), builds `strom` and `strom-jepsen`
# (debug, like the rest of the suite; STROM_BIN names another strom binary), runs the suite and
# exits with its status: 0 no anomaly and the run worked, 1 anomalies found, 2 harness failure.
# Without a duration it runs the CI default: 180 s of mixed faults. Every other argument goes
# to strom-jepsen as it is (`--help` lists them).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT" || exit 2
CACHE="$ROOT/.cache/jepsen"
VENV="$CACHE/venv"
# Pinned so a plot looks the same on every machine.
MATPLOTLIB="matplotlib==3.10.7"

log() { echo "[jepsen] $*" >&2; }
die() { echo "[jepsen] $*" >&2; exit 2; }

[ "$(id -u)" = 0 ] || die "must run as root (network namespaces, iptables, tmpfs mounts, strace)"

# ------------------------------------------------------------------ system packages
missing=()
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
command -v strace >/dev/null 2>&1 || missing+=(strace)
ls /usr/lib/*/faketime/libfaketimeMT.so.1 >/dev/null 2>&1 || missing+=(faketime libfaketime)
if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    missing+=(python3 python3-venv)
fi
if [ "${#missing[@]}" -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    apt-get update -qq || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
        || die "apt-get install ${missing[*]} failed"
fi

# ------------------------------------------------------------------ plot venv
if ! "$VENV/bin/python" -c 'import matplotlib' >/dev/null 2>&1; then
    log "creating $VENV with $MATPLOTLIB"
    rm -rf "$VENV"
    mkdir -p "$CACHE"
    python3 -m venv "$VENV" || die "python3 -m venv failed"
    "$VENV/bin/pip" install -q --disable-pip-version-check --cache-dir "$CACHE/pip-cache" "$MATPLOTLIB" \
        || die "pip install $MATPLOTLIB failed"
fi

# ------------------------------------------------------------------ build
if [ -n "${CI:-}" ]; then export CARGO_INCREMENTAL=0; fi
if [ -z "${STROM_BIN:-}" ]; then
    log "cargo build --bin strom"
    cargo build -q --bin strom || die "cargo build --bin strom failed"
    STROM_BIN="$ROOT/target/debug/strom"
fi
export STROM_BIN
log "cargo build -p strom-tests --bin strom-jepsen"
cargo build -q -p strom-tests --bin strom-jepsen || die "cargo build --bin strom-jepsen failed"

# ------------------------------------------------------------------ run
args=("$@")
if [[ " $* " != *" --seconds "* && " $* " != *" --minutes "* && " $* " != *" --help "* && " $* " != *" -h "* ]]; then
    args+=(--seconds 180)
fi

# A backstop should the program itself be killed: its namespaces, bridge, mounts and nodes.
backstop() {
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^strjep-n'); do
        ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null
        ip netns del "$ns" 2>/dev/null
    done
    ip link show strjep0 >/dev/null 2>&1 && ip link del strjep0 2>/dev/null
    awk '$1 ~ /^strjep-n/ && $3 == "tmpfs" {print $2}' /proc/mounts | while read -r m; do umount -l "$m"; done
    return 0
}

"$ROOT/target/debug/strom-jepsen" --plot-python "$VENV/bin/python" "${args[@]}" &
pid=$!
trap 'kill -INT "$pid" 2>/dev/null' INT TERM
wait "$pid"
rc=$?
# `wait` returns early when a trapped signal arrives: wait for the program to clean up.
while kill -0 "$pid" 2>/dev/null; do wait "$pid"; rc=$?; done
trap - INT TERM
backstop
exit "$rc"
