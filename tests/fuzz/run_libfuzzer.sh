#!/usr/bin/env bash
# run_libfuzzer.sh BUILD_DIR SECONDS [TARGET...]
#
# Run the libFuzzer builds of the fuzz targets (a build configured with
# -DCMAKE_C_COMPILER=clang -DFEDC_LIBFUZZER=ON -DFEDC_SANITIZE=ON) one after
# the other, SECONDS each, each from its seed (and a corpus kept in
# BUILD_DIR/fuzz-corpus/<target>, which grows across runs), and print one
# line per target: executions per second, total executions, coverage. A
# crash stops the script with libFuzzer's report; the input is left in
# BUILD_DIR/fuzz-crashes/. All targets by default.
set -euo pipefail
build=${1:?usage: $0 BUILD_DIR SECONDS [TARGET...]}
secs=${2:?usage: $0 BUILD_DIR SECONDS [TARGET...]}
shift 2
src=$(cd "$(dirname "$0")/../.." && pwd)
if [ $# -eq 0 ]; then
  set -- $(cd "$src/tests/fuzz" && ls fuzz_*.c | sed 's/\.c$//')
fi
mkdir -p "$build/fuzz-crashes"
printf '%-22s %10s %12s %6s\n' target exec/s executions cov
for t in "$@"; do
  corpus=$build/fuzz-corpus/$t
  mkdir -p "$corpus"
  log=$build/fuzz-corpus/$t.log
  extra=()
  [ -d "$src/tests/fuzz/corpus/$t" ] && extra+=("$src/tests/fuzz/corpus/$t")
  case $t in # libFuzzer dictionaries for the text formats
  fuzz_store_*) extra+=(-dict="$src/tests/fuzz/dict/json.dict") ;;
  fuzz_config) extra+=(-dict="$src/tests/fuzz/dict/yaml.dict") ;;
  fuzz_metrics_http) extra+=(-dict="$src/tests/fuzz/dict/http.dict") ;;
  esac
  if ! FEDC_FUZZ_SEED_DIR=$corpus ASAN_OPTIONS=detect_leaks=1 \
    LSAN_OPTIONS=suppressions=$src/tests/lsan.supp UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$build/$t" "$corpus" "${extra[@]}" -max_total_time="$secs" -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$build/fuzz-crashes/$t-" >"$log" 2>&1; then
    echo "$t: FAILED (log: $log)"
    grep -A40 -m1 -E 'ERROR|==[0-9]+==|deadly signal|Timeout' "$log" || tail -40 "$log"
    exit 1
  fi
  execs=$(awk '/stat::number_of_executed_units/ {print $2}' "$log")
  rate=$(awk '/stat::average_exec_per_sec/ {print $2}' "$log")
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | awk '{print $2}')
  printf '%-22s %10s %12s %6s\n' "$t" "$rate" "$execs" "$cov"
done
