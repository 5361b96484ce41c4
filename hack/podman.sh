#!/usr/bin/env bash
# hack/podman.sh ARGS... -- podman as these machines need it: cgroups v1 with a v2 hierarchy
# holding a controller ("hybrid", which crun refuses) and no CAP_SYS_RESOURCE (podman's default
# ulimits cannot be set). runc with the cgroupfs manager and no default ulimits works.
set -euo pipefail
# shellcheck source=hack/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
conf=$CACHE_DIR/containers.conf
if [ ! -f "$conf" ]; then
  mkdir -p "$(dirname "$conf")"
  printf '[containers]\ndefault_ulimits = []\n' >"$conf"
fi
CONTAINERS_CONF=$conf exec podman --runtime runc --cgroup-manager=cgroupfs "$@"
