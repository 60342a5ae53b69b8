#!/usr/bin/env bash
# Benchmarks one workload against a fresh fastchat-server (SQLite in a temp
# folder, --pwhash min unless PWHASH says otherwise) with fastchat-bench,
# then stops the server.
#
#   scripts/bench.sh WORKLOAD [fastchat-bench options...]
#
# WORKLOAD and its defaults (later options override them):
#   dm            1000 users, each sending to its friend (closed loop, window 16)
#   group         1 group x 1000 members, 10 senders
#   group-small   100 groups x 10 members, 10 senders each
#   offline       1000 users: 500 send to their 500 offline friends, who then log in and drain
#   login         1000 users log in at once
#   idle          5000 logged-in idle connections (server RSS per connection)
#   selftest      fastchat-bench --self-test (no server)
# e.g.  scripts/bench.sh dm --rate 5000 --json /tmp/dm.json
#
# Environment: BUILD_DIR (default build/default), NO_BUILD=1 to skip the
# build, SERVER_BIN / BENCH_BIN to use other binaries, SERVER_ARGS for extra
# fastchat-server flags (the per-source and per-user limits are off unless
# given here), KEEP_TMP=1 to keep the server's folder and logs, TLS=1 to run
# the server with TLS on its client port (its default: no
# --insecure-plain-tcp) and the bench with --tls, PWHASH (min, interactive,
# moderate) for the server's Argon2id cost, LOG_LEVEL for its log level.
# Exit status: fastchat-bench's (non-zero on lost/duplicated/out-of-order
# messages or a failed run), or 1 if the server exits during the run or
# with a non-zero status (e.g. a sanitizer finding) when stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

workload="${1:-dm}"
shift || true
build="${BUILD_DIR:-build/default}"
if [[ -z "${NO_BUILD:-}" ]]; then
  cmake --preset default >/dev/null
  cmake --build --preset default --target fastchat-server fastchat-bench
fi
server_bin="${SERVER_BIN:-$build/src/server/fastchat-server}"
bench_bin="${BENCH_BIN:-$build/src/bench/fastchat-bench}"

case "$workload" in
  dm) args=(--workload dm --users 1000) ;;
  group) args=(--workload group --groups 1 --group-size 1000 --senders 10) ;;
  group-small) args=(--workload group --groups 100 --group-size 10 --senders 10) ;;
  offline) args=(--workload offline --users 1000) ;;
  login) args=(--workload login --users 1000) ;;
  idle) args=(--workload idle --users 5000) ;;
  selftest) exec "$bench_bin" --self-test ;;
  *)
    echo "usage: $0 dm|group|group-small|offline|login|idle|selftest [fastchat-bench options...]" >&2
    exit 2
    ;;
esac

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
tmp="$(mktemp -d /tmp/fastchat-bench.XXXXXX)"
server_pid=""
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$server_pid" 2>/dev/null || true
  fi
  if [[ -n "${KEEP_TMP:-}" ]]; then echo "kept $tmp" >&2; else rm -rf "$tmp"; fi
}
trap cleanup EXIT

# Every simulated user comes from this machine, as fast as it can: the limits
# meant for one person per address (registrations, failed logins and
# connections per source, sends per user, the password-check queue, group
# size) are off. SERVER_ARGS may set them again.
no_limits=(--registrations-per-ip 0 --login-failures-per-ip 0 --max-connections-per-ip 0
  --max-unauth-connections 0 --max-hash-queue 0 --sends-per-second 0 --max-group-members 0)
# By default the server runs with --insecure-plain-tcp and the bench speaks
# plain TCP (set PLAIN_ARGS= for a server binary older than TLS, which lacks
# the flag). TLS=1: the server keeps its default TLS (a self-signed
# certificate created beside the db) and the bench runs with --tls.
plain_args="${PLAIN_ARGS---insecure-plain-tcp}"
tls_args=()
if [[ -n "${TLS:-}" && "${TLS}" != 0 ]]; then
  plain_args=""
  tls_args=(--tls)
fi
# The output file exists before the server starts: the loop below reads it
# at once (a background job's redirection may not have made it yet).
: >"$tmp/server.out"
# shellcheck disable=SC2086
"$server_bin" --listen 127.0.0.1:0 --db "$tmp/server.db" --pwhash "${PWHASH:-min}" --log-level "${LOG_LEVEL:-warn}" "${no_limits[@]}" \
  $plain_args ${SERVER_ARGS:-} >"$tmp/server.out" 2>"$tmp/server.err" &
server_pid=$!
port=""
for _ in $(seq 100); do
  port="$(sed -n 's/^fastchat-server listening on .*:\([0-9][0-9]*\)$/\1/p' "$tmp/server.out" | head -n1)"
  [[ -n "$port" ]] && break
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.1
done
if [[ -z "$port" ]]; then
  echo "fastchat-server did not start:" >&2
  cat "$tmp/server.err" >&2
  exit 1
fi
echo "fastchat-server pid $server_pid on 127.0.0.1:$port (db in $tmp${tls_args:+, TLS})" >&2

set +e
"$bench_bin" --server "127.0.0.1:$port" --server-pid "$server_pid" "${tls_args[@]}" "${args[@]}" "$@"
rc=$?
set -e
if ! kill -0 "$server_pid" 2>/dev/null; then
  echo "fastchat-server exited during the run:" >&2
  tail -n 20 "$tmp/server.err" >&2
  rc=1
else
  # A server that does not stop cleanly on SIGTERM (in a sanitizer build:
  # one with a leak or any other finding) fails the run too.
  kill -TERM "$server_pid"
  for _ in $(seq 300); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$server_pid" 2>/dev/null || true
  server_rc=0
  wait "$server_pid" || server_rc=$?
  server_pid=""
  if [[ "$server_rc" -ne 0 ]]; then
    echo "fastchat-server exited with status $server_rc on SIGTERM:" >&2
    tail -n 60 "$tmp/server.err" >&2
    rc=1
  fi
fi
exit "$rc"
