"""A reconnecting Petrel client resumes a 10,000-message stream with no gap and no duplicate,
through a reset in the middle of a frame and a stall longer than its pong timeout; the policy's
other half: a refused handshake (403) ends the client with the reason, and attempts stop after
max_attempts failures. Sends between connections raise Reconnecting, or are queued and sent on
the next open.

The server is Petrel (Python bindings) with a replay ring: each connection's on_open resumes it
after the id the client presents (`Last-Event-ID` / `last_event_id=`). Run by tools/test.sh.
"""
from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Iterator

import pytest

import petrel
import petrel.asyncio
from faultproxy import FaultProxy

TOPIC = "ticks"
N = 10_000
PAD = "x" * 150  # about 180 bytes a message: a reset after an odd count lands inside a frame


class Feed:
    """A Petrel server publishing N stamped messages to TOPIC once `go` is set."""

    def __init__(self) -> None:
        self.opens: list[int | None] = []
        self.received: list[str] = []
        self.server = petrel.Server("127.0.0.1", 0, threads=1, replay=N + 10, compression=False,
                                    on_open=self.on_open, on_message=lambda c, m: self.received.append(str(m)))
        self.server.start()
        self.go = threading.Event()
        self.published = 0
        self.thread = threading.Thread(target=self.publish, daemon=True)
        self.thread.start()

    def on_open(self, conn: petrel.Connection) -> None:
        after = conn.last_event_id
        self.opens.append(after)
        if after is None:
            conn.subscribe(TOPIC)
        else:
            assert conn.subscribe_after(TOPIC, after), f"the ring lost what came after {after}"

    def publish(self) -> None:
        self.go.wait()
        for i in range(N):
            self.server.publish(TOPIC, '{"id":{{id}},"pad":"' + PAD + '"}', stamp_id=True)
            self.published += 1
            if i % 100 == 99:
                time.sleep(0.02)  # about 5,000 a second: the faults land mid-stream

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def feed() -> Iterator[Feed]:
    f = Feed()
    yield f
    f.close()


def test_resume_through_reset_and_stall(feed: Feed) -> None:
    states: list[tuple[str, int, float, str]] = []
    with FaultProxy(feed.server.port) as proxy:
        client = petrel.connect(
            f"ws://127.0.0.1:{proxy.port}/feed", compression=False, ping_interval=0.3, ping_timeout=0.4,
            reconnect=petrel.Reconnect(initial_delay=0.05, max_delay=0.5),
            on_state=lambda *s: states.append(s))
        ids: list[int] = []
        feed.go.set()
        reset_done = stall_done = False
        deadline = time.monotonic() + 60
        while len(ids) < N and time.monotonic() < deadline:
            message = client.recv(timeout=20)
            event_id = json.loads(message)["id"]
            ids.append(event_id)
            client.last_event_id = event_id
            if not reset_done and len(ids) == 2_000:
                proxy.reset_after(1_037)
                reset_done = True
            elif not stall_done and len(ids) == 6_000:
                proxy.stall(1.5)  # silence past ping interval + pong timeout: the client gives up on it
                stall_done = True
        client.close()
        client.destroy()
    assert ids == list(range(1, N + 1)), "a gap or a duplicate"
    kinds = [s[0] for s in states]
    assert kinds.count("reconnecting") >= 2, states
    assert kinds.count("open") >= 3, states
    # Each reconnect presented the last id the client had: the server resumed after it.
    assert feed.opens[0] is None and all(isinstance(a, int) and a > 0 for a in feed.opens[1:]), feed.opens
    lost = [s for s in states if s[0] == "reconnecting"]
    assert any("no pong" in s[3] for s in lost), lost


