#!/usr/bin/env bash
# One selected client cannot poison the model or sink the round, by default
# (issue 6 item 2). Over the real wire, with a coordinator on its DEFAULT
# clip norm and weight cap, a probe in the cohort sends updates of 1e30 and
# 3e38 (refused: over the clip norm), a train_loss of -3e38 (refused), then an
# update of half the clip norm claiming 2^64-1 examples (accepted, weight
# capped). The round completes; the model moved by at most server_lr x clip
# norm; the round's example count did not wrap. Then with clipping explicitly
# off, an update of 3e38 is refused as an overflow and the round completes.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
. "$(dirname "$0")/_data.sh"
make_tmp
PROBE="$BUILD_DIR/fedc_probe"

make_pki "$T/pki" itest a b evil
make_idx "$T" 100 2
ADMIN_PKI=(--pki "$T/pki" --name root)

# The L2 distance between two safetensors files' payloads, and the largest |w|.
st_dist() {
  PYTHONPATH="$IT_DIR" python3 - "$1" "$2" <<'PY'
import math, sys
from st_floats import load
a, b = load(sys.argv[1]), load(sys.argv[2])
print("%.6g %.6g" % (math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b))), max(abs(x) for x in b)))
PY
}

run_round() { # name, extra coordinator args...; leaves the probe's log in $T/probe-$1.log
  local tag=$1
  shift
  start_coordinator --pki "$T/pki" --federation itest --state "$T/state-$tag" --model 784-10 --rounds 1 \
    --min-clients 3 --cohort 3 --min-updates 2 --poll-ms 100 --round-timeout-ms 30000 --pickup-timeout-ms 30000 "$@"
  local pids=() i
  for i in 0 1; do
    local name
    name=$(echo a b | cut -d' ' -f$((i + 1)))
    start_bg "client-$tag-$name" "$FEDC" client --coordinator "$COORD_ADDR" --pki "$T/pki" --name "$name" \
      --data "idx:$T/img$i.idx,$T/lbl$i.idx" --model 784-10 --eval-fraction 0 # all 200 train
  done
  start_bg "probe-$tag" "$PROBE" --coordinator "$COORD_ADDR" --pki "$T/pki" --name evil --mode "$MODE"
  local probe=$BG_PID
  set +e
  wait "$probe"
  local prc=$?
  set -e
  [ "$prc" = 0 ] || fail "probe ($MODE): a step did not get its status: $(grep '"ok":false' "$T/probe-$tag.log")"
  wait_for bash -c "'$FEDC' status --coordinator $COORD_ADDR ${ADMIN_PKI[*]} --json |
    jq -e '.rounds_completed == 1' >/dev/null" 60 || fail "round did not complete ($tag): $(cat "$T/state-$tag/rounds.jsonl" 2>/dev/null)"
  jq -s -e '.[0].outcome == "completed" and .[0].participants == 3' "$T/state-$tag/rounds.jsonl" >/dev/null ||
    fail "round 1 ($tag) should complete with 3 updates: $(cat "$T/state-$tag/rounds.jsonl")"
  "$FEDC" model get --coordinator "$COORD_ADDR" "${ADMIN_PKI[@]}" --version 0 --out "$T/$tag-v0.safetensors" >/dev/null
  "$FEDC" model get --coordinator "$COORD_ADDR" "${ADMIN_PKI[@]}" --version 1 --out "$T/$tag-v1.safetensors" >/dev/null
  kill -TERM "$COORD_PID"
  set +e; wait "$COORD_PID" 2>/dev/null; set -e
}

# 1. Default settings: no --clip-norm, no --max-example-weight.
MODE=poison run_round default
L=$T/probe-default.log
grep -q '"step":"values-1e30".*clip norm' "$L" || fail "1e30 refusal does not name the clip norm: $(cat "$L")"
grep -q '"step":"values-3e38".*"ok":true' "$L" || fail "3e38 update not refused: $(cat "$L")"
grep -q '"step":"negative-loss".*train_loss' "$L" || fail "negative loss refusal does not name train_loss"
grep -q '"step":"max-examples".*"ok":true' "$L" || fail "a valid update claiming 2^64-1 examples was refused"
read -r dist wmax < <(st_dist "$T/default-v0.safetensors" "$T/default-v1.safetensors")
echo "default: model moved by L2 $dist, max |w| $wmax"
fedavg_dist=$dist
# Documented bound: one round moves the model by at most server_lr (1) x clip norm (10).
python3 -c "import sys; sys.exit(0 if $dist <= 10.001 and $wmax < 100 else 1)" ||
  fail "one client moved the model by $dist (max |w| $wmax): the default bound is 10"
ex=$(jq -s '.[0].examples' "$T/state-default/rounds.jsonl")
[ "$ex" -gt 0 ] && [ "$ex" -le $((10000 + 200)) ] ||
  fail "round examples $ex: a claim of 2^64-1 must count as the 10,000 cap (plus a and b's 200)"
grep -q '"mean_train_loss":-' "$T/state-default/rounds.jsonl" && fail "a negative loss reached the round record"

# 2. Clipping explicitly off: an update that would overflow float32 is refused,
# the round completes with the others (it used to be abandoned: NaN/Inf).
MODE=overflow run_round noclip --clip-norm 0
grep -q '"step":"overflow-3e38".*too large' "$T/probe-noclip.log" ||
  fail "3e38 x 2 examples not refused as too large: $(cat "$T/probe-noclip.log")"
read -r dist wmax < <(st_dist "$T/noclip-v0.safetensors" "$T/noclip-v1.safetensors")
python3 -c "import math, sys; sys.exit(0 if math.isfinite($wmax) and $wmax < 100 else 1)" ||
  fail "model after the overflow attempt has max |w| $wmax"
# 3. The same attacker against a robust aggregator (coordinate-wise median of
# the 3 updates): the attacker's accepted update (half the clip norm) no longer
# sets the step; the model moves far less than under FedAvg.
MODE=poison run_round median --aggregator median
read -r mdist wmax < <(st_dist "$T/median-v0.safetensors" "$T/median-v1.safetensors")
echo "median: model moved by L2 $mdist (FedAvg: $fedavg_dist)"
python3 -c "import sys; sys.exit(0 if $mdist < $fedavg_dist / 2 else 1)" ||
  fail "the median moved the model by $mdist, FedAvg by $fedavg_dist: the attacker still sets the step"
# A cohort the rule can never aggregate is refused at start, with the rule's reason.
if timeout 20 "$FEDC" coordinator --pki "$T/pki" --federation itest --state "$T/bad" --model 784-10 --cohort 5 \
  --aggregator krum --agg-f 2 2>"$T/krum.err"; then fail "krum f=2 with a cohort of 5 accepted"; fi
grep -q "needs n >= 2f + 3 = 7 updates" "$T/krum.err" || fail "no reason for krum's precondition: $(cat "$T/krum.err")"
echo "PASS poison"
