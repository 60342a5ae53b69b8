#!/usr/bin/env bash
# Allocation calls per direct message, by server thread: runs
# scripts/bench.sh WORKLOAD (dm or offline) for 8 s and, over 3 s in the
# middle of its window, counts with uprobes (perf stat --per-thread) the
# calls to jemalloc's operator new and malloc and to
# StoreWorker::SubmitEnqueue (one per DM) in the server. Prints, for the
# event loop (the main thread) and the store thread, allocation calls per
# SubmitEnqueue. The probes slow the server; the counts per DM stay
# comparable between binaries (batching differs a little with the rate).
#
#   scripts/alloc-count.sh [dm|offline]
#
# Environment: as scripts/bench.sh (NO_BUILD, BUILD_DIR, SERVER_BIN, ...).
# Needs root (uprobes) and a server built with jemalloc (not a sanitizer
# build). docs/performance.md, "Fewer allocations per message", shows its
# output.
set -euo pipefail
cd "$(dirname "$0")/.."

workload="${1:-dm}"
build="${BUILD_DIR:-build/default}"
server="${SERVER_BIN:-$build/src/server/fastchat-server}"
jemalloc="$(ldd "$server" | awk '/libjemalloc/ {print $3}')"
if [[ -z "$jemalloc" ]]; then
  echo "alloc-count: $server is not linked with jemalloc" >&2
  exit 1
fi
out="$(mktemp /tmp/fastchat-alloc-count.XXXXXX)"
cleanup() { perf probe -q -d 'fastchat_alloc:*' >/dev/null 2>&1 || true; rm -f "$out" "$out".stat; }
trap cleanup EXIT
cleanup
submit="$(nm "$server" | awk '$2 == "T" && $3 ~ /^_ZN8fastchat6server11StoreWorker13SubmitEnqueue/ && !seen {print $1; seen = 1}')"
newm="$(nm -D "$jemalloc" | awk '$2 == "T" && $3 == "_Znwm" {print $1}')"
mall="$(nm -D "$jemalloc" | awk '$2 == "T" && $3 == "malloc" {print $1}')"
perf probe -q -x "$server" -a "fastchat_alloc:submit=0x$submit" >/dev/null
perf probe -q -x "$jemalloc" -a "fastchat_alloc:newm=0x$newm" >/dev/null
perf probe -q -x "$jemalloc" -a "fastchat_alloc:malloc=0x$mall" >/dev/null

export SERVER_BIN="$server"
source scripts/bench-server.sh
bench_server_start alloc-count 5 "$out" "$workload" --duration 8
perf stat --per-thread -x, -e 'fastchat_alloc:submit,fastchat_alloc:newm,fastchat_alloc:malloc' -p "$pid" -- sleep 3 \
  2>"$out".stat >/dev/null
status=0
wait "$bench" || status=$?
grep -E "lost " "$out" || true
# The event loop is the main thread (tid = pid); the store thread is the
# busiest other one.
awk -F, -v pid="$pid" '
  $2 ~ /^[0-9]+$/ { n = split($1, a, "-"); tid = a[n]; ev = $4; sub(/.*:/, "", ev); c[tid, ev] += $2; tids[tid] = 1
                    if (ev == "submit") dms += $2 }
  END {
    if (dms == 0) { print "alloc-count: no SubmitEnqueue seen"; exit 1 }
    best = ""; for (t in tids) if (t != pid && (best == "" || c[t, "newm"] + c[t, "malloc"] > c[best, "newm"] + c[best, "malloc"])) best = t
    printf "DMs seen: %d\n", dms
    printf "event loop (%s): %.2f allocation calls per DM\n", pid, (c[pid, "newm"] + c[pid, "malloc"]) / dms
    printf "store thread (%s): %.2f allocation calls per DM\n", best, (c[best, "newm"] + c[best, "malloc"]) / dms
  }' "$out".stat
exit "$status"
