#!/usr/bin/env bash
# Per-identity limits on every method, and what refusals cost the audit log
# (security review, issue 20, finding 5: an identity that never checked in
# got 500 UploadUpdate refusals in 0.9 s and audit.log grew by 501 records;
# SecAggPoll and SecAggSubmit answered thousands of calls a second):
#   1. two clients run two rounds while a third identity that never checks in
#      (fedc_probe --mode flood) sends 500 calls each of UploadUpdate,
#      SecAggPoll, SecAggSubmit, FetchModel and ReportEval (a federated
#      evaluation's report: the upload bucket's limit, evaluation or not). For each method the calls
#      answered stay within burst + rate x the flood's duration (the rest are
#      RESOURCE_EXHAUSTED with a time to retry); both rounds complete with both
#      clients' updates; the audit log verifies and holds, for the flooder, its
#      first contact, 4 refused updates in full and one `refusals` record
#      counting everything else (by reason), whatever the count;
#   2. with the free space below --state-min-free-mib the audit alarm is 2
#      (log line and metric) and the same flood costs one `refusals` record for
#      all identities, no update record.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
. "$(dirname "$0")/_data.sh"
make_tmp
PROBE="$BUILD_DIR/fedc_probe"
make_pki "$T/pki" rl a b mallory
make_idx "$T" 100 2
S=$T/state
N=500
# The limits in force (the defaults, stated so the bounds below are explicit).
LIMITS=(--stranger-rate 1 --stranger-burst 10 --secagg-poll-rate 20 --call-rate 2 --admin-rate 20
  --audit-refusal-interval-ms 3600000)
# name burst rate: the bound for each flooded method
declare -A BURST=([UploadUpdate]=10 [SecAggPoll]=40 [SecAggSubmit]=10 [FetchModel]=10 [ReportEval]=10)
declare -A RATE=([UploadUpdate]=1 [SecAggPoll]=20 [SecAggSubmit]=2 [FetchModel]=2 [ReportEval]=1)

metrics_port() { grep -o "metrics on http://127.0.0.1:[0-9]*" "$T/coord.log" | head -1 | sed 's/.*://'; }
mval() { curl -fsS "http://127.0.0.1:$(metrics_port)/metrics" | awk -v k="$1" '$1 == k { print $2 }'; }
show() { "$FEDC" audit show --state "$1" --json; }

# ---- 1. a flood beside a normal federation ----
start_coordinator --pki "$T/pki" --federation rl --state "$S" --model 784-10 --rounds 2 --min-clients 2 --cohort 2 \
  --min-updates 2 --poll-ms 100 --round-timeout-ms 60000 --metrics-listen 127.0.0.1:0 "${LIMITS[@]}"
start_idx_clients a b
start_bg probe "$PROBE" --coordinator "$COORD_ADDR" --pki "$T/pki" --name mallory --mode flood --count $N
PROBE_PID=$BG_PID
wait "$PROBE_PID" || fail "probe: $(cat "$T/probe.log")"
for m in UploadUpdate SecAggPoll SecAggSubmit FetchModel ReportEval; do
  line=$(grep "\"method\":\"/fedc.v1.Coordinator/$m\"" "$T/probe.log") || fail "no flood line for $m"
  jq -e --argjson n $N --argjson b "${BURST[$m]}" --argjson r "${RATE[$m]}" \
    '.calls == $n and .limited + .answered == $n and .answered <= $b + $r * .seconds + 1 and .limited > 0' \
    <<<"$line" >/dev/null || fail "$m: over its limit: $line"
done
wait_completed 2 || fail "the federation did not complete 2 rounds beside the flood"
[ "$(mval fedc_audit_alarm)" = 0 ] || fail "audit alarm: $(mval fedc_audit_alarm)"
[ "$(mval 'fedc_calls_refused_total{class="secagg_poll"}')" -ge 1 ] || fail "no SecAggPoll refused in the metrics"
kill -TERM "$COORD_PID"
wait "$COORD_PID" || fail "coordinator exited non-zero on SIGTERM"
kill -KILL "${CL[@]}" 2>/dev/null || true

