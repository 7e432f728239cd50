"""Every message arrives intact however TCP cuts it: through the fault proxy delivering one byte
per send, or sends of 1 to 64 bytes, with and without compression, Petrel to Petrel, the
`websockets` client to a Petrel server, and a Petrel client to a `websockets` server; and added
latency shows in the measured round trip.

Run by tools/test.sh; uses the Python bindings (PETREL_LIBRARY) and websockets.
"""
from __future__ import annotations

import asyncio
import random
import threading
from typing import Iterator

import pytest
import websockets
from websockets.sync.client import connect as ws_connect

import petrel
from faultproxy import FaultProxy

SIZES = [0, 1, 125, 126, 127, 4096, 65535, 65536, 70_000]


def messages(seed: int) -> list[str | bytes]:
    """Text and binary of each size; random bytes, so compression keeps them large."""
    rng = random.Random(seed)
    out: list[str | bytes] = []
    for n in SIZES:
        out.append("".join(rng.choice("abcdefghijklmnopqrstuvwxyzé€") for _ in range(n)))
        out.append(rng.randbytes(n))
    return out


@pytest.fixture(scope="module")
def petrel_echo() -> Iterator[int]:
    server = petrel.Server("127.0.0.1", 0, threads=1, on_message=lambda c, m: c.send(m)).start()
    yield server.port
    server.close()


@pytest.fixture(scope="module")
def websockets_echo() -> Iterator[int]:
    """A websockets server (compression on) echoing, on a thread of its own."""
    ready = threading.Event()
    box: dict[str, object] = {}

    async def echo(ws: websockets.ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async def main() -> None:
        async with websockets.serve(echo, "127.0.0.1", 0, max_size=None) as server:
            box["port"] = server.sockets[0].getsockname()[1]
            box["stop"] = asyncio.get_running_loop().create_future()
            ready.set()
            await box["stop"]  # type: ignore[misc]

    loop = asyncio.new_event_loop()
    box["loop"] = loop
    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    yield box["port"]  # type: ignore[misc]
    loop.call_soon_threadsafe(box["stop"].set_result, None)  # type: ignore[union-attr]
    thread.join(10)


@pytest.mark.parametrize("chunking", ["one", "random"])
@pytest.mark.parametrize("compression", [True, False])
def test_petrel_to_petrel(petrel_echo: int, chunking: str, compression: bool) -> None:
    with FaultProxy(petrel_echo, chunking=chunking) as proxy:
        with petrel.connect(f"ws://127.0.0.1:{proxy.port}/", compression=compression) as ws:
            for m in messages(1):
                ws.send(m)
                assert ws.recv(timeout=60) == m
            ws.close()


@pytest.mark.parametrize("chunking", ["one", "random"])
def test_websockets_client_to_petrel(petrel_echo: int, chunking: str) -> None:
    with FaultProxy(petrel_echo, chunking=chunking) as proxy:
        with ws_connect(f"ws://127.0.0.1:{proxy.port}/", max_size=None, open_timeout=30) as ws:
            for m in messages(2):
                ws.send(m)
                assert ws.recv(timeout=60) == m


@pytest.mark.parametrize("chunking", ["one", "random"])
def test_petrel_client_to_websockets(websockets_echo: int, chunking: str) -> None:
    with FaultProxy(websockets_echo, chunking=chunking) as proxy:
        with petrel.connect(f"ws://127.0.0.1:{proxy.port}/") as ws:
            for m in messages(3):
                ws.send(m)
                assert ws.recv(timeout=60) == m
            ws.close()


def test_latency_is_measured(petrel_echo: int) -> None:
    """100 ms each way: the ping's round trip says at least 200 ms, and messages still echo."""
    with FaultProxy(petrel_echo, latency=0.1) as proxy:
        with petrel.connect(f"ws://127.0.0.1:{proxy.port}/") as ws:
            ws.send("hello")
            assert ws.recv(timeout=10) == "hello"
            ws.ping()
            for _ in range(300):
                if ws.round_trip_time is not None:
                    break
                threading.Event().wait(0.01)
            rtt = ws.round_trip_time
            assert rtt is not None and 0.2 <= rtt < 1.0, rtt

