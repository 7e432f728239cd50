"""The `websockets` library's client against a Petrel echo server (started by the Swift test).

Usage: websockets_client.py ws://127.0.0.1:PORT
Exercises text and binary from 0 B to 16 MiB, fragmented messages, with and without
permessage-deflate, and close codes both ways. Prints one line per check; exits non-zero on the
first failure.
"""
import asyncio
import sys

import websockets

SIZES = [0, 1, 125, 126, 127, 65535, 65536, 1 << 20, 16 << 20]


def payloads(size):
    text = ("κόσμε" * (size // 10 + 1)).encode()[:size].decode("utf-8", "ignore")
    return [bytes((i * 7) & 0xFF for i in range(min(size, 1 << 16))) * max(1, size >> 16) if size else b"", text]


async def main(url):
    for compression in ("deflate", None):
        async with websockets.connect(url + "/echo", compression=compression, max_size=None) as ws:
            negotiated = [type(e).__name__ for e in ws.protocol.extensions]
            assert bool(negotiated) == (compression == "deflate"), negotiated
            for size in SIZES:
                for message in payloads(size):
                    await ws.send(message)
                    echoed = await ws.recv()
                    assert echoed == message, (compression, size, type(message), len(echoed))
            await ws.send(["Hel", "lo", " ", "fragments"])
            assert await ws.recv() == "Hello fragments"
            await ws.send([b"\x00", b"\x01\x02"])
            assert await ws.recv() == b"\x00\x01\x02"
            print(f"ok echo compression={compression} {negotiated}")
            # Client-initiated close with a code and reason (the server checks it arrived).
            await ws.close(code=4001, reason="client says bye")
            assert ws.close_code == 4001, ws.close_code
        # Server-initiated close.
        async with websockets.connect(url + "/echo", compression=compression) as ws:
            await ws.send("close:4002")
            try:
                await ws.recv()
                raise AssertionError("expected the server to close")
            except websockets.ConnectionClosed as e:  # 4002 is not 1000/1001, so not "OK" to websockets
                assert e.rcvd.code == 4002 and e.rcvd.reason == "requested", e
            print(f"ok server close compression={compression}")
    print("ALL OK")


asyncio.run(main(sys.argv[1]))
