#!/usr/bin/python3
"""Checks deploy/Dockerfile and deploy/k8s/ without a cluster or a container engine.

usage: test_deploy.py MODE --repo DIR --server BIN --emberctl BIN --demo BIN
                      [--kubectl PATH|none]

  manifests   every YAML under deploy/k8s parses and passes a schema of the fields
              it uses; the kustomizations render (kubectl kustomize where kubectl
              is on PATH, cross-checked against this file's own small kustomize,
              which is used alone elsewhere); on each rendering (the deployment,
              the four-shard overlay, the deployment with its `replicas:` edited)
              the StatefulSet, its headless Service and PDB agree (names,
              selectors, ports, probes on the gRPC port, EMBER_SHARD_COUNT =
              replicas, the shard index from the pod-index label, non-root, a
              read-only root with every path it writes on a volume, the metrics
              port, its scrape annotations and NetworkPolicy rule, ...), every
              flag and EMBER_* variable is one ember-server --help lists, and the
              worker Job names every shard in order. With the followers
              component enabled (the deployment, four shards, replicas 3): the
              same for each role, the followers mirroring the leaders, follower i
              following leader i, the PDB over both roles, the replication policy
              (EMBER_REPLICA_OF against --help only where the server has it).
  dockerfile  deploy/Dockerfile: its base images as build arguments, by default the
              CUDA 13 devel/runtime Ubuntu 24.04 images, the -DEMBER_CUDA choice
              (ON where the build image has nvcc, OFF where not: run here), the
              architectures ARG, COPY sources that exist and are not ignored, the
              binaries it copies are the CMake targets it builds (and sit where
              CMake puts them), installed where the manifests run them, the user
              the manifests run as, the port, no hidden EMBER_* settings; and its
              runtime-package step run on the local build (hadolint where it is
              installed; test_image.py builds the image itself, label slow).
  pods        the StatefulSet's container as N local processes, one per pod: the
              manifest's exact command, args and env (the downward API resolved as
              the kubelet would for ordinal i), with only these substituted: the
              binary's path, the listen and metrics addresses (127.0.0.1, a free
              port), each
              volume's mount path (a directory per pod), --backend gpu -> cpu (no
              GPU to give each pod here). Then the kubelet's gRPC probes, the worker
              Job's init container and worker through the Job's shard names mapped
              to the local ports, `emberctl info` reporting shard i of N at position
              i, each pod's /metrics scraped as its annotations say, and SIGTERM as
              the kubelet sends it. For the deployment (2 shards)
              and the four-shard overlay. Then, where ember-server has
              --replica-of, the deployment with followers (components/followers):
              follower i started on leader i's local address, both roles ready,
              ember.v1.Leader SERVING on leaders only, the worker's table on every
              follower; skipped with the reason where it has no --replica-of.

Exit 0 when every check holds; 1 with every failure listed. ctest label integration.
"""

import argparse
import copy
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import yaml

FAILS = []


def check(cond, what):
    if not cond:
        FAILS.append(what)
        print("FAIL:", what, flush=True)
    return bool(cond)


def note(*a):
    print(*a, flush=True)


def finish():
    if FAILS:
        note("\n%d check(s) failed:" % len(FAILS))
        for f in FAILS:
            note("  -", f)
        sys.exit(1)
    note("all checks passed")
    sys.exit(0)


# ---- a schema of the Kubernetes fields deploy/k8s uses ------------------------------
# Each object maps its allowed keys to a type: a Python type (or tuple of types), a
# dict (a nested object), ("list", T), ("map", T) (free keys), ("enum", {...}). An
# unknown key (a typo) or a wrong type fails: the API server would reject the first
# and kubectl's client-side dry run does not look.

S, I, B = str, int, bool
QTY = (str, int, float)      # resource.Quantity
INTSTR = (int, str)
ANY = object


def L(t):
    return ("list", t)


def M(t):
    return ("map", t)


def E(*v):
    return ("enum", set(v))


OBJMETA = {"name": S, "namespace": S, "labels": M(S), "annotations": M(S)}
LABELSEL = {"matchLabels": M(S),
            "matchExpressions": L({"key": S, "operator": E("In", "NotIn", "Exists", "DoesNotExist"),
                                   "values": L(S)})}
ENVVAR = {"name": S, "value": S,
          "valueFrom": {"fieldRef": {"apiVersion": S, "fieldPath": S},
                        "resourceFieldRef": {"containerName": S, "resource": S, "divisor": QTY},
                        "configMapKeyRef": {"name": S, "key": S, "optional": B},
                        "secretKeyRef": {"name": S, "key": S, "optional": B}}}
PROBE = {"grpc": {"port": I, "service": S},
         "tcpSocket": {"port": INTSTR, "host": S},
         "exec": {"command": L(S)},
         "httpGet": {"port": INTSTR, "path": S, "host": S, "scheme": S},
         "initialDelaySeconds": I, "periodSeconds": I, "timeoutSeconds": I,
         "failureThreshold": I, "successThreshold": I, "terminationGracePeriodSeconds": I}
RESOURCES = {"requests": M(QTY), "limits": M(QTY)}
SECCOMP = {"type": E("RuntimeDefault", "Localhost", "Unconfined"), "localhostProfile": S}
CONTAINER_SEC = {"allowPrivilegeEscalation": B, "readOnlyRootFilesystem": B, "privileged": B,
                 "runAsNonRoot": B, "runAsUser": I, "runAsGroup": I,
                 "capabilities": {"add": L(S), "drop": L(S)}, "seccompProfile": SECCOMP}
CONTAINER = {"name": S, "image": S, "imagePullPolicy": E("Always", "IfNotPresent", "Never"),
             "command": L(S), "args": L(S), "workingDir": S, "env": L(ENVVAR),
             "ports": L({"name": S, "containerPort": I, "protocol": E("TCP", "UDP", "SCTP")}),
             "resources": RESOURCES, "securityContext": CONTAINER_SEC,
             "volumeMounts": L({"name": S, "mountPath": S, "readOnly": B, "subPath": S}),
             "startupProbe": PROBE, "readinessProbe": PROBE, "livenessProbe": PROBE,
             "lifecycle": {"preStop": ANY, "postStart": ANY}}
POD_SEC = {"runAsNonRoot": B, "runAsUser": I, "runAsGroup": I, "fsGroup": I,
           "fsGroupChangePolicy": E("OnRootMismatch", "Always"), "seccompProfile": SECCOMP,
           "supplementalGroups": L(I)}
VOLUME = {"name": S, "emptyDir": {"medium": S, "sizeLimit": QTY},
          "persistentVolumeClaim": {"claimName": S, "readOnly": B},
          "configMap": ANY, "secret": ANY}
POD_SPEC = {"containers": L(CONTAINER), "initContainers": L(CONTAINER),
            "restartPolicy": E("Always", "OnFailure", "Never"),
            "terminationGracePeriodSeconds": I, "securityContext": POD_SEC,
            "volumes": L(VOLUME), "enableServiceLinks": B, "automountServiceAccountToken": B,
            "serviceAccountName": S, "priorityClassName": S, "runtimeClassName": S,
            "nodeSelector": M(S), "affinity": ANY, "topologySpreadConstraints": ANY,
            "imagePullSecrets": L({"name": S}),
            "tolerations": L({"key": S, "operator": E("Exists", "Equal"), "value": S,
                              "effect": E("NoSchedule", "PreferNoSchedule", "NoExecute"),
                              "tolerationSeconds": I})}
POD_TEMPLATE = {"metadata": OBJMETA, "spec": POD_SPEC}
PVC = {"apiVersion": S, "kind": S, "metadata": OBJMETA,
       "spec": {"accessModes": L(E("ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany",
                                   "ReadWriteOncePod")),
                "storageClassName": S, "volumeMode": E("Filesystem", "Block"),
                "resources": RESOURCES, "selector": LABELSEL}}


def top(spec):
    return {"apiVersion": S, "kind": S, "metadata": OBJMETA, "spec": spec}


SCHEMAS = {
    ("apps/v1", "StatefulSet"): top({
        "serviceName": S, "replicas": I, "selector": LABELSEL, "template": POD_TEMPLATE,
        "podManagementPolicy": E("OrderedReady", "Parallel"),
        "updateStrategy": {"type": E("RollingUpdate", "OnDelete"),
                           "rollingUpdate": {"partition": I, "maxUnavailable": INTSTR}},
        "persistentVolumeClaimRetentionPolicy": {"whenDeleted": E("Retain", "Delete"),
                                                 "whenScaled": E("Retain", "Delete")},
        "volumeClaimTemplates": L(PVC), "minReadySeconds": I, "revisionHistoryLimit": I,
        "ordinals": {"start": I}}),
    ("v1", "Service"): top({
        "clusterIP": S, "clusterIPs": L(S), "type": E("ClusterIP", "NodePort", "LoadBalancer"),
        "publishNotReadyAddresses": B, "selector": M(S), "sessionAffinity": S,
        "ports": L({"name": S, "port": I, "targetPort": INTSTR,
                    "protocol": E("TCP", "UDP", "SCTP"), "appProtocol": S})}),
    ("policy/v1", "PodDisruptionBudget"): top({
        "maxUnavailable": INTSTR, "minAvailable": INTSTR, "selector": LABELSEL,
        "unhealthyPodEvictionPolicy": E("IfHealthyBudget", "AlwaysAllow")}),
    ("networking.k8s.io/v1", "NetworkPolicy"): top({
        "podSelector": LABELSEL, "policyTypes": L(E("Ingress", "Egress")),
        "ingress": L({"from": L({"podSelector": LABELSEL, "namespaceSelector": LABELSEL,
                                 "ipBlock": {"cidr": S, "except": L(S)}}),
                      "ports": L({"protocol": E("TCP", "UDP", "SCTP"), "port": INTSTR,
                                  "endPort": I})}),
        "egress": ANY}),
    ("batch/v1", "Job"): top({
        "backoffLimit": I, "completions": I, "parallelism": I, "activeDeadlineSeconds": I,
        "ttlSecondsAfterFinished": I, "template": POD_TEMPLATE}),
}
KUSTOMIZATION = {
    "apiVersion": E("kustomize.config.k8s.io/v1beta1"), "kind": E("Kustomization"),
    "namespace": S, "resources": L(S), "components": L(S),
    "images": L({"name": S, "newName": S, "newTag": S, "digest": S}),
    "replicas": L({"name": S, "count": I}),
    "patches": L({"path": S, "patch": S,
                  "target": {"kind": S, "name": S, "group": S, "version": S}}),
    "replacements": L({"source": {"kind": S, "name": S, "fieldPath": S},
                       "targets": L({"select": {"kind": S, "name": S},
                                     "fieldPaths": L(S)})}),
}
# a kustomize Component (deploy/k8s/components/): resources and transformers that
# a kustomization applies by listing it under components:
COMPONENT = dict(KUSTOMIZATION, apiVersion=E("kustomize.config.k8s.io/v1alpha1"),
                 kind=E("Component"))

DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


