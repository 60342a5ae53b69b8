#!/usr/bin/env bash
# Benchmarks a cluster of N fastchat-servers on one PostgreSQL database with
# fastchat-bench, then stops the servers. Run it inside a PostgreSQL
# environment (libpq takes host, port and user from the PG* variables), e.g.
#
#   pg_virtualenv -t -o fsync=on -- scripts/bench-cluster.sh 3 dm3 --workload dm --users 1000 --duration 8
#
# Each run creates a fresh database `c_TAG`. The servers listen on
# 127.0.0.1:17401.. (clients, plain TCP unless TLS=1) and 127.0.0.1:17501.. (mesh), with
# the limits off as in scripts/bench.sh. The bench spreads users round-robin
# over the servers (user i on server i mod N) and pairs user i with i^1, so
# with N >= 2 every DM crosses servers; it measures every server and the
# postmaster with its children (--db-pid). Output: $OUT/TAG.out (the
# report), $OUT/TAG.json, $OUT/TAG-sK.err (server logs), $OUT/TAG-sK.metrics
# (each server's /metrics, served on 127.0.0.1:17601.., read after the
# bench; the group-gap counters are printed too); OUT defaults to
# /tmp/fastchat-cluster-bench.
#
# Environment: BUILD_DIR (default build/default), SERVER_BIN / BENCH_BIN,
# SERVER_ARGS (more flags for every server, split on spaces), TLS=1 to keep
# the servers' default TLS on the client and mesh ports (each server gets a
# self-signed certificate $OUT/TAG-sK.crt) and run the bench with --tls.
# Exit status: fastchat-bench's.
set -euo pipefail
cd "$(dirname "$0")/.."
if (($# < 2)); then
  echo "usage: $0 N_SERVERS TAG [fastchat-bench options...]" >&2
  exit 2
fi
n=$1
tag=$2
shift 2
build="${BUILD_DIR:-build/default}"
server_bin="${SERVER_BIN:-$build/src/server/fastchat-server}"
bench_bin="${BENCH_BIN:-$build/src/bench/fastchat-bench}"
out="${OUT:-/tmp/fastchat-cluster-bench}"
mkdir -p "$out"

db="c_${tag}"
createdb "$db"
postmaster=$(head -1 "$(psql -Atc "show data_directory")/postmaster.pid")
no_limits=(--registrations-per-ip 0 --login-failures-per-ip 0 --max-connections-per-ip 0
  --max-unauth-connections 0 --max-hash-queue 0 --sends-per-second 0 --max-group-members 0)
# A secret for this throw-away cluster only, in a file (not on the command line).
secret_file="$out/$tag.secret"
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$secret_file"
chmod 600 "$secret_file"

pids=()
server_args=()
bench_tls=()
if [[ -n "${TLS:-}" && "${TLS}" != 0 ]]; then
  bench_tls=(--tls)
fi
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
for i in $(seq 1 "$n"); do
  transport=(--insecure-plain-tcp)
  if ((${#bench_tls[@]})); then
    rm -f "$out/$tag-s$i.crt" "$out/$tag-s$i.key"
    transport=(--tls-cert "$out/$tag-s$i.crt")
  fi
  # shellcheck disable=SC2086  # SERVER_ARGS is split on spaces
  "$server_bin" --server-id "s$i" --pg "dbname=$db" --listen "127.0.0.1:$((17400 + i))" \
    --mesh-listen "127.0.0.1:$((17500 + i))" --cluster-secret-file "$secret_file" --pwhash min \
    "${transport[@]}" --log-level warn --metrics-listen "127.0.0.1:$((17600 + i))" "${no_limits[@]}" \
    ${SERVER_ARGS:-} >/dev/null 2>"$out/$tag-s$i.err" &
  pids+=($!)
  server_args+=(--server "127.0.0.1:$((17400 + i))" --server-pid "$!")
done
sleep 3  # listening, and linked to each other (the mesh dials within a second)
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
rc=0
"$bench_bin" "${server_args[@]}" "${bench_tls[@]}" --db-pid "$postmaster" "$@" --json "$out/$tag.json" >"$out/$tag.out" 2>&1 || rc=$?
tail -25 "$out/$tag.out"
for i in $(seq 1 "$n"); do
  if exec 3<>"/dev/tcp/127.0.0.1/$((17600 + i))"; then
    printf 'GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
    cat <&3 >"$out/$tag-s$i.metrics"
    exec 3<&-
    echo "s$i: $(grep -E '^fastchat_(group_entries_held|group_log_gaps)_total' "$out/$tag-s$i.metrics" | tr '\n' ' ')"
  fi
done
exit "$rc"
