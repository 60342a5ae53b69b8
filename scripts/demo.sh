#!/usr/bin/env bash
# FastChat demo: a server and three users (alice, bob, carol) on this machine.
#
#   scripts/demo.sh [BUILD_DIR]      (default: build/default; build it first:
#                                     cmake --preset default && cmake --build build/default)
#
# Starts fastchat-server on a free port with a throw-away database, registers
# three users, runs a `listen` session per user (its output prefixed with
# "alice sees | " etc.), and drives every feature with one-shot commands:
# friend requests, direct messages, an image, a group, a kick with key
# rotation, offline delivery, safety numbers. Cleans everything up on exit.
set -euo pipefail

BUILD=${1:-build/default}
SERVER_BIN=$BUILD/src/server/fastchat-server
CLIENT_BIN=$BUILD/src/client/fastchat
for b in "$SERVER_BIN" "$CLIENT_BIN"; do
  if [[ ! -x $b ]]; then
    echo "demo: $b not found; build first (cmake --preset default && cmake --build $BUILD)" >&2
    exit 1
  fi
done
SERVER_BIN=$(realpath "$SERVER_BIN")
CLIENT_BIN=$(realpath "$CLIENT_BIN")

WORK=$(mktemp -d "${TMPDIR:-/tmp}/fastchat-demo-XXXXXX")
SERVER_PID=""
declare -A LISTENER=()

cleanup() {
  set +e
  for u in "${!LISTENER[@]}"; do
    kill -TERM "${LISTENER[$u]}" 2>/dev/null
  done
  for u in "${!LISTENER[@]}"; do
    wait "${LISTENER[$u]}" 2>/dev/null
  done
  if [[ -n $SERVER_PID ]]; then
    kill -TERM "$SERVER_PID" 2>/dev/null
    wait "$SERVER_PID" 2>/dev/null
  fi
  sleep 0.2  # let the output filters drain
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------ helpers
bold() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
pause() { sleep "${DEMO_PAUSE:-0.7}"; }

# client_args USER: the client's global options for USER (into CLIENT_ARGS).
client_args() {
  CLIENT_ARGS=(--server "$ADDR" --home "$WORK/home-$1" --user "$1"
    --password "demo-password-$1" --downloads "$WORK/downloads-$1" --kdf min)
}

# fc USER [client options] COMMAND ARGS...: run the client as USER.
fc() {
  local user=$1
  shift
  client_args "$user"
  "$CLIENT_BIN" "${CLIENT_ARGS[@]}" "$@"
}

# say USER COMMAND ARGS...: run a one-shot command, echoing it and its answer.
say() {
  local user=$1
  shift
  printf '%-6s $ %s\n' "$user" "$*"
  fc "$user" "$@" 2>&1 | sed -u "s/^/         → /" || true
}

# listen USER: start USER's receiving session in the background.
listen() {
  local user=$1
  client_args "$user"
  # The client itself is the background job, so $! is its pid.
  "$CLIENT_BIN" "${CLIENT_ARGS[@]}" listen \
    > >(sed -u "s/^/$user sees | /" | tee -a "$WORK/view-$user.log") 2>&1 &
  LISTENER[$user]=$!
}

stop_listening() {
  local user=$1
  kill -TERM "${LISTENER[$user]}" 2>/dev/null || true
  wait "${LISTENER[$user]}" 2>/dev/null || true
  unset "LISTENER[$user]"
}

# ------------------------------------------------------------------ server
bold "Starting fastchat-server (database in $WORK)"
"$SERVER_BIN" --listen 127.0.0.1:0 --db "$WORK/server.db" --pwhash min --log-level warn \
  >"$WORK/server.out" 2>"$WORK/server.err" &
SERVER_PID=$!
PORT=""
for _ in $(seq 1 200); do
  PORT=$(sed -n '1s/.*listening on [^ ]*:\([0-9][0-9]*\).*/\1/p' "$WORK/server.out" 2>/dev/null || true)
  [[ -n $PORT ]] && break
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "demo: the server exited:" >&2
    cat "$WORK/server.err" >&2
    exit 1
  fi
  sleep 0.05
done
if [[ -z $PORT ]]; then
  echo "demo: the server did not start" >&2
  exit 1
fi
ADDR=127.0.0.1:$PORT
head -n 1 "$WORK/server.out"

# ------------------------------------------------------------------ users
bold "Registering alice, bob and carol (keys are made on each client)"
for u in alice bob carol; do
  mkdir -p "$WORK/home-$u" "$WORK/downloads-$u"
  printf '%-6s $ register %s\n' "$u" "$u"
  "$CLIENT_BIN" --server "$ADDR" --home "$WORK/home-$u" --password "demo-password-$u" \
    --downloads "$WORK/downloads-$u" --kdf min register "$u" 2>&1 | sed "s/^/         → /"
done

bold "Each user starts a listening session"
for u in alice bob carol; do listen "$u"; done
pause

# ------------------------------------------------------------------ friends
bold "Friend requests"
say alice add_friend bob
say alice add_friend carol
say bob add_friend carol
pause
say bob accept alice
say carol accept alice
say carol decline bob
pause
say bob add_friend carol
pause
say carol accept bob
pause
say alice friends

# ------------------------------------------------------------------ direct
bold "Direct messages, both ways (end-to-end encrypted)"
say alice single_message bob "Hi Bob! Lunch at noon?"
pause
say bob single_message alice "Sure, see you there."
pause
say carol single_message alice "Alice, did you get the slides?"
pause

bold "An image"
head -c 300000 /dev/urandom >"$WORK/sunset.png"
say alice single_image bob "$WORK/sunset.png"
pause
if cmp -s "$WORK/sunset.png" "$WORK/downloads-bob/received_sunset.png"; then
  echo "         bob's received_sunset.png is identical to alice's sunset.png"
else
  echo "         (bob's copy is not there yet or differs)"
fi

# ------------------------------------------------------------------ groups
bold "A group with all three"
GROUP=$(fc alice --json create_group book-club | sed -n 's/.*"group_id":\([0-9][0-9]*\).*/\1/p')
echo "alice  $ create_group book-club"
echo "         → created group $GROUP"
say alice add_member "$GROUP" bob
say alice add_member "$GROUP" carol
pause
say alice members "$GROUP"
say bob group_message "$GROUP" "Hello book club!"
pause
say carol group_message "$GROUP" "Hi all, I am reading Dune."
pause

bold "alice kicks bob: the group key is rotated"
say alice kick "$GROUP" bob
pause
say alice group_message "$GROUP" "Carol, just us now: bob cannot read this."
pause
say bob group_message "$GROUP" "Am I still in?"
say alice members "$GROUP"

# ------------------------------------------------------------------ offline
bold "Offline delivery: carol goes offline"
stop_listening carol
echo "         (carol's listener stopped)"
say alice single_message carol "Carol, ping me when you are back."
say bob single_message carol "Carol, here is a note while you were away."
say alice group_message "$GROUP" "Next meeting on Friday."
pause
bold "carol comes back: everything queued arrives, in order"
listen carol
pause
pause

# ------------------------------------------------------------------ identity
bold "Safety numbers (compare them out of band: they match on both sides)"
say alice fingerprint bob
say bob fingerprint alice

pause
bold "Stopping"
for u in alice bob carol; do
  if [[ -n ${LISTENER[$u]:-} ]]; then stop_listening "$u"; fi
done
sleep 0.2

for u in alice bob carol; do
  bold "The conversation as $u saw it"
  cat "$WORK/view-$u.log" 2>/dev/null || true
done
