"""Runs every benchmark scenario against every server, in alternation, and writes the tables.

Called by Benchmarks/run.sh after it has built everything (see that script for the set-up).
Each server runs pinned to CPU 0, the load generator (Benchmarks/load/petrel-load) to CPU 1.
For each round, each scenario runs once per server in turn (A B C ... A B C ...), so that drift
in the machine's state hits every server alike; the tables give the median over the rounds.

    python Benchmarks/bench.py [--rounds 3] [--servers petrel,nio,...] [--scenarios echo-100x16,...]
                               [--seconds 3] [--out .build/bench]
"""
from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOAD = ROOT / "Benchmarks/load/petrel-load"
PY = os.environ.get("PETREL_BENCH_PYTHON", str(ROOT / ".venv/bin/python"))
TICK = os.sysconf("SC_CLK_TCK")
SERVER_CPU, LOAD_CPU = "0", "1"


@dataclass
class ServerKind:
    name: str
    command: list[str]
    deflate: bool  # supports permessage-deflate
    env: dict[str, str] = field(default_factory=dict)
    stomp: bool = False  # speaks STOMP 1.2 on /stomp (petrel-echo)


def servers() -> list[ServerKind]:
    lib = str(ROOT / ".build-static/release/libpetrel.so")
    return [
        ServerKind("petrel", [str(ROOT / ".build/release/petrel-echo"), "--host", "127.0.0.1", "--threads", "1"], True,
                   stomp=True),
        ServerKind("petrel-c", [str(ROOT / "Benchmarks/servers/petrel-c-echo")], True),
        ServerKind("petrel-python", [PY, str(ROOT / "Benchmarks/servers/petrel_python_echo.py")], True,
                   {"PETREL_LIBRARY": lib}),
        ServerKind("petrel-asyncio", [PY, str(ROOT / "Benchmarks/servers/petrel_asyncio_echo.py")], True,
                   {"PETREL_LIBRARY": lib}),
        ServerKind("nio", [str(ROOT / "Benchmarks/peers/nio-echo/.build/release/nio-echo")], False),
        ServerKind("libwebsockets", [str(ROOT / "Benchmarks/peers/lws-echo")], True),
        ServerKind("websockets", [PY, str(ROOT / "Benchmarks/peers/websockets_echo.py")], True),
        # picows' core API has no permessage-deflate; with --deflate its server runs picows'
        # websockets-compatible layer, which has it.
        ServerKind("picows", [PY, str(ROOT / "Benchmarks/peers/picows_echo.py")], True),
    ] + base + engine


# The Redis Streams engine: petrel-echo with --engine, against a redis-server this script starts
# (pinned with the server: its work is the server side's) and stops at exit. Compare it with
# "petrel" in the fan-out scenarios: --servers petrel,petrel-redis --scenarios fanout-1k,fanout-10k
engine = [ServerKind("petrel-redis", [str(ROOT / ".build/release/petrel-echo"), "--host", "127.0.0.1", "--threads", "1"], True)]
_redis: dict = {}


def redis_url() -> str:
    if "url" not in _redis:
        folder = tempfile.mkdtemp(prefix="petrel-bench-redis-")
        port = free_port()
        proc = subprocess.Popen(["taskset", "-c", SERVER_CPU, "redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                 "--save", "", "--appendonly", "no", "--dir", folder, "--logfile", folder + "/redis.log"],
                                start_new_session=True)
        atexit.register(lambda: (proc.kill(), proc.wait()))
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2) as c:
                    c.sendall(b"PING\r\n")
                    if c.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError("redis-server did not start")
        _redis["url"] = f"redis://127.0.0.1:{port}"
    return _redis["url"]


# Before and after: PETREL_BASE_ECHO names a petrel-echo built from another commit (say, in a git
# worktree), run as the server "petrel-base" next to "petrel", same flags, in alternation.
base = [ServerKind("petrel-base", [os.environ["PETREL_BASE_ECHO"], "--host", "127.0.0.1", "--threads", "1"], True)] \
    if os.environ.get("PETREL_BASE_ECHO") else []


@dataclass
class Scenario:
    name: str
    title: str
    args: list[str]
    metric: str  # the JSON field compared across servers
    unit: str
    deflate: bool = False  # run the server with --deflate (servers without it are skipped)
    timeout: float = 120
    stomp: bool = False  # STOMP subscribers (--stomp): servers without STOMP are skipped


