"""Slowloris against the Swift stock server: 5,000 connections send their request head one byte
every 2 s; the server must close every one of them at its handshake timeout (10 s, with a 408),
while 1,000 WebSocket clients of the same server (stock-load) get every tick, in order, at
100 ticks/s. Server on CPU 0, stock-load on CPU 1, the slow connections from this script.

    python Tests/Load/slowloris.py [--slow 5000] [--ws 1000] [--seconds 14]
"""
import argparse
import json
import re
import selectors
import socket
import subprocess
import sys
import threading
import time

from stock_load import BIN, more_files, pinned

HEAD = b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
TIMEOUT = 10.0  # the stock server's handshake timeout (the library's default)


class Slowloris(threading.Thread):
    """Opens `count` connections and sends one byte of a request head to each every `every`
    seconds, never finishing it; records when and how the server ended each one."""

    def __init__(self, port: int, count: int, every: float) -> None:
        super().__init__(daemon=True)
        self.port, self.count, self.every = port, count, every
        self.opened: dict[socket.socket, float] = {}
        self.ended: list[tuple[float, bytes]] = []  # (seconds after its open, what the server sent)
        self.failed_connects = 0
        self.stop = False

    def run(self) -> None:
        sel = selectors.DefaultSelector()
        sent: dict[socket.socket, int] = {}
        got: dict[socket.socket, bytes] = {}
        for i in range(self.count):
            s = socket.socket()
            try:
                s.connect(("127.0.0.1", self.port))
            except OSError:
                self.failed_connects += 1
                s.close()
                continue
            s.setblocking(False)
            self.opened[s] = time.monotonic()
            sent[s] = 0
            got[s] = b""
            sel.register(s, selectors.EVENT_READ)
            if i % 500 == 499:
                time.sleep(0.05)  # within the listen backlog
        next_send = time.monotonic()
        while sent and not self.stop:
            for key, _ in sel.select(timeout=0.05):
                s = key.fileobj
                try:
                    data = s.recv(4096)  # type: ignore[union-attr]
                except OSError:
                    data = b""
                if data:
                    got[s] += data  # type: ignore[index]
                    continue
                self.ended.append((time.monotonic() - self.opened[s], got[s]))  # type: ignore[index]
                sel.unregister(s)
                s.close()  # type: ignore[union-attr]
                del sent[s]  # type: ignore[arg-type]
            if time.monotonic() >= next_send:
                next_send += self.every
                for s, n in list(sent.items()):
                    try:
                        s.send(HEAD[n % len(HEAD):n % len(HEAD) + 1])
                        sent[s] = n + 1
                    except OSError:
                        pass  # reset: the read above sees it
        for s in sent:
            s.close()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--slow", type=int, default=5000)
    p.add_argument("--ws", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=14)
    a = p.parse_args()
    more_files()
    server_cmd = [str(BIN / "stock-server"), "--port", "0", "--threads", "1", "--tick-min", "0.01", "--tick-max", "0.01"]
    server = subprocess.Popen(pinned(0, server_cmd), stdout=subprocess.PIPE, text=True, preexec_fn=more_files)
    try:
        port = None
        for line in server.stdout:  # type: ignore[union-attr]
            m = re.search(r"open http://[^:]+:(\d+)/", line)
            if m:
                port = int(m.group(1))
                break
        assert port, "the stock server did not start"
        slow = Slowloris(port, a.slow, every=2.0)
        slow.start()
        time.sleep(1.0)
        load_cmd = [str(BIN / "stock-load"), "--port", str(port), "--ws", str(a.ws), "--sse", "0", "--seconds", str(a.seconds)]
        load = subprocess.run(pinned(1, load_cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              preexec_fn=more_files, timeout=120)
        result = json.loads(load.stdout.strip().splitlines()[-1])
        slow.join(TIMEOUT + 15)
        slow.stop = True
        ended = slow.ended
        times = sorted(t for t, _ in ended)
        with_408 = sum(1 for _, b in ended if b.startswith(b"HTTP/1.1 408"))
        summary = {
            "slow": a.slow, "slowOpened": len(slow.opened), "slowConnectFailures": slow.failed_connects,
            "slowClosed": len(ended), "slowWith408": with_408,
            "slowClosedAfter": [round(times[0], 2), round(times[len(times) // 2], 2), round(times[-1], 2)] if times else [],
            "stockLoad": result,
        }
        print(json.dumps(summary))
        failures = []
        if not result["ok"]:
            failures.append("the 1,000 WebSocket clients did not get every tick in order")
        if len(slow.opened) != a.slow or len(ended) != a.slow:
            failures.append(f"{len(slow.opened)} slow connections opened, {len(ended)} closed by the server (want {a.slow})")
        if with_408 != len(ended):
            failures.append(f"{len(ended) - with_408} slow connections closed without a 408")
        if times and (times[0] < TIMEOUT - 0.5 or times[-1] > TIMEOUT + 3.0):
            failures.append(f"closed after {times[0]:.2f} to {times[-1]:.2f} s, not at the {TIMEOUT:g} s timeout")
        for failure in failures:
            print("slowloris: FAILED:", failure, file=sys.stderr)
        return 1 if failures else 0
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    sys.exit(main())
