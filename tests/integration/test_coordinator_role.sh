#!/usr/bin/env bash
# A client talks to a coordinator only: a server whose certificate is an
# aggregator's (issue 23: a TLS server certificate of the federation, with
# the 127.0.0.1/localhost names and the operator's --san hosts) is refused in
# the handshake, though it chains to the CA and matches the host. Before,
# any serverAuth certificate of the federation passed as the coordinator, so
# an aggregator on (or able to answer for) the coordinator's host got the
# clients' check-ins and their updates. Real processes, mutual TLS, 127.0.0.1.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
. "$(dirname "$0")/_data.sh"
make_tmp
make_pki "$T/pki" itest c1
"$FEDC" pki issue --dir "$T/pki" --role aggregator --name ag1 >/dev/null || fail "pki issue aggregator failed"
make_idx "$T" 40 1

# A coordinator process serving with the aggregator's certificate.
start_coordinator --ca "$T/pki/ca.crt" --cert "$T/pki/aggregator-ag1.crt" --key "$T/pki/aggregator-ag1.key" --federation itest \
  --state "$T/state" --model 784-10 --rounds 1 --cohort 1 --min-updates 1 --poll-ms 100
start_bg client-c1 "$FEDC" client --coordinator "$COORD_ADDR" --pki "$T/pki" --name c1 \
  --data "idx:$T/img0.idx,$T/lbl0.idx" --model 784-10 --json
wait_for grep -q "server certificate is spiffe://itest/aggregator/ag1, not a coordinator's: refused" \
  "$T/client-c1.log" 30 || fail "the client did not refuse an aggregator's certificate as its coordinator"
if grep -q '"event": *"task"' "$T/client-c1.log"; then fail "the client took a task from an aggregator's certificate"; fi
kill -TERM "$BG_PID" 2>/dev/null || true
set +e; wait "$BG_PID" 2>/dev/null; set -e
kill -TERM "$COORD_PID"
set +e; wait "$COORD_PID" 2>/dev/null; set -e

# The coordinator's own certificate: the same client checks in.
start_coordinator --pki "$T/pki" --federation itest --state "$T/state2" --model 784-10 --rounds 1 --cohort 1 \
  --min-updates 1 --poll-ms 100
start_bg client-c1b "$FEDC" client --coordinator "$COORD_ADDR" --pki "$T/pki" --name c1 \
  --data "idx:$T/img0.idx,$T/lbl0.idx" --model 784-10 --json
wait_for grep -q '"kind":"contact","name":"c1","role":"client"' "$T/state2/audit.log" 30 ||
  fail "the client never reached the coordinator with its own certificate"
if grep -q "not a coordinator's: refused" "$T/client-c1b.log"; then fail "the coordinator's certificate was refused"; fi
echo "PASS: a client refuses an aggregator's certificate as its coordinator and reaches the coordinator's"