def scenarios(seconds: float) -> list[Scenario]:
    s = f"{seconds:g}"
    return [
        Scenario("echo-1x1", "echo 20 B text, 1 connection, window 1 (latency)",
                 ["--mode", "echo", "--conns", "1", "--window", "1", "--size", "20", "--seconds", s], "msgs_per_s", "msg/s"),
        Scenario("echo-1x64", "echo 20 B text, 1 connection, window 64",
                 ["--mode", "echo", "--conns", "1", "--window", "64", "--size", "20", "--seconds", s], "msgs_per_s", "msg/s"),
        Scenario("echo-100x16", "echo 20 B text, 100 connections, window 16",
                 ["--mode", "echo", "--conns", "100", "--window", "16", "--size", "20", "--seconds", s], "msgs_per_s", "msg/s"),
        Scenario("echo-16k", "echo 16 KiB binary, 10 connections, window 4",
                 ["--mode", "echo", "--conns", "10", "--window", "4", "--size", "16384", "--binary", "--seconds", s],
                 "mb_per_s", "MB/s"),
        Scenario("fanout-1k", "fan-out: 100 B each ms to 1,000 subscribers (1,000 messages)",
                 ["--mode", "fanout", "--conns", "1000", "--messages", "1000", "--size", "100", "--seconds", "60"],
                 "deliveries_per_s", "deliveries/s"),
        Scenario("fanout-10k", "fan-out: 100 B each ms to 10,000 subscribers (200 messages)",
                 ["--mode", "fanout", "--conns", "10000", "--messages", "200", "--size", "100", "--seconds", "90"],
                 "deliveries_per_s", "deliveries/s", timeout=240),
        # The same fan-outs to STOMP 1.2 subscribers on /stomp (MESSAGE frames of /topic/bench);
        # only servers that speak STOMP run them. The summary compares them with the plain ones.
        Scenario("fanout-1k-stomp", "STOMP fan-out: 100 B each ms to 1,000 STOMP subscribers (1,000 messages)",
                 ["--mode", "fanout", "--conns", "1000", "--messages", "1000", "--size", "100", "--seconds", "60",
                  "--stomp"], "deliveries_per_s", "deliveries/s", stomp=True),
        Scenario("fanout-10k-stomp", "STOMP fan-out: 100 B each ms to 10,000 STOMP subscribers (200 messages)",
                 ["--mode", "fanout", "--conns", "10000", "--messages", "200", "--size", "100", "--seconds", "90",
                  "--stomp"], "deliveries_per_s", "deliveries/s", timeout=240, stomp=True),
        Scenario("fanout-latency", "fan-out latency: 100 B each ms to 100 subscribers (3,000 messages; not saturated)",
                 ["--mode", "fanout", "--conns", "100", "--messages", "3000", "--size", "100", "--seconds", "60"],
                 "p99_us", "µs p99"),
        Scenario("fanout-latency-10", "fan-out latency: 100 B each ms to 10 subscribers (3,000 messages; light load)",
                 ["--mode", "fanout", "--conns", "10", "--messages", "3000", "--size", "100", "--seconds", "60"],
                 "p99_us", "µs p99"),
        Scenario("handshake", "handshakes: connect, upgrade, close; 50 in flight",
                 ["--mode", "handshake", "--conns", "50", "--seconds", s], "handshakes_per_s", "handshakes/s"),
        Scenario("idle-10k", "memory: 10,000 idle connections, permessage-deflate offered",
                 ["--mode", "idle", "--conns", "10000", "--deflate", "--seconds", "1"], "bytes_per_conn", "B/conn",
                 deflate=True),
        Scenario("ticks-100x16", "echo stock-tick JSON uncompressed, 100 connections, window 16 (the deflate baseline)",
                 ["--mode", "echo", "--conns", "100", "--window", "16", "--plain-ticks", "--seconds", s], "msgs_per_s",
                 "msg/s"),
        Scenario("deflate-100x16", "echo stock-tick JSON with permessage-deflate, 100 connections, window 16",
                 ["--mode", "echo", "--conns", "100", "--window", "16", "--deflate", "--seconds", s], "msgs_per_s", "msg/s",
                 deflate=True),
    ]


