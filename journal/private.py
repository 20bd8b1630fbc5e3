"""Owner-only paths: the data dir and the files in it, and the directory of the wire's sockets.

The journal holds every input, output and state value, and a socket of the wire serves the
journal's and the hosts' methods to whoever holds its token: other users of the machine must
reach neither. Directories are 0700 and files 0600, as PostgreSQL keeps its data dir and Ray
its session's sockets. A data dir made by an older version is tightened when the journal opens
it; the journal's process runs with umask 077 (``owner_only_umask``) so that files DuckDB makes
later (its write-ahead ``.wal``, spill files) are owner-only too.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import os
import secrets
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600
OWNER_ONLY_UMASK = 0o077
SUN_PATH_MAX = 107  # bytes of a Unix socket's path (108 with its NUL)
SOCKET_NAME_MAX = 40  # bytes of "wire-<pid>-<16 hex>.sock"
log = logging.getLogger("raystate.private")


def owner_only_umask() -> None:
    """Make what this process creates from now on owner-only (for a process of its own, such
    as the journal actor's: the umask is process-wide)."""
    os.umask(OWNER_ONLY_UMASK)


@contextlib.contextmanager
def owner_only_files() -> Iterator[None]:
    """``owner_only_umask`` for a while (in a single-threaded command such as the CLI's)."""
    old = os.umask(OWNER_ONLY_UMASK)
    try:
        yield
    finally:
        os.umask(old)


def restrict(path: Path, mode: int) -> None:
    """chmod ``path`` to ``mode`` if it is ours, not a symlink, and looser (a failure is
    logged: a data dir someone else owns still works, as before)."""
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode) or stat.S_IMODE(st.st_mode) & ~mode == 0:
            return
        os.chmod(path, stat.S_IMODE(st.st_mode) & mode)
    except FileNotFoundError:
        pass
    except OSError as e:
        log.warning("cannot make %s owner-only: %s", path, e)


def private_data_dir(path: Path) -> None:
    """Create the data dir 0700 (or tighten an existing one). Its files are tightened by
    ``tighten`` once they exist."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    restrict(path, DIR_MODE)


def tighten(data_dir: Path, names: list[str], dirs: list[str]) -> None:
    """Make the runtime's own files in ``data_dir`` (``names``, and ``names`` followed by a
    suffix, as DuckDB's ``journal.duckdb.wal``) and the files in its ``dirs`` owner-only.
    Nothing else there is touched: a data dir may sit among the user's own files."""
    restrict(data_dir, DIR_MODE)
    for entry in data_dir.iterdir():
        if any(entry.name.startswith(n) for n in names):
            restrict(entry, DIR_MODE if entry.is_dir() else FILE_MODE)
    for name in dirs:
        sub = data_dir / name
        restrict(sub, DIR_MODE)
        if sub.is_dir():
            for entry in sub.iterdir():
                restrict(entry, DIR_MODE if entry.is_dir() else FILE_MODE)


def _own_dir(path: Path) -> bool:
    """``path`` is now a directory of this user's, 0700, and not a symlink (made if missing).
    False if someone else made it (in a shared temp dir, anyone may have)."""
    try:
        path.mkdir(mode=DIR_MODE, exist_ok=True)
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            return False
        if stat.S_IMODE(st.st_mode) != DIR_MODE:
            os.chmod(path, DIR_MODE)
        return True
    except OSError:
        return False


@functools.cache
def socket_dir(name_len: int) -> Path:
    """A 0700 directory of this user's for Unix sockets whose names have ``name_len`` bytes:
    ``raystate-<uid>`` in the temp dir (or in /tmp if that path would be too long for a
    socket), else a fresh private one when someone else holds that name. Once per process."""
    uid = os.getuid()
    for base in dict.fromkeys([tempfile.gettempdir(), "/tmp"]):
        path = Path(base) / f"raystate-{uid}"
        if len(os.fsencode(path)) + 1 + name_len > SUN_PATH_MAX:
            continue
        if _own_dir(path):
            return path
        log.warning("%s is not a private directory of this user's: using a fresh one", path)
        return Path(tempfile.mkdtemp(prefix=f"raystate-{uid}-", dir=base))
    raise OSError(f"no temp dir short enough for a Unix socket ({tempfile.gettempdir()!r})")


def new_socket_path() -> str:
    """A fresh path for a Unix socket in ``socket_dir``; the file goes when this process
    exits (or, if it is killed, when a later process finds it there: ``sweep_stale``)."""
    directory = socket_dir(SOCKET_NAME_MAX)
    sweep_stale(directory)
    path = str(directory / f"wire-{os.getpid()}-{secrets.token_hex(8)}.sock")
    _made.add(path)
    return path


def remove_socket(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
    _made.discard(path)


_made: set[str] = set()  # this process's sockets
_swept: set[Path] = set()


@atexit.register
def _remove_made() -> None:
    for path in list(_made):
        remove_socket(path)


def sweep_stale(directory: Path) -> None:
    """Remove the socket files of processes that died without removing theirs (an actor is
    killed, not asked to exit): once per process and directory."""
    if directory in _swept:
        return
    _swept.add(directory)
    for path in directory.glob("wire-*.sock"):
        try:
            pid = int(path.name.split("-")[1])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and not _alive(pid) and not _listening(path):
            with contextlib.suppress(OSError):
                path.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _listening(path: Path) -> bool:
    """Someone serves ``path`` (asked, not guessed from a process id alone: a process in
    another pid namespace may share the temp dir)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            return False
        except OSError:
            return True
        return True
