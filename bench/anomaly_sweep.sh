#!/usr/bin/env bash
# Update anomaly detection (issue 24): precision and recall of the per-identity
# flag under the attacks of issue 9, and false flags with no attacker, on
# Fashion-MNIST with `fedc sim`: 20 clients, all 20 in every round (--cohort
# 20), the sim's defaults otherwise (Dirichlet label skew, MLP), the
# coordinator on --anomaly-policy flag (flag, never exclude: every round keeps
# every client, so each identity is scored every round).
#
# One JSON line per run: attack, fraction, rounds, attackers; for R in 10, 30,
# 100 (those reached) the identities flagged in rounds <= R, of them attackers,
# precision and recall; false flags (flagged honest client-rounds) and honest
# client-rounds; the round each attacker was first flagged; the final accuracy;
# the command.
#
#   bench/anomaly_sweep.sh FEDC OUTDIR [ROUNDS=30] [ATTACK:FRACTION...]
#   default runs: none:0 signflip:0.1 gaussian:0.1 labelflip:0.1 alie:0.1
#                 signflip:0.2 gaussian:0.2 labelflip:0.2 alie:0.2
#   THRESHOLD=5 (the default) is passed as --anomaly-threshold.
#   POLICY=flag (default) or exclude: exclude leaves a flagged identity out of
#   selection for the cool-down (an hour: the rest of the run), so the sim runs
#   with --min-clients and --min-updates MIN (default 10): the rounds go on with
#   the clients left. Attacks also: backdoor (`--byzantine F:backdoor`, the
#   sim's default gamma), ipm.
# About 1-4 minutes per 30-round run on a shared 2-core machine.
set -euo pipefail
FEDC=${1:?usage: anomaly_sweep.sh FEDC OUTDIR [ROUNDS] [ATTACK:FRACTION...]}
OUT=${2:?}
ROUNDS=${3:-30}
shift $(($# < 3 ? $# : 3))
RUNS=("$@")
[ ${#RUNS[@]} -gt 0 ] || RUNS=(none:0 signflip:0.1 gaussian:0.1 labelflip:0.1 alie:0.1 signflip:0.2 gaussian:0.2
  labelflip:0.2 alie:0.2)
THRESHOLD=${THRESHOLD:-5}
POLICY=${POLICY:-flag}
MIN=${MIN:-10}
DATA=${DATA:-/usr/share/datasets/fashion-mnist}
mkdir -p "$OUT"
for run in "${RUNS[@]}"; do
  attack=${run%%:*}
  frac=${run#*:}
  name=$attack-$frac-r$ROUNDS-$POLICY
  cmd=("$FEDC" sim --out "$OUT/$name" --data-dir "$DATA" --clients 20 --cohort 20 --rounds "$ROUNDS"
    --clients-per-process 10 --json "--coordinator-opt=--anomaly-policy=$POLICY"
    "--coordinator-opt=--anomaly-threshold=$THRESHOLD")
  [ "$POLICY" != exclude ] || cmd+=(--min-clients "$MIN" --min-updates "$MIN")
  [ "$attack" = none ] || cmd+=(--byzantine "$frac:$attack")
  "${cmd[@]}" >"$OUT/$name.out" 2>"$OUT/$name.err" || { echo "{\"run\":\"$name\",\"error\":\"sim failed\"}"; continue; }
  python3 - "$OUT/$name" "$attack" "$frac" "${cmd[*]}" "$POLICY" <<'PY'
import json, sys
d, attack, frac, cmd, policy = sys.argv[1:6]
try:
    byz = set(json.load(open(f"{d}/byzantine.json"))["clients"])
except (OSError, ValueError, KeyError):
    byz = set()
audit = [json.loads(l) for l in open(f"{d}/state/audit.log")]
flags = [r for r in audit if r.get("kind") == "anomaly"]
rounds = [json.loads(l) for l in open(f"{d}/state/rounds.jsonl")]
sim = [json.loads(l) for l in open(f"{d}/rounds.jsonl")]
acc = sim[-1].get("accuracy")
honest_cr = sum(1 for r in audit if r.get("kind") == "update" and r.get("outcome") == "accepted" and r["client"] not in byz)
out = {"attack": attack, "fraction": float(frac), "policy": policy, "rounds": len(rounds), "attackers": len(byz)}
for R in (10, 30, 100):
    if R > len(rounds):
        continue
    fl = {r["client"] for r in flags if r["round"] <= R}
    tp = len(fl & byz)
    out[f"r{R}"] = {"flagged": len(fl), "attackers_flagged": tp,
                    "precision": tp / len(fl) if fl else None, "recall": tp / len(byz) if byz else None}
first = {}
for r in flags:
    if r["client"] in byz:
        first.setdefault(r["client"], r["round"])
out["false_flags"] = sum(1 for r in flags if r["client"] not in byz)
out["honest_client_rounds"] = honest_cr
out["first_flag_round"] = sorted(first.values())
out["accuracy"] = acc
out["backdoor"] = sim[-1].get("backdoor")
out["participants_last"] = sim[-1].get("participants")
out["command"] = cmd
print(json.dumps(out))
PY
done
