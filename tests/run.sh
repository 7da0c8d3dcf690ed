#!/usr/bin/env bash
# Strom's whole test suite, exactly as CI runs it (.ci/run calls this):
#   bash tests/run.sh
# It installs what the tests need (Debian packages incl. iptables, the Python clients, the Java
# client jars),
# checks formatting and lints, runs every Rust test (unit, storage, black-box with librdkafka),
# then the stock-client compatibility suite against a real strom binary, the acceptance
# scenarios, the offline validation of the Kubernetes manifests (tests/k8s/run.sh), and a short
# schedule of the Jepsen-style fault suite (tests/jepsen/run.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== %s\n' "$*"; }

step "toolchain"
cargo --version
# A one-shot CI build gains nothing from incremental caches, which are the largest part of a
# test build's target/ (a full disk makes the linker die with SIGBUS).
if [ -n "${CI:-}" ]; then export CARGO_INCREMENTAL=0; fi
df -h . | tail -n 1 | awk '{print "disk: " $4 " free on " $6}'
rustup component add rustfmt clippy >/dev/null 2>&1 || true

step "format"
cargo fmt --all -- --check

step "lint"
cargo clippy --workspace --all-targets -- -D warnings

step "build"
cargo build --bin strom

step "system packages"
# The cluster tests cut nodes off from each other with iptables (they run as root, as CI does).
if ! command -v iptables >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq iptables >/dev/null
fi
iptables --version

step "rust tests"
cargo test --workspace

step "stock clients"
bash tests/compat/run.sh target/debug/strom

step "acceptance scenarios"
bash tests/acceptance/run.sh target/debug/strom

step "kubernetes manifests"
bash tests/k8s/run.sh target/debug/strom

step "fault suite"
# A short mixed schedule (every fault kind at least once), replaying a seed whose schedule
# passes, so that a red CI means a regression; new seeds and the long runs are in the README.
STROM_BIN="$PWD/target/debug/strom" bash tests/jepsen/run.sh --seconds 180 --seed 51404831