def skipped(kind: ServerKind, sc: Scenario) -> str | None:
    """Why a server does not run a scenario; None when it runs it."""
    if sc.deflate and not kind.deflate:
        return "no permessage-deflate"
    if sc.stomp and not kind.stomp:
        return "no STOMP"
    if kind.name == "petrel-redis" and not sc.name.startswith("fanout"):
        return "the engine is on the publish path only"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def start_server(kind: ServerKind, port: int, deflate: bool) -> subprocess.Popen:
    cmd = ["taskset", "-c", SERVER_CPU, *kind.command, "--port", str(port)]
    if deflate:
        cmd.append("--deflate")
    elif kind.name in ("petrel", "petrel-base", "petrel-redis"):
        cmd.append("--no-compression")
    if kind.name == "petrel-redis":
        cmd += ["--engine", redis_url()]
    env = {**os.environ, **kind.env}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    deadline = time.time() + 30
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{kind.name} exited with {proc.returncode}: {proc.stderr.read()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.05)
    stop_server(proc)
    raise RuntimeError(f"{kind.name} did not listen on {port}")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def server_pid(proc: subprocess.Popen) -> int:
    # taskset execs the server, so the pid is the server's own.
    return proc.pid


def run_one(kind: ServerKind, sc: Scenario) -> dict:
    port = free_port()
    proc = start_server(kind, port, sc.deflate)
    try:
        pid = server_pid(proc)
        args = list(sc.args)
        if sc.name.startswith("idle"):
            args += ["--server-pid", str(pid)]
        cpu0, t0 = cpu_seconds(pid), time.time()
        load = subprocess.run(["taskset", "-c", LOAD_CPU, str(LOAD), "--port", str(port), *args],
                              capture_output=True, text=True, timeout=sc.timeout)
        cpu1, t1 = cpu_seconds(pid), time.time()
        lines = [l for l in load.stdout.splitlines() if l.startswith("{")]
        result = json.loads(lines[-1]) if lines else {}
        result["server_cpu"] = round((cpu1 - cpu0) / max(t1 - t0, 1e-9), 3)
        result["exit"] = load.returncode
        if load.returncode != 0:
            result["error"] = (load.stderr.strip().splitlines() or ["exit %d" % load.returncode])[-1][:200]
        return result
    except subprocess.TimeoutExpired:
        return {"exit": -1, "error": f"timed out after {sc.timeout:g} s"}
    finally:
        stop_server(proc)


def human(v: float, unit: str) -> str:
    if unit == "MB/s":
        return f"{v:,.0f} MB/s"
    if unit == "B/conn":
        return f"{v:,.0f} B"
    if v >= 1e6:
        return f"{v / 1e6:.2f} M"
    if v >= 1e3:
        return f"{v / 1e3:.1f} k"
    return f"{v:.0f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--servers", default="")
    ap.add_argument("--scenarios", default="")
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--out", default=str(ROOT / ".build/bench"))
    ap.add_argument("--from-jsonl", help="rewrite the tables from an earlier run's results.jsonl; run nothing")
    a = ap.parse_args()
    kinds = [k for k in servers() if not a.servers or k.name in a.servers.split(",")]
    scs = [s for s in scenarios(a.seconds) if not a.scenarios or s.name in a.scenarios.split(",")]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[tuple[str, str], list[dict]] = {}
    if a.from_jsonl:
        for line in Path(a.from_jsonl).read_text().splitlines():
            r = json.loads(line)
            results.setdefault((r["scenario"], r["server"]), []).append(r)
        a.rounds = max((r.get("round", 1) for rows in results.values() for r in rows), default=1)
        write_tables(out, kinds, scs, results, a)
        return
    raw = out / "results.jsonl"
    with raw.open("w") as log:
        for r in range(a.rounds):
            for sc in scs:
                for kind in kinds:
                    if skipped(kind, sc):
                        continue
                    res = run_one(kind, sc)
                    res.update(server=kind.name, scenario=sc.name, round=r + 1)
                    log.write(json.dumps(res) + "\n")
                    log.flush()
                    results.setdefault((sc.name, kind.name), []).append(res)
                    shown = res.get(sc.metric)
                    print(f"round {r + 1} {sc.name:15} {kind.name:14} "
                          f"{human(shown, sc.unit) if shown is not None else res.get('error', '?'):>12} "
                          f"server cpu {res.get('server_cpu', 0):.2f} load cpu {res.get('cpu', 0):.2f}", flush=True)
    write_tables(out, kinds, scs, results, a)


