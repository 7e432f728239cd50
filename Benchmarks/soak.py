"""The long soak (`make soak`, not in `make test`; Debian's python3 for matplotlib): the Swift
stock server publishing 50 ticks a second for MINUTES while

- 20 reconnecting Petrel clients (Python, `reconnect=`) read the ticks through the fault proxy
  (Tests/Faults/faultproxy.py), resuming after the last id they handled, and check that every
  tick after their snapshot comes once and in order;
- every 30 s the proxy does harm in turn: resets every connection, resets each one inside a
  frame, stalls everything for 3 s (the clients' pongs miss: they reconnect), black-holes new
  and open connections for 3 s;
- a churn thread connects and drops 20 clients a second directly (half closed cleanly, half
  dropped without a close).

Every 10 s it samples the server's RSS, open descriptors and threads (/proc), and writes
.build/soak/soak.csv, a plot (.build/soak/soak.png, with matplotlib) and a summary:

    python3 Benchmarks/soak.py [--minutes 30] [--clients 20] [--out .build/soak]

The clients, the proxy and the churn share one Python process (one interpreter lock): more
clients or ticks and they stop keeping up, the server then holds their backlog (bounded by its
limits) and coalesces ticks by ticker, which the id check would count as gaps.

Pass: no growth in descriptors or threads from the first sample after warm-up to the last, RSS
within 10% (or 4 MiB) of its value after warm-up, no tick lost by any client, and at most one
repeat per reconnect (a tick taken by `recv` just as the attempt started; skipped by id).
"""
import argparse
import csv
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "Tests/Faults"))
import petrel  # noqa: E402
from faultproxy import FaultProxy  # noqa: E402

SERVER = ROOT / "examples/stock-swift/.build/release/stock-server"
WARM_UP = 120  # seconds: caches, rings and allocator arenas fill


def proc(pid):
    status = open(f"/proc/{pid}/status").read()
    rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
    threads = int(re.search(r"Threads:\s+(\d+)", status).group(1))
    return rss, len(os.listdir(f"/proc/{pid}/fd")), threads


