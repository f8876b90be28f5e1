#!/usr/bin/env bash
# Federated evaluation from Python trainers (python/fedc: fedc_trainer.
# evaluate_stats bound through cffi), against a real coordinator over mutual
# TLS on 127.0.0.1, run with Debian's /usr/bin/python3 on this build's library:
#   0. every struct the cffi declarations hold has the header's layout (size,
#      and each field's offset and size, as the C compiler lays them out):
#      the library copies the caller's fedc_trainer whole;
#      and the binding's checks of what evaluate_stats returns (a bad result
#      is a clear error, and nothing is written);
#   1. plain: 3 NumPy clients with fixed, known totals, 2 rounds, every
#      model evaluated (--eval-every 1, cohort 3, eval_min 2); client c's
#      first evaluate_stats raises: that task is skipped (trainer_error and
#      rejected events carrying the exception), c goes on and reports the
#      second. rounds.jsonl and `fedc rounds --json` hold exactly the sums of
#      what the trainers returned (examples, correct, loss sum, the named
#      metric with its examples), the clients' eval_reported events agree,
#      and the trainer saw the task's config and read-only weights equal to
#      the evaluated version as published;
#   2. under --secagg: the same totals, summed masked (examples and correct
#      exactly, sums up to the fixed-point rounding);
#   3. fedc.pytorch.TorchTrainer: no held-out data, no evaluate_stats (the
#      client never says it can evaluate); with it (tensors, a Dataset or a
#      DataLoader) the totals equal those computed here, each example's loss
#      clamped into [0, value_max], only the metrics the task asks for.
# Skipped (exit 0 with a notice) when /usr/bin/python3 lacks cffi or numpy.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
PY=/usr/bin/python3
SRC=${FEDC_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
if ! "$PY" -c 'import cffi, numpy' 2>/dev/null; then
  echo "SKIP python_eval: $PY lacks cffi or numpy (scripts/install-deps.sh installs them)"
  exit 0
fi
LIB=$(cd "$BUILD_DIR" && pwd)/libfedc-client.so
SAN_ENV=() # as in test_python.sh: a sanitizer build's runtime first, no leak check of the interpreter
if nm -D "$LIB" 2>/dev/null | grep __asan_init >/dev/null; then
  SAN_ENV=(LD_PRELOAD="$(gcc -print-file-name=libasan.so)" ASAN_OPTIONS=detect_leaks=0)
fi
PYRUN=(env PYTHONPATH="$SRC/python" FEDC_CLIENT_LIB="$LIB" ${SAN_ENV[@]+"${SAN_ENV[@]}"} "$PY")
make_tmp
make_pki "$T/pki" pyev a b c
ADMIN=(--pki "$T/pki" --name root)
CLIENT=("${PYRUN[@]}" "$SRC/tests/python/client.py" --pki "$T/pki")

# ---- 0. the cffi layout against the header; the result checks ----
CC=${CC:-cc}
if command -v "$CC" >/dev/null; then
  "${PYRUN[@]}" - "$T/layout.c" "$T/layout.py.txt" <<'PY'
import sys
from fedc._ffi import ffi
typedefs, _, _ = ffi.list_types()
c = ["#include <stddef.h>", "#include <stdio.h>", '#include "fedc/client.h"', "int main(void) {"]
want = []
for name in sorted(typedefs):
    t = ffi.typeof(name)
    if t.kind != "struct" or t.fields is None:  # opaque (fedc_client)
        continue
    c.append('  printf("%s %%zu\\n", sizeof(%s));' % (name, name))
    want.append("%s %d" % (name, ffi.sizeof(t)))
    for fname, f in t.fields:
        c.append('  printf("%s.%s %%zu %%zu\\n", offsetof(%s, %s), sizeof(((%s *)0)->%s));'
                 % (name, fname, name, fname, name, fname))
        want.append("%s.%s %d %d" % (name, fname, f.offset, ffi.sizeof(f.type)))
c.append("  return 0;\n}")
open(sys.argv[1], "w").write("\n".join(c) + "\n")
open(sys.argv[2], "w").write("\n".join(want) + "\n")
PY
  "$CC" -I"$SRC/include" -o "$T/layout" "$T/layout.c" || fail "the layout probe does not compile"
  "$T/layout" >"$T/layout.c.txt"
  diff "$T/layout.c.txt" "$T/layout.py.txt" >"$T/layout.diff" ||
    fail "python/fedc/_ffi.py does not lay out the header's structs (C, then cffi): $(cat "$T/layout.diff")"
  grep -q '^fedc_trainer.evaluate_stats ' "$T/layout.py.txt" || fail "no evaluate_stats in the cffi fedc_trainer"
  echo "cffi layout: $(grep -c '' "$T/layout.py.txt") sizes and offsets equal the header's"
else
  echo "NOTE python_eval: no C compiler ($CC); layout check skipped"
fi
"${PYRUN[@]}" - <<'PY' || fail "evaluate_stats result checks (see above)"
import math
from fedc import client
from fedc._ffi import ffi
def result(n_metrics=2):
    out = ffi.new("fedc_eval_result *")
    metrics = ffi.new("fedc_eval_metric[]", n_metrics)
    out.metrics = metrics
    return out, metrics
names = ["top5", "brier"]
out, keep = result()
client._fill_eval_result(out, {"num_examples": 10, "correct": 7, "loss_sum": 4.5,
                               "metrics": {"top5": 9.0, "brier": (2.5, 4), "unasked": 1.0}}, names)
assert (out.num_examples, out.correct, out.loss_sum) == (10, 7, 4.5)
assert [(out.metrics[j].sum, out.metrics[j].examples) for j in range(2)] == [(9.0, 10), (2.5, 4)]
bad = [({"num_examples": 10, "corect": 7, "loss_sum": 1}, "unknown keys ['corect']"),
       ({"num_examples": 0, "loss_sum": 1}, "num_examples 0"),
       ({"num_examples": 10, "correct": 11, "loss_sum": 1}, "correct 11 > num_examples 10"),
       ({"num_examples": 10, "loss_sum": math.nan}, "loss_sum = nan: must be finite"),
       ({"num_examples": 2.5, "loss_sum": 1}, "num_examples = 2.5: must be a whole number"),
       ({"num_examples": 10, "loss_sum": 1, "metrics": {"top5": (1.0, 11)}}, "metric top5 over 11 examples"),
       ((10, 7, 1.0), "must return a dict")]
for stats, why in bad:
    out, keep = result()
    try:
        client._fill_eval_result(out, stats, names)
    except (TypeError, ValueError) as e:
        assert why in str(e), (why, str(e))
    else:
        raise AssertionError("accepted %r" % (stats,))
    assert out.num_examples == 0 and out.metrics[0].examples == 0, "a refused result was written"
buf = ffi.new("char[8]")
client._set_error(buf, 8, "évaluation failed")  # cut at a character, NUL-terminated
assert ffi.string(buf) == "évalua".encode(), ffi.string(buf)
print("evaluate_stats results: checked, refusals named, nothing written on refusal")
PY

"${PYRUN[@]}" - "$T/init.safetensors" <<'PY'
import sys, numpy as np, fedc
rng = np.random.default_rng(5)
fedc.safetensors.write(sys.argv[1], {"dense.weight": rng.normal(size=(4, 3)).astype(np.float32),
                                     "dense.bias": np.arange(4, dtype=np.float32)})
PY

# Each client's fixed totals: examples,correct,loss_sum and the metric top5 (a bare sum covers all its
# examples; SUM:EXAMPLES covers that many). Sums of a and b: 100, 75, 32.75, top5 85.5 over 90; with c:
# 200, 146, 65.75, top5 95.5 over 110. "other" is not asked for: ignored.
stats_a=(--eval-stats 40,30,12.5 --eval-metric top5=35.5)
stats_b=(--eval-stats 60,45,20.25 --eval-metric top5=50:50 --eval-metric other=3)
stats_c=(--eval-stats 100,71,33 --eval-metric top5=10:20)

# ---- 1. plain ----
# eval_min 2: the first evaluation ends at its deadline with a and b (c's task raised), so the
# deadline is the wait for c's result that never comes, not a bound on anyone's speed. Round 2 must
# not be published before evaluation 1's cohort is drawn (a newer model supersedes a pending
# evaluation; on a loaded machine round 2 can finish first): a's round-2 training waits until c's
# evaluate_stats was called, which happens only once evaluation 1 is drawn.
start_coordinator --pki "$T/pki" --federation pyev --state "$T/state1" --init-model "$T/init.safetensors" \
  --rounds 2 --min-clients 3 --cohort 3 --min-updates 3 --clip-norm 0 --poll-ms 100 --round-timeout-ms 60000 \
  --eval-every 1 --eval-cohort 3 --eval-min 2 --eval-timeout-ms 15000 --eval-metrics top5,brier \
  --eval-max-examples 1000 --eval-value-max 50 --log info
start_bg py-a "${CLIENT[@]}" --coordinator "$COORD_ADDR" --name a --mode weights "${stats_a[@]}" \
  --eval-config-out "$T/evcfg-a.jsonl" --train-gate "$T/c-evaluated"
PA=$BG_PID
start_bg py-b "${CLIENT[@]}" --coordinator "$COORD_ADDR" --name b --mode delta --iterate "${stats_b[@]}"
PB=$BG_PID
start_bg py-c "${CLIENT[@]}" --coordinator "$COORD_ADDR" --name c --mode weights "${stats_c[@]}" --eval-raise 1 \
  --eval-touch "$T/c-evaluated"
PC=$BG_PID
# (Without a bound evaluate_stats no task ever reaches c, and a's round 2 would wait in vain.)
wait_for test -e "$T/c-evaluated" 90 || fail "no evaluation task reached client c's evaluate_stats"
# Clients return from run() once told DONE, which waits for the final model's evaluation.
for p in "$PA" "$PB" "$PC"; do wait "$p" || fail "a python client exited $?"; done
"$FEDC" rounds --coordinator "$COORD_ADDR" "${ADMIN[@]}" --json >"$T/rounds1.json" || fail "fedc rounds --json"
for v in 1 2; do
  "$FEDC" model get --coordinator "$COORD_ADDR" "${ADMIN[@]}" --version $v --out "$T/v$v.safetensors" >/dev/null ||
    fail "model get version $v"
done
kill "$COORD_PID"; wait "$COORD_PID" 2>/dev/null || true
R="$T/state1/rounds.jsonl"
for src in "$R" "$T/rounds1.json"; do
  jq -s -e '
    def ev(r): map(select(.eval and .round == r))[0].eval;
    ev(1) as $e1 | ev(2) as $e2 |
    $e1.outcome == "completed" and $e1.clients == 2 and $e1.examples == 100 and $e1.correct == 75 and
    (($e1.loss_sum - 32.75) | fabs) < 1e-9 and (($e1.accuracy - 0.75) | fabs) < 1e-12 and
    (($e1.metrics.top5.sum - 85.5) | fabs) < 1e-9 and $e1.metrics.top5.examples == 90 and
    ($e1.metrics.brier.examples // 0) == 0 and
    $e2.outcome == "completed" and $e2.clients == 3 and $e2.examples == 200 and $e2.correct == 146 and
    (($e2.loss_sum - 65.75) | fabs) < 1e-9 and
    (($e2.metrics.top5.sum - 95.5) | fabs) < 1e-9 and $e2.metrics.top5.examples == 110' "$src" >/dev/null ||
    fail "plain: $src: the evaluation totals are not the sums the trainers returned: $(jq -c 'select(.eval)' "$src")"
done
# The clients' own eval_reported events: a and b twice, c once (round 2), adding up to the records.
for r in 1 2; do
  jq -c "select(.eval and .round == $r) | .eval" "$R" >"$T/rec$r.json"
  cat "$T"/py-?.log | grep '^{' | jq -s -e --argjson r "$r" --slurpfile rec "$T/rec$r.json" '
    map(select(.kind == "eval_reported" and .round == $r)) |
    length == $rec[0].clients and (map(.num_examples) | add) == $rec[0].examples and
    (map(.correct) | add) == $rec[0].correct and ((map(.loss_sum) | add) - $rec[0].loss_sum | fabs) < 1e-9' \
    >/dev/null || fail "plain: round $r: the eval_reported events do not add up to the record"
done
[ "$(grep -c '"kind": "eval_reported"' "$T/py-c.log")" = 1 ] || fail "client c: expected 1 evaluation report"
grep -q '"kind": "trainer_error", "round": 1,.*evaluate_stats() raised RuntimeError: injected evaluation failure' \
  "$T/py-c.log" || fail "client c: no trainer_error event for evaluation 1 carrying the exception"
grep -q '"kind": "rejected", "round": 1,.*"detail": "evaluation failed: evaluate_stats() raised RuntimeError: injected' \
  "$T/py-c.log" || fail "client c: the runtime's rejected event does not carry the exception's sentence"
assert_contains "$T/py-c.log" "task skipped"
for c in a b c; do
  [ "$(grep -c '"kind": "uploaded"' "$T/py-$c.log")" = 2 ] || fail "client $c: expected 2 training uploads"
done
"${PYRUN[@]}" - "$T" <<'PY' || fail "plain: what evaluate_stats saw (see above)"
import hashlib, json, sys, fedc
T = sys.argv[1]
cfgs = [json.loads(l) for l in open(T + "/evcfg-a.jsonl")]
assert [c["round"] for c in cfgs] == [1, 2], cfgs
for c in cfgs:
    assert c["model_version"] == c["round"], c  # round R published version R
    assert (c["metrics"], c["max_examples"], c["value_max"]) == (["top5", "brier"], 1000, 50.0), c
    assert c["tensors"] == {"dense.weight": [4, 3], "dense.bias": [4]} == c["shapes"], c
    assert not c["weights_writeable"], c
    model, _ = fedc.safetensors.read("%s/v%d.safetensors" % (T, c["model_version"]))
    want = hashlib.sha256(b"".join(model[k].tobytes() for k in c["tensors"])).hexdigest()
    assert c["weights_sha256"] == want, "evaluation %d: the weights are not version %d's" % (c["round"], c["round"])
print("evaluate_stats saw rounds 1, 2: the task's metrics and bounds, read-only weights of the published versions")
PY

# ---- 2. secure aggregation ----
start_coordinator --pki "$T/pki" --federation pyev --state "$T/state2" --init-model "$T/init.safetensors" \
  --rounds 1 --min-clients 3 --cohort 3 --min-updates 3 --clip-norm 100 --poll-ms 100 --round-timeout-ms 60000 \
  --secagg --secagg-stage-ms 20000 --eval-every 1 --eval-cohort 3 --eval-min 3 --eval-timeout-ms 60000 \
  --eval-metrics top5 --eval-max-examples 1000 --eval-value-max 50 --log info
start_bg sa-a "${CLIENT[@]}" --coordinator "$COORD_ADDR" --name a --mode weights "${stats_a[@]}"
PA=$BG_PID
start_bg sa-b "${CLIENT[@]}" --coordinator "$COORD_ADDR" --name b --mode delta "${stats_b[@]}"
PB=$BG_PID
start_bg sa-c "${CLIENT[@]}" --coordinator "$COORD_ADDR" --name c --mode weights "${stats_c[@]}"
PC=$BG_PID
for p in "$PA" "$PB" "$PC"; do wait "$p" || fail "a python client exited $? (secagg)"; done
"$FEDC" rounds --coordinator "$COORD_ADDR" "${ADMIN[@]}" --json >"$T/rounds2.json" || fail "fedc rounds --json"
kill "$COORD_PID"; wait "$COORD_PID" 2>/dev/null || true
jq -s -e 'map(select(.eval and .round == 1))[0].eval as $e |
  $e.outcome == "completed" and $e.clients == 3 and $e.examples == 200 and $e.correct == 146 and
  (($e.loss_sum - 65.75) | fabs) < 1e-3 and (($e.metrics.top5.sum - 95.5) | fabs) < 1e-3 and
  $e.metrics.top5.examples == 110' "$T/rounds2.json" >/dev/null ||
  fail "secagg: the evaluation totals are not the trainers' sums: $(cat "$T/rounds2.json")"
grep -q "masked statistics from a accepted" "$T/coord.log" || fail "secagg: no masked report in the log"

# ---- 3. fedc.pytorch: TorchTrainer.evaluate_stats on held-out data ----
if "${PYRUN[@]}" -c 'import torch' 2>/dev/null; then
  "${PYRUN[@]}" - "$SRC/tests/python" <<'PY' || fail "TorchTrainer.evaluate_stats (see above)"
import sys
sys.path.insert(0, sys.argv[1])
import torch, fedc, fedc.pytorch as fp
from client import torch_parts
model, x, y = torch_parts(7)
w = {k: v.copy() for k, v in fp.to_fedc(model).items()}
# No held-out data: no evaluate_stats, so the client never says it can evaluate.
plain = fp.TorchTrainer(model, x, y)
assert plain.evaluate_stats is None
c = fedc.Client("127.0.0.1:1", trainer=plain, insecure_for_testing=True, insecure_identity="client/t")
assert c._tr.evaluate_stats == fedc.client.ffi.NULL and c._tr.evaluate != fedc.client.ffi.NULL
c.close()
# Held-out data as a pair of tensors, a DataLoader and a Dataset: the same totals, computed here directly.
hx, hy = x[:40] * 3.0, (y[:40] + 1) % 10
with torch.no_grad():
    out = model(hx)
    per = torch.nn.functional.cross_entropy(out, hy, reduction="none").double()
    top2 = (out.topk(2, 1).indices == hy[:, None]).any(1).double()
cfg = {"metrics": ["top2"], "value_max": 1.5}
want_loss = float(per.clamp(0, 1.5).sum())
ds = torch.utils.data.TensorDataset(hx, hy)
for data in ((hx, hy), torch.utils.data.DataLoader(ds, batch_size=7), ds):
    tr = fp.TorchTrainer(model, x, y, eval_data=data, eval_batch=16,
                         metrics={"top2": lambda o, t: (o.topk(2, 1).indices == t[:, None]).any(1),
                                  "unasked": lambda o, t: 1 / 0})
    got = tr.evaluate_stats(w, cfg)
    assert got["num_examples"] == 40 and got["correct"] == int((out.argmax(1) == hy).sum()), got
    assert abs(got["loss_sum"] - want_loss) < 1e-6 and got["loss_sum"] < float(per.sum()), (got, want_loss)
    assert list(got["metrics"]) == ["top2"] and abs(got["metrics"]["top2"] - float(top2.sum())) < 1e-9, got
    out_c = fedc.client.ffi.new("fedc_eval_result *")
    m = fedc.client.ffi.new("fedc_eval_metric[]", 1)
    out_c.metrics = m
    fedc.client._fill_eval_result(out_c, got, cfg["metrics"])  # what the binding sends on
    assert out_c.num_examples == 40 and m[0].examples == 40, (out_c.num_examples, m[0].examples)
    assert "class_counts" not in got, got  # the task asked for none
# Predicted-class counts when the task asks for them (protocol 1.13, drift without a reference set):
# every prediction counted under its class; with fewer classes than outputs, those past the last in none.
# Inputs that the model sends to several classes (hx above all land in one).
vx = torch.randn(40, *x.shape[1:], generator=torch.Generator().manual_seed(3)) * 20.0
with torch.no_grad():
    pred = model(vx).argmax(1)
tr = fp.TorchTrainer(model, x, y, eval_data=(vx, hy), eval_batch=16)
for classes in (10, 3):
    got = tr.evaluate_stats(w, {"metrics": [], "value_max": 1.5, "classes": classes})
    want = [int((pred == k).sum()) for k in range(classes)]
    assert got["class_counts"] == want, (classes, got["class_counts"], want)
    assert sum(got["class_counts"]) <= 40 and (classes < 10 or sum(got["class_counts"]) == 40), got
    out_c = fedc.client.ffi.new("fedc_eval_result *")
    cc = fedc.client.ffi.new("uint64_t[]", classes)  # the runtime's zeroed array of n_classes
    out_c.class_counts = cc
    fedc.client._fill_eval_result(out_c, got, [], classes)  # accepted by the binding's checks, sent on
    assert [out_c.class_counts[k] for k in range(classes)] == want
assert len(set(pred.tolist())) > 1, "a model predicting one class would not test the counts"
print("TorchTrainer.evaluate_stats: %d/40 correct, loss sum %.3f (clamped per example), top2 %d, class counts %s"
      % (int((out.argmax(1) == hy).sum()), want_loss, int(top2.sum()), [int((pred == k).sum()) for k in range(10)]))
PY
else
  echo "NOTE python_eval: torch not installed; PyTorch part skipped"
fi
echo "PASS python_eval"
