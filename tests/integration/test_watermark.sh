#!/usr/bin/env bash
# The global model's watermark (coordinator/watermark.h; WAFFLE, Tekgul et al.
# 2021), over real processes and mutual TLS on 127.0.0.1:
#   1. `fedc watermark keygen` writes a 0600 key of 64 hex digits, and never
#      over an existing file;
#   2. `fedc sim` with the coordinator's --watermark-key: the final model
#      verifies with the key (exit 0, p below 1e-6; measured 1e-100, all 100
#      triggers) and does not with another key (exit 1, a chance score), nor
#      does the unwatermarked version 0;
#   3. refused at start with one line, the state directory left absent: a key
#      others may read, a key inside the state directory, and a model brought
#      with --init-model that the MLP code cannot train.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
make_tmp
DATA=/usr/share/datasets/fashion-mnist
[ -f "$DATA/train-images-idx3-ubyte.gz" ] || fail "Fashion-MNIST is not installed in $DATA"

# ---- 1. keygen ----
"$FEDC" watermark keygen --out "$T/k1" 2>/dev/null || fail "keygen failed"
"$FEDC" watermark keygen --out "$T/k2" 2>/dev/null || fail "keygen failed"
[ "$(stat -c %a "$T/k1")" = 600 ] || fail "key mode $(stat -c %a "$T/k1")"
grep -qxE '[0-9a-f]{64}' "$T/k1" || fail "key is not 64 hex digits"
cmp -s "$T/k1" "$T/k2" && fail "two keys are the same"
cp "$T/k1" "$T/k1.copy"
rc=0
"$FEDC" watermark keygen --out "$T/k1" 2>"$T/err" || rc=$?
[ "$rc" = 1 ] && grep -q "File exists" "$T/err" || fail "keygen over an existing key: status $rc, $(cat "$T/err")"
cmp -s "$T/k1" "$T/k1.copy" || fail "keygen changed an existing key"

# ---- 2. a watermarked federation ----
timeout -s TERM 300 "$FEDC" sim --out "$T/sim" --data-dir "$DATA" --clients 10 --cohort 10 --rounds 3 \
  --clients-per-process 5 --coordinator-opt="--watermark-key=$T/k1" >"$T/sim.out" 2>"$T/sim.err" ||
  fail "sim: $(tail -n 5 "$T/sim.err")"
final="$T/sim/state/models/v000003.safetensors"
[ -f "$final" ] || fail "no v3: $(ls "$T/sim/state/models")"
rc=0
"$FEDC" watermark verify "$final" --key "$T/k1" --json >"$T/v1.json" || rc=$?
[ "$rc" = 0 ] || fail "the final model does not verify with its key (status $rc): $(cat "$T/v1.json")"
jq -e '.watermarked and .triggers == 100 and .classes == 10 and .p_value < 1e-6' "$T/v1.json" >/dev/null ||
  fail "verify with the key: $(cat "$T/v1.json")"
rc=0
"$FEDC" watermark verify "$final" --key "$T/k2" --json >"$T/v2.json" || rc=$?
[ "$rc" = 1 ] || fail "the final model verifies with another key (status $rc): $(cat "$T/v2.json")"
jq -e '(.watermarked | not) and .p_value > 1e-3' "$T/v2.json" >/dev/null || fail "another key: $(cat "$T/v2.json")"
rc=0
"$FEDC" watermark verify "$T/sim/state/models/v000000.safetensors" --key "$T/k1" >"$T/v0.txt" || rc=$?
[ "$rc" = 1 ] && grep -q "no watermark of this key shown" "$T/v0.txt" || fail "v0: status $rc, $(cat "$T/v0.txt")"
"$FEDC" watermark verify "$final" --key "$T/k1" | grep -q "trigger-set accuracy 100/100" ||
  fail "text output: $("$FEDC" watermark verify "$final" --key "$T/k1")"

# ---- 3. refused at start ----
"$FEDC" pki init --dir "$T/pki" --federation demo >/dev/null
failed_start() { # STATE EXPECTED ARGS...
  local state=$1 expected=$2 rc=0
  shift 2
  timeout 20 "$FEDC" coordinator --pki "$T/pki" --listen 127.0.0.1:0 --state "$state" --grace-ms 0 "$@" \
    >/dev/null 2>"$T/err" || rc=$?
  [ "$rc" = 1 ] || fail "coordinator $*: exit $rc, not 1: $(cat "$T/err")"
  tail -n 1 "$T/err" | grep -qF -- "$expected" || fail "coordinator $*: expected '$expected', got: $(cat "$T/err")"
  [ ! -e "$state" ] || fail "coordinator $*: left $state"
}
cp "$T/k1" "$T/open.key" && chmod 0644 "$T/open.key"
failed_start "$T/s1" "$T/open.key" --watermark-key "$T/open.key"
mkdir -p "$T/s2" && cp "$T/k1" "$T/s2/wm.key"
rc=0
timeout 20 "$FEDC" coordinator --pki "$T/pki" --listen 127.0.0.1:0 --state "$T/s2" --grace-ms 0 \
  --watermark-key "$T/s2/wm.key" >/dev/null 2>"$T/err" || rc=$?
[ "$rc" = 1 ] && tail -n 1 "$T/err" | grep -q "is inside the state directory; keep it elsewhere" ||
  fail "key inside the state directory: status $rc, $(cat "$T/err")"
python3 - "$T/conv.safetensors" <<'PY'
import json, struct, sys
hdr = {"conv1.weight": {"dtype": "F32", "shape": [4, 1, 3, 3], "data_offsets": [0, 144]},
       "conv1.bias": {"dtype": "F32", "shape": [4], "data_offsets": [144, 160]}}
h = json.dumps(hdr).encode()
h += b" " * (-len(h) % 8)
open(sys.argv[1], "wb").write(struct.pack("<Q", len(h)) + h + struct.pack("<40f", *([0.1] * 40)))
PY
failed_start "$T/s3" "which cannot train this model" --init-model "$T/conv.safetensors" --watermark-key "$T/k1"
echo "verify with the key: $(jq -c '{correct, p_value}' "$T/v1.json"); another key: $(jq -c '{correct, p_value}' "$T/v2.json")"
echo "PASS watermark"
