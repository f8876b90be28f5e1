#!/usr/bin/env bash
# Resumable downloads when the link dies silently (security review of issue
# 26): the client sees its model download cut (its side of the connection
# closed) but no FIN reaches the coordinator, whose stream stalls until its
# own timeout (--stream-idle-ms) ends it: tests/integration/cutproxy.py
# --silent cuts the 16 MB model download at 10% that way. The client's
# resumed FetchModel finds its old download still listed ("already in
# progress"): the coordinator says when to come back (fedc-retry-after-ms)
# and the client waits, keeping the bytes it has, until the old stream is
# gone, then resumes at the byte it was cut (within the round's deadline).
# Before: the refusal carried no time, the client spent its 8 resumptions in
# 8 short naps while the old stream was still there and fetched the model
# whole again; the coordinator never logged a resumed download.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
. "$(dirname "$0")/_data.sh"
make_tmp

make_pki "$T/pki" itest a
make_idx "$T" 100 1
TOTAL=15900040 # 784-5000-10: 16 chunks of 1 MiB
CUT=$((TOTAL / 10))

start_coordinator --pki "$T/pki" --federation itest --state "$T/state" --model 784-5000-10 --rounds 1 \
  --min-clients 1 --cohort 1 --min-updates 1 --poll-ms 100 --round-timeout-ms 300000 \
  --pickup-timeout-ms 300000 --stream-idle-ms 8000 --log info
start_bg proxy python3 "$(dirname "$0")/cutproxy.py" --target "$COORD_ADDR" --port-file "$T/proxy.port" \
  --cut-down "$CUT" --silent
wait_for test -s "$T/proxy.port" 20 || fail "proxy did not start"
PROXY=127.0.0.1:$(cat "$T/proxy.port")

start_bg client-a "$FEDC" client --coordinator "$PROXY" --pki "$T/pki" --name a \
  --data "idx:$T/img0.idx,$T/lbl0.idx" --model 784-5000-10 --eval-fraction 0 --rounds 1 --log info
wait_for bash -c "jq -e 'select(.outcome == \"completed\")' '$T/state/rounds.jsonl' >/dev/null 2>&1" 240 ||
  fail "round 1 did not complete: $(tail -5 "$T/coord.log") / $(tail -5 "$T/client-a.log")"
grep -q '"event": "cut", "dir": "down"' "$T/proxy.log" || fail "the download was not cut: $(cat "$T/proxy.log")"
grep -q "model download for client/a resumed at byte [0-9]* of $TOTAL" "$T/coord.log" ||
  fail "the model download was not resumed after a silent cut: $(grep -i 'download\|fetch' "$T/client-a.log" | tail -12)"
echo "PASS"
