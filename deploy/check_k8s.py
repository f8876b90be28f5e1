#!/usr/bin/env python3
"""Structural check of the rendered Kubernetes manifests (stdin: the output of
`kubectl kustomize deploy/k8s`). Debian ships no Kubernetes schema validator
(kubeconform, kubeval) and a server-side dry run needs a cluster, so this
checks what the deployment relies on, object by object: required fields and
their types, probes on declared ports and on /readyz and /healthz, every
volume mount backed by a volume, the PKI from a Secret, the state on a
volume claim, requests and limits set, a non-root read-only container, the
Service selecting the pod's labels and the scrape annotations, every object
carrying the kustomization's labels.

With --external (the rendering of deploy/k8s-external) there must also be one
LoadBalancer Service for devices outside the cluster that passes TCP through:
the gRPC port only (not the unauthenticated metrics), TCP, selecting the pod,
externalTrafficPolicy Local (the per-address connection limits need the
devices' own addresses). Without it no Service may leave the cluster. Never an
Ingress or an HTTP/gRPC route: mutual TLS must end at the coordinator.
With --ha HELP (the rendering of deploy/k8s-ha; HELP: `fedc coordinator
--help` output) the coordinator replicas on etcd are checked instead
(check_ha below): etcd a StatefulSet of an odd number >= 3 behind a headless
Service, mutual TLS on client and peer ports from a Secret, --initial-cluster
naming every member; the coordinator a Deployment of >= 2 replicas whose
--etcd names every member's client address, with the election's TLS files on
Secret volumes and the store on a ReadWriteMany claim; every flag it is given
one that `fedc coordinator --help` lists; probes a standby passes (the metrics
port, not the client port); a headless client Service (clients list the
replicas: only the leader listens); disruption budgets that keep etcd's
quorum and one coordinator; NetworkPolicies letting only client pods reach
the client port, only the coordinator reach etcd's client port, only members
reach the peer port. With --ha HELP --aggregators AGGHELP (the rendering of
deploy/k8s-ha-aggregators; AGGHELP: `fedc aggregator --help`) the aggregator
tier too: a StatefulSet of >= 2 whose pods each take the certificate of their
own name and advertise their own DNS name on a headless Service, every flag
one `fedc aggregator --help` lists, --etcd naming every member, --coordinator
the coordinator Service, Secrets of their own, the leader's --aggregator-tier,
an autoscaler on the StatefulSet from 2 up, a budget of one at a time, client
pods alone on the upload port, aggregators admitted to the coordinator's port
and etcd's client port.
Exit 1 with one line per problem."""
import sys
import yaml

external = "--external" in sys.argv[1:]

problems = []


def need(cond, msg):
    if not cond:
        problems.append(msg)


docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
if "--ha" in sys.argv[1:]:
    import check_k8s_ha  # beside this file
    help_text = open(sys.argv[sys.argv.index("--ha") + 1]).read()
    agg_help = None
    if "--aggregators" in sys.argv[1:]:
        agg_help = open(sys.argv[sys.argv.index("--aggregators") + 1]).read()
    problems = check_k8s_ha.check(docs, help_text, agg_help)
    if problems:
        print("\n".join(problems))
        sys.exit(1)
    print(f"check_k8s --ha{' --aggregators' if agg_help is not None else ''}: {len(docs)} objects OK")
    sys.exit(0)
by_kind = {}
for d in docs:
    need(isinstance(d.get("apiVersion"), str) and isinstance(d.get("kind"), str), f"object without apiVersion/kind: {d}")
    need(isinstance(d.get("metadata", {}).get("name"), str), f"{d.get('kind')} without metadata.name")
    by_kind.setdefault(d.get("kind"), []).append(d)
for kind in ("StatefulSet", "ConfigMap", "ServiceAccount"):
    need(len(by_kind.get(kind, [])) == 1, f"expected one {kind}, found {len(by_kind.get(kind, []))}")
for kind in ("Ingress", "HTTPRoute", "GRPCRoute"):
    need(kind not in by_kind, f"a {kind}: devices reach the coordinator through a TCP LoadBalancer; an ingress or "
         "HTTP/gRPC route terminates TLS in front of it (mutual TLS must end at the coordinator)")
services = {d["metadata"]["name"]: d for d in by_kind.get("Service", [])}
cluster_svc = by_kind.get("StatefulSet", [{}])[0].get("spec", {}).get("serviceName")
need(cluster_svc in services, f"no Service {cluster_svc} (the StatefulSet's serviceName)")
lbs = [d for d in services.values() if d.get("spec", {}).get("type") == "LoadBalancer"]
need(len(lbs) == (1 if external else 0), f"expected {1 if external else 0} LoadBalancer Service, found {len(lbs)}")
need(len(services) == 1 + len(lbs), f"unexpected Services {sorted(services)}")
for d in docs:
    lbl = d.get("metadata", {}).get("labels", {}) or {}
    need(lbl.get("app.kubernetes.io/name") == "fedc" and lbl.get("app.kubernetes.io/component") == "coordinator",
         f"{d.get('kind')} {d.get('metadata', {}).get('name')} lacks the app.kubernetes.io labels")
if problems:
    print("\n".join(problems))
    sys.exit(1)

