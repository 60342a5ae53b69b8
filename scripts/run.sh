#!/usr/bin/env bash
# One command for a newcomer: install what is needed, build, and start a
# FastChat server on the embedded SQLite store (data in ./fastchat-data).
# Extra arguments go to fastchat-server (e.g. --listen 0.0.0.0:7400).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh default
bin="$PWD/build/default/src"
echo
echo "FastChat is built. Client binary: $bin/client/fastchat"
echo "In another terminal:"
echo "  export PATH=\"$bin/client:\$PATH\""
echo "  fastchat register alice        # once; prints alice's ID"
echo "  fastchat --user alice chat     # interactive; type 'help'"
echo
exec "$bin/server/fastchat-server" --db fastchat-data/server.db "$@"
