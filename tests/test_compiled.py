"""The hot path's modules compiled with mypyc (scripts/compile): the list names real modules,
a compiled module is the one imported, and an extension older than its source stops the tests."""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path

import pytest

from tests.conftest import ROOT, stale_extensions

COMPILE = ROOT / "scripts" / "compile"


def compiled_modules() -> list[str]:
    """The modules scripts/compile lists, as dotted names."""
    listed = re.search(r"^modules=\((.*?)^\)", COMPILE.read_text(), re.M | re.S)
    assert listed is not None
    return [path.removesuffix(".py").replace("/", ".") for path in listed.group(1).split()]


@pytest.mark.parametrize("module", compiled_modules())
def test_each_listed_module_exists_and_what_runs_is_its_extension_once_built(module: str) -> None:
    source = ROOT / (module.replace(".", "/") + ".py")
    built = sorted(source.parent.glob(source.stem + ".*.so"))
    imported = importlib.import_module(module)

    assert source.is_file()
    # `make test` builds them first, unless there is no C compiler (scripts/compile).
    assert imported.__file__ == str(built[0] if built else source)


def test_an_extension_older_than_its_source_is_stale(tmp_path: Path) -> None:
    package = tmp_path / "router"
    package.mkdir()
    for name in ("fresh", "edited"):
        (package / f"{name}.py").write_text("")
        (package / f"{name}.cpython-311-x86_64-linux-gnu.so").write_bytes(b"")
    (package / "alone.cpython-311-x86_64-linux-gnu.so").write_bytes(b"")  # its source is gone
    edited = package / "edited.py"
    later = edited.stat().st_mtime + 5
    os.utime(edited, (later, later))

    assert stale_extensions(tmp_path) == ["router/edited.cpython-311-x86_64-linux-gnu.so"]