def median(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if r.get("exit") == 0 and isinstance(r.get(key), (int, float))]
    return statistics.median(values) if values else None


def write_tables(out: Path, kinds, scs, results, a) -> None:
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), platform.processor())
    lines = [f"# Petrel benchmarks, {time.strftime('%Y-%m-%d')}", "",
             f"Machine: {cpu}, {os.cpu_count()} cores, Linux {platform.release()}. Server on CPU {SERVER_CPU}, "
             f"load generator on CPU {LOAD_CPU}. Median of {a.rounds} alternating rounds, {a.seconds:g} s per echo run.",
             "", "Ratio: Petrel's figure over the server's (for bytes per connection: the server's over Petrel's), "
             "so above 1 means Petrel is ahead.", ""]
    lower_better = {"bytes_per_conn"}
    for sc in scs:
        base = median(results.get((sc.name, "petrel"), []), sc.metric)
        lines += [f"## {sc.title}", "", f"| server | {sc.unit} | Petrel ahead by | p50 µs | p99 µs | server CPU | load CPU | notes |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for kind in kinds:
            rows = results.get((sc.name, kind.name))
            if not rows:
                lines.append(f"| {kind.name} | n/a | | | | | | {skipped(kind, sc) or 'not run'} |")
                continue
            v = median(rows, sc.metric)
            if v is None:
                err = next((r.get("error") for r in rows if r.get("error")), "failed")
                lines.append(f"| {kind.name} | failed | | | | | | {err} |")
                continue
            ratio = ""
            if base:
                ratio = f"{(v / base if sc.metric in lower_better else base / v):.2f}×"
            notes = []
            if sc.metric == "deliveries_per_s":
                lost = max((r.get("lost", 0) for r in rows), default=0)
                notes.append(f"lost {lost}")
            if "ratio" in rows[0]:
                notes.append(f"wire/plain {median(rows, 'ratio'):.3f}")
            p50, p99 = median(rows, "p50_us"), median(rows, "p99_us")
            lines.append(f"| {kind.name} | {human(v, sc.unit)} | {ratio} | {'' if p50 is None else f'{p50:,.0f}'} | "
                         f"{'' if p99 is None else f'{p99:,.0f}'} | {median(rows, 'server_cpu') or 0:.2f} | "
                         f"{median(rows, 'cpu') or 0:.2f} | {', '.join(notes)} |")
        lines.append("")
    lines += summary(kinds, scs, results)
    lines += bars(results)
    if any(sc.stomp for sc in scs):
        lines += stomp_ratio(results)
    (out / "results.md").write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"\nwritten: {out / 'results.md'} and {out / 'results.jsonl'}")


def summary(kinds, scs, results) -> list[str]:
    """One row per scenario, one column per server: the medians side by side."""
    head = "| scenario | " + " | ".join(k.name for k in kinds) + " |"
    rows = [head, "| --- |" + " --- |" * len(kinds)]
    for sc in scs:
        cells = []
        for k in kinds:
            v = median(results.get((sc.name, k.name), []), sc.metric)
            cells.append("n/a" if not results.get((sc.name, k.name)) else ("failed" if v is None else human(v, sc.unit)))
        rows.append(f"| {sc.name} ({sc.unit}) | " + " | ".join(cells) + " |")
    return ["## Summary (medians)", "", *rows, ""]


