#!/usr/bin/env python3
"""Runs a container of a rendered pod template the way the kubelet would, for tests/k8s/run.sh.

  pod.py plan --rendered FILE --kind StatefulSet --name strom --pod strom-1 --namespace kafka \
              [--container NAME] [--pod-ip IP] > plan.json
      What the kubelet would start: the container's env (downward API fields filled in, $(VAR)
      references expanded in order exactly like the kubelet: defined names replaced, `$$` -> `$`,
      unknown references kept), command + args (expanded with the whole env), preStop command,
      probes (named ports resolved), security context (pod and container merged) and volumes.

  pod.py run --plan plan.json --binary PATH --volumes DIR
      Run as root inside the pod's network namespace (`ip netns exec NS unshare --uts pod.py run`):
      sets the hostname to the pod name, puts BINARY at the image path of the command (bind mount),
      mounts each volume from DIR/<volume name> at its mountPath (the PVC and emptyDir volumes
      are directories there, owned by runAsUser:fsGroup like the kubelet's fsGroup handling;
      configMap volumes are written from the rendered ConfigMap, read-only), makes the root
      filesystem read-only if readOnlyRootFilesystem, then execs the command as runAsUser/
      runAsGroup with no capabilities (bounding and inheritable sets empty, no_new_privs) and
      only the container's env plus PATH and HOSTNAME. Nothing but the volumes' backing
      directories differs from the pod.

  pod.py exec --plan plan.json --pid PID -- CMD...
      Runs CMD in the container of process PID (its mount, network and UTS namespaces, its uid,
      no capabilities, the container env): how the kubelet runs an exec hook such as preStop.
"""
import argparse
import json
import os
import socket
import subprocess
import sys

import yaml

IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# directories never hidden under a tmpfs to create a missing mount point
PROTECTED = {"/", "/etc", "/usr", "/bin", "/sbin", "/lib", "/lib64", "/proc", "/sys", "/dev", "/work",
             "/root", "/home", "/usr/bin", "/usr/lib"}


