#!/usr/bin/env bash
# Model drift on the coordinator's reference set over the real wire (issue 24,
# "Model drift"): --reference-data is an IDX images file the clients never
# see; each new version's predicted-class distribution on it is compared with
# the previous published version's (PSI) before the version is signed.
#  - flag (the default): three honest clients, three rounds; every round's
#    record in rounds.jsonl and `fedc rounds --json` has its drift (PSI >= 0,
#    against the version before, 100 examples); the audit log has one "drift"
#    record per round that reached the threshold, and the metrics count them;
#  - hold with --drift-threshold 0 (any change trips it): round 1's version is
#    published (v1), then the federation pauses: `fedc status` says paused and
#    why, the audit log has the drift record with action hold, no round 2
#    starts; the pause and its reason survive a restart; `fedc round resume`
#    continues: round 2 publishes v2 and holds again; an admin's own pause
#    then replaces the reason (status and state.json have none);
#  - refused at start, in one line, leaving no state: a model the built-in
#    MLP code cannot run (--init-model conv), reference images of the wrong
#    width, a missing file, a bad --drift-policy.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
. "$(dirname "$0")/_data.sh"
make_tmp

make_pki "$T/pki" itest a b c
make_idx "$T" 100 4 # img0..2 the clients' data, img3 the reference set
REF=$T/img3.idx
ADMIN=(--pki "$T/pki" --name root)
BASE=(--pki "$T/pki" --federation itest --model 784-10 --min-clients 3 --cohort 0 --cohort-fraction 1
  --min-updates 3 --poll-ms 100 --round-timeout-ms 30000 --pickup-timeout-ms 30000 --reference-data "$REF")

# ---- flag ----
start_coordinator "${BASE[@]}" --state "$T/s1" --rounds 3 --metrics-listen 127.0.0.1:0
start_idx_clients a b c
wait_completed 3 120 || fail "3 rounds did not complete: $(cat "$T/s1/rounds.jsonl" 2>/dev/null)"
R=$T/s1/rounds.jsonl
jq -s -e 'length == 3 and ([.[] | .outcome == "completed" and (.drift.psi | type) == "number" and .drift.psi >= 0
  and .drift.baseline == .version - 1 and .drift.examples == 100 and .drift.threshold == 0.25
  and (if .drift.tripped then .drift.action == "flag" else (.drift | has("action") | not) end)] | all)' "$R" >/dev/null ||
  fail "rounds.jsonl drift: $(cat "$R")"
"$FEDC" rounds --coordinator "$COORD_ADDR" "${ADMIN[@]}" --json > "$T/rounds.json"
jq -s -e 'length == 3 and ([.[] | .drift.psi >= 0 and .drift.baseline == .version - 1] | all)' "$T/rounds.json" \
  >/dev/null || fail "fedc rounds --json: $(cat "$T/rounds.json")"
tripped=$(jq -s '[.[] | select(.drift.tripped)] | length' "$R")
grep '"kind":"drift"' "$T/s1/audit.log" > "$T/drift1.audit" || true
[ "$(wc -l < "$T/drift1.audit")" = "$tripped" ] || fail "$tripped rounds tripped, audit: $(cat "$T/drift1.audit")"
jq -s -e '[.[] | .action == "flag" and .psi >= .threshold and .baseline == .version - 1] | all' "$T/drift1.audit" \
  >/dev/null || fail "drift audit records: $(cat "$T/drift1.audit")"
"$FEDC" status --coordinator "$COORD_ADDR" "${ADMIN[@]}" --json | jq -e '.pause_reason == ""' >/dev/null ||
  fail "flag paused the federation"
MPORT=$(grep -o 'metrics on [^ ]*:[0-9]*' "$T/coord.log" | head -n 1 | sed 's/.*://')
curl -s "http://127.0.0.1:$MPORT/metrics" > "$T/metrics.txt"
grep -qx "fedc_drift_checked_total 3" "$T/metrics.txt" || fail "metrics: $(grep drift "$T/metrics.txt")"
grep -qx "fedc_drift_tripped_total $tripped" "$T/metrics.txt" || fail "metrics: $(grep drift "$T/metrics.txt")"
kill -TERM "${CL[@]}" "$COORD_PID" 2>/dev/null || true
set +e; wait "${CL[@]}" "$COORD_PID" 2>/dev/null; set -e

# ---- hold ----
HOLD=("${BASE[@]}" --state "$T/s2" --rounds 5 --drift-policy hold --drift-threshold 0)
start_coordinator "${HOLD[@]}"
start_idx_clients a b c
wait_for bash -c "'$FEDC' status --coordinator $COORD_ADDR ${ADMIN[*]} --json |
  jq -e '.paused and (.pause_reason | startswith(\"drift hold: model v1\"))' >/dev/null" 120 ||
  fail "no drift hold after round 1: $("$FEDC" status --coordinator "$COORD_ADDR" "${ADMIN[@]}")"
"$FEDC" status --coordinator "$COORD_ADDR" "${ADMIN[@]}" --json > "$T/st.json"
jq -e '.global_version == 1 and .rounds_completed == 1 and .round == 2' "$T/st.json" >/dev/null ||
  fail "held federation: $(cat "$T/st.json")"
"$FEDC" status --coordinator "$COORD_ADDR" "${ADMIN[@]}" | grep -q "^paused because:  drift hold: model v1" ||
  fail "fedc status: $("$FEDC" status --coordinator "$COORD_ADDR" "${ADMIN[@]}")"