class Reader(threading.Thread):
    """A reconnecting client that checks the id of every tick."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port = port
        self.ticks = self.gaps = self.repeats = self.opens = 0
        self.stop = False

    def on_state(self, state, attempt, delay, reason):
        if state == "open":
            self.opens += 1

    def run(self):
        while True:  # the first connect is not retried by the library: a fault may be on
            try:
                client = petrel.connect(f"ws://127.0.0.1:{self.port}/stream", ping_interval=1.0, ping_timeout=1.0,
                                        open_timeout=3.0, reconnect=petrel.Reconnect(initial_delay=0.2, max_delay=3.0),
                                        on_state=self.on_state)
                break
            except petrel.PetrelError:
                time.sleep(0.5)
        last = None
        while not self.stop:
            try:
                message = json.loads(client.recv(timeout=1.0))
            except petrel.Timeout:
                continue
            except petrel.ConnectionClosed:
                break
            if message["type"] == "snapshot":
                last = message["id"]
            elif message["type"] == "tick":
                if last is not None and message["id"] <= last:
                    self.repeats += 1  # taken just as a reconnect started: skipped (docs/runtime.md)
                    continue
                if last is not None and message["id"] != last + 1:
                    self.gaps += 1
                last = message["id"]
                self.ticks += 1
            if last is not None:
                client.last_event_id = last
        client.destroy()


def churn(port, stop, counts):
    while not stop.is_set():
        for i in range(20):
            try:
                c = petrel.connect(f"ws://127.0.0.1:{port}/stream", open_timeout=3.0)
                c.recv(timeout=3.0)
                if i % 2:
                    c.close()
                c.destroy()
                counts["churned"] += 1
            except petrel.PetrelError:
                counts["churn_failures"] += 1
        stop.wait(1.0)


def harm(proxy, stop, log):
    faults = ["reset every connection", "reset inside a frame", "stall 3 s", "black hole 3 s"]
    n = 0
    while not stop.wait(30):
        fault = faults[n % len(faults)]
        n += 1
        log.append((time.monotonic(), fault))
        if fault == "reset every connection":
            proxy.cut()
        elif fault == "reset inside a frame":
            proxy.reset_after(random.randint(1, 400))
        elif fault == "stall 3 s":
            proxy.stall(3.0)
        else:
            proxy.partition()
            stop.wait(3.0)
            proxy.heal()
            proxy.cut()  # the silent ones: their clients gave up on them already


def plot(rows, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("soak: no matplotlib (apt-get install python3-matplotlib): no plot", file=sys.stderr)
        return False
    minutes = [r["seconds"] / 60 for r in rows]
    fig, axes = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
    for ax, key, label in zip(axes, ["rss_kib", "fds", "threads"], ["RSS (MiB)", "open descriptors", "threads"]):
        values = [r[key] / 1024 if key == "rss_kib" else r[key] for r in rows]
        ax.plot(minutes, values)
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0, top=max(values) * 1.25 + 1)
        ax.axvline(WARM_UP / 60, color="grey", linestyle=":", linewidth=1)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("minutes (dotted: end of warm-up)")
    fig.suptitle("Petrel soak: the Swift stock server under churn, reconnects and faults")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    return True


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--minutes", type=float, default=30)
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--out", default=str(ROOT / ".build/soak"))
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    server = subprocess.Popen([str(SERVER), "--port", "0", "--threads", "1", "--tick-min", "0.02", "--tick-max", "0.02"],
                              stdout=subprocess.PIPE, text=True)
    port = None
    for line in server.stdout:
        m = re.search(r"open http://[^:]+:(\d+)/", line)
        if m:
            port = int(m.group(1))
            break
    assert port, "the stock server did not start"
    threading.Thread(target=lambda: [None for _ in server.stdout], daemon=True).start()
    stop = threading.Event()
    counts = {"churned": 0, "churn_failures": 0}
    faults = []
    rows = []
    with FaultProxy(port) as proxy:
        readers = [Reader(proxy.port) for _ in range(a.clients)]
        for r in readers:
            r.start()
        threading.Thread(target=churn, args=(port, stop, counts), daemon=True).start()
        threading.Thread(target=harm, args=(proxy, stop, faults), daemon=True).start()
        start = time.monotonic()
        end = start + a.minutes * 60
        while True:
            now = time.monotonic()
            rss, fds, threads = proc(server.pid)
            row = {"seconds": round(now - start), "rss_kib": rss, "fds": fds, "threads": threads,
                   "ticks": sum(r.ticks for r in readers), "opens": sum(r.opens for r in readers),
                   "churned": counts["churned"], "faults": len(faults)}
            rows.append(row)
            print(json.dumps(row), flush=True)
            if now >= end:
                break
            time.sleep(min(10, max(0, end - time.monotonic())))
        stop.set()
        for r in readers:
            r.stop = True
        for r in readers:
            r.join(5)
    server.terminate()
    server.wait(10)
    with open(out / "soak.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    plotted = plot(rows, out / "soak.png")
    # Faults and churn move the counts by the connections open at a sample: compare the medians
    # of five samples right after warm-up and of the last five.
    after = [r for r in rows if r["seconds"] >= WARM_UP] or rows

    def median_of(sample):
        return {k: sorted(r[k] for r in sample)[len(sample) // 2] for k in ("seconds", "rss_kib", "fds", "threads")}
    warm, last = median_of(after[:5]), median_of(after[-5:])
    summary = {
        "date": time.strftime("%Y-%m-%d"), "minutes": a.minutes, "clients": a.clients,
        "start": rows[0], "afterWarmUp": warm, "end": last, "final": rows[-1],
        "gaps": sum(r.gaps for r in readers), "repeats": sum(r.repeats for r in readers),
        "reconnects": sum(max(0, r.opens - 1) for r in readers), "churned": counts["churned"],
        "churnFailures": counts["churn_failures"], "faults": len(faults), "plot": plotted,
    }
    print(json.dumps(summary, indent=1))
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    failures = []
    if last["fds"] > warm["fds"] + max(10, a.clients // 10):
        failures.append(f"descriptors grew from {warm['fds']} to {last['fds']}")
    if last["threads"] > warm["threads"]:
        failures.append(f"threads grew from {warm['threads']} to {last['threads']}")
    if last["rss_kib"] > max(warm["rss_kib"] * 1.10, warm["rss_kib"] + 4096):
        failures.append(f"RSS grew from {warm['rss_kib']} KiB to {last['rss_kib']} KiB")
    if summary["gaps"]:
        failures.append(f"{summary['gaps']} gaps in the clients' ticks")
    if summary["repeats"] > summary["reconnects"]:
        failures.append(f"{summary['repeats']} repeats for {summary['reconnects']} reconnects (at most one each)")
    for failure in failures:
        print("soak: FAILED:", failure, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
