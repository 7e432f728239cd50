"""The three stock servers (Swift with the feed, C and Python with --no-feed) on one real
redis-server, behind a real nginx (examples/cluster/cluster.py starts them all as child
processes on free loopback ports, each with its own config file, and stops them at the end).

Run by tools/test.sh after it has built the servers and libpetrel.so (PETREL_PREFIX).
"""
from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from pathlib import Path

import pytest
import websockets

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples" / "cluster"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster import NODES, Cluster  # noqa: E402
from clients import SEQUENCE, EventStreamClient, WebSocketClient  # noqa: E402

# 1,100 clients and nginx's two sockets per client: more files than a default soft limit of
# 1,024 (the children started below inherit this).
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (max(_soft, min(_hard, 16384)), _hard))


@pytest.fixture
def cluster():
    c = Cluster(tick_min=0.2, tick_max=0.2)
    c.start()
    yield c
    alive = {n: p.poll() is None for n, p in c.processes.items()}
    c.stop()
    print(c.logs() if not all(alive.values()) else "")


def wait(condition, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def first_messages(url: str, count: int) -> list[dict]:
    async with websockets.connect(url.replace("http", "ws", 1) + "stream", open_timeout=10) as ws:
        return [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(count)]


def test_ticks_published_on_one_node_reach_every_node_with_the_same_ids(cluster):
    """The Swift server publishes; the C and Python servers deliver the same ticks, same ids, same order."""
    async def all_nodes():
        return await asyncio.gather(*(first_messages(cluster.node_url(n), 12) for n in NODES))

    got = asyncio.run(all_nodes())
    # Each starts with its own snapshot, at whatever id it joined; from a common id on, the ticks match.
    ticks = [{m["id"]: m for m in msgs if m["type"] == "tick"} for msgs in got]
    common = sorted(set(ticks[0]) & set(ticks[1]) & set(ticks[2]))
    assert len(common) >= 6, f"too few ticks in common: {[sorted(t) for t in ticks]}"
    assert common == list(range(common[0], common[0] + len(common))), "ids are contiguous"
    for i in common:
        assert ticks[0][i] == ticks[1][i] == ticks[2][i]
    # Every node's prices are what the topic says: its snapshot, with the ticks after it applied
    # up to the last id in common, gives the same price for every stock on every node.
    at = common[-1]
    books = []
    for msgs in got:
        snapshot = msgs[0]
        assert snapshot["type"] == "snapshot" and snapshot["id"] < at
        first = msgs[1]["id"]
        assert first == snapshot["id"] + 1 or (snapshot["id"] == 0 and first % SEQUENCE == 1)
        book = {s["ticker"]: s["price"] for s in snapshot["stocks"]}
        for m in msgs[1:]:
            if m["id"] <= at:
                book[m["ticker"]] = m["price"]
        books.append(book)
    assert len(books[0]) == 40 and books[0] == books[1] == books[2]


def test_a_node_killed_mid_stream_its_clients_resume_on_the_others_without_gap_or_repeat(cluster):
    """1,000 WebSocket and 100 SSE clients through nginx; the C server is SIGKILLed mid-stream."""
    ws_clients = [WebSocketClient(f"w{i}") for i in range(1000)]
    sse_clients = [EventStreamClient(f"s{i}") for i in range(100)]
    everyone = ws_clients + sse_clients

    async def scenario():
        stop = asyncio.Event()
        tasks = [asyncio.create_task(c.run(cluster.url, stop)) for c in ws_clients]
        tasks += [asyncio.create_task(c.run("127.0.0.1", cluster.port, stop)) for c in sse_clients]

        async def until(condition, timeout, what):
            deadline = time.monotonic() + timeout
            while not condition():
                assert time.monotonic() < deadline, f"timed out waiting for {what}"
                await asyncio.sleep(0.1)

        await until(lambda: all(c.messages >= 2 for c in everyone), 90, "every client's snapshot and a tick")
        on_c = cluster.health("c")["connections"]
        await asyncio.sleep(2)
        for c in everyone:
            c.reconnects = 0  # count only what the kill causes
        cluster.kill("c")
        await asyncio.sleep(5)
        # The cut: the newest id now; every client must reach it.
        cut = cluster.health("swift")["lastEventId"]
        await until(lambda: all((c.last or 0) >= cut for c in everyone), 30, f"every client at {cut}")
        stop.set()
        await asyncio.gather(*tasks)
        return on_c

    on_c = asyncio.run(scenario())
    errors = [f"{c.name}: {e}" for c in everyone for e in c.errors]
    assert not errors, f"{len(errors)} errors, first: {errors[:10]}"
    moved_ws = sum(1 for c in ws_clients if c.reconnects)
    moved_sse = sum(1 for c in sse_clients if c.reconnects)
    print(f"the C server had {on_c}; reconnected and resumed: {moved_ws} WebSocket, {moved_sse} SSE clients")
    # Round-robin gave the C server about a third of them; each of those came back and resumed.
    assert moved_ws >= on_c["websocket"] >= 100 and moved_sse >= on_c["sse"] >= 10


def test_redis_restarted_without_its_data_resuming_clients_take_a_snapshot(cluster):
    """A new Redis has a new epoch: the nodes close their subscribers (1012); a client that comes
    back with its old id is too old for the new history and gets a snapshot of the new epoch."""
    async def scenario():
        url = cluster.node_url("python").replace("http", "ws", 1) + "stream"
        async with websockets.connect(url, open_timeout=10) as ws:
            last = None
            while True:
                m = json.loads(await asyncio.wait_for(ws.recv(), 10))
                last = m["id"]
                if m["type"] == "tick":
                    break
            cluster.restart_redis()
            try:
                while True:
                    last = json.loads(await asyncio.wait_for(ws.recv(), 20))["id"]
            except websockets.exceptions.ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd else None
        # The feed publishes again once its link is back; the node has seen a tick of the new epoch.
        wait(lambda: cluster.health("python")["lastEventId"] >> 40 != last >> 40, 30, "a tick of the new epoch")
        async with websockets.connect(f"{url}?last_event_id={last}", open_timeout=10) as ws:
            again = json.loads(await asyncio.wait_for(ws.recv(), 10))
        return last, code, again

    last, code, again = asyncio.run(scenario())
    assert code == 1012
    assert again["type"] == "snapshot", "an id of the lost history is too old: snapshot"
    assert again["id"] >> 40 != last >> 40, "the new history has a new epoch"
