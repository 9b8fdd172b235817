#!/usr/bin/env bash
# `make run`: migrate, load the demo data (which prints an admin token and a curl to try), then
# serve admin and the router until Ctrl-C. Expects DATABASE_URL and REDIS_URL,
# which `python -m harness services --` provides.
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python

"$py" -m store migrate
"$py" -m admin seed

# Job control puts each server in its own process group: a Ctrl-C then reaches only this script,
# which stops each server exactly once (a second signal would cut aiohttp's cleanup short).
set -m
pids=()
"$py" -m admin & pids+=("$!")
"$py" -m router & pids+=("$!")
set +m

stop() { kill -TERM "${pids[@]}" 2>/dev/null || true; wait || true; }
trap 'exit 130' INT
trap 'exit 143' TERM
trap stop EXIT
echo "admin on :${AGENTVER_ADMIN_PORT:-8081}, router on :${AGENTVER_ROUTER_PORT:-8080}; Ctrl-C stops"

# Serve until Ctrl-C, or until one server exits (a crash, a port in use): then stop the other.
running() { for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null || return 1; done; }
while running; do sleep 1; done
echo "dev-run: a server exited; stopping the others" >&2
exit 1
