#!/usr/bin/env bash
# Model drift fed by federated evaluation when there is no reference set
# (issue 24: "The federated evaluation of issue 22 feeds the same check when
# there is no reference set"). No --reference-data; --eval-every 1: each
# evaluation's clients report how many of their held-out examples the model
# predicts as each class (EvalReport.class_counts), the coordinator sums them
# and compares each evaluated version's distribution with the previous
# evaluated one's by the PSI of the reference-set check.
#  - honest (four clients, four rounds, the default threshold 0.25): every
#    evaluation line has 10 class counts adding up to its examples; the 2nd to
#    4th carry a drift check (source federated, against the version evaluated
#    before), none tripped; `fedc rounds --json` shows the same with source
#    "federated"; no drift audit record; the metrics count 3 checks, 0 tripped;
#  - a sign-flip attacker (`fedc client --byzantine signflip`, one of four)
#    under --drift-policy hold: its first round already wrecks the model, an
#    evaluation's check trips (PSI >= 0.25), the audit log has the drift record
#    (source federated, action hold), the round record says so, and the
#    federation pauses with the reason in `fedc status` and state.json;
#  - under --secagg the counts travel inside the masked vector: the
#    coordinator's totals have 10 class counts adding up to the examples, and
#    the second evaluation is checked against the first.
#  - Python trainers (python/fedc, a built-in-MLP-shaped model of 4 classes):
#    evaluate_stats without "class_counts" reports none: the coordinator says
#    so once in its log, no evaluation carries a drift check, nothing is
#    audited; with "class_counts" the totals are their sums and the second
#    evaluation is checked (PSI 0: the same counts). Skipped without cffi/numpy.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
. "$(dirname "$0")/_data.sh"
make_tmp

make_pki "$T/pki" itest a b c d
make_idx "$T" 200 4
ADMIN=(--pki "$T/pki" --name root)
BASE=(--pki "$T/pki" --federation itest --model 784-10 --min-clients 4 --cohort 4 --min-updates 4 --poll-ms 100
  --round-timeout-ms 30000 --pickup-timeout-ms 30000 --eval-every 1 --eval-cohort 4 --eval-min 4
  --eval-timeout-ms 30000 --metrics-listen 127.0.0.1:0)
client() { # NAME INDEX [ARGS...]
  local n=$1 i=$2
  shift 2
  start_bg "client-$n" "$FEDC" client --coordinator "$COORD_ADDR" --pki "$T/pki" --name "$n" \
    --data "idx:$T/img$i.idx,$T/lbl$i.idx" --model 784-10 --eval-fraction 0.25 "$@"
  CL+=("$BG_PID")
}
evals_done() { # STATE N: N evaluation lines completed
  wait_for bash -c "[ \"\$(jq -s 'map(select(.eval.outcome == \"completed\")) | length' '$1/rounds.jsonl' 2>/dev/null)\" \
    -ge $2 ]" 180
}

# ---- honest ----
start_coordinator "${BASE[@]}" --state "$T/s1" --rounds 4
CL=()
client a 0; client b 1; client c 2; client d 3
evals_done "$T/s1" 4 || fail "4 evaluations did not complete: $(cat "$T/s1/rounds.jsonl" 2>/dev/null)"
R=$T/s1/rounds.jsonl
jq -s -e 'map(select(.eval)) | length == 4 and all(.[]; (.eval.class_counts | length) == 10
  and ((.eval.class_counts | add) == .eval.examples))' "$R" >/dev/null ||
  fail "evaluation lines without their class counts: $(cat "$R")"
jq -s -e 'map(select(.eval)) | sort_by(.round) | (.[0].eval | has("drift") | not) and all(.[1:][];
  .eval.drift.source == "federated" and .eval.drift.psi >= 0 and .eval.drift.psi < 0.25 and
  (.eval.drift.tripped | not) and .eval.drift.baseline == .eval.version - 1 and .eval.drift.threshold == 0.25)' "$R" \
  >/dev/null || fail "honest drift checks: $(jq -s -c 'map(select(.eval) | .eval.drift)' "$R")"
