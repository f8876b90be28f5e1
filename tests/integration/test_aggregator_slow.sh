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
# Real processes on 127.0.0.1: one etcd member, a leader with
# --aggregator-tier, one aggregator, fedc_probe clients; certificates from
# `fedc pki`. Skipped (77) without etcd/etcdctl.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
make_tmp
PROBE="$BUILD_DIR/fedc_probe"
make_pki "$T/pki" itest a b
"$FEDC" pki issue --dir "$T/pki" --role aggregator --name ag1 >/dev/null || fail "pki issue --role aggregator failed"
. "$(dirname "$0")/_etcd.sh"
etcd_cluster 1
ETCD_TLS=(--etcd "$ETCD" --etcd-ca "$T/pki/ca.crt" --etcd-cert "$T/pki/coordinator.crt" --etcd-key "$T/pki/coordinator.key")
PL=$(free_port)
start_bg leader "$FEDC" coordinator --pki "$T/pki" --federation itest --state "$T/state" \
  --listen "127.0.0.1:$PL" --port-file "$T/leader.port" --model 784-100-10 --rounds 0 \
  --min-clients 1 --cohort 1 --min-updates 1 --poll-ms 100 --round-timeout-ms 5000 \
  "${ETCD_TLS[@]}" --etcd-lease-ttl 2 --aggregator-tier --log info
wait_for test -s "$T/leader.port" 20 || fail "the leader never led: $(tail -5 "$T/leader.log")"
start_bg agg "$FEDC" aggregator --pki "$T/pki" --name ag1 --coordinator "127.0.0.1:$PL" \
  --listen 127.0.0.1:0 --port-file "$T/ag1.port" "${ETCD_TLS[@]}" --etcd-lease-ttl 2 \
  --stream-idle-ms 1000 --min-transfer-bps 200000 --log info
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
echo "PASS"
