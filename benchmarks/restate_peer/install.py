"""Where the restate-server binary lives, and its installation on first use.

The server is a Rust binary that Restate ships in npm packages (``@restatedev/restate-server``
pulls in the one for this platform, e.g. ``@restatedev/restate-server-linux-x64``). It goes
into a cache directory outside the repository, so nothing is installed into the work tree;
``RAYSTATE_RESTATE_SERVER`` names a binary to use instead.
"""

from __future__ import annotations

import os
import platform
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

VERSION = "1.7.12"
PACKAGE = f"@restatedev/restate-server@{VERSION}"


class SetupError(RuntimeError):
    """What to install or run so the peer can start."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "raystate-bench" / f"restate-{VERSION}"


def install_command(prefix: Path | None = None) -> list[str]:
    return ["npm", "install", "--no-save", "--prefix", str(prefix or cache_dir()), PACKAGE]


def _platform_package() -> str:
    system = {"Linux": "linux", "Darwin": "darwin"}.get(platform.system(), platform.system())
    machine = {"x86_64": "x64", "AMD64": "x64", "aarch64": "arm64"}.get(
        platform.machine(), platform.machine()
    )
    return f"restate-server-{system}-{machine}"


def binary_path(prefix: Path | None = None) -> Path:
    """The native binary itself, not npm's node wrapper: CPU is then that of the server."""
    return (
        (prefix or cache_dir())
        / "node_modules"
        / "@restatedev"
        / _platform_package()
        / "bin"
        / "restate-server"
    )


def server_binary(install: bool = True) -> Path:
    """The restate-server binary, installed with npm on first use if ``install``."""
    if override := os.environ.get("RAYSTATE_RESTATE_SERVER"):
        return Path(override)
    path = binary_path()
    if path.is_file():
        return path
    command = install_command()
    how = f"run: {shlex.join(command)}"
    if not install:
        raise SetupError(f"restate-server {VERSION} is not installed at {path}; {how}")
    if shutil.which("npm") is None:
        raise SetupError(
            f"restate-server {VERSION} is not installed and npm is missing; "
            f"install Node.js and npm, then {how}"
        )
    print(
        f"restate peer: installing restate-server {VERSION} into {cache_dir()} (first use): "
        f"{shlex.join(command)}",
        file=sys.stderr,
        flush=True,
    )
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0 or not path.is_file():
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise SetupError(f"installing restate-server failed ({tail}); {how}")
    return path


def check_sdk() -> None:
    """Fail early, with the command to run, where the SDK process could not start."""
    missing = [m for m in ("restate", "hypercorn") if _missing(m)]
    if missing:
        raise SetupError(
            f"{', '.join(missing)} not installed; run: pip install -e '.[peer]' "
            "(restate-sdk==1.3.0, hypercorn)"
        )


def _missing(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is None
