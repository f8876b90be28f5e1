"""check_k8s.py --ha: the checks of deploy/k8s-ha (coordinator replicas with
leader election on etcd), object by object. check(docs, help_text) returns
one line per problem. What is checked and why is in check_k8s.py's docstring;
the reasons for each rule are in the manifests' comments and
docs/operations.md ("Running replicas and failing over").
With agg_help (`fedc aggregator --help` output: the rendering of
deploy/k8s-ha-aggregators) the aggregator tier is checked as well
(check_aggregators below) and required: the leader's --aggregator-tier, the
aggregators' StatefulSet, Service, autoscaler, budget and policies, and
aggregator pods admitted to the coordinator's and etcd's client ports; without
it neither may be there."""
import os
import re

FEDC = "app.kubernetes.io/name"
COMP = "app.kubernetes.io/component"
# A pod of each kind, as the NetworkPolicies must tell them apart.
CLIENT_POD = {FEDC: "fedc", COMP: "client"}
AGG_POD = {FEDC: "fedc", COMP: "aggregator"}
OTHER_POD = {"app": "something-else"}
PROM_POD = {FEDC: "prometheus"}
HERE = os.path.dirname(os.path.abspath(__file__))


def aggregator_metric_names():
    """The gauges and counters `fedc aggregator` exports (coordinator/aggr_metrics.c)."""
    try:
        with open(os.path.join(HERE, "..", "coordinator", "aggr_metrics.c")) as f:
            return set(re.findall(r'"(fedc_aggregator_[a-z_]+)"', f.read()))
    except OSError:
        return set()


def adapter_series():
    """The series deploy/prometheus/adapter-rules.yaml serves to the custom-metrics API."""
    try:
        with open(os.path.join(HERE, "prometheus", "adapter-rules.yaml")) as f:
            return set(re.findall(r'as: "([a-z_]+)"', f.read()))
    except OSError:
        return set()


