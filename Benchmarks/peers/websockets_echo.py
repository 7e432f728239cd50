#!/usr/bin/env python3
"""Python `websockets` server for Petrel's side-by-side benchmarks (contract: ../PROTOCOL.md).

    python websockets_echo.py --port N [--deflate]

Best configuration as websockets documents it: the new asyncio implementation
(`websockets.asyncio.server.serve`) on uvloop, one event loop thread.

- `--deflate` keeps websockets' default permessage-deflate settings (`compression="deflate"`);
  otherwise `compression=None`.
- `max_size` 16 MiB (the contract's largest message). websockets applies max_size to each
  frame as it is on the wire as well as to the inflated message, and a 16 MiB message that
  does not compress is a little larger once deflated (16 MiB + ~40 KiB with websockets'
  defaults), so with `--deflate` the limit is 16 MiB + 1 MiB.
- `ping_interval=None`: no keepalive pings, like the other servers; the contract wants no idle
  timeout shorter than 60 s, and websockets' default ping_timeout (20 s) would close a
  connection whose pong is stuck behind a loaded client's backlog.
- `backlog=4096` is passed through to `loop.create_server` (asyncio's default is 100) for the
  20,000-connection runs.

Paths: `/sub` subscribers, `/pub` broadcasts each message to all subscribers with the same
opcode (nothing echoed to the publisher), anything else echoes.
"""

import argparse
import asyncio
import sys

import uvloop
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosedError

MAX_MESSAGE = 16 << 20
DEFLATE_SLACK = 1 << 20  # room for deflate's overhead on incompressible data

subscribers: set[ServerConnection] = set()


async def route(ws: ServerConnection) -> None:
    path = ws.request.path.split("?", 1)[0]
    if path == "/sub":
        subscribers.add(ws)
        try:
            async for _ in ws:  # subscribers only listen; drain until closed
                pass
        finally:
            subscribers.discard(ws)
    elif path == "/pub":
        async for message in ws:
            # Fan-out with websockets.asyncio.server.broadcast rather than
            # `await asyncio.gather(*(c.send(m) for c in subscribers))`.
            #
            # In websockets 17 (new asyncio implementation) broadcast() writes the frame to
            # every connection synchronously "even if their write buffers are overflowing.
            # There's no backpressure" (its docstring); it does NOT skip slow connections
            # (that was the legacy implementation). It skips only connections that are not
            # OPEN (closing: the contract covers subscribers open at that moment) and
            # connections in the middle of sending a fragmented message, which never
            # happens here since subscribers only receive whole messages from broadcast().
            # So every subscriber gets every message, and it is the fastest way: the
            # message is encoded once, with no task or await per subscriber, whereas
            # gather(send) would create a coroutine per subscriber per message and let one
            # slow subscriber stall the publisher.
            #
            # Same opcode: a text message arrives as str and broadcast() sends str as Text,
            # bytes as Binary.
            broadcast(subscribers, message)
    else:
        async for message in ws:
            await ws.send(message)


async def handler(ws: ServerConnection) -> None:
    try:
        await route(ws)
    except ConnectionClosedError:
        pass  # a client that resets (the load generator at the end of a run) is not an error


async def main(port: int, deflate: bool) -> None:
    server = await serve(
        handler,
        "127.0.0.1",
        port,
        compression="deflate" if deflate else None,
        max_size=MAX_MESSAGE + (DEFLATE_SLACK if deflate else 0),
        ping_interval=None,
        backlog=4096,
    )
    print(f"websockets listening on 127.0.0.1:{port}", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument("--deflate", action="store_true")
    args = parser.parse_args()
    try:
        uvloop.run(main(args.port, args.deflate))
    except KeyboardInterrupt:
        sys.exit(0)
