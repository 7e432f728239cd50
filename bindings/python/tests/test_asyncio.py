"""The asyncio flavour: never blocks the event loop."""
import asyncio

import pytest
import websockets

import petrel
import petrel.asyncio


def test_async_client_against_petrel_server(echo_server):
    async def run():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        t = asyncio.create_task(ticker())
        async with petrel.asyncio.connect(f"ws://127.0.0.1:{echo_server.port}/") as ws:
            await ws.send("hello")
            assert await ws.recv() == "hello"
            await ws.send(b"\x00" * 100_000)
            assert await ws.recv() == b"\x00" * 100_000
            await asyncio.sleep(0.2)  # idle while connected: the loop keeps running
            await ws.send("close-me")
            # The server closes with 4002: not a normal close, so iterating raises.
            with pytest.raises(petrel.ConnectionClosedError) as closed:
                [m async for m in ws]
            assert closed.value.code == 4002 and ws.close_code == 4002
        t.cancel()
        assert ticks >= 10

    asyncio.run(run())


def test_async_server_with_coroutine_handler():
    async def run():
        server = petrel.asyncio.Server("127.0.0.1", 0, threads=1)

        @server.on_message
        async def handler(conn, message):
            await asyncio.sleep(0.01)  # a coroutine can await on the event loop
            conn.send(message.upper() if isinstance(message, str) else message)

        await server.start()
        try:
            async with websockets.connect(f"ws://127.0.0.1:{server.port}/") as ws:
                await ws.send("quiet")
                assert await ws.recv() == "QUIET"
        finally:
            await server.stop(1.0)
            await server.close()

    asyncio.run(run())


def test_coroutine_handlers_of_one_connection_run_in_order_and_the_lifecycle_never_blocks_the_loop():
    async def run():
        seen = []

        async def on_message(conn, message):
            # The first message waits longest: run concurrently, the later ones would overtake it.
            await asyncio.sleep(0.05 if message == "0" else 0)
            seen.append(message)
            conn.send(message)

        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.005)

        t = asyncio.ensure_future(ticker())
        async with petrel.asyncio.Server("127.0.0.1", 0, threads=1, on_message=on_message) as server:
            async with websockets.connect(f"ws://127.0.0.1:{server.port}/") as ws:
                for i in range(20):
                    await ws.send(str(i))
                assert [await asyncio.wait_for(ws.recv(), 5) for _ in range(20)] == [str(i) for i in range(20)]
            before = ticks
            # A client that never answers the close: stop waits its grace in the executor while
            # the loop keeps running.
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
            await reader.readuntil(b"\r\n\r\n")
            await server.stop(0.3)
            assert ticks - before >= 20, "the event loop stood still during stop()"
            writer.close()
        t.cancel()
        assert seen == [str(i) for i in range(20)]

    asyncio.run(run())
