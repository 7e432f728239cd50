"""A black hole (the path accepts, then forwards nothing and answers nothing, not even a reset):
both ends find the dead peer by its missing pong, within the ping interval plus the pong timeout
(plus the timer's resolution), close with 1011 and free the connection: Petrel to Petrel, a
Petrel client to a websockets server and a websockets client to a Petrel server; a reconnecting
client then comes back once the path heals. Run by tools/test.sh."""
from __future__ import annotations

import asyncio
import threading
import time

import pytest
import websockets
from websockets.sync.client import connect as ws_connect

import petrel
from faultproxy import FaultProxy

INTERVAL, TIMEOUT = 0.4, 0.4
# The ping goes out after INTERVAL of silence and the verdict after TIMEOUT more; each timer
# ticks at 100 ms (server) or 50 ms (client), and this machine is shared: a second of slack.
BOUND = INTERVAL + TIMEOUT + 1.0


def black_hole_under(client: petrel.ClientConnection, proxy: FaultProxy) -> tuple[float, float, int | None, str]:
    """Partitions the proxy under an open client and waits for the client to find out: the
    partition's time, when the client's connection ended, and its code and reason."""
    time.sleep(0.2)
    proxy.partition()
    start = time.monotonic()
    try:
        client.recv(timeout=10)
    except petrel.ConnectionClosed:
        pass
    return (start, time.monotonic(), *client.close_status())


def wait_for(key: str, table: dict[str, object]) -> None:
    deadline = time.monotonic() + 10
    while key not in table and time.monotonic() < deadline:
        time.sleep(0.01)


def test_both_ends_detect_a_black_hole() -> None:
    closed: dict[str, tuple[float, int, str]] = {}
    opened = threading.Event()
    server = petrel.Server("127.0.0.1", 0, threads=1, ping_interval=INTERVAL, ping_timeout=TIMEOUT,
                           on_open=lambda c: opened.set(),
                           on_close=lambda c, code, reason: closed.__setitem__("server", (time.monotonic(), code, reason)))
    server.start()
    try:
        with FaultProxy(server.port) as proxy:
            client = petrel.connect(f"ws://127.0.0.1:{proxy.port}/", ping_interval=INTERVAL, ping_timeout=TIMEOUT)
            assert opened.wait(5)
            start, at, code, reason = black_hole_under(client, proxy)
            closed["client"] = (at, code, reason)  # type: ignore[assignment]
            wait_for("server", closed)  # type: ignore[arg-type]
            assert server.connection_count == 0
            for side in ("client", "server"):
                at, code, reason = closed[side]
                assert code == 1011 and "no pong" in reason, (side, code, reason)
                assert at - start <= BOUND, f"{side} took {at - start:.2f} s"
            client.destroy()
    finally:
        server.close()


def test_a_reconnecting_client_comes_back_after_the_partition_heals() -> None:
    server = petrel.Server("127.0.0.1", 0, threads=1, on_message=lambda c, m: c.send(m)).start()
    states: list[tuple[str, int, float, str]] = []
    try:
        with FaultProxy(server.port) as proxy:
            client = petrel.connect(f"ws://127.0.0.1:{proxy.port}/", ping_interval=INTERVAL, ping_timeout=TIMEOUT,
                                    open_timeout=1.0,
                                    reconnect=petrel.Reconnect(initial_delay=0.1, max_delay=0.4),
                                    on_state=lambda *s: states.append(s))
            proxy.partition()
            deadline = time.monotonic() + 5
            while not any(s[0] == "reconnecting" for s in states) and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(1.5)  # attempts into the black hole time out (open_timeout) and are tried again
            proxy.heal()
            deadline = time.monotonic() + 10
            while client.state[0] != "open" and time.monotonic() < deadline:
                time.sleep(0.01)
            assert client.state[0] == "open", states
            assert [s[0] for s in states].count("connecting") >= 2, states
            client.send("back")
            assert client.recv(timeout=5) == "back"
            client.close()
            client.destroy()
    finally:
        server.close()


def test_petrel_client_and_websockets_server_both_detect_it() -> None:
    """A websockets server with its keepalive at the same interval: both ends see 1011."""
    ended: dict[str, tuple[float, int | None]] = {}
    ready = threading.Event()
    box: dict[str, object] = {}

    async def handler(ws: websockets.ServerConnection) -> None:
        try:
            async for _ in ws:
                pass
        except websockets.ConnectionClosed:
            pass
        ended["server"] = (time.monotonic(), ws.close_code)

    async def main() -> None:
        # websockets waits close_timeout (10 s) for the TCP close after failing the connection;
        # Petrel closes at once: its wait is set short here so that both are judged alike.
        async with websockets.serve(handler, "127.0.0.1", 0, ping_interval=INTERVAL, ping_timeout=TIMEOUT,
                                    close_timeout=0.2) as server:
            box["port"] = server.sockets[0].getsockname()[1]
            box["stop"] = asyncio.get_running_loop().create_future()
            ready.set()
            await box["stop"]  # type: ignore[misc]

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        with FaultProxy(box["port"]) as proxy:  # type: ignore[arg-type]
            client = petrel.connect(f"ws://127.0.0.1:{proxy.port}/", ping_interval=INTERVAL, ping_timeout=TIMEOUT)
            start, at, code, reason = black_hole_under(client, proxy)
            assert code == 1011 and "no pong" in reason
            assert at - start <= BOUND
            wait_for("server", ended)  # type: ignore[arg-type]
            at, server_code = ended["server"]
            # websockets reports the code it received: none came, so 1006 (it sent 1011).
            assert server_code in (1006, 1011) and at - start <= BOUND, (server_code, at - start)
            client.destroy()
    finally:
        loop.call_soon_threadsafe(box["stop"].set_result, None)  # type: ignore[union-attr]
        thread.join(10)


def test_websockets_client_and_petrel_server_both_detect_it() -> None:
    closed: dict[str, tuple[float, int, str]] = {}
    server = petrel.Server("127.0.0.1", 0, threads=1, ping_interval=INTERVAL, ping_timeout=TIMEOUT,
                           on_close=lambda c, code, reason: closed.__setitem__("server", (time.monotonic(), code, reason)))
    server.start()
    try:
        with FaultProxy(server.port) as proxy:
            with ws_connect(f"ws://127.0.0.1:{proxy.port}/", ping_interval=INTERVAL, ping_timeout=TIMEOUT,
                            close_timeout=0.2) as ws:
                time.sleep(0.2)
                proxy.partition()
                start = time.monotonic()
                with pytest.raises(websockets.ConnectionClosedError):
                    ws.recv(timeout=10)
                assert time.monotonic() - start <= BOUND
                assert ws.close_code in (1006, 1011)
            wait_for("server", closed)  # type: ignore[arg-type]
            at, code, reason = closed["server"]
            assert code == 1011 and "no pong" in reason and at - start <= BOUND, (code, reason, at - start)
    finally:
        server.close()
