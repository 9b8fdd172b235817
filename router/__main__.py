"""`python -m router` serves the call router; `python -m router call` places a signed test call;
`python -m router dev-secrets` prints webhook secrets for a local stack."""

from __future__ import annotations

import argparse
import gc
import sys

import uvloop

from httpkit import serve
from router import testcall
from router.app import SHUTDOWN_TIMEOUT_S, create_app
from store.logs import configure_logging
from store.settings import Settings

# A worker holds hundreds of thousands of long-lived cache objects; at the default thresholds
# (700, 10, 10) full collections re-walk them often enough to stall calls for 100+ ms (open-loop
# p99 at 100,000 channels: 268 ms, 78 ms with the collector off). Young collections stay frequent
# and cheap; full ones become rare. The warm-up also freezes what it loaded (router/resolver.py).
GC_THRESHOLDS = (10_000, 50, 1_000)


def main(argv: list[str] | None = None) -> int:
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(
        prog="python -m router",
        description="Serve the call router: provider webhooks, runtime lookups, /metrics. "
        "Configured by environment variables (README, Configuration); options override them.",
    )
    serve.add_serve_arguments(
        parser, settings.host, settings.router_port, "AGENTVER_ROUTER_PORT", serve.cpu_count()
    )
    testcall.add_parsers(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    if args.command == "call":
        return testcall.main(args)
    if args.command == "dev-secrets":
        print("\n".join(f"{k}={v}" for k, v in testcall.development_secrets().items()))
        return 0
    configure_logging()
    gc.set_threshold(*GC_THRESHOLDS)
    return serve.run(
        "router",
        lambda: create_app(settings),
        serve.serve_options(args),
        shutdown_timeout_s=SHUTDOWN_TIMEOUT_S,
        run_loop=uvloop.run,  # a third less CPU per webhook than asyncio's own loop
    )


if __name__ == "__main__":
    sys.exit(main())
