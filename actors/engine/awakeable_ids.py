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
import re

from actors.sdk.errors import TerminalError
from journal.errors import StatusCode

CHECK_CHARS = 16  # hex digits of the HMAC kept in an id (64 bits)
MAX_ID_CHARS = 256  # far above any id we make (about 60 characters)
# One canonical form: ASCII only, the index without leading zeros and below 2**31 (so "_00_",
# Arabic-Indic digits or "²" never name an awakeable, nor a 4,301-digit index crash ``int``).
_ID = re.compile(
    r"awk_([A-Za-z0-9_.-]{1,128})_(0|[1-9][0-9]{0,9})_([0-9a-f]{" + str(CHECK_CHARS) + "})",
    re.ASCII,
)


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
        for anything else: malformed, truncated, non-canonical (``_00_``, non-ASCII digits),
        too long, or with a check not made with our secret. Never another exception: a handler
        that resolves a bad id fails for good instead of being retried."""
        match = _ID.fullmatch(text) if isinstance(text, str) and len(text) <= MAX_ID_CHARS else None
        if match is not None:
            inv_id, idx = match[1], int(match[2])
            if idx < 2**31 and hmac.compare_digest(match[3], self._check(inv_id, idx)):
                return inv_id, idx
        shown = (
            repr(text[:80]) + ("..." if len(text) > 80 else "")
            if isinstance(text, str)
            else f"of type {type(text).__name__}"
        )
        raise TerminalError(
            f"malformed awakeable id {shown} (expected an id that "
            "ctx.awakeable() of this runtime returned: "
            "awk_<invocation>_<index>_<check>)",
            StatusCode.BAD_REQUEST,
        )