grep '"kind":"drift"' "$T/s2/audit.log" > "$T/drift2.audit" || fail "no drift audit record"
jq -s -e 'length == 1 and .[0].action == "hold" and .[0].version == 1 and .[0].baseline == 0 and .[0].threshold == 0' \
  "$T/drift2.audit" >/dev/null || fail "hold audit: $(cat "$T/drift2.audit")"
jq -s -e 'length == 1 and .[0].drift.tripped and .[0].drift.action == "hold"' "$T/s2/rounds.jsonl" >/dev/null ||
  fail "hold round record: $(cat "$T/s2/rounds.jsonl")"
jq -e '.paused and (.pause_reason | startswith("drift hold"))' "$T/s2/state.json" >/dev/null ||
  fail "state.json: $(cat "$T/s2/state.json")"

# The hold and its reason survive a restart (the new coordinator listens on
# another port: the clients start again against it).
kill -TERM "${CL[@]}" "$COORD_PID" 2>/dev/null || true
set +e; wait "${CL[@]}" "$COORD_PID" 2>/dev/null; set -e
start_coordinator "${HOLD[@]}"
start_idx_clients a b c
"$FEDC" status --coordinator "$COORD_ADDR" "${ADMIN[@]}" --json |
  jq -e '.paused and .rounds_completed == 1 and (.pause_reason | startswith("drift hold: model v1"))' >/dev/null ||
  fail "after a restart: $("$FEDC" status --coordinator "$COORD_ADDR" "${ADMIN[@]}" --json)"

# An admin resumes: round 2 runs, publishes v2, and (threshold 0) holds again.
"$FEDC" round resume --coordinator "$COORD_ADDR" "${ADMIN[@]}" >/dev/null
wait_for bash -c "'$FEDC' status --coordinator $COORD_ADDR ${ADMIN[*]} --json |
  jq -e '.paused and .rounds_completed == 2 and (.pause_reason | startswith(\"drift hold: model v2\"))' >/dev/null" 120 ||
  fail "resume did not continue: $("$FEDC" status --coordinator "$COORD_ADDR" "${ADMIN[@]}" --json)"
grep -q '"kind":"admin".*"action":"resume"' "$T/s2/audit.log" || fail "no admin resume in the audit log"
jq -s -e 'length == 2 and .[1].drift.baseline == 1 and .[1].drift.action == "hold"' "$T/s2/rounds.jsonl" >/dev/null ||
  fail "round 2 record: $(cat "$T/s2/rounds.jsonl")"
# An admin's own pause replaces the hold's reason: the federation stays
# paused, and it is the admin's now.
"$FEDC" round pause --coordinator "$COORD_ADDR" "${ADMIN[@]}" >/dev/null
"$FEDC" status --coordinator "$COORD_ADDR" "${ADMIN[@]}" --json | jq -e '.paused and .pause_reason == ""' >/dev/null ||
  fail "admin pause kept the drift reason: $("$FEDC" status --coordinator "$COORD_ADDR" "${ADMIN[@]}" --json)"
kill -TERM "${CL[@]}" "$COORD_PID" 2>/dev/null || true
set +e; wait "${CL[@]}" "$COORD_PID" 2>/dev/null; set -e
jq -e '.paused and (has("pause_reason") | not)' "$T/s2/state.json" >/dev/null ||
  fail "state.json after an admin pause: $(cat "$T/s2/state.json")"

# ---- refused at start ----
failed_start() { # STATE EXPECTED ARGS...
  local state=$1 expected=$2 rc=0
  shift 2
  timeout 20 "$FEDC" coordinator --pki "$T/pki" --federation itest --listen 127.0.0.1:0 --state "$state" \
    --grace-ms 0 "$@" >/dev/null 2>"$T/err" || rc=$?
  [ "$rc" != 0 ] || fail "coordinator $*: started"
  [ "$(grep -c . "$T/err")" -ge 1 ] && tail -n 1 "$T/err" | grep -qF -- "$expected" ||
    fail "coordinator $*: expected '$expected', got: $(cat "$T/err")"
  [ ! -e "$state/models" ] || fail "coordinator $*: left a state in $state"
}
python3 - "$T/conv.safetensors" <<'PY'
import json, struct, sys
hdr = {"conv1.weight": {"dtype": "F32", "shape": [4, 1, 3, 3], "data_offsets": [0, 144]},
       "conv1.bias": {"dtype": "F32", "shape": [4], "data_offsets": [144, 160]}}
h = json.dumps(hdr).encode()
h += b" " * (-len(h) % 8)
open(sys.argv[1], "wb").write(struct.pack("<Q", len(h)) + h + struct.pack("<40f", *([0.1] * 40)))
PY
failed_start "$T/s3" "only for the built-in MLP models" --init-model "$T/conv.safetensors" --reference-data "$REF"
failed_start "$T/s4" "images of 784 pixels, but the model takes 20 inputs" --model 20-10 --reference-data "$REF"
failed_start "$T/s5" "cannot open" --model 784-10 --reference-data "$T/nothing.idx"
failed_start "$T/s6" "use flag or hold" --model 784-10 --reference-data "$REF" --drift-policy pause
echo "flag: PSI per round $(jq -s -c '[.[].drift.psi]' "$R"), $tripped tripped"
echo "PASS drift"
