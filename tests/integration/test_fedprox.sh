#!/usr/bin/env bash
# FedProx's mu from the operator to every kind of trainer, over real
# processes and mutual TLS on 127.0.0.1:
#   1. refused with one line, before anything starts: --prox-mu -1, a YAML
#      prox-mu of nan, `fedc sim --prox-mu -1`;
#   2. `prox-mu: 0.03` in the coordinator's YAML reaches, in the same two
#      rounds, a C trainer on the public API (tests/tools/train_config_probe:
#      FEDC_TRAIN_CONFIG_HAS(cfg, prox_mu), struct_size as its header has it,
#      the ABI level 1 prefix of the struct unchanged, and
#      fedc_client_model_tensors in evaluate listing cfg->tensors), a Python
#      trainer (config["prox_mu"]) and the built-in trainer (`fedc client`,
#      whose update with mu must be accepted).
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
. "$(dirname "$0")/_data.sh"
SRC=${FEDC_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
PROBE=$BUILD_DIR/train_config_probe
[ -x "$PROBE" ] || fail "no $PROBE (built with the tests)"
make_tmp
make_pki "$T/pki" prox cprobe py builtin
make_idx "$T" 60 1

# ---- 1. refusals ----
rc=0
"$FEDC" coordinator --pki "$T/pki" --federation prox --state "$T/s0" --prox-mu -1 >"$T/r1.out" 2>&1 || rc=$?
[ "$rc" = 2 ] || fail "--prox-mu -1: expected exit 2, got $rc"
grep -q "invalid value '-1' for 'prox-mu'" "$T/r1.out" || fail "--prox-mu -1: $(cat "$T/r1.out")"
printf 'prox-mu: nan\n' >"$T/bad.yaml"
rc=0
"$FEDC" coordinator --pki "$T/pki" --federation prox --state "$T/s0" --config "$T/bad.yaml" >"$T/r2.out" 2>&1 || rc=$?
[ "$rc" = 2 ] && grep -q "bad.yaml:1" "$T/r2.out" || fail "YAML prox-mu nan: exit $rc: $(cat "$T/r2.out")"
[ ! -e "$T/s0" ] || fail "a refused start created its state directory"
rc=0
"$FEDC" sim --prox-mu -1 --out "$T/sim" >"$T/r3.out" 2>&1 || rc=$?
[ "$rc" = 2 ] && grep -q -- "--prox-mu" "$T/r3.out" || fail "fedc sim --prox-mu -1: exit $rc: $(cat "$T/r3.out")"

# ---- 2. mu reaches C, Python and built-in trainers ----
printf 'prox-mu: 0.03\nlr: 0.02\n' >"$T/coord.yaml"
start_coordinator --config "$T/coord.yaml" --pki "$T/pki" --federation prox --state "$T/state" --model 784-10 \
  --rounds 2 --min-clients 3 --cohort 3 --min-updates 3 --poll-ms 100 --round-timeout-ms 30000
start_bg probe "$PROBE" "$COORD_ADDR" "$T/pki/ca.crt" "$T/pki/client-cprobe.crt" "$T/pki/client-cprobe.key" 2
PP=$BG_PID
start_bg builtin "$FEDC" client --coordinator "$COORD_ADDR" --pki "$T/pki" --name builtin \
  --data "idx:$T/img0.idx,$T/lbl0.idx" --model 784-10
PY=/usr/bin/python3
if "$PY" -c 'import cffi, numpy' 2>/dev/null; then
  # A sanitizer build's library needs its runtime loaded first into python3 (no leak check of the interpreter).
  SAN_ENV=()
  if nm -D "$BUILD_DIR/libfedc-client.so" 2>/dev/null | grep __asan_init >/dev/null; then
    SAN_ENV=(LD_PRELOAD="$(gcc -print-file-name=libasan.so)" ASAN_OPTIONS=detect_leaks=0)
  fi
  start_bg py env PYTHONPATH="$SRC/python" FEDC_CLIENT_LIB="$BUILD_DIR/libfedc-client.so" ${SAN_ENV[@]+"${SAN_ENV[@]}"} \
    "$PY" "$SRC/tests/python/client.py" --coordinator "$COORD_ADDR" --pki "$T/pki" --name py --mode weights \
    --max-rounds 2 --config-out "$T/py-cfg.jsonl"
  PYP=$BG_PID
else
  # No binding here: a second built-in client fills the cohort instead.
  "$FEDC" pki issue --dir "$T/pki" --role client --name py >/dev/null
  start_bg py "$FEDC" client --coordinator "$COORD_ADDR" --pki "$T/pki" --name py \
    --data "idx:$T/img0.idx,$T/lbl0.idx" --model 784-10
  PYP=""
fi
wait "$PP" || fail "the C probe exited $?"
wait_completed 2 60 || fail "2 rounds did not complete with prox-mu set"
[ "$(grep -c '^{"round"' "$T/probe.log")" = 2 ] || fail "C probe: expected 2 train calls"
while read -r line; do
  [ "$(json_get "$line" .prox_mu)" = 0.03 ] || fail "C trainer saw prox_mu $(json_get "$line" .prox_mu): $line"
  [ "$(json_get "$line" .has_prox_mu)" = 1 ] || fail "FEDC_TRAIN_CONFIG_HAS(cfg, prox_mu) false: $line"
  [ "$(json_get "$line" .struct_size)" = "$(json_get "$line" .header_size)" ] || fail "struct_size: $line"
  [ "$(json_get "$line" .v1_round)" = "$(json_get "$line" .round)" ] && [ "$(json_get "$line" .v1_lr)" = 0.02 ] &&
    [ "$(json_get "$line" .v1_epochs)" = 1 ] && [ "$(json_get "$line" .v1_same_tensors)" = 1 ] ||
    fail "the ABI level 1 view of the config differs: $line"
  [ "$(json_get "$line" .tensors)" = "fc1.weight[7840@0],fc1.bias[10@7840]" ] || fail "tensors: $line"
  [ "$(json_get "$line" .eval_tensors_match)" = 1 ] || fail "fedc_client_model_tensors in evaluate: $line"
done < <(grep '^{"round"' "$T/probe.log")
if [ -n "$PYP" ]; then
  wait "$PYP" || fail "the Python client exited $?"
  "$PY" - "$T/py-cfg.jsonl" <<'PY' || fail "the Python trainer did not see prox_mu 0.03"
import json, sys
cfgs = [json.loads(l) for l in open(sys.argv[1])]
assert len(cfgs) == 2 and all(abs(c["prox_mu"] - 0.03) < 1e-7 for c in cfgs), cfgs
PY
fi
grep -q "round 2: uploaded" "$T/builtin.log" || fail "the built-in trainer's update with mu was not accepted"
echo "PASS fedprox"