def schema_check(obj, schema, where):
    if schema is ANY:
        return
    if isinstance(schema, tuple) and schema and schema[0] == "list":
        if check(isinstance(obj, list), "%s: a list expected, got %r" % (where, obj)):
            for i, x in enumerate(obj):
                schema_check(x, schema[1], "%s[%d]" % (where, i))
        return
    if isinstance(schema, tuple) and schema and schema[0] == "map":
        if check(isinstance(obj, dict), "%s: a map expected" % where):
            for k, v in obj.items():
                check(isinstance(k, str), "%s: key %r is not a string" % (where, k))
                schema_check(v, schema[1], "%s.%s" % (where, k))
        return
    if isinstance(schema, tuple) and schema and schema[0] == "enum":
        check(obj in schema[1], "%s: %r is not one of %s" % (where, obj, sorted(schema[1])))
        return
    if isinstance(schema, dict):
        if not check(isinstance(obj, dict), "%s: an object expected, got %r" % (where, obj)):
            return
        for k, v in obj.items():
            if check(k in schema, "%s: unknown field '%s'" % (where, k)):
                schema_check(v, schema[k], "%s.%s" % (where, k))
        return
    types = schema if isinstance(schema, tuple) else (schema,)
    # YAML's booleans are ints to Python: keep them apart
    ok = isinstance(obj, types) and not (isinstance(obj, bool) and bool not in types)
    check(ok, "%s: %r is not %s" % (where, obj, "/".join(t.__name__ for t in types)))


def names_check(doc, where):
    """Names the API server validates: objects, containers, ports, env, labels."""
    md = doc.get("metadata", {})
    check(DNS1123.match(md.get("name", "")) and len(md["name"]) <= 63,
          "%s: metadata.name %r is not a DNS-1123 label" % (where, md.get("name")))
    for k, v in list(md.get("labels", {}).items()):
        check(re.match(r"^([a-z0-9.-]+/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$", k)
              and re.match(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$", str(v)),
              "%s: label %s=%s is malformed" % (where, k, v))
    for c in containers_of(doc):
        check(DNS1123.match(c.get("name", "")), "%s: container name %r" % (where, c.get("name")))
        for p in c.get("ports", []):
            check(re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", p.get("name", "x"))
                  and len(p.get("name", "")) <= 15, "%s: port name %r" % (where, p.get("name")))
        for e in c.get("env", []):
            check(ENV_NAME.match(e.get("name", "")), "%s: env name %r" % (where, e.get("name")))
            check(not ("value" in e and "valueFrom" in e),
                  "%s: env %s has both value and valueFrom" % (where, e.get("name")))


def pod_template(doc):
    return doc.get("spec", {}).get("template", {})


def containers_of(doc, init=True):
    spec = pod_template(doc).get("spec", {})
    return spec.get("containers", []) + (spec.get("initContainers", []) if init else [])


def validate_doc(doc, where):
    key = (doc.get("apiVersion"), doc.get("kind"))
    if not check(key in SCHEMAS, "%s: %s/%s is not a kind deploy/k8s is expected to hold"
                 % (where, key[0], key[1])):
        return
    for f in ("apiVersion", "kind", "metadata"):
        check(f in doc, "%s: no %s" % (where, f))
    schema_check(doc, SCHEMAS[key], "%s %s/%s" % (where, key[1], doc.get("metadata", {}).get("name")))
    names_check(doc, where)


# ---- kustomize, the part deploy/k8s uses ---------------------------------------------

MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name",
              "volumeMounts": "mountPath", "volumes": "name", "ports": "containerPort",
              "imagePullSecrets": "name"}
WORKLOADS = {"StatefulSet", "Deployment", "ReplicaSet", "ReplicationController"}


def smp(base, patch):
    """Strategic merge patch, for the fields MERGE_KEYS lists (other lists replace)."""
    out = copy.deepcopy(base)
    for k, v in patch.items():
        if k.startswith("$"):
            raise ValueError("patch directive %s: not emulated here" % k)
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = smp(out[k], v)
        elif isinstance(v, list) and isinstance(out.get(k), list) and k in MERGE_KEYS:
            key = MERGE_KEYS[k]
            merged = out[k]
            for item in v:
                hit = [i for i, x in enumerate(merged) if x.get(key) == item.get(key)]
                if hit:
                    merged[hit[0]] = smp(merged[hit[0]], item)
                else:
                    merged.append(copy.deepcopy(item))
        else:
            out[k] = copy.deepcopy(v)
    return out


def field_path(path):
    """'spec.template.spec.containers.[name=x].env.[name=Y].value' -> steps
    ('spec.volumeClaimTemplates.0.spec': a list's index)."""
    steps = []
    for part in re.findall(r"\[[^\]]*\]|[^.]+", path):
        m = re.match(r"^\[([^=]+)=(.*)\]$", part)
        steps.append(("sel", m.group(1), m.group(2)) if m else ("key", part))
    return steps


def step(cur, st):
    if st[0] == "sel":
        return next(x for x in cur if str(x.get(st[1])) == st[2])
    return cur[int(st[1])] if isinstance(cur, list) else cur[st[1]]


def get_path(doc, path):
    cur = doc
    for st in field_path(path):
        cur = step(cur, st)
    return cur


def set_path(doc, path, value):
    steps = field_path(path)
    cur = doc
    for st in steps[:-1]:
        cur = step(cur, st)
    last = steps[-1][1]
    if isinstance(cur, list):
        last = int(last)
    old = cur[last] if isinstance(cur, list) else cur.get(last)
    # a string field stays a string (kustomize writes "4" into env[].value)
    cur[last] = str(value) if isinstance(old, str) else copy.deepcopy(value)


def split_image(image):
    name, tag = image, None
    if "@" in name:
        name = name.split("@")[0]
    elif ":" in name.rsplit("/", 1)[-1]:
        name, tag = name.rsplit(":", 1)
    return name, tag


def mini_kustomize(kdir, docs=None):
    """The kustomization in kdir rendered; with docs, kdir is a Component applied
    to them (its resources added, then its transformers over all)."""
    path = os.path.join(kdir, "kustomization.yaml")
    with open(path) as f:
        k = yaml.safe_load(f)
    component = docs is not None
    if component != (k.get("kind") == "Component"):
        raise ValueError("%s: a %s listed as a %s" % (path, k.get("kind"),
                                                     "component" if component else "resource"))
    unknown = set(k) - set(COMPONENT if component else KUSTOMIZATION)
    if unknown:
        raise ValueError("%s: %s not emulated by this test" % (path, sorted(unknown)))
    docs = docs if component else []
    for r in k.get("resources", []):
        p = os.path.normpath(os.path.join(kdir, r))
        if os.path.isdir(p):
            docs += mini_kustomize(p)
        else:
            with open(p) as f:
                docs += [d for d in yaml.safe_load_all(f) if d]
    # components: after the resources, before this kustomization's own transformers
    for c in k.get("components", []):
        mini_kustomize(os.path.normpath(os.path.join(kdir, c)), docs)

    def select(kind=None, name=None):
        return [d for d in docs if (not kind or d["kind"] == kind)
                and (not name or d["metadata"]["name"] == name)]

    for p in k.get("patches", []):
        if "path" in p:
            with open(os.path.join(kdir, p["path"])) as f:
                patches = [d for d in yaml.safe_load_all(f) if d]
        else:
            patches = [yaml.safe_load(p["patch"])]
        for patch in patches:
            if isinstance(patch, list):
                raise ValueError("JSON 6902 patches are not emulated here")
            t = p.get("target", {})
            hits = select(t.get("kind") or patch.get("kind"),
                          t.get("name") or patch.get("metadata", {}).get("name"))
            if len(hits) != 1:
                raise ValueError("patch %s matches %d objects" % (p, len(hits)))
            body = {x: y for x, y in patch.items() if x not in ("apiVersion", "kind")}
            body["metadata"] = {x: y for x, y in body.get("metadata", {}).items() if x != "name"}
            if not body["metadata"]:
                del body["metadata"]
            docs[docs.index(hits[0])] = smp(hits[0], body)
    if "namespace" in k:
        for d in docs:
            d["metadata"]["namespace"] = k["namespace"]
    for r in k.get("replicas", []):
        for d in docs:
            if d["kind"] in WORKLOADS and d["metadata"]["name"] == r["name"]:
                d["spec"]["replicas"] = r["count"]
    for img in k.get("images", []):
        for d in docs:
            for c in containers_of(d):
                name, tag = split_image(c["image"])
                if name != img["name"]:
                    continue
                name = img.get("newName", name)
                tag = img.get("newTag", tag)
                c["image"] = name + ("@" + img["digest"] if "digest" in img
                                     else (":" + tag if tag else ""))
    for rep in k.get("replacements", []):
        src = rep["source"]
        srcs = select(src.get("kind"), src.get("name"))
        if len(srcs) != 1:
            raise ValueError("replacement source %s matches %d objects" % (src, len(srcs)))
        value = get_path(srcs[0], src["fieldPath"])
        for t in rep["targets"]:
            for d in select(t["select"].get("kind"), t["select"].get("name")):
                for fp in t["fieldPaths"]:
                    set_path(d, fp, value)
    return docs


