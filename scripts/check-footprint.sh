#!/usr/bin/env bash
# check-footprint.sh - holds the figures of bench/bench_footprint.sh against
# the client's footprint budget (issue 26; docs/operations.md, "Footprint on
# a device") and fails naming each figure over its budget and the budget.
#
#   scripts/check-footprint.sh FIGURES.jsonl
#   bench/bench_footprint.sh build/ci build/ref build/arm64-ref | scripts/check-footprint.sh -
#
# Margins absorb noise: none on sizes (deterministic for a toolchain), 5% on
# peak RSS, 50% on idle CPU (a 0.2% figure over 20 s on a shared machine),
# 20% on wakeups, none on threads. A figure the budget table names but the
# input lacks fails too (a budget nobody measures is no budget).
#
# Two figures are known over budget and carry an allowance instead of
# failing: the embed example linked dynamically. Of its peak RSS (784-10:
# 16.8-16.9 MiB) 15.8 MiB are pages of shared libraries (gRPC 5.2, libcrypto 4.0,
# libc 1.6, libstdc++ 1.4, 48 small ones of Debian's gRPC 1.9, ...), file
# pages this kernel maps in large folios, shared with every process using
# them; linked static with reference BLAS (the form a device ships, held to
# the budget itself) the same program peaks 6.5 MiB lower. The large model
# adds two float32 copies (8 B/parameter, as budgeted) and 2-3 MiB of
# transfer buffers (docs/results.md, "Client footprint"). The allowances
# (2 MiB on 784-10, 4 MiB on the large model; they were 10 before the
# library stopped loading OpenBLAS) still catch a regression: OpenBLAS back
# in the library would fail 784-10.
set -euo pipefail
in=${1:?usage: check-footprint.sh FIGURES.jsonl (- for stdin)}
[ "$in" = - ] && in=/dev/stdin
python3 - "$in" <<'PY'
import json, sys

KiB, MiB = 1024, 1024 * 1024
# figure, arch (None = any), budget(fig) -> value, margin, allowance over budget (None = none), what
def per_param(base):
    return lambda f: base + 8 * f["parameters"]
BUDGETS = [
    ("lib_stripped_bytes", None, lambda f: 400 * KiB, 0.0, None, "stripped libfedc-client.so <= 400 KiB"),
    ("static_embed_bytes", "AArch64", lambda f: 12 * MiB, 0.0, None,
     "static client, reference BLAS, stripped, arm64 <= 12 MiB"),
    ("static_embed_rss_784_10_bytes", None, lambda f: 16 * MiB, 0.05, None,
     "static embed example, 784-10: peak RSS <= 16 MiB"),
    ("static_embed_rss_large_bytes", None, per_param(16 * MiB), 0.05, None,
     "static embed example: peak RSS <= 16 MiB + 8 bytes/parameter"),
    ("embed_rss_784_10_bytes", None, lambda f: 16 * MiB, 0.05, 2 * MiB,
     "dynamic embed example, 784-10: peak RSS <= 16 MiB"),
    ("embed_rss_large_bytes", None, per_param(16 * MiB), 0.05, 4 * MiB,
     "dynamic embed example: peak RSS <= 16 MiB + 8 bytes/parameter"),
    ("idle_cpu_percent", None, lambda f: 0.2, 0.5, None, "idle, 1 s poll: <= 0.2% of a core"),
    ("idle_wakeups_per_s", None, lambda f: 10.0, 0.2, None, "idle, 1 s poll: <= 10 wakeups/s"),
    ("idle_threads", None, lambda f: 9, 0.0, None, "idle: <= 9 threads"),
    ("client_partition_rss_bytes", None, lambda f: 60 * MiB, 0.05, None,
     "fedc client on a tenth of Fashion-MNIST: peak RSS <= 60 MiB"),
]

def show(v, unit):
    if unit == "bytes":
        return f"{v / MiB:.2f} MiB" if v >= MiB else f"{v / KiB:.1f} KiB"
    return f"{v:g} {unit}"

figs = []
for line in open(sys.argv[1]):
    line = line.strip()
    if line.startswith("{"):
        f = json.loads(line)
        if f.get("bench") == "footprint":
            figs.append(f)
failed = 0
for name, arch, budget_of, margin, allowance, what in BUDGETS:
    hits = [f for f in figs if f["figure"] == name and (arch is None or f.get("arch") == arch)]
    if not hits:
        print(f"FAIL {name}{'/' + arch if arch else ''}: not measured (budget: {what})")
        failed += 1
        continue
    for f in hits:
        v, unit = f["value"], f["unit"]
        budget = budget_of(f)
        limit = budget * (1 + margin)
        tag = f"{name}{'/' + f['arch'] if 'arch' in f else ''}"
        line = f"{tag}: {show(v, unit)}, budget {show(budget, unit)}"
        if margin:
            line += f" (+{margin:.0%} noise: {show(limit, unit)})"
        if v <= limit:
            print(f"ok   {line}")
        elif allowance is not None and v <= limit + allowance:
            print(f"over {line}: over budget, within its allowance of {show(allowance, unit)} "
                  f"(shared-library pages and transfer buffers; see scripts/check-footprint.sh) [{what}]")
        else:
            print(f"FAIL {line}: over budget [{what}]")
            failed += 1
print(f"check-footprint: {len(BUDGETS)} budgets, {failed} failed")
sys.exit(1 if failed else 0)
PY
