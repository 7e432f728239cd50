"""petrel.asyncio.connect: the sync client's options (TLS, subprotocols), the close exceptions,
and a cancelled connect that leaves nothing open."""
import asyncio
import subprocess
from pathlib import Path

import pytest
import websockets

import petrel
import petrel.asyncio

ROOT = Path(__file__).resolve().parents[3]


def test_tls_and_subprotocols_against_websockets():
    async def echo(ws):
        async for message in ws:
            await ws.send(f"{ws.subprotocol}:{message}")

    async def main(certs):
        import ssl
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(certs / "server.pem"), str(certs / "server.key"))
        async with websockets.serve(echo, "127.0.0.1", 0, ssl=context, subprotocols=["chat.v2", "chat.v1"]) as server:
            port = server.sockets[0].getsockname()[1]
            async with petrel.asyncio.connect(f"wss://localhost:{port}/", tls_ca_file=str(certs / "ca.pem"),
                                              subprotocols=["chat.v1"], compression=False) as ws:
                await ws.send("hi")
                assert await ws.recv() == "chat.v1:hi"
            with pytest.raises(petrel.PetrelError):  # a CA that did not sign it
                await petrel.asyncio.connect(f"wss://localhost:{port}/", tls_ca_file=str(certs / "ca2.pem"))

    certs = Path(__import__("tempfile").mkdtemp(prefix="petrel-certs-"))
    subprocess.run(["bash", str(ROOT / "Tests/TLS/make-certs.sh"), str(certs)], check=True, capture_output=True)
    asyncio.run(main(certs))


def test_async_for_ends_on_a_normal_close_and_raises_on_another():
    async def handler(ws):
        message = await ws.recv()
        if message == "normal":
            await ws.close(1000)
        else:
            await ws.close(4003, "other")

    async def main():
        async with petrel.asyncio.serve(handler, "127.0.0.1", 0, threads=1) as server:
            url = f"ws://127.0.0.1:{server.port}/"
            async with petrel.asyncio.connect(url) as ws:
                await ws.send("normal")
                assert [m async for m in ws] == []
                with pytest.raises(petrel.ConnectionClosedOK):
                    await ws.recv()
            async with petrel.asyncio.connect(url) as ws:
                await ws.send("other")
                with pytest.raises(petrel.ConnectionClosedError) as closed:
                    [m async for m in ws]
                assert (closed.value.code, closed.value.reason) == (4003, "other")
                with pytest.raises(petrel.ConnectionClosedError):
                    await ws.send("late")  # raises as recv does, not a library status
            # `await connect()` without `async with`: once the server has closed it, the client
            # is released without a close() (the handle is gone), and recv/send still raise.
            ws = await petrel.asyncio.connect(url)
            await ws.send("normal")
            assert [m async for m in ws] == []
            assert not ws._handle
            with pytest.raises(petrel.ConnectionClosedOK):
                await ws.send("late")
            await ws.close()  # nothing left to do, and no error

    asyncio.run(main())


def test_a_cancelled_connect_leaves_nothing_open():
    """The server takes the TCP connection and answers the handshake only after 0.5 s; the
    connect is cancelled at 0.1 s. The connection made afterwards must be released: the server
    sees it close."""
    async def main():
        ended = asyncio.Event()

        async def slow(reader, writer):
            request = await reader.readuntil(b"\r\n\r\n")
            await asyncio.sleep(0.5)
            key = [line.split(b":", 1)[1].strip() for line in request.split(b"\r\n") if line.lower().startswith(b"sec-websocket-key")][0]
            import base64
            import hashlib
            accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            await writer.drain()
            # Released, the client closes: a close frame (0x88), or the connection just ends.
            first = await reader.read(1)
            if first in (b"", b"\x88"):
                ended.set()
            writer.close()

        server = await asyncio.start_server(slow, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        task = asyncio.create_task(petrel.asyncio.connect(f"ws://127.0.0.1:{port}/", compression=False)._open())
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(ended.wait(), 5)
        server.close()

    asyncio.run(main())