"$FEDC" rounds --coordinator "$COORD_ADDR" "${ADMIN[@]}" --json > "$T/rounds.json"
jq -s -e 'length == 4 and ([.[1:][] | .drift.source == "federated" and (.drift.tripped | not)] | all)' \
  "$T/rounds.json" >/dev/null || fail "fedc rounds --json: $(cat "$T/rounds.json")"
! grep -q '"kind":"drift"' "$T/s1/audit.log" || fail "honest run audited a drift: $(grep drift "$T/s1/audit.log")"
MPORT=$(grep -o 'metrics on [^ ]*:[0-9]*' "$T/coord.log" | head -n 1 | sed 's/.*://')
curl -s "http://127.0.0.1:$MPORT/metrics" > "$T/metrics.txt"
grep -qx "fedc_drift_checked_total 3" "$T/metrics.txt" && grep -qx "fedc_drift_tripped_total 0" "$T/metrics.txt" ||
  fail "metrics: $(grep drift "$T/metrics.txt")"
HONEST=$(jq -s -c '[.[] | select(.eval.drift) | .eval.drift.psi]' "$R")
kill -TERM "${CL[@]}" "$COORD_PID" 2>/dev/null || true
set +e; wait "${CL[@]}" "$COORD_PID" 2>/dev/null; set -e

# ---- a sign-flip attacker, policy hold ----
start_coordinator "${BASE[@]}" --state "$T/s2" --rounds 6 --drift-policy hold
CL=()
client a 0; client b 1; client c 2; client d 3 --byzantine signflip
wait_for bash -c "'$FEDC' status --coordinator $COORD_ADDR ${ADMIN[*]} --json |
  jq -e '.paused and (.pause_reason | startswith(\"drift hold: model v\"))' >/dev/null" 180 ||
  fail "no drift hold: $("$FEDC" status --coordinator "$COORD_ADDR" "${ADMIN[@]}"; cat "$T/s2/rounds.jsonl")"
"$FEDC" status --coordinator "$COORD_ADDR" "${ADMIN[@]}" | grep -q "in the federated evaluation moved by PSI" ||
  fail "fedc status: $("$FEDC" status --coordinator "$COORD_ADDR" "${ADMIN[@]}")"
grep '"kind":"drift"' "$T/s2/audit.log" > "$T/drift.audit" || fail "no drift audit record"
jq -s -e 'length == 1 and .[0].source == "federated" and .[0].action == "hold" and .[0].psi >= 0.25' \
  "$T/drift.audit" >/dev/null || fail "drift audit: $(cat "$T/drift.audit")"
V=$(jq -s '.[0].version' "$T/drift.audit")
wait_for bash -c "jq -s -e 'map(select(.eval.version == $V and .eval.drift.tripped and .eval.drift.action == \"hold\"))
  | length == 1' '$T/s2/rounds.jsonl' >/dev/null" 30 || fail "round record: $(cat "$T/s2/rounds.jsonl")"
wait_for bash -c "jq -e '.paused and (.pause_reason | startswith(\"drift hold\"))' '$T/s2/state.json' >/dev/null" 30 ||
  fail "the hold is not in state.json: $(cat "$T/s2/state.json")"
kill -TERM "${CL[@]}" "$COORD_PID" 2>/dev/null || true
set +e; wait "${CL[@]}" "$COORD_PID" 2>/dev/null; set -e

# ---- secure aggregation ----
start_coordinator "${BASE[@]}" --state "$T/s3" --rounds 2 --secagg --secagg-stage-ms 20000
CL=()
client a 0; client b 1; client c 2; client d 3
evals_done "$T/s3" 2 || fail "secagg: 2 evaluations did not complete: $(cat "$T/s3/rounds.jsonl" 2>/dev/null)"
jq -s -e 'map(select(.eval)) | sort_by(.round) | length == 2 and all(.[]; (.eval.class_counts | length) == 10 and
  (.eval.class_counts | add) == .eval.examples) and .[1].eval.drift.source == "federated"' "$T/s3/rounds.jsonl"   >/dev/null || fail "secagg evaluation lines: $(cat "$T/s3/rounds.jsonl")"
