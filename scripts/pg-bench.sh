#!/usr/bin/env bash
# Benchmarks one workload with the server on PostgreSQL, the way
# docs/performance.md measures it: a throw-away cluster from pg_virtualenv
# with fsync=on (pg_virtualenv alone turns fsync off, so commits would not
# be durable), a fresh database per run, and the database's processes
# (the postmaster and its children) measured with --db-pid. Each run goes
# through scripts/bench.sh with SERVER_ARGS="--pg dbname=...". After each
# run it prints one line: the binary, messages delivered in the window,
# the database's CPU-seconds and its CPU per delivered message.
#
#   scripts/pg-bench.sh [WORKLOAD [fastchat-bench options...]]
#
# Environment: as scripts/bench.sh (NO_BUILD, BUILD_DIR, BENCH_BIN, ...);
# SERVER_BINS="A B ..." runs each server binary in turn (default: the
# build's), ROUNDS times (default 1), all in one cluster, for A/B
# comparisons in one sitting. Needs postgresql and postgresql-common
# (pg_virtualenv). Exit status: non-zero if any run failed.
set -euo pipefail
cd "$(dirname "$0")/.."

# scripts/bench.sh builds (unless NO_BUILD) before its first run.
export PG_BENCH_WORKLOAD="${1:-dm}"
shift || true
export PG_BENCH_BINS="${SERVER_BINS:-${BUILD_DIR:-build/default}/src/server/fastchat-server}"
export PG_BENCH_ROUNDS="${ROUNDS:-1}"

# shellcheck disable=SC2016  # expanded by the inner shell, inside the cluster
pg_virtualenv -t -o fsync=on -- bash -c '
  set -uo pipefail
  pm="$(head -n1 "$(psql -Atc "show data_directory")/postmaster.pid")"
  status=0
  n=0
  for round in $(seq "$PG_BENCH_ROUNDS"); do
    for bin in $PG_BENCH_BINS; do
      n=$((n + 1))
      db="bench$n"
      createdb "$db"
      out="$(SERVER_BIN="$bin" SERVER_ARGS="--pg dbname=$db ${SERVER_ARGS:-}" \
        scripts/bench.sh "$PG_BENCH_WORKLOAD" --db-pid "$pm" "$@" 2>&1)" || status=1
      echo "$out" | grep -E "delivered |deliveries per server|db cpu|other processes|lost "
      echo "$out" | awk -v bin="$bin" -v round="$round" '"'"'
        /^  delivered / { d = $2 }
        /^  db cpu s / { c = $4 }
        END { if (d > 0) printf "pg-bench: round %s %s: %d delivered, database %.2f CPU-s, %.1f us per delivered message\n", round, bin, d, c, c * 1e6 / d
              else printf "pg-bench: round %s %s: nothing delivered\n", round, bin }'"'"'
      dropdb "$db"
    done
  done
  exit "$status"
' pg-bench "$@"