def matches(sel, labels):
    """Kubernetes label selector semantics (matchLabels and matchExpressions)."""
    if sel is None:
        return False
    for k, v in (sel.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in sel.get("matchExpressions") or []:
        k, op, vals = e.get("key"), e.get("operator"), e.get("values") or []
        if op == "In" and labels.get(k) not in vals:
            return False
        if op == "NotIn" and labels.get(k) in vals:
            return False
        if op == "Exists" and k not in labels:
            return False
        if op == "DoesNotExist" and k in labels:
            return False
    return True


def arg_map(args):
    out = {}
    for a in args:
        if a.startswith("--"):
            k, _, v = a[2:].partition("=")
            out[k] = v
    return out


def check(docs, help_text, agg_help=None):
    problems = []
    agg = agg_help is not None
    comps = ("coordinator", "etcd", "aggregator") if agg else ("coordinator", "etcd")

    def need(cond, msg):
        if not cond:
            problems.append(msg)

    by_kind = {}
    for d in docs:
        by_kind.setdefault(d.get("kind"), []).append(d)
        lbl = d.get("metadata", {}).get("labels", {}) or {}
        need(lbl.get(FEDC) == "fedc" and lbl.get(COMP) in comps,
             f"{d.get('kind')} {d.get('metadata', {}).get('name')} lacks the app.kubernetes.io name/component labels")
    for kind in ("Ingress", "HTTPRoute", "GRPCRoute"):
        need(kind not in by_kind, f"a {kind}: mutual TLS must end at the coordinator")
    deps = by_kind.get("Deployment", [])
    def pods_of(w):
        return w.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {}) or {}
    stss = [w for w in by_kind.get("StatefulSet", []) if pods_of(w).get(COMP) == "etcd"]
    astss = [w for w in by_kind.get("StatefulSet", []) if pods_of(w).get(COMP) == "aggregator"]
    need(len(deps) == 1, f"expected one Deployment (the coordinator replicas), found {len(deps)}")
    need(len(stss) == 1, f"expected one StatefulSet of etcd pods, found {len(stss)}")
    need(len(astss) == (1 if agg else 0), f"expected {1 if agg else 0} StatefulSet of aggregator pods, found "
         f"{len(astss)}")
    need(len(by_kind.get("StatefulSet", [])) == len(stss) + len(astss), "a StatefulSet of neither etcd nor aggregators")
    if problems:
        return problems
    dep, sts = deps[0], stss[0]
    coord_labels = dep["spec"]["template"]["metadata"]["labels"]
    etcd_labels = sts["spec"]["template"]["metadata"]["labels"]
    need(coord_labels.get(COMP) == "coordinator", "the Deployment's pods are not component=coordinator")
    need(etcd_labels.get(COMP) == "etcd", "the StatefulSet's pods are not component=etcd")
    for w in (dep, sts):
        need(matches(w["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"]),
             f"{w['kind']} selector does not match its pod labels")

    # ---- every container: hardened, resourced, its mounts backed ----
    def container(w):
        pod = w["spec"]["template"]["spec"]
        need(len(pod["containers"]) == 1, f"{w['kind']}: expected one container")
        c = pod["containers"][0]
        psc = pod.get("securityContext", {})
        need(psc.get("runAsNonRoot") is True and isinstance(psc.get("runAsUser"), int) and psc["runAsUser"] > 0,
             f"{w['kind']}: pod must run as a non-root user")
        need(pod.get("automountServiceAccountToken") is False, f"{w['kind']}: mounts a service account token")
        csc = c.get("securityContext", {})
        need(csc.get("allowPrivilegeEscalation") is False and csc.get("readOnlyRootFilesystem") is True
             and csc.get("capabilities", {}).get("drop") == ["ALL"],
             f"{w['kind']}: container must not escalate, must have a read-only root and drop all capabilities")
        res = c.get("resources", {})
        need({"cpu", "memory"} <= set(res.get("requests", {})) and "memory" in res.get("limits", {}),
             f"{w['kind']}: container lacks cpu/memory requests or a memory limit")
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        claims = {t["metadata"]["name"]: t for t in w["spec"].get("volumeClaimTemplates", [])}
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
        for path, name in mounts.items():
            need(name in volumes or name in claims, f"{w['kind']}: mount {path} names no volume '{name}'")
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        return c, volumes, claims, mounts, ports

    def volume_of(path, mounts, volumes, claims):
        m = max((p for p in mounts if path == p or path.startswith(p.rstrip("/") + "/")), key=len, default=None)
        if m is None:
            return None
        name = mounts[m]
        return volumes.get(name) or ({"claimTemplate": claims[name]} if name in claims else None)

    cc, cvols, _, cmounts, cports = container(dep)
    ec, evols, eclaims, emounts, eports = container(sts)

    # ---- etcd ----
    n = sts["spec"].get("replicas")
    need(isinstance(n, int) and n >= 3 and n % 2 == 1, f"etcd must run an odd number >= 3 of members, not {n}")
    n = n if isinstance(n, int) else 0
    services = {s["metadata"]["name"]: s for s in by_kind.get("Service", [])}
    esvc = services.get(sts["spec"].get("serviceName"))
    need(esvc is not None, f"no Service {sts['spec'].get('serviceName')} (etcd's serviceName)")
    eargs = arg_map(ec.get("args", []))
    need(set(eports) >= {"client", "peer"}, f"etcd container ports {sorted(eports)} lack client/peer")
    sname, hname = sts["metadata"]["name"], (esvc or {}).get("metadata", {}).get("name", "")
    if esvc:
        need(esvc["spec"].get("clusterIP") == "None", "etcd's Service must be headless (members by name)")
        need(esvc["spec"].get("publishNotReadyAddresses") is True,
             "etcd's Service must publish members before they are ready (they need each other to become ready)")
        need(matches({"matchLabels": esvc["spec"].get("selector")}, etcd_labels), "etcd's Service does not select its pods")
    members = {f"{sname}-{i}" for i in range(n)}
    cluster = dict(x.split("=", 1) for x in eargs.get("initial-cluster", "").split(",") if "=" in x)
    need(set(cluster) == members, f"--initial-cluster names {sorted(cluster)}, the StatefulSet runs {sorted(members)}")
    for m, url in cluster.items():
        need(url == f"https://{m}.{hname}:{eports.get('peer')}", f"--initial-cluster: {m} at {url}: not https on "
             f"{m}.{hname}:{eports.get('peer')}")
    for flag in ("listen-client-urls", "advertise-client-urls", "listen-peer-urls", "initial-advertise-peer-urls"):
        need(eargs.get(flag, "").startswith("https://"), f"etcd --{flag} is not https")
    need("client-cert-auth" in eargs and "peer-client-cert-auth" in eargs,
         "etcd must require client certificates on both ports (--client-cert-auth, --peer-client-cert-auth)")
    for flag in ("trusted-ca-file", "cert-file", "key-file", "peer-trusted-ca-file", "peer-cert-file", "peer-key-file"):
        v = volume_of(eargs.get(flag, ""), emounts, evols, eclaims)
        need(v is not None and "secret" in v, f"etcd --{flag}={eargs.get(flag)} is not on a Secret volume")
    v = volume_of(eargs.get("data-dir", ""), emounts, evols, eclaims)
    need(v is not None and "claimTemplate" in v, "etcd --data-dir is not on the member's own volume claim")
    for probe in ("readinessProbe", "livenessProbe"):
        need(probe in ec, f"etcd lacks a {probe}")

    # ---- the coordinator replicas ----
    r = dep["spec"].get("replicas")
    need(isinstance(r, int) and r >= 2, f"the coordinator must run at least 2 replicas, not {r}")
    r = r if isinstance(r, int) else 0
    need(cc.get("args", [None])[0] == "coordinator", "the Deployment does not run `fedc coordinator`")
    cargs = arg_map(cc.get("args", []))
    flags = set(re.findall(r"^\s*--([a-z0-9-]+)", help_text, re.M))
    need(len(flags) > 50, "the --help text lists no flags")
    for k in cargs:
        need(k in flags, f"coordinator flag --{k} is not one `fedc coordinator --help` lists")
    for k in ("etcd", "etcd-ca", "etcd-cert", "etcd-key", "pki", "state", "listen", "metrics-listen", "config"):
        need(k in cargs, f"coordinator args lack --{k}")
    need(("aggregator-tier" in cargs) == agg, "the coordinator runs with --aggregator-tier" if not agg else
         "the coordinator lacks --aggregator-tier: it would take uploads itself and never name an aggregator")
    want = {f"{m}.{hname}:{eports.get('client')}" for m in members}
    got = set(x.strip() for x in cargs.get("etcd", "").split(","))
    need(got == want, f"--etcd names {sorted(got)}, not every etcd member's client address {sorted(want)}")
    for k in ("etcd-ca", "etcd-cert", "etcd-key", "pki"):
        v = volume_of(cargs.get(k, ""), cmounts, cvols, {})
        need(v is not None and "secret" in v, f"coordinator --{k}={cargs.get(k)} is not on a Secret volume")
    v = volume_of(cargs.get("config", ""), cmounts, cvols, {})
    cms = {c["metadata"]["name"]: c for c in by_kind.get("ConfigMap", [])}
    need(v is not None and v.get("configMap", {}).get("name") in cms, "coordinator --config is not on the ConfigMap")
    v = volume_of(cargs.get("state", ""), cmounts, cvols, {})
    pvcs = {p["metadata"]["name"]: p for p in by_kind.get("PersistentVolumeClaim", [])}
    claim = pvcs.get((v or {}).get("persistentVolumeClaim", {}).get("claimName"))
    need(claim is not None, "coordinator --state is not on a PersistentVolumeClaim of this rendering")
    need(claim is None or "ReadWriteMany" in claim["spec"].get("accessModes", []),
         "the shared store's claim is not ReadWriteMany (every replica mounts it)")
    need(set(cports) >= {"grpc", "metrics"}, f"coordinator ports {sorted(cports)} lack grpc/metrics")
    need(cargs.get("listen", "").rsplit(":", 1)[-1] == str(cports.get("grpc")), "--listen is not the grpc port")
    need(cargs.get("metrics-listen", "").rsplit(":", 1)[-1] == str(cports.get("metrics")),
         "--metrics-listen is not the metrics port")
    need("metrics-public" in cargs, "--metrics-listen off loopback needs --metrics-public")
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        g = cc.get(probe, {}).get("httpGet", {})
        need(g.get("path") == path, f"coordinator {probe} does not GET {path}")
        need(g.get("port") in ("metrics", cports.get("metrics")),
             f"coordinator {probe} must use the metrics port: a standby does not listen on the client port")

    # ---- Services: clients list the replicas ----
    csvcs = [s for s in services.values() if matches({"matchLabels": s["spec"].get("selector")}, coord_labels)]
    need(len(csvcs) == 1, f"expected one Service for the coordinator, found {len(csvcs)}")
    for s in csvcs:
        need(s["spec"].get("clusterIP") == "None", f"Service {s['metadata']['name']} must be headless: clients list "
             "the replicas and connect to the one that listens (a ClusterIP sends half the connections to a standby)")
        need(any(p.get("targetPort") in ("grpc", cports.get("grpc")) for p in s["spec"].get("ports", [])),
             f"Service {s['metadata']['name']} does not forward the grpc port")
    for s in services.values():
        need(s["spec"].get("type", "ClusterIP") == "ClusterIP", f"Service {s['metadata']['name']} leaves the cluster")

    # ---- disruption budgets ----
    def budget(labels, what):
        pdbs = [p for p in by_kind.get("PodDisruptionBudget", []) if matches(p["spec"].get("selector"), labels)]
        need(len(pdbs) == 1, f"expected one PodDisruptionBudget for {what}, found {len(pdbs)}")
        return pdbs[0]["spec"] if pdbs else {}

    quorum = n // 2 + 1
    spec = budget(etcd_labels, "etcd")
    need(spec.get("minAvailable") == quorum or spec.get("maxUnavailable") == n - quorum,
         f"etcd's budget must keep a quorum ({quorum} of {n}) and allow no more down: {spec}")
    spec = budget(coord_labels, "the coordinator")
    down = spec.get("maxUnavailable", r - spec.get("minAvailable", r) if "minAvailable" in spec else None)
    need(isinstance(down, int) and 1 <= down <= r - 1,
         f"the coordinator's budget must let one replica go at a time and never all: {spec}")

    # ---- NetworkPolicies ----
    def rules_to(labels, port_names, ports):
        """The ingress rules of policies selecting these pods that open a port named in port_names."""
        pols = [p for p in by_kind.get("NetworkPolicy", []) if matches(p["spec"].get("podSelector"), labels)
                and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])]
        out = []
        for p in pols:
            for rule in p["spec"].get("ingress", []) or []:
                rports = [x.get("port") for x in rule.get("ports", []) or []]
                if not rports or any(x in port_names or x in [ports.get(nm) for nm in port_names] for x in rports):
                    out.append(rule)
        return pols, out

    def admits(rule, labels):
        return any(matches(peer.get("podSelector"), labels) for peer in rule.get("from", []) or [])

    def only(rule, allowed, what):
        """Every source the rule names is a pod selector that is not empty and admits none of the others."""
        peers = rule.get("from")
        need(bool(peers), f"{what}: a rule open to every source")
        for peer in peers or []:
            sel = peer.get("podSelector")
            need(sel is not None and "ipBlock" not in peer, f"{what}: a source that is not a pod selector: {peer}")
            if sel is None:
                continue
            need(bool(sel.get("matchLabels") or sel.get("matchExpressions")), f"{what}: an empty pod selector")
            for other_name, other in (("client pods", CLIENT_POD), ("coordinator pods", coord_labels),
                                      ("etcd pods", etcd_labels), ("aggregator pods", AGG_POD),
                                      ("other pods", OTHER_POD)):
                if other_name not in allowed:
                    need(not matches(sel, other), f"{what}: {other_name} are admitted")

    pols, rules = rules_to(coord_labels, ("grpc",), cports)
    need(pols, "no NetworkPolicy selects the coordinator pods")
    need(any(admits(x, CLIENT_POD) for x in rules), "no NetworkPolicy rule lets client pods reach the client port")
    need(not agg or any(admits(x, AGG_POD) for x in rules),
         "no NetworkPolicy rule lets aggregator pods reach the coordinator (its Aggregator RPCs)")
    for x in rules:
        only(x, ("client pods", "aggregator pods") if agg else ("client pods",), "coordinator client port")
    pols, rules = rules_to(etcd_labels, ("client",), eports)
    need(pols, "no NetworkPolicy selects the etcd pods")
    need(any(admits(x, coord_labels) for x in rules), "no NetworkPolicy rule lets the coordinator reach etcd")
    need(not agg or any(admits(x, AGG_POD) for x in rules),
         "no NetworkPolicy rule lets aggregator pods reach etcd (they register there)")
    for x in rules:
        only(x, ("coordinator pods", "aggregator pods") if agg else ("coordinator pods",), "etcd client port")
    _, rules = rules_to(etcd_labels, ("peer",), eports)
    need(any(admits(x, etcd_labels) for x in rules), "no NetworkPolicy rule lets etcd members reach each other")
    for x in rules:
        only(x, ("etcd pods",), "etcd peer port")

    # ---- the aggregator tier (deploy/k8s-ha-aggregators) ----
    if not agg:
        need("HorizontalPodAutoscaler" not in by_kind, "an autoscaler without the aggregator tier")
        return problems
    asts = astss[0]
    agg_labels = pods_of(asts)
    need(matches({"matchLabels": AGG_POD}, agg_labels), f"the aggregators' pods are not labelled {AGG_POD}")
    need(matches(asts["spec"]["selector"], agg_labels), "the aggregators' StatefulSet selector does not match its pods")
    ac, avols, _, amounts, aports = container(asts)
    need(ac.get("args", [None])[0] == "aggregator", "the aggregators' StatefulSet does not run `fedc aggregator`")
    aargs = arg_map(ac.get("args", []))
    # Its option lines may name several flags before the text ("--pki DIR --name NAME  ...").
    aflags = {f for col in re.findall(r"^\s*(--\S.*?)(?:\s{2,}|$)", agg_help, re.M)
              for f in re.findall(r"--([a-z0-9-]+)", col)}
    need(len(aflags) > 10, "the aggregator's --help text lists no flags")
    for k in aargs:
        need(k in aflags, f"aggregator flag --{k} is not one `fedc aggregator --help` lists")
    for k in ("pki", "name", "listen", "advertise", "coordinator", "etcd", "etcd-ca", "etcd-cert", "etcd-key"):
        need(k in aargs, f"aggregator args lack --{k}")
    # The autoscaler owns the count: a replicas field would be set back by every `kubectl apply`.
    need("replicas" not in asts["spec"], f"the aggregators' StatefulSet sets replicas: "
         f"{asts['spec'].get('replicas')}: every apply would undo the autoscaler (and stop the aggregators above it)")
    a = 0  # the autoscaler's minReplicas, below
    need("upload" in aports, f"aggregator ports {sorted(aports)} lack upload")
    need(aargs.get("listen", "").rsplit(":", 1)[-1] == str(aports.get("upload")), "aggregator --listen is not the "
         "upload port")
    # Each pod its own name: the certificate, the registry key and the address all follow the pod's name.
    pod_name_vars = {e["name"] for e in ac.get("env", []) or []
                     if (e.get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath") == "metadata.name"}
    var = re.fullmatch(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", aargs.get("name", ""))
    need(var is not None and var.group(1) in pod_name_vars, f"aggregator --name={aargs.get('name')} is not the pod's "
         "name (pods sharing a certificate name share one registry key)")
    asvc = services.get(asts["spec"].get("serviceName"))
    need(asvc is not None, f"no Service {asts['spec'].get('serviceName')} (the aggregators' serviceName)")
    if asvc and var:
        want_adv = f"$({var.group(1)}).{asvc['metadata']['name']}:{aports.get('upload')}"
        need(aargs.get("advertise") == want_adv, f"aggregator --advertise={aargs.get('advertise')}, not the pod's own "
             f"name on its Service ({want_adv}): clients must reach this pod, and its certificate names that host")
    if asvc:
        need(asvc["spec"].get("clusterIP") == "None", "the aggregators' Service must be headless (a record per pod: "
             "a client uploads to the aggregator its task names, not to any)")
        need(asvc["spec"].get("publishNotReadyAddresses") is True, "the aggregators' Service must publish pods before "
             "they are ready (an aggregator is assigned clients once it registers)")
        need(matches({"matchLabels": asvc["spec"].get("selector")}, agg_labels),
             "the aggregators' Service does not select their pods")
        need(any(p.get("targetPort") in ("upload", aports.get("upload")) for p in asvc["spec"].get("ports", [])),
             "the aggregators' Service does not forward the upload port")
    # The leader: the coordinator Service on the port it forwards to the client port.
    csvc = csvcs[0] if len(csvcs) == 1 else {"metadata": {"name": "?"}, "spec": {}}
    cname = csvc["metadata"]["name"]
    cport = next((p.get("port") for p in csvc["spec"].get("ports", [])
                  if p.get("targetPort") in ("grpc", cports.get("grpc"))), None)
    for t in aargs.get("coordinator", "").split(","):
        host, _, port = t.strip().rpartition(":")
        need((host == cname or host.startswith(cname + ".")) and port == str(cport),
             f"aggregator --coordinator names {t}, not the coordinator Service {cname}:{cport}")
    got = set(x.strip() for x in aargs.get("etcd", "").split(","))
    need(got == want, f"aggregator --etcd names {sorted(got)}, not every etcd member's client address {sorted(want)}")
    for k in ("pki", "etcd-ca", "etcd-cert", "etcd-key"):
        v = volume_of(aargs.get(k, ""), amounts, avols, {})
        need(v is not None and "secret" in v, f"aggregator --{k}={aargs.get(k)} is not on a Secret volume")
    # Its own Secrets: never the coordinator's key or the etcd members' key.
    theirs = {v["secret"].get("secretName") for v in list(cvols.values()) + list(evols.values()) if "secret" in v}
    for v in avols.values():
        if "secret" in v:
            need(v["secret"].get("secretName") not in theirs, f"the aggregators mount Secret "
                 f"{v['secret'].get('secretName')}, which holds another role's key")
    for probe in ("readinessProbe", "livenessProbe"):
        pr = ac.get(probe, {})
        port = (pr.get("tcpSocket") or pr.get("grpc") or pr.get("httpGet") or {}).get("port")
        need(port in ("upload", aports.get("upload")), f"aggregator {probe} is not on the upload port")
    # Its metrics: where the scraper looks, and only the scraper may look.
    need("metrics" in aports, f"aggregator ports {sorted(aports)} lack metrics (the autoscaler's connection count)")
    need(aargs.get("metrics-listen", "").rsplit(":", 1)[-1] == str(aports.get("metrics")),
         "aggregator --metrics-listen is not the metrics port")
    need("metrics-public" in aargs, "aggregator --metrics-listen off loopback needs --metrics-public")
    ann = asts["spec"]["template"]["metadata"].get("annotations") or {}
    need(ann.get("prometheus.io/scrape") == "true" and str(ann.get("prometheus.io/port")) == str(aports.get("metrics")),
         "the aggregator pods' prometheus.io annotations do not name the metrics port")
    pols, rules = rules_to(agg_labels, ("metrics",), aports)
    need(any(admits(x, PROM_POD) for x in rules), "no NetworkPolicy rule lets Prometheus reach the aggregators' metrics")
    for x in rules:
        only(x, (), "aggregator metrics port")
    # Autoscaler: on the aggregators, never fewer than two.
    hpas = by_kind.get("HorizontalPodAutoscaler", [])
    if len(hpas) == 1 and isinstance(hpas[0]["spec"].get("minReplicas", 1), int):
        a = hpas[0]["spec"].get("minReplicas", 1)
    need(len(hpas) == 1, f"expected one HorizontalPodAutoscaler (the aggregators), found {len(hpas)}")
    for h in hpas:
        hs = h["spec"]
        ref = hs.get("scaleTargetRef", {})
        need(h.get("apiVersion") == "autoscaling/v2", "the autoscaler is not autoscaling/v2")
        need(ref.get("apiVersion") == "apps/v1" and ref.get("kind") == "StatefulSet"
             and ref.get("name") == asts["metadata"]["name"],
             f"the autoscaler scales {ref}, not the aggregators' StatefulSet {asts['metadata']['name']}")
        lo, hi = hs.get("minReplicas", 1), hs.get("maxReplicas")
        need(isinstance(lo, int) and isinstance(hi, int) and 2 <= lo <= hi,
             f"the autoscaler's range {lo}..{hi} must start at 2 aggregators or more")
        need(not isinstance(hi, int) or hi <= 256, f"the autoscaler's maxReplicas {hi}: the leader keeps at most 256 "
             "aggregators (FC_TIER_MAX_MEMBERS)")
        ms = hs.get("metrics") or []
        need(bool(ms), "the autoscaler names no metric")
        exported, served = aggregator_metric_names(), adapter_series()
        for m in ms:
            if m.get("type") == "Pods":
                name = ((m.get("pods") or {}).get("metric") or {}).get("name")
                need(name in exported, f"the autoscaler reads {name}, which `fedc aggregator` does not export "
                     f"(coordinator/aggr_metrics.c)")
                need(name in served, f"the autoscaler reads {name}, which deploy/prometheus/adapter-rules.yaml "
                     "does not serve")
                need((m["pods"].get("target") or {}).get("type") == "AverageValue",
                     "a Pods metric's target must be an AverageValue")
            r = m.get("resource") or {}
            if m.get("type") == "Resource" and r.get("target", {}).get("type") == "Utilization":
                need(r.get("name") in ac.get("resources", {}).get("requests", {}),
                     f"the autoscaler targets {r.get('name')} utilization, which the aggregator does not request")
    spec = budget(agg_labels, "the aggregators")
    down = spec.get("maxUnavailable", a - spec.get("minAvailable", a) if "minAvailable" in spec else None)
    need(isinstance(down, int) and 1 <= down <= a - 1,
         f"the aggregators' budget must let one go at a time and never all: {spec}")
    pols, rules = rules_to(agg_labels, ("upload",), aports)
    need(pols, "no NetworkPolicy selects the aggregator pods")
    need(any(admits(x, CLIENT_POD) for x in rules), "no NetworkPolicy rule lets client pods reach the upload port")
    for x in rules:
        only(x, ("client pods",), "aggregator upload port")
    return problems
