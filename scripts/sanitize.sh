#!/usr/bin/env bash
# Sanitizer runs (CI runs this after scripts/test.sh): builds the asan and
# tsan presets and runs the whole suite under AddressSanitizer +
# UndefinedBehaviorSanitizer, then the tests labelled `concurrency` under
# ThreadSanitizer, each against a throw-away PostgreSQL (pg_virtualenv, as
# scripts/test.sh). Any sanitizer report, in a test or in a server or client
# it started, fails the run.
#
#   scripts/sanitize.sh [asan|tsan]...     (default: asan tsan)
#
# Each phase prints its wall time. The builds use CMake's default
# parallelism (CMAKE_BUILD_PARALLEL_LEVEL caps it); the tsan build preset
# builds only the target fastchat_concurrency_tests (the concurrency-labelled
# tests and the programs they start), not the rest of the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
presets=("$@")
((${#presets[@]})) || presets=(asan tsan)
bash scripts/install-deps.sh
for preset in "${presets[@]}"; do
  start=$SECONDS
  cmake --preset "$preset" >/dev/null
  cmake --build --preset "$preset"
  built=$SECONDS
  pg_virtualenv -t -- ctest --preset "$preset" -j2
  echo "sanitize.sh: $preset built in $((built - start)) s, tested in $((SECONDS - built)) s"
done
