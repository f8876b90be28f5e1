#!/usr/bin/env bash
# Cached update calibration (--async-calibrate, CA2FL: Wang et al., ICLR 2024,
# Algorithm 1) with real processes over mutual TLS. Two clients whose every
# update is a known delta (tests/tools/fixed_delta_client: a 0.001 x (1 +
# round % 3) for 1 example, b 0.003 x (1 + round % 3) for 3), buffers of two
# updates weighted by examples / sqrt(1 + staleness), server lr 1. Every
# published step must be the paper's hbar + weighted mean of (d_i - h_i)
# (hbar: the cached updates' mean by examples at the buffer's start; a
# newcomer taken at hbar; the cache takes a buffer's updates once it is
# published), recomputed from the audit log's accepted updates (client,
# round, staleness). The coordinator is SIGKILLed with one update in the open
# buffer and restarted: the buffer log's replay calibrates that update again
# against the cache a restart starts with (empty: memory only), and no version
# or update is lost; a publish that fails (an I/O error that passes) replays
# its buffer against the same cache. `fedc status` shows the cache. Refused at start with a
# sentence: the option in sync mode, with a robust rule, without a clip.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
make_tmp
TOOL=$BUILD_DIR/fixed_delta_client
[ -x "$TOOL" ] || fail "no $TOOL (built with the tests)"

make_pki "$T/pki" itest a b
STATE="$T/state"
COORD_ARGS=(--pki "$T/pki" --federation itest --state "$STATE" --model 784-10 --rounds 0 --mode async --min-clients 1
  --async-concurrency 2 --async-buffer 2 --server-lr 1 --poll-ms 100 --round-timeout-ms 8000 --async-calibrate)

for bad in "--mode sync:async_calibrate is for async mode" "--aggregator median:needs the fedavg aggregator" \
  "--clip-norm 0:async_calibrate needs clip_norm > 0"; do
  # shellcheck disable=SC2086
  "$FEDC" coordinator "${COORD_ARGS[@]}" --state "$T/refused" ${bad%%:*} --listen 127.0.0.1:0 >"$T/refused.log" 2>&1 &&
    fail "--async-calibrate with ${bad%%:*} started"
  assert_contains "$T/refused.log" "${bad#*:}"
  [ ! -e "$T/refused" ] || fail "a refused start left $T/refused"
done

client() { # NAME ROUNDS VALUE EXAMPLES: pid in BG_PID
  start_bg "client-$1" "$TOOL" "$COORD_ADDR" "$T/pki/ca.crt" "$T/pki/client-$1.crt" "$T/pki/client-$1.key" "$2" "$3" "$4"
}
finish() { # PID NAME
  wait "$1" || fail "client $2 failed: $(cat "$T/client-$2.log")"
}
pair_start() { # A_ROUNDS B_ROUNDS: a and b started, pids in PA and PB
  client a "$1" 0.001 1
  PA=$BG_PID
  client b "$2" 0.003 3
  PB=$BG_PID
}
pair() { # A_ROUNDS B_ROUNDS: a and b, each that many accepted updates
  pair_start "$1" "$2"
  finish "$PA" a
  finish "$PB" b
}
status() { "$FEDC" status --coordinator "$COORD_ADDR" --pki "$T/pki" --name root --json; }
at_version() { # V
  wait_for bash -c "'$FEDC' status --coordinator $COORD_ADDR --pki $T/pki --name root --json | jq -e '.global_version == $1'" 30 ||
    fail "not at version $1: $(status | jq -c '{global_version, async}')"
}

start_coordinator "${COORD_ARGS[@]}"
assert_contains "$T/coord.log" "async calibration (CA2FL)"
pair 4 4
at_version 4 # one update per client per buffer: each buffer is a's and b's
status | jq -e '.async.calibration.cached == 2 and .async.calibration.evicted == 0 and
  .async.calibration.max_clients > 30000' >/dev/null || fail "status: $(status | jq -c .async)"
"$FEDC" status --coordinator "$COORD_ADDR" --pki "$T/pki" --name root | grep -q "latest updates of 2 clients cached" ||
  fail "status text without the calibration line"
# One update of a in the open buffer, then the coordinator is killed.
client a 1 0.001 1
finish "$BG_PID" a
status | jq -e '.async.buffered == 1' >/dev/null || fail "not one update in the buffer: $(status | jq -c .async)"
kill -KILL "$COORD_PID"
wait "$COORD_PID" 2>/dev/null || true
start_coordinator "${COORD_ARGS[@]}"
wait_for bash -c "'$FEDC' status --coordinator $COORD_ADDR --pki $T/pki --name root --json | jq -e '.async.buffered == 1'" 20 ||
  fail "the logged update was not replayed: $(status | jq -c .async)"
pair 3 4
at_version 8
# A publish that fails with an I/O error that passes (models/ not a
# directory for a while): the buffer log is replayed into the next buffer on
# the same version, calibrated against the same (now full) cache again.
mv "$STATE/models" "$STATE/models.away"
touch "$STATE/models"
pair_start 1 1
wait_for grep -q "finalizing round failed" "$T/coord.log" 30 || fail "the blocked publish did not fail"
rm "$STATE/models"
mv "$STATE/models.away" "$STATE/models"
finish "$PA" a
finish "$PB" b
at_version 9

PYTHONPATH="$(dirname "$0")" python3 - "$STATE" <<'PY' || fail "a published step is not the calibrated one"
import json, math, sys
from st_floats import load
state = sys.argv[1]
base = {"a": (0.001, 1), "b": (0.003, 3)}
ups, restart_at = [], None
for r in map(json.loads, open(state + "/audit.log")):
    if r.get("kind") == "update" and r.get("outcome") == "accepted":
        ups.append(r)
    elif r.get("kind") == "buffer_replayed":
        restart_at = len(ups) if restart_at is None else restart_at  # the restart's, not the failed publish's
assert len(ups) == 18 and restart_at == 9, (len(ups), restart_at)
x = [load("%s/models/v%06d.safetensors" % (state, v)) for v in range(10)]
cache = {}
for v in range(1, 10):
    buf = ups[2 * (v - 1):2 * v]
    if 2 * (v - 1) < restart_at <= 2 * v:
        cache = {}  # restarted in this buffer: the cache is memory only, the replay calibrates again
    w = sum(n for _, n in cache.values())
    hbar = sum(h * n for h, n in cache.values()) / w if w else 0.0
    num = den = 0.0
    for u in buf:
        val, n = base[u["client"]]
        d = val * (1 + u["round"] % 3)
        f = n / math.sqrt(1 + u["staleness"])
        num += f * (d - cache.get(u["client"], (hbar, 0))[0])
        den += f
        u["d"] = d
    want = hbar + num / den
    step = [q - p for p, q in zip(x[v - 1], x[v])]
    err = max(abs(s - want) for s in step)
    assert err < 2e-6, (v, [(u["client"], u["round"], u["staleness"]) for u in buf], want, step[:2], err)
    for u in buf:
        cache[u["client"]] = (u["d"], base[u["client"]][1])
print("calibrated steps: 9 versions checked against the formula, across a restart mid-buffer and a failed publish")
PY
echo "ok: calibrated steps over a restart mid-buffer"