def bars(results) -> list[str]:
    """The issue's acceptance bars, computed from the medians of this run."""
    def m(scenario: str, server: str, key: str) -> float | None:
        return median(results.get((scenario, server), []), key)

    def best_peer(scenario: str, key: str) -> tuple[str, float | None]:
        peers = [(k, m(scenario, k, key)) for k in ("nio", "libwebsockets", "websockets", "picows")]
        peers = [(k, v) for k, v in peers if v]
        return max(peers, key=lambda kv: kv[1]) if peers else ("none", None)

    rows = []

    def bar(text: str, value: float | None, need: float, unit: str = "×", lower: bool = False) -> None:
        if value is None:
            rows.append(f"| {text} | not measured | | |")
            return
        ok = value <= need if lower else value >= need
        rows.append(f"| {text} | {value:.2f}{unit} | {'≤' if lower else '≥'} {need:g}{unit} | {'yes' if ok else '**no**'} |")

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a and b else None

    bar("echo 100 conns w16: Petrel / NIOWebSocket", ratio(m("echo-100x16", "petrel", "msgs_per_s"), m("echo-100x16", "nio", "msgs_per_s")), 2.5)
    bar("echo 1 conn w64: Petrel / NIOWebSocket", ratio(m("echo-1x64", "petrel", "msgs_per_s"), m("echo-1x64", "nio", "msgs_per_s")), 1.5)
    name, v = best_peer("echo-16k", "mb_per_s")
    bar(f"echo 16 KiB: Petrel / best peer ({name})", ratio(m("echo-16k", "petrel", "mb_per_s"), v), 1.3)
    idle = m("idle-10k", "petrel", "bytes_per_conn")
    bar("idle connection with permessage-deflate, bytes", idle, 1024, unit=" B", lower=True)
    name, v = best_peer("fanout-10k", "deliveries_per_s")
    lost = max((r.get("lost", 0) for r in results.get(("fanout-10k", "petrel"), [])), default=None)
    bar(f"fan-out 10k: Petrel / best peer ({name}), lost {lost}", ratio(m("fanout-10k", "petrel", "deliveries_per_s"), v), 3)
    bar("deflate echo / plain echo of the same ticks (Petrel)",
        ratio(m("deflate-100x16", "petrel", "msgs_per_s"), m("ticks-100x16", "petrel", "msgs_per_s")), 0.4)
    c_ratio = ratio(m("echo-100x16", "petrel-c", "msgs_per_s"), m("echo-100x16", "petrel", "msgs_per_s"))
    bar("C ABI / Swift, echo 100 conns w16", c_ratio, 0.9)
    bar("Python bindings / picows, echo 100 conns w16",
        ratio(m("echo-100x16", "petrel-python", "msgs_per_s"), m("echo-100x16", "picows", "msgs_per_s")), 1.0)
    return ["## The bars of issue 9", "", "| bar | this run | needed | met |", "| --- | --- | --- | --- |", *rows, ""]


def stomp_ratio(results) -> list[str]:
    """STOMP fan-out against plain fan-out on Petrel (the STOMP issue's goal: at least 0.70 at 10k)."""
    def cell(v: float | None, runs: list[dict], lost: int | None) -> str:
        return "not run" if not runs else f"{'failed' if v is None else human(v, 'deliveries/s')} (lost {lost})"

    rows, line = [], ""
    for n in ("1k", "10k"):
        plain, stomp = results.get((f"fanout-{n}", "petrel"), []), results.get((f"fanout-{n}-stomp", "petrel"), [])
        p, s = median(plain, "deliveries_per_s"), median(stomp, "deliveries_per_s")
        if not plain and not stomp:
            continue
        lost_p = max((r.get("lost", 0) for r in plain), default=None)
        lost_s = max((r.get("lost", 0) for r in stomp), default=None)
        r = s / p if s and p else None
        need, met = ("≥ 0.7×", "" if r is None else ("yes" if r >= 0.7 else "**no**")) if n == "10k" else ("", "")

        rows.append(f"| {n} subscribers | {cell(p, plain, lost_p)} | {cell(s, stomp, lost_s)} | "
                    f"{'' if r is None else f'{r:.2f}×'} | {need} | {met} |")
        if n == "10k":
            line = (f"STOMP / plain fan-out at 10k subscribers (Petrel): {'not measured' if r is None else f'{r:.2f}×'}"
                    f" (goal ≥ 0.70{'' if r is None else ': met' if r >= 0.7 else ': **not met**'}); "
                    f"lost: STOMP {lost_s}, plain {lost_p}")
    return ["## STOMP fan-out / plain fan-out (Petrel, deliveries per second; lost: the most of any round)", "",
            "| subscribers | plain /sub | STOMP /stomp | STOMP / plain | needed | met |",
            "| --- | --- | --- | --- | --- | --- |", *rows, "", *([line, ""] if line else [])]


if __name__ == "__main__":
    main()
