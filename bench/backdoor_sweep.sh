#!/usr/bin/env bash
# Backdoor attacks (Bagdasaryan et al. 2020, `fedc sim --byzantine F:backdoor:GAMMA`)
# against each defence, on Fashion-MNIST: 100 clients (Dirichlet 0.5, seed 1),
# 10 per round, MLP 784-200-200-10, one local epoch. The attackers (F of the
# clients, chosen by the seed) poison 30% of their data with the pixel trigger
# (target class 0) and boost their delta by GAMMA = n / eta = 10 (model
# replacement for a cohort of 10 and server lr 1); their clip stage holds it to
# the coordinator's clip norm (constrain-and-scale), where there is one.
#
# One JSON line per run: main-task accuracy and backdoor success rate (the
# fraction of triggered test images of other classes classified as 0) at
# round 100 and at the last round, the means over the last five rounds, the
# highest backdoor rate seen, and the `fedc sim` command.
#
#   bench/backdoor_sweep.sh FEDC OUTDIR [ROUNDS=300] [DEFENCE...]
#   DEFENCE: fedavg (no clip) clip (the default clip norm, 10) clip_refuse
#            (the same, the attackers sending their boosted update unclipped:
#            refused above the clip norm; rounds then complete with 7 of 10 by
#            a 20 s deadline) clip1 median trimmed_mean krum multikrum bulyan
#            centered_clip dp0.05 dp0.1 anomaly_exclude (default: all but
#            clip_refuse, clip1 and anomaly_exclude)
#   FRACTIONS="0.01 0.05 0.1" (default) the attackers' share; GAMMA=10.
# The whole grid (11 defences x 3 fractions x 300 rounds) is about 33 runs
# of 10-20 minutes each on a shared 2-core machine.
set -euo pipefail
FEDC=${1:?usage: backdoor_sweep.sh FEDC OUTDIR [ROUNDS] [DEFENCE...]}
OUT=${2:?}
ROUNDS=${3:-300}
shift $(($# < 3 ? $# : 3))
DEFS=("$@")
[ ${#DEFS[@]} -gt 0 ] ||
  DEFS=(fedavg clip median trimmed_mean krum multikrum bulyan centered_clip dp0.05 dp0.1)
read -r -a FRACTIONS <<<"${FRACTIONS:-0.01 0.05 0.1}"
GAMMA=${GAMMA:-10}
mkdir -p "$OUT"
for def in "${DEFS[@]}"; do
  case $def in
  fedavg) A=(--clip-norm 0) ;; # no bound on an update: the undefended baseline
  clip) A=() ;;                # the coordinator's default clip norm (10)
  clip_refuse) A=(--byzantine-unclipped --min-updates 7 --round-timeout-ms 20000) ;;
  clip1) A=(--clip-norm 1) ;;  # a clip near the honest norms (0.3-2.6): Sun et al. 2019's norm bound
  trimmed_mean) A=(--aggregator trimmed_mean --agg-trim 0.2) ;;
  krum | multikrum) A=(--aggregator "$def" --agg-f 2) ;;
  bulyan) A=(--aggregator bulyan --agg-f 1) ;; # n = 10 allows f = 1 (n >= 4f + 3)
  centered_clip) A=(--aggregator centered_clip --agg-tau 1 --agg-iters 1) ;;
  median) A=(--aggregator median) ;;
  # The anomaly policy exclude (issue 24): a flagged identity leaves selection
  # for the cool-down (an hour: the rest of the run); --min-clients 50 lets the
  # rounds go on without it (the sim's default needs every client).
  anomaly_exclude) A=(--coordinator-opt=--anomaly-policy=exclude --min-clients 50) ;;
  # DP-FedAvg: clip 1, Poisson sampling at 10/100; noise std z x 1 / 10 per
  # coordinate of the mean (Sun et al. 2019's "weak DP": no useful epsilon
  # at 10 clients per round, a defence by noise).
  dp*) A=(--clip-norm 1 --dp-noise "${def#dp}") ;;
  *) echo "unknown defence $def" >&2 && exit 2 ;;
  esac
  for f in "${FRACTIONS[@]}"; do
    dir="$OUT/$def-f$f"
    rm -rf "$dir"
    CMD=("$FEDC" sim --out "$dir" --clients 100 --cohort 10 --rounds "$ROUNDS" --partition dirichlet --alpha 0.5
      --seed 1 --clients-per-process 25 --poll-ms 500 --json --byzantine "$f:backdoor:$GAMMA" "${A[@]}")
    echo "backdoor_sweep: $def $f -> $dir" >&2
    if ! "${CMD[@]}" >"$dir.jsonl" 2>"$dir.err"; then
      echo "backdoor_sweep: $def $f failed: $(tail -2 "$dir.err")" >&2
    fi
    python3 - "$dir" "$def" "$f" "$GAMMA" "$ROUNDS" "${CMD[@]}" <<'PY'
import json, sys
d, defence, f, gamma, R = sys.argv[1:6]
cmd = ["fedc"] + sys.argv[7:]
rows = [json.loads(l) for l in open(d + ".jsonl") if l.startswith("{")]
by = {r["round"]: r for r in rows}
def at(n, k):
    return by[n][k] if n in by else None
def mean5(k):
    v = [r[k] for r in rows[-5:] if r.get(k) is not None]
    return round(sum(v) / len(v), 4) if v else None
bd = [r["backdoor"] for r in rows if r.get("backdoor") is not None]
print(json.dumps({"bench": "backdoor_sweep", "defence": defence, "attackers": float(f), "gamma": float(gamma),
                  "rounds": len(rows), "acc_r100": at(100, "accuracy"), "backdoor_r100": at(100, "backdoor"),
                  "acc_final": rows[-1]["accuracy"] if rows else None,
                  "backdoor_final": rows[-1]["backdoor"] if rows else None,
                  "acc_last5_mean": mean5("accuracy"), "backdoor_last5_mean": mean5("backdoor"),
                  "backdoor_max": max(bd) if bd else None, "command": " ".join(cmd)}))
PY
  done
done
