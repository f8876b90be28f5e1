#!/usr/bin/env bash
# The test command of the README: install the dependencies, configure and
# build, run every registered test (unit + integration) with ctest.
#
#   scripts/test.sh                    # build/ , RelWithDebInfo
#   FEDC_WERROR=ON scripts/test.sh     # warnings are errors (CI)
#
# Environment:
#   BUILD_DIR    build directory (default: build)
#   BUILD_TYPE   CMAKE_BUILD_TYPE (default: RelWithDebInfo)
#   FEDC_WERROR  ON|OFF (default: OFF)
#   JOBS         parallel build and test jobs (default: 2)
#   CMAKE_ARGS   extra arguments for the configure step (word-split)
# Exit status: non-zero if the build or any test fails.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD_DIR=${BUILD_DIR:-build}
BUILD_TYPE=${BUILD_TYPE:-RelWithDebInfo}
FEDC_WERROR=${FEDC_WERROR:-OFF}
JOBS=${JOBS:-2}
read -r -a extra <<<"${CMAKE_ARGS:-}"

scripts/install-deps.sh
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE="$BUILD_TYPE" -DFEDC_WERROR="$FEDC_WERROR" ${extra[@]+"${extra[@]}"}
cmake --build "$BUILD_DIR" -j "$JOBS"

log="$BUILD_DIR/ctest.log"
set +e
ctest --test-dir "$BUILD_DIR" --output-on-failure --no-tests=error -j "$JOBS" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
summary=$(grep -E '[0-9]+% tests passed' "$log" | tail -n 1 || true)
echo "test.sh: ${summary:-ctest printed no summary} (exit $rc)"
exit "$rc"
