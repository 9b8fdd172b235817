"""Debian packages the tests need beyond Python (chromium, promtool), installed when missing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


def debian_tool(path: Path, package: str) -> str:
    """`path`, installing `package` with apt-get first when it is missing (CI runs as root);
    the test is skipped, saying how to install it, where that cannot be done."""
    if not path.exists():
        apt = shutil.which("apt-get")
        if apt is None or os.geteuid() != 0:
            pytest.skip(f"{path.name} is missing; install it with: apt-get install -y {package}")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run([apt, "update"], check=True, env=env)  # noqa: S603 (fixed arguments)
        subprocess.run(  # noqa: S603 (fixed arguments)
            [apt, "install", "-y", package], check=True, env=env
        )
    return str(path)
