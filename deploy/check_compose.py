#!/usr/bin/env python3
"""Who sees which key in the compose federation (stdin: the output of
`docker-compose config`; argv[1]: the fedc binary).

No engine runs here, so the check runs the PKI job's own script with the real
fedc, each of the job's named volumes a temporary directory, twice (a second
`compose up` runs the job again and must change nothing), and then looks at
what each other service would mount:
  - exactly one service issues certificates (its script runs `fedc pki init`);
  - no other service mounts a volume that holds ca.key, and none mounts a host
    path (its content cannot be checked here);
  - each client service sees exactly ca.crt and its own client-<name>.crt/.key
    in its --pki directory, on a volume no other service mounts;
  - the coordinator's --pki directory holds what it serves with (ca.crt,
    coordinator.*, signer-coordinator.*), plus the admin certificate its
    health check names, and no client's key;
  - every certificate handed out verifies against the CA (fedc pki verify).
Exit 1 with one line per problem."""
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

FEDC = os.path.abspath(sys.argv[1])
cfg = yaml.safe_load(sys.stdin)
services = cfg.get("services", {})
named_volumes = set(cfg.get("volumes", {}) or {})
problems = []


def need(cond, msg):
    if not cond:
        problems.append(msg)


def words(v):
    return v if isinstance(v, list) else ([v] if v else [])


def script_of(svc):
    return "\n".join(str(w) for w in words(svc.get("entrypoint")) + words(svc.get("command")))


def mounts(svc):
    """(source, target) of each mount; source is a named volume or a host path."""
    out = []
    for m in svc.get("volumes", []) or []:
        if isinstance(m, dict):
            out.append((m.get("source"), m.get("target")))
        else:
            parts = m.split(":")
            out.append((parts[0], parts[1] if len(parts) > 1 else parts[0]))
    return out


def arg(svc, flag):
    cmd = [str(w) for w in words(svc.get("command"))]
    for i, w in enumerate(cmd):
        if w == flag and i + 1 < len(cmd):
            return cmd[i + 1]
        if w.startswith(flag + "="):
            return w[len(flag) + 1:]
    return None


def tree(d):
    """{relative path: sha256} of the files under d."""
    out = {}
    for root, _, files in os.walk(d):
        for f in files:
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, d)] = hashlib.sha256(fh.read()).hexdigest()
    return out


issuers = [n for n, s in services.items() if "fedc pki init" in script_of(s)]
need(len(issuers) == 1, f"expected one service that runs `fedc pki init`, found {issuers}")
if problems:
    print("\n".join(problems))
    sys.exit(1)
issuer = issuers[0]

