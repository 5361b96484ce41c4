#!/usr/bin/env bash
# hack/image.sh [BINARY] -- builds the container image localhost/rbd-provisioner:dev with podman,
# without a registry: the Dockerfile's runtime stage (Debian bookworm, librbd1 + librados2 +
# ca-certificates, user 65532, the binary as entrypoint) rebuilt from Debian packages with
# debootstrap. BINARY defaults to target/release/rbd-provisioner. Prints the image name last.
#
# The root filesystem is cached in $RBDP_CACHE (default ~/.cache/rbd-provisioner)/image/.
# hack/podman.sh runs podman with the settings this kind of machine needs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
LOG_TAG=image
# shellcheck source=hack/lib.sh
. hack/lib.sh

BIN=$(realpath -- "${1:-target/release/rbd-provisioner}")
[ -x "$BIN" ] || die "no binary at $BIN: cargo build --release first (or pass one)"
IMAGE=localhost/rbd-provisioner:dev
BASE=localhost/rbd-provisioner-base:bookworm
PKGS=librbd1,librados2,ca-certificates
CACHE=$CACHE_DIR/image
ROOTFS=$CACHE/rootfs-bookworm-$(echo "$PKGS" | md5sum | cut -c1-8).tar
PODMAN=(bash hack/podman.sh)

need=()
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null || need+=(runc)
command -v debootstrap >/dev/null || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
fi

# The machine's own Debian mirror (from its apt sources), so no script names one.
mirror() {
  local uri
  uri=$(awk '/^URIs:/ {u=$2} /^Suites:/ && $2 == "bookworm" && u != "" {print u; exit}' \
    /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [ -n "$uri" ] || uri=$(awk '$1 == "deb" && $0 ~ / bookworm / {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' \
    /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | head -1)
  [ -n "$uri" ] || die "no Debian bookworm entry in the apt sources"
  echo "$uri"
}

if [ ! -f "$ROOTFS" ]; then
  mkdir -p "$CACHE"
  tmp=$(mktemp -d "$CACHE/rootfs.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  log "debootstrap bookworm (minbase + $PKGS) from $(mirror)"
  nice debootstrap --variant=minbase --include="$PKGS" bookworm "$tmp/root" "$(mirror)" >"$tmp/log" 2>&1 ||
    { tail -20 "$tmp/log" >&2; die "debootstrap failed"; }
  rm -rf "$tmp/root/var/cache/apt/archives/"*.deb "$tmp/root/var/lib/apt/lists/"*
  tar -C "$tmp/root" -cf "$ROOTFS.part" . && mv "$ROOTFS.part" "$ROOTFS"
  rm -rf "$tmp"
  trap - EXIT
  log "root filesystem cached: $(du -h "$ROOTFS" | cut -f1)"
fi

if ! "${PODMAN[@]}" image exists "$BASE" ||
   [ "$("${PODMAN[@]}" image inspect --format '{{index .Labels "rootfs"}}' "$BASE" 2>/dev/null)" != "$(basename "$ROOTFS")" ]; then
  log "importing the base image"
  "${PODMAN[@]}" import -q --change "LABEL rootfs=$(basename "$ROOTFS")" "$ROOTFS" "$BASE" >/dev/null
fi

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$BIN" "$ctx/rbd-provisioner"
cat >"$ctx/Containerfile" <<EOF
FROM $BASE
COPY rbd-provisioner /usr/local/bin/rbd-provisioner
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/rbd-provisioner"]
EOF
"${PODMAN[@]}" build -q -t "$IMAGE" "$ctx" >/dev/null
log "built $IMAGE ($("${PODMAN[@]}" image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%d MB", $1 / 1e6}'))"
echo "$IMAGE"
