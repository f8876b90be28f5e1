#!/usr/bin/env bash
# What fedc says, where the new-user review found wrong or missing words
# (issue 21, item 6):
#  - after `round start --rounds 2` and a restart with the same --rounds 8,
#    the start line said "8-round budget" while status said 10: it now names
#    the budget in effect and why it differs from the configuration;
#  - round control was logged as "round control op 2 (extra 0)": now "pause",
#    "resume", "start (2 more rounds)";
#  - each client retry was printed twice (a WARN line and a "retry:" line);
#  - a missing certificate was "does not verify against CA ... cannot open":
#    now the file is missing, and the `fedc pki` command that makes it;
#  - `fedc --version` was an unknown subcommand; the top-level help did not
#    list `model verify`; an unknown subcommand printed the whole usage.
# (A port in use: tests/integration/test_start_failures.sh; misspelt flags:
# test_cli_input.sh.)
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
make_tmp
make_pki "$T/pki" words alice
ADMIN=(--pki "$T/pki" --name root)

# ---- the round budget, and round control in the log ----
start_coordinator --pki "$T/pki" --federation words --state "$T/s" --rounds 8 --log info
"$FEDC" round pause --coordinator "$COORD_ADDR" "${ADMIN[@]}" >/dev/null
"$FEDC" round start --coordinator "$COORD_ADDR" "${ADMIN[@]}" --rounds 2 >/dev/null
st=$("$FEDC" status --coordinator "$COORD_ADDR" "${ADMIN[@]}" --json)
[ "$(json_get "$st" round_budget)" = 10 ] || fail "budget after round start --rounds 2: $st"
assert_contains "$T/coord.log" "admin root: pause: paused, round budget 8"
assert_contains "$T/coord.log" "admin root: start (2 more rounds): not paused, round budget 10"
grep -q "round control op" "$T/coord.log" && fail "round control logged by number: $(grep "round control" "$T/coord.log")"
kill "$COORD_PID"
wait "$COORD_PID" || fail "coordinator did not stop cleanly"
before=$(wc -l <"$T/coord.log")
start_coordinator --pki "$T/pki" --federation words --state "$T/s" --rounds 8 --log info
st=$("$FEDC" status --coordinator "$COORD_ADDR" "${ADMIN[@]}" --json)
[ "$(json_get "$st" round_budget)" = 10 ] || fail "budget after the restart: $st"
assert_contains "$T/coord.log" \
  "10-round budget (set by \`fedc round start\` before the restart; rounds configured: 8)"
tail -n +$((before + 1)) "$T/coord.log" | grep -q "8-round budget" && fail "the start line names the configured budget, not the one in effect"
PORT=$COORD_PORT
kill "$COORD_PID"
wait "$COORD_PID" || true

# ---- a client retry is one line ----
"$FEDC" pki issue --dir "$T/pki" --role client --name bob >/dev/null
python3 - "$T" <<'PY'
import struct, sys
t = sys.argv[1]
with open(f"{t}/img.idx", "wb") as fi, open(f"{t}/lbl.idx", "wb") as fl:
    fi.write(struct.pack(">IIII", 0x803, 4, 28, 28) + bytes(4 * 784)); fl.write(struct.pack(">II", 0x801, 4) + bytes(4))
PY
# Against the stopped coordinator's port: every check-in fails and is retried.
start_bg retry "$FEDC" client --coordinator "127.0.0.1:$PORT" --pki "$T/pki" --name bob --data "idx:$T/img.idx,$T/lbl.idx"
wait_for bash -c "[ \$(grep -c 'check-in failed' '$T/retry.log') -ge 2 ]" 60 || fail "no retries: $(cat "$T/retry.log")"
kill "$BG_PID"
wait "$BG_PID" || true
grep -q "retry: " "$T/retry.log" && fail "each retry printed twice: $(cat "$T/retry.log")"

# ---- a missing certificate ----
rc=0
"$FEDC" client --coordinator 127.0.0.1:1 --pki "$T/pki" --name alce >/dev/null 2>"$T/err" || rc=$?
[ "$rc" -ne 0 ] || fail "client with a missing certificate started"
[ "$(cat "$T/err")" = "fedc client: certificate file $T/pki/client-alce.crt is missing: \`fedc pki issue --dir $T/pki --role client --name alce\` makes it" ] ||
  fail "missing certificate: $(cat "$T/err")"
rc=0
"$FEDC" status --coordinator 127.0.0.1:1 --pki "$T/nope" --name root >/dev/null 2>"$T/err" || rc=$?
grep -qF "CA certificate file $T/nope/ca.crt is missing: \`fedc pki init --dir $T/nope --federation NAME\` makes it" \
  "$T/err" || fail "missing CA: $(cat "$T/err")"

# ---- fedc --version, the top-level help, an unknown subcommand ----
"$FEDC" --version | grep -q '^fedc [0-9]' || fail "fedc --version: $("$FEDC" --version 2>&1)"
[ "$("$FEDC" --version --json | jq -r .fedc)" = "$("$FEDC" version --json | jq -r .fedc)" ] || fail "--version --json"
"$FEDC" --help | grep -q "^  model .*verify" || fail "fedc --help does not list model verify: $("$FEDC" --help)"
rc=0
"$FEDC" clinet >/dev/null 2>"$T/err" || rc=$?
[ "$rc" -eq 2 ] && [ "$(cat "$T/err")" = "fedc: unknown subcommand 'clinet' (did you mean 'client'?); fedc --help lists them" ] ||
  fail "unknown subcommand: exit $rc: $(cat "$T/err")"
echo "PASS messages"
