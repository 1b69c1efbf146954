#!/usr/bin/env bash
# Run it: installs what is needed, builds, and starts the BBS on the embedded
# store (state in ${LATTICE_DATA_DIR:-./.lattice}). Extra arguments go to
# `lattice bbs`, e.g. `scripts/run.sh --store etcd://127.0.0.1:2379`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release -p lattice-cli --bin lattice
data="${LATTICE_DATA_DIR:-./.lattice}"
mkdir -p "$data"
# Defaults through the environment, so flags given here still win.
export LATTICE_BBS_STORE="${LATTICE_BBS_STORE:-file:$data/bbs.db}"
exec ./target/release/lattice bbs "$@"
