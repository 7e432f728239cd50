"""The subprotocol the handshake chose, as each end sees it: Connection.subprotocol on the server
(the configured preference, or the accept hook's choice), ClientConnection.subprotocol and the
asyncio ws.subprotocol on the clients; None when none was chosen, and on an event stream."""
import asyncio
import socket
import threading

import pytest
import websockets

import petrel
import petrel.asyncio


def test_both_ends_agree_on_the_servers_preference():
    chosen = []
    server = petrel.Server("127.0.0.1", 0, threads=1, subprotocols=["chat.v2", "chat.v1"],
                           on_message=lambda conn, m: conn.send(f"{conn.subprotocol}:{m}"))
    server.on_open(lambda conn: chosen.append(conn.subprotocol))
    with server:
        url = f"ws://127.0.0.1:{server.port}/"
        with petrel.connect(url, subprotocols=["chat.v1", "chat.v2"]) as ws:
            assert ws.subprotocol == "chat.v2"
            ws.send("hi")
            assert ws.recv(timeout=5) == "chat.v2:hi"
        with petrel.connect(url, subprotocols=["chat.v1"]) as ws:
            assert ws.subprotocol == "chat.v1"
            ws.send("hi")
            assert ws.recv(timeout=5) == "chat.v1:hi"
        with petrel.connect(url) as ws:  # nothing offered: none chosen
            assert ws.subprotocol is None
            ws.send("hi")
            assert ws.recv(timeout=5) == "None:hi"
    assert chosen == ["chat.v2", "chat.v1", None]


def test_the_accept_hooks_choice_is_what_both_ends_see():
    server = petrel.Server("127.0.0.1", 0, threads=1, subprotocols=["chat.v2", "chat.v1"],
                           on_upgrade=lambda request: petrel.Accept(subprotocol="chat.v1"),
                           on_message=lambda conn, m: conn.send(str(conn.subprotocol)))
    with server:
        async def run():
            async with websockets.connect(f"ws://127.0.0.1:{server.port}/", subprotocols=["chat.v2", "chat.v1"]) as ws:
                assert ws.subprotocol == "chat.v1"
                await ws.send("which?")
                assert await ws.recv() == "chat.v1"
        asyncio.run(run())


def test_the_clients_see_what_a_websockets_server_chose():
    async def echo(ws):
        await ws.send(str(ws.subprotocol))

    async def main():
        async with websockets.serve(echo, "127.0.0.1", 0, subprotocols=["b", "a"]) as server:
            url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
            async with petrel.asyncio.connect(url, subprotocols=["a", "b"]) as ws:
                assert ws.subprotocol == "b" and await ws.recv() == "b"
            with pytest.raises(petrel.InvalidStatus) as refused:  # websockets wants one of its list
                await petrel.asyncio.connect(url)
            assert refused.value.status_code == 400

            def sync_client():
                with petrel.connect(url, subprotocols=["a"]) as c:
                    return c.subprotocol, c.recv(timeout=5)
            assert await asyncio.get_running_loop().run_in_executor(None, sync_client) == ("a", "a")

    asyncio.run(main())


def test_asyncio_serve_connections_know_their_subprotocol():
    async def handler(ws):
        await ws.send(str(ws.subprotocol))

    async def main():
        async with petrel.asyncio.serve(handler, "127.0.0.1", 0, threads=1, subprotocols=["v2.stomp", "chat"]) as server:
            async with petrel.asyncio.connect(f"ws://127.0.0.1:{server.port}/", subprotocols=["chat"]) as ws:
                assert ws.subprotocol == "chat"
                assert await ws.recv() == "chat"

    asyncio.run(main())


def test_an_event_stream_has_none():
    seen = []
    ready = threading.Event()
    server = petrel.Server("127.0.0.1", 0, threads=1, event_stream_paths=["/events"],
                           on_open=lambda conn: (seen.append(conn.subprotocol), ready.set()))
    with server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\nSec-WebSocket-Protocol: chat\r\n\r\n")
            assert b"text/event-stream" in sock.recv(4096)
            assert ready.wait(5)
    assert seen == [None]
