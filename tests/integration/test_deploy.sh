#!/usr/bin/env bash
# deploy/: the systemd unit, both coordinator configs, the compose file, the
# Dockerfile's runtime packages and the Kubernetes manifests, checked by
# deploy/check.sh with the tools Debian provides (the configs by starting a
# real coordinator on 127.0.0.1).
set -euo pipefail
FEDC=${1:?usage: test_deploy.sh FEDC BUILD_DIR}
bash "$(dirname "$0")/../../deploy/check.sh" "$FEDC"
echo "PASS deploy"
