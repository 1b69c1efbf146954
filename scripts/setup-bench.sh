#!/usr/bin/env bash
# Installs the benchmarks' peers and load generator on top of what the tests need:
# nginx (the router's peer), runc (the container peer) and wrk (the load generator).
set -euo pipefail
cd "$(dirname "$0")/.."
exec scripts/setup.sh nginx-light wrk runc
