#!/usr/bin/env bash
# hack/install-deps.sh -- install what the test bed and the build need on Debian 12 (root).
# Idempotent: installs only what is missing. Adds a deb-src entry so the kube build can
# fetch Debian's `kubernetes` source package.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

PKGS=(ceph-mon ceph-mgr ceph-osd ceph-common librbd-dev librados-dev uuid-runtime
      golang-go etcd-server openssl curl dpkg-dev ca-certificates python3 jq)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

SRC_LIST=/etc/apt/sources.list.d/rbd-provisioner-src.sources
need_src=0
if ! grep -rqsE '^(Types:.*deb-src|deb-src )' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  need_src=1
fi

if [ ${#missing[@]} -eq 0 ] && [ $need_src -eq 0 ]; then
  echo "install-deps: everything present"
  exit 0
fi

if [ $need_src -eq 1 ]; then
  # Mirror the existing binary entry (same URI and signing key) as a source entry.
  cat > "$SRC_LIST" <<SRC
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi

apt-get update -qq
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "install-deps: done"
