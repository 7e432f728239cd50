"""Publish/subscribe, event ids and resume, event streams (SSE) and HTTP routes, all from
petrel.asyncio.serve: in-process, and across two servers on a real redis-server (where publish
and subscribe_after wait for Redis in the executor, not on the event loop)."""
import asyncio

import websockets

import petrel
import petrel.asyncio


async def topic_handler(ws):
    """Every connection (WebSocket or event stream) resumes "ticks" after the id it saw last."""
    if not await ws.subscribe_after("ticks", ws.last_event_id or 0):
        await ws.close(4000, "too far behind")
        return
    await ws.wait_closed()


async def read_events(reader, count):
    """[(id, data)] of the next `count` SSE events, after the response head."""
    events = []
    while len(events) < count:
        block = (await asyncio.wait_for(reader.readuntil(b"\n\n"), 5)).decode()
        if block.startswith("HTTP/1.1"):
            head, _, block = block.partition("\r\n\r\n")
            assert "text/event-stream" in head
        lines = block.strip("\n").split("\n")
        ids = [int(line[4:]) for line in lines if line.startswith("id: ")]
        data = [line[6:] for line in lines if line.startswith("data: ")]
        if data:
            events.append((ids[0] if ids else 0, data[0]))
    return events


def route(request):
    if request.path == "/health":
        return 200, "text/plain", "ok\n"
    return None


def test_publish_resume_event_streams_and_http_routes_in_process():
    async def main():
        async with petrel.asyncio.serve(topic_handler, "127.0.0.1", 0, replay=100, event_stream_paths=["/events"],
                                        on_http=route) as server:
            ids = [await server.publish("ticks", f"t{i}") for i in range(1, 6)]
            assert ids == [1, 2, 3, 4, 5]
            base = f"127.0.0.1:{server.port}"
            async with websockets.connect(f"ws://{base}/?last_event_id=2") as ws:
                assert [await asyncio.wait_for(ws.recv(), 5) for _ in range(3)] == ["t3", "t4", "t5"]
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                writer.write(b"GET /events HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 4\r\n\r\n")
                assert await read_events(reader, 1) == [(5, "t5")]
                assert await server.publish("ticks", "t6") == 6
                assert await asyncio.wait_for(ws.recv(), 5) == "t6"
                assert await read_events(reader, 1) == [(6, "t6")]
                writer.close()
                writer.write(b"")
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                response = await asyncio.wait_for(reader.read(), 5)
                assert response.startswith(b"HTTP/1.1 200") and response.endswith(b"ok\n")
                writer.close()

    asyncio.run(main())


def test_two_servers_on_redis_resume_on_either(redis):
    async def main():
        options = dict(engine=redis.url, replay=100, threads=1)
        async with petrel.asyncio.serve(topic_handler, "127.0.0.1", 0, **options) as a, \
                petrel.asyncio.serve(topic_handler, "127.0.0.1", 0, **options) as b:
            async with websockets.connect(f"ws://127.0.0.1:{b.port}/") as on_b:
                await asyncio.sleep(0.3)  # the subscription is made through Redis' reader
                first = await a.publish("ticks", "one")
                second = await a.publish("ticks", "two")
                assert second == first + 1
                assert [await asyncio.wait_for(on_b.recv(), 5) for _ in range(2)] == ["one", "two"]
            # A client that saw `first` on b resumes on a: what came after it, from Redis' history.
            async with websockets.connect(f"ws://127.0.0.1:{a.port}/?last_event_id={first}") as on_a:
                assert await asyncio.wait_for(on_a.recv(), 5) == "two"

    asyncio.run(main())
