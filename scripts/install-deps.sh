#!/usr/bin/env bash
# Installs the Debian packages FastChat needs to build, test and run.
set -euo pipefail
PKGS=(g++ cmake ninja-build ccache pkg-config
      libasio-dev libsodium-dev libprotobuf-dev protobuf-compiler
      libsqlite3-dev libpq-dev postgresql
      libcli11-dev libspdlog-dev nlohmann-json3-dev libedit-dev tmux
      libgtest-dev libgmock-dev libbenchmark-dev libjemalloc-dev
      clang-14 libclang-rt-14-dev llvm-14)  # fuzz preset: libFuzzer, sanitizer runtimes, llvm-symbolizer
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing: ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
