"""Petrel's Python client against the websockets library's server."""
import asyncio
import threading

import pytest
import websockets

import petrel


@pytest.fixture(params=["deflate", None])
def ws_server(request):
    """A websockets echo server on its own thread; "close:CODE" makes it close with that code."""
    ready = threading.Event()
    state = {}

    async def handler(ws):
        async for message in ws:
            if isinstance(message, str) and message.startswith("close:"):
                await ws.close(int(message[6:]), "requested")
                return
            await ws.send(message)

    async def main():
        async with websockets.serve(handler, "127.0.0.1", 0, compression=request.param, max_size=None) as srv:
            state["port"] = srv.sockets[0].getsockname()[1]
            state["stop"] = asyncio.get_running_loop().create_future()
            state["loop"] = asyncio.get_running_loop()
            ready.set()
            await state["stop"]

    t = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    t.start()
    assert ready.wait(5)
    yield state["port"]
    state["loop"].call_soon_threadsafe(state["stop"].set_result, None)
    t.join(5)


def test_petrel_client_echo(ws_server):
    with petrel.connect(f"ws://127.0.0.1:{ws_server}/", max_message_size=32 << 20) as ws:
        for size in [0, 1, 125, 126, 65535, 65536, 1 << 20, 16 << 20]:
            for message in (bytes(i & 0xFF for i in range(size)), "é" * (size // 2)):
                ws.send(message)
                assert ws.recv(timeout=20) == message
        ws.send("close:4003")
        with pytest.raises(petrel.ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert closed.value.code == 4003 and closed.value.reason == "requested"


def test_petrel_client_closes_with_code(ws_server):
    with petrel.connect(f"ws://127.0.0.1:{ws_server}/") as ws:
        ws.send("hi")
        assert ws.recv(timeout=5) == "hi"
        ws.close(4004, "client bye")
        assert list(ws) == []
        assert ws.close_status() == (4004, "client bye")


def test_iteration_and_timeout(ws_server):
    with petrel.connect(f"ws://127.0.0.1:{ws_server}/") as ws:
        with pytest.raises(petrel.Timeout):
            ws.recv(timeout=0.05)
        for m in ["a", "b"]:
            ws.send(m)
        assert [ws.recv(timeout=5), ws.recv(timeout=5)] == ["a", "b"]


def test_connect_refused():
    with pytest.raises(petrel.ConnectFailed):
        petrel.connect("ws://127.0.0.1:1/")
