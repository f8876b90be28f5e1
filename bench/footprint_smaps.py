#!/usr/bin/env python3
"""footprint_smaps.py - where a program's peak RSS goes (docs/results.md,
"Client footprint"): runs CMD, reads /proc/PID/smaps each time VmRSS reaches
a new high (polled every 2 ms), and prints the mappings of the highest
sample grouped by library, [heap], anonymous memory (malloc arenas, thread
stacks, the rest) and [stack]: Rss, Shared_Clean, Private_Clean,
Private_Dirty, Anonymous in KiB, then totals and VmHWM. Not a test; a peak
shorter than the poll may be missed (compare the sample with VmHWM).

    bench/footprint_smaps.py [--json OUT] CMD [ARGS...]
"""
import json, os, re, subprocess, sys, time

KEYS = ("Rss", "Shared_Clean", "Private_Clean", "Private_Dirty", "Anonymous")


def smaps(pid):
    maps, cur = [], None
    for line in open(f"/proc/{pid}/smaps"):
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            f = line.split(None, 5)
            a, b = (int(x, 16) for x in f[0].split("-"))
            cur = {"start": a, "size": b - a, "perms": f[1], "name": f[5].strip() if len(f) > 5 else ""}
            maps.append(cur)
        else:
            k, _, v = line.partition(":")
            if k in KEYS:
                cur[k] = int(v.split()[0])
    return maps


def group(m):
    n = m["name"]
    if n.startswith("/"):
        b = os.path.basename(n)
        return re.sub(r"\.so.*", ".so", b) if ".so" in b else "program " + b
    if n:
        return n
    if m["perms"].startswith("rw") and m["size"] == 8 << 20:
        return "anon: thread stacks"  # glibc's default 8 MiB, its guard page apart
    if m["perms"].startswith("rw") and m["start"] % (64 << 20) == 0:
        return "anon: malloc arenas"  # a thread arena's heap is 64 MiB aligned
    return "anon: other (large mallocs, ...)"


def main():
    args = sys.argv[1:]
    out = None
    if args[:1] == ["--json"]:
        out, args = args[1], args[2:]
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    best, best_rss, hwm, threads = None, 0, 0, 0
    while p.poll() is None:
        try:
            st = dict(l.split(":", 1) for l in open(f"/proc/{p.pid}/status"))
            hwm = max(hwm, int(st["VmHWM"].split()[0]))
            if int(st["VmRSS"].split()[0]) > best_rss:
                mp = smaps(p.pid)
                rss = sum(m.get("Rss", 0) for m in mp)
                if rss > best_rss:
                    best, best_rss, threads = mp, rss, int(st["Threads"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        time.sleep(0.002)
    if best is None:
        sys.exit("footprint_smaps: no sample")
    groups = {}
    for m in best:
        g = groups.setdefault(group(m), dict.fromkeys(KEYS, 0))
        for k in KEYS:
            g[k] += m.get(k, 0)
    rows = sorted(groups.items(), key=lambda kv: -kv[1]["Rss"])
    print(f"{'group (KiB)':34} " + " ".join(f"{k:>13}" for k in KEYS))
    for name, g in rows:
        if g["Rss"]:
            print(f"{name[:34]:34} " + " ".join(f"{g[k]:13}" for k in KEYS))
    libs = [g for n, g in rows if n.endswith(".so")]
    clean, dirty = sum(g["Shared_Clean"] for g in libs), sum(g["Private_Dirty"] for g in libs)
    print(f"shared libraries: {len(libs)}, {sum(g['Rss'] for g in libs)} KiB "
          f"({clean} shared clean, {dirty} private dirty)")
    print(f"sampled peak {best_rss} KiB, VmHWM {hwm} KiB, {threads} threads, exit {p.returncode}")
    if out:
        json.dump({"exit": p.returncode, "VmHWM_kB": hwm, "sample_kB": best_rss, "threads": threads,
                   "groups": groups}, open(out, "w"), indent=1)
    sys.exit(p.returncode)


main()
