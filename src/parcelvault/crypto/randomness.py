"""Random bytes for keys, nonces and ids, drawn from the kernel a block at a time.

Every random value parcelvault makes (data keys, AES-GCM nonces, key and record ids)
comes from `os.urandom`. Each call is a system call; a batch that seals thousands of
fields would make thousands of them. A `RandomBlock` makes one per 4 KiB instead and
hands out consecutive, never reused slices.

Security invariant: a block belongs to ONE batch of work in one thread of one
process. It is made at the start of the batch and dropped at its end; it is never
stored in a module, a class or anything that outlives the call, so a fork (the
importer's validating process, server workers) or a second thread can never hand out
the same bytes, which for AES-GCM nonces under one key would be fatal.
"""

from __future__ import annotations

import os
from collections.abc import Callable

RandomBytes = Callable[[int], bytes]
"""`n -> n random bytes`: `os.urandom`, or a `RandomBlock.take` of the current batch."""

BLOCK_BYTES = 4096


class RandomBlock:
    """Random bytes for one batch (see the module's invariant)."""

    __slots__ = ("_block", "_position")

    def __init__(self) -> None:
        self._block = b""
        self._position = 0

    def take(self, n: int) -> bytes:
        if n < 0:
            raise ValueError("cannot take a negative number of bytes")
        start = self._position
        end = start + n
        if end > len(self._block):
            self._block = os.urandom(max(BLOCK_BYTES, n))
            start, end = 0, n
        self._position = end
        return self._block[start:end]
