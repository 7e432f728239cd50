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

        server.start()
        try:
            async with websockets.connect(f"ws://127.0.0.1:{server.port}/") as ws:
                await ws.send("quiet")
                assert await ws.recv() == "QUIET"
        finally:
            server.stop(1.0)
            server.close()

    asyncio.run(run())
