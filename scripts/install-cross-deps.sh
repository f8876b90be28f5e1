#!/usr/bin/env bash
# Installs what the device builds need (docs/operations.md, "Builds for device
# CPUs"): the Debian cross compilers for arm64 (aarch64-linux-gnu) and armhf
# (arm-linux-gnueabihf), qemu-user to run their programs here, and the
# multiarch -dev packages of the client's libraries for both architectures,
# and what bench/bench_footprint.sh needs (a static arm64 link, GNU time).
# The coordinator's libraries (libmicrohttpd, libyaml) are not installed for
# them: the device builds are client-only (FEDC_BUILD_COORDINATOR=OFF).
# Idempotent: packages already present are left alone. Needs root (or sudo).
set -euo pipefail
arches=(arm64 armhf)
# libstdc++-12-dev-arm64-cross: gRPC is C++ inside, so a fully static arm64
# client links libstdc++.a; time: bench/bench_footprint.sh's peak RSS.
host_pkgs=(gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf qemu-user libstdc++-12-dev-arm64-cross time)
# Per architecture: gRPC C core, protobuf-c, OpenSSL 3, OpenBLAS, zlib, jansson
# (the client reads safetensors headers with it).
lib_pkgs=(libgrpc-dev libprotobuf-c-dev libssl-dev libopenblas-dev zlib1g-dev libjansson-dev)

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
missing_arch=()
for a in "${arches[@]}"; do
  dpkg --print-foreign-architectures | grep -qx "$a" || missing_arch+=("$a")
done
missing=()
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for p in "${host_pkgs[@]}"; do installed "$p" || missing+=("$p"); done
for a in "${arches[@]}"; do
  for p in "${lib_pkgs[@]}"; do installed "$p:$a" || missing+=("$p:$a"); done
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-cross-deps: all packages present"
  exit 0
fi
for a in ${missing_arch[@]+"${missing_arch[@]}"}; do $SUDO dpkg --add-architecture "$a"; done
echo "install-cross-deps: installing ${missing[*]}"
. "$(dirname "$0")/_apt.sh"
apt_retry update -qq
apt_retry install -y -qq --no-install-recommends "${missing[@]}"
