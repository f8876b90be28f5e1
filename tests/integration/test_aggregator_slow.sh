#!/usr/bin/env bash
# An aggregator cuts off an upload that trickles (issue 23's review: the
# aggregator's upload handler holds a thread and a staging slot per stream,
# so a client sending one chunk just inside each idle period could hold them
# for the round). The rule is the coordinator's (fc_transfer_too_slow): past
# a grace of --stream-idle-ms, an upload must average --min-transfer-bps.
#   1. A probe uploading to the aggregator with a 300 ms pause before every
#      16 KiB chunk (under the 1 s idle cut-off, so only the rate rule can
#      stop it) is refused with DEADLINE_EXCEEDED "upload too slow".
#   2. The aggregator keeps serving: a good upload of the next round is taken
#      and counted by the leader.
#   3. Its /metrics (--metrics-listen) count both, its /readyz is ready, and
#      the connection guard saw both probes' connections.
#   4. The leader applies the same rule to a partial sum, and takes one
#      partial stream per aggregator at a time: an aggregator certificate
#      (fedc_agg_probe, registered by hand) trickling a partial for the
#      client assigned to it is cut off DEADLINE_EXCEEDED "partial too
#      slow", and its second stream meanwhile is refused RESOURCE_EXHAUSTED.
# Real processes on 127.0.0.1: one etcd member, a leader with
# --aggregator-tier, one aggregator, fedc_probe clients; certificates from
# `fedc pki`. Skipped (77) without etcd/etcdctl.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
make_tmp
PROBE="$BUILD_DIR/fedc_probe"
make_pki "$T/pki" itest a b c
for g in ag1 ag9; do
  "$FEDC" pki issue --dir "$T/pki" --role aggregator --name "$g" >/dev/null || fail "pki issue --role aggregator failed"
done
. "$(dirname "$0")/_etcd.sh"
etcd_cluster 1
ETCD_TLS=(--etcd "$ETCD" --etcd-ca "$T/pki/ca.crt" --etcd-cert "$T/pki/coordinator.crt" --etcd-key "$T/pki/coordinator.key")
PL=$(free_port)
start_bg leader "$FEDC" coordinator --pki "$T/pki" --federation itest --state "$T/state" \
  --listen "127.0.0.1:$PL" --port-file "$T/leader.port" --model 784-100-10 --rounds 0 \
  --min-clients 1 --cohort 1 --min-updates 1 --poll-ms 100 --round-timeout-ms 5000 \
  --stream-idle-ms 1000 --min-transfer-bps 200000 \
  "${ETCD_TLS[@]}" --etcd-lease-ttl 2 --aggregator-tier --log info
wait_for test -s "$T/leader.port" 20 || fail "the leader never led: $(tail -5 "$T/leader.log")"
PM=$(free_port)
start_bg agg "$FEDC" aggregator --pki "$T/pki" --name ag1 --coordinator "127.0.0.1:$PL" \
  --listen 127.0.0.1:0 --port-file "$T/ag1.port" "${ETCD_TLS[@]}" --etcd-lease-ttl 2 \
  --stream-idle-ms 1000 --min-transfer-bps 200000 --metrics-listen "127.0.0.1:$PM" --log info
wait_for grep -q "aggregator ag1 registered" "$T/leader.log" 20 || fail "ag1 not registered: $(tail -3 "$T/agg.log")"

# ---- 1. the trickle is cut off by the rate rule ----
"$PROBE" --coordinator "127.0.0.1:$PL" --pki "$T/pki" --name a --mode trickle-upload --chunk 16384 \
  --hold-ms 300 >"$T/trickle.out" 2>&1 || fail "trickle probe: $(tail -5 "$T/trickle.out")"
grep -q '"step":"aggregator"' "$T/trickle.out" || fail "the probe did not upload to the aggregator: $(cat "$T/trickle.out")"
grep -q '"step":"trickle"' "$T/trickle.out" || fail "no trickle step: $(cat "$T/trickle.out")"
grep -q "upload from a rejected: upload too slow: [0-9]* bytes in [0-9.]* s (at least 200000 B/s after 1.0 s)" \
  "$T/agg.log" || fail "the aggregator did not cut the trickle by its rate: $(grep ' a ' "$T/agg.log" | tail -3)"
! grep -q "update from a taken" "$T/agg.log" || fail "the aggregator took the trickled update"

# ---- 2. the aggregator keeps serving: b's good upload is taken and counted ----
"$PROBE" --coordinator "127.0.0.1:$PL" --pki "$T/pki" --name b --mode good >"$T/good.out" 2>&1 ||
  fail "good probe: $(tail -5 "$T/good.out")"
