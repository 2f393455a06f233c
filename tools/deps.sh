#!/usr/bin/env bash
# Installs the Debian 12 packages weft needs that are missing (as root, or through sudo), and
# nothing when everything is there already. Usage: tools/deps.sh [extra-package...]
set -euo pipefail
packages=(g++ cmake make libboost-context-dev libconcurrentqueue-dev libspdlog-dev libfmt-dev catch2
          libbenchmark-dev "$@")
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "weft: installing ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
