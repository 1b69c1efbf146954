#!/usr/bin/env bash
# Installs the benchmarks' peers and load generator on top of what the tests need:
# nginx with its stream module (the router's peer, HTTP and TCP), runc (the container peer), wrk (the load generator),
# iperf3 (container networking's throughput) and dnsmasq (the DNS server's peer).
set -euo pipefail
cd "$(dirname "$0")/.."
exec scripts/setup.sh nginx-light libnginx-mod-stream wrk runc iperf3 dnsmasq-base
