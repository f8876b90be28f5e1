#!/usr/bin/env bash
# Coordinator configuration: a YAML file is applied and flags override it.
# Every value that would change the coordinator's meaning silently is refused
# at start-up before anything is served or created, with one line on stderr
# naming the option (and the file:line when it came from the file) and exit
# status 2:
#  - an unknown key, a bad value, a nested mapping, a syntax error, a missing
#    file; a key given twice (even with the same value); a second document;
#  - a duration or count outside its documented range (a 2^64-1 timeout used
#    to wrap the engine's deadlines; --threads 0 and friends used to become
#    the default), pickup timeout above the round timeout;
#  - a federation name `fedc pki init` would refuse (an empty one switched the
#    certificate federation check off);
#  - a --listen address that is not exactly host:port or [v6]:port with a
#    port 0..65535 (127.0.0.1:99999 served on another port).
# --help lists every option with its default and its range.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
make_tmp

"$FEDC" coordinator --help > "$T/help.txt"
for k in federation listen rounds min-clients cohort min-updates round-timeout-ms clip-norm lr upload-slots; do
  grep -q -- "--$k " "$T/help.txt" || fail "--help does not document --$k"
done
grep -q "round budget.*\[10\]" "$T/help.txt" || fail "--help does not show the default of --rounds"
for r in "round-timeout-ms .*100\.\.2592000000" "pickup-timeout-ms .*100\.\.2592000000" \
  "client-ttl-ms .*100\.\.2592000000" "poll-ms .*10\.\.3600000" "stream-idle-ms .*100\.\.3600000" \
  "grace-ms .*0\.\.3600000" "threads .*1\.\.64" "upload-slots .*0 = .*0\.\.1024" "upload-memory-mib .*1\.\.1048576" "download-slots .*1\.\.1024" \
  "fd-headroom .*0 = " "max-connections .*0 = " "max-calls-per-client .*0 = "; do
  grep -q -- "--$r" "$T/help.txt" || fail "--help does not show '--$r'"
done

# refused TEXT ARGS... : the coordinator refuses ARGS at start-up: exit 2 at
# once, exactly one line on stderr containing TEXT, no state directory.
refused() {
  local text=$1 rc=0
  shift
  rm -rf "$T/s"
  timeout 5 "$FEDC" coordinator --insecure-for-testing --listen 127.0.0.1:0 --state "$T/s" "$@" \
    >/dev/null 2>"$T/err" || rc=$?
  [ "$rc" -ne 124 ] || fail "$* was accepted: the coordinator started with it"
  [ "$rc" -eq 2 ] || fail "$*: exit $rc, not 2: $(cat "$T/err")"
  [ "$(wc -l <"$T/err")" -eq 1 ] || fail "$*: refusal is not one line: $(cat "$T/err")"
  grep -qF -- "$text" "$T/err" || fail "refusal of $* does not say '$text': $(cat "$T/err")"
  [ ! -e "$T/s" ] || fail "$*: the state directory was created before the refusal"
}
expect_refusal() { refused "$2" --config "$1"; } # FILE TEXT

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
refused "invalid value 'abc' for 'rounds'" --rounds abc

# A key given twice (last used to win), even with the same value; a second
# YAML document (its keys used to be applied over the first's).
printf 'rounds: 3\nlr: 0.1\nrounds: 4\n' > "$T/dup.yaml"
expect_refusal "$T/dup.yaml" "dup.yaml:3: 'rounds' given twice (first at line 1)"
printf 'federation: demo\nfederation: demo\n' > "$T/dupsame.yaml"
expect_refusal "$T/dupsame.yaml" "dupsame.yaml:2: 'federation' given twice"
printf 'rounds: 3\n---\nrounds: 4\n' > "$T/multi.yaml"
expect_refusal "$T/multi.yaml" "multi.yaml:2: a second YAML document"

# Durations: 2^64-1 wrapped the engine's deadlines; each has a range.
max=18446744073709551615
for k in round-timeout-ms pickup-timeout-ms client-ttl-ms; do
  refused "flag: invalid value '$max' for '$k' (100..2592000000" --$k $max
  refused "invalid value '99' for '$k' (100..2592000000" --$k 99
done
refused "invalid value '9' for 'poll-ms' (10..3600000" --poll-ms 9
refused "invalid value '3600001' for 'poll-ms' (10..3600000" --poll-ms 3600001
refused "invalid value '3600001' for 'grace-ms' (0..3600000" --grace-ms 3600001
refused "'pickup-timeout-ms'" --round-timeout-ms 1000 --pickup-timeout-ms 2000
printf 'poll-ms: 1000\nclient-ttl-ms: %s\n' $max > "$T/ttl.yaml"
expect_refusal "$T/ttl.yaml" "ttl.yaml:2: invalid value '$max' for 'client-ttl-ms' (100..2592000000"
printf 'round-timeout-ms: 1000\n' > "$T/rto.yaml"
refused "rto.yaml:1" --config "$T/rto.yaml" --pickup-timeout-ms 2000

# Counts whose 0 silently became the default; 0 stays "automatic" where the
# help says so (--upload-slots 0: from --upload-memory-mib).
for k in threads stream-idle-ms download-slots upload-memory-mib; do
  refused "flag: invalid value '0' for '$k' (1" --$k 0
done
refused "invalid value '65' for 'threads' (1..64)" --threads 65
refused "invalid value '1025' for 'upload-slots' (0..1024)" --upload-slots 1025
refused "invalid value '1025' for 'download-slots' (1..1024)" --download-slots 1025

# Federation names: the rule of `fedc pki init` (an empty name switched the
# certificate federation check off).
refused "invalid value '' for 'federation': use 1-63 of [a-z0-9.-]" --federation ''
refused "invalid value 'Bad/Name' for 'federation': use 1-63 of [a-z0-9.-]" --federation Bad/Name
printf 'rounds: 3\nfederation: ""\n' > "$T/fed.yaml"
expect_refusal "$T/fed.yaml" "fed.yaml:2: invalid value '' for 'federation'"

# --listen: exactly host:port or [v6]:port, port 0..65535 in digits.
for a in 127.0.0.1:99999 127.0.0.1:65536 127.0.0.1: :7070 127.0.0.1 127.0.0.1:+80 127.0.0.1:0x50 \
  '127.0.0.1: 80' ::1:80 '[::1]' '[::1]80' '[]:80' '[nothost]:80' 'bad host:80' 127.0.0.1:1234567; do
  refused "invalid value '$a' for 'listen'" --listen "$a"
done
printf 'listen: "127.0.0.1:99999"\n' > "$T/listen.yaml"
expect_refusal "$T/listen.yaml" "listen.yaml:1: invalid value '127.0.0.1:99999' for 'listen'"

# The boundary values themselves are accepted (pickup defaults to at most
# the round timeout when not given).
start_coordinator --insecure-for-testing --state "$T/edge" --round-timeout-ms 100 --client-ttl-ms 100 \
  --poll-ms 10 --stream-idle-ms 100 --threads 1 --upload-slots 1 --download-slots 1 --grace-ms 0 \
  --federation a.b-c --fd-headroom 0 --max-connections 0 --max-calls-per-client 0
kill "$COORD_PID"
wait "$COORD_PID" 2>/dev/null || true

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