kill -TERM "${CL[@]}" "$COORD_PID" 2>/dev/null || true
set +e; wait "${CL[@]}" "$COORD_PID" 2>/dev/null; set -e
# ---- Python trainers: counts not reported, then reported ----
PY=/usr/bin/python3
SRC=$(cd "$(dirname "$0")/../.." && pwd)
if "$PY" -c 'import cffi, numpy' 2>/dev/null; then
  LIB=$(cd "$BUILD_DIR" && pwd)/libfedc-client.so
  SAN_ENV=() # as in test_python_eval.sh: a sanitizer build's runtime first, no leak check of the interpreter
  if nm -D "$LIB" 2>/dev/null | grep __asan_init >/dev/null; then
    SAN_ENV=(LD_PRELOAD="$(gcc -print-file-name=libasan.so)" ASAN_OPTIONS=detect_leaks=0)
  fi
  PYRUN=(env PYTHONPATH="$SRC/python" FEDC_CLIENT_LIB="$LIB" ${SAN_ENV[@]+"${SAN_ENV[@]}"} "$PY")
  "${PYRUN[@]}" - "$T/init.safetensors" <<'PY'
import sys, numpy as np, fedc
fedc.safetensors.write(sys.argv[1], {"fc1.weight": np.ones((4, 3), np.float32), "fc1.bias": np.zeros(4, np.float32)})
PY
  for leg in none counts; do
    extra=()
    [ "$leg" = counts ] && extra=(--eval-class-counts 10,5,0,5)
    start_coordinator --pki "$T/pki" --federation itest --state "$T/py-$leg" --init-model "$T/init.safetensors" \
      --rounds 2 --min-clients 3 --cohort 3 --min-updates 3 --clip-norm 0 --poll-ms 100 --round-timeout-ms 30000 \
      --eval-every 1 --eval-cohort 3 --eval-min 3 --eval-timeout-ms 30000 --log info
    CL=()
    for n in a b c; do
      start_bg "py-$leg-$n" "${PYRUN[@]}" "$SRC/tests/python/client.py" --coordinator "$COORD_ADDR" --pki "$T/pki" \
        --name "$n" --mode weights --eval-stats 20,10,5 "${extra[@]}"
      CL+=("$BG_PID")
    done
    evals_done "$T/py-$leg" 2 || fail "python $leg: 2 evaluations did not complete: $(cat "$T/py-$leg/rounds.jsonl")"
    kill -TERM "${CL[@]}" "$COORD_PID" 2>/dev/null || true
    set +e; wait "${CL[@]}" "$COORD_PID" 2>/dev/null; set -e
    P=$T/py-$leg/rounds.jsonl
    if [ "$leg" = none ]; then
      [ "$(grep -c 'carries no predicted-class counts' "$T/coord.log")" = 1 ] ||
        fail "python none: the coordinator should say once that no counts came: $(grep drift "$T/coord.log")"
      jq -s -e 'map(select(.eval)) | length == 2 and all(.[]; (.eval | has("drift") or has("class_counts")) | not)' \
        "$P" >/dev/null || fail "python none: evaluation lines: $(cat "$P")"
      ! grep -q '"kind":"drift"' "$T/py-$leg/audit.log" || fail "python none: a drift was audited"
    else
      jq -s -e 'map(select(.eval)) | sort_by(.round) | length == 2 and all(.[]; .eval.class_counts == [30, 15, 0, 15])
        and .[1].eval.drift.psi == 0 and .[1].eval.drift.source == "federated"' "$P" >/dev/null ||
        fail "python counts: evaluation lines: $(cat "$P")"
    fi
  done
else
  echo "python legs skipped: $PY lacks cffi or numpy"
fi
echo "honest PSI per evaluation $HONEST; attacked: v$V tripped, PSI $(jq -s '.[0].psi' "$T/drift.audit")"
echo "PASS drift_fed"
