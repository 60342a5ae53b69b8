#!/usr/bin/env bash
# One command: install what is needed, build, and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh default
# The store tests run against both SQLite and PostgreSQL: pg_virtualenv gives
# them a throw-away PostgreSQL cluster (and sets the PG* variables); -t keeps
# it in a temporary directory even as root, so parallel runs do not clash.
pg_virtualenv -t -- ctest --preset default -j2
