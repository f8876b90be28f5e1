#!/usr/bin/env bash
# bench_footprint.sh - the client's footprint on a device: the figures of the
# footprint budget (docs/operations.md, "Footprint on a device"), one JSON
# line per figure on stdout: {"bench":"footprint","figure":F,"value":V,
# "unit":U, ...what it was measured on}. scripts/check-footprint.sh holds them
# against their budgets. Not a test: nothing here asserts.
#
#   bench/bench_footprint.sh NATIVE_BUILD [REF_BUILD [CROSS_REF_BUILD]]
#
#   NATIVE_BUILD     a native build with the coordinator (fedc, libfedc-client.so)
#   REF_BUILD        a native FEDC_BLAS=reference build (libfedc-client.a): the
#                    embed example linked fully static, the form a device ships
#   CROSS_REF_BUILD  the same cross-built (arm64: the static size budget's machine)
#
# Figures (bytes are bytes; RSS is peak RSS, VmHWM, of the process):
#   lib_stripped_bytes            NATIVE libfedc-client.so stripped (+ its shared libraries)
#   embed_rss_784_10_bytes        the embed example (tests/embed) linked to NATIVE's .so,
#                                 2 rounds of the 784-10 model (7,850 parameters); the .so
#                                 loads no BLAS ("blas":"none"); bench/footprint_smaps.py
#                                 shows where such a peak goes
#   embed_rss_large_bytes         ... of 784-1000-1000-10 (1,796,010 parameters)
#   static_embed_rss_*_bytes      the same, static with reference BLAS (REF_BUILD)
#   static_embed_bytes            that static program stripped, per architecture
#   idle_cpu_percent, idle_wakeups_per_s, idle_threads
#                                 the dynamic embed example between check-ins with a
#                                 1 s poll, over 20 s (CPU from schedstat, wakeups =
#                                 context switches of all its threads; threads: the
#                                 count most samples saw, "max" the largest)
#   client_partition_rss_bytes    `fedc client --partition iid --parts 10 --part 0` on
#                                 Fashion-MNIST, one round of 784-200-200-10
set -euo pipefail
NATIVE=${1:?usage: bench_footprint.sh NATIVE_BUILD [REF_BUILD [CROSS_REF_BUILD]]}
REF=${2:-}
XREF=${3:-}
SRC=$(cd "$(dirname "$0")/.." && pwd)
case $NATIVE in /*) ;; *) NATIVE=$PWD/$NATIVE ;; esac
[ -z "$REF" ] || case $REF in /*) ;; *) REF=$PWD/$REF ;; esac
[ -z "$XREF" ] || case $XREF in /*) ;; *) XREF=$PWD/$XREF ;; esac
. "$SRC/tests/integration/lib.sh" "$NATIVE/fedc" "$NATIVE"
make_tmp
FMNIST=${FEDC_FMNIST_DIR:-/usr/share/datasets/fashion-mnist}

emit() { # figure value unit [extra JSON members]
  printf '{"bench":"footprint","figure":"%s","value":%s,"unit":"%s"%s}\n' "$1" "$2" "$3" "${4:+,$4}"
}

# peak_rss CMD... : run CMD (output to $T/last.log); prints its peak RSS in
# bytes; non-zero if CMD failed (call it from the script's shell: fail there).
# GNU time, not a Python or shell parent: a child's peak RSS counts the
# memory of the process it was forked from until exec (the kernel keeps the
# larger), and GNU time's is about 1 MB where Python's is 10.
peak_rss() {
  /usr/bin/time -f %M -o "$T/last.rss" "$@" >"$T/last.log" 2>&1 || return 1
  echo $(($(tail -1 "$T/last.rss") * 1024))
}

# The C compiler and pkg-config of a build tree (cross or native).
build_cc() { sed -n 's/^set(CMAKE_C_COMPILER "\(.*\)")$/\1/p' "$1"/CMakeFiles/*/CMakeCCompiler.cmake | head -1; }
build_pkgconfig() {
  local cc triplet
  cc=$(basename "$(build_cc "$1")")
  triplet=${cc%-gcc*}
  if [ "$triplet" != "$cc" ] && command -v "$triplet-pkg-config" >/dev/null; then
    echo "env PKG_CONFIG_LIBDIR=/usr/lib/$triplet/pkgconfig:/usr/share/pkgconfig $triplet-pkg-config"
  else
    echo pkg-config
  fi
}
arch_of() { LC_ALL=C readelf -h "$1" | sed -n 's/^ *Machine: *//p' | tr -d ' '; }

