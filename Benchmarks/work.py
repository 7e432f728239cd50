"""Work per message, not time: user-space instructions per echoed message, per fan-out delivery
and per handshake, counted by valgrind's callgrind on the server, for Petrel and each peer that
builds here, in one table. Wall-clock figures on shared machines swing by 2x between days;
these counts repeat to within a percent or so (the table says how far they spread).

Each figure is a difference: the server under callgrind for a short and a long run of the same
load, (instructions of the long - of the short) / (messages of the long - of the short), which
takes out start-up, connection set-up and shut-down. The server is pinned to CPU 0 and the load
generator (Benchmarks/load/petrel-load) to CPU 1, as in bench.py.

    .venv/bin/python Benchmarks/work.py                          # every server and scenario, 3 times
    .venv/bin/python Benchmarks/work.py --servers petrel,petrel-c --scenarios echo --repeat 1

The compression rows (deflate-zlib, deflate-isal, deflate-ctx-zlib, deflate-ctx-isal) echo
stock-tick JSON under permessage-deflate with Petrel's server only, once per compressor, with
the client's ticks compressed each on its own or as one stream (-ctx); they run with glibc's
memcpy as vector loops (VECTOR below).

Needs what `bash Benchmarks/run.sh` builds (release servers, petrel-load) and valgrind.
Writes .build/bench/work.md and work.jsonl.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import LOAD, LOAD_CPU, ROOT, SERVER_CPU, ServerKind, free_port, servers  # noqa: E402


@dataclass
class Work:
    name: str
    title: str
    unit: str  # what one count is: a message, a delivery, a handshake
    field: str  # petrel-load's JSON field that counts them
    short: list[str]  # the load of the short run
    long: list[str]  # and of the long one
    # For the compression rows: Petrel's server flags instead of --no-compression, and the
    # servers that can run the row (None: all).
    server_args: list[str] | None = None
    only: tuple[str, ...] | None = None


ECHO = ["--mode", "echo", "--conns", "100", "--window", "16", "--size", "20", "--warmup", "0"]
FANOUT = ["--mode", "fanout", "--conns", "1000", "--size", "100", "--interval-us", "20000", "--seconds", "120"]
HANDSHAKE = ["--mode", "handshake", "--conns", "10"]
# Echo of stock-tick JSON under permessage-deflate, the server keeping its context (--deflate).
# The client's ticks are each compressed on their own, or (--client-context) as one stream, as a
# browser keeps its context.
DEFLATE = ["--mode", "echo", "--conns", "100", "--window", "16", "--deflate", "--warmup", "0"]
# glibc's memcpy/memset as vector loops for the compression rows: callgrind counts `rep movsb`
# once per byte, which would turn a compressor's 32 KiB history copy into 32,768 "instructions"
# (docs/benchmarks.md, "Compression engines"). The other rows keep glibc's defaults.
VECTOR = {"GLIBC_TUNABLES": "glibc.cpu.x86_rep_stosb_threshold=0x7fffffffffffffff:"
                            "glibc.cpu.x86_rep_movsb_threshold=0x7fffffffffffffff"}

WORKS = [
    Work("echo", "echo 20 B text, 100 connections, window 16", "message", "msgs",
         ECHO + ["--seconds", "5"], ECHO + ["--seconds", "20"]),
    Work("fanout", "fan-out of 100 B messages to 1,000 subscribers", "delivery", "deliveries",
         FANOUT + ["--messages", "100"], FANOUT + ["--messages", "500"]),
    Work("handshake", "handshakes: connect, upgrade, close; 10 in flight", "handshake", "handshakes",
         HANDSHAKE + ["--seconds", "5"], HANDSHAKE + ["--seconds", "20"]),
    *[Work(f"deflate{'-ctx' if ctx else ''}-{engine}",
           f"echo tick JSON with permessage-deflate, {'client keeps context' if ctx else 'each client tick alone'}, "
           f"{'ISA-L' if engine == 'isal' else 'zlib'} compressing", "message", "msgs",
           DEFLATE + (["--client-context"] if ctx else []) + ["--seconds", "5"],
           DEFLATE + (["--client-context"] if ctx else []) + ["--seconds", "20"],
           server_args=["--deflate", "--compress-engine", engine], only=("petrel",))
      for ctx in (False, True) for engine in ("zlib", "isal")],
]

# Servers that can run under valgrind here: the compiled ones (the Python servers can too, but
# count the interpreter: ask for them by name).
DEFAULT_SERVERS = ["petrel", "petrel-c", "libwebsockets", "nio"]


def measure(kind: ServerKind, load_args: list[str], field: str, out: Path,
            server_args: list[str] | None = None) -> tuple[int, int]:
    """(instructions, units) of the server for one run of the load; `field` counts the units."""
    port = free_port()
    command = list(kind.command)
    if kind.name == "nio":
        # Valgrind 3.19 cannot read the DWARF 5 forms in NIO's C modules and gives up: run a
        # copy without debug information (the counts are the same; only the names go).
        stripped = out.parent / "nio-echo.stripped"
        subprocess.run(["strip", "-g", "-o", str(stripped), command[0]], check=True)
        command[0] = str(stripped)
    cmd = ["taskset", "-c", SERVER_CPU, "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
           *command, "--port", str(port)]
    env = {**os.environ, **kind.env}
    if server_args is not None:
        cmd += server_args
        env.update(VECTOR)
    elif kind.name in ("petrel", "petrel-base"):
        cmd.append("--no-compression")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)
    try:
        deadline = time.time() + 120  # valgrind starts slowly
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{kind.name} exited under valgrind: {proc.stderr.read()[-1500:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError(f"{kind.name} did not listen under valgrind")
                time.sleep(0.1)
        load = subprocess.run(["taskset", "-c", LOAD_CPU, str(LOAD), "--port", str(port), *load_args],
                              capture_output=True, text=True, timeout=600)
        lines = [line for line in load.stdout.splitlines() if line.startswith("{")]
        result = json.loads(lines[-1]) if lines else {}
    finally:
        # SIGTERM ends every server here (NIO's ignores SIGINT), and valgrind then writes its
        # counts; SIGKILL would not.
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return total_instructions(out), int(result.get(field, 0) or 0)


def total_instructions(path: Path) -> int:
    """The program's total instructions from callgrind's output (the `summary:` line)."""
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("summary:") or line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--servers", default=",".join(DEFAULT_SERVERS))
    ap.add_argument("--scenarios", default=",".join(w.name for w in WORKS))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / ".build/bench"))
    a = ap.parse_args()
    kinds = [k for k in servers() if k.name in a.servers.split(",")]
    works = [w for w in WORKS if w.name in a.scenarios.split(",")]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    figures: dict[tuple[str, str], list[float]] = {}
    with (out / "work.jsonl").open("w") as log:
        for r in range(a.repeat):
            for w in works:
                for kind in kinds:
                    if w.only is not None and kind.name not in w.only:
                        continue
                    try:
                        i1, n1 = measure(kind, w.short, w.field, out / f"cg.{kind.name}.{w.name}.short", w.server_args)
                        i2, n2 = measure(kind, w.long, w.field, out / f"cg.{kind.name}.{w.name}.long", w.server_args)
                    except Exception as e:  # a peer that cannot run this: say so, go on
                        print(f"{w.name:10} {kind.name:14} failed: {e}", flush=True)
                        continue
                    per = (i2 - i1) / (n2 - n1) if n2 > n1 else float("nan")
                    figures.setdefault((w.name, kind.name), []).append(per)
                    log.write(json.dumps({"work": w.name, "server": kind.name, "repeat": r + 1, "short": [i1, n1],
                                          "long": [i2, n2], "per": per}) + "\n")
                    log.flush()
                    print(f"{w.name:10} {kind.name:14} {per:10,.1f} instructions per {w.unit} "
                          f"({n1:,} and {n2:,} {w.unit}s)", flush=True)
    lines = [f"# Instructions per unit of work, {time.strftime('%Y-%m-%d')}", "",
             "valgrind --tool=callgrind on the server; the difference between a short and a long run of the same "
             f"load over the difference in units. Median of {a.repeat}, with the spread (max - min) / median.", "",
             "| work | " + " | ".join(k.name for k in kinds) + " |", "| --- |" + " --- |" * len(kinds)]
    for w in works:
        cells = []
        for k in kinds:
            v = figures.get((w.name, k.name), [])
            if not v:
                cells.append("n/a")
                continue
            m = statistics.median(v)
            spread = (max(v) - min(v)) / m * 100 if len(v) > 1 and m else 0
            cells.append(f"{m:,.0f} (±{spread:.1f}%)" if len(v) > 1 else f"{m:,.0f}")
        lines.append(f"| per {w.unit}: {w.title} | " + " | ".join(cells) + " |")
    (out / "work.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nwritten: {out / 'work.md'}")


if __name__ == "__main__":
    main()
