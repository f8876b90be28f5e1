#!/usr/bin/env bash
# etcd's access control for a federation (deploy/etcd-auth.sh, issue 23):
#   1. With auth on, the federation runs: the leader (its certificate's user
#      "coordinator", read-write on the prefix) leads and publishes; the
#      aggregator ag1, with its own certificate (user "ag1"), registers and
#      takes the uploads.
#   2. ag1's certificate can write nothing but its own registration: the
#      model pointer, the leader key and another aggregator's key are
#      refused, and it cannot even read the model pointer.
#   3. A device's certificate (etcd trusts the federation's CA here) has no
#      user: refused everything.
# Real processes on 127.0.0.1: one etcd member over mutual TLS, certificates
# from `fedc pki`. Skipped (77) without etcd/etcdctl.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
. "$(dirname "$0")/_data.sh"
make_tmp
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
make_pki "$T/pki" itest a b
"$FEDC" pki issue --dir "$T/pki" --role aggregator --name ag1 >/dev/null || fail "pki issue --role aggregator failed"
. "$(dirname "$0")/_etcd.sh"
etcd_cluster 1
ctl() { # CERT-BASENAME ARGS...: etcdctl as that certificate's user
  local who=$1
  shift
  etcdctl --endpoints "$ETCD" --cacert "$T/pki/ca.crt" --cert "$T/pki/$who.crt" --key "$T/pki/$who.key" \
    --command-timeout 3s "$@"
}
ETCDCTL="etcdctl --endpoints $ETCD --cacert $T/pki/ca.crt --cert $T/pki/admin-root.crt --key $T/pki/admin-root.key" \
  "$ROOT/deploy/etcd-auth.sh" /fedc/itest coordinator ag1 >"$T/auth.out" 2>&1 || fail "etcd-auth.sh: $(cat "$T/auth.out")"
# Read whole, then matched: `grep -q` quitting early would SIGPIPE etcdctl and, under pipefail, fail the test.
users=$(ctl admin-root user list) || fail "user list: $users"
grep -qx ag1 <<<"$users" || fail "no user ag1: $users"
# Idempotent: a second run (as root, auth on) changes nothing and succeeds.
ETCDCTL="etcdctl --endpoints $ETCD --cacert $T/pki/ca.crt --cert $T/pki/admin-root.crt --key $T/pki/admin-root.key" \
  "$ROOT/deploy/etcd-auth.sh" /fedc/itest coordinator ag1 >"$T/auth2.out" 2>&1 || fail "etcd-auth.sh again: $(cat "$T/auth2.out")"

# ---- 1. the federation under access control ----
PL=$(free_port)
start_bg leader "$FEDC" coordinator --pki "$T/pki" --federation itest --state "$T/state" \
  --listen "127.0.0.1:$PL" --port-file "$T/leader.port" --model 784-10 --rounds 0 \
  --min-clients 2 --cohort 2 --min-updates 2 --poll-ms 100 --round-timeout-ms 8000 \
  --etcd "$ETCD" --etcd-ca "$T/pki/ca.crt" --etcd-cert "$T/pki/coordinator.crt" --etcd-key "$T/pki/coordinator.key" \
  --etcd-lease-ttl 2 --aggregator-tier --log info
wait_for test -s "$T/leader.port" 20 || fail "the leader never led under auth: $(tail -5 "$T/leader.log")"
start_bg agg "$FEDC" aggregator --pki "$T/pki" --name ag1 --coordinator "127.0.0.1:$PL" --listen 127.0.0.1:0 \
  --etcd "$ETCD" --etcd-ca "$T/pki/ca.crt" --etcd-cert "$T/pki/aggregator-ag1.crt" \
  --etcd-key "$T/pki/aggregator-ag1.key" --etcd-lease-ttl 2 --log info
wait_for grep -q "aggregator ag1 registered" "$T/leader.log" 20 || fail "ag1 could not register: $(tail -5 "$T/agg.log")"
make_idx "$T" 120 2
i=0
for n in a b; do
  start_bg "client-$n" "$FEDC" client --coordinator "127.0.0.1:$PL" --pki "$T/pki" --name "$n" \
    --data "idx:$T/img$i.idx,$T/lbl$i.idx" --model 784-10 --eval-fraction 0 --log info
  i=$((i + 1))
done
wait_for bash -c "v=\$(etcdctl --endpoints $ETCD --cacert $T/pki/ca.crt --cert $T/pki/coordinator.crt --key $T/pki/coordinator.key get --print-value-only /fedc/itest/model | jq -r .version); [ \"\${v:-0}\" -ge 2 ]" 60 ||
  fail "no version 2 under auth: $(tail -5 "$T/leader.log")"
grep -q "partial from aggregator ag1 accepted" "$T/leader.log" || fail "no partial from ag1"
"$FEDC" ha verify --etcd "$ETCD" --etcd-ca "$T/pki/ca.crt" --etcd-cert "$T/pki/coordinator.crt" \
  --etcd-key "$T/pki/coordinator.key" --state "$T/state" --pki "$T/pki" >"$T/verify.txt" 2>&1 ||
  fail "fedc ha verify under auth: $(cat "$T/verify.txt")"

# ---- 2. the aggregator's certificate: its own key only ----
denied() { # WHAT CERT ARGS...
  local what=$1
  shift
  if ctl "$@" >"$T/denied.out" 2>&1; then fail "$what was allowed"; fi
  grep -qi "permission denied\|user name not found\|authentication failed" "$T/denied.out" ||
    fail "$what failed, but not for access: $(cat "$T/denied.out")"
}
denied "ag1 moving the model pointer" aggregator-ag1 put /fedc/itest/model '{"version":99}'
denied "ag1 taking the leader key" aggregator-ag1 put /fedc/itest/leader x
denied "ag1 registering as ag2" aggregator-ag1 put /fedc/itest/aggregators/ag2 "127.0.0.1:1 spiffe://itest/aggregator/ag2"
denied "ag1 reading the model pointer" aggregator-ag1 get /fedc/itest/model
ctl aggregator-ag1 put /fedc/itest/aggregators/ag1x y >/dev/null 2>&1 && fail "ag1 wrote a key that only starts like its own"
# ---- 3. a device's certificate: no user at all ----
denied "a device reading the model pointer" client-a get /fedc/itest/model
denied "a device writing the registry" client-a put /fedc/itest/aggregators/a "127.0.0.1:1 spiffe://itest/aggregator/a"
# The pointer is still the leader's.
v=$(ctl coordinator get --print-value-only /fedc/itest/model | jq -r .version)
[ "$v" != 99 ] || fail "the model pointer was moved"
echo "PASS"