"$FEDC" audit verify --state "$S" >"$T/verify.txt" || fail "audit verify: $(cat "$T/verify.txt")"
show "$S" >"$T/a1.jsonl"
# The flooder: first contact, 4 refused updates in full, one count record.
jq -s -e '[.[] | select(.kind == "update" and .client == "mallory")] | length == 4 and all(.outcome == "refused")' \
  "$T/a1.jsonl" >/dev/null || fail "mallory's update records: $(grep -c mallory "$T/a1.jsonl")"
ups=$(jq -s '[.[] | select(.step == "flood" and (.method | test("UploadUpdate|ReportEval"))) | .calls] | add' "$T/probe.log")
calls=$(jq -s '[.[] | select(.step == "flood" and (.method | test("SecAgg|FetchModel"))) | .limited] | add' "$T/probe.log")
jq -s -e --argjson u "$ups" --argjson c "$calls" '[.[] | select(.kind == "refusals" and .client == "mallory")] |
  length == 1 and .[0].refused == $u + $c and .[0].recorded == 4 and .[0].by_reason.calls == $c and
  (.[0].by_reason | [.precondition, .limit] | add) == $u' "$T/a1.jsonl" >/dev/null ||
  fail "mallory's refusals record: $(grep '"refusals"' "$T/a1.jsonl")"
[ "$(jq -s '[.[] | select(.client == "mallory" or .name == "mallory")] | length' "$T/a1.jsonl")" = 6 ] ||
  fail "the flood cost more than 6 records: $(grep -c mallory "$T/a1.jsonl")"
# The federation's own records are all there.
jq -s -e '[.[] | select(.kind == "update" and .outcome == "accepted")] | length == 4' "$T/a1.jsonl" >/dev/null ||
  fail "accepted updates: $(jq -s '[.[] | select(.kind == "update" and .outcome == "accepted")] | length' "$T/a1.jsonl")"
jq -s -e '[.[] | select(.kind == "model")] | length == 3' "$T/a1.jsonl" >/dev/null || fail "model records"

# ---- 2. below the free-space floor: everyone's refusals in one record ----
mv "$T/coord.log" "$T/coord1.log"
start_coordinator --pki "$T/pki" --federation rl --state "$T/state2" --model 784-10 --rounds 1 --min-clients 2 \
  --metrics-listen 127.0.0.1:0 "${LIMITS[@]}" --state-min-free-mib 1073741824
wait_for grep -q "refusals are now only counted" "$T/coord.log" 20 || fail "no audit alarm in the log"
wait_for grep -q "metrics on" "$T/coord.log" 20 || fail "no metrics listener"
[ "$(mval fedc_audit_alarm)" = 2 ] || fail "audit alarm: $(mval fedc_audit_alarm)"
"$PROBE" --coordinator "$COORD_ADDR" --pki "$T/pki" --name mallory --mode flood --count 50 >"$T/probe2.log" ||
  fail "probe: $(cat "$T/probe2.log")"
kill -TERM "$COORD_PID"
wait "$COORD_PID" || fail "coordinator exited non-zero on SIGTERM"
show "$T/state2" >"$T/a2.jsonl"
jq -s -e '[.[] | select(.kind == "update")] | length == 0' "$T/a2.jsonl" >/dev/null ||
  fail "update records while over budget: $(grep '"update"' "$T/a2.jsonl" | head -3)"
jq -s -e '[.[] | select(.kind == "refusals")] | length == 1 and .[0].client == "*" and .[0].identities == 1 and
  .[0].recorded == 0 and .[0].refused >= 50' "$T/a2.jsonl" >/dev/null ||
  fail "the refusals record: $(grep '"refusals"' "$T/a2.jsonl")"
"$FEDC" audit verify --state "$T/state2" >/dev/null || fail "audit verify (2)"
echo "PASS rate_limits"
