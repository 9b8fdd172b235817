"""The hot path's modules compiled with mypyc (scripts/compile): the list names real modules,
a compiled module is the one imported, none holds a statement mypyc mishandles, and an
extension older than its source stops the tests."""

from __future__ import annotations

import ast
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


def _mishandled(tree: ast.AST) -> list[str]:
    """What mypyc does not compile (an async generator), or compiles wrongly: an exception
    thrown into a compiled coroutine (from an awaited future) and re-raised after an await in
    its handler is corrupted, and the process crashes. An `async with` re-raises so when the
    manager's exit awaits (asyncpg's release, a rollback); an `async for` may, through its
    iterator's; an except block may, with a bare `raise` after an `await`."""

    def holds(node: ast.AST, kind: type[ast.AST] | tuple[type[ast.AST], ...]) -> bool:
        return any(isinstance(n, kind) for n in ast.walk(node))

    def bare_raise(node: ast.AST) -> bool:
        return any(isinstance(n, ast.Raise) and n.exc is None for n in ast.walk(node))

    return [
        f"line {node.lineno}: {type(node).__name__}"
        for node in ast.walk(tree)
        if isinstance(node, ast.AsyncWith | ast.AsyncFor)
        or (isinstance(node, ast.AsyncFunctionDef) and holds(node, (ast.Yield, ast.YieldFrom)))
        or (isinstance(node, ast.ExceptHandler) and holds(node, ast.Await) and bare_raise(node))
    ]


@pytest.mark.parametrize("module", compiled_modules())
def test_no_listed_module_holds_what_mypyc_mishandles(module: str) -> None:
    """The writer's process crashed on a data error that escaped the record path
    (tests/test_faults_postgres.py); such code lives in interpreted modules (docs/design.md,
    section 4)."""
    tree = ast.parse((ROOT / (module.replace(".", "/") + ".py")).read_text())
    assert _mishandled(tree) == []


def test_what_mypyc_mishandles_is_found() -> None:
    source = """
async def stream(pool):
    async with pool.acquire() as conn:
        async for row in conn.cursor("SELECT 1"):
            yield row

async def fall_back(load, last_known):
    try:
        return await load()
    except Exception:
        if await last_known() is None:
            raise
"""
    assert _mishandled(ast.parse(source)) == [
        "line 2: AsyncFunctionDef",
        "line 3: AsyncWith",
        "line 4: AsyncFor",
        "line 10: ExceptHandler",
    ]


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