# static_embed BUILD OUT : the embed example linked fully static against
# BUILD's libfedc-client.a (built here if missing), sections not reached dropped.
static_embed() {
  local b=$1 out=$2 cc pc
  [ -f "$b/libfedc-client.a" ] || cmake --build "$b" --target fedc_client_static >/dev/null ||
    fail "cannot build $b/libfedc-client.a"
  cc=$(build_cc "$b")
  pc=$(build_pkgconfig "$b")
  # shellcheck disable=SC2046 # word lists from pkg-config
  "$cc" -static -O2 -I"$SRC/include" "$SRC/tests/embed/embed_example.c" -o "$out" -Wl,--gc-sections \
    "$b/libfedc-client.a" $($pc --static --libs grpc gpr libprotobuf-c libssl libcrypto zlib) -lstdc++ -lm \
    -lpthread 2>"$T/static-link.log" || fail "static link of the embed example failed: $(tail -5 "$T/static-link.log")"
  "${cc%gcc*}strip" "$out" 2>/dev/null || strip "$out"
}

# ---- sizes ----------------------------------------------------------------------
lib=$(readlink -f "$NATIVE/libfedc-client.so")
strip -o "$T/lib.so" "$lib"
needed=$(ldd "$lib" | awk '/=> \// {print $3}' | sort -u)
nlib=$(printf '%s\n' "$needed" | grep -c . || true)
libbytes=$(printf '%s\n' "$needed" | xargs -r stat -L -c %s | awk '{s += $1} END {print s + 0}')
emit lib_stripped_bytes "$(stat -c %s "$T/lib.so")" bytes \
  "\"arch\":\"$(arch_of "$lib")\",\"shared_libraries\":$nlib,\"shared_library_bytes\":$libbytes"

cc -std=c11 -O2 -I"$SRC/include" "$SRC/tests/embed/embed_example.c" -o "$T/embed" -L"$NATIVE" -lfedc-client \
  -Wl,-rpath,"$NATIVE" || fail "cannot build the embed example"
if [ -n "$REF" ]; then
  static_embed "$REF" "$T/embed-static"
  emit static_embed_bytes "$(stat -c %s "$T/embed-static")" bytes "\"arch\":\"$(arch_of "$T/embed-static")\",\"blas\":\"reference\""
fi
if [ -n "$XREF" ]; then
  static_embed "$XREF" "$T/embed-static-cross"
  emit static_embed_bytes "$(stat -c %s "$T/embed-static-cross")" bytes \
    "\"arch\":\"$(arch_of "$T/embed-static-cross")\",\"blas\":\"reference\""
fi

# ---- peak RSS of the embed example ---------------------------------------------------
make_pki "$T/pki" fp dev1 dev2
EMBED_ARGS=("$T/pki/ca.crt" "$T/pki/client-dev1.crt" "$T/pki/client-dev1.key")
run=0
coordinator() { # model rounds min_clients poll_ms
  [ -z "$COORD_PID" ] || { kill "$COORD_PID" 2>/dev/null || true; wait "$COORD_PID" 2>/dev/null || true; }
  run=$((run + 1))
  start_coordinator --pki "$T/pki" --federation fp --state "$T/state$run" --model "$1" --rounds "$2" \
    --min-clients "$3" --cohort "$3" --min-updates "$3" --poll-ms "$4"
}
for m in 784-10:7850:784_10 784-1000-1000-10:1796010:large; do
  IFS=: read -r model params tag <<<"$m"
  coordinator "$model" 2 1 100
  v=$(peak_rss "$T/embed" "$COORD_ADDR" "${EMBED_ARGS[@]}") || fail "embed example ($model): $(tail -3 "$T/last.log")"
  emit "embed_rss_${tag}_bytes" "$v" bytes \
    "\"model\":\"$model\",\"parameters\":$params,\"link\":\"dynamic\",\"blas\":\"none\""
  if [ -n "$REF" ]; then
    coordinator "$model" 2 1 100
    v=$(peak_rss "$T/embed-static" "$COORD_ADDR" "${EMBED_ARGS[@]}") ||
      fail "static embed example ($model): $(tail -3 "$T/last.log")"
    emit "static_embed_rss_${tag}_bytes" "$v" bytes \
      "\"model\":\"$model\",\"parameters\":$params,\"link\":\"static\",\"blas\":\"reference\""
  fi