def find_kubectl(choice):
    if choice == "none":
        return None
    path = choice if choice != "auto" else shutil.which("kubectl")
    if not path:
        return None
    try:
        r = subprocess.run([path, "version", "--client"], capture_output=True, text=True,
                           timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0 or "Kustomize" not in r.stdout:
        note("kubectl at %s has no kustomize (%s); using the test's own" % (path, r.stdout.strip()))
        return None
    note("kubectl:", " ".join(r.stdout.split()))
    return path


def render(kdir, kubectl):
    """The kustomization's objects: kubectl kustomize where there is one (and this
    test's emulation must agree with it), the emulation elsewhere."""
    mine = mini_kustomize(kdir)
    if not kubectl:
        return mine
    r = subprocess.run([kubectl, "kustomize", kdir], capture_output=True, text=True, timeout=120)
    if not check(r.returncode == 0, "kubectl kustomize %s: %s" % (kdir, r.stderr.strip())):
        return mine
    theirs = [d for d in yaml.safe_load_all(r.stdout) if d]

    def key(d):
        return (d["kind"], d["metadata"]["name"])
    check(sorted(theirs, key=key) == sorted(mine, key=key),
          "%s: kubectl kustomize and this test's kustomize differ:\n%s\n---- vs ----\n%s"
          % (kdir, yaml.safe_dump_all(sorted(theirs, key=key)),
             yaml.safe_dump_all(sorted(mine, key=key))))
    return theirs


# ---- what ember-server says it takes --------------------------------------------------

def server_settings(server):
    r = subprocess.run([server, "--help"], capture_output=True, text=True, timeout=30)
    flags = set(re.findall(r"^\s+--([a-z][a-z0-9-]*)", r.stdout, re.M))
    envs = set(re.findall(r"\[env (EMBER_[A-Z0-9_]+)\]", r.stdout))
    if not check(r.returncode == 0 and "listen" in flags and "EMBER_SHARD_INDEX" in envs,
                 "ember-server --help lists its flags and variables:\n" + r.stdout):
        return set(), set()
    return flags, envs


def flag_values(args):
    """[--a=1, --b, 2] -> [(a, '1'), (b, '2')] (ember-server's two forms)."""
    out, i = [], 0
    while i < len(args):
        a = args[i]
        if a.startswith("--"):
            if "=" in a:
                k, v = a[2:].split("=", 1)
            else:
                k, v = a[2:], args[i + 1] if i + 1 < len(args) else None
                i += 1
            out.append((k, v))
        else:
            out.append((None, a))
        i += 1
    return out


def setting(container, flag, env):
    """The value ember-server would take: the flag wins over the variable."""
    for k, v in flag_values(container.get("args", []) + container.get("command", [])[1:]):
        if k == flag:
            return v
    for e in container.get("env", []):
        if e["name"] == env:
            return e.get("value")
    return None


# ---- the deployment as a whole ---------------------------------------------------------

class Deployment:
    def __init__(self, docs, where):
        self.where = where
        kinds = {}
        for d in docs:
            kinds.setdefault(d["kind"], []).append(d)
        for k in ("StatefulSet", "Service", "PodDisruptionBudget"):
            check(len(kinds.get(k, [])) == 1, "%s: one %s, found %d" % (where, k, len(kinds.get(k, []))))
        self.sts = kinds["StatefulSet"][0]
        self.svc = kinds["Service"][0]
        self.pdb = kinds["PodDisruptionBudget"][0]
        check(len(kinds.get("NetworkPolicy", [])) == 1,
              "%s: one NetworkPolicy, found %d" % (where, len(kinds.get("NetworkPolicy", []))))
        self.netpol = (kinds.get("NetworkPolicy") or [None])[0]
        self.replicas = self.sts["spec"].get("replicas", 1)
        servers = [c for c in containers_of(self.sts, init=False)
                   if os.path.basename((c.get("command") or [""])[0]) == "ember-server"]
        check(len(servers) == 1, "%s: one container runs ember-server (its command)" % where)
        self.c = servers[0]
        ports = [p for p in self.c.get("ports", []) if p.get("name") == "grpc"]
        check(len(ports) == 1, "%s: the container has a port named grpc" % where)
        self.port = ports[0]["containerPort"]
        mports = [p for p in self.c.get("ports", []) if p.get("name") == "metrics"]
        self.metrics_port = mports[0]["containerPort"] if mports else None

    def name_pattern(self):
        """Shard i's name, as the headless Service gives it."""
        return "%s-{i}.%s.%s.svc.cluster.local:%d" % (
            self.sts["metadata"]["name"], self.svc["metadata"]["name"],
            self.sts["metadata"].get("namespace", "$(POD_NAMESPACE)"), self.port)


def subset(small, big):
    return bool(small) and all(big.get(k) == v for k, v in small.items())


def check_deployment(dep, flags, envs, uid):
    w, sts, svc, pdb, c = dep.where, dep.sts, dep.svc, dep.pdb, dep.c
    spec, pod = sts["spec"], pod_template(sts)
    plabels = pod.get("metadata", {}).get("labels", {})
    pspec = pod["spec"]

    # names and selectors
    check(spec.get("serviceName") == svc["metadata"]["name"],
          "%s: StatefulSet serviceName %r is the Service's name %r"
          % (w, spec.get("serviceName"), svc["metadata"]["name"]))
    check(svc["spec"].get("clusterIP") == "None", "%s: the Service is headless (clusterIP: None)" % w)
    check(set(spec["selector"].keys()) == {"matchLabels"} and
          subset(spec["selector"]["matchLabels"], plabels),
          "%s: the StatefulSet's selector matches its pod labels" % w)
    check(subset(svc["spec"].get("selector", {}), plabels), "%s: the Service selects the pods" % w)
    check(subset(pdb["spec"]["selector"].get("matchLabels", {}), plabels),
          "%s: the PodDisruptionBudget selects the pods" % w)
    check(pdb["spec"].get("maxUnavailable") == 1 and "minAvailable" not in pdb["spec"],
          "%s: the PodDisruptionBudget lets one shard go at a time" % w)
    for d in (svc, pdb):
        check(d["metadata"].get("namespace") == sts["metadata"].get("namespace"),
              "%s: %s is in the StatefulSet's namespace" % (w, d["kind"]))
    sports = svc["spec"].get("ports", [])
    check(len(sports) == 1 and sports[0]["port"] == dep.port and
          sports[0].get("targetPort") in ("grpc", dep.port),
          "%s: the Service's port is the container's gRPC port %d" % (w, dep.port))

    # shard count and index
    check(isinstance(dep.replicas, int) and dep.replicas >= 1, "%s: replicas ≥ 1" % w)
    env = {e["name"]: e for e in c.get("env", [])}
    check(env.get("EMBER_SHARD_COUNT", {}).get("value") == str(dep.replicas),
          "%s: EMBER_SHARD_COUNT %r MUST equal replicas %d"
          % (w, env.get("EMBER_SHARD_COUNT", {}).get("value"), dep.replicas))
    check(env.get("EMBER_SHARD_INDEX", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
          == "metadata.labels['apps.kubernetes.io/pod-index']",
          "%s: EMBER_SHARD_INDEX comes from the pod-index label (the ordinal)" % w)
    given = [k for k, _ in flag_values(c.get("args", []))]
    check("shard-index" not in given and "shard-count" not in given,
          "%s: no --shard-index/--shard-count in args (they would override the env)" % w)
    check(spec.get("podManagementPolicy") == "Parallel", "%s: pods start in parallel" % w)

    # every setting is one ember-server knows (an unknown EMBER_* is silently ignored)
    for k, v in flag_values(c.get("args", [])):
        check(k in flags, "%s: ember-server has no flag for arg %r" % (w, k if k else v))
    for name in env:
        if name.startswith("EMBER_"):
            check(name in envs, "%s: ember-server reads no %s" % (w, name))

    # the listen address, port and probes
    listen = setting(c, "listen", "EMBER_LISTEN") or "0.0.0.0:7070"
    host, _, lport = listen.rpartition(":")
    check(host in ("0.0.0.0", "[::]", "") and lport == str(dep.port),
          "%s: ember-server listens on every address at the gRPC port %d (%s)" % (w, dep.port, listen))
    for p in ("readinessProbe", "livenessProbe", "startupProbe"):
        probe = c.get(p)
        if p == "startupProbe" and probe is None:
            continue
        if not check(probe is not None, "%s: a %s" % (w, p)):
            continue
        handlers = {"grpc", "httpGet", "tcpSocket", "exec"} & set(probe)
        check(handlers == {"grpc"}, "%s: %s uses the native gRPC probe" % (w, p))
        g = probe.get("grpc", {})
        check(g.get("port") == dep.port, "%s: %s probes the gRPC port %d" % (w, p, dep.port))
        check(g.get("service", "") in ("", "ember.v1.Shard", "ember.v1.Admin"),
              "%s: %s asks about a service ember-server reports" % (w, p))

    # the metrics endpoint: on every address at the port named metrics, which is
    # not the gRPC one, and announced to Prometheus by the pod's annotations
    metrics = setting(c, "metrics-listen", "EMBER_METRICS_LISTEN")
    ann = pod.get("metadata", {}).get("annotations", {})
    if check(metrics and dep.metrics_port, "%s: --metrics-listen (%r) and a container port "
             "named metrics (%r)" % (w, metrics, dep.metrics_port)):
        mhost, _, mport = metrics.rpartition(":")
        check(mhost in ("0.0.0.0", "[::]", "") and mport == str(dep.metrics_port)
              and dep.metrics_port != dep.port,
              "%s: metrics on every address at the metrics port %d, not the gRPC port (%s)"
              % (w, dep.metrics_port, metrics))
        check(ann.get("prometheus.io/scrape") == "true" and
              ann.get("prometheus.io/port") == str(dep.metrics_port) and
              ann.get("prometheus.io/path") == "/metrics",
              "%s: the pod's prometheus.io/scrape, port (%d) and path annotations: %r"
              % (w, dep.metrics_port, ann))

    # resources: one GPU, requests = limits (Guaranteed)
    res = c.get("resources", {})
    req, lim = res.get("requests", {}), res.get("limits", {})
    check(str(lim.get("nvidia.com/gpu")) == "1", "%s: limits nvidia.com/gpu: 1" % w)
    check(str(req.get("nvidia.com/gpu", 1)) == "1", "%s: requests nvidia.com/gpu: 1 where given" % w)
    for r in ("cpu", "memory"):
        check(r in req and r in lim and str(req[r]) == str(lim[r]),
              "%s: %s requested and limited, equal (Guaranteed QoS)" % (w, r))
    threads = env.get("EMBER_THREADS", {}).get("valueFrom", {}).get("resourceFieldRef")
    if threads:
        check(threads.get("containerName") == c["name"] and threads.get("resource") == "limits.cpu",
              "%s: EMBER_THREADS from this container's CPU limit" % w)

    # security
    psec, csec = pspec.get("securityContext", {}), c.get("securityContext", {})
    check(psec.get("runAsNonRoot") is True, "%s: runAsNonRoot" % w)
    check(psec.get("runAsUser") == uid and uid, "%s: runAsUser %r is the image's user %r"
          % (w, psec.get("runAsUser"), uid))
    check(psec.get("fsGroup") is not None, "%s: an fsGroup, so the checkpoint volume is writable" % w)
    check(csec.get("allowPrivilegeEscalation") is False, "%s: allowPrivilegeEscalation: false" % w)
    check(csec.get("readOnlyRootFilesystem") is True, "%s: readOnlyRootFilesystem" % w)
    check("ALL" in csec.get("capabilities", {}).get("drop", []) and
          not csec.get("capabilities", {}).get("add"), "%s: every capability dropped" % w)
    check((psec.get("seccompProfile") or csec.get("seccompProfile") or {}).get("type")
          == "RuntimeDefault", "%s: seccomp RuntimeDefault" % w)
    check(pspec.get("enableServiceLinks") is False,
          "%s: enableServiceLinks: false (no EMBER_PORT & co. from a Service named ember)" % w)

    # volumes: the checkpoint claim is mounted at the checkpoint dir; everything
    # written lies on a volume (the root filesystem is read-only)
    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
    claims = [t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])]
    declared = {v["name"] for v in pspec.get("volumes", [])} | set(claims)
    for path, name in mounts.items():
        check(name in declared, "%s: volumeMount %s names a volume or claim" % (w, name))
    check(len(claims) == 1, "%s: one volumeClaimTemplate (the checkpoints)" % w)
    ckpt = setting(c, "checkpoint-dir", "EMBER_CHECKPOINT_DIR")
    claim_paths = [p for p, n in mounts.items() if n in claims]
    check(ckpt and any(ckpt == p or ckpt.startswith(p.rstrip("/") + "/") for p in claim_paths),
          "%s: the checkpoint dir %r is on the claim (mounted at %s)" % (w, ckpt, claim_paths))
    for t in spec.get("volumeClaimTemplates", []):
        check(t["spec"].get("resources", {}).get("requests", {}).get("storage"),
              "%s: the claim requests storage" % w)
    values = c.get("args", []) + [e.get("value", "") for e in c.get("env", [])]
    for v in values:
        for path in re.findall(r"(?:^|=)(/[^\s,:]*)", v or ""):
            check(any(path == p or path.startswith(p.rstrip("/") + "/") for p in mounts),
                  "%s: %s is on a volume (the root filesystem is read-only)" % (w, path))
    check(spec.get("persistentVolumeClaimRetentionPolicy", {}).get("whenScaled") == "Retain",
          "%s: scaling down keeps the checkpoints" % w)

    # graceful termination: in-flight calls, then the shutdown checkpoint, inside
    # the kubelet's grace period; and periodic saves, which bound what a crash loses
    grace = pspec.get("terminationGracePeriodSeconds", 30)
    drain = int(setting(c, "shutdown-grace-ms", "EMBER_SHUTDOWN_GRACE_MS") or 10000) / 1000
    save = int(setting(c, "checkpoint-exit-timeout-ms", "EMBER_CHECKPOINT_EXIT_TIMEOUT_MS") or 0) / 1000
    check(grace >= 120 and grace >= drain + 60 and (not save or drain + save + 10 <= grace),
          "%s: terminationGracePeriodSeconds %s covers %gs of draining and the exit save (%s)"
          % (w, grace, drain, "%gs at most" % save if save else "unbounded"))
    check(setting(c, "checkpoint-on-exit", "EMBER_CHECKPOINT_ON_EXIT") in (None, "on"),
          "%s: SIGTERM saves (--checkpoint-on-exit on)" % w)
    check(setting(c, "checkpoint-restore", "EMBER_CHECKPOINT_RESTORE") in (None, "on"),
          "%s: a restarted pod restores its checkpoints (--checkpoint-restore on)" % w)
    check(setting(c, "checkpoint-interval", "EMBER_CHECKPOINT_INTERVAL") not in (None, "0"),
          "%s: periodic checkpoints (--checkpoint-interval)" % w)

    # the NetworkPolicy: it covers the shards, and admits only ember clients, only on
    # the gRPC port; and to the metrics port, nothing but pods of a namespace it names
    np = dep.netpol
    if np:
        nspec = np.get("spec", {})
        check(selects(nspec.get("podSelector", {}), plabels),
              "%s: the NetworkPolicy selects the shard pods" % w)
        check("Ingress" in nspec.get("policyTypes", []), "%s: the NetworkPolicy limits ingress" % w)
        rules = nspec.get("ingress", [])
        check(bool(rules), "%s: the NetworkPolicy admits someone (the clients)" % w)
        for r in rules:
            ports = [p.get("port") for p in r.get("ports", [])]
            if dep.metrics_port and ports in ([dep.metrics_port], ["metrics"]):
                froms = r.get("from", [])
                check(bool(froms), "%s: the metrics rule names who may scrape" % w)
                for f in froms:
                    check(set(f) == {"namespaceSelector", "podSelector"}
                          and not selects(f["namespaceSelector"], {})
                          and not selects(f["podSelector"], {})
                          and not selects(f["podSelector"], {"ember.io/role": "worker"}),
                          "%s: the metrics port admits the monitoring namespace's "
                          "Prometheus pods only (a namespace and a pod selector): %r" % (w, f))
                continue
            check(ports in ([dep.port], ["grpc"]),
                  "%s: each ingress rule opens the gRPC port %d only (or the metrics port "
                  "alone)" % (w, dep.port))
            for f in r.get("from", []):
                check(set(f) == {"podSelector"} and not selects(f["podSelector"], {})
                      and not selects(f["podSelector"], {"ember.io/role": "stranger"})
                      and selects(f["podSelector"], {"ember.io/role": "worker"}) ==
                      selects(f["podSelector"], {"ember.io/role": "admin"}),
                      "%s: the NetworkPolicy admits pods by their ember.io/role "
                      "(worker, admin), not everyone: %r" % (w, f))
    return True


