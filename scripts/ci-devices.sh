#!/usr/bin/env bash
# ci-devices.sh - the device builds in CI (.ci/run calls it after the native
# build and suite; docs/operations.md, "Builds for device CPUs"):
#   1. scripts/install-cross-deps.sh (cross compilers, qemu-user, :arm64/:armhf -dev packages); if the
#      package mirror cannot give them, the rest is skipped, said loudly (exit 0);
#   2. arm64 and armhf client-only cross builds (FEDC_BUILD_COORDINATOR=OFF),
#      warnings as errors;
#   3. their unit tests under qemu: arm64 all but those labelled slow, armhf
#      the ones about portable numerics, data and the wire format (the
#      certificate cache's 32-bit time_t case is test_cross_arch's: two
#      models from one signer, the second a cache hit);
#   4. test_cross_arch for each: the native coordinator and client with the
#      cross-built `fedc client` and embed example under qemu;
#   5. the footprint: reference-BLAS static libraries (native and arm64),
#      bench/bench_footprint.sh, scripts/check-footprint.sh against the budget.
#
#   scripts/ci-devices.sh NATIVE_BUILD      (e.g. build/ci; JOBS=2 by default)
# Build trees go to build/{arm64,armhf,ref,arm64-ref}; the figures to
# build/footprint.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
NATIVE=${1:?usage: ci-devices.sh NATIVE_BUILD}
JOBS=${JOBS:-2}
t0=$SECONDS
step() { echo "---- ci-devices: $* ($((SECONDS - t0)) s)"; }

step "dependencies"
if ! scripts/install-cross-deps.sh; then
  # Not a fault of the code: the package mirror could not give the cross
  # toolchain and the :arm64/:armhf libraries (seen on 2026-12-05: the mirror's
  # bookworm-security armhf index had the wrong size on every retry, so no
  # foreign security index loaded and the multiarch libraries could not match
  # the host's versions). Said loudly; the native suite and the sanitizer
  # suite still decide the run.
  echo "==== ci-devices: SKIPPED: the cross toolchain and :arm64/:armhf libraries could not be installed from the" \
    "package mirror (apt's errors above): the device builds, their tests under qemu and the footprint budget did" \
    "not run" >&2
  exit 0
fi

for spec in arm64:aarch64-linux-gnu armhf:arm-linux-gnueabihf; do
  arch=${spec%%:*}
  triplet=${spec#*:}
  step "$arch: configure + build (client-only, -DFEDC_WERROR=ON)"
  cmake -S . -B "build/$arch" --toolchain "cmake/toolchain-$triplet.cmake" -DFEDC_BUILD_COORDINATOR=OFF \
    -DFEDC_WERROR=ON >/dev/null
  cmake --build "build/$arch" -j "$JOBS"
  step "$arch: unit tests under qemu"
  if [ "$arch" = arm64 ]; then
    ctest --test-dir "build/$arch" -LE slow -j "$JOBS" --output-on-failure --no-tests=error
  else
    ctest --test-dir "build/$arch" -R '^unit\.test_(rng|blas|mlp|partition|data|chunk|safetensors|runtime)$' \
      -j "$JOBS" --output-on-failure --no-tests=error
  fi
  step "$arch: mixed-architecture federation (test_cross_arch)"
  FEDC_CROSS_BUILD=$PWD/build/$arch ctest --test-dir "$NATIVE" -R '^integration\.test_cross_arch$' \
    --output-on-failure --no-tests=error
done

step "footprint: reference-BLAS static libraries"
cmake -S . -B build/ref -DFEDC_BUILD_COORDINATOR=OFF -DFEDC_BLAS=reference -DFEDC_BUILD_TESTS=OFF \
  -DFEDC_WERROR=ON >/dev/null
cmake --build build/ref -j "$JOBS" --target fedc_client_static
cmake -S . -B build/arm64-ref --toolchain cmake/toolchain-aarch64-linux-gnu.cmake -DFEDC_BUILD_COORDINATOR=OFF \
  -DFEDC_BLAS=reference -DFEDC_BUILD_TESTS=OFF -DFEDC_WERROR=ON >/dev/null
cmake --build build/arm64-ref -j "$JOBS" --target fedc_client_static
step "footprint: bench/bench_footprint.sh + scripts/check-footprint.sh"
bench/bench_footprint.sh "$NATIVE" build/ref build/arm64-ref | tee build/footprint.jsonl
scripts/check-footprint.sh build/footprint.jsonl
step "done"
