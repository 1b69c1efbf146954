#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every test.
# Tests start their own etcd processes on free loopback ports and clean up after themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --workspace --bins
log=$(mktemp)
# The cells' containers live under a /lattice cgroup in each hierarchy; a cell removes it
# when it closes idle, but tests that kill cells or run several at once leave it behind.
# Remove it after the run, if the run made it and it is empty (rmdir refuses otherwise).
cgroup_parents() { ls -d /sys/fs/cgroup/*/lattice /sys/fs/cgroup/lattice 2>/dev/null || true; }
had_parents=$(cgroup_parents)
# Cells turn net.ipv4.ip_forward on and restore it with their last bridge; a killed cell
# cannot, so the value found here comes back after the run (with the cells' record of it).
had_forward=$(cat /proc/sys/net/ipv4/ip_forward)
# `ip netns add` (the multi-host tests' hosts) makes /run/netns a mount point of its own;
# undo that when the run made it and left no namespace in it.
netns_mounted() { mountpoint -q /run/netns 2>/dev/null; }
had_netns_mount=no; netns_mounted && had_netns_mount=yes
cleanup() {
    rm -f "$log"
    echo "$had_forward" > /proc/sys/net/ipv4/ip_forward
    rm -f /run/lattice/ip_forward.* /run/lattice/firewall.lock /run/lattice/cgroup.lock
    if [ -z "$had_parents" ]; then
        for d in $(cgroup_parents); do rmdir "$d" 2>/dev/null || true; done
    fi
    # Concurrent `ip netns add`s can stack several such mounts: undo each.
    if [ "$had_netns_mount" = no ] && [ -z "$(ls -A /run/netns 2>/dev/null)" ]; then
        for _ in 1 2 3 4 5 6 7 8; do netns_mounted && umount /run/netns 2>/dev/null || break; done
    fi
    rmdir /run/lattice-test-lans /run/lattice 2>/dev/null || true
}
trap cleanup EXIT
set +e
cargo test --workspace --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line with the totals over every test binary.
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
