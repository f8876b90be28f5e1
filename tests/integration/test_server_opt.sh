#!/usr/bin/env bash
# Server optimizer state survives a restart bit for bit, over real processes
# and mutual TLS on 127.0.0.1: a coordinator with --server-optimizer adam and
# one client (logistic regression on a small data set made here; one client,
# so the round's update is deterministic).
#   run A: 4 rounds straight through;
#   run B: the same federation, the coordinator SIGKILLed after round 2 and
#          restarted on its state directory; rounds 3 and 4 continue.
# Every model version of B must equal A's (SHA-256), the optimizer state
# file sits beside each version, and status and rounds.jsonl name the
# optimizer. A bad optimizer name or beta is refused at start.
# Both runs keep a model average (--model-average 0.5): it is in the state
# file (so the hashes below cover it across the restart), and `fedc model get
# --averaged` serves it, for the current version from memory and for an older
# one from its state file, equal to the average recomputed here from every
# version's file; a version with none is refused with the reason.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
. "$(dirname "$0")/_data.sh"
make_tmp
make_pki "$T/pki" sopt a
make_idx "$T" 200 1
OPT=(--pki "$T/pki" --federation sopt --model 784-10 --min-clients 1 --cohort 1 --min-updates 1 --poll-ms 100
  --round-timeout-ms 20000 --server-optimizer adam --server-lr 0.01 --server-beta2 0.98 --model-average 0.5
  --log info)
ADMIN_OF() { echo --coordinator "$COORD_ADDR" --pki "$T/pki" --name root; }
completed() { "$FEDC" status $(ADMIN_OF) --json | jq -r .rounds_completed; }
client() { # LOGNAME
  start_bg "$1" "$FEDC" client --coordinator "$COORD_ADDR" --pki "$T/pki" --name a \
    --data "idx:$T/img0.idx,$T/lbl0.idx" --model 784-10 --max-retries 0
}
wait_rounds() {
  wait_for bash -c "[ \"\$('$FEDC' status $(ADMIN_OF) --json | jq -r .rounds_completed)\" -ge $1 ]" 60 ||
    fail "round $1 did not complete"
}

# Refused configurations, each with the reason.
if "$FEDC" coordinator --pki "$T/pki" --federation sopt --state "$T/bad" --model 784-10 --server-optimizer rmsprop \
  2>"$T/bad1.err"; then fail "rmsprop accepted"; fi
grep -q "sgd, avgm, adagrad, adam or yogi" "$T/bad1.err" || fail "no list of optimizers: $(cat "$T/bad1.err")"
if "$FEDC" coordinator --pki "$T/pki" --federation sopt --state "$T/bad" --model 784-10 --server-optimizer adam \
  --server-beta2 1.5 2>"$T/bad2.err"; then fail "beta2 1.5 accepted"; fi
grep -q "server_beta2" "$T/bad2.err" || fail "no reason for beta2: $(cat "$T/bad2.err")"
if "$FEDC" coordinator --pki "$T/pki" --federation sopt --state "$T/bad" --model 784-10 --model-average 1 \
  2>"$T/bad4.err"; then fail "model average 1 accepted"; fi
grep -q "model_average must be in \[0, 1)" "$T/bad4.err" || fail "no reason for the average: $(cat "$T/bad4.err")"
# YAML keys as the docs write them (server_optimizer = --server-optimizer).
printf 'federation: sopt\nserver_optimizer: rmsprop\n' >"$T/bad.yaml"
if "$FEDC" coordinator --config "$T/bad.yaml" --pki "$T/pki" --state "$T/bad" --model 784-10 2>"$T/bad3.err"; then
  fail "rmsprop accepted from YAML"
fi
grep -q "bad.yaml:2.*sgd, avgm, adagrad, adam or yogi" "$T/bad3.err" || fail "YAML key: $(cat "$T/bad3.err")"

# ---- run A: straight through ----
start_coordinator "${OPT[@]}" --state "$T/a" --rounds 4
client clientA
wait_rounds 4
st=$("$FEDC" status $(ADMIN_OF) --json)
jq -e '.server_optimizer | test("^adam lr=0.01 beta1=0.9 beta2=0.98 tau=0.001")' <<<"$st" >/dev/null ||
  fail "status does not name the optimizer: $st"
kill -TERM "$COORD_PID"
wait "$COORD_PID" || true

# ---- run B: killed after round 2, restarted ----
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# A budget of 2 holds it between rounds 2 and 3 for the kill.
start_coordinator "${OPT[@]}" --state "$T/b" --rounds 2 --listen "127.0.0.1:$PORT"
B1=$COORD_PID
client clientB
wait_rounds 2
sleep 0.3
[ "$(completed)" = 2 ] || fail "not held after round 2"
kill -KILL "$B1"
wait "$B1" 2>/dev/null || true
for v in 1 2; do [ -f "$T/b/models/v00000$v.opt.safetensors" ] || fail "no optimizer state beside v$v"; done
start_coordinator "${OPT[@]}" --state "$T/b" --rounds 4 --listen "127.0.0.1:$PORT"
assert_contains "$T/coord.log" "server optimizer adam: state of model v2 loaded (step 2)"
client clientB2 # the first was told the budget was spent and left
wait_rounds 4

