#!/usr/bin/env bash
# hack/install-deps.sh -- install what the test bed and the build need on Debian 12 (root).
# Idempotent: installs only what is missing. Adds a deb-src entry so the kube build can
# fetch Debian's `kubernetes` source package.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

PKGS=(ceph-mon ceph-mgr ceph-osd ceph-common librbd-dev librados-dev uuid-runtime
      golang-go etcd-server openssl curl dpkg-dev ca-certificates python3 jq faketime)

# Two toolchains no Debian package provides in the version needed: a Rust of at least the
# crate's rust-version (edition 2024), and a Go of at least 1.26 (Kubernetes 1.37's build).
# Neither can be installed from here (they come from outside the package registries): check and
# say what is missing, before minutes of installing.
toolchains() {
  local ok=1 v
  v=$(cargo --version 2>/dev/null | awk '{print $2}')
  if ! printf '%s\n%s\n' 1.89.0 "${v:-0}" | sort -V -C; then
    echo "install-deps: needs Rust >= 1.89 (cargo --version says: ${v:-no cargo}); install it with rustup, then rerun" >&2
    ok=0
  fi
  v=$(go env GOVERSION 2>/dev/null | sed 's/^go//')
  if ! printf '%s\n%s\n' 1.26 "${v:-0}" | sort -V -C; then
    echo "install-deps: needs Go >= 1.26 on PATH (go env GOVERSION says: ${v:-no go}); Debian's golang-go is 1.19" >&2
    ok=0
  fi
  [ $ok = 1 ]
}
toolchains || exit 1

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
  # The same URIs, suites and signing key as the machine's own binary entries, as a source entry.
  python3 - "$SRC_LIST" <<'PY'
import glob, re, sys
stanzas = []
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for block in re.split(r"\n\s*\n", open(path).read()):
        f = {}
        for line in block.splitlines():
            if line.startswith("#") or ":" not in line:
                continue
            k, v = line.split(":", 1)
            f[k.strip()] = v.strip()
        if f.get("Types", "").split() == ["deb"] and f.get("Enabled", "yes") != "no":
            stanzas.append(f)
for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
    try:
        lines = open(path).read().splitlines()
    except OSError:
        continue
    for line in lines:
        m = re.match(r"^deb\s+(\[[^]]*\]\s+)?(\S+)\s+(\S+)\s+(.+)$", line.strip())
        if m:
            f = {"URIs": m.group(2), "Suites": m.group(3), "Components": m.group(4)}
            sb = re.search(r"signed-by=(\S+?)[\s\]]", (m.group(1) or ""))
            if sb:
                f["Signed-By"] = sb.group(1)
            stanzas.append(f)
out = []
for f in stanzas:
    if "Suites" not in f or "bookworm" not in f["Suites"].split()[0]:
        continue
    s = ["Types: deb-src"] + [f"{k}: {f[k]}" for k in ("URIs", "Suites", "Components", "Signed-By") if k in f]
    out.append("\n".join(s))
if not out:
    sys.exit("install-deps: no Debian bookworm 'deb' entry in the apt sources to mirror as deb-src")
open(sys.argv[1], "w").write("\n\n".join(out) + "\n")
PY
fi
apt-get update -qq
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "install-deps: done"