def test_asyncio_resume_through_reset_and_stall(feed: Feed) -> None:
    """The asyncio client: its messages come through callbacks, so the id it names is exact."""
    states: list[tuple[str, int, float, str]] = []

    async def main(proxy: FaultProxy) -> list[int]:
        ids: list[int] = []
        ws = await petrel.asyncio.connect(
            f"ws://127.0.0.1:{proxy.port}/feed", compression=False, ping_interval=0.3, ping_timeout=0.4,
            reconnect=petrel.Reconnect(initial_delay=0.05, max_delay=0.5), on_state=lambda *s: states.append(s))
        feed.go.set()
        while len(ids) < N:
            event_id = json.loads(await asyncio.wait_for(ws.recv(), 20))["id"]
            ids.append(event_id)
            ws.last_event_id = event_id
            if len(ids) == 3_000:
                proxy.reset_after(2_011)
            elif len(ids) == 7_000:
                proxy.stall(1.5)
        await ws.close()
        return ids

    with FaultProxy(feed.server.port) as proxy:
        ids = asyncio.run(asyncio.wait_for(main(proxy), 60))
    assert ids == list(range(1, N + 1)), "a gap or a duplicate"
    assert [s[0] for s in states].count("reconnecting") >= 2, states
    assert states[-1][0] == "closed", states


def test_sends_between_connections(feed: Feed) -> None:
    with FaultProxy(feed.server.port) as proxy:
        refusing = petrel.connect(f"ws://127.0.0.1:{proxy.port}/", reconnect=petrel.Reconnect(initial_delay=2.0, jitter=0))
        queuing = petrel.connect(f"ws://127.0.0.1:{proxy.port}/",
                                 reconnect=petrel.Reconnect(initial_delay=0.3, jitter=0, queue_sends=True))
        proxy.cut()
        for c in (refusing, queuing):
            deadline = time.monotonic() + 5
            while c.state[0] != "reconnecting" and time.monotonic() < deadline:
                time.sleep(0.01)
            assert c.state[0] == "reconnecting"
        with pytest.raises(petrel.Reconnecting):
            refusing.send("lost")
        queuing.send("kept 1")
        queuing.send("kept 2")
        deadline = time.monotonic() + 5
        while feed.received[-2:] != ["kept 1", "kept 2"] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert feed.received == ["kept 1", "kept 2"]
        assert queuing.state == ("open", 1)
        for c in (refusing, queuing):
            c.close()
            c.destroy()


def test_a_refusal_ends_it_and_attempts_are_bounded() -> None:
    # 403 once the first connection is gone: the client ends with the reason, no more attempts.
    refuse = threading.Event()
    server = petrel.Server("127.0.0.1", 0, threads=1,
                           on_upgrade=lambda req: False if refuse.is_set() else None).start()
    states: list[tuple[str, int, float, str]] = []
    try:
        with FaultProxy(server.port) as proxy:
            client = petrel.connect(f"ws://127.0.0.1:{proxy.port}/", reconnect=petrel.Reconnect(initial_delay=0.05),
                                    on_state=lambda *s: states.append(s))
            refuse.set()
            proxy.cut()
            with pytest.raises(petrel.ConnectionClosed):
                client.recv(timeout=10)
            assert client.state == ("closed", 0)
            assert states[-1][0] == "closed" and "403" in states[-1][3], states
            assert [s[0] for s in states].count("connecting") == 1, states
            client.destroy()
    finally:
        server.close()

    # Nothing listening: max_attempts failures in a row, then the end.
    server = petrel.Server("127.0.0.1", 0, threads=1).start()
    states = []
    client = petrel.connect(f"ws://127.0.0.1:{server.port}/",
                            reconnect=petrel.Reconnect(initial_delay=0.02, max_delay=0.05, max_attempts=3),
                            on_state=lambda *s: states.append(s))
    server.close()
    with pytest.raises(petrel.ConnectionClosed):
        client.recv(timeout=10)
    assert [s[0] for s in states].count("connecting") == 3, states
    assert states[-1][0] == "closed" and states[-1][3].startswith("gave up after 3 attempts"), states
    client.destroy()
