"""What a simulated device does with the bytes of an update, the agent's checks without LiteRT.

    compressed bytes   exact signed size and sha256 (`check_bytes`)
    full artifact      `shared.codec.decompress` capped at the target size, then size and sha256
    delta              `shared.codec.delta_decode` against the installed model's bytes, same checks

`ModelCache` keeps verified model bytes by sha256 so that thousands of devices running the same
model hold one copy: a device keeps only the sha256 of what it runs, and finds the base of a
delta here. The cache is bounded; a device whose base was evicted fetches the full artifact,
as the agent does when a delta cannot be used.

`Downloads` bounds the concurrent transfers of the whole fleet and runs them, and the CPU work
of rebuilding models, on a small pool of worker threads.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from cloud.sim.download import fetch_into
from shared.codec import decompress, delta_decode
from shared.documents import Release
from shared.verify import check_bytes

__all__ = ["Downloads", "ModelCache", "check_bytes", "rebuild_delta", "rebuild_full"]

T = TypeVar("T")


def rebuild_full(raw: bytes, release: Release) -> bytes:
    target = release.target
    data = decompress(raw, target.size)
    check_bytes(data, target.size, target.sha256, "decompressed model")
    return data


def rebuild_delta(base: bytes, raw: bytes, release: Release) -> bytes:
    target = release.target
    data = delta_decode(base, raw, target.size)
    check_bytes(data, target.size, target.sha256, "model rebuilt from the delta")
    return data


class ModelCache:
    """Verified model bytes by sha256, least recently used out; `pin` keeps one for good."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._pinned: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def pin(self, sha256: str, data: bytes) -> None:
        with self._lock:
            self._pinned[sha256] = data

    def get(self, sha256: str) -> bytes | None:
        with self._lock:
            if sha256 in self._pinned:
                return self._pinned[sha256]
            data = self._items.get(sha256)
            if data is not None:
                self._items.move_to_end(sha256)
            return data

    def put(self, sha256: str, data: bytes) -> None:
        with self._lock:
            if sha256 in self._pinned or sha256 in self._items:
                return  # the device drops its copy; the shared one stays
            self._items[sha256] = data
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)


class Downloads:
    """At most `concurrent` transfers at a time for the whole fleet, on worker threads."""

    def __init__(self, loop: asyncio.AbstractEventLoop, concurrent: int, timeout_s: float) -> None:
        self._loop = loop
        self._slots = asyncio.Semaphore(concurrent)
        self._pool = ThreadPoolExecutor(max_workers=concurrent + 2, thread_name_prefix="sim-io")
        self._timeout_s = timeout_s

    async def fetch(
        self,
        buf: bytearray,
        url: str,
        max_length: int,
        *,
        stop_at: int | None,
        progress: Callable[[int], None],
    ) -> None:
        """Extend `buf` from `url` (resuming); `progress` runs on the event loop thread."""

        def report(done: int) -> None:
            self._loop.call_soon_threadsafe(progress, done)

        async with self._slots:
            await self._loop.run_in_executor(
                self._pool,
                lambda: fetch_into(
                    buf,
                    url,
                    max_length,
                    timeout_s=self._timeout_s,
                    stop_at=stop_at,
                    progress=report,
                ),
            )

    async def work(self, fn: Callable[[], T]) -> T:
        """CPU work (decompression, hashing) off the event loop thread."""
        return await self._loop.run_in_executor(self._pool, fn)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
