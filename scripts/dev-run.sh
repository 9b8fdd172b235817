#!/usr/bin/env bash
# `make run`: migrate, load the demo data, then serve admin (and the router, once it exists) until
# Ctrl-C. Expects DATABASE_URL and REDIS_URL, which `python -m store services --` provides.
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python

# One dev admin token, kept across runs so scripts and shell history keep working.
mkdir -p .data
if [[ -z "${AGENTVER_BOOTSTRAP_TOKEN:-}" ]]; then
  [[ -s .data/admin-token ]] ||
    (umask 077 && "$py" -c 'import secrets; print(secrets.token_urlsafe(24))' >.data/admin-token)
  AGENTVER_BOOTSTRAP_TOKEN=$(<.data/admin-token)
  export AGENTVER_BOOTSTRAP_TOKEN
fi

"$py" -m store migrate
"$py" -m admin seed

# Job control puts each server in its own process group: a Ctrl-C then reaches only this script,
# which stops each server exactly once (a second signal would cut aiohttp's cleanup short).
set -m
pids=()
"$py" -m admin & pids+=("$!")
if [[ -d router ]]; then "$py" -m router & pids+=("$!"); fi
set +m

stop() { kill -TERM "${pids[@]}" 2>/dev/null || true; wait || true; }
trap 'exit 130' INT
trap 'exit 143' TERM
trap stop EXIT

cat <<MSG
admin  http://127.0.0.1:${AGENTVER_ADMIN_PORT:-8081}   token: $AGENTVER_BOOTSTRAP_TOKEN
router http://127.0.0.1:${AGENTVER_ROUTER_PORT:-8080}   (started only if router/ exists)
try:   curl -H "Authorization: Bearer $AGENTVER_BOOTSTRAP_TOKEN" http://127.0.0.1:${AGENTVER_ADMIN_PORT:-8081}/v1/agents
Ctrl-C stops everything.
MSG

# Serve until Ctrl-C, or until one server exits (a crash, a port in use): then stop the other.
running() { for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null || return 1; done; }
while running; do sleep 1; done
echo "dev-run: a server exited; stopping the others" >&2
exit 1
