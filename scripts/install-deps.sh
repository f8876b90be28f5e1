#!/usr/bin/env bash
# Installs the Debian packages fedc needs to build, test and run its demo.
# Idempotent: packages already present are left alone. Needs root (or sudo).
set -euo pipefail
pkgs=(
  build-essential cmake pkg-config
  clang                                               # CI also builds with clang (warnings as errors)
  libgrpc-dev libprotobuf-c-dev protobuf-c-compiler   # gRPC C core + protobuf-c (wire)
  libssl-dev                                          # OpenSSL 3 (mTLS, PKI, SHA-256)
  libopenblas-dev                                     # BLAS kernels
  libjansson-dev                                      # JSON: --json output, safetensors headers
  libyaml-dev                                         # coordinator configuration files
  zlib1g-dev                                          # gzipped IDX (Fashion-MNIST)
  libmicrohttpd-dev                                   # the coordinator's /metrics, /healthz, /readyz
  prometheus curl                                     # tests: promtool and a real Prometheus scraping /metrics
  dataset-fashion-mnist                               # the real data set
  gnuplot-nox                                         # accuracy/loss plots from `fedc sim`
  jq                                                  # integration tests read --json output
  etcd-server etcd-client                             # the coordinator replicas' leader election (tests run etcd, etcdctl)
  golang-etcd-server-dev                              # etcd's rpc.proto, kv.proto: the C client is generated from them
  openssl                                             # tests: certificates a coordinator serves (test_rotation)
  strace                                              # test_async_append: one write per buffer-log record
  procps                                              # pgrep: tests find the process of a port file (test_aggregator_slow)
  python3                                             # test data (tests/integration/_data.sh), the DP reference
  python3-yaml docker-compose                         # deploy/check.sh: compose schema, k8s object check
  python3-cffi python3-numpy python3-venv             # the Python binding (python/fedc; tests/integration/test_python.sh)
  python3-torch                                       # fedc.pytorch, its test and examples/ (with its dependencies
                                                      # about 180 packages, 610 MB; 96 s to install here)
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# deploy/check.sh renders the manifests with `kubectl kustomize`: Debian's
# kubernetes-client, unless a kubectl is already installed (another package
# owning /usr/bin/kubectl would conflict).
command -v kubectl >/dev/null 2>&1 || missing+=(kubernetes-client)
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#pkgs[@]} packages present"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
echo "install-deps: installing ${missing[*]}"
. "$(dirname "$0")/_apt.sh"
apt_retry update -qq
apt_retry install -y -qq --no-install-recommends "${missing[@]}"
