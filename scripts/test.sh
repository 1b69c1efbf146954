#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every test.
# Tests start their own etcd processes on free loopback ports and clean up after themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --workspace --bins
cargo test --workspace "$@"
