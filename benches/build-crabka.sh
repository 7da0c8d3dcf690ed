#!/usr/bin/env bash
# Builds the peer broker Crabka 0.3.8 (Rust, on disk, openraft) for benches/compare.sh, into
# .cache/bench/crabka/ (about 12 minutes on 2 cores). Its crates are yanked on crates.io, so it
# is built from the published archives with the broker's own lockfile; the CLI (`crabka format`)
# is added to that lockfile without touching the versions already locked.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$ROOT/.cache/bench/crabka
W=$(mktemp -d "${TMPDIR:-/tmp}/crabka-build.XXXXXX")
trap 'rm -rf "$W"' EXIT
cd "$W"
CARGO_HOME=${CARGO_HOME:-$HOME/.cargo}
DL=$(python3 -c 'import json,glob,sys;print(json.load(open(glob.glob(sys.argv[1]+"/registry/index/*/config.json")[0]))["dl"])' "$CARGO_HOME")
for c in crabka-broker crabka-cli; do
    curl -sSfL -o "$c.crate" "$DL/$c/0.3.8/download"
    tar xzf "$c.crate"
done
printf '[workspace]\nmembers = ["crabka-broker-0.3.8", "crabka-cli-0.3.8"]\nresolver = "2"\n' > Cargo.toml
cp crabka-broker-0.3.8/Cargo.lock .
cargo tree -p crabka-cli --depth 0 >/dev/null   # adds the CLI to the lockfile, nothing else
cargo build --release --locked --ignore-rust-version -p crabka-broker -p crabka-cli --bins
mkdir -p "$OUT"
cp target/release/crabka target/release/crabka-broker "$OUT/"
echo "built $OUT/crabka and $OUT/crabka-broker"