def selects(sel, labels):
    """Whether a label selector (matchLabels, matchExpressions) selects `labels`."""
    if not all(labels.get(k) == v for k, v in sel.get("matchLabels", {}).items()):
        return False
    for e in sel.get("matchExpressions", []):
        k, op, vals = e.get("key"), e.get("operator"), e.get("values", [])
        if ((op == "In" and labels.get(k) not in vals) or
                (op == "NotIn" and k in labels and labels[k] in vals) or
                (op == "Exists" and k not in labels) or (op == "DoesNotExist" and k in labels)):
            return False
    return True


def admitted(dep, labels):
    """Whether the NetworkPolicy lets a pod with `labels` (same namespace) in."""
    if not dep.netpol:
        return True
    return any(selects(f.get("podSelector", {}), labels)
               for r in dep.netpol.get("spec", {}).get("ingress", []) for f in r.get("from", [])
               if "podSelector" in f and "namespaceSelector" not in f)


def expand_env(env_list, resolve):
    """A container's environment as the kubelet makes it: values in order, $(VAR)
    of an earlier entry expanded, $$ an escaped $, valueFrom through `resolve`."""
    out = {}

    def sub(s):
        return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                      lambda m: "$" if m.group(0) == "$$" else out.get(m.group(1), m.group(0)), s)
    for e in env_list:
        v = sub(e["value"]) if "value" in e else resolve(e["valueFrom"])
        if v is not None:       # None: an optional Secret's key that is absent
            out[e["name"]] = v
    return out, sub


def check_worker(job, dep, server_image, dockerfile_bins, where):
    tspec = pod_template(job)["spec"]
    plabels = pod_template(job).get("metadata", {}).get("labels", {})
    check(not subset(dep.svc["spec"]["selector"], plabels) and
          not subset(dep.pdb["spec"]["selector"]["matchLabels"], plabels),
          "%s: the Service and PDB do not select the worker's pods" % where)
    check(admitted(dep, plabels),
          "%s: the shards' NetworkPolicy admits the worker's pods (label ember.io/role)" % where)
    check(tspec.get("restartPolicy") in ("Never", "OnFailure"), "%s: a Job's restartPolicy" % where)
    cs = containers_of(job)
    envs = []
    for c in cs:
        check(c.get("image") == server_image, "%s: %s runs the shards' image %s (not %s)"
              % (where, c["name"], server_image, c.get("image")))
        cmd = (c.get("command") or [""])[0]
        check(cmd in dockerfile_bins.values(),
              "%s: %s runs %s, a binary the image installs (%s)"
              % (where, c["name"], cmd, sorted(dockerfile_bins.values())))
        sec = c.get("securityContext", {})
        check(sec.get("readOnlyRootFilesystem") is True and sec.get("allowPrivilegeEscalation") is False
              and "ALL" in sec.get("capabilities", {}).get("drop", []),
              "%s: %s is locked down as the shards are" % (where, c["name"]))
        env, _ = expand_env(c.get("env", []), lambda vf: "NS" if vf.get("fieldRef", {}).get(
            "fieldPath") == "metadata.namespace" else None)
        envs.append(env)
        want = ",".join(dep.name_pattern().replace("$(POD_NAMESPACE)", "NS").replace("{i}", str(i))
                        for i in range(dep.replicas))
        check(env.get("EMBER_SHARDS") == want,
              "%s: %s's EMBER_SHARDS names the %d shards in order:\n  got  %s\n  want %s"
              % (where, c["name"], dep.replicas, env.get("EMBER_SHARDS"), want))
    check(tspec.get("securityContext", {}).get("runAsNonRoot") is True, "%s: runAsNonRoot" % where)
    check(all(e == envs[0] for e in envs), "%s: every container has the same shard list" % where)


def mode_manifests(a):
    repo = a.repo
    k8s = os.path.join(repo, "deploy", "k8s")
    flags, envs = server_settings(a.server)
    df = Dockerfile(os.path.join(repo, "deploy", "Dockerfile"))

    # every YAML parses and passes the schema
    yamls = []
    for root, _, files in os.walk(k8s):
        for f in sorted(files):
            if f.endswith((".yaml", ".yml")):
                yamls.append(os.path.join(root, f))
    check(len(yamls) >= 7, "deploy/k8s holds its manifests (%d YAML files)" % len(yamls))
    patch_files = set()          # strategic-merge patches: checked merged, in the renders
    for p in yamls:
        if os.path.basename(p) == "kustomization.yaml":
            with open(p) as f:
                k = yaml.safe_load(f) or {}
            patch_files |= {os.path.normpath(os.path.join(os.path.dirname(p), x["path"]))
                            for x in k.get("patches", []) if "path" in x}
    for p in yamls:
        rel = os.path.relpath(p, repo)
        try:
            with open(p) as f:
                docs = [d for d in yaml.safe_load_all(f) if d is not None]
        except yaml.YAMLError as e:
            check(False, "%s does not parse: %s" % (rel, e))
            continue
        check(docs, "%s holds something" % rel)
        for d in docs:
            if os.path.basename(p) == "kustomization.yaml":
                schema_check(d, COMPONENT if d.get("kind") == "Component" else KUSTOMIZATION, rel)
                for r in d.get("resources", []):
                    check(os.path.exists(os.path.join(os.path.dirname(p), r)),
                          "%s: resource %s exists" % (rel, r))
            elif d.get("kind") == "StatefulSet" and os.path.basename(p) != "statefulset.yaml":
                validate_doc(smp_base_for_patch(d), rel)   # a patch: checked merged, below
            elif os.path.normpath(p) in patch_files:
                check(d.get("kind") and d.get("metadata", {}).get("name"),
                      "%s: a patch names its object's kind and name" % rel)
            else:
                validate_doc(d, rel)
        note("ok: parsed and schema-checked", rel)

    kubectl = find_kubectl(a.kubectl)
    renders = {"deploy/k8s": k8s, "deploy/k8s/base": os.path.join(k8s, "base"),
               "deploy/k8s/examples/four-shards": os.path.join(k8s, "examples", "four-shards")}
    deps = {}
    for name, kdir in renders.items():
        docs = render(kdir, kubectl)
        for d in docs:
            validate_doc(d, name + " (rendered)")
        deps[name] = Deployment(docs, name)
        check_deployment(deps[name], flags, envs, df.uid)
        note("ok: %s renders %d shards" % (name, deps[name].replicas))
    check(deps["deploy/k8s/examples/four-shards"].replicas == 4 and
          deps["deploy/k8s/examples/four-shards"].sts["metadata"].get("namespace") == "ml",
          "the four-shard overlay makes 4 shards in namespace ml")

    # followers (components/followers), enabled as the comments say: the deployment,
    # the four-shard overlay, and the deployment with `replicas:` edited to 3
    if "replica-of" not in flags:
        note("skip: the ember-server under test has no --replica-of (replication is not "
             "in this build): EMBER_REPLICA_OF is not checked against its --help")
        envs = envs | {"EMBER_REPLICA_OF"}
    tmp = tempfile.mkdtemp(prefix="ember-deploy-followers.")
    try:
        shutil.copytree(k8s, os.path.join(tmp, "k8s"))
        for where, rel, count, shards in (
                ("deploy/k8s + followers", "kustomization.yaml", None, 2),
                ("four-shards + followers", "examples/four-shards/kustomization.yaml", None, 4),
                ("deploy/k8s + followers, replicas 3", "kustomization.yaml", 3, 3)):
            kf = os.path.join(tmp, "k8s", rel)
            enable_followers(kf, count)
            docs = render(os.path.dirname(kf), kubectl)
            for d in docs:
                validate_doc(d, where + " (rendered)")
            leader = check_followers(docs, where, flags, envs, df.uid)
            check(leader is None or leader.replicas == shards, "%s: %d shards" % (where, shards))
            note("ok: %s renders %d shards, each with a follower" % (where, shards))
    finally:
        shutil.rmtree(tmp)

    # kustomize-style edits a user makes: `replicas:` of deploy/k8s/kustomization.yaml
    # set to 5 (EMBER_SHARD_COUNT must follow), and a patch of replicas alone in an
    # overlay without the replacements block (it must NOT pass: the check has teeth)
    tmp = tempfile.mkdtemp(prefix="ember-deploy-k8s.")
    try:
        shutil.copytree(k8s, os.path.join(tmp, "k8s"))
        kf = os.path.join(tmp, "k8s", "kustomization.yaml")
        with open(kf) as f:
            k = yaml.safe_load(f)
        k["replicas"] = [{"name": "ember", "count": 5}]
        with open(kf, "w") as f:
            yaml.safe_dump(k, f)
        dep = Deployment(render(os.path.join(tmp, "k8s"), kubectl), "replicas edited to 5")
        check(dep.replicas == 5, "replicas edited to 5 gives 5 pods")
        check_deployment(dep, flags, envs, df.uid)
        os.makedirs(os.path.join(tmp, "bad"))
        with open(os.path.join(tmp, "bad", "kustomization.yaml"), "w") as f:
            yaml.safe_dump({"resources": ["../k8s/base"], "replicas": [{"name": "ember", "count": 7}]}, f)
        bad = Deployment(render(os.path.join(tmp, "bad"), kubectl), "overlay without replacements")
        env = {e["name"]: e.get("value") for e in bad.c["env"]}
        check(bad.replicas == 7 and env["EMBER_SHARD_COUNT"] != "7",
              "an overlay that changes replicas without the replacements block leaves the count "
              "behind (so the examples must carry it, and this test catches it)")
    finally:
        shutil.rmtree(tmp)

    # the worker Job: the shards' names, in order, for the deployment's replica count
    wpath = os.path.join(k8s, "examples", "worker-job.yaml")
    with open(wpath) as f:
        jobs = [d for d in yaml.safe_load_all(f) if d]
    check(len(jobs) == 1 and jobs[0]["kind"] == "Job", "worker-job.yaml is one Job")
    base = deps["deploy/k8s"]
    check_worker(jobs[0], base, base.c["image"], df.bins, "examples/worker-job.yaml")
    check(base.c["image"] == df.image_for_manifests(),
          "deploy/k8s runs the image the Dockerfile's usage builds (%s)" % df.image_for_manifests())
    check(base.c["command"][0] == df.entrypoint,
          "the StatefulSet runs %s, the image's ember-server (%s)" % (base.c["command"][0], df.entrypoint))
    finish()


