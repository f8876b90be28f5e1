#!/usr/bin/env bash
# CLI input that used to be accepted silently or hang a command:
#  - a --config file that is not a mapping (e.g. "rounds 3" without the colon
#    is one YAML scalar) or that uses an alias must be refused at start-up,
#    not ignored while the coordinator runs on defaults;
#  - `fedc sim --min-updates M` with M > --clients can never complete a round:
#    refused at once instead of waiting forever.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
make_tmp

expect_refusal() { # FILE TEXT
  local rc=0
  timeout 10 "$FEDC" coordinator --config "$1" --insecure-for-testing --listen 127.0.0.1:0 --state "$T/s" \
    2>"$T/err" >/dev/null || rc=$?
  [ "$rc" -ne 0 ] || fail "config $1 was accepted"
  [ "$rc" -ne 124 ] || fail "config $1 was accepted: the coordinator started with it"
  grep -q -- "$2" "$T/err" || fail "refusal of $1 does not say '$2': $(cat "$T/err")"
}
printf 'rounds 3\nmin-clients 2\n' > "$T/nocolon.yaml"
expect_refusal "$T/nocolon.yaml" "nocolon.yaml:1: not a mapping of options"
printf 'lr: &x 0.1\nmomentum: *x\n' > "$T/alias.yaml"
expect_refusal "$T/alias.yaml" "alias.yaml:2: aliases are not supported"

rc=0
timeout 20 "$FEDC" sim --clients 2 --cohort 1 --min-updates 3 --out "$T/sim" 2>"$T/sim.err" || rc=$?
[ "$rc" -ne 124 ] || fail "fedc sim with --min-updates > --clients did not return"
[ "$rc" -eq 2 ] || fail "fedc sim with --min-updates > --clients: exit $rc: $(cat "$T/sim.err")"
grep -q -- "--min-updates" "$T/sim.err" || fail "sim refusal does not name --min-updates: $(cat "$T/sim.err")"
echo "PASS cli input"
