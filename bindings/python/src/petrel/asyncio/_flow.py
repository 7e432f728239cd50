"""The asyncio client's receive flow control (`max_queue`).

Messages are counted where they arrive (the client loop thread, inside on_message) and where
recv() takes them (the event loop). Reading is paused from the loop thread as soon as more than
`high` messages wait (as `websockets` counts), so the limit holds exactly however busy the
event loop is (a message callback may take the GIL thousands of times before the event loop
runs once); it is resumed from recv() once no more than a quarter of `high` wait. Each counter
has one writer; each change of `paused`, with its call into the library, is made under the
lock, so the calls reach the library in the order the flag changed. (The server counts on
its event loop: its dispatcher hands over at most 4 batches ahead, see _serve._Gate.)
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
        if not self.paused and self.high is not None and self.delivered - self.taken > self.high:
            self.arrived_over()

    def arrived_over(self) -> None:
        """More than `high` wait: pause (the arriving thread)."""
        with self._lock:
            if not self.paused:
                self.paused = self._pause(1)

    def took(self) -> None:
        """recv() took one (the event loop)."""
        self.taken += 1
        if self.paused:
            self.took_while_paused()

    def took_while_paused(self) -> None:
        """After `taken` has counted it: resume once no more than `low` wait (the event loop)."""
        if self.delivered - self.taken <= self.low:
            with self._lock:
                if self.paused and self.delivered - self.taken <= self.low:
                    self._pause(0)
                    self.paused = False

    def waiting(self) -> int:
        return self.delivered - self.taken
