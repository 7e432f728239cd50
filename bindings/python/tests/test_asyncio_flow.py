"""Flow control in petrel.asyncio, both ways and at both ends: a handler or client that does not
call recv() stops Petrel reading from its peer once max_queue messages wait (TCP then slows the
peer down, memory stays bounded); a client whose server does not read has its send() wait."""
import asyncio

import websockets

import petrel
import petrel.asyncio

CHUNK = 16 * 1024
COUNT = 4000  # 64 MB: far more than loopback's socket buffers hold
# What may wait in a queue: max_queue, plus what had been read before the pause reached the
# loop: the library's event queue (1 MiB here) and a socket buffer's worth. Far below COUNT.
BOUND = 1024


def numbered(i):
    return str(i).encode().ljust(8) + b"x" * (CHUNK - 8)


def test_a_handler_that_does_not_read_pauses_reading_and_gets_everything_in_order_later():
    go = asyncio.Event
    state = {}

    async def handler(ws):
        state["ws"] = ws
        await state["go"].wait()
        for i in range(COUNT):
            message = await ws.recv()
            assert message[:8].strip() == str(i).encode(), (i, message[:8])
        await ws.send("all")

    async def main():
        state["go"] = go()
        async with petrel.asyncio.serve(handler, "127.0.0.1", 0, max_queue=8, compression=False,
                                        event_queue_bytes=1 << 20) as server:
            async with websockets.connect(f"ws://127.0.0.1:{server.port}/", compression=None) as c:
                async def flood():
                    for i in range(COUNT):
                        await c.send(numbered(i))  # waits when TCP pushes back
                sender = asyncio.ensure_future(flood())
                await asyncio.sleep(1.5)
                assert not sender.done(), "the whole flood was taken in: reading never paused"
                queued = len(state["ws"]._messages)
                assert 8 <= queued <= BOUND, queued
                assert state["ws"]._paused
                state["go"].set()
                await asyncio.wait_for(sender, 30)
                assert await asyncio.wait_for(c.recv(), 30) == "all"

    asyncio.run(main())


def test_a_client_that_does_not_read_pauses_reading_and_its_server_send_waits():
    progress = {"sent": 0}

    async def handler(ws):
        for i in range(COUNT):
            await ws.send(numbered(i))
            progress["sent"] = i + 1
        await ws.recv()

    async def main():
        async with petrel.asyncio.serve(handler, "127.0.0.1", 0, compression=False,
                                        max_backpressure=256 * 1024) as server:
            async with petrel.asyncio.connect(f"ws://127.0.0.1:{server.port}/", compression=False, max_queue=4) as ws:
                await asyncio.sleep(1.5)
                assert progress["sent"] < COUNT, "the server sent everything: the client never paused"
                # Paused on the client's loop thread as the 5th arrived (more than 4 waited): not
                # one more was read.
                assert len(ws._messages) == 5, len(ws._messages)
                assert ws._flow.paused
                for i in range(COUNT):
                    message = await asyncio.wait_for(ws.recv(), 30)
                    assert message[:8].strip() == str(i).encode()
                assert not ws._flow.paused
                await ws.send("done")

    asyncio.run(main())


def test_a_client_send_waits_while_the_server_does_not_read():
    received = []
    go = {}

    async def slow(ws):
        await go["event"].wait()
        async for message in ws:
            received.append(message[:8].strip())
            if len(received) == COUNT:
                await ws.send("all")

    async def main():
        go["event"] = asyncio.Event()
        async with websockets.serve(slow, "127.0.0.1", 0, max_queue=1, compression=None) as server:
            port = server.sockets[0].getsockname()[1]
            async with petrel.asyncio.connect(f"ws://127.0.0.1:{port}/", compression=False,
                                              max_backpressure=256 * 1024) as ws:
                async def flood():
                    for i in range(COUNT):
                        await ws.send(numbered(i))  # never raises Backpressure: it waits
                sender = asyncio.ensure_future(flood())
                await asyncio.sleep(1.5)
                assert not sender.done(), "64 MB were queued: send never waited"
                go["event"].set()
                await asyncio.wait_for(sender, 30)
                assert await asyncio.wait_for(ws.recv(), 30) == "all"
        assert received == [str(i).encode() for i in range(COUNT)]

    asyncio.run(main())
