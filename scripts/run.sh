#!/usr/bin/env bash
# Run it: installs what is needed, builds `lattice` and `ltc`, and starts a whole
# cluster on this machine with `lattice up` (BBS on the embedded store, a brain, a cell
# offering preloaded:busybox, the router), state in ${LATTICE_DATA_DIR:-./.lattice}.
# It runs containers, so it needs root. Extra arguments go to `lattice up`, e.g.
# `scripts/run.sh --store etcd://127.0.0.1:2379` or `--domain apps.example.com`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
    echo "scripts/run.sh starts containers: run it as root (sudo scripts/run.sh)" >&2
    exit 1
fi
scripts/setup.sh
cargo build --release -p lattice-cli --bin lattice
# On its own, so ltc gets specs without the grpc feature (one build would unify them).
cargo build --release -p lattice-ltc --bin ltc
data="${LATTICE_DATA_DIR:-./.lattice}"
mkdir -p "$data"
export LATTICE_DATA_DIR="$data"
exec ./target/release/lattice up "$@"
