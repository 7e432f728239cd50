"""Issue 7's load check: the Swift stock server at 100 ticks/s with 1,000 WebSocket and 100 SSE
clients. Every client must receive every tick in order, and the server must use less than one
core. The server is pinned to CPU 0 and the load generator to CPU 1.

    python Tests/Load/stock_load.py [--ws 1000] [--sse 100] [--seconds 10] [--ticks-per-second 100]
"""
import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "examples/stock-swift/.build/release"


def more_files():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ws", type=int, default=1000)
    p.add_argument("--sse", type=int, default=100)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--ticks-per-second", type=float, default=100)
    a = p.parse_args()
    interval = str(1 / a.ticks_per_second)
    taskset = ["taskset", "-c"] if os.cpu_count() and os.cpu_count() > 1 else None
    server_cmd = [str(BIN / "stock-server"), "--port", "0", "--threads", "1", "--tick-min", interval, "--tick-max", interval]
    server = subprocess.Popen((taskset + ["0"] if taskset else []) + server_cmd, stdout=subprocess.PIPE, text=True,
                              preexec_fn=more_files)
    try:
        port = None
        for line in server.stdout:
            m = re.search(r"open http://[^:]+:(\d+)/", line)
            if m:
                port = m.group(1)
                break
        assert port, "the stock server did not start"
        load_cmd = [str(BIN / "stock-load"), "--port", port, "--ws", str(a.ws), "--sse", str(a.sse), "--seconds", str(a.seconds)]
        load = subprocess.Popen((taskset + ["1"] if taskset else []) + load_cmd, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, preexec_fn=more_files)
        start = end = None
        for line in load.stderr:
            sys.stderr.write(line)
            if "window start" in line:
                start = (time.monotonic(), cpu_seconds(server.pid), cpu_seconds(load.pid))
            elif "window end" in line:
                end = (time.monotonic(), cpu_seconds(server.pid), cpu_seconds(load.pid))
        out = load.stdout.read().strip()
        load.wait(60)
        result = json.loads(out.splitlines()[-1])
        assert start and end, "the load generator did not report its window"
        wall = end[0] - start[0]
        result["serverCores"] = round((end[1] - start[1]) / wall, 3)
        result["loadCores"] = round((end[2] - start[2]) / wall, 3)
        result["ticksPerSecond"] = a.ticks_per_second
        health = json.load(__import__("urllib.request").request.urlopen(f"http://127.0.0.1:{port}/health"))
        result["published"] = health["published"]
        print(json.dumps(result))
        ok = result["ok"] and result["serverCores"] < 1.0
        if not ok:
            print("stock load: FAILED (every client must get every tick in order, server under one core)", file=sys.stderr)
        return 0 if ok else 1
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    sys.exit(main())