sts, cm, sa = (by_kind[k][0] for k in ("StatefulSet", "ConfigMap", "ServiceAccount"))
svc = services[cluster_svc]
need(svc["spec"].get("type", "ClusterIP") == "ClusterIP", f"Service {cluster_svc} must stay inside the cluster")
need(sts["apiVersion"] == "apps/v1", "StatefulSet apiVersion is not apps/v1")
spec = sts["spec"]
need(spec.get("replicas") == 1, "the coordinator must run as exactly one replica (its state directory is locked)")
tmpl = spec["template"]
labels = tmpl["metadata"]["labels"]
need(spec["selector"]["matchLabels"].items() <= labels.items(), "StatefulSet selector does not match its pod labels")
need(svc["spec"]["selector"].items() <= labels.items(), "Service selector does not match the pod labels")
pod = tmpl["spec"]
need(pod.get("serviceAccountName") == sa["metadata"]["name"], "pod does not use the ServiceAccount")
psc = pod.get("securityContext", {})
need(psc.get("runAsNonRoot") is True and isinstance(psc.get("runAsUser"), int) and psc["runAsUser"] > 0,
     "pod must run as a non-root user")
volumes = {v["name"]: v for v in pod.get("volumes", [])}
claims = {c["metadata"]["name"] for c in spec.get("volumeClaimTemplates", [])}
need(len(pod["containers"]) == 1, "expected one container")
c = pod["containers"][0]
need(isinstance(c.get("image"), str) and c["image"], "container has no image")
ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
need(set(ports) >= {"grpc", "metrics"}, f"container ports {sorted(ports)} lack grpc/metrics")
for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
    g = c.get(probe, {}).get("httpGet", {})
    need(g.get("path") == path, f"{probe} does not GET {path}")
    need(g.get("port") in ports or g.get("port") in ports.values(), f"{probe} port {g.get('port')} is not declared")
res = c.get("resources", {})
need({"cpu", "memory"} <= set(res.get("requests", {})), "container lacks cpu/memory requests")
need("memory" in res.get("limits", {}), "container lacks a memory limit")
csc = c.get("securityContext", {})
need(csc.get("allowPrivilegeEscalation") is False and csc.get("readOnlyRootFilesystem") is True,
     "container must not escalate privileges and must have a read-only root filesystem")
need(csc.get("capabilities", {}).get("drop") == ["ALL"], "container must drop all capabilities")
mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
for path, name in mounts.items():
    need(name in volumes or name in claims, f"volume mount {path} names no volume or claim '{name}'")
args = " ".join(c.get("args", []))
mlisten = next((a.split("=", 1)[1] for a in c.get("args", []) if a.startswith("--metrics-listen=")), "")
need(not mlisten or mlisten.startswith(("127.", "[::1]", "localhost")) or "--metrics-public" in c.get("args", []),
     f"--metrics-listen={mlisten} is not loopback: the coordinator refuses it without --metrics-public")
for flag, mount_kind in (("--pki=", "secret"), ("--state=", "claim"), ("--config=", "configMap")):
    val = next((a[len(flag):] for a in c.get("args", []) if a.startswith(flag)), None)
    need(val is not None, f"coordinator args lack {flag}")
    if val is None:
        continue
    m = max((p for p in mounts if val == p or val.startswith(p.rstrip("/") + "/")), key=len, default=None)
    need(m is not None, f"{flag}{val} is on no mounted volume")
    if m is None:
        continue
    name = mounts[m]
    if mount_kind == "claim":
        need(name in claims, f"{flag}{val} is not on a persistent volume claim")
    else:
        need(mount_kind in volumes.get(name, {}), f"{flag}{val} is not on a {mount_kind} volume")
cfgvol = next((v for v in volumes.values() if "configMap" in v), None)
need(cfgvol is not None and cfgvol["configMap"]["name"] == cm["metadata"]["name"],
     "the config volume does not name the generated ConfigMap")
need(any(v.get("secret", {}).get("secretName") for v in volumes.values()), "the PKI does not come from a Secret")
for obj, ann in (("Service", svc["metadata"].get("annotations", {})), ("pod", tmpl["metadata"].get("annotations", {}))):
    need(ann.get("prometheus.io/scrape") == "true" and str(ann.get("prometheus.io/port")) == str(ports.get("metrics")),
         f"{obj} lacks Prometheus scrape annotations for the metrics port")
svc_targets = {p.get("targetPort") for p in svc["spec"]["ports"]}
need(svc_targets <= set(ports) | set(ports.values()), f"Service targets {svc_targets} not all declared ports")
need("coordinator.yaml" in cm.get("data", {}), "ConfigMap lacks coordinator.yaml")
for lb in lbs:
    name, lbspec = lb["metadata"]["name"], lb["spec"]
    sel = lbspec.get("selector") or {}
    need(sel and sel.items() <= labels.items(), f"{name}: selector does not match the pod labels")
    lbports = lbspec.get("ports", [])
    need(len(lbports) == 1 and lbports[0].get("targetPort") in ("grpc", ports.get("grpc")),
         f"{name}: must forward the gRPC port only (the metrics port is unauthenticated HTTP)")
    need(all(p.get("protocol", "TCP") == "TCP" for p in lbports), f"{name}: must pass TCP through")
    need(lbspec.get("externalTrafficPolicy") == "Local",
         f"{name}: externalTrafficPolicy must be Local (per-address limits need the devices' addresses)")
if problems:
    print("\n".join(problems))
    sys.exit(1)
print(f"check_k8s: {len(docs)} objects OK")
