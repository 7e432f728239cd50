"""petrel-python-echo: the benchmark echo server (Benchmarks/PROTOCOL.md) on Petrel's Python
bindings, to measure what the ctypes layer costs next to picows and websockets.

    PETREL_LIBRARY=.build-static/release/libpetrel.so python Benchmarks/servers/petrel_python_echo.py --port 9001
"""
import argparse
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bindings/python/src"))
import petrel  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument("--deflate", action="store_true")
    args = parser.parse_args()
    server = petrel.Server("127.0.0.1", args.port, threads=1, compression="takeover" if args.deflate else False,
                           max_message_size=16 << 20, max_backpressure=256 << 20, max_queued=2**31 - 1)
    publishers = set()

    @server.on_open
    def opened(conn: petrel.Connection) -> None:
        path = conn.path
        if path == "/sub":
            conn.subscribe("bench")
        elif path == "/pub":
            publishers.add(conn.id)

    @server.on_message
    def message(conn: petrel.Connection, data) -> None:  # type: ignore[no-untyped-def]
        if conn.id in publishers:
            server.publish("bench", data)
        else:
            conn.send(data)

    signal.signal(signal.SIGTERM, lambda *_: server.stop(1.0))
    server.start()
    print(f"petrel-python-echo listening on 127.0.0.1:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