# The weights' SHA-256 of every version (rounds.jsonl; the files also carry a
# creation time) are identical.
for v in 1 2 3 4; do
  a=$(jq -r --argjson v "$v" 'select(.version == $v) | .sha256' "$T/a/rounds.jsonl")
  b=$(jq -r --argjson v "$v" 'select(.version == $v) | .sha256' "$T/b/rounds.jsonl")
  [ -n "$a" ] && [ "$a" = "$b" ] || fail "model v$v differs after the restart: $a vs $b"
done
# The moments themselves are identical (the payload hash in each file's metadata).
for v in 3 4; do
  ha=$(head -c 4096 "$T/a/models/v00000$v.opt.safetensors" | grep -ao '"fedc.sha256":"[0-9a-f]*"')
  hb=$(head -c 4096 "$T/b/models/v00000$v.opt.safetensors" | grep -ao '"fedc.sha256":"[0-9a-f]*"')
  [ -n "$ha" ] && [ "$ha" = "$hb" ] || fail "optimizer state of v$v differs: $ha vs $hb"
done
jq -e 'select(.round == 4) | .server_optimizer | startswith("adam lr=0.01")' "$T/b/rounds.jsonl" >/dev/null ||
  fail "rounds.jsonl does not record the optimizer: $(tail -1 "$T/b/rounds.jsonl")"
jq -e 'select(.round == 4) | .server_optimizer | endswith(" average=0.5")' "$T/b/rounds.jsonl" >/dev/null ||
  fail "rounds.jsonl does not record the model average: $(tail -1 "$T/b/rounds.jsonl")"

# ---- the model average, from B's coordinator (still serving after its budget) ----
ADM=(--coordinator "$COORD_ADDR" --pki "$T/pki" --name root)
out=$("$FEDC" model get "${ADM[@]}" --averaged --out "$T/avg4.st" --json)
[ "$(jq -r .version <<<"$out")" = 4 ] && [ "$(jq -r .averaged <<<"$out")" = true ] || fail "model get --averaged: $out"
"$FEDC" model get "${ADM[@]}" --averaged --version 2 --out "$T/avg2.st" >/dev/null || fail "no average of v2 from disk"
if "$FEDC" model get "${ADM[@]}" --averaged --version 9 --out "$T/avg9.st" 2>"$T/avg9.err"; then
  fail "an average of v9 (of 4) was served"
fi
assert_contains "$T/avg9.err" "no model average of version 9 (latest is 4)"
# a_0 = x_0, a_t = b_t a_{t-1} + (1 - b_t) x_t, b_t = min(0.5, (1 + t) / (10 + t)): from the versions' files.
PYTHONPATH="$(dirname "$0")" python3 - "$T" <<'PY' || fail "the served average is not the average of the versions"
import sys
from st_floats import load
t = sys.argv[1]
x = [load("%s/b/models/v%06d.safetensors" % (t, v)) for v in range(5)]
a = list(x[0])
want = {}
for v in range(1, 5):
    b = min(0.5, (1 + v) / (10 + v))
    a = [b * p + (1 - b) * q for p, q in zip(a, x[v])]
    want[v] = a
for v in (2, 4):
    got = load("%s/avg%d.st" % (t, v))
    err = max(abs(p - q) for p, q in zip(got, want[v]))
    assert len(got) == len(want[v]) and err < 1e-6, (v, err)
# It is an average, not a version: it differs from v4 itself.
assert max(abs(p - q) for p, q in zip(load("%s/avg4.st" % t), x[4])) > 1e-4
PY
# A damaged state file is an error the log explains, not a wrong average; the coordinator serves on.
printf 'x' | dd of="$T/b/models/v000002.opt.safetensors" bs=1 seek=$(($(stat -c %s "$T/b/models/v000002.opt.safetensors") - 9)) \
  conv=notrunc 2>/dev/null
if "$FEDC" model get "${ADM[@]}" --averaged --version 2 --out "$T/bad2.st" 2>"$T/bad2g.err"; then
  fail "an average from a damaged state file was served"
fi
assert_contains "$T/bad2g.err" "the model average of version 2 cannot be read"
assert_contains "$T/coord.log" "GetModel averaged v2"
# So is a truncated one (a format error, not "none saved").
truncate -s 100 "$T/b/models/v000003.opt.safetensors"
if "$FEDC" model get "${ADM[@]}" --averaged --version 3 --out "$T/bad3.st" 2>"$T/bad3g.err"; then
  fail "an average from a truncated state file was served"
fi
assert_contains "$T/bad3g.err" "the model average of version 3 cannot be read"
"$FEDC" model get "${ADM[@]}" --averaged --out "$T/avg4b.st" --force >/dev/null || fail "no average after the refusal"
echo "PASS server_opt"
