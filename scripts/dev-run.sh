#!/usr/bin/env bash
# `make run`: migrate, load the demo data (which prints an admin token and a curl to try), set
# development webhook secrets, then serve admin and the router on 127.0.0.1 until Ctrl-C.
# Expects DATABASE_URL and REDIS_URL, which `python -m harness services --` provides.
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python

"$py" -m store migrate
"$py" -m admin seed

# A development stack listens on loopback only, unless told otherwise.
export AGENTVER_HOST="${AGENTVER_HOST:-127.0.0.1}"

# Fresh webhook secrets for each variable not already set, so that signed test calls work at
# once; the effective values go to an env file (owner-only) that `python -m router call` reads.
secrets_file=.data/dev-secrets.env
mkdir -p .data
generated=()
(
    umask 077
    while IFS= read -r line; do
        name="${line%%=*}"
        printf '%s=%s\n' "$name" "${!name:-${line#*=}}"
    done < <("$py" -m router dev-secrets) > "$secrets_file"
)
while IFS= read -r line; do
    name="${line%%=*}"
    if [ -z "${!name:-}" ]; then
        export "$line"
        generated+=("$line")
    fi
done < "$secrets_file"
if [ "${#generated[@]}" -gt 0 ]; then
    echo
    echo "WARNING: development webhook secrets, for local use only (anyone who has them can place"
    echo "calls on this router); never use them in production:"
    printf '  %s\n' "${generated[@]}"
fi
echo
echo "Place a signed test call (add --provider telnyx or --provider generic for the others):"
echo "  $py -m router call --env-file $secrets_file --to +14155550100 --from +12125550123"
echo

# Job control puts each server in its own process group: a Ctrl-C then reaches only this script,
# which stops each server exactly once (a second signal would cut aiohttp's cleanup short).
set -m
pids=()
"$py" -m admin & pids+=("$!")
"$py" -m router --workers 1 & pids+=("$!")
set +m

stop() { kill -TERM "${pids[@]}" 2>/dev/null || true; wait || true; }
trap 'exit 130' INT
trap 'exit 143' TERM
trap stop EXIT
echo "admin on $AGENTVER_HOST:${AGENTVER_ADMIN_PORT:-8081}, router on $AGENTVER_HOST:${AGENTVER_ROUTER_PORT:-8080}; Ctrl-C stops"

# Serve until Ctrl-C, or until one server exits (a crash, a port in use): then stop the other.
running() { for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null || return 1; done; }
while running; do sleep 1; done
echo "dev-run: a server exited; stopping the others" >&2
exit 1
