#!/usr/bin/env bash
# Bring your own model: `fedc coordinator --init-model FILE.safetensors`, over
# real processes and mutual TLS on 127.0.0.1.
#   1. A safetensors file written by Python (the layout a PyTorch
#      nn.Linear(784, 10) exports: fc1.weight [10, 784], fc1.bias [10], with
#      PyTorch's "format: pt" metadata) starts a federation; two clients
#      train it by name for 2 rounds; version 0 as served equals the file
#      tensor for tensor; version 2 loads back in Python with the same names
#      and shapes, finite and moved.
#   2. A model of any names and shapes (encoder.w [3, 4], head.b [2]) is
#      served as it is; a built-in client, which cannot train it, ends and
#      says why.
#   3. Refused at start with a reason: F16 tensors, 33 tensors (over the
#      limit of 32), NaN values, a missing file, a file that is not
#      safetensors.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
. "$(dirname "$0")/_data.sh"
make_tmp
make_pki "$T/pki" byo a b
make_idx "$T" 100 2
ADMIN=(--pki "$T/pki" --name root)

# write_st PATH SPEC: SPEC is a Python expression for [(name, shape, values)], dtype optional (F32).
write_st() {
  python3 - "$@" <<'PY'
import json, math, random, struct, sys
path, spec = sys.argv[1], eval(sys.argv[2])
dtype = sys.argv[3] if len(sys.argv) > 3 else "F32"
hdr, off, data = {"__metadata__": {"format": "pt"}}, 0, b""
for name, shape, vals in spec:
    b = struct.pack("<%d%s" % (len(vals), "f" if dtype == "F32" else "e"), *vals)
    hdr[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(b)]}
    off += len(b)
    data += b
h = json.dumps(hdr).encode()
h += b" " * (-len(h) % 8)
open(path, "wb").write(struct.pack("<Q", len(h)) + h + data)
PY
}
# load_st PATH: {name: (shape, values)} as JSON on stdout.
load_st() {
  python3 - "$1" <<'PY'
import json, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n]); h.pop("__metadata__", None)
out = {}
for k, v in h.items():
    s, e = v["data_offsets"]
    out[k] = [v["shape"], list(struct.unpack("<%df" % ((e - s) // 4), b[8 + n + s:8 + n + e]))]
print(json.dumps(out))
PY
}

# ---- 1. a PyTorch-layout model, federated and loaded back ----
write_st "$T/linear.safetensors" '[("fc1.weight", [10, 784], [random.Random(1).gauss(0, 0.01) for _ in range(7840)]), ("fc1.bias", [10], [0.25] * 10)]'
start_coordinator --pki "$T/pki" --federation byo --state "$T/state" --init-model "$T/linear.safetensors" \
  --rounds 2 --min-clients 2 --cohort 2 --min-updates 2 --poll-ms 100 --round-timeout-ms 30000
assert_contains "$T/coord.log" "initial model from $T/linear.safetensors: 2 tensors, 7850 parameters"
start_idx_clients a b
wait_completed 2 || fail "2 rounds did not complete on the imported model"
"$FEDC" model get --coordinator "$COORD_ADDR" "${ADMIN[@]}" --version 0 --out "$T/v0.safetensors" >/dev/null
"$FEDC" model get --coordinator "$COORD_ADDR" "${ADMIN[@]}" --version 2 --out "$T/v2.safetensors" >/dev/null
kill -TERM "$COORD_PID"
wait "$COORD_PID" || fail "coordinator exited non-zero on SIGTERM"
kill -KILL "${CL[@]}" 2>/dev/null || true
cmp -s <(load_st "$T/linear.safetensors") <(load_st "$T/v0.safetensors") || fail "version 0 differs from the file"
python3 - "$T/linear.safetensors" "$T/v2.safetensors" <<'PY' || fail "version 2 does not load back as the same model, trained"
import json, math, struct, sys
def load(p):
    b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n]); h.pop("__metadata__", None)
    return {k: (v["shape"], struct.unpack("<%df" % ((v["data_offsets"][1] - v["data_offsets"][0]) // 4),
                b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]])) for k, v in h.items()}
a, b = load(sys.argv[1]), load(sys.argv[2])
assert sorted(a) == sorted(b) == ["fc1.bias", "fc1.weight"], (sorted(a), sorted(b))
for k in a:
    assert a[k][0] == b[k][0], (k, a[k][0], b[k][0])
    assert all(math.isfinite(x) for x in b[k][1]), k
moved = math.sqrt(sum((x - y) ** 2 for k in a for x, y in zip(a[k][1], b[k][1])))
assert moved > 1e-3, moved
print("moved %.4g" % moved)
PY

# ---- 2. any names and shapes ----
write_st "$T/odd.safetensors" '[("encoder.w", [3, 4], [0.1 * i for i in range(12)]), ("head.b", [2], [1.0, -1.0])]'
start_coordinator --pki "$T/pki" --federation byo --state "$T/state-odd" --init-model "$T/odd.safetensors" \
  --rounds 1 --min-clients 1 --cohort 1 --min-updates 1 --poll-ms 100
"$FEDC" model get --coordinator "$COORD_ADDR" "${ADMIN[@]}" --version 0 --out "$T/odd-v0.safetensors" >/dev/null
cmp -s <(load_st "$T/odd.safetensors") <(load_st "$T/odd-v0.safetensors") || fail "the odd model was not served as it is"
rc=0
timeout 30 "$FEDC" client --coordinator "$COORD_ADDR" --pki "$T/pki" --name a --data "idx:$T/img0.idx,$T/lbl0.idx" \
  --model 784-10 >"$T/mismatch.log" 2>&1 || rc=$?
# Not an MLP the built-in trainer makes: the client ends (not "trainer failed" every round), saying why.
[ "$rc" = 1 ] && grep -q "not one the built-in trainer can train (its tensors encoder.w and head.b are not" \
  "$T/mismatch.log" || fail "a client with another model was not told why (status $rc): $(tail -3 "$T/mismatch.log")"
kill -TERM "$COORD_PID"
wait "$COORD_PID" || fail "coordinator exited non-zero on SIGTERM"

# ---- 3. refused at start ----
refused() { # NAME PATTERN: --init-model $T/NAME.safetensors fails with PATTERN
  local rc=0
  timeout 20 "$FEDC" coordinator --pki "$T/pki" --federation byo --state "$T/state-$1" \
    --init-model "$T/$1.safetensors" --listen 127.0.0.1:0 >/dev/null 2>"$T/$1.err" || rc=$?
  [ "$rc" = 2 ] && grep -q -- "$2" "$T/$1.err" || fail "$1: status $rc, $(cat "$T/$1.err")"
  [ ! -e "$T/state-$1/state.json" ] || fail "$1: a state was created"
}
write_st "$T/half.safetensors" '[("w", [4], [1.0, 2.0, 3.0, 4.0])]' F16
refused half "dtype F16; only F32"
write_st "$T/many.safetensors" '[("t%d" % i, [1], [0.0]) for i in range(33)]'
refused many "more than 32 tensors"
write_st "$T/nan.safetensors" '[("w", [2], [1.0, float("nan")])]'
refused nan "NaN"
refused missing "No such file"
echo "not a model" >"$T/junk.safetensors"
refused junk "header length .* invalid"
echo "PASS init_model"
