#!/usr/bin/env bash
# A mixed-architecture federation (docs/operations.md, "Builds for device
# CPUs"): this machine's coordinator and one native `fedc client`, with a
# cross-built `fedc client` and the embed example (tests/embed, compiled with
# the cross compiler against the cross build's installed header and
# pkg-config file only) run under their emulator (lib.sh's start_target), all
# over mutual TLS on 127.0.0.1: model 784-10, 2 rounds, every client in both.
#
# Across architectures results agree within rounding, not bit for bit
# (different BLAS kernels; docs/design.md, "Numerics across architectures"):
# the native and the cross-built client evaluate each global model version on
# the same data, and their losses must agree within 1e-5 relative, their
# accuracies within one example.
#
#   FEDC_CROSS_BUILD=$PWD/build/arm64 ctest --test-dir build -R integration.test_cross_arch
# (a relative FEDC_CROSS_BUILD is taken from the test build directory).
# Skipped (exit 77) without FEDC_CROSS_BUILD: a client-only cross build
# (-DFEDC_BUILD_COORDINATOR=OFF with cmake/toolchain-*.cmake).
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
X=${FEDC_CROSS_BUILD:-}
if [ -z "$X" ]; then
  echo "SKIP: FEDC_CROSS_BUILD names no cross build directory"
  exit 77
fi
case $X in /*) ;; *) X=$PWD/$X ;; esac
[ -x "$X/fedc" ] && [ -f "$X/CMakeCache.txt" ] || { echo "FAIL: $X is not a built fedc tree" >&2; exit 1; }
make_tmp
. "$(dirname "$0")/_data.sh"

# The cross compiler of that build, and its triplet's pkg-config.
XCC=$(sed -n 's/^set(CMAKE_C_COMPILER "\(.*\)")$/\1/p' "$X"/CMakeFiles/*/CMakeCCompiler.cmake 2>/dev/null | head -1)
triplet=$(basename "$XCC" | sed 's/-gcc.*$//')
[ -n "$triplet" ] && command -v "$triplet-pkg-config" >/dev/null || fail "no cross pkg-config for '$XCC'"
EMU=$(emulator_for "$X/fedc") || fail "cannot run $X/fedc here"
[ -n "$EMU" ] || fail "$X/fedc is a native program: not a cross build"
echo "cross build: $triplet, run under $EMU"

# The embed example, built as a device program would be.
cmake --install "$X" --prefix "$T/xprefix" >/dev/null || fail "cmake --install $X failed"
PC=$(find "$T/xprefix" -name fedc-client.pc | head -1)
[ -n "$PC" ] || fail "fedc-client.pc not installed"
XPKG=(env PKG_CONFIG_LIBDIR="$(dirname "$PC"):/usr/lib/$triplet/pkgconfig:/usr/share/pkgconfig" PKG_CONFIG_PATH=
  "$triplet-pkg-config")
XLIBDIR=$("${XPKG[@]}" --variable=libdir fedc-client)
# shellcheck disable=SC2046 # word lists from pkg-config
"$XCC" -std=c11 -Wall -Wextra -Werror $("${XPKG[@]}" --cflags fedc-client) "$FEDC_SOURCE_DIR/tests/embed/embed_example.c" \
  -o "$T/embed" $("${XPKG[@]}" --libs fedc-client) || fail "the embed example does not cross-build"
[ "$(emulator_for "$T/embed")" = "$EMU" ] || fail "the embed example is not a $triplet program"

make_pki "$T/pki" itest native cross embed
make_idx "$T" 96 1
start_coordinator --pki "$T/pki" --federation itest --state "$T/state" --model 784-10 --rounds 2 \
  --min-clients 3 --cohort 3 --min-updates 3 --poll-ms 100 --round-timeout-ms 300000 --log info
DATA=(--data "idx:$T/img0.idx,$T/lbl0.idx" --model 784-10 --json)
start_bg native "$FEDC" client --coordinator "$COORD_ADDR" --pki "$T/pki" --name native "${DATA[@]}"
NATIVE_PID=$BG_PID
start_target cross "$X/fedc" client --coordinator "$COORD_ADDR" --pki "$T/pki" --name cross "${DATA[@]}"
CROSS_PID=$BG_PID
start_bg embed env LD_LIBRARY_PATH="$XLIBDIR" "$EMU" "$T/embed" "$COORD_ADDR" "$T/pki/ca.crt" \
  "$T/pki/client-embed.crt" "$T/pki/client-embed.key"
EMBED_PID=$BG_PID

for pid in "$EMBED_PID" "$NATIVE_PID" "$CROSS_PID"; do
  wait "$pid" || fail "a client (pid $pid) failed"
done
[ "$(grep -c '^uploaded' "$T/embed.log")" = 2 ] || fail "embed example: expected 2 uploads: $(cat "$T/embed.log")"
for c in native cross; do
  n=$(grep '^{' "$T/$c.log" | jq -s '[.[] | select(.event == "uploaded")] | length')
  [ "$n" = 2 ] || fail "$c client: $n uploads, expected 2"
done
wait_for grep -q "round 2 completed" "$T/coord.log" 30 || fail "round 2 did not complete"

# Same model version, same data: the same evaluation, within rounding.
evals() { grep '^{' "$T/$1.log" | jq -c 'select(.event == "evaluated") | [.model_version, .loss, .accuracy]'; }
evals native >"$T/native.evals"
evals cross >"$T/cross.evals"
[ "$(wc -l <"$T/native.evals")" = 2 ] || fail "native client evaluated $(wc -l <"$T/native.evals") versions, want v0 and v1"
python3 - "$T/native.evals" "$T/cross.evals" <<'PY' || fail "native and $triplet evaluations disagree"
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = {r[0]: r for r in map(json.loads, open(sys.argv[2]))}
for v, loss, acc in a:
    if v not in b:
        sys.exit(f"version {v}: not evaluated by the cross-built client")
    _, xloss, xacc = b[v]
    rel = abs(loss - xloss) / max(abs(loss), abs(xloss), 1e-30)
    print(f"v{v}: loss {loss:.9g} vs {xloss:.9g} (relative {rel:.2g}), accuracy {acc} vs {xacc}")
    if rel > 1e-5 or abs(acc - xacc) > 1.0 / 96 + 1e-12:
        sys.exit(f"version {v}: beyond tolerance")
PY
echo "PASS cross_arch ($triplet)"
