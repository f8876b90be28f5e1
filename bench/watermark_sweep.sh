#!/usr/bin/env bash
# The global model's watermark (fedc coordinator --watermark-key) on
# Fashion-MNIST: 100 clients (Dirichlet 0.5, seed 1), 10 per round, MLP
# 784-200-200-10, for each configuration the same federation with and without
# the watermark. One JSON line per run: accuracy at round 100 and at the last
# round, the means of rounds 91-100 and of the last ten, the seconds per round;
# for a watermarked run also `fedc watermark verify` of the final model, and of
# what an adversary makes of it (tests/tools/wm_attack: fine-tuning on 10% of
# the training data for 5 epochs at lr 0.05 and 0.01; pruning the 30%
# smallest-magnitude weights), each with the test accuracy it leaves.
#
#   bench/watermark_sweep.sh BUILD_DIR OUTDIR [ROUNDS=300] [CONFIG...]
#   CONFIG: off, or LR:STEPS (--watermark-lr, --watermark-steps); default: off 0.05:50
# SEED=1 by default.
set -euo pipefail
BUILD=${1:?usage: watermark_sweep.sh BUILD_DIR OUTDIR [ROUNDS] [CONFIG...]}
OUT=${2:?}
ROUNDS=${3:-300}
shift $(($# < 3 ? $# : 3))
CONFIGS=("$@")
[ ${#CONFIGS[@]} -gt 0 ] || CONFIGS=(off 0.05:50)
SEED=${SEED:-1}
FEDC=$BUILD/fedc
ATTACK=$BUILD/wm_attack
mkdir -p "$OUT"
KEY=$OUT/watermark.key
[ -f "$KEY" ] || "$FEDC" watermark keygen --out "$KEY" 2>/dev/null
verify() { # MODEL -> the verify JSON (one line)
  "$FEDC" watermark verify "$1" --key "$KEY" --json || true
}
for cfg in "${CONFIGS[@]}"; do
  W=()
  if [ "$cfg" != off ]; then
    W=("--coordinator-opt=--watermark-key=$KEY" "--coordinator-opt=--watermark-lr=${cfg%:*}"
      "--coordinator-opt=--watermark-steps=${cfg#*:}")
  fi
  dir="$OUT/wm-${cfg/:/-}-s$SEED"
  rm -rf "$dir"
  CMD=("$FEDC" sim --out "$dir" --clients 100 --cohort 10 --rounds "$ROUNDS" --partition dirichlet --alpha 0.5
    --seed "$SEED" --clients-per-process 25 --poll-ms 500 --json "${W[@]}")
  echo "watermark_sweep: $cfg -> $dir" >&2
  if ! "${CMD[@]}" >"$dir.jsonl" 2>"$dir.err"; then
    echo "watermark_sweep: $cfg failed: $(tail -2 "$dir.err")" >&2
    continue
  fi
  final=$(printf '%s/state/models/v%06d.safetensors' "$dir" "$ROUNDS")
  V='null' FT='null' FT2='null' PR='null'
  if [ "$cfg" != off ]; then
    V=$(verify "$final")
    "$ATTACK" finetune "$final" "$dir/ft05.safetensors" --lr 0.05 >"$dir/ft05.json"
    "$ATTACK" finetune "$final" "$dir/ft01.safetensors" --lr 0.01 >"$dir/ft01.json"
    "$ATTACK" prune "$final" "$dir/prune30.safetensors" --fraction 0.3 >"$dir/prune30.json"
    FT=$(jq -c --argjson v "$(verify "$dir/ft05.safetensors")" '. + {verify: $v}' "$dir/ft05.json")
    FT2=$(jq -c --argjson v "$(verify "$dir/ft01.safetensors")" '. + {verify: $v}' "$dir/ft01.json")
    PR=$(jq -c --argjson v "$(verify "$dir/prune30.safetensors")" '. + {verify: $v}' "$dir/prune30.json")
  fi
  python3 - "$dir" "$cfg" "$SEED" "$V" "$FT" "$FT2" "$PR" "${CMD[@]}" <<'PY'
import json, sys
d, cfg, seed = sys.argv[1:4]
verify, ft05, ft01, prune = (json.loads(a) for a in sys.argv[4:8])
rows = [json.loads(l) for l in open(d + ".jsonl") if l.startswith("{")]
acc = {r["round"]: r["accuracy"] for r in rows}
def mean(lo, hi):
    v = [acc[r] for r in range(lo, hi + 1) if acc.get(r) is not None]
    return round(sum(v) / len(v), 4) if v else None
R = len(rows)
print(json.dumps({"bench": "watermark_sweep", "config": cfg, "seed": int(seed), "rounds": R,
                  "acc_r100": acc.get(100), "acc_final": acc.get(R), "acc_mean_r91_100": mean(91, 100),
                  "acc_mean_last10": mean(R - 9, R),
                  "mean_round_s": round(sum(r["seconds"] for r in rows) / max(1, R), 3),
                  "verify": verify, "finetune_lr0.05": ft05, "finetune_lr0.01": ft01, "prune30": prune,
                  "command": " ".join(["fedc"] + sys.argv[9:])}))
PY
done
