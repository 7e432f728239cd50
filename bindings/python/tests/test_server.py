"""Petrel's Python server against the websockets library's client, and its own behaviour."""
import asyncio
import logging
import threading
import time

import pytest
import websockets

import petrel

SIZES = [0, 1, 125, 126, 65535, 65536, 1 << 20, 16 << 20]


@pytest.mark.parametrize("compression", ["deflate", None])
def test_websockets_client_echo(echo_server, compression):
    async def run():
        url = f"ws://127.0.0.1:{echo_server.port}/"
        async with websockets.connect(url, compression=compression, max_size=None) as ws:
            for size in SIZES:
                for message in (bytes(i & 0xFF for i in range(size)), "é" * (size // 2)):
                    await ws.send(message)
                    assert await ws.recv() == message
            await ws.send("close-me")
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd.code == 4002 and closed.value.rcvd.reason == "requested"

    asyncio.run(run())


@pytest.mark.parametrize("setting,keeps_context", [(True, False), ("takeover", True)])
def test_compression_context_takeover_is_a_choice(setting, keeps_context):
    server = petrel.Server("127.0.0.1", 0, threads=1, compression=setting)
    server.on_message(lambda conn, message: conn.send(message))
    with server:
        async def run():
            async with websockets.connect(f"ws://127.0.0.1:{server.port}/", compression="deflate") as ws:
                (extension,) = ws.protocol.extensions
                assert extension.remote_no_context_takeover is not keeps_context
                for i in range(20):
                    tick = '{"ticker":"AAPL","price":%d.25,"change":0.5}' % (180 + i)
                    await ws.send(tick)
                    assert await ws.recv() == tick
        asyncio.run(run())
    with pytest.raises(ValueError):
        petrel.Server("127.0.0.1", 0, compression="sometimes")


def test_close_code_from_client_reaches_on_close():
    closes = []
    done = threading.Event()
    server = petrel.Server("127.0.0.1", 0, threads=1)
    server.on_close(lambda conn, code, reason: (closes.append((code, reason)), done.set()))
    with server:
        async def run():
            async with websockets.connect(f"ws://127.0.0.1:{server.port}/") as ws:
                await ws.close(4001, "bye")
        asyncio.run(run())
        assert done.wait(5)
    assert closes == [(4001, "bye")]


def test_request_details_in_on_open():
    seen = {}
    opened = threading.Event()
    server = petrel.Server("127.0.0.1", 0, threads=1)

    @server.on_open
    def on_open(conn):
        seen.update(path=conn.path, query=conn.query, auth=conn.header("authorization"), peer=conn.peer_address)
        opened.set()

    with server:
        async def run():
            async with websockets.connect(f"ws://127.0.0.1:{server.port}/feed?x=1",
                                          additional_headers={"Authorization": "Bearer t"}):
                assert opened.wait(5)
        asyncio.run(run())
    assert seen["path"] == "/feed" and seen["query"] == "x=1" and seen["auth"] == "Bearer t"
    assert seen["peer"].startswith("127.0.0.1:")


def test_publish_from_8_threads_to_100_subscribers():
    server = petrel.Server("127.0.0.1", 0, threads=2, max_queued=100_000)
    subscribed = []
    everyone = threading.Event()

    def on_open(conn):
        conn.subscribe("ticks")
        subscribed.append(conn.id)  # on the one dispatcher thread
        if len(subscribed) == 100:
            everyone.set()

    server.on_open(on_open)
    with server:
        clients = [petrel.connect(f"ws://127.0.0.1:{server.port}/", compression=False) for _ in range(100)]
        # A client's connect returns at the handshake; its on_open (the subscription) comes after.
        assert everyone.wait(10)
        per_thread = 50

        def publisher(t):
            for i in range(per_thread):
                server.publish("ticks", f"{t}:{i}")

        threads = [threading.Thread(target=publisher, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for c in clients:
            nxt = [0] * 8
            for _ in range(8 * per_thread):
                t, i = map(int, c.recv(timeout=10).split(":"))
                assert i == nxt[t], "per-publisher order"
                nxt[t] += 1
            c.destroy()


def test_backpressure_is_surfaced():
    """A client that never reads: sends fail with Backpressure instead of growing without bound."""
    import socket

    server = petrel.Server("127.0.0.1", 0, threads=1, max_backpressure=64 * 1024)
    opened = threading.Event()
    conns = []
    server.on_open(lambda conn: (conns.append(conn), opened.set()))
    with server:
        s = socket.create_connection(("127.0.0.1", server.port))
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        assert opened.wait(5)
        with pytest.raises(petrel.Backpressure):
            for _ in range(10_000):
                conns[0].send(b"x" * 16384)
        # What is held stays bounded: the limit plus the one send that crossed it, with the frame
        # headers of what is queued (the kernel's socket buffer may have absorbed the rest, so it
        # can also be near 0).
        assert conns[0].buffered_amount <= 64 * 1024 + 16384 + 64
        s.close()


def test_bad_arguments():
    with pytest.raises(ValueError):
        petrel.Server("127.0.0.1", 70000)
    with pytest.raises(TypeError):
        petrel.Server(8080)
    with pytest.raises(ValueError):
        petrel.Server("127.0.0.1", 0, slow_consumer="ignore")
    server = petrel.Server("127.0.0.1", 0, threads=1)
    with server:
        with pytest.raises(TypeError):
            server.publish("t", 42)
        with pytest.raises(TypeError):
            server.publish(42, "x")
        with pytest.raises(petrel.InvalidState):
            server.connection(999).send("x")
    with pytest.raises(petrel.ConnectFailed):
        petrel.connect("http://127.0.0.1/")
    with pytest.raises(TypeError):
        petrel.connect(b"ws://127.0.0.1/")


def test_stop_with_live_connections_returns_within_grace():
    server = petrel.Server("127.0.0.1", 0, threads=2)
    server.start()
    clients = [petrel.connect(f"ws://127.0.0.1:{server.port}/") for _ in range(10)]
    start = time.monotonic()
    server.stop(grace=1.0)
    assert time.monotonic() - start < 1.5
    for c in clients:
        with pytest.raises(petrel.ConnectionClosed) as closed:
            c.recv(timeout=5)
        assert closed.value.code == 1001
        c.destroy()
    server.close()


def test_exception_in_callback_is_logged_and_serving_goes_on(caplog):
    server = petrel.Server("127.0.0.1", 0, threads=1)

    @server.on_message
    def handler(conn, message):
        if message == "boom":
            raise RuntimeError("user bug")
        conn.send(message)

    with server, caplog.at_level(logging.ERROR, logger="petrel"):
        with petrel.connect(f"ws://127.0.0.1:{server.port}/") as ws:
            ws.send("boom")
            ws.send("still here")
            assert ws.recv(timeout=5) == "still here"
    assert any("user bug" in r.getMessage() or "user bug" in str(r.exc_info) for r in caplog.records)


def test_stop_from_an_http_handler_ends_the_dispatcher():
    """A stop that begins on a loop thread (on_http) still ends the event queue: the dispatcher
    hands out the last events and exits, and close() returns."""
    closes = []
    server = petrel.Server("127.0.0.1", 0, threads=2)
    server.on_close(lambda conn, code, reason: closes.append(code))

    @server.on_http
    def http(request):
        if request.path == "/stop":
            server.stop(0.5)
            return (200, "text/plain", "stopping\n")
        return None

    server.start()
    port = server.port

    async def run():
        async with websockets.connect(f"ws://127.0.0.1:{port}/room?user=a") as ws:
            import urllib.request
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/stop", timeout=5).read())
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)

    asyncio.run(run())
    server._dispatcher.join(timeout=5)
    assert not server._dispatcher.is_alive()
    assert closes == [1001]
    server.close()


def test_open_event_carries_the_target_even_after_the_connection_closed():
    seen = []
    done = threading.Event()
    server = petrel.Server("127.0.0.1", 0, threads=1)

    @server.on_open
    def opened(conn):
        time.sleep(0.3)  # the client is gone by now
        seen.append((conn.path, conn.query))
        done.set()

    with server:
        async def run():
            async with websockets.connect(f"ws://127.0.0.1:{server.port}/feed/ticks?since=42"):
                pass
        asyncio.run(run())
        assert done.wait(5)
    assert seen == [("/feed/ticks", "since=42")]
