#!/usr/bin/env bash
# Installs the benchmarks' peers and load generator (on top of scripts/setup.sh):
# nginx (the router's peer) and wrk (the load generator).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
PKGS=(nginx-light wrk)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
  # The benchmark runs its own nginx with its own config.
  if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable --now nginx >/dev/null 2>&1 || true; fi
  $SUDO pkill -x nginx >/dev/null 2>&1 || true
fi
