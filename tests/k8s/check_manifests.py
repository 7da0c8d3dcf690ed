#!/usr/bin/env python3
"""Offline checks of Strom's rendered Kubernetes manifests (tests/k8s/run.sh, step 3).

usage: check_manifests.py --rendered DIR --k8s-versions 1.33.0,1.37.0 --promtool PATH
                          --crd-validator DIR --work DIR

DIR holds one `kustomize build` output per kustomization, named after it (base.yaml,
overlays-doks.yaml, ...). For every file:
  schema     every built-in object against the Kubernetes OpenAPI schemas of each version
             (kubernetes-validate, strict: unknown fields fail); a kind without a schema fails
  crd        ServiceMonitor / PrometheusRule against the prometheus-operator schemas
             (crd-validate/validate.mjs) plus a strict check of their keys
  invariants what the brokers need from the manifests (identity derivation, services, probes,
             controlled shutdown, storage, security, network policy, topics Job, monitoring wiring)
  rules      promtool check rules + promtool test rules (alerts_test.yaml) on the PrometheusRule,
             metric names limited to the contract list plus `up` and kubelet volume statistics
  dashboard  the Grafana dashboard parses, every query parses (promtool), and references only
             metric names of the contract list
Prints one PASS/FAIL line per check and exits 1 if any failed.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys

import yaml
import kubernetes_validate
from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = {"pass": 0, "fail": 0}


def report(ok, what, detail=""):
    RESULTS["pass" if ok else "fail"] += 1
    line = f"{'PASS' if ok else 'FAIL'} {what}"
    if detail and not ok:
        line += f": {detail}"
    print(line, flush=True)
    return ok


class Check:
    """Collects the problems of one named check; reports PASS only if there were none."""

    def __init__(self, what):
        self.what = what
        self.problems = []

    def expect(self, cond, problem):
        if not cond:
            self.problems.append(problem)
        return bool(cond)

    def done(self):
        return report(not self.problems, self.what, "; ".join(self.problems))


# ----------------------------------------------------------------------------- helpers
def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def find(objs, kind, name=None):
    return [o for o in objs if o.get("kind") == kind and (name is None or o["metadata"]["name"] == name)]


def one(objs, kind, name=None):
    found = find(objs, kind, name)
    return found[0] if len(found) == 1 else None


def matches(selector, labels):
    """selector: a LabelSelector (matchLabels/matchExpressions) or a plain map (Service)."""
    if selector is None:
        return False
    if "matchLabels" in selector or "matchExpressions" in selector:
        ml = selector.get("matchLabels") or {}
        exprs = selector.get("matchExpressions") or []
    else:
        ml, exprs = selector, []
    if not all(labels.get(k) == v for k, v in ml.items()):
        return False
    for e in exprs:
        key, op, values = e["key"], e["operator"], e.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def env_of(container):
    return {e["name"]: e for e in container.get("env") or []}


def env_value(container, name):
    e = env_of(container).get(name)
    return None if e is None else e.get("value")


def port_number(container, port):
    if isinstance(port, int):
        return port
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return p["containerPort"]
    return None


# ----------------------------------------------------------------------------- PromQL
PROMQL_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or",
    "unless", "atan2", "inf", "nan",
}


def grafana_to_promql(expr):
    """Replaces Grafana's variables so that the query parses as PromQL."""
    expr = re.sub(r"\$__(rate_interval|interval|range)\b|\$\{__(rate_interval|interval|range)\}", "5m", expr)
    return re.sub(r"\$\{?\w+\}?", "x", expr)


