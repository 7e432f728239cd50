"""Slow readers behind a bandwidth cap: what the server holds for each stays within its
backpressure limits, the topic's slow-consumer policy applies to them, and the other clients
of the topic are not slowed. Run by tools/test.sh."""
from __future__ import annotations

import threading
import time

import pytest

import petrel
from faultproxy import FaultProxy

TOPIC = "ticks"
MESSAGES = 600
SIZE = 16_000  # 9.6 MB to each reader: more than the kernel's buffers can hide (4 MiB send buffer)
MAX_BACKPRESSURE = 64 * 1024
MAX_QUEUED = 64
FAST, SLOW = 4, 4
RATE = 300  # messages a second: 4.8 MB/s to each reader
CAP = 20_000  # bytes a second to each slow reader: 1/50 of what the topic sends them


class Reader(threading.Thread):
    """A client that counts what it receives, and how it ended."""

    def __init__(self, port: int, path: str) -> None:
        super().__init__(daemon=True)
        self.client = petrel.connect(f"ws://127.0.0.1:{port}{path}", compression=False)
        self.count = 0
        self.last = 0.0
        self.ordered = True
        self.closed: tuple[int | None, str] = (None, "")

    def run(self) -> None:
        previous = -1
        try:
            for message in self.client:
                n = int(str(message)[:8])
                self.ordered = self.ordered and n > previous
                previous = n
                self.count += 1
                self.last = time.monotonic()
            self.closed = self.client.close_status()
        except petrel.PetrelError:
            pass  # closed, or destroyed by the test's end


@pytest.mark.parametrize("policy", ["close", "drop_oldest"])
def test_slow_readers_are_bounded_and_do_not_slow_the_others(policy: str) -> None:
    opened = threading.Semaphore(0)
    conns: list[petrel.Connection] = []
    paths: dict[int, str] = {}
    ends: list[tuple[str, int, str]] = []  # (path, code, reason) as the server closed each

    def on_open(c: petrel.Connection) -> None:
        paths[c.id] = c.path or ""
        c.subscribe(TOPIC)
        conns.append(c)
        opened.release()

    server = petrel.Server("127.0.0.1", 0, threads=1, compression=False, max_backpressure=MAX_BACKPRESSURE,
                           slow_consumer=policy, max_queued=MAX_QUEUED, on_open=on_open,
                           on_close=lambda c, code, reason: ends.append((paths[c.id], code, reason)))
    server.start()
    with FaultProxy(server.port, bandwidth=CAP) as proxy:
        try:
            fast = [Reader(server.port, "/fast") for _ in range(FAST)]
            slow = [Reader(proxy.port, "/slow") for _ in range(SLOW)]
            for _ in range(FAST + SLOW):
                assert opened.acquire(timeout=10)
            for r in fast + slow:
                r.start()
            peak = 0
            start = time.monotonic()
            body = "x" * (SIZE - 8)
            for i in range(MESSAGES):
                server.publish(TOPIC, f"{i:08d}" + body)
                if i % 50 == 49:
                    time.sleep(max(0.0, start + (i + 1) / RATE - time.monotonic()))
                if i % 100 == 0:
                    for c in list(conns):
                        try:
                            peak = max(peak, c.buffered_amount)
                        except petrel.PetrelError:
                            pass  # closed by the policy
            published = time.monotonic() - start
            deadline = time.monotonic() + 20
            while any(r.count < MESSAGES for r in fast) and time.monotonic() < deadline:
                time.sleep(0.01)
            fast_done = max(r.last for r in fast) - start
            # The fast readers got everything, in order, about as soon as it was published.
            assert all(r.count == MESSAGES and r.ordered for r in fast), [(r.count, r.closed) for r in fast]
            assert fast_done < published + 2.0, (fast_done, published)
            # What the server holds for a connection: its buffer up to max_backpressure, the frame
            # that crossed it, and at most max_queued more messages before the policy applies.
            bound = MAX_BACKPRESSURE + (MAX_QUEUED + 1) * (SIZE + 16)
            print(f"peak held for one connection: {peak} bytes (bound {bound})")
            assert 0 < peak <= bound, peak
            if policy == "close":
                # The server closes each slow one (1008) and frees it; its client learns of it only
                # once the capped path has carried what was already in flight.
                deadline = time.monotonic() + 10
                while len(ends) < SLOW and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert sorted(e[0] for e in ends) == ["/slow"] * SLOW, ends
                assert all(e[1] == 1008 and "too slow" in e[2] for e in ends), ends
                assert server.connection_count == FAST
                assert all(r.count < MESSAGES for r in slow)
            else:
                # Dropping the oldest: still open, fewer messages than published, none out of order.
                time.sleep(0.5)
                assert ends == [] and server.connection_count == FAST + SLOW
                for r in slow:
                    assert r.closed[0] is None and r.ordered
                    assert r.count < MESSAGES
        finally:
            for r in fast + slow:
                r.client.destroy()
            server.close()
