"""KeyFilter: which keys of an object may have state, so a host skips the journal for new ones.

A Bloom filter (``rbloom``) over the keys with state rows: "not in the filter" is certain, "in
the filter" may be wrong (about 1% of new keys are read anyway). The journal builds one per
object from its log; a host fetches it with its first state load and adds every key it writes
itself (only a key's own host writes its state). A new key then costs no Ray call and no query,
which is what an order-per-key workload pays on every invocation otherwise.

The hash is a stable 128-bit BLAKE2b: the filter is built in the journal process
and read in the hosts', where Python's own ``hash`` differs.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable

from rbloom import Bloom

FALSE_POSITIVE_RATE = 0.01
MIN_CAPACITY = 100_000


def key_hash(key: str) -> int:
    digest = hashlib.blake2b(key.encode(), digest_size=16).digest()
    return int.from_bytes(digest, "big", signed=True)


class KeyFilter:
    """The keys that may have state; sized for twice the keys it starts with."""

    def __init__(self, capacity: int, bloom: Bloom | None = None, items: int = 0) -> None:
        self.capacity = capacity
        self.items = items  # keys added (an upper bound: a key added twice counts twice)
        self._bloom = bloom if bloom is not None else Bloom(capacity, FALSE_POSITIVE_RATE, key_hash)

    @classmethod
    def of(cls, keys: Iterable[str], count: int) -> KeyFilter:
        f = cls(max(2 * count, MIN_CAPACITY))
        f.update(keys)
        return f

    def add(self, key: str) -> None:
        self._bloom.add(key)
        self.items += 1

    def update(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.add(key)

    def __contains__(self, key: str) -> bool:
        return key in self._bloom

    @property
    def full(self) -> bool:
        """Past its capacity the false-positive rate climbs: time to fetch a fresh one."""
        return self.items > self.capacity

    def to_bytes(self) -> bytes:
        return struct.pack("<QQ", self.capacity, self.items) + self._bloom.save_bytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> KeyFilter:
        capacity, items = struct.unpack_from("<QQ", data)
        return cls(capacity, Bloom.load_bytes(data[16:], key_hash), items)
