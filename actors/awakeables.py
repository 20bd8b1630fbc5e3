"""Awakeable ids: ``awk_<invocation id>_<entry index>_<check>``.

The check is an HMAC-SHA256 of the invocation id and index under the runtime's secret (a file
in the data dir, made once by the journal actor; see ``journal.secret``), so an id names its
owner and entry and cannot be made up by someone who only knows an invocation id. An unkeyed
hash was tried first: anyone who saw an invocation id could then forge the id of its awakeable
and resolve it. Ids stay valid across restarts on the same data dir, since the secret does.
"""

from __future__ import annotations

import hashlib
import hmac

from actors.errors import TerminalError

CHECK_CHARS = 16  # hex digits of the HMAC kept in an id (64 bits)


class AwakeableIds:
    """Makes and checks the awakeable ids of one runtime (one secret)."""

    def __init__(self, secret: str | bytes) -> None:
        if not secret:
            raise ValueError("AwakeableIds needs the runtime's non-empty secret")
        self._secret = secret.encode() if isinstance(secret, str) else bytes(secret)

    def _check(self, invocation_id: str, idx: int) -> str:
        mac = hmac.new(self._secret, f"{invocation_id}:{idx}".encode(), hashlib.sha256)
        return mac.hexdigest()[:CHECK_CHARS]

    def make(self, invocation_id: str, idx: int) -> str:
        """The id of the awakeable at journal entry ``idx`` of ``invocation_id``."""
        return f"awk_{invocation_id}_{idx}_{self._check(invocation_id, idx)}"

    def parse(self, text: object) -> tuple[str, int]:
        """(invocation id, entry index) of an id this runtime made; ``TerminalError`` (400)
        for anything else: malformed, truncated, or with a check not made with our secret."""
        parts = text.rsplit("_", 2) if isinstance(text, str) else []
        if len(parts) == 3 and parts[0].startswith("awk_") and parts[1].isdigit():
            inv_id, idx = parts[0][4:], int(parts[1])
            if inv_id and hmac.compare_digest(parts[2], self._check(inv_id, idx)):
                return inv_id, idx
        raise TerminalError(f"malformed awakeable id {text!r} (expected an id that "
                            "ctx.awakeable() of this runtime returned: "
                            "awk_<invocation>_<index>_<check>)", 400)
