"""check_k8s.py --ha: the checks of deploy/k8s-ha (coordinator replicas with
leader election on etcd), object by object. check(docs, help_text) returns
one line per problem. What is checked and why is in check_k8s.py's docstring;
the reasons for each rule are in the manifests' comments and
docs/operations.md ("Running replicas and failing over")."""
import re

FEDC = "app.kubernetes.io/name"
COMP = "app.kubernetes.io/component"
# A pod of each kind, as the NetworkPolicies must tell them apart.
CLIENT_POD = {FEDC: "fedc", COMP: "client"}
OTHER_POD = {"app": "something-else"}


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


def check(docs, help_text):
    problems = []

    def need(cond, msg):
        if not cond:
            problems.append(msg)

    by_kind = {}
    for d in docs:
        by_kind.setdefault(d.get("kind"), []).append(d)
        lbl = d.get("metadata", {}).get("labels", {}) or {}
        need(lbl.get(FEDC) == "fedc" and lbl.get(COMP) in ("coordinator", "etcd"),
             f"{d.get('kind')} {d.get('metadata', {}).get('name')} lacks the app.kubernetes.io name/component labels")
    for kind in ("Ingress", "HTTPRoute", "GRPCRoute"):
        need(kind not in by_kind, f"a {kind}: mutual TLS must end at the coordinator")
    deps = by_kind.get("Deployment", [])
    stss = by_kind.get("StatefulSet", [])
    need(len(deps) == 1, f"expected one Deployment (the coordinator replicas), found {len(deps)}")
    need(len(stss) == 1, f"expected one StatefulSet (etcd), found {len(stss)}")
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
                                      ("etcd pods", etcd_labels), ("other pods", OTHER_POD)):
                if other_name not in allowed:
                    need(not matches(sel, other), f"{what}: {other_name} are admitted")

    pols, rules = rules_to(coord_labels, ("grpc",), cports)
    need(pols, "no NetworkPolicy selects the coordinator pods")
    need(any(admits(x, CLIENT_POD) for x in rules), "no NetworkPolicy rule lets client pods reach the client port")
    for x in rules:
        only(x, ("client pods",), "coordinator client port")
    pols, rules = rules_to(etcd_labels, ("client",), eports)
    need(pols, "no NetworkPolicy selects the etcd pods")
    need(any(admits(x, coord_labels) for x in rules), "no NetworkPolicy rule lets the coordinator reach etcd")
    for x in rules:
        only(x, ("coordinator pods",), "etcd client port")
    _, rules = rules_to(etcd_labels, ("peer",), eports)
    need(any(admits(x, etcd_labels) for x in rules), "no NetworkPolicy rule lets etcd members reach each other")
    for x in rules:
        only(x, ("etcd pods",), "etcd peer port")
    return problems
