"""petrel.asyncio.serve: one coroutine per connection, in the `websockets` style, against the
`websockets` client: order per connection, each close exception, flow control, cancellation."""
import asyncio

import pytest
import websockets

import petrel
import petrel.asyncio


def url(server):
    return f"ws://127.0.0.1:{server.port}/"


def test_echo_keeps_every_connections_order():
    seen = {}

    async def echo(ws):
        got = seen.setdefault(ws.id, [])
        async for message in ws:
            got.append(message)
            await ws.send(message)

    async def client(server, n):
        async with websockets.connect(url(server), compression=None) as c:
            sent = [f"{n}:{i}" for i in range(1000)]
            for m in sent:
                await c.send(m)
            got = [await c.recv() for _ in sent]
            assert got == sent
        await c.wait_closed()

    async def main():
        async with petrel.asyncio.serve(echo, "127.0.0.1", 0, threads=2) as server:
            assert server.port > 0
            await asyncio.gather(*(client(server, n) for n in range(8)))
            await asyncio.sleep(0.1)
        return server

    asyncio.run(main())
    assert len(seen) == 8
    for got in seen.values():
        n = got[0].split(":")[0]
        assert got == [f"{n}:{i}" for i in range(1000)]


def test_a_normal_close_ends_async_for_and_another_close_raises_connection_closed_error():
    async def main():
        results = asyncio.Queue()

        async def handler(ws):
            try:
                async for message in ws:
                    await ws.send(message)
                results.put_nowait(("ended", ws.close_code))
            except petrel.ConnectionClosedError as e:
                try:
                    await ws.send("too late")
                    late = "sent"
                except petrel.ConnectionClosedError:
                    late = "refused"
                results.put_nowait(("error", e.code, late))

        async with petrel.asyncio.serve(handler, "127.0.0.1", 0, threads=1) as server:
            async with websockets.connect(url(server)) as c:  # closes with 1000
                await c.send("a")
                assert await c.recv() == "a"
            assert await asyncio.wait_for(results.get(), 5) == ("ended", 1000)
            c = await websockets.connect(url(server))
            await c.send("b")
            assert await c.recv() == "b"
            c.transport.abort()  # no closing handshake: 1006
            assert await asyncio.wait_for(results.get(), 5) == ("error", 1006, "refused")
            c = await websockets.connect(url(server))
            await c.close(4000, "mine")
            assert await asyncio.wait_for(results.get(), 5) == ("error", 4000, "refused")

    asyncio.run(main())


def test_the_server_closes_with_its_code_and_the_handlers_return_closes_with_1000():
    codes = []

    async def handler(ws):
        message = await ws.recv()
        if message == "close":
            await ws.close(4001, "asked")
            codes.append(ws.close_code)
        # else: returning closes the connection

    async def main():
        async with petrel.asyncio.serve(handler, "127.0.0.1", 0, threads=1) as server:
            async with websockets.connect(url(server)) as c:
                await c.send("close")
                with pytest.raises(websockets.exceptions.ConnectionClosed):
                    await c.recv()
                assert c.close_code == 4001 and c.close_reason == "asked"
            async with websockets.connect(url(server)) as c:
                await c.send("return")
                with pytest.raises(websockets.exceptions.ConnectionClosedOK):
                    await c.recv()
                assert c.close_code == 1000

    asyncio.run(main())
    assert codes == [4001]


def test_send_waits_for_a_slow_reader_and_memory_stays_bounded():
    limit = 256 * 1024
    chunk = b"x" * (32 * 1024)
    count = 2000  # 64 MB: 250 times the limit, more than loopback's socket buffers hold
    report = {}

    async def handler(ws):
        highest = 0
        for i in range(count):
            await ws.send(chunk)  # never raises Backpressure: it waits
            highest = max(highest, ws._conn.buffered_amount)
        report["highest"] = highest
        await ws.recv()

    async def main():
        async with petrel.asyncio.serve(handler, "127.0.0.1", 0, threads=1, max_backpressure=limit) as server:
            async with websockets.connect(url(server), max_queue=1, compression=None) as c:
                await asyncio.sleep(1.0)  # not reading: the server's buffer fills, send waits
                assert "highest" not in report
                got = 0
                for _ in range(count):
                    got += len(await asyncio.wait_for(c.recv(), 10))
                assert got == count * len(chunk)
                await c.send("done")

    asyncio.run(main())
    # The limit is checked before each send, against a count the loop thread updates as it
    # writes: the buffer may pass it by a message or two, never more.
    assert report["highest"] <= limit + 2 * (len(chunk) + 64), report


def test_a_cancelled_handler_leaves_nothing_open():
    async def handler(ws):
        await ws.recv()
        asyncio.current_task().cancel()
        await asyncio.sleep(10)  # cancelled here

    async def main():
        async with petrel.asyncio.serve(handler, "127.0.0.1", 0, threads=1) as server:
            async with websockets.connect(url(server)) as c:
                await c.send("go")
                with pytest.raises(websockets.exceptions.ConnectionClosed):
                    await asyncio.wait_for(c.recv(), 5)
            for _ in range(100):
                if not server.connections:
                    break
                await asyncio.sleep(0.02)
            assert server.connections == []

    asyncio.run(main())


def test_exceptions_in_the_handler_close_with_1011():
    async def handler(ws):
        await ws.recv()
        raise ValueError("boom")

    async def main():
        async with petrel.asyncio.serve(handler, "127.0.0.1", 0, threads=1) as server:
            async with websockets.connect(url(server)) as c:
                await c.send("go")
                with pytest.raises(websockets.exceptions.ConnectionClosedError):
                    await asyncio.wait_for(c.recv(), 5)
                assert c.close_code == 1011

    asyncio.run(main())


def test_serve_refuses_per_event_callbacks():
    async def handler(ws):
        pass

    with pytest.raises(TypeError):
        petrel.asyncio.serve(handler, "127.0.0.1", 0, on_message=lambda c, m: None)


def test_close_twice_and_serve_forever_ends_on_close():
    async def handler(ws):
        async for _ in ws:
            pass

    async def main():
        server = await petrel.asyncio.serve(handler, "127.0.0.1", 0, threads=1)
        forever = asyncio.create_task(server.serve_forever())
        c = await websockets.connect(url(server))
        await asyncio.gather(server.close(1.0), server.close(1.0))
        await asyncio.wait_for(forever, 5)
        with pytest.raises(websockets.exceptions.ConnectionClosed):
            await asyncio.wait_for(c.recv(), 5)
        assert c.close_code == 1001

    asyncio.run(main())
