#!/usr/bin/env bash
# `fedc sim --mode async` with the device-speed model (issue 25), on the real
# Fashion-MNIST, small: 4 clients, 3 versions of a 784-10 model.
#  - the coordinator runs async (every record in rounds.jsonl is a buffer with
#    a staleness histogram of --async-buffer updates);
#  - every client process draws its own device delay from the sim's seed and
#    says it at start: with sigma 0 a device takes C + N ms longer per task,
#    a straggler 10x that; with --stragglers 0.5 and seed 1 both kinds appear
#    (the draw is deterministic in seed and name);
#  - the options are checked before anything is written.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
make_tmp
DATA=/usr/share/datasets/fashion-mnist
[ -f "$DATA/train-images-idx3-ubyte.gz" ] || fail "Fashion-MNIST is not installed in $DATA"

for bad in "--mode fast" "--stragglers 0.2" "--device-speed 1:2" "--device-speed 10:10:0 --stragglers 2"; do
  # shellcheck disable=SC2086
  if "$FEDC" sim --out "$T/bad" $bad >"$T/bad.err" 2>&1; then fail "fedc sim $bad ran"; fi
  [ ! -e "$T/bad" ] || fail "fedc sim $bad wrote $T/bad"
  grep -q "fedc sim: --" "$T/bad.err" || fail "fedc sim $bad: $(cat "$T/bad.err")"
done

timeout -s TERM 120 "$FEDC" sim --out "$T/out" --clients 4 --cohort 2 --rounds 3 --model 784-10 --poll-ms 50 \
  --mode async --device-speed 30:20:0 --stragglers 0.5 --seed 1 \
  --coordinator-opt=--async-concurrency=3 --coordinator-opt=--async-buffer=2 >"$T/sim.out" 2>"$T/sim.err" ||
  fail "sim failed: $(tail -5 "$T/sim.err")"
jq -s -e 'length == 3 and all(.outcome == "completed" and .participants == 2 and
  (.async.staleness_hist | add) == 2 and .async.concurrency == 3)' "$T/out/state/rounds.jsonl" >/dev/null ||
  fail "not async buffers: $(cat "$T/out/state/rounds.jsonl")"
grep -h "device speed model" "$T"/out/logs/client-*.log >"$T/speeds"
[ "$(wc -l <"$T/speeds")" = 4 ] || fail "not every client drew its speed: $(cat "$T/speeds")"
grep -q "each task takes 50 ms longer$" "$T/speeds" || fail "no device at C + N: $(cat "$T/speeds")"
grep -q "each task takes 500 ms longer (a straggler)$" "$T/speeds" || fail "no straggler at 10x: $(cat "$T/speeds")"
[ "$(grep -cvE 'takes (50 ms longer|500 ms longer \(a straggler\))$' "$T/speeds")" = 0 ] ||
  fail "a device off the model: $(cat "$T/speeds")"
echo "ok: $(grep -c straggler "$T/speeds") of 4 stragglers"
