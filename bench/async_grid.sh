#!/usr/bin/env bash
# async_grid.sh - issue 25's grid: per seed, one pass of `bench/async_compare.sh`
# runs, the synchronous baseline first and each async cell after it, so every
# async run has a baseline measured minutes before it on the same machine.
# One JSON line per run appended to OUT; summarise with
# bench/async_grid_summary.py OUT.
#
#   bench/async_grid.sh BUILD_DIR OUT "SEEDS" "CELLS" [PASSES]
#   CELL: sync-DL (e.g. sync-1000), or C:K:LR[:SLOT_MS[:MAX_STALENESS]] for
#         async with --async-concurrency C --async-buffer K --server-lr LR
#         --async-slot-ms SLOT_MS (default 0) --max-staleness (default 20);
#         either with a suffix +avgB: `fedc sim --model-average B` (the
#         coordinator keeps a moving average of its versions and the accuracy
#         is the average's); an async cell also with +cal before it:
#         --async-calibrate (cached update calibration, CA2FL)
#   e.g. bench/async_grid.sh build grid.jsonl "1 2 3" "sync-1000 17:3:0.35 12:5:0.5:1000" 2
#        bench/async_grid.sh build grid.jsonl "1 2 3" "sync-1000 sync-1000+avg0.7 20:3:0.35+avg0.9" 2
#        bench/async_grid.sh build grid.jsonl "1 2 3" "sync-1000+avg0.7 17:3:0.35+avg0.9 17:3:0.35+cal+avg0.9" 4
# Environment: TARGET (default 0.83), ROUNDS (versions at most, default 600),
#   STALENESS (--staleness of every async cell, e.g. poly:0.5,fedbuff; default
#   the coordinator's, poly:0.5), ASYNC_EXTRA (more `fedc sim` arguments for
#   every async cell, word-split, e.g. --coordinator-opt=--async-skip-stale;
#   appended to the run's tag).
set -euo pipefail
B=${1:?usage: async_grid.sh BUILD_DIR OUT "SEEDS" "CELLS" [PASSES]}
OUT=${2:?usage: async_grid.sh BUILD_DIR OUT "SEEDS" "CELLS" [PASSES]}
read -r -a SEEDS <<<"${3:?seeds}"
read -r -a CELLS <<<"${4:?cells}"
PASSES=${5:-1}
HERE=$(cd "$(dirname "$0")" && pwd)
for pass in $(seq 1 "$PASSES"); do
  for seed in "${SEEDS[@]}"; do
    for cell in "${CELLS[@]}"; do
      echo "async_grid: pass $pass/$PASSES seed $seed $cell" >&2
      avg=
      cal=
      if [[ $cell == *+cal* ]]; then
        cal=" --coordinator-opt=--async-calibrate"
        cell=${cell/+cal/}
      fi
      if [[ $cell == *+avg* ]]; then
        avg=${cell##*+avg}
        cell=${cell%+avg*}
      fi
      if [[ $cell == sync* ]]; then
        [ -z "$cal" ] || { echo "async_grid: +cal is for async cells ($cell)" >&2; exit 2; }
        TAG=${avg:+avg$avg} SYNC_ARGS="${SYNC_ARGS:-}${avg:+ --model-average=$avg}" \
          "$HERE/async_compare.sh" "$B" "${TARGET:-0.83}" "${ROUNDS:-600}" "$seed" "$cell" >>"$OUT"
      else
        IFS=: read -r c k lr slot ms <<<"$cell"
        slot=${slot:-0}
        ms=${ms:-20}
        st=${STALENESS:+ --coordinator-opt=--staleness=$STALENESS}
        extra="${ASYNC_EXTRA:-}$cal"
        extra=${extra# }
        TAG="lr$lr+slot$slot+ms$ms${STALENESS:++$STALENESS}${extra:++${extra//--coordinator-opt=--/}}${avg:++avg$avg}" \
          ASYNC_ARGS="--coordinator-opt=--server-lr=$lr --coordinator-opt=--async-slot-ms=$slot --coordinator-opt=--max-staleness=$ms$st${extra:+ $extra}${avg:+ --model-average=$avg}" \
          "$HERE/async_compare.sh" "$B" "${TARGET:-0.83}" "${ROUNDS:-600}" "$seed" "async-$c-$k" >>"$OUT"
      fi
    done
  done
done
