#!/usr/bin/env bash
# Compressed uploads (issue 26, protocol 1.9) over real processes and mutual
# TLS: the same one-round federation (3 clients, the same data, seeds and
# initial model, clip 1) run six ways:
#   f32     float32 updates (the reference)
#   q8, q4  --upload-bits 8 / 4: clients send quantized updates; the new
#           model is within the quantization bound of f32's (each decoded
#           value is within one step, clip / L, of the client's value, so
#           the mean is too) and the coordinator received ~4x / ~8x fewer bytes
#   probe   --upload-bits 8 with fedc_probe --mode quant-bad in the cohort: a
#           float32 update, a NaN scale, a scale past the clip, code -128 and
#           a block missing and block scales whose claimed maxima add up
#           past the clip are each refused with INVALID_ARGUMENT; its valid
#           quantized update counts and the round completes; a client of
#           protocol 1.8 is refused at check-in (it would send float32)
#   probe4  --upload-bits 4 --upload-block 1024, the probe's counted update
#           is code 1 at scale clip / 7 in one block: decoded 4.6x the clip,
#           within the rounding slack its scales allow; the audit shows it
#           folded at 1.05 x the clip, with the norm it decoded to (a
#           hostile review's finding: it was folded at 4.6x, and code 1 in
#           every block at 12.7x)
#   sa32    --secagg: the 32-bit ring
#   sa8     --secagg --upload-bits 8: 8-bit inputs in a 16-bit ring; the round
#           completes, the model is within clip / 127 of f32's per value, and
#           the masked inputs are about half sa32's bytes
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
. "$(dirname "$0")/_data.sh"
make_tmp
PROBE="$BUILD_DIR/fedc_probe"

make_pki "$T/pki" cq a b c p
make_idx "$T" 100 3
ADMIN=(--pki "$T/pki" --name root)

# max |a - b| over the payloads of two safetensors files, the L2 distance, and ||b - base||.
st_cmp() {
  PYTHONPATH="$IT_DIR" python3 - "$@" <<'PY'
import math, sys
from st_floats import load
a, b, base = load(sys.argv[1]), load(sys.argv[2]), load(sys.argv[3])
print("%.6g %.6g %.6g" % (max(abs(x - y) for x, y in zip(a, b)), math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b))),
                          math.sqrt(sum((x - y) ** 2 for x, y in zip(b, base)))))
PY
}

run() { # TAG CLIENTS COORDINATOR-ARGS...
  local tag=$1 clients=$2 i=0 n
  shift 2
  start_coordinator --pki "$T/pki" --federation cq --state "$T/state-$tag" --model 784-10 --rounds 1 \
    --min-clients 3 --cohort 3 --min-updates 3 --seed 5 --clip-norm 1 --poll-ms 100 --round-timeout-ms 30000 \
    --pickup-timeout-ms 30000 --secagg-stage-ms 10000 "$@"
  if [ "$tag" = probe ]; then
    # A client older than protocol 1.9 would send float32: refused at check-in, never selected.
    "$PROBE" --coordinator "$COORD_ADDR" --pki "$T/pki" --name c --mode call --protocol 1.8 \
      --method /fedc.v1.Coordinator/CheckIn --want 9 > "$T/old.json" || fail "a 1.8 client checked in: $(cat "$T/old.json")"
    grep -q "compressed uploads.*upgrade" "$T/old.json" || fail "no reason for the 1.8 client: $(cat "$T/old.json")"
  fi
  for n in $clients; do
    if [ "$n" = p ]; then
      start_bg "probe-$tag" "$PROBE" --coordinator "$COORD_ADDR" --pki "$T/pki" --name p --mode quant-bad
      PROBE_PID=$BG_PID
    else
      start_bg "client-$tag-$n" "$FEDC" client --coordinator "$COORD_ADDR" --pki "$T/pki" --name "$n" \
        --data "idx:$T/img$i.idx,$T/lbl$i.idx" --model 784-10 --eval-fraction 0
    fi
    i=$((i + 1))
  done
  wait_for bash -c "'$FEDC' status --coordinator $COORD_ADDR ${ADMIN[*]} --json | jq -e '.rounds_completed == 1' \
    >/dev/null" 90 || fail "$tag: round did not complete: $(cat "$T/state-$tag/rounds.jsonl" 2>/dev/null)"
  "$FEDC" model get --coordinator "$COORD_ADDR" "${ADMIN[@]}" --version 0 --out "$T/$tag-v0.safetensors" >/dev/null
  "$FEDC" model get --coordinator "$COORD_ADDR" "${ADMIN[@]}" --version 1 --out "$T/$tag-v1.safetensors" >/dev/null
  jq -s -e '.[0].outcome == "completed" and .[0].participants == 3' "$T/state-$tag/rounds.jsonl" >/dev/null ||
    fail "$tag: round 1 should complete with 3 updates: $(cat "$T/state-$tag/rounds.jsonl")"
  BYTES[$tag]=$(jq -s '.[0].bytes_in' "$T/state-$tag/rounds.jsonl")
  kill -TERM "$COORD_PID"
  set +e; wait "$COORD_PID" 2>/dev/null; set -e
}
declare -A BYTES