def enable_followers(kfile, count=None):
    """Uncomments `components:` in a kustomization, as its comment says (and sets
    its `replicas:` count)."""
    with open(kfile) as f:
        text = f.read()
    new = re.sub(r"^# components:.*\n#( +- \S*components/followers)", r"components:\n\1", text,
                 count=1, flags=re.M)
    check(new != text or re.search(r"^components:\n +- \S*components/followers", text, re.M),
          "%s: a commented `components:` for the followers to enable" % kfile)
    if count is not None:
        new = re.sub(r"(replicas:\n  - name: ember\n    count: )\d+", r"\g<1>%d" % count, new)
    with open(kfile, "w") as f:
        f.write(new)


def split_roles(docs, w):
    """A rendering with followers as two Deployments: the leaders', the followers'."""
    by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    pdb = by["PodDisruptionBudget", "ember"]
    return (Deployment([by["StatefulSet", "ember"], by["Service", "ember"], pdb,
                        by["NetworkPolicy", "ember"]], w + " leaders"),
            Deployment([by["StatefulSet", "ember-follower"], by["Service", "ember-follower"],
                        pdb, by["NetworkPolicy", "ember-follower"]], w + " followers"))


def check_followers(docs, w, flags, envs, uid):
    """A rendering with followers: the leaders as without them, the followers as a
    deployment of their own that mirrors the leaders, one per shard, each following
    its shard's leader; the PDB over both roles; leaders and followers reach each
    other. Returns the leaders' Deployment."""
    def named(kind, name):
        hits = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
        check(len(hits) == 1, "%s: one %s %s, found %d" % (w, kind, name, len(hits)))
        return hits
    stss = [d for d in docs if d["kind"] == "StatefulSet"]
    check(sorted(d["metadata"]["name"] for d in stss) == ["ember", "ember-follower"],
          "%s: the StatefulSets ember and ember-follower (%s)"
          % (w, [d["metadata"]["name"] for d in stss]))
    pdb = named("PodDisruptionBudget", "ember")
    if not (named("StatefulSet", "ember") and named("StatefulSet", "ember-follower") and
            named("Service", "ember") and named("Service", "ember-follower") and pdb and
            named("NetworkPolicy", "ember") and named("NetworkPolicy", "ember-follower") and
            named("NetworkPolicy", "ember-replication")):
        return None
    by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    lead, fol = split_roles(docs, w)
    check_deployment(lead, flags, envs, uid)
    check_deployment(fol, flags, envs, uid)      # every check of a shard holds for its follower

    # the followers mirror the leaders
    check(fol.replicas == lead.replicas, "%s: one follower per shard (%d, %d)"
          % (w, fol.replicas, lead.replicas))
    for field in ("image", "args", "resources", "command", "ports", "volumeMounts",
                  "securityContext"):
        check(fol.c.get(field) == lead.c.get(field), "%s: the followers' %s are the leaders' "
              "(%r, %r)" % (w, field, fol.c.get(field), lead.c.get(field)))
    check([t["spec"] for t in fol.sts["spec"]["volumeClaimTemplates"]] ==
          [t["spec"] for t in lead.sts["spec"]["volumeClaimTemplates"]],
          "%s: the followers' claims are the leaders'" % w)
    for k in ("securityContext", "terminationGracePeriodSeconds", "tolerations", "volumes"):
        check(pod_template(fol.sts)["spec"].get(k) == pod_template(lead.sts)["spec"].get(k),
              "%s: the followers' pod %s is the leaders'" % (w, k))
    check(fol.sts["metadata"].get("namespace") == lead.sts["metadata"].get("namespace"),
          "%s: the followers are in the leaders' namespace" % w)

    # follower i follows leader i: EMBER_REPLICA_OF as the kubelet expands it
    ns = lead.sts["metadata"].get("namespace", "NS")
    for i in (0, lead.replicas - 1):
        env, _ = expand_env(fol.c.get("env", []), lambda vf, i=i: {
            "metadata.labels['apps.kubernetes.io/pod-index']": str(i),
            "metadata.namespace": ns}.get(vf.get("fieldRef", {}).get("fieldPath")))
        want = lead.name_pattern().replace("$(POD_NAMESPACE)", ns).replace("{i}", str(i))
        check(env.get("EMBER_REPLICA_OF") == want and env.get("EMBER_SHARD_INDEX") == str(i),
              "%s: follower %d follows shard %d's leader %s (EMBER_REPLICA_OF %r, shard index %r)"
              % (w, i, i, want, env.get("EMBER_REPLICA_OF"), env.get("EMBER_SHARD_INDEX")))
    check(setting(fol.c, "replica-of", "EMBER_REPLICA_OF") and
          not setting(lead.c, "replica-of", "EMBER_REPLICA_OF"),
          "%s: the followers have a leader, the leaders none" % w)

    # the roles apart: selectors and Services select one role each
    lpl = pod_template(lead.sts)["metadata"]["labels"]
    fpl = pod_template(fol.sts)["metadata"]["labels"]
    check(not selects(lead.sts["spec"]["selector"], fpl) and
          not selects(fol.sts["spec"]["selector"], lpl),
          "%s: the two StatefulSets' selectors do not overlap" % w)
    check(not selects({"matchLabels": lead.svc["spec"]["selector"]}, fpl) and
          not selects({"matchLabels": fol.svc["spec"]["selector"]}, lpl),
          "%s: each headless Service names one role's pods" % w)
    check(lead.sts["spec"]["serviceName"] != fol.sts["spec"]["serviceName"],
          "%s: each role its own pod DNS names" % w)

    # probes: both roles ready on the plain health service (a follower serves
    # reads); the leader is told by ember.v1.Leader, named by the annotation
    for d in (lead, fol):
        for p in ("startupProbe", "readinessProbe", "livenessProbe"):
            check(d.c.get(p, {}).get("grpc", {}).get("service", "") in ("", "ember.v1.Shard"),
                  "%s: the %s's %s asks a service SERVING on both roles" % (w, d.where, p))
    ann = pod_template(fol.sts)["metadata"].get("annotations", {})
    check(ann.get("ember.io/leader-health-service") == "ember.v1.Leader",
          "%s: the followers' pods name the leader's health service: %r" % (w, ann))

    # the PDB: one pod of either role at a time, never a worker
    sel = pdb[0]["spec"]["selector"]
    check(selects(sel, lpl) and selects(sel, fpl) and pdb[0]["spec"].get("maxUnavailable") == 1
          and not selects(sel, dict(lpl, **{"app.kubernetes.io/component": "worker"})),
          "%s: the PodDisruptionBudget covers leaders and followers, one at a time "
          "(a shard keeps its leader or its follower): %s" % (w, pdb[0]["spec"]))

    # replication traffic: leaders and followers reach each other's gRPC port
    rep = by["NetworkPolicy", "ember-replication"]["spec"]
    for dst in (lpl, fpl):
        check(selects(rep["podSelector"], dst), "%s: ember-replication covers %s" % (w, dst))
        for src in (lpl, fpl):
            check(any(any(selects(f.get("podSelector", {}), src) and "namespaceSelector" not in f
                          for f in r.get("from", []))
                      and [p.get("port") for p in r.get("ports", [])] in ([lead.port], ["grpc"])
                      for r in rep.get("ingress", [])),
                  "%s: %s may call %s on the gRPC port" % (w, src, dst))
    for r in rep.get("ingress", []):
        for f in r.get("from", []):
            check(not selects(f.get("podSelector", {}), {"ember.io/role": "stranger"}) and
                  not selects(f.get("podSelector", {}), dict(lpl, **{"app.kubernetes.io/component":
                                                                     "worker"})),
                  "%s: ember-replication admits ember's servers only: %r" % (w, f))
    return lead


def smp_base_for_patch(patch):
    """A strategic-merge patch of the StatefulSet, applied to base/ for the schema."""
    with open(os.path.join(ARGS.repo, "deploy", "k8s", "base", "statefulset.yaml")) as f:
        base = yaml.safe_load(f)
    return smp(base, {k: v for k, v in patch.items() if k not in ("apiVersion", "kind", "metadata")})


# ---- the Dockerfile ----------------------------------------------------------------------

