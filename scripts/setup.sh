#!/usr/bin/env bash
# Installs everything Lattice-rs needs to build and test on a fresh Debian machine,
# plus any extra Debian packages named as arguments (scripts/setup-bench.sh uses that).
# Idempotent: safe to run again; skips apt when every package is already present.
set -euo pipefail

# docker-registry and skopeo: a real registry on loopback for the image-pull tests.
# musl-tools: the containers' init (pause) is linked against musl: a 20 KB static binary
# that execs ~0.5 ms faster than one linked statically against glibc.
# xfsprogs: volumes are XFS images in an XFS pool with reflink (thin, cheap snapshots).
# btrfs-progs: containers' writable layers live on a btrfs filesystem with a quota each (disk_mb).
# nftables: each cell's firewall (containers may not open connections to the cell's host).
# sqlite3: an app's image holds Debian's sqlite3 and its libraries for the backup hook test.
# openssh-client: the tests log into diego-sshd and through the ssh proxy with Debian's ssh
# (and make keys with ssh-keygen).
PKGS=(protobuf-compiler libprotobuf-dev etcd-server busybox-static iproute2 nftables btrfs-progs libseccomp-dev pkg-config musl-tools docker-registry skopeo xfsprogs restic sqlite3 openssh-client "$@")

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
  # Debian starts etcd, nginx and the registry as services on install; tests and
  # benchmarks run their own.
  for svc in etcd nginx docker-registry; do
    if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true; fi
    $SUDO pkill -x "$svc" >/dev/null 2>&1 || true
  done
fi

command -v protoc >/dev/null || { echo "setup: protoc missing after install" >&2; exit 1; }
command -v etcd >/dev/null || { echo "setup: etcd missing after install" >&2; exit 1; }
command -v docker-registry >/dev/null || { echo "setup: docker-registry missing after install" >&2; exit 1; }
command -v musl-gcc >/dev/null || { echo "setup: musl-gcc (musl-tools) missing after install" >&2; exit 1; }
command -v mkfs.btrfs >/dev/null || { echo "setup: mkfs.btrfs (btrfs-progs) missing after install" >&2; exit 1; }
command -v nft >/dev/null || { echo "setup: nft (nftables) missing after install" >&2; exit 1; }
command -v ssh >/dev/null || { echo "setup: ssh (openssh-client) missing after install" >&2; exit 1; }
command -v skopeo >/dev/null || { echo "setup: skopeo missing after install" >&2; exit 1; }
[ -x /usr/bin/sqlite3 ] || { echo "setup: /usr/bin/sqlite3 (sqlite3) missing after install" >&2; exit 1; }
[ -x /bin/busybox ] || { echo "setup: /bin/busybox (busybox-static) missing after install" >&2; exit 1; }

# moto's S3-compatible server (PyPI): the backup-store tests start one on loopback
# (bbs/tests/repos.rs). Chosen over s3s-fs, whose build from crates.io takes many
# minutes of the machine's two cores.
if ! python3 -c 'import moto.server' >/dev/null 2>&1; then
  echo "setup: installing moto[server] (an S3 server for the tests)" >&2
  python3 -m pip install -q 'moto[server]'
fi
python3 -c 'import moto.server' >/dev/null 2>&1 || { echo "setup: moto's S3 server missing after install" >&2; exit 1; }
