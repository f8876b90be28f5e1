#!/usr/bin/env bash
# Coordinator configuration: a YAML file is applied and flags override it;
# an unknown key, a bad value, a nested mapping and a missing file are each
# refused at start-up with the offending key or line named; --help lists
# every option with its default.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
make_tmp

"$FEDC" coordinator --help > "$T/help.txt"
for k in federation listen rounds min-clients cohort min-updates round-timeout-ms clip-norm lr upload-slots; do
  grep -q -- "--$k " "$T/help.txt" || fail "--help does not document --$k"
done
grep -q "round budget.*\[10\]" "$T/help.txt" || fail "--help does not show the default of --rounds"

expect_refusal() { # FILE TEXT
  if "$FEDC" coordinator --config "$1" --insecure-for-testing --listen 127.0.0.1:0 --state "$T/s" 2>"$T/err"; then
    fail "config $1 was accepted"
  fi
  grep -q -- "$2" "$T/err" || fail "refusal of $1 does not say '$2': $(cat "$T/err")"
}
printf 'rounds: 3\nroundz: 4\n' > "$T/unknown.yaml"
expect_refusal "$T/unknown.yaml" "unknown option 'roundz'"
printf 'rounds: -3\n' > "$T/neg.yaml"
expect_refusal "$T/neg.yaml" "invalid value '-3' for 'rounds'"
printf 'lr: fast\n' > "$T/lr.yaml"
expect_refusal "$T/lr.yaml" "invalid value 'fast' for 'lr'"
printf 'engine:\n  rounds: 3\n' > "$T/nested.yaml"
expect_refusal "$T/nested.yaml" "nested mappings"
printf 'rounds: [1, 2]\n' > "$T/list.yaml"
expect_refusal "$T/list.yaml" "lists are not options"
printf 'rounds: 3\n  bad indent: [\n' > "$T/syntax.yaml"
expect_refusal "$T/syntax.yaml" "syntax.yaml:"
expect_refusal "$T/missing.yaml" "cannot open config"
if "$FEDC" coordinator --rounds abc --insecure-for-testing 2>"$T/err"; then fail "bad flag accepted"; fi
grep -q "invalid value 'abc' for 'rounds'" "$T/err" || fail "bad flag message: $(cat "$T/err")"

# The example config from deploy/ parses; a flag overrides the file.
sed -e "s#/var/lib/fedc/pki#$T/pki#" -e "s#/var/lib/fedc/state#$T/state#" -e 's#listen: .*#listen: 127.0.0.1:0#' \
  "$FEDC_SOURCE_DIR/deploy/coordinator.example.yaml" > "$T/coord.yaml"
make_pki "$T/pki" demo
start_coordinator --config "$T/coord.yaml" --rounds 7
st=$("$FEDC" status --coordinator "$COORD_ADDR" --pki "$T/pki" --name root --json)
[ "$(json_get "$st" federation)" = demo ] || fail "federation from the file not applied: $st"
"$FEDC" round start --coordinator "$COORD_ADDR" --pki "$T/pki" --name root --json | jq -e '.round_budget == 7' \
  >/dev/null || fail "--rounds 7 did not override the file's 300"
echo "PASS config"
