#!/usr/bin/env bash
# The Python binding (python/fedc) against a real coordinator over mutual TLS
# on 127.0.0.1, run with Debian's /usr/bin/python3 (python3-cffi,
# python3-numpy, python3-torch) on the library this build made:
#   1. two NumPy clients (one returns weights and reports through on_event, the
#      other a fedc.Delta and reads client.events(); 1 and 3 examples) for 3 rounds on a model imported with --init-model: every
#      published version equals the example-weighted average computed here
#      from the previous one; the trainer saw names, shapes and the task's
#      config (lr, epochs, batch, prox_mu) and read-only weights;
#   2. a trainer that raises in its first round: that round is skipped
#      (trainer_error + rejected events) and the client goes on to upload;
#   3. a trainer that refuses the model's shape: run() ends with
#      fedc.ShapeError naming the tensor;
#   4. Ctrl-C (SIGINT) while waiting for a round: run() stops through
#      fedc_client_stop and the script exits 130;
#   5. a PyTorch CNN (fedc.pytorch) exported as --init-model, trained for
#      two rounds; the result loads back into the module by name; and
#      TorchTrainer's FedProx steps against the closed form.
# First, python/ installs offline with one pip command (into a venv with
# --system-site-packages, as Debian's python3 refuses system-wide pip installs).
# Skipped (exit 0 with a notice) when /usr/bin/python3 lacks cffi or numpy.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
PY=/usr/bin/python3
SRC=${FEDC_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
if ! "$PY" -c 'import cffi, numpy' 2>/dev/null; then
  echo "SKIP python: $PY lacks cffi or numpy (scripts/install-deps.sh installs them)"
  exit 0
fi
LIB=$(cd "$BUILD_DIR" && pwd)/libfedc-client.so
# Every python3 runs through PYRUN: our package and library; a sanitizer
# build's library needs its runtime loaded first into python3, and the
# interpreter's own allocations are not ours to judge (no leak check there;
# the fedc processes keep theirs).
SAN_ENV=()
if nm -D "$LIB" 2>/dev/null | grep __asan_init >/dev/null; then
  SAN_ENV=(LD_PRELOAD="$(gcc -print-file-name=libasan.so)" ASAN_OPTIONS=detect_leaks=0)
fi
PYRUN=(env PYTHONPATH="$SRC/python" FEDC_CLIENT_LIB="$LIB" ${SAN_ENV[@]+"${SAN_ENV[@]}"} "$PY")
make_tmp
make_pki "$T/pki" pyt a b c d e t

# ---- 0. the one-command install (offline, into a venv that sees Debian's packages) ----
if "$PY" -m venv --system-site-packages "$T/venv" 2>/dev/null; then
  cp -r "$SRC/python" "$T/pysrc" # pip builds in place: keep the source tree clean
  "$T/venv/bin/python" -m pip install -q --no-index --no-build-isolation "$T/pysrc" >"$T/pip.log" 2>&1 ||
    fail "pip install of python/ failed: $(tail -5 "$T/pip.log")"
  abi=$(cd "$T" && env -u PYTHONPATH FEDC_CLIENT_LIB="$LIB" ${SAN_ENV[@]+"${SAN_ENV[@]}"} "$T/venv/bin/python" -c \
    'import fedc; print(fedc.abi_version())') ||
    fail "the installed package does not import"
  [ "$abi" = 2 ] || fail "installed package: ABI level $abi, expected 2"
else
  echo "NOTE python: no venv module; install check skipped"
fi
ADMIN=(--pki "$T/pki" --name root)
CLIENT=("${PYRUN[@]}" "$SRC/tests/python/client.py" --pki "$T/pki")

# ---- 1. NumPy trainers, the model checked against the weighted average ----
"${PYRUN[@]}" - "$T/init.safetensors" <<'PY'
import sys, numpy as np, fedc
rng = np.random.default_rng(3)
fedc.safetensors.write(sys.argv[1], {"dense.weight": rng.normal(size=(4, 3)).astype(np.float32),
                                     "dense.bias": np.arange(4, dtype=np.float32)})
PY
start_coordinator --pki "$T/pki" --federation pyt --state "$T/state1" --init-model "$T/init.safetensors" \
  --rounds 3 --min-clients 2 --cohort 2 --min-updates 2 --clip-norm 0 --poll-ms 100 --round-timeout-ms 30000 \
  --lr 0.125 --epochs 3 --batch 7 --prox-mu 0.25
start_bg py-a "${CLIENT[@]}" --coordinator "$COORD_ADDR" --name a --mode weights --examples 1 --config-out "$T/cfg-a.jsonl"
PA=$BG_PID
start_bg py-b "${CLIENT[@]}" --coordinator "$COORD_ADDR" --name b --mode delta --examples 3 --iterate
PB=$BG_PID
wait "$PA" || fail "python client a exited $?"
wait "$PB" || fail "python client b exited $?"
for c in a b; do
  [ "$(grep -c '"kind": "uploaded"' "$T/py-$c.log")" = 3 ] || fail "client $c: expected 3 uploads"
  assert_contains "$T/py-$c.log" '"kind": "run_returned", "rounds_done": 3'
done
for v in 0 1 2 3; do
  "$FEDC" model get --coordinator "$COORD_ADDR" "${ADMIN[@]}" --version $v --out "$T/v$v.safetensors" >/dev/null ||
    fail "model get version $v"
done
"${PYRUN[@]}" - "$T" "$T/cfg-a.jsonl" <<'PY' || fail "published models are not the weighted average (see above)"
import json, sys, numpy as np, fedc
T = sys.argv[1]
prev, _ = fedc.safetensors.read(T + "/v0.safetensors")
assert list(prev) == ["dense.weight", "dense.bias"], list(prev)
for v in (1, 2, 3):
    got, _ = fedc.safetensors.read("%s/v%d.safetensors" % (T, v))
    for k, w in prev.items():
        # a: weights 0.5 w + 1 (1 example); b: delta -0.1 w (3 examples)
        want = w + (1 * (0.5 * w + 1 - w) + 3 * (-0.1 * w)) / 4
        if not np.allclose(got[k], want, rtol=1e-5, atol=1e-6):
            sys.exit("version %d %s: got %s, want %s" % (v, k, got[k].ravel(), want.ravel()))
    prev = got
cfgs = [json.loads(l) for l in open(sys.argv[2])]
assert [c["round"] for c in cfgs] == sorted(c["round"] for c in cfgs) and len(cfgs) == 3, cfgs
for c in cfgs:
    assert c["tensors"] == {"dense.weight": [4, 3], "dense.bias": [4]}, c
    assert c["shapes"] == c["tensors"] and not c["weights_writeable"], c
    assert (c["learning_rate"], c["local_epochs"], c["batch_size"], c["prox_mu"]) == (0.125, 3, 7, 0.25), c
print("weighted averages match over 3 rounds")
PY
kill "$COORD_PID"; wait "$COORD_PID" 2>/dev/null || true

# ---- 2.-4. a trainer that raises, one that refuses the shape, Ctrl-C ----
start_coordinator --pki "$T/pki" --federation pyt --state "$T/state2" --init-model "$T/init.safetensors" \
  --rounds 4 --min-clients 1 --cohort 1 --min-updates 1 --clip-norm 0 --poll-ms 100 --round-timeout-ms 3000 \
  --pickup-timeout-ms 3000
start_bg py-c "${CLIENT[@]}" --coordinator "$COORD_ADDR" --name c --mode raise --max-rounds 2
PC=$BG_PID
wait "$PC" || fail "python client c exited $? after its trainer raised once"
grep -q '"kind": "trainer_error".*RuntimeError: injected trainer failure' "$T/py-c.log" ||
  fail "no trainer_error event carrying the exception"
assert_contains "$T/py-c.log" '"kind": "rejected"'
assert_contains "$T/py-c.log" '"kind": "run_returned", "rounds_done": 2'
[ "$(grep -c '"kind": "uploaded"' "$T/py-c.log")" = 2 ] || fail "client c: expected 2 uploads after the failed round"
assert_contains "$T/py-c.log" "round skipped"

rc=0
"${CLIENT[@]}" --coordinator "$COORD_ADDR" --name d --mode shape >"$T/py-d.log" 2>&1 || rc=$?
[ "$rc" = 3 ] || fail "shape-refusing client: expected exit 3 (fedc.ShapeError), got $rc"
grep -q '"kind": "shape_error", "detail": "SHAPE: this trainer takes a model with dense.weight \[2, 2\]' "$T/py-d.log" ||
  fail "ShapeError does not carry the trainer's reason"
kill "$COORD_PID"; wait "$COORD_PID" 2>/dev/null || true

start_coordinator --pki "$T/pki" --federation pyt --state "$T/state3" --init-model "$T/init.safetensors" \
  --rounds 1 --min-clients 9 --poll-ms 100
start_bg py-e "${CLIENT[@]}" --coordinator "$COORD_ADDR" --name e --mode wait
PE=$BG_PID
wait_for grep -q '"kind": "waiting"' "$T/py-e.log" 30 || fail "client e never checked in"
kill -INT "$PE"
rc=0
wait "$PE" || rc=$?
[ "$rc" = 130 ] || fail "Ctrl-C: expected exit 130, got $rc"
assert_contains "$T/py-e.log" '"kind": "interrupted"'
kill "$COORD_PID"; wait "$COORD_PID" 2>/dev/null || true

# ---- 5. PyTorch ----
if "${PYRUN[@]}" -c 'import torch' 2>/dev/null; then
  "${CLIENT[@]}" --mode torch --init-out "$T/cnn.safetensors" || fail "export of the CNN failed"
  start_coordinator --pki "$T/pki" --federation pyt --state "$T/state4" --init-model "$T/cnn.safetensors" \
    --rounds 2 --min-clients 1 --cohort 1 --min-updates 1 --poll-ms 100 --lr 0.1
  start_bg py-t "${CLIENT[@]}" --coordinator "$COORD_ADDR" --name t --mode torch
  PT=$BG_PID
  wait "$PT" || fail "torch client exited $?"
  [ "$(grep -c '"kind": "uploaded"' "$T/py-t.log")" = 2 ] || fail "torch client: expected 2 uploads"
  assert_contains "$T/py-t.log" '"kind": "evaluated"'
  "$FEDC" model get --coordinator "$COORD_ADDR" "${ADMIN[@]}" --version 2 --out "$T/cnn2.safetensors" >/dev/null
  "${PYRUN[@]}" - "$T" "$SRC/tests/python" <<'PY' || fail "the federated CNN does not load back into the module"
import sys
sys.path.insert(0, sys.argv[2])
import numpy as np, fedc, fedc.pytorch
from client import torch_parts
model, x, y = torch_parts(7)
v0, _ = fedc.safetensors.read(sys.argv[1] + "/cnn.safetensors")
v2, _ = fedc.safetensors.read(sys.argv[1] + "/cnn2.safetensors")
fedc.pytorch.from_fedc(model, v2)  # names and shapes checked
assert list(v2) == list(v0) == list(fedc.pytorch.to_fedc(model)) == ["0.weight", "0.bias", "4.weight", "4.bias"]
assert all(np.isfinite(v2[k]).all() and not np.array_equal(v2[k], v0[k]) for k in v0), "weights did not move"
print("CNN trained 2 rounds:", {k: v.shape for k, v in v2.items()})
PY
  # FedProx in TorchTrainer: full-batch steps against w -= lr (grad CE + mu (w - w_global)) replayed here.
  "${PYRUN[@]}" - "$SRC/tests/python" <<'PY' || fail "TorchTrainer's FedProx steps differ from the closed form"
import sys
sys.path.insert(0, sys.argv[1])
import torch, fedc.pytorch as fp
from client import torch_parts
model, x, y = torch_parts(7)
w0 = fp.to_fedc(model)
w0 = {k: v.copy() for k, v in w0.items()}
cfg = {"learning_rate": 0.1, "momentum": 0.0, "batch_size": 64, "local_epochs": 3, "seed": 5, "prox_mu": 0.5}
got, n, _ = fp.TorchTrainer(model, x, y).train(w0, cfg)
ref, _, _ = torch_parts(7)
params = dict(ref.named_parameters())
anchor = {k: torch.from_numpy(w0[k]) for k in params}
for _ in range(3):
    ref.zero_grad()
    torch.nn.functional.cross_entropy(ref(x), y).backward()
    with torch.no_grad():
        for k, p in params.items():
            p -= 0.1 * (p.grad + 0.5 * (p - anchor[k]))
plain, _, _ = fp.TorchTrainer(torch_parts(7)[0], x, y).train(w0, dict(cfg, prox_mu=0.0))
diff = max(float(abs(torch.from_numpy(got[k]) - params[k].detach()).max()) for k in params)
moved = max(float(abs(got[k] - plain[k]).max()) for k in params)
assert n == 64 and diff < 1e-5 and moved > 1e-4, (diff, moved)
print("TorchTrainer FedProx: max |diff| %.1e against the closed form; mu moved weights by up to %.1e" % (diff, moved))
PY
else
  echo "NOTE python: torch not installed; PyTorch part skipped"
fi
echo "PASS python"
