#!/usr/bin/env bash
# A model download cut at 90% (tests/integration/cutproxy.py) whose
# coordinator is restarted, before the client resumes, with another
# --chunk-bytes (1 MiB -> 512 KiB): the client's offset (a multiple of 1 MiB)
# is still a chunk boundary, so the new coordinator accepts the resume, but
# its stream does not continue the one cut (another chunk size: the resumed
# header announces another payload). The client drops the bytes it kept and
# fetches the model whole, instead of losing the round, and then trains and
# uploads: a round completes on the restarted coordinator.
# The proxy holds the client's reconnection (--hold-after-cut) while the
# coordinator is SIGKILLed and started again on the same port and state.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
. "$(dirname "$0")/_data.sh"
make_tmp
make_pki "$T/pki" itest a
make_idx "$T" 100 1
TOTAL=15900040 # 4 x (784 x 5000 + 5000 + 5000 x 10 + 10)
CUT=$((TOTAL * 9 / 10))
P=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
coordinator() { # NAME, extra args...
  local name=$1
  shift
  rm -f "$T/$name.port"
  start_bg "$name" "$FEDC" coordinator --listen "127.0.0.1:$P" --port-file "$T/$name.port" --pki "$T/pki" \
    --federation itest --state "$T/state" --model 784-5000-10 --rounds 1 --min-clients 1 --cohort 1 \
    --min-updates 1 --poll-ms 100 --round-timeout-ms 300000 --pickup-timeout-ms 300000 --log info "$@"
  wait_for test -s "$T/$name.port" 30 || fail "coordinator $name did not listen: $(tail -5 "$T/$name.log")"
}
coordinator coord1
C1=$BG_PID
touch "$T/hold"
start_bg proxy python3 "$(dirname "$0")/cutproxy.py" --target "127.0.0.1:$P" --port-file "$T/proxy.port" \
  --cut-down "$CUT" --hold-after-cut "$T/hold"
wait_for test -s "$T/proxy.port" 20 || fail "proxy did not start"
start_bg client-a "$FEDC" client --coordinator "127.0.0.1:$(cat "$T/proxy.port")" --pki "$T/pki" --name a \
  --data "idx:$T/img0.idx,$T/lbl0.idx" --model 784-5000-10 --eval-fraction 0 --rounds 1 --log info
wait_for grep -q '"event": "cut"' "$T/proxy.log" 120 || fail "the download was not cut: $(cat "$T/proxy.log")"
kill -KILL "$C1"
wait "$C1" 2>/dev/null || true
coordinator coord2 --chunk-bytes 524288
rm -f "$T/hold"
wait_for grep -q "model download resume refused" "$T/client-a.log" 60 ||
  fail "the client did not fetch the model again: $(tail -5 "$T/client-a.log")"
assert_contains "$T/client-a.log" "model download cut after"
wait_for bash -c "jq -e 'select(.outcome == \"completed\")' '$T/state/rounds.jsonl' >/dev/null 2>&1" 240 ||
  fail "no round completed after the restart: $(tail -5 "$T/coord2.log") / $(tail -5 "$T/client-a.log")"
echo "PASS resume across a restart with another chunk size"
