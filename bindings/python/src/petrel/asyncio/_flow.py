"""The receive side's flow control (`max_queue`), shared by the client and the server.

Messages are counted where they arrive (a Petrel thread: the client loop, or the server's
dispatcher) and where recv() takes them (the event loop). Reading is paused from the arriving
side as soon as `high` messages wait, so the limit holds however busy the event loop is; it is
resumed from recv() once no more than a quarter of that wait. Each counter has one writer; each
change of `paused`, with its call into the library, is made under the lock, so the calls reach
the library in the order the flag changed.
"""
from __future__ import annotations

import threading
from typing import Callable, Optional


class ReadFlow:
    __slots__ = ("high", "low", "delivered", "taken", "paused", "_lock", "_pause")

    def __init__(self, high: Optional[int], pause: Callable[[int], bool]) -> None:
        self.high = high
        self.low = (high or 0) // 4
        self.delivered = 0
        self.taken = 0
        self.paused = False
        self._lock = threading.Lock()
        self._pause = pause  # pause(1) / pause(0): True when the library took the call

    def arrived(self) -> None:
        """One more message waits (the arriving thread)."""
        self.delivered += 1
        high = self.high
        if high is not None and not self.paused and self.delivered - self.taken >= high:
            with self._lock:
                if not self.paused:
                    self.paused = self._pause(1)

    def took(self) -> None:
        """recv() took one (the event loop)."""
        self.taken += 1
        if self.paused and self.delivered - self.taken <= self.low:
            with self._lock:
                if self.paused and self.delivered - self.taken <= self.low:
                    self._pause(0)
                    self.paused = False

    def waiting(self) -> int:
        return self.delivered - self.taken
