"""Handlers keep their signatures for type checkers: mypy, run on a small user file
(``typecheck/user_app.py``), sees each handler's own signature, types ``rt.call``,
``rt.send(...).result()`` and ``ctx.object_call`` as the handler's return type, and flags an
argument of the wrong type. The package ships ``py.typed``, so a user's mypy reads it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import actors

pytest.importorskip("mypy")

ROOT = Path(__file__).resolve().parents[2]
USER_FILE = Path(__file__).with_name("typecheck") / "user_app.py"


@pytest.fixture(scope="module")
def mypy_output(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """mypy's messages on the user file, by the source line they are about."""
    cache = tmp_path_factory.mktemp("mypy-cache")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--no-error-summary",
            "--hide-error-context",
            "--follow-imports=silent",
            "--cache-dir",
            str(cache),
            str(USER_FILE),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "MYPYPATH": str(ROOT)},  # this checkout, however it is installed
    )
    assert proc.returncode in (0, 1), proc.stderr or proc.stdout
    lines = USER_FILE.read_text().splitlines()
    out: dict[str, str] = {}
    for message in proc.stdout.splitlines():
        m = re.match(r".*user_app\.py:(\d+): (.*)$", message)
        assert m, message
        out[lines[int(m[1]) - 1].strip()] = m[2]
    return out


@pytest.mark.parametrize(
    ("line", "revealed"),
    [
        (
            "reveal_type(add)",
            "def (ctx: actors.sdk.contexts.ObjectContext, delta: int) -> "
            "typing.Coroutine[Any, Any, int]",
        ),
        ('reveal_type(rt.call(add, key="alice", arg=5))', "int"),
        ('reveal_type(rt.call(reset, key="alice"))', "None"),
        ('reveal_type(rt.call(greet, arg="bob"))', "str"),
        ('reveal_type(rt.send(add, key="alice", arg=5).result())', "int"),
        ('reveal_type(rt.call("Counter/add", key="alice", arg=5))', "Any"),
        ('reveal_type(await rt.call_async(greet, arg="bob"))', "str"),
        ('reveal_type(await rt.send(run, key="a@b.c", arg="a@b.c").result_async())', "bool"),
        ('reveal_type(await ctx.object_call(add, "total", 1))', "int"),
    ],
)
def test_mypy_sees_handler_types(mypy_output: dict[str, str], line: str, revealed: str) -> None:
    assert mypy_output.get(line) == f'note: Revealed type is "{revealed}"', mypy_output


def test_mypy_flags_a_wrong_argument_type(mypy_output: dict[str, str]) -> None:
    message = mypy_output.get('rt.call(add, key="alice", arg="five")  # WRONG-ARG', "")
    assert message.startswith("error:") and "[arg-type]" in message, mypy_output
    errors = [m for m in mypy_output.values() if m.startswith("error:")]
    assert len(errors) == 1, errors


def test_the_package_ships_py_typed() -> None:
    assert (Path(actors.__file__).parent / "py.typed").is_file()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'actors = \[[^\]]*"py\.typed"', pyproject), "py.typed is not package data"
