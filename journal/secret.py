"""The runtime's secret: random bytes made once per data dir, kept beside ``journal.duckdb``.

Awakeable ids carry an HMAC under it (``actors.engine.awakeable_ids``), so they cannot be
forged from an invocation id. The journal actor reads (or makes) it at start and hands it out
with the runtime config, which every host and driver loads; it stays the same across restarts
on the data dir.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

SECRET_FILE = "runtime-secret"
SECRET = "secret"  # its key in the runtime config the journal actor hands out


def runtime_secret(data_dir: str | os.PathLike[str]) -> str:
    """The data dir's secret (hex), made with owner-only permissions if it does not exist."""
    path = Path(data_dir) / SECRET_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
            f.flush()
            os.fsync(f.fileno())
    text = path.read_text().strip()
    if not text:  # a crash between creating and writing it: nothing can have used it yet
        path.unlink()
        return runtime_secret(data_dir)
    return text
