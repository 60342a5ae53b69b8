#!/usr/bin/env bash
# Where a workload's server CPU goes, by thread: runs scripts/bench.sh
# WORKLOAD (default dm) for 8 s and, over WINDOW seconds (default 4) in the
# middle of its measured window, samples each server thread's user and
# system CPU time (/proc/PID/task/*/stat) and counts the server's socket,
# WAL and sync syscalls (perf stat). Prints the bench's summary lines, then
# per thread its CPU seconds and microseconds per delivery (the window's
# delivered rate times WINDOW), then the syscalls per delivery.
#
#   scripts/thread-cost.sh [WORKLOAD [fastchat-bench options...]]
#
# Environment: as scripts/bench.sh (NO_BUILD, BUILD_DIR, SERVER_BIN, ...);
# WINDOW. Needs perf (linux-perf) and permission to use it (root, or
# kernel.perf_event_paranoid <= 1). docs/performance.md, "Where the dm time
# goes, by thread", shows its output.
set -euo pipefail
cd "$(dirname "$0")/.."

workload="${1:-dm}"
shift || true
window="${WINDOW:-4}"
out="$(mktemp /tmp/fastchat-thread-cost.XXXXXX)"
trap 'rm -f "$out" "$out".a "$out".b "$out".perf' EXIT

# bench.sh warms up for 2 s before its 8 s window: start 2 s into the window.
source scripts/bench-server.sh
bench_server_start thread-cost 4 "$out" "$workload" --duration 8 "$@"
snap() { for t in /proc/"$pid"/task/*; do echo "$(basename "$t") $(awk '{print $14, $15}' "$t"/stat)"; done; }
snap >"$out".a
perf stat -x, -e 'syscalls:sys_enter_sendmsg,syscalls:sys_enter_recvfrom,syscalls:sys_enter_pwrite64,syscalls:sys_enter_fdatasync' \
  -p "$pid" -- sleep "$window" 2>"$out".perf
snap >"$out".b
status=0
wait "$bench" || status=$?

grep -E "delivered |deliveries per server|other processes|lost " "$out"
rate="$(sed -n 's/.*delivered .*(\([0-9.]*\) msgs\/s).*/\1/p' "$out" | head -n1)"
if [[ -z "$rate" ]]; then
  echo "thread-cost: the bench printed no delivered rate" >&2
  exit 1
fi
ticks="$(getconf CLK_TCK)"
# The first thread is the event loop (main); the store worker starts next.
join "$out".a "$out".b | awk -v r="$rate" -v w="$window" -v hz="$ticks" '
  { u = ($4 - $2) / hz; s = ($5 - $3) / hz; if (u + s == 0) next
    n = r * w
    printf "thread %s: %.2f + %.2f CPU-s (user + sys), %.2f us per delivery (%.2f in the kernel)\n",
           $1, u, s, (u + s) * 1e6 / n, s * 1e6 / n }'
awk -F, -v r="$rate" -v w="$window" '$1 ~ /^[0-9]+$/ {
  sub(/syscalls:sys_enter_/, "", $3); printf "%s: %d in %s s, %.3f per delivery\n", $3, $1, w, $1 / (r * w) }' "$out".perf
exit "$status"