class Dockerfile:
    def __init__(self, path):
        self.path = path
        with open(path) as f:
            text = f.read()
        lines, cur = [], ""
        for raw in text.splitlines():
            s = raw.strip()
            if not cur and (not s or s.startswith("#")):
                continue
            if cur and s.startswith("#"):
                continue
            if s.endswith("\\"):
                cur += s[:-1] + " "
                continue
            lines.append(cur + s)
            cur = ""
        self.instructions = []
        for ln in lines:
            op, _, rest = ln.partition(" ")
            self.instructions.append((op.upper(), rest.strip()))
        self.args = {}           # global ARGs (before the first FROM)
        self.stages = []         # [{"from":, "name":, "ins": [(op, rest)], "args": {}}]
        for op, rest in self.instructions:
            if op == "FROM":
                m = re.match(r"^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$", rest, re.I)
                self.stages.append({"from": self.subst(m.group(1), self.args),
                                    "from_raw": m.group(1), "name": m.group(2), "ins": [],
                                    "args": {}})
            elif not self.stages:
                if op == "ARG":     # a default may name the ARGs before it
                    k, _, v = rest.partition("=")
                    self.args[k] = self.subst(v.strip('"'), self.args)
                    self.from_args = getattr(self, "from_args", []) + [k]
            else:
                st = self.stages[-1]
                st["ins"].append((op, rest))
                if op == "ARG":
                    k, _, v = rest.partition("=")
                    st["args"][k] = v.strip('"')
        final = self.stages[-1]["ins"] if self.stages else []
        users = [r for o, r in final if o == "USER"]
        self.user = users[-1] if users else None
        try:
            self.uid = int(self.user.split(":")[0])
        except (AttributeError, ValueError):
            self.uid = None
        eps = [r for o, r in final if o == "ENTRYPOINT"]
        self.entrypoint = json.loads(eps[-1])[0] if eps else None
        cmds = [r for o, r in final if o == "CMD"]
        self.cmd = json.loads(cmds[-1]) if cmds else []
        # binaries the final stage installs: name -> path
        self.bins = {}
        for o, r in final:
            if o == "COPY" and "--from=" in r:
                parts = [p for p in r.split() if not p.startswith("--")]
                dest = parts[-1]
                for s in parts[:-1]:
                    if s.startswith("/out/bin/"):
                        self.bins[os.path.basename(s)] = os.path.join(dest, os.path.basename(s))

    @staticmethod
    def subst(s, args):
        return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: args.get(m.group(1), m.group(0)), s)

    def image_for_manifests(self):
        m = re.search(r"-t (\S+)", open(self.path).read())
        return m.group(1) if m else None


def cmake_executables(repo):
    """target -> the folder of the CMakeLists.txt that declares it."""
    out = {}
    for root, dirs, files in os.walk(repo):
        dirs[:] = [d for d in dirs if not d.startswith((".", "build"))]
        if "CMakeLists.txt" in files:
            with open(os.path.join(root, "CMakeLists.txt")) as f:
                text = f.read()
            for t in re.findall(r"add_executable\(\s*([A-Za-z0-9_.-]+)", text):
                out[t] = (os.path.relpath(root, repo), "RUNTIME_OUTPUT_DIRECTORY" in text)
    return out