grep -q "update from b taken" "$T/agg.log" || fail "b's update not taken: $(tail -5 "$T/agg.log")"
wait_for grep -q "partial from aggregator ag1 accepted" "$T/leader.log" 10 || fail "no partial counted: $(tail -5 "$T/leader.log")"

# ---- 3. the aggregator's metrics ----
metric() { curl -sf "http://127.0.0.1:$PM/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
[ "$(curl -sf "http://127.0.0.1:$PM/readyz")" = ready ] || fail "aggregator /readyz: $(curl -s "http://127.0.0.1:$PM/readyz")"
curl -sf "http://127.0.0.1:$PM/healthz" >/dev/null || fail "aggregator /healthz"
[ "$(metric 'fedc_aggregator_uploads_refused_total{reason="slow"}')" = 1 ] || fail "slow refusals: $(curl -s "http://127.0.0.1:$PM/metrics")"
[ "$(metric fedc_aggregator_uploads_taken_total)" = 1 ] || fail "uploads taken: $(metric fedc_aggregator_uploads_taken_total)"
wait_for bash -c "curl -sf http://127.0.0.1:$PM/metrics | grep -q '^fedc_aggregator_updates_counted_total [1-9]'" 10 ||
  fail "updates counted: $(curl -s "http://127.0.0.1:$PM/metrics" | grep counted)"
[ "$(metric 'fedc_aggregator_partials_total{outcome="accepted"}')" -ge 1 ] || fail "partials accepted"
[ "$(metric fedc_aggregator_connections_accepted_total)" -ge 2 ] || fail "connections accepted: $(metric fedc_aggregator_connections_accepted_total)"
[ "$(metric fedc_aggregator_registered)" = 1 ] && [ "$(metric fedc_aggregator_leader_reachable)" = 1 ] ||
  fail "registered/leader: $(curl -s "http://127.0.0.1:$PM/metrics" | grep -E 'registered|reachable')"
open_conns=$(metric fedc_aggregator_connections_open)
grep -qE '^[0-9]+$' <<<"$open_conns" || fail "no connections_open gauge: '$open_conns'"

# ---- 4. the leader's rule for partials ----
AG1=$(pgrep -f "port-file $T/ag1.port" | head -1)
kill -STOP "$AG1" # its lease runs out: the leader assigns only ag9 meanwhile
wait_for grep -q "aggregator ag1 left the registry" "$T/leader.log" 10 || { kill -CONT "$AG1"; fail "ag1 did not leave"; }
"${ETCDCTL[@]}" put /fedc/itest/aggregators/ag9 "127.0.0.1:1 spiffe://itest/aggregator/ag9" >/dev/null
wait_for grep -q "aggregator ag9 registered" "$T/leader.log" 10 || { kill -CONT "$AG1"; fail "ag9 not read from etcd"; }
start_bg probe-c "$PROBE" --coordinator "127.0.0.1:$PL" --pki "$T/pki" --name c --mode good # assigned to ag9
"$BUILD_DIR/fedc_agg_probe" --coordinator "127.0.0.1:$PL" --pki "$T/pki" --name ag9 --chunk 16384 --hold-ms 300 \
  >"$T/agg-probe.out" 2>&1 || { kill -CONT "$AG1"; fail "fedc_agg_probe: $(cat "$T/agg-probe.out")"; }
kill -CONT "$AG1"
grep -q '"step":"second".*"ok":true.*being received already' "$T/agg-probe.out" || fail "second stream: $(cat "$T/agg-probe.out")"
grep -q '"step":"trickle".*"ok":true.*partial too slow' "$T/agg-probe.out" || fail "trickle: $(cat "$T/agg-probe.out")"
grep -q "partial from aggregator ag9 refused: partial too slow" "$T/leader.log" || fail "leader log: $(grep ag9 "$T/leader.log" | tail -3)"
"${ETCDCTL[@]}" del /fedc/itest/aggregators/ag9 >/dev/null
wait_for bash -c "[ \"\$(curl -s http://127.0.0.1:$PM/readyz)\" = ready ]" 15 || fail "ag1 not ready again"

# The leader gone, the aggregator is no longer ready.
kill -TERM "$(pgrep -f "port-file $T/leader.port" | head -1)"
wait_for bash -c "[ \"\$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$PM/readyz)\" = 503 ]" 10 ||
  fail "readyz with no leader: $(curl -s "http://127.0.0.1:$PM/readyz")"
echo "PASS"