run f32 "a b c"
run q8 "a b c" --upload-bits 8
run q4 "a b c" --upload-bits 4 --upload-block 256
cmp -s "$T/f32-v0.safetensors" "$T/q8-v0.safetensors" || fail "the runs did not start from the same model"

# Within the bound: each client's decoded value is within one step of its
# clipped value, a step at most clip / L (L = 127 or 7), so the mean too.
check_bound() { # TAG L
  local maxd l2 moved
  read -r maxd l2 moved < <(st_cmp "$T/$1-v1.safetensors" "$T/f32-v1.safetensors" "$T/f32-v0.safetensors")
  echo "$1 vs f32: max |diff| $maxd (bound $(python3 -c "print(1 / $2)")), L2 $l2, f32 moved $moved"
  python3 -c "import sys; sys.exit(0 if $maxd <= 1.0 / $2 * (1 + 1e-3) + 1e-6 and $maxd > 0 else 1)" ||
    fail "$1: model differs from f32 by $maxd, past the quantization bound 1/$2"
  python3 -c "import sys; sys.exit(0 if $l2 < $3 * $moved else 1)" ||
    fail "$1: L2 distance to f32 $l2 is not below $3 x the step $moved"
}
check_bound q8 127 0.1
check_bound q4 7 1.0
echo "bytes in: f32 ${BYTES[f32]} q8 ${BYTES[q8]} q4 ${BYTES[q4]}"
python3 -c "import sys; sys.exit(0 if ${BYTES[f32]} >= 3.9 * ${BYTES[q8]} and ${BYTES[f32]} >= 7.5 * ${BYTES[q4]} else 1)" ||
  fail "compressed uploads are not ~4x / ~8x smaller: ${BYTES[f32]} / ${BYTES[q8]} / ${BYTES[q4]}"

# Malformed quantized updates over the wire.
run probe "a b p" --upload-bits 8
set +e; wait "$PROBE_PID"; prc=$?; set -e
L=$T/probe-probe.log
[ "$prc" = 0 ] || fail "quant-bad: a step did not get its status: $(cat "$L")"
grep -q '"step":"float32-to-8bit".*requires 8-bit' "$L" || fail "float32 refusal does not say 8-bit: $(cat "$L")"
grep -q '"step":"nan-scale".*scale nan' "$L" || fail "NaN scale refusal does not name the scale: $(cat "$L")"
grep -q '"step":"scale-past-clip".*scale' "$L" || fail "large scale refusal: $(cat "$L")"
grep -q '"step":"code-out-of-range".*outside \[-127, 127\]' "$L" || fail "code -128 refusal: $(cat "$L")"
grep -q '"step":"block-missing".*update.q8' "$L" || fail "short payload refusal: $(cat "$L")"
grep -q '"step":"scales-past-norm".*block scales allow an L2 norm' "$L" ||
  fail "scales past the clip were not refused: $(cat "$L")"
grep -q '"step":"good-quantized".*"ok":true' "$L" || fail "a valid quantized update was refused: $(cat "$L")"

# 4 bits: an update within its scales' rounding slack but 4.6x the clip is folded at the clip.
run probe4 "a b p" --upload-bits 4 --upload-block 1024
set +e; wait "$PROBE_PID"; prc=$?; set -e
L=$T/probe-probe4.log
[ "$prc" = 0 ] || fail "quant-bad at 4 bits: a step did not get its status: $(cat "$L")"
grep -q '"step":"scales-past-norm".*block scales allow an L2 norm' "$L" || fail "4 bits: scales: $(cat "$L")"
read -r norm got < <(jq -r 'select(.kind == "update" and .client == "p" and .outcome == "accepted") |
  "\(.norm) \(.norm_received)"' "$T/state-probe4/audit.log" | tail -1)
echo "probe4: the update decoded at norm $got was folded with norm $norm (clip 1)"
python3 -c "import sys; sys.exit(0 if 1.049 <= float('$norm') <= 1.05 and float('$got') > 4 else 1)" ||
  fail "probe4: the forged update was not folded at 1.05 x the clip, or its decoded norm not audited: '$norm' '$got'"

# Secure aggregation: the 32-bit ring, then 8-bit inputs in the narrow ring.
run sa32 "a b c" --secagg
run sa8 "a b c" --secagg --upload-bits 8
check_bound sa8 127 1.0
echo "bytes in: sa32 ${BYTES[sa32]} sa8 ${BYTES[sa8]}"
python3 -c "import sys; sys.exit(0 if ${BYTES[sa32]} >= 1.9 * ${BYTES[sa8]} else 1)" ||
  fail "the narrow ring did not halve the masked inputs: ${BYTES[sa32]} / ${BYTES[sa8]}"
echo "PASS: compressed uploads (8/4-bit plaintext, malformed ones refused, SecAgg in a 16-bit ring)"
