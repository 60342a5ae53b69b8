#!/usr/bin/env bash
# Installs missing Debian packages, then configures and builds FastChat with
# the given CMake preset (default: "default") into build/<preset>.
set -euo pipefail
cd "$(dirname "$0")/.."
preset="${1:-default}"
bash scripts/install-deps.sh
cmake --preset "$preset" >/dev/null
cmake --build --preset "$preset"
