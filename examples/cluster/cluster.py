#!/usr/bin/env python3
"""A Petrel cluster on one machine: redis-server, the three stock servers sharing the "ticks"
topic through it (Swift runs the feed; C and Python serve the same ticks with --no-feed), and
nginx in front of them, round-robin, no sticky sessions. Prints the URL; Ctrl-C stops it all.

    make cluster                      # builds what it needs, then runs this
    python3 examples/cluster/cluster.py [--port 8080] [--tick-min S] [--tick-max S]

Every process gets its own config file and log in a temporary folder (printed) on a free
loopback port. The tests (Tests/Cluster) use the Cluster class below.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
NODES = ("swift", "c", "python")
FEED = "swift"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, process: "subprocess.Popen[bytes]", what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout} s")


class Cluster:
    """redis-server, three stock servers and nginx, each a child process on loopback."""

    def __init__(self, port: int = 0, tick_min: float = 0.05, tick_max: float = 2.0, threads: int = 1,
                 prefix: Path | None = None, python: str | None = None, folder: str | None = None) -> None:
        self.port = port or free_port()
        self.tick = (tick_min, tick_max)
        self.threads = threads
        self.prefix = Path(prefix or os.environ.get("PETREL_PREFIX") or ROOT / ".build" / "c-prefix")
        self.python = python or os.environ.get("PETREL_PYTHON") or sys.executable
        self.dir = Path(folder or tempfile.mkdtemp(prefix="petrel-cluster-"))
        self.redis_port = free_port()
        self.node_ports = {name: free_port() for name in NODES}
        self.processes: dict[str, "subprocess.Popen[bytes]"] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def engine(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}"

    def node_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.node_ports[name]}/"

    def health(self, name: str) -> dict[str, Any]:
        with urllib.request.urlopen(self.node_url(name) + "health", timeout=5) as r:
            document: dict[str, Any] = json.load(r)
            return document

    # -- processes

    def _spawn(self, name: str, command: list[str], env: dict[str, str] | None = None) -> "subprocess.Popen[bytes]":
        log = open(self.dir / f"{name}.log", "ab")
        p = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             env={**os.environ, **(env or {})})
        log.close()
        self.processes[name] = p
        return p

    def start_redis(self) -> None:
        conf = self.dir / "redis.conf"
        conf.write_text(f"port {self.redis_port}\nbind 127.0.0.1\nsave \"\"\nappendonly no\ndaemonize no\n"
                        f"dir {self.dir}\nlogfile {self.dir / 'redis-server.log'}\n")
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        wait_port(self.redis_port, self._spawn("redis", [binary, str(conf)]), "redis-server")

    def node_command(self, name: str) -> tuple[list[str], dict[str, str]]:
        flags = ["--port", str(self.node_ports[name]), "--engine", self.engine, "--threads", str(self.threads),
                 "--tick-min", str(self.tick[0]), "--tick-max", str(self.tick[1])]
        if name != FEED:
            flags.append("--no-feed")
        if name == "swift":
            return [str(ROOT / "examples/stock-swift/.build/release/stock-server"), *flags], {}
        if name == "c":
            return [str(ROOT / "examples/stock-c/stock-server"), *flags], {}
        env = {"PETREL_LIBRARY": str(self.prefix / "lib" / "libpetrel.so"),
               "PYTHONPATH": str(ROOT / "bindings/python/src"), "PYTHONUNBUFFERED": "1"}
        return [self.python, str(ROOT / "examples/stock-python/stock_server.py"), *flags], env

    def start_node(self, name: str) -> None:
        command, env = self.node_command(name)
        if not Path(command[0 if name != "python" else 1]).exists():
            raise RuntimeError(f"{command[0 if name != 'python' else 1]} is not built (make cluster builds it)")
        wait_port(self.node_ports[name], self._spawn(name, command, env), f"the {name} stock server")

    def start_nginx(self) -> None:
        temp = self.dir / "nginx-temp"
        temp.mkdir(exist_ok=True)
        servers = "\n".join(f"        server 127.0.0.1:{p} max_fails=1 fail_timeout=3s;" for p in self.node_ports.values())
        temps = "\n".join(f"    {k}_temp_path {temp / k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        conf = self.dir / "nginx.conf"
        conf.write_text(f"""daemon off;
worker_processes 1;
worker_rlimit_nofile 16384;
pid {self.dir / 'nginx.pid'};
error_log {self.dir / 'nginx-error.log'} warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
{temps}
    # Round-robin over the three servers, no stickiness: a client that reconnects may land on
    # any of them and resumes there. A server that refuses is skipped for 3 s.
    upstream petrel {{
{servers}
    }}
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}
    server {{
        listen 127.0.0.1:{self.port};
        location / {{
            proxy_pass http://petrel;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_buffering off;       # event streams go out as they come
            proxy_cache off;
            proxy_read_timeout 300s;   # the servers ping every 15 s
            proxy_next_upstream error timeout;
        }}
    }}
}}
""")
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        p = self._spawn("nginx", [binary, "-e", str(self.dir / "nginx-error.log"), "-p", str(self.dir), "-c", str(conf)])
        wait_port(self.port, p, "nginx")

    def start(self) -> "Cluster":
        try:
            self.start_redis()
            for name in NODES:
                self.start_node(name)
            self.start_nginx()
        except Exception:
            self.stop()
            raise
        return self

    def kill(self, name: str) -> None:
        """SIGKILL: no goodbye to clients, no flush."""
        p = self.processes.pop(name)
        p.kill()
        p.wait(10)

    def restart_redis(self) -> None:
        """Stops redis-server and starts a new one on the same port, without the old data."""
        self.kill("redis")
        self.start_redis()

    def stop(self) -> None:
        for name in ["nginx", *reversed(NODES), "redis"]:
            p = self.processes.pop(name, None)
            if p is None:
                continue
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)

    def logs(self) -> str:
        return "\n".join(f"--- {f.name}\n{f.read_text(errors='replace')[-3000:]}" for f in sorted(self.dir.glob("*.log")))

    def __enter__(self) -> "Cluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=8080, help="nginx's port (default 8080; 0 picks a free one)")
    p.add_argument("--tick-min", type=float, default=0.05, help="shortest time between ticks (s)")
    p.add_argument("--tick-max", type=float, default=2.0, help="longest time between ticks (s)")
    args = p.parse_args()
    cluster = Cluster(args.port, args.tick_min, args.tick_max)

    def interrupted(*_: object) -> None:
        # Once: a second Ctrl-C (or the terminal's SIGINT to the whole group) must not cut the stop short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)
    try:
        cluster.start()
        print(f"Petrel cluster: redis-server on {cluster.redis_port}; stock servers "
              + ", ".join(f"{n} on {cluster.node_ports[n]}" + (" (feed)" if n == FEED else "") for n in NODES)
              + f"; configs and logs in {cluster.dir}")
        print(f"open {cluster.url}   (nginx in front of all three; Ctrl-C stops everything)", flush=True)
        while all(p.poll() is None for p in cluster.processes.values()):
            time.sleep(0.5)
        gone = [n for n, p in cluster.processes.items() if p.poll() is not None]
        print(f"cluster: {', '.join(gone)} exited; stopping\n{cluster.logs()}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("stopping")
    except RuntimeError as e:
        print(f"cluster: {e}\n{cluster.logs()}", file=sys.stderr)
        sys.exit(1)
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
