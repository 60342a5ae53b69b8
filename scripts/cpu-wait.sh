#!/usr/bin/env bash
# Who waits for a CPU: runs scripts/bench.sh and, over WINDOW seconds
# (default 4) of one phase, samples each server thread's and each bench
# thread's time on a CPU and time runnable but waiting for one
# (/proc/PID/task/TID/schedstat), and the machine's busy share
# (/proc/stat). On two cores shared by the server's two threads and the
# bench, this says whether a phase is limited by one thread (near 100% on
# a CPU) or by the CPUs (threads waiting to run).
#
#   scripts/cpu-wait.sh [PHASE [fastchat-bench options...]]
#
# PHASE: offline-store (the offline workload's store phase, from 3 s after
# it starts), offline-drain (its drain, from 2 s after the re-login), or a
# workload (dm, group, ...: 4 s into its run, inside the measured window).
# Default offline-drain. Environment: as scripts/bench.sh (NO_BUILD,
# BUILD_DIR, SERVER_BIN, ...); WINDOW. docs/performance.md, "The offline
# phases: what they wait on", shows its output.
set -euo pipefail
cd "$(dirname "$0")/.."

phase="${1:-offline-drain}"
shift || true
window="${WINDOW:-4}"
case "$phase" in
  offline-store) workload=offline; mark="store: "; settle=3 ;;
  offline-drain) workload=offline; mark="re-login: "; settle=2 ;;
  *) workload="$phase"; mark="register+login"; settle=4 ;;
esac
out="$(mktemp /tmp/fastchat-cpu-wait.XXXXXX)"
trap 'rm -f "$out" "$out".a "$out".b' EXIT

scripts/bench.sh "$workload" "$@" >"$out" 2>&1 &
bench=$!
for _ in $(seq 600); do
  grep -q -- "$mark" "$out" && break
  kill -0 "$bench" 2>/dev/null || break
  sleep 0.1
done
if ! grep -q -- "$mark" "$out"; then
  wait "$bench" || true
  cat "$out" >&2
  echo "cpu-wait: the bench never printed '$mark'" >&2
  exit 1
fi
sleep "$settle"
server="$(sed -n 's/^fastchat-server pid \([0-9]*\).*/\1/p' "$out" | head -n1)"
client="$(pgrep -n -x fastchat-bench || true)"
if [[ -z "$server" || -z "$client" ]]; then
  wait "$bench" || true
  cat "$out" >&2
  echo "cpu-wait: no server or bench process found" >&2
  exit 1
fi
snap() {
  head -n1 /proc/stat
  for p in "$server" "$client"; do
    for t in /proc/"$p"/task/*; do
      echo "$p/$(basename "$t") $(cat "$t"/schedstat 2>/dev/null || echo "0 0 0")"
    done
  done
}
snap >"$out".a
sleep "$window"
snap >"$out".b
status=0
wait "$bench" || status=$?

grep -E "_per_s |machine busy|lost " "$out" || true
# /proc/stat's first line: cpu user nice system idle iowait irq softirq steal ...
busy() { awk '{ t = 0; for (i = 2; i <= 9; ++i) t += $i; print t - $5 - $6, t }' "$1"; }
read -r b0 t0 < <(head -n1 "$out".a | busy /dev/stdin)
read -r b1 t1 < <(head -n1 "$out".b | busy /dev/stdin)
awk -v b="$((b1 - b0))" -v t="$((t1 - t0))" 'BEGIN { printf "machine busy %.0f%% of its CPUs over the window\n", 100 * b / t }'
join <(tail -n +2 "$out".a | sort) <(tail -n +2 "$out".b | sort) |
  awk -v w="$window" -v s="$server" '{
    run = ($5 - $2) / 1e9; wait = ($6 - $3) / 1e9
    if (run < 0.02) next
    split($1, id, "/")
    who = id[1] == s ? "server" : "bench "
    printf "%s thread %s: on a CPU %.2f s (%.0f%%), waiting for one %.2f s (%.0f%%) of %s s\n",
           who, id[2], run, 100 * run / w, wait, 100 * wait / w, w }'
exit "$status"