def metric_names(expr):
    """Metric names referenced by a (valid) PromQL expression."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)  # string literals
    s = re.sub(r"\{[^}]*\}", " ", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)  # ranges and subqueries
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)  # label lists
    names = set()
    for m in re.finditer(r"(?<![\w.:$])([a-zA-Z_:][\w:]*)(\s*\()?", s):
        ident, call = m.group(1), m.group(2)
        if call or ident.lower() in PROMQL_KEYWORDS:
            continue
        names.add(ident)
    return names


def promtool_check_exprs(promtool, work, exprs, what):
    """Parses each expression with promtool (as recording rules); returns problems."""
    path = os.path.join(work, "exprs.rules.yaml")
    rules = [{"record": f"strom_check:expr_{i}", "expr": e} for i, e in enumerate(exprs)]
    with open(path, "w") as f:
        yaml.safe_dump({"groups": [{"name": what, "rules": rules}]}, f)
    r = subprocess.run([promtool, "check", "rules", path], capture_output=True, text=True)
    if r.returncode != 0:
        return [(r.stdout + r.stderr).strip().replace("\n", " | ")]
    return []


def contract_metrics():
    names, allowed = {}, set()
    with open(os.path.join(HERE, "contract-metrics.txt")) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, kind = line.split()
            names[name] = kind
            if kind == "histogram":
                allowed |= {name + "_bucket", name + "_sum", name + "_count"}
            else:
                allowed.add(name)
    return names, allowed


# Series the alerting rules may use besides Strom's own: Prometheus' scrape health and the
# kubelet's volume statistics (scraped by kube-prometheus-stack).
RULE_EXTRA_METRICS = {"up", "kubelet_volume_stats_available_bytes", "kubelet_volume_stats_capacity_bytes",
                      "kubelet_volume_stats_used_bytes"}


# ----------------------------------------------------------------------------- checks
def check_schemas(label, objs, versions):
    crds = []
    for o in objs:
        kind, name = o.get("kind"), o.get("metadata", {}).get("name")
        if str(o.get("apiVersion", "")).startswith("monitoring.coreos.com/"):
            crds.append(o)
            continue
        c = Check(f"[{label}] schema {kind}/{name} (Kubernetes {', '.join(versions)}, strict)")
        for v in versions:
            try:
                kubernetes_validate.validate(o, v, strict=True)
            except ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                c.expect(False, f"{v}: {path}: {e.message}")
            except SchemaNotFoundError as e:
                c.expect(False, f"{v}: {e.message}")
        c.done()
    return crds


SM_ENDPOINT_KEYS = {"port", "targetPort", "path", "scheme", "interval", "scrapeTimeout", "honorLabels",
                    "honorTimestamps", "relabelings", "metricRelabelings", "params", "tlsConfig",
                    "bearerTokenSecret", "basicAuth", "authorization", "oauth2", "followRedirects",
                    "enableHttp2", "filterRunning", "proxyUrl", "trackTimestampsStaleness"}
SM_SPEC_KEYS = {"selector", "endpoints", "jobLabel", "namespaceSelector", "targetLabels", "podTargetLabels",
                "sampleLimit", "targetLimit", "labelLimit", "labelNameLengthLimit", "labelValueLengthLimit",
                "attachMetadata", "scrapeProtocols", "selectorMechanism", "scrapeClass",
                "fallbackScrapeProtocol", "keepDroppedTargets", "bodySizeLimit", "nativeHistogramBucketLimit",
                "nativeHistogramMinBucketFactor", "convertClassicHistogramsToNHCB", "scrapeClassicHistograms",
                "serviceDiscoveryRole"}
RULE_GROUP_KEYS = {"name", "rules", "interval", "limit", "partial_response_strategy", "query_offset", "labels"}
RULE_KEYS = {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}


def check_crds(label, crds, validator_dir):
    if not crds:
        return
    payload = json.dumps([{"source": label, "object": o} for o in crds])
    r = subprocess.run(["node", os.path.join(validator_dir, "validate.mjs")], input=payload,
                       capture_output=True, text=True, cwd=validator_dir)
    lines = [l for l in r.stdout.splitlines() if l.startswith(("PASS", "FAIL"))]
    for l in lines:
        report(l.startswith("PASS "), "crd schema " + l[5:])
    if r.returncode != 0 and not any(l.startswith("FAIL") for l in lines):
        report(False, f"[{label}] crd schema validator", (r.stdout + r.stderr).strip()[-2000:])
    if len(lines) != len(crds):
        report(False, f"[{label}] crd schema validator", f"{len(crds)} objects sent, {len(lines)} results")
    # the generated schemas accept unknown fields (the API server would prune them silently)
    for o in crds:
        c = Check(f"[{label}] crd keys {o['kind']}/{o['metadata']['name']}")
        spec = o.get("spec") or {}
        if o["kind"] == "ServiceMonitor":
            c.expect(not set(spec) - SM_SPEC_KEYS, f"unknown spec keys {sorted(set(spec) - SM_SPEC_KEYS)}")
            for ep in spec.get("endpoints") or []:
                c.expect(not set(ep) - SM_ENDPOINT_KEYS, f"unknown endpoint keys {sorted(set(ep) - SM_ENDPOINT_KEYS)}")
        elif o["kind"] == "PrometheusRule":
            c.expect(set(spec) == {"groups"}, f"spec keys {sorted(spec)}")
            for g in spec.get("groups") or []:
                c.expect(not set(g) - RULE_GROUP_KEYS, f"group {g.get('name')}: unknown keys {sorted(set(g) - RULE_GROUP_KEYS)}")
                for rule in g.get("rules") or []:
                    c.expect(not set(rule) - RULE_KEYS, f"rule {rule.get('alert')}: unknown keys {sorted(set(rule) - RULE_KEYS)}")
                    c.expect(("alert" in rule) != ("record" in rule) and "expr" in rule,
                             f"rule {rule}: needs expr and exactly one of alert/record")
                    if "alert" in rule:
                        c.expect((rule.get("labels") or {}).get("severity") in ("critical", "warning", "info"),
                                 f"{rule['alert']}: severity label")
                        c.expect("summary" in (rule.get("annotations") or {}), f"{rule['alert']}: summary annotation")
        c.done()


def check_pod_security(c, tmpl, objs):
    spec = tmpl["spec"]
    psc = spec.get("securityContext") or {}
    c.expect(psc.get("runAsNonRoot") is True, "pod runAsNonRoot")
    c.expect((psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault", "pod seccomp RuntimeDefault")
    c.expect(spec.get("automountServiceAccountToken") is False, "pod automountServiceAccountToken: false")
    sa = one(objs, "ServiceAccount", spec.get("serviceAccountName", "default"))
    c.expect(sa is not None and sa.get("automountServiceAccountToken") is False,
             f"service account {spec.get('serviceAccountName')} exists with automountServiceAccountToken: false")
    c.expect(not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), "no host namespaces")
    for ctr in spec.get("containers", []) + spec.get("initContainers", []):
        sc = ctr.get("securityContext") or {}
        n = ctr["name"]
        c.expect(sc.get("readOnlyRootFilesystem") is True, f"{n}: readOnlyRootFilesystem")
        c.expect(sc.get("allowPrivilegeEscalation") is False, f"{n}: allowPrivilegeEscalation false")
        c.expect((sc.get("capabilities") or {}).get("drop") == ["ALL"], f"{n}: drop ALL capabilities")
        c.expect(not (sc.get("capabilities") or {}).get("add"), f"{n}: no added capabilities")
        c.expect(sc.get("privileged") in (None, False), f"{n}: not privileged")
        uid = sc.get("runAsUser", psc.get("runAsUser"))
        c.expect(isinstance(uid, int) and uid >= 10000, f"{n}: runs as a high non-root uid (got {uid})")
        res = ctr.get("resources") or {}
        for k in ("cpu", "memory"):
            c.expect(k in (res.get("requests") or {}) and k in (res.get("limits") or {}), f"{n}: {k} request and limit")


def netpol_rules(objs, pod_labels):
    """(port, [peer]) of every ingress rule of every NetworkPolicy selecting pods with these labels."""
    out, selected = [], False
    for np in find(objs, "NetworkPolicy"):
        spec = np["spec"]
        if not matches(spec.get("podSelector") or {}, pod_labels):
            continue
        selected = True
        if "Ingress" not in (spec.get("policyTypes") or ["Ingress"]):
            return None
        for rule in spec.get("ingress") or []:
            ports = [p.get("port") for p in rule.get("ports") or []] or ["*"]
            for port in ports:
                out.append((port, rule.get("from")))
    return out if selected else None


def check_invariants(label, objs):
    c = Check(f"[{label}] invariants")
    nss = find(objs, "Namespace")
    c.expect(len(nss) == 1, "exactly one Namespace")
    ns = nss[0]["metadata"]["name"] if nss else None
    c.expect(ns == "kafka", f"namespace is kafka (got {ns})")
    cluster_scoped = {"Namespace", "StorageClass", "ClusterRole", "ClusterRoleBinding", "PriorityClass"}
    for o in objs:
        if o["kind"] not in cluster_scoped:
            c.expect(o["metadata"].get("namespace") == ns, f"{o['kind']}/{o['metadata']['name']} in namespace {ns}")
    sts = one(objs, "StatefulSet", "strom")
    if not c.expect(sts is not None, "one StatefulSet strom"):
        return c.done()
    spec = sts["spec"]
    tmpl = spec["template"]
    pod_labels = tmpl["metadata"].get("labels") or {}
    ctrs = [x for x in tmpl["spec"]["containers"] if x["name"] == "strom"]
    if not c.expect(len(ctrs) == 1, "container strom"):
        return c.done()
    ctr = ctrs[0]
    env = env_of(ctr)
    c.expect(matches(spec["selector"], pod_labels), "StatefulSet selector matches its pod labels")
    c.expect(spec.get("podManagementPolicy") == "Parallel", "podManagementPolicy Parallel")
    replicas = spec.get("replicas")
    c.expect(str(replicas) == env_value(ctr, "STROM_KUBERNETES_STATEFULSET_REPLICAS"),
             f"STROM_KUBERNETES_STATEFULSET_REPLICAS ({env_value(ctr, 'STROM_KUBERNETES_STATEFULSET_REPLICAS')}) "
             f"equals spec.replicas ({replicas}): the voter set each pod derives")
    c.expect(isinstance(replicas, int) and replicas % 2 == 1 and replicas >= 3,
             f"an odd number of at least 3 voters (got {replicas})")
    # identity: POD_NAME / POD_NAMESPACE from the downward API, defined before any use
    names = [e["name"] for e in ctr.get("env") or []]
    for var, path in (("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace")):
        e = env.get(var)
        c.expect(e is not None and (e.get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath") == path,
                 f"{var} from fieldRef {path}")
    for i, e in enumerate(ctr.get("env") or []):
        for ref in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", e.get("value") or ""):
            c.expect(ref in names[:i], f"{e['name']} refers to $({ref}), which must be defined before it")
    svc_name = spec.get("serviceName")
    c.expect(env_value(ctr, "STROM_KUBERNETES_HEADLESS_SERVICE") == svc_name,
             f"STROM_KUBERNETES_HEADLESS_SERVICE equals serviceName {svc_name}")
    headless = one(objs, "Service", svc_name)
    if c.expect(headless is not None, f"Service {svc_name} exists"):
        hs = headless["spec"]
        c.expect(hs.get("clusterIP") == "None", f"{svc_name} is headless")
        c.expect(hs.get("publishNotReadyAddresses") is True, f"{svc_name} publishNotReadyAddresses")
        c.expect(matches(hs.get("selector"), pod_labels), f"{svc_name} selects the broker pods")
        c.expect({p["port"] for p in hs.get("ports", [])} >= {9092, 9093}, f"{svc_name} has ports 9092 and 9093")
    c.expect(env_value(ctr, "STROM_ADVERTISED_LISTENERS") in
             (None, f"PLAINTEXT://$(POD_NAME).{svc_name}.$(POD_NAMESPACE).svc.cluster.local:9092"),
             "advertised listener is the pod's DNS name under the headless service")
    boot = [s for s in find(objs, "Service") if s["spec"].get("clusterIP") != "None"
            and matches(s["spec"].get("selector"), pod_labels)]
    c.expect(len(boot) == 1 and any(p["port"] == 9092 for p in boot[0]["spec"]["ports"]),
             "one bootstrap ClusterIP Service on 9092 selecting the brokers")
    # ports and listeners
    ports = {p.get("name"): p["containerPort"] for p in ctr.get("ports") or []}
    c.expect(ports == {"kafka": 9092, "controller": 9093, "admin": 9644}, f"container ports {ports}")
    listeners = {}
    for l in (env_value(ctr, "STROM_LISTENERS") or "").split(","):
        m = re.fullmatch(r"(\w+)://(.*):(\d+)", l.strip())
        if m:
            listeners[m.group(1)] = (m.group(2), int(m.group(3)))
    c.expect(set(listeners) == {"PLAINTEXT", "CONTROLLER"} and listeners["PLAINTEXT"][1] == 9092
             and listeners["CONTROLLER"][1] == 9093 and all(h in ("", "0.0.0.0", "[::]") for h, _ in listeners.values()),
             f"STROM_LISTENERS: PLAINTEXT on 9092 and CONTROLLER on 9093, all interfaces (got {env_value(ctr, 'STROM_LISTENERS')})")
    c.expect(env_value(ctr, "STROM_ADMIN_LISTENER") == "0.0.0.0:9644", "STROM_ADMIN_LISTENER")
    for k, v in (("STROM_DEFAULT_REPLICATION_FACTOR", "3"), ("STROM_MIN_INSYNC_REPLICAS", "2"),
                 ("STROM_OFFSETS_TOPIC_REPLICATION_FACTOR", "3")):
        c.expect(env_value(ctr, k) == v, f"{k}={v}")
    # probes and controlled shutdown
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        g = (ctr.get(probe) or {}).get("httpGet") or {}
        c.expect(g.get("path") == path and port_number(ctr, g.get("port")) == 9644, f"{probe} GET {path} on 9644")
    pre = (((ctr.get("lifecycle") or {}).get("preStop") or {}).get("exec") or {}).get("command") or []
    c.expect(pre[:2] == ["/usr/local/bin/strom", "shutdown"] and "127.0.0.1:9644" in pre,
             f"preStop runs strom shutdown against the local admin port (got {pre})")
    grace = tmpl["spec"].get("terminationGracePeriodSeconds", 30)
    c.expect(grace >= 30, f"terminationGracePeriodSeconds {grace} leaves time for the controlled shutdown")
    # storage
    vcts = {v["metadata"]["name"]: v for v in spec.get("volumeClaimTemplates") or []}
    mounts = {m["name"]: m["mountPath"] for m in ctr.get("volumeMounts") or []}
    c.expect("data" in vcts and mounts.get("data") == env_value(ctr, "STROM_LOG_DIRS"),
             "the volume claim template data is mounted at STROM_LOG_DIRS")
    if "data" in vcts:
        sc = vcts["data"]["spec"].get("storageClassName")
        want = "do-block-storage" if label == "base" else "do-block-storage-retain"
        c.expect(sc == want, f"storage class {want} (got {sc})")
        c.expect(vcts["data"]["spec"].get("accessModes") == ["ReadWriteOnce"], "ReadWriteOnce")
    # scheduling
    pdbs = [p for p in find(objs, "PodDisruptionBudget") if matches(p["spec"].get("selector"), pod_labels)]
    c.expect(len(pdbs) == 1 and pdbs[0]["spec"].get("maxUnavailable") == 1, "one PDB maxUnavailable 1 for the brokers")
    req = ((tmpl["spec"].get("affinity") or {}).get("podAntiAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution") or []
    c.expect(any(t.get("topologyKey") == "kubernetes.io/hostname" and matches(t.get("labelSelector"), pod_labels)
                 for t in req), "required pod anti-affinity on kubernetes.io/hostname")
    tsc = tmpl["spec"].get("topologySpreadConstraints") or []
    c.expect(any(t.get("topologyKey") == "topology.kubernetes.io/zone" and matches(t.get("labelSelector"), pod_labels)
                 for t in tsc), "topology spread over topology.kubernetes.io/zone")
    c.expect(tmpl["spec"].get("enableServiceLinks") is False, "enableServiceLinks false (strom reads STROM_* variables)")
    check_pod_security(c, tmpl, objs)
    # network policy: 9092 from anywhere in the cluster, 9093 only from brokers, 9644 only from Prometheus
    rules = netpol_rules(objs, pod_labels)
    if c.expect(rules is not None, "a NetworkPolicy with Ingress rules selects the brokers"):
        by_port = {}
        for port, peers in rules:
            by_port.setdefault(port, []).append(peers)
        c.expect(set(by_port) == {9092, 9093, 9644}, f"ingress allowed on exactly 9092, 9093, 9644 (got {sorted(map(str, by_port))})")
        for peers in by_port.get(9093, []):
            c.expect(peers and all(set(p) == {"podSelector"} and matches(p["podSelector"], pod_labels) for p in peers),
                     "9093 only from broker pods")
        for peers in by_port.get(9644, []):
            c.expect(peers and all((p.get("podSelector") or {}).get("matchLabels", {}).get("app.kubernetes.io/name")
                                   == "prometheus" for p in peers), "9644 only from Prometheus pods")
    # topics Job and its ConfigMap
    job = one(objs, "Job", "strom-topics")
    if c.expect(job is not None, "Job strom-topics"):
        jt = job["spec"]["template"]
        jc = jt["spec"]["containers"][0]
        args = (jc.get("command") or []) + (jc.get("args") or [])
        c.expect(args[:4] == ["/usr/local/bin/strom", "topics", "apply", "-f"], f"Job runs strom topics apply -f (got {args})")
        fpath = args[4] if len(args) > 4 else ""
        bs = args[args.index("--bootstrap-server") + 1] if "--bootstrap-server" in args else ""
        c.expect(boot and bs.startswith(boot[0]["metadata"]["name"] + "."), f"--bootstrap-server {bs} is the bootstrap Service")
        vols = {v["name"]: v for v in jt["spec"].get("volumes") or []}
        cm_key = None
        for m in jc.get("volumeMounts") or []:
            if fpath.startswith(m["mountPath"].rstrip("/") + "/") and "configMap" in vols.get(m["name"], {}):
                cm = one(objs, "ConfigMap", vols[m["name"]]["configMap"]["name"])
                cm_key = fpath[len(m["mountPath"].rstrip("/")) + 1:]
                c.expect(cm is not None and cm_key in (cm.get("data") or {}), f"{fpath} is a key of the mounted ConfigMap")
        c.expect(cm_key is not None, f"{fpath} lies in a mounted ConfigMap")
        c.expect(job["spec"].get("backoffLimit", 6) >= 6 and jt["spec"].get("restartPolicy") in ("OnFailure", "Never"),
                 "the Job retries (backoffLimit >= 6)")
        check_pod_security(c, jt, objs)
        c.expect(any(matches(np["spec"].get("podSelector") or {}, jt["metadata"].get("labels") or {})
                     for np in find(objs, "NetworkPolicy")), "a NetworkPolicy selects the Job's pods")
    cm = one(objs, "ConfigMap", "strom-topics")
    if c.expect(cm is not None, "ConfigMap strom-topics"):
        doc = yaml.safe_load(cm["data"]["topics.yaml"])
        topics = {t["name"]: t for t in doc.get("topics", [])}
        want = {f"todo.tasks.{x}" for x in ("created", "updated", "deleted", "completed")}
        c.expect(set(topics) == want, f"topics {sorted(topics)}")
        for t in topics.values():
            c.expect(set(t) <= {"name", "partitions", "replicationFactor", "configs"}, f"{t['name']}: keys {sorted(t)}")
            c.expect(t.get("partitions") == 3 and t.get("replicationFactor") == 3, f"{t['name']}: 3 partitions, RF 3")
            c.expect(t.get("configs") == {"retention.ms": "604800000", "compression.type": "lz4",
                                          "min.insync.replicas": "2"}, f"{t['name']}: configs {t.get('configs')}")
    # monitoring wiring
    for sm in find(objs, "ServiceMonitor"):
        svcs = [s for s in find(objs, "Service") if matches(sm["spec"]["selector"], s["metadata"].get("labels") or {})]
        c.expect(len(svcs) == 1 and svcs[0]["metadata"]["name"] == svc_name,
                 f"ServiceMonitor selects exactly the headless Service (got {[s['metadata']['name'] for s in svcs]})")
        for ep in sm["spec"]["endpoints"]:
            sp = [p for s in svcs for p in s["spec"]["ports"] if p.get("name") == ep.get("port")]
            c.expect(sp and port_number(ctr, sp[0].get("targetPort")) == 9644 and ep.get("path") == "/metrics",
                     "ServiceMonitor scrapes /metrics on the admin port")
        job_label = sm["spec"].get("jobLabel")
        job_value = (svcs[0]["metadata"].get("labels") or {}).get(job_label) if (svcs and job_label) else svc_name
        for pr in find(objs, "PrometheusRule"):
            for g in pr["spec"]["groups"]:
                for rule in g["rules"]:
                    for jv in re.findall(r'job="([^"]*)"', rule["expr"]):
                        c.expect(jv == job_value, f"{rule.get('alert')}: job=\"{jv}\" is the ServiceMonitor's job ({job_value})")
    return c.done()


def check_rules(label, objs, promtool, work, allowed):
    for pr in find(objs, "PrometheusRule"):
        d = os.path.join(work, label)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "rules.yaml"), "w") as f:
            yaml.safe_dump(pr["spec"], f, sort_keys=False)
        r = subprocess.run([promtool, "check", "rules", "rules.yaml"], capture_output=True, text=True, cwd=d)
        report(r.returncode == 0, f"[{label}] promtool check rules", (r.stdout + r.stderr).strip().replace("\n", " | "))
        shutil.copy(os.path.join(HERE, "alerts_test.yaml"), d)
        r = subprocess.run([promtool, "test", "rules", "alerts_test.yaml"], capture_output=True, text=True, cwd=d)
        report(r.returncode == 0, f"[{label}] promtool test rules (tests/k8s/alerts_test.yaml)",
               "" if r.returncode == 0 else (r.stdout + r.stderr).strip()[-3000:])
        tested = set(re.findall(r"alertname:\s*(\S+)", open(os.path.join(HERE, "alerts_test.yaml")).read()))
        alerts = {rule["alert"] for g in pr["spec"]["groups"] for rule in g["rules"] if "alert" in rule}
        report(alerts <= tested, f"[{label}] every alert has a unit test", f"untested: {sorted(alerts - tested)}")
        want = {"StromBrokerDown", "StromUnderReplicatedPartitions", "StromOfflinePartitions", "StromConsumerLagHigh",
                "StromLogDirUsageHigh"}
        report(want <= alerts, f"[{label}] alerts for broker down, under-replicated, offline, lag, disk",
               f"missing {sorted(want - alerts)}")
        c = Check(f"[{label}] alert rules use only contract metrics (+ up, kubelet volume stats)")
        for g in pr["spec"]["groups"]:
            for rule in g["rules"]:
                bad = metric_names(rule["expr"]) - allowed - RULE_EXTRA_METRICS
                c.expect(not bad, f"{rule.get('alert') or rule.get('record')}: {sorted(bad)}")
        c.done()


def check_dashboards(label, objs, promtool, work, allowed, used):
    for cm in find(objs, "ConfigMap"):
        if (cm["metadata"].get("labels") or {}).get("grafana_dashboard") != "1":
            continue
        for key, text in (cm.get("data") or {}).items():
            what = f"[{label}] dashboard {cm['metadata']['name']}/{key}"
            try:
                dash = json.loads(text)
            except ValueError as e:
                report(False, f"{what} parses as JSON", str(e))
                continue
            c = Check(f"{what}: JSON, panels, queries")
            c.expect(dash.get("title") and dash.get("uid"), "title and uid")
            panels = []
            stack = list(dash.get("panels") or [])
            while stack:
                p = stack.pop(0)
                panels.append(p)
                stack.extend(p.get("panels") or [])
            exprs = []
            for p in panels:
                if p.get("type") == "row":
                    continue
                targets = p.get("targets") or []
                c.expect(targets, f"panel {p.get('title')!r} has queries")
                for t in targets:
                    if c.expect(t.get("expr"), f"panel {p.get('title')!r} query {t.get('refId')} has an expr"):
                        exprs.append(t["expr"])
            for var in (dash.get("templating") or {}).get("list") or []:
                if var.get("type") == "query":
                    q = var["query"]["query"] if isinstance(var.get("query"), dict) else var.get("query")
                    m = re.fullmatch(r"label_values\((.*),\s*\w+\)", q or "")
                    if c.expect(m, f"variable {var.get('name')}: label_values(SELECTOR, LABEL)"):
                        exprs.append(m.group(1))
            c.expect(len(exprs) >= 10, f"{len(exprs)} queries")
            promql = [grafana_to_promql(e) for e in exprs]
            for p in promtool_check_exprs(promtool, work, promql, "dashboard"):
                c.expect(False, f"promtool: {p}")
            names = set()
            for e in promql:
                names |= metric_names(e)
            c.expect(not names - allowed, f"metric names outside the contract: {sorted(names - allowed)}")
            used |= names
            c.done()
            need = {"throughput": "kafka_server_brokertopicmetrics_messagesinpersec",
                    "request latency": "kafka_network_requestmetrics_totaltimems_bucket",
                    "ISR health": "kafka_topic_partition_in_sync_replica",
                    "lag": "kafka_consumergroup_lag", "disk": "strom_log_dir_free_bytes"}
            missing = [k for k, v in need.items() if v not in names]
            report(not missing, f"{what}: shows throughput, request latency, ISR health, lag, disk", f"missing {missing}")


def self_test():
    """The metric-name extraction must find what it should, or the name checks could not fail."""
    e = ('histogram_quantile(0.99, sum by (le, request) (rate(kafka_network_requestmetrics_totaltimems_bucket'
         '{job="strom", request=~"Produce|Fetch"}[5m]))) / on (pod) group_left(x) up offset 5m + bogus_metric > 1e3')
    got = metric_names(e)
    want = {"kafka_network_requestmetrics_totaltimems_bucket", "up", "bogus_metric"}
    report(got == want, "self-test: metric names are extracted from PromQL", f"got {sorted(got)}, want {sorted(want)}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rendered", required=True)
    ap.add_argument("--k8s-versions", required=True)
    ap.add_argument("--promtool", required=True)
    ap.add_argument("--crd-validator", required=True)
    ap.add_argument("--work", required=True)
    a = ap.parse_args()
    for k in ("rendered", "promtool", "crd_validator", "work"):
        setattr(a, k, os.path.abspath(getattr(a, k)))
    os.makedirs(a.work, exist_ok=True)
    versions = a.k8s_versions.split(",")
    _, allowed = contract_metrics()
    self_test()
    used = set()
    files = sorted(f for f in os.listdir(a.rendered) if f.endswith(".yaml"))
    report(len(files) >= 3, "rendered kustomizations found", ", ".join(files))
    for fname in files:
        label = fname[:-5]
        objs = load(os.path.join(a.rendered, fname))
        crds = check_schemas(label, objs, versions)
        check_crds(label, crds, a.crd_validator)
        check_invariants(label, objs)
        check_rules(label, objs, a.promtool, a.work, allowed)
        check_dashboards(label, objs, a.promtool, a.work, allowed, used)
    report("ServiceMonitor" in {o["kind"] for f in files for o in load(os.path.join(a.rendered, f))},
           "some overlay renders the monitoring component")
    with open(os.path.join(a.work, "dashboard-metrics.txt"), "w") as f:
        f.write("\n".join(sorted(used)) + "\n")
    print(f"manifest checks: {RESULTS['pass']} passed, {RESULTS['fail']} failed")
    sys.exit(1 if RESULTS["fail"] else 0)


if __name__ == "__main__":
    main()
