# Sourced by scripts that measure a server while scripts/bench.sh drives it
# (thread-cost.sh, alloc-count.sh). bench_server_start NAME WAIT OUT
# WORKLOAD [bench options...] starts scripts/bench.sh in the background
# (its output in OUT), waits WAIT seconds and sets `bench` (its process) and
# `pid` (the server's); if no server is found it prints OUT and exits 1.
bench_server_start() {
  local name="$1" wait="$2" out="$3"
  shift 3
  scripts/bench.sh "$@" >"$out" 2>&1 &
  bench=$!
  sleep "$wait"
  pid="$(pgrep -n -f -- "--db /tmp/fastchat-bench" || true)"
  if [[ -z "$pid" ]]; then
    wait "$bench" || true
    cat "$out" >&2
    echo "$name: no server found" >&2
    exit 1
  fi
}
