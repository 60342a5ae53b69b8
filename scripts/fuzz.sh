#!/usr/bin/env bash
# The fuzz targets (fuzz/, docs/security.md "Fuzzing"): builds them with the
# fuzz preset (clang-14, libFuzzer, ASan + UBSan) and runs each one for
# FUZZ_SECONDS (default 20) on its committed seed corpus, with its
# dictionary. Any crash, leak, sanitizer report, timeout or out-of-memory
# fails the run; the input that caused it is left in build/fuzz/artifacts/.
#
#   bash scripts/fuzz.sh                 every target, FUZZ_SECONDS each
#   bash scripts/fuzz.sh request client  only these targets
#   bash scripts/fuzz.sh --seeds         rewrite fuzz/corpus/*/seed-* from fuzz/seeds.cc
#
# Inputs the run finds are kept in build/fuzz/corpus/<target> (not committed;
# docs/security.md says how to merge them into fuzz/corpus after a long run).
set -euo pipefail
cd "$(dirname "$0")/.."
TARGETS=(frame request mesh mesh_handshake balancer balancer_peer client filename local_store)
seconds="${FUZZ_SECONDS:-20}"
[[ -x /usr/lib/llvm-14/bin/llvm-symbolizer ]] && export ASAN_SYMBOLIZER_PATH=/usr/lib/llvm-14/bin/llvm-symbolizer

bash scripts/install-deps.sh
cmake --preset fuzz >/dev/null
cmake --build --preset fuzz

if [[ "${1:-}" == "--seeds" ]]; then
  build/fuzz/fuzz/fuzz_seeds fuzz/corpus
  exit 0
fi
(($#)) && TARGETS=("$@")

mkdir -p build/fuzz/artifacts
passed=0 failed=0
for t in "${TARGETS[@]}"; do
  work="build/fuzz/corpus/$t"
  mkdir -p "$work"
  args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
        -artifact_prefix="build/fuzz/artifacts/$t-")
  [[ -f "fuzz/dict/$t.dict" ]] && args+=(-dict="fuzz/dict/$t.dict")
  echo "== fuzz $t (${seconds} s)"
  # stdout: the client target prints the events it receives.
  if build/fuzz/fuzz/"${t}_fuzz" "${args[@]}" -close_fd_mask=1 "$work" "fuzz/corpus/$t" \
       > "build/fuzz/$t.log" 2>&1; then
    grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb)' "build/fuzz/$t.log" || true
    passed=$((passed + 1))
  else
    tail -n 60 "build/fuzz/$t.log"
    echo "fuzz $t FAILED: see build/fuzz/$t.log and build/fuzz/artifacts/"
    failed=$((failed + 1))
  fi
done
echo "fuzz: $passed passed, $failed failed"
((failed == 0))
