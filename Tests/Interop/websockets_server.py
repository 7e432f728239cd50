"""A `websockets` library echo server for the Petrel client (started by the Swift test).

Prints "PORT <deflate port> <plain port>" once listening. A text message "close:CODE" makes the
server close with that code and reason "requested". Every close the server receives is printed as
"CLOSED <code> <reason>".
The server exits when its standard input closes (the test process ended), whatever signals the
parent left blocked.
"""
import asyncio
import signal
import sys

import websockets

# A child inherits its parent's signal mask: make sure SIGTERM can end us.
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})


async def handler(ws):
    try:
        async for message in ws:
            if isinstance(message, str) and message.startswith("close:"):
                await ws.close(code=int(message[6:]), reason="requested")
                return
            await ws.send(message)
    except websockets.ConnectionClosed:
        pass
    finally:
        await ws.wait_closed()
        rcvd = ws.protocol.close_rcvd
        if rcvd is not None:
            print(f"CLOSED {rcvd.code} {rcvd.reason}", flush=True)


async def main():
    async with websockets.serve(handler, "127.0.0.1", 0, compression="deflate", max_size=None) as a, \
            websockets.serve(handler, "127.0.0.1", 0, compression=None, max_size=None) as b:
        print(f"PORT {a.sockets[0].getsockname()[1]} {b.sockets[0].getsockname()[1]}", flush=True)
        # Run until stdin reaches end of file.
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


asyncio.run(main())