def dockerignore_regex(p):
    """A .dockerignore pattern (Go's filepath.Match, plus **) as a regex."""
    out, i = "", 0
    while i < len(p):
        if p.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif p.startswith("**", i):
            out, i = out + ".*", i + 2
        elif p[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif p[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(p[i]), i + 1
    return re.compile("^" + out + "$")


def ignored(rel, patterns):
    """Whether the build context leaves rel out: a pattern that matches it or a folder
    above it drops it; the last matching pattern wins, and ! takes back in."""
    out = False
    parts = rel.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for p in patterns:
        neg = p.startswith("!")
        rx = dockerignore_regex(os.path.normpath(p[1:] if neg else p).lstrip("/"))
        if any(rx.match(x) for x in prefixes):
            out = not neg
    return out


def mode_dockerfile(a):
    repo = a.repo
    df = Dockerfile(os.path.join(repo, "deploy", "Dockerfile"))
    check(len(df.stages) >= 2, "multi-stage (%d stages)" % len(df.stages))
    build, final = df.stages[0], df.stages[-1]
    check(re.match(r"^13\.0\.\d+$", df.args.get("CUDA_VERSION", "")), "CUDA_VERSION is 13.0.x")
    check(re.match(r"^nvidia/cuda:13\.0\.\d+-devel-ubuntu24\.04$", build["from"]),
          "builds on nvidia/cuda:13.0.x-devel-ubuntu24.04 (%s)" % build["from"])
    check(re.match(r"^nvidia/cuda:13\.0\.\d+-runtime-ubuntu24\.04$", final["from"]),
          "ships on nvidia/cuda:13.0.x-runtime-ubuntu24.04 (%s)" % final["from"])
    check(build["from"].split(":")[1].split("-")[0] == final["from"].split(":")[1].split("-")[0],
          "the same CUDA version in both stages")
    # the base images are build arguments (a CPU-only image: README, "The image";
    # built for real by test_image.py), the CUDA images by default
    check(build["from_raw"] == "${BUILD_IMAGE}" and final["from_raw"] == "${RUNTIME_IMAGE}",
          "the stages' bases are the build arguments BUILD_IMAGE and RUNTIME_IMAGE (%s, %s)"
          % (build["from_raw"], final["from_raw"]))
    check(build["args"].get("CUDA_ARCHITECTURES") == "90", "ARG CUDA_ARCHITECTURES=90")
    runs = " ".join(r for o, r in build["ins"] if o == "RUN")
    check('-DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHITECTURES}"' in runs,
          "the build takes -DCMAKE_CUDA_ARCHITECTURES from the ARG")
    # CUDA required where the build image has nvcc (as CMake finds it: CUDACXX or
    # PATH), left out where it has none: the configure step's choice, run here
    conf = [r for o, r in build["ins"] if o == "RUN" and "command -v nvcc" in r]
    if check(len(conf) == 1 and 'echo "ember: ${cuda[*]}";' in conf[0],
             "one RUN chooses -DEMBER_CUDA by nvcc and prints its choice"):
        choose = conf[0][:conf[0].index('echo "ember: ${cuda[*]}";')] + 'echo "${cuda[*]}"'
        tmp = tempfile.mkdtemp(prefix="ember-deploy-nvcc.")
        try:
            fake = os.path.join(tmp, "nvcc")
            with open(fake, "w") as f:
                f.write("#!/bin/sh\n")
            os.chmod(fake, 0o755)
            for path, cudacxx, want in ((tmp, "", '-DEMBER_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90'),
                                        ("/nonexistent", "/opt/nvcc", '-DEMBER_CUDA=ON '
                                         '-DCMAKE_CUDA_ARCHITECTURES=90'),
                                        ("/nonexistent", "", "-DEMBER_CUDA=OFF")):
                env = {"PATH": path, "CUDA_ARCHITECTURES": "90"}
                if cudacxx:
                    env["CUDACXX"] = cudacxx
                r = subprocess.run(["/bin/bash", "-o", "pipefail", "-c", choose], env=env,
                                   capture_output=True, text=True, timeout=30)
                check(r.stdout.strip() == want, "nvcc %s, CUDACXX %r: the build configures %s "
                      "(got %r %s)" % ("on PATH" if path == tmp else "absent", cudacxx, want,
                                       r.stdout.strip(), r.stderr.strip()))
        finally:
            shutil.rmtree(tmp)
    check('"${cuda[@]}"' in conf[0] if conf else False, "cmake is configured with that choice")
    check("/tmp/install-deps.sh" in runs, "the build stage runs deploy/install-deps.sh")
    for st in df.stages:
        check(any(o == "SHELL" and "pipefail" in r for o, r in st["ins"]),
              "stage %s runs RUN under pipefail" % (st["name"] or st["from"]))

    # the context: COPY sources exist and are not ignored; build trees are
    ignf = os.path.join(repo, "deploy", "Dockerfile.dockerignore")
    check(os.path.exists(ignf), "deploy/Dockerfile.dockerignore exists")
    with open(ignf) as f:
        patterns = [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]
    trees = {"build", "build-release", "build-asan", ".git"} | {
        e for e in os.listdir(repo) if e.startswith("build") and os.path.isdir(os.path.join(repo, e))}
    for e in sorted(trees):
        check(ignored(e, patterns), "the build context leaves out %s" % e)
    with open(os.path.join(repo, "CMakeLists.txt")) as f:
        top = f.read()
    needed = ["CMakeLists.txt", "deploy/install-deps.sh"] + [
        d for d in ("include", "storage", "proto", "cuda", "server", "client") if d in top]
    for n in needed:
        check(not ignored(n, patterns), "the build context keeps %s" % n)
    for o, r in build["ins"]:
        if o == "COPY" and "--from" not in r:
            srcs = r.split()[:-1]
            for s in srcs:
                check(s == "." or os.path.exists(os.path.join(repo, s)) and not ignored(s, patterns),
                      "COPY source %s is in the context" % s)

    # binaries: built targets = CMake executables, copied from where CMake puts them
    m = re.search(r"cmake --build build\b[^&]*--target ((?:[\w.-]+ ?)+)", runs)
    targets = m.group(1).split() if m else []
    exes = cmake_executables(repo)
    check(set(targets) >= {"ember-server", "emberctl"}, "it builds ember-server and emberctl")
    for t in targets:
        check(t in exes, "--target %s is an add_executable in the tree" % t)
    m = re.search(r"cp ((?:build/\S+ )+)/out/bin/", runs)
    copied = m.group(1).split() if m else []
    check(sorted(os.path.basename(c) for c in copied) == sorted(targets),
          "it copies exactly the targets it builds (%s)" % copied)
    for c in copied:
        t = os.path.basename(c)
        if t in exes:
            d, moved = exes[t]
            check(c == "build/%s/%s" % (d, t) and not moved,
                  "%s is copied from where CMake writes it (build/%s/%s)" % (t, d, t))
    check(set(df.bins) == set(targets), "the final stage installs every built binary (%s)"
          % sorted(df.bins))
    for o, r in final["ins"]:
        if o == "COPY" and "--from=build" in r:
            for s in [p for p in r.split() if not p.startswith("--")][:-1]:
                check(s in ("/out/runtime-packages",) or s.startswith("/out/bin/") and
                      os.path.basename(s) in targets, "COPY --from=build %s is made by the build" % s)

    # user, entrypoint, port, settings
    check(df.uid == 10001 and re.match(r"^\d+:\d+$", df.user or ""),
          "USER is numeric 10001:10001 (%s), as runAsNonRoot needs" % df.user)
    check(df.entrypoint == df.bins.get("ember-server") == "/usr/local/bin/ember-server",
          "ENTRYPOINT is the installed ember-server")
    exposes = " ".join(r for o, r in final["ins"] if o == "EXPOSE").split()
    check("7070" in exposes, "EXPOSE 7070")
    for st in df.stages:
        for o, r in st["ins"]:
            check(not (o == "ENV" and "EMBER_" in r), "no EMBER_* ENV in the image: %s" % r)
    flags, _ = server_settings(a.server)
    for k, v in flag_values(df.cmd):
        check(k in flags, "CMD flag --%s is one ember-server takes" % k)
    hc = [r for o, r in final["ins"] if o == "HEALTHCHECK"]
    for r in hc:
        check("emberctl" in r and "health" in r, "HEALTHCHECK runs emberctl health")

    # the runtime-package step, on the local build: the packages that hold the libraries
    step = [r for o, r in build["ins"] if o == "RUN" and "/out/runtime-packages" in r]
    if check(len(step) == 1, "one RUN lists the runtime packages") and shutil.which("dpkg"):
        tmp = tempfile.mkdtemp(prefix="ember-deploy-docker.")
        try:
            os.makedirs(os.path.join(tmp, "bin"))
            for b in (a.server, a.emberctl, a.demo):
                shutil.copy(b, os.path.join(tmp, "bin"))
            script = step[0].replace("/out/", tmp + "/").replace("/tmp/libs", tmp + "/libs")
            r = subprocess.run(["bash", "-o", "pipefail", "-c", script], capture_output=True,
                               text=True, timeout=120)
            pk = r.stdout.split()
            check(r.returncode == 0 and any(p.startswith("libgrpc") for p in pk) and
                  any(p.startswith("libprotobuf-c") for p in pk) and
                  any(p.startswith("libjemalloc") for p in pk),
                  "the runtime-package step finds libgrpc, protobuf-c and jemalloc's packages "
                  "for the local build: rc %d, %s %s" % (r.returncode, pk, r.stderr))
            note("ok: runtime packages of the local build:", " ".join(pk))
        finally:
            shutil.rmtree(tmp)
    else:
        note("skip: no dpkg here to run the runtime-package step")

    hadolint = shutil.which("hadolint")
    if hadolint:
        r = subprocess.run([hadolint, df.path], capture_output=True, text=True)
        check(r.returncode == 0, "hadolint: " + r.stdout + r.stderr)
    else:
        note("note: hadolint is not installed; the checks above stand in for it")
    finish()


# ---- the StatefulSet as local processes ---------------------------------------------------

def health_check(addr, service, timeout):
    """grpc.health.v1.Health/Check, as the kubelet's gRPC probe calls it: 1 = SERVING."""
    import grpc
    req = (b"\x0a" + bytes([len(service)]) + service.encode()) if service else b""
    with grpc.insecure_channel(addr) as ch:
        call = ch.unary_unary("/grpc.health.v1.Health/Check",
                              request_serializer=lambda b: b, response_deserializer=lambda b: b)
        try:
            resp = call(req, timeout=timeout)
        except grpc.RpcError as e:
            return "rpc error %s" % e.code()
    return resp[1] if len(resp) == 2 and resp[0] == 0x08 else 0


def scrape(addr, path):
    """GET http://addr/path: the body, or None (no address, no answer, not 200)."""
    import urllib.request
    if not addr:
        return None
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy
        with opener.open("http://%s%s" % (addr, path), timeout=10) as r:
            return r.read().decode() if r.status == 200 else None
    except OSError:
        return None


def quantity_ceil(q, divisor="1"):
    def val(x):
        x = str(x)
        if x.endswith("m"):
            return float(x[:-1]) / 1000
        units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
        for u, f in units.items():
            if x.endswith(u):
                return float(x[:-len(u)]) * f
        return float(x)
    return str(int(math.ceil(val(q) / val(divisor))))


class Pod:
    def __init__(self, dep, ordinal, work, a, namespace):
        self.dep, self.i = dep, ordinal
        self.dir = os.path.join(work, "%s-%d" % (dep.sts["metadata"]["name"], ordinal))
        os.makedirs(self.dir, exist_ok=True)
        c = dep.c
        # each volume's mount path -> a directory of this pod (a claim's survives restarts)
        self.mounts = {}
        for m in c.get("volumeMounts", []):
            d = os.path.join(self.dir, "vol-" + m["name"])
            os.makedirs(d, exist_ok=True)
            self.mounts[m["mountPath"]] = d
        labels = dict(pod_template(dep.sts)["metadata"].get("labels", {}))
        labels["apps.kubernetes.io/pod-index"] = str(ordinal)
        labels["statefulset.kubernetes.io/pod-name"] = "%s-%d" % (dep.sts["metadata"]["name"], ordinal)
        fields = {"metadata.name": labels["statefulset.kubernetes.io/pod-name"],
                  "metadata.namespace": namespace, "status.podIP": "127.0.0.1",
                  "spec.nodeName": "localhost"}

        def resolve(vf):
            if "fieldRef" in vf:
                fp = vf["fieldRef"]["fieldPath"]
                m = re.match(r"^metadata\.labels\['(.+)'\]$", fp)
                if m:
                    return labels.get(m.group(1), "")   # a missing label reads as ""
                check(fp in fields, "the test resolves fieldRef %s" % fp)
                return fields.get(fp, "")
            if "resourceFieldRef" in vf:
                r = vf["resourceFieldRef"]
                kind, _, name = r["resource"].partition(".")
                q = c.get("resources", {}).get(kind, {}).get(name)
                check(q is not None, "the test resolves resourceFieldRef %s" % r["resource"])
                return quantity_ceil(q, r.get("divisor", "1"))
            if "secretKeyRef" in vf:
                # no Secret exists here: an optional key leaves the variable unset,
                # as the kubelet does; a required one would keep the pod from starting
                check(vf["secretKeyRef"].get("optional") is True,
                      "the StatefulSet starts without Secrets (secretKeyRef %s is optional)"
                      % vf["secretKeyRef"].get("name"))
                return None
            check(False, "the test resolves valueFrom %s" % vf)
            return ""
        env, sub = expand_env(c.get("env", []), resolve)
        argv = [sub(x) for x in c["command"] + c.get("args", [])]
        self.manifest_argv, self.manifest_env = list(argv), dict(env)

        # the substitutions
        local_path = self.local_path

        def local(k, v):
            if k in ("listen", "metrics-listen"):
                return "127.0.0.1:0"
            if k == "backend" and v == "gpu":
                return "cpu"
            return local_path(v)
        out = [a.server]
        for k, v in flag_values(argv[1:]):
            out.append("--%s=%s" % (k, local(k, v)) if k else v)
        envmap = {"EMBER_LISTEN": "listen", "EMBER_BACKEND": "backend",
                  "EMBER_METRICS_LISTEN": "metrics-listen"}
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("EMBER_")}
        for k, v in env.items():
            self.env[k] = local(envmap.get(k), v)
        self.argv = out
        self.proc, self.addr, self.metrics_addr = None, None, None

    def local_path(self, v):
        """A path in the container -> where this pod's volume lies here."""
        for mp, d in sorted(self.mounts.items(), key=lambda x: -len(x[0])):
            if v == mp or v.startswith(mp.rstrip("/") + "/"):
                return d + v[len(mp.rstrip("/")):]
        return v

    def start(self):
        self.log = os.path.join(self.dir, "server.log")
        with open(self.log, "ab") as lf:
            since = lf.tell()       # a restarted pod appends: read only this run's lines
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=lf, stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while time.time() < deadline:
            with open(self.log, errors="replace") as f:
                f.seek(since)
                log = f.read()
            m = re.findall(r"event=listening addr=(\S+)", log)
            if m:
                self.addr = m[-1]
                mm = re.findall(r"event=metrics_listening addr=(\S+)", log)
                self.metrics_addr = mm[-1] if mm else None
                return True
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        with open(self.log, errors="replace") as f:
            f.seek(since)
            check(False, "pod %d started: %s\n%s" % (self.i, self.argv, f.read()))
        return False

    def stop(self, sig=signal.SIGTERM, grace=60):
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return "killed after %ds" % grace


def name_to_local(names, dep, pods, namespace):
    """The Job's shard names -> the local addresses of the pods they name."""
    out = []
    rx = re.compile(r"^(?P<sts>[a-z0-9-]+)-(?P<i>\d+)\.(?P<svc>[a-z0-9-]+)\.(?P<ns>[a-z0-9-]+)"
                    r"\.svc\.cluster\.local:(?P<port>\d+)$")
    for pos, n in enumerate(names.split(",")):
        m = rx.match(n.strip())
        if not check(m, "shard name %r is <statefulset>-<i>.<service>.<ns>.svc.cluster.local:<port>" % n):
            continue
        check(m.group("sts") == dep.sts["metadata"]["name"] and m.group("svc") == dep.svc["metadata"]["name"]
              and m.group("ns") == namespace and int(m.group("port")) == dep.port
              and int(m.group("i")) == pos,
              "shard name %s is pod %d of StatefulSet %s through Service %s in %s on port %d"
              % (n, pos, dep.sts["metadata"]["name"], dep.svc["metadata"]["name"], namespace, dep.port))
        i = int(m.group("i"))
        if check(i < len(pods), "%s names a pod that exists" % n):
            out.append(pods[i].addr)
    return ",".join(out)


def tables(env):
    """{table: size summed over the shards} through emberctl."""
    r = subprocess.run([ARGS.emberctl, "tables", "--json"], env=env, capture_output=True,
                       text=True, timeout=60)
    if not check(r.returncode == 0, "emberctl tables: %d %s" % (r.returncode, r.stderr)):
        return {}
    return {t["name"]: t["size"] for t in json.loads(r.stdout)["tables"]}


def run_cluster(a, dep, names, job, work, namespace, demo_steps):
    n = dep.replicas
    note("\n== %s: %d pods of %s ==" % (dep.where, n, dep.sts["metadata"]["name"]))
    pods = [Pod(dep, i, work, a, namespace) for i in range(n)]
    p0 = pods[0]
    note("manifest: %s" % " ".join(p0.manifest_argv))
    note("env:      %s" % " ".join("%s=%s" % kv for kv in sorted(p0.manifest_env.items())))
    note("pod 0:    %s" % " ".join(p0.argv))
    try:
        if not all(p.start() for p in pods):
            return
        # the kubelet's probes
        for p in pods:
            for name in ("startupProbe", "readinessProbe", "livenessProbe"):
                probe = dep.c.get(name)
                if probe:
                    st = health_check(p.addr, probe["grpc"].get("service", ""),
                                      probe.get("timeoutSeconds", 1))
                    check(st == 1, "pod %d's %s (grpc.health.v1 on %s): SERVING, got %r"
                          % (p.i, name, p.addr, st))
        note("ok: every pod answers its gRPC probes SERVING")
        # Prometheus' scrape of each pod, as the annotations direct it
        ann = pod_template(dep.sts).get("metadata", {}).get("annotations", {})
        if ann.get("prometheus.io/scrape") == "true":
            for p in pods:
                text = scrape(p.metrics_addr, ann.get("prometheus.io/path", "/metrics"))
                want = 'shard_index="%d",shard_count="%d"} 1' % (p.i, n)
                check(text is not None and want in text,
                      "pod %d's metrics (%s) say shard %d of %d" % (p.i, p.metrics_addr, p.i, n))
            note("ok: every pod's /metrics answers, naming its shard")
        local = name_to_local(names, dep, pods, namespace)
        env = {k: v for k, v in os.environ.items() if not k.startswith("EMBER_")}
        env["EMBER_SHARDS"] = local
        note("EMBER_SHARDS %s -> %s" % (names, local))
        bins = {"emberctl": a.emberctl, "ctr_demo": a.demo}

        def job_cmd(c, extra_args=None):
            cmd = c["command"] + c.get("args", [])
            cmd[0] = bins[os.path.basename(cmd[0])]
            return cmd if extra_args is None else extra_args(cmd)
        if job:
            for c in pod_template(job)["spec"].get("initContainers", []):
                cmd = job_cmd(c)
                r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
                check(r.returncode == 0, "the Job's init container %s: %s -> %d\n%s%s"
                      % (c["name"], cmd, r.returncode, r.stdout, r.stderr))
                note("ok: init container %s: %s" % (c["name"], r.stdout.strip().replace("\n", "; ")))
        r = subprocess.run([a.emberctl, "info", "--json"], env=env, capture_output=True, text=True,
                           timeout=60)
        if check(r.returncode == 0 and "warning" not in r.stderr,
                 "emberctl info through the names: %d %s" % (r.returncode, r.stderr)):
            shards = json.loads(r.stdout)["shards"]
            check(len(shards) == n, "emberctl info answers for %d shards" % n)
            for pos, s in enumerate(shards):
                check(s["shard_index"] == pos and s["shard_count"] == n,
                      "position %d is shard %s of %s (want %d of %d)"
                      % (pos, s["shard_index"], s["shard_count"], pos, n))
                want = pods[pos].local_path(setting(dep.c, "checkpoint-dir", "EMBER_CHECKPOINT_DIR"))
                check(s["checkpoint_dir"] == want, "shard %d saves on its claim (%s, want %s)"
                      % (pos, s["checkpoint_dir"], want))
            note("ok: emberctl info: " + ", ".join("%s is shard %d/%d" % (s["address"], s["shard_index"],
                                                                            s["shard_count"]) for s in shards))
        if job and demo_steps:
            def short(cmd):
                out, skip = [], False
                for x in cmd:
                    if skip:
                        skip = False
                        continue
                    if x in ("--steps", "--expect-within", "--eval", "--log-every"):
                        skip = True
                        continue
                    out.append(x)
                return out + ["--steps", str(demo_steps), "--eval", "20000", "--log-every",
                              str(demo_steps)]
            for c in pod_template(job)["spec"]["containers"]:
                cmd = job_cmd(c, short)
                t0 = time.time()
                r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
                check(r.returncode == 0, "the Job's container %s (shortened to %d steps): %s -> %d\n%s%s"
                      % (c["name"], demo_steps, cmd, r.returncode, r.stdout, r.stderr))
                note("ok: worker %s trained %d steps through the shard names in %.1fs"
                     % (c["name"], demo_steps, time.time() - t0))
            t = tables(env)
            check(any(k.startswith("ctr_") and v > 0 for k, v in t.items()),
                  "the worker's table is on the shards: %s" % t)
        sizes = tables(env)
        # the kubelet's SIGTERM; the server must be out well inside the grace period,
        # its tables saved on the pod's claim
        grace = pod_template(dep.sts)["spec"].get("terminationGracePeriodSeconds", 30)
        ckpt = setting(dep.c, "checkpoint-dir", "EMBER_CHECKPOINT_DIR")
        for p in pods:
            rc = p.stop(signal.SIGTERM, min(grace, 60))
            check(rc == 0, "pod %d exits 0 on SIGTERM (got %r)" % (p.i, rc))
            for t in sizes:
                check(os.path.exists(os.path.join(p.local_path(ckpt), t + ".ckpt")),
                      "pod %d saved %s on its claim at SIGTERM" % (p.i, t))
        note("ok: every pod stopped cleanly on SIGTERM%s" % (
            ", saving %s on its claim" % sorted(sizes) if sizes else ""))
        if sizes:
            # the pods come back (a rollout, a drain): same ordinals, same claims
            if all(p.start() for p in pods):
                local = ",".join(p.addr for p in pods)
                env["EMBER_SHARDS"] = local
                back = tables(env)
                check(back == sizes, "the restarted pods restored their tables: %s, before %s"
                      % (back, sizes))
                note("ok: restarted pods restored %s" % back)
                for p in pods:
                    check(p.stop(signal.SIGTERM, min(grace, 60)) == 0, "pod %d stops again" % p.i)
            # the same claims under another shard count (scaled without a reshard):
            # the shard refuses to start rather than serve keys that are not its own
            p = pods[-1]
            wrong = dict(p.env, EMBER_SHARD_COUNT=str(n + 1))
            r = subprocess.run(p.argv, env=wrong, capture_output=True, text=True, timeout=60)
            check(r.returncode == 1, "pod %d with EMBER_SHARD_COUNT=%d on its claim's checkpoints of "
                  "%d shards refuses to start (exit 1): %d %s" % (p.i, n + 1, n, r.returncode,
                                                                   r.stderr.strip()))
            note("ok: claims of %d shards under EMBER_SHARD_COUNT=%d: %s"
                 % (n, n + 1, r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""))
    finally:
        for p in pods:
            p.stop(signal.SIGKILL, 10)


def run_followers(a, k8s, kubectl, work, ns):
    """deploy/k8s with followers as local processes: the leaders' pods, then the
    followers' (EMBER_REPLICA_OF's name -> the local address of the leader it
    names); both roles SERVING on the readiness probe's service, ember.v1.Leader
    SERVING on leaders only; the worker Job trains through the leaders and every
    follower converges on its leader's tables; SIGTERM stops every pod."""
    tmp = os.path.join(work, "k8s")
    shutil.copytree(k8s, tmp)
    enable_followers(os.path.join(tmp, "kustomization.yaml"))
    lead, fol = split_roles(render(tmp, kubectl), "deploy/k8s + followers")
    n = lead.replicas
    note("\n== deploy/k8s + followers: %d leaders, %d followers ==" % (n, fol.replicas))
    leaders = [Pod(lead, i, os.path.join(work, "pods"), a, ns) for i in range(n)]
    followers = [Pod(fol, i, os.path.join(work, "pods"), a, ns) for i in range(fol.replicas)]
    rx = re.compile(r"^(?P<sts>[a-z0-9-]+)-(?P<i>\d+)\.(?P<svc>[a-z0-9-]+)\.(?P<ns>[a-z0-9-]+)"
                    r"\.svc\.cluster\.local:(?P<port>\d+)$")
    try:
        if not all(p.start() for p in leaders):
            return
        for p in followers:
            m = rx.match(p.env.get("EMBER_REPLICA_OF", ""))
            if not check(m and m.group("sts") == lead.sts["metadata"]["name"] and
                         int(m.group("i")) == p.i and m.group("svc") == lead.svc["metadata"]["name"]
                         and m.group("ns") == ns and int(m.group("port")) == lead.port,
                         "follower %d's EMBER_REPLICA_OF %r names leader pod %d"
                         % (p.i, p.env.get("EMBER_REPLICA_OF"), p.i)):
                return
            p.env["EMBER_REPLICA_OF"] = leaders[p.i].addr
        note("follower 0: %s EMBER_REPLICA_OF=%s" % (" ".join(followers[0].argv),
                                                      followers[0].env["EMBER_REPLICA_OF"]))
        if not all(p.start() for p in followers):
            return
        for role, pods, want in (("leader", leaders, 1), ("follower", followers, 2)):
            for p in pods:
                probe = (lead if role == "leader" else fol).c["readinessProbe"]["grpc"]
                st = health_check(p.addr, probe.get("service", ""), 5)
                check(st == 1, "%s %d's readiness probe: SERVING, got %r" % (role, p.i, st))
                st = health_check(p.addr, "ember.v1.Leader", 5)
                check(st == want, "%s %d: ember.v1.Leader %s, got %r"
                      % (role, p.i, "SERVING (1)" if want == 1 else "NOT_SERVING (2)", st))
        note("ok: leaders and followers ready; ember.v1.Leader SERVING on the leaders only")
        env = {k: v for k, v in os.environ.items() if not k.startswith("EMBER_")}
        env["EMBER_SHARDS"] = ",".join(p.addr for p in leaders)
        r = subprocess.run([a.demo, "--steps", "200", "--eval", "20000", "--log-every", "200"],
                           env=env, capture_output=True, text=True, timeout=120)
        check(r.returncode == 0, "ctr_demo through the leaders: %d %s" % (r.returncode, r.stderr))
        want = tables(env)
        fenv = dict(env, EMBER_SHARDS=",".join(p.addr for p in followers))
        got = None
        deadline = time.time() + 60
        while time.time() < deadline:
            got = tables(fenv)
            if got == want:
                break
            time.sleep(0.5)
        check(want and got == want, "the followers converge on the leaders' tables: %s, "
              "leaders %s" % (got, want))
        note("ok: the followers hold the leaders' tables %s" % want)
        for p in leaders + followers:
            rc = p.stop(signal.SIGTERM, 60)
            check(rc == 0, "%s %d exits 0 on SIGTERM (got %r)" % (p.dep.where, p.i, rc))
        note("ok: every pod stopped cleanly on SIGTERM")
    finally:
        for p in leaders + followers:
            p.stop(signal.SIGKILL, 10)


def mode_pods(a):
    k8s = os.path.join(a.repo, "deploy", "k8s")
    kubectl = find_kubectl(a.kubectl)
    work = tempfile.mkdtemp(prefix="ember-deploy-pods.")
    ok = False
    try:
        with open(os.path.join(k8s, "examples", "worker-job.yaml")) as f:
            job = yaml.safe_load(f)
        ns = "default"
        base = Deployment(render(k8s, kubectl), "deploy/k8s")
        jenv, _ = expand_env(job["spec"]["template"]["spec"]["containers"][0]["env"],
                             lambda vf: ns if vf.get("fieldRef", {}).get("fieldPath") ==
                             "metadata.namespace" else "")
        run_cluster(a, base, jenv["EMBER_SHARDS"], job, os.path.join(work, "base"), ns, 300)

        four = Deployment(render(os.path.join(k8s, "examples", "four-shards"), kubectl),
                          "examples/four-shards")
        ns4 = four.sts["metadata"].get("namespace", "default")
        names = ",".join(four.name_pattern().replace("{i}", str(i)) for i in range(four.replicas))
        run_cluster(a, four, names, None, os.path.join(work, "four"), ns4, 0)

        # a cluster without the pod-index label (Kubernetes < 1.28): the variable is
        # empty, and the server must refuse to start rather than serve as shard 0
        p = Pod(base, 0, os.path.join(work, "old-k8s"), a, ns)
        p.env["EMBER_SHARD_INDEX"] = ""
        r = subprocess.run(p.argv, env=p.env, capture_output=True, text=True, timeout=30)
        check(r.returncode == 2 and "EMBER_SHARD_INDEX" in r.stderr,
              "without the pod-index label ember-server refuses to start (exit 2): %d %s"
              % (r.returncode, r.stderr))
        note("ok: no pod-index label -> %s" % r.stderr.strip())

        flags, _ = server_settings(a.server)
        if "replica-of" in flags:
            run_followers(a, k8s, kubectl, os.path.join(work, "followers"), ns)
        else:
            note("skip: the ember-server under test has no --replica-of (replication is not "
                 "in this build): the followers are not run")
        ok = not FAILS
    finally:
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            note("pods' logs kept in", work)
    finish()


ARGS = None


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=("manifests", "dockerfile", "pods"))
    ap.add_argument("--repo", required=True)
    ap.add_argument("--server", required=True)
    ap.add_argument("--emberctl", required=True)
    ap.add_argument("--demo", required=True)
    ap.add_argument("--kubectl", default="auto", help="a kubectl for `kubectl kustomize`, or none")
    ARGS = ap.parse_args()
    try:
        {"manifests": mode_manifests, "dockerfile": mode_dockerfile, "pods": mode_pods}[ARGS.mode](ARGS)
    except Exception:   # a manifest this test cannot read is a failure too, with the checks so far
        import traceback
        check(False, "the test stopped:\n" + traceback.format_exc())
        finish()


if __name__ == "__main__":
    main()