def expand(s, mapping):
    """Kubernetes' $(VAR) expansion (k8s.io/kubernetes/third_party/forked/golang/expansion)."""
    out, i, n = [], 0, len(s)
    while i < n:
        c = s[i]
        if c == "$" and i + 1 < n:
            nxt = s[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                j = s.find(")", i + 2)
                if j == -1:
                    out.append(s[i:])
                    break
                var = s[i + 2:j]
                out.append(mapping[var] if var in mapping else s[i:j + 1])
                i = j + 1
                continue
            out.append(c + nxt)
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def field_ref(path, pod, namespace, pod_ip):
    values = {"metadata.name": pod, "metadata.namespace": namespace, "status.podIP": pod_ip,
              "spec.serviceAccountName": None}
    if path not in values or values[path] is None:
        raise SystemExit(f"pod.py: fieldRef {path} is not emulated")
    return values[path]


def plan(a):
    objs = [d for d in yaml.safe_load_all(open(a.rendered)) if d]
    obj = [o for o in objs if o["kind"] == a.kind and o["metadata"]["name"] == a.name]
    if len(obj) != 1:
        raise SystemExit(f"pod.py: {a.kind}/{a.name} not found in {a.rendered}")
    tmpl = obj[0]["spec"]["template"]
    spec = tmpl["spec"]
    ctrs = [c for c in spec["containers"] if a.container in (None, c["name"])]
    ctr = ctrs[0]
    env, order = {}, []
    for e in ctr.get("env") or []:
        if "value" in e:
            v = expand(e["value"], env)
        elif "valueFrom" in e and "fieldRef" in e["valueFrom"]:
            v = field_ref(e["valueFrom"]["fieldRef"]["fieldPath"], a.pod, a.namespace, a.pod_ip)
        elif "valueFrom" in e:
            raise SystemExit(f"pod.py: env {e['name']}: only value and fieldRef are emulated")
        else:
            v = ""
        if e["name"] not in env:
            order.append(e["name"])
        env[e["name"]] = v
    if ctr.get("envFrom"):
        raise SystemExit("pod.py: envFrom is not emulated")
    cmd = [expand(x, env) for x in (ctr.get("command") or []) + (ctr.get("args") or [])]
    if not cmd or not cmd[0].startswith("/"):
        raise SystemExit("pod.py: the container needs an absolute command (the image's entrypoint is not known here)")
    psc = spec.get("securityContext") or {}
    csc = ctr.get("securityContext") or {}

    def port(p):
        if isinstance(p, int):
            return p
        return next(x["containerPort"] for x in ctr.get("ports") or [] if x.get("name") == p)

    probes = {}
    for k in ("startupProbe", "livenessProbe", "readinessProbe"):
        g = (ctr.get(k) or {}).get("httpGet")
        if g:
            probes[k] = {"path": g.get("path", "/"), "port": port(g["port"])}
    pre = (((ctr.get("lifecycle") or {}).get("preStop") or {}).get("exec") or {}).get("command")
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    for t in obj[0]["spec"].get("volumeClaimTemplates") or []:
        volumes[t["metadata"]["name"]] = {"name": t["metadata"]["name"], "persistentVolumeClaim": {}}
    mounts = []
    for m in ctr.get("volumeMounts") or []:
        v = volumes[m["name"]]
        if "configMap" in v:
            cm = [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == v["configMap"]["name"]]
            kind, data = "configMap", cm[0].get("data") or {}
        elif "emptyDir" in v:
            kind, data = "emptyDir", None
        elif "persistentVolumeClaim" in v:
            kind, data = "persistentVolumeClaim", None
        else:
            raise SystemExit(f"pod.py: volume {m['name']}: kind not emulated")
        mounts.append({"name": m["name"], "mountPath": m["mountPath"], "readOnly": bool(m.get("readOnly")) or kind == "configMap",
                       "kind": kind, "data": data})
    out = {
        "pod": a.pod,
        "namespace": a.namespace,
        "env": [[k, env[k]] for k in order],
        "command": cmd,
        "workingDir": ctr.get("workingDir", "/"),
        "preStop": [expand(x, env) for x in pre] if pre else None,
        "probes": probes,
        "runAsUser": csc.get("runAsUser", psc.get("runAsUser")),
        "runAsGroup": csc.get("runAsGroup", psc.get("runAsGroup")),
        "fsGroup": psc.get("fsGroup"),
        "runAsNonRoot": csc.get("runAsNonRoot", psc.get("runAsNonRoot")),
        "readOnlyRootFilesystem": bool(csc.get("readOnlyRootFilesystem")),
        "dropAll": "ALL" in ((csc.get("capabilities") or {}).get("drop") or []),
        "terminationGracePeriodSeconds": spec.get("terminationGracePeriodSeconds", 30),
        "mounts": mounts,
    }
    json.dump(out, sys.stdout, indent=2)
    print()


def sh(*args):
    subprocess.run(args, check=True)


def make_mountpoint(path, is_file, tmpfs_done):
    """Creates a missing mount point by putting a tmpfs on its nearest existing ancestor
    (inside this mount namespace only). False if that ancestor may not be hidden."""
    if os.path.exists(path):
        return True
    anc = os.path.dirname(path)
    while not os.path.exists(anc):
        anc = os.path.dirname(anc)
    if anc not in tmpfs_done:
        if anc in PROTECTED:
            return False
        sh("mount", "-t", "tmpfs", "-o", "mode=755,size=1m", f"pod-{os.path.basename(anc)}", anc)
        tmpfs_done.append(anc)
    os.makedirs(path if not is_file else os.path.dirname(path), exist_ok=True)
    if is_file:
        open(path, "w").close()
    return True


def security_args(p):
    uid, gid = p["runAsUser"], p["runAsGroup"]
    if p["runAsNonRoot"] and not uid:
        raise SystemExit("pod.py: runAsNonRoot without a non-zero runAsUser (the kubelet would refuse the image's root user)")
    args = ["setpriv"]
    if uid is not None:
        args.append(f"--reuid={uid}")
    if gid is not None:
        args.append(f"--regid={gid}")
    groups = [str(g) for g in (p["fsGroup"],) if g is not None]
    args.append(f"--groups={','.join(groups)}" if groups else "--clear-groups")
    if p["dropAll"]:
        args += ["--inh-caps=-all", "--bounding-set=-all"]
    args.append("--no-new-privs")
    return args


def container_env(p):
    env = {"PATH": IMAGE_PATH, "HOSTNAME": p["pod"]}
    env.update({k: v for k, v in p["env"]})
    return env


def run(a):
    p = json.load(open(a.plan))
    socket.sethostname(p["pod"])
    sh("mount", "--make-rprivate", "/")
    tmpfs_done = []
    # the image: the binary at the command's path
    if not make_mountpoint(p["command"][0], True, tmpfs_done):
        raise SystemExit(f"pod.py: cannot place the binary at {p['command'][0]}")
    sh("mount", "--bind", os.path.abspath(a.binary), p["command"][0])
    command = list(p["command"])
    uid = p["runAsUser"] or 0
    gid = p["fsGroup"] if p["fsGroup"] is not None else (p["runAsGroup"] or 0)
    for m in sorted(p["mounts"], key=lambda m: m["mountPath"].count("/")):
        src = os.path.join(a.volumes, m["name"])
        if m["kind"] == "emptyDir" and os.path.isdir(src):
            subprocess.run(["rm", "-rf", src], check=True)
        os.makedirs(src, exist_ok=True)
        if m["kind"] == "configMap":
            for k, v in m["data"].items():
                with open(os.path.join(src, k), "w") as f:
                    f.write(v)
        sh("chown", "-R", f"{uid}:{gid}", src)
        os.chmod(src, 0o2775 if m["kind"] != "configMap" else 0o755)
        if not make_mountpoint(m["mountPath"], False, tmpfs_done):
            # e.g. a ConfigMap under /etc: rather than hide /etc (and the namespace's /etc/hosts),
            # the command's arguments name the backing directory instead
            root = m["mountPath"].rstrip("/")
            command = [src + x[len(root):] if x == root or x.startswith(root + "/") else x for x in command]
            print(f"pod.py: volume {m['name']} not mounted at {root} (it would hide its parent); "
                  f"arguments under it point at {src}", file=sys.stderr)
            continue
        sh("mount", "--bind", src, m["mountPath"])
        if m["readOnly"]:
            sh("mount", "-o", "remount,bind,ro", m["mountPath"])
    if p["readOnlyRootFilesystem"]:
        # bind remounts: read-only in this mount namespace only, never the host's filesystem
        for d in tmpfs_done:
            sh("mount", "-o", "remount,bind,ro", d)
        sh("mount", "-o", "remount,bind,ro", "/")
    os.chdir(p["workingDir"])
    argv = security_args(p) + ["--"] + command
    sys.stdout.flush()
    os.execvpe(argv[0], argv, container_env(p))


def exec_in(a):
    p = json.load(open(a.plan))
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
    argv = (["nsenter", f"--target={a.pid}", "--mount", "--net", "--uts", f"--wd={p['workingDir']}"]
            + security_args(p) + ["--"] + cmd)
    os.execvpe(argv[0], argv, container_env(p))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="what", required=True)
    pl = sub.add_parser("plan")
    pl.add_argument("--rendered", required=True)
    pl.add_argument("--kind", required=True)
    pl.add_argument("--name", required=True)
    pl.add_argument("--pod", required=True)
    pl.add_argument("--namespace", required=True)
    pl.add_argument("--container")
    pl.add_argument("--pod-ip")
    r = sub.add_parser("run")
    r.add_argument("--plan", required=True)
    r.add_argument("--binary", required=True)
    r.add_argument("--volumes", required=True)
    e = sub.add_parser("exec")
    e.add_argument("--plan", required=True)
    e.add_argument("--pid", required=True)
    e.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    {"plan": plan, "run": run, "exec": exec_in}[a.what](a)


if __name__ == "__main__":
    main()
