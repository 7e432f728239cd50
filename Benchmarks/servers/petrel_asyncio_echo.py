"""petrel-asyncio-echo: the benchmark echo server (Benchmarks/PROTOCOL.md) on
petrel.asyncio.serve, one coroutine per connection, to set next to picows (uvloop) and the
callback flavour (petrel_python_echo.py). Runs on uvloop when it is installed, as picows does.

    PETREL_LIBRARY=.build-static/release/libpetrel.so python Benchmarks/servers/petrel_asyncio_echo.py --port 9001
"""
import argparse
import asyncio
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bindings/python/src"))
import petrel.asyncio  # noqa: E402


async def main(port: int, deflate: bool) -> None:
    server: "petrel.asyncio.WebSocketServer"

    async def handler(ws: petrel.asyncio.ServerConnection) -> None:
        if ws.path == "/sub":
            ws.subscribe("bench")
            await ws.wait_closed()
        elif ws.path == "/pub":
            async for message in ws:
                await server.publish("bench", message)
        else:
            async for message in ws:
                await ws.send(message)

    server = await petrel.asyncio.serve(
        handler, "127.0.0.1", port, threads=1, compression="takeover" if deflate else False,
        max_message_size=16 << 20, max_backpressure=256 << 20, max_queued=2**31 - 1)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print(f"petrel-asyncio-echo listening on 127.0.0.1:{server.port}", flush=True)
    await stop.wait()
    await server.close(1.0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument("--deflate", action="store_true")
    args = parser.parse_args()
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(args.port, args.deflate))