done

# ---- idle between check-ins ------------------------------------------------------------
# Two clients wanted, one comes: it checks in every second and waits.
coordinator 784-10 2 2 1000
start_bg idle "$T/embed" "$COORD_ADDR" "${EMBED_ARGS[@]}"
IDLE_PID=$BG_PID
wait_for bash -c "grep -q 'contact.*dev1' '$T/state$run/audit.log'" 30 || fail "the idle client did not check in"
sleep 3 # past connection setup
python3 - "$IDLE_PID" 20 <<'PY' >"$T/idle.json" || fail "cannot sample the idle client"
import glob, json, sys, time
pid, secs = sys.argv[1], float(sys.argv[2])
def sample():
    cpu_ns = switches = 0
    for task in glob.glob(f"/proc/{pid}/task/*"):
        try:
            cpu_ns += int(open(f"{task}/schedstat").read().split()[0])
            for line in open(f"{task}/status"):
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    switches += int(line.split()[1])
        except OSError:
            pass
    return cpu_ns, switches, len(glob.glob(f"/proc/{pid}/task/*"))
c0, s0, _ = sample()
t0 = time.monotonic()
counts = []
while time.monotonic() - t0 < secs:
    time.sleep(0.5)
    counts.append(sample()[2])
c1, s1, _ = sample()
dt = time.monotonic() - t0
# The threads it idles with: the count most samples saw (gRPC's executor may
# start a worker for a moment, which CI once caught as a 10th thread in one
# sample); the largest is reported beside it.
counts.sort()
print(json.dumps({"cpu_percent": (c1 - c0) / dt / 1e7, "wakeups_per_s": (s1 - s0) / dt,
                  "threads": counts[len(counts) // 2], "threads_max": counts[-1]}))
PY
ctx="\"poll_ms\":1000,\"seconds\":20,\"link\":\"dynamic\",\"blas\":\"none\""
emit idle_cpu_percent "$(jq -r '.cpu_percent * 1000 | round / 1000' "$T/idle.json")" percent "$ctx"
emit idle_wakeups_per_s "$(jq -r '.wakeups_per_s * 100 | round / 100' "$T/idle.json")" per_s "$ctx"
emit idle_threads "$(jq -r .threads "$T/idle.json")" threads "$ctx,\"max\":$(jq -r .threads_max "$T/idle.json")"
kill "$IDLE_PID" 2>/dev/null || true

# ---- fedc client on a tenth of Fashion-MNIST ---------------------------------------------
if [ -f "$FMNIST/train-images-idx3-ubyte.gz" ]; then
  coordinator 784-200-200-10 1 1 100
  v=$(peak_rss "$NATIVE/fedc" client --coordinator "$COORD_ADDR" --pki "$T/pki" --name dev2 --data fmnist \
    --data-dir "$FMNIST" --partition iid --parts 10 --part 0 --rounds 1) || fail "fedc client: $(tail -3 "$T/last.log")"
  emit client_partition_rss_bytes "$v" bytes \
    "\"model\":\"784-200-200-10\",\"examples\":6000,\"link\":\"dynamic\",\"blas\":\"openblas\""
else
  echo "bench_footprint: no Fashion-MNIST in $FMNIST: client_partition_rss_bytes not measured" >&2
fi
