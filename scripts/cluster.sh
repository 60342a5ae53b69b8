#!/usr/bin/env bash
# Starts a local FastChat cluster: a private PostgreSQL, one balancer and N
# servers on one machine, and stops it cleanly on Ctrl-C (or SIGTERM).
#
#   scripts/cluster.sh [-n SERVERS] [-p BASE_PORT] [-d DIR] [-b BUILD_DIR]
#
# Ports: balancer BASE_PORT (default 7300); server i serves clients on
# BASE_PORT+100+i and its peers on BASE_PORT+200+i; PostgreSQL on
# BASE_PORT+300. Data, logs and the generated cluster secret live in DIR
# (default ./fastchat-cluster). Clients: fastchat --balancer 127.0.0.1:BASE_PORT ...
set -euo pipefail
cd "$(dirname "$0")/.."

n=3
base=7300
dir="$PWD/fastchat-cluster"
build="$PWD/build/default"
while getopts "n:p:d:b:h" opt; do
  case "$opt" in
    n) n="$OPTARG" ;;
    p) base="$OPTARG" ;;
    d) dir="$OPTARG" ;;
    b) build="$OPTARG" ;;
    *) sed -n '2,11p' "$0"; exit 2 ;;
  esac
done
[ -x "$build/src/server/fastchat-server" ] || bash scripts/build.sh default
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
pgbin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
pgdata="$dir/pg"
pgport=$((base + 300))

pids=()
stop() {
  trap - INT TERM EXIT
  echo "stopping the cluster..."
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  as_pg "$pgbin/pg_ctl" -D "$pgdata" -m fast stop >/dev/null 2>&1 || true
  echo "stopped (data kept in $dir)"
  exit 0
}

# PostgreSQL refuses to run as root: run its tools as the postgres user then.
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# 1. A private PostgreSQL in $dir/pg, listening on localhost and a socket there.
if [ ! -f "$pgdata/PG_VERSION" ]; then
  mkdir -p "$pgdata"
  [ "$(id -u)" -eq 0 ] && chown postgres "$pgdata"
  as_pg "$pgbin/initdb" -D "$pgdata" -U fastchat --auth=trust >"$dir/initdb.log"
fi
as_pg "$pgbin/pg_ctl" -D "$pgdata" -l "$pgdata/server.log" -w \
  -o "-p $pgport -k $pgdata -c listen_addresses=127.0.0.1" start >/dev/null
trap stop INT TERM EXIT
conninfo="host=127.0.0.1 port=$pgport user=fastchat dbname=postgres"

# 2. The cluster secret, made once, readable only by us.
secret="$dir/cluster.secret"
if [ ! -s "$secret" ]; then
  (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$secret")
fi

# 3. The balancer.
"$build/src/balancer/fastchat-balancer" --listen "127.0.0.1:$base" --cluster-secret-file "$secret" \
  >"$dir/balancer.out" 2>"$dir/balancer.log" &
pids+=($!)

# 4. N servers sharing the database, meshed, reporting to the balancer.
for i in $(seq 1 "$n"); do
  "$build/src/server/fastchat-server" --server-id "server-$i" --pg "$conninfo" \
    --listen "127.0.0.1:$((base + 100 + i))" --mesh-listen "127.0.0.1:$((base + 200 + i))" \
    --cluster-secret-file "$secret" --balancer "127.0.0.1:$base" \
    >"$dir/server-$i.out" 2>"$dir/server-$i.log" &
  pids+=($!)
done

sleep 1
echo "FastChat cluster running: balancer 127.0.0.1:$base, $n servers (ports $((base + 101))..$((base + 100 + n))),"
echo "PostgreSQL on 127.0.0.1:$pgport; logs in $dir. Connect clients with:"
echo "  fastchat --balancer 127.0.0.1:$base register NAME"
echo "  fastchat --balancer 127.0.0.1:$base --user NAME chat"
echo "Ctrl-C stops everything."
# A server that dies (try kill -9 on one) leaves the others running: its
# clients move to them through the balancer.
while true; do
  rc=0
  wait -n || rc=$?
  [ "$rc" -eq 127 ] && break  # nothing left to wait for
  echo "a cluster process exited (status $rc); the others keep running (logs in $dir)"
done
stop
