"""Loopback ports: a free one for a server to take, and whether something listens on one."""

from __future__ import annotations

import socket

HOST = "127.0.0.1"
# Seconds. A loopback port either answers at once or nothing listens there.
PROBE_TIMEOUT_S = 0.5


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def accepts_tcp(address: tuple[str, int]) -> bool:
    """Whether something accepts TCP connections at `address`."""
    try:
        with socket.create_connection(address, timeout=PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False