tmp = tempfile.mkdtemp(prefix="fedc-compose-")
try:
    # The container's file system, as far as the job's mounts go, under root:
    # each volume at root + its target, and every absolute path in the script
    # that starts in a mount's top directory (/out/$c as well as /out/c0)
    # moved under root too.
    root = os.path.join(tmp, "root")
    vol_dir = {}
    script = str(words(services[issuer].get("command"))[-1]).replace("$$", "$")
    tops = set()
    for src, target in mounts(services[issuer]):
        need(src in named_volumes, f"{issuer}: mounts host path {src} (only named volumes are checked)")
        vol_dir[src] = root + target
        os.makedirs(vol_dir[src], mode=0o700)
        tops.add(target.strip("/").split("/")[0])
    for top in tops:
        script = re.sub(r"(?<![\w.$/-])/" + re.escape(top) + r"(?=/|\b)", root + "/" + top, script)
    # `fedc` is the binary under test; ownership is the container runtime's concern.
    shim = os.path.join(tmp, "bin")
    os.makedirs(shim)
    os.symlink(FEDC, os.path.join(shim, "fedc"))
    with open(os.path.join(shim, "chown"), "w") as f:
        f.write("#!/bin/sh\nexit 0\n")
    os.chmod(os.path.join(shim, "chown"), 0o755)
    env = dict(os.environ, PATH=shim + os.pathsep + os.environ.get("PATH", ""))
    first = None
    for run in (1, 2):
        r = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True)
        need(r.returncode == 0, f"{issuer}: its script failed on run {run}: {r.stderr.strip()}")
        if r.returncode:
            break
        snapshot = {v: tree(d) for v, d in vol_dir.items()}
        if first is None:
            first = snapshot
        else:
            need(snapshot == first, f"{issuer}: a second run changed the volumes (the job must be idempotent)")
    if problems:
        print("\n".join(problems))
        sys.exit(1)

    holds_ca_key = {v for v, files in first.items() if any(os.path.basename(f) == "ca.key" for f in files)}
    need(holds_ca_key, f"{issuer}: no volume holds ca.key after the job (is this the issuer?)")
    users = {}
    for name, svc in services.items():
        for src, target in mounts(svc):
            users.setdefault(src, set()).add(name)
            if name == issuer:
                continue
            need(src in named_volumes, f"{name}: mounts host path {src} (only named volumes can be checked)")
            need(src not in holds_ca_key, f"{name}: mounts volume {src}, which holds ca.key (only {issuer} may)")

    def pki_volume(name, svc):
        pki = arg(svc, "--pki")
        need(pki is not None, f"{name}: no --pki")
        src = next((s for s, t in mounts(svc) if t == pki), None)
        need(src in first, f"{name}: --pki {pki} is not a volume the issuer fills")
        return src if src in first else None

    def verify(name, src, cert):
        d = vol_dir[src]
        r = subprocess.run([FEDC, "pki", "verify", "--ca", os.path.join(d, "ca.crt"), "--cert", os.path.join(d, cert)],
                           capture_output=True, text=True)
        need(r.returncode == 0, f"{name}: {cert} does not verify against its ca.crt: {r.stderr.strip()}")

    clients = coordinators = 0
    for name, svc in services.items():
        role = str(words(svc.get("command"))[0]) if words(svc.get("command")) else ""
        if name == issuer or role not in ("client", "coordinator"):
            continue
        src = pki_volume(name, svc)
        if src is None:
            continue
        files = set(first[src])
        if role == "client":
            clients += 1
            cn = arg(svc, "--name")
            want = {"ca.crt", f"client-{cn}.crt", f"client-{cn}.key"}
            need(files == want, f"{name}: sees {sorted(files)} in --pki, want exactly {sorted(want)}")
            need(users[src] == {issuer, name}, f"{name}: its volume {src} is also mounted by "
                 f"{sorted(users[src] - {issuer, name})}")
            verify(name, src, f"client-{cn}.crt")
        else:
            coordinators += 1
            want = {"ca.crt", "coordinator.crt", "coordinator.key", "signer-coordinator.crt", "signer-coordinator.key"}
            need(want <= files, f"{name}: --pki lacks {sorted(want - files)}")
            hc = [str(w) for w in words(svc.get("healthcheck", {}).get("test"))]
            if "--name" in hc:
                admin = hc[hc.index("--name") + 1]
                need({f"admin-{admin}.crt", f"admin-{admin}.key"} <= files,
                     f"{name}: its health check's admin certificate admin-{admin} is not in --pki")
            need(not any(f.startswith("client-") and f.endswith(".key") for f in files),
                 f"{name}: --pki holds a client's key")
            for c in ("coordinator.crt", "signer-coordinator.crt"):
                verify(name, src, c)
    need(clients > 0 and coordinators == 1, f"expected a coordinator and clients, found {coordinators} and {clients}")
finally:
    shutil.rmtree(tmp, ignore_errors=True)
if problems:
    print("\n".join(problems))
    sys.exit(1)
print(f"check_compose: ca.key only in {sorted(holds_ca_key)} (mounted by {issuer} alone); "
      f"{clients} clients each see ca.crt and their own certificate and key")
