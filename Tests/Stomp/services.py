"""Real brokers for the STOMP client tests: `rabbitmq()` starts RabbitMQ with its STOMP and
Web-STOMP plugins as a child process on loopback and stops it again.

The recipe is the one in shared/TEST-SERVICES.md ("RabbitMQ with STOMP and Web-STOMP"): its own
config, plugin, mnesia and log folders in a temporary directory owned by the `rabbitmq` user,
free ports for AMQP, STOMP, Web-STOMP, Erlang distribution and epmd, and every process it started
stopped by its process id at the end. Needs the Debian package `rabbitmq-server`
(`bash tools/apt.sh rabbitmq-server`) and root (the Debian start script drops to `rabbitmq`).

Run alone to check the broker starts and stops:
    .venv/bin/python Tests/Stomp/services.py
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import websocket  # websocket-client, a dependency of stomp.py

START_SCRIPT = "/usr/sbin/rabbitmq-server"
START_TIMEOUT = 120.0  # it was up 8 s after start on an idle machine; a busy one is slower
STOP_TIMEOUT = 15.0


@dataclasses.dataclass
class Broker:
    host: str
    port: int  # Web-STOMP
    ws_path: str
    stomp_port: int  # plain STOMP over TCP
    amqp_port: int
    directory: Path

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}{self.ws_path}"

    def log(self) -> str:
        return broker_log(self.directory)


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (bound to port 0 together, then released)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def broker_log(directory: Path, tail: int = 12000) -> str:
    """The start script's output and RabbitMQ's own log files, each cut to its last `tail` chars."""
    parts = []
    for path in [directory / "startup.log", *sorted((directory / "log").glob("*"))]:
        if path.is_file():
            text = path.read_text(errors="replace")
            parts.append(f"--- {path.name} ---\n{text[-tail:]}")
    return "\n".join(parts) or "(no log written)"


def stomp_connect_works(url: str, timeout: float = 3.0) -> bool:
    """True when a STOMP 1.2 CONNECT over the WebSocket at `url` is answered with CONNECTED."""
    try:
        ws = websocket.create_connection(url, timeout=timeout)
    except (OSError, websocket.WebSocketException):
        return False
    try:
        ws.send("CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\n\n\x00")
        reply = ws.recv()
        if isinstance(reply, bytes):
            reply = reply.decode(errors="replace")
        ok = reply.startswith("CONNECTED")
        if ok:
            ws.send("DISCONNECT\n\n\x00")
        return ok
    except (OSError, websocket.WebSocketException):
        return False
    finally:
        ws.close()


# --- processes, by pid -------------------------------------------------------------------------

def _proc(pid: int, name: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes()
    except OSError:
        return b""


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _ppid(pid: int) -> int:
    stat = _proc(pid, "stat").decode(errors="replace")
    # "pid (comm) state ppid ...": comm may hold spaces or parentheses, so split after the last ')'
    try:
        return int(stat[stat.rindex(")") + 2:].split()[1])
    except (ValueError, IndexError):
        return -1


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid in _all_pids():
        children.setdefault(_ppid(pid), []).append(pid)
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _exe_name(pid: int) -> str:
    argv = _proc(pid, "cmdline").split(b"\0")
    return os.path.basename(argv[0].decode(errors="replace")) if argv and argv[0] else ""


def _has_env(pid: int, entry: str) -> bool:
    return entry.encode() in _proc(pid, "environ").split(b"\0")


def _broker_processes(script: int, nodename: str, epmd_port: int) -> dict[int, str]:
    """The processes this start made: the script's descendants (su, sh, beam.smp, erl_child_setup,
    ...) and the epmd daemon, which detaches from the tree and is known by its ERL_EPMD_PORT."""
    found = {pid: _exe_name(pid) for pid in _descendants(script)}
    for pid in _all_pids():
        if pid in found or pid == script:
            continue
        name = _exe_name(pid)
        if name == "epmd" and _has_env(pid, f"ERL_EPMD_PORT={epmd_port}"):
            found[pid] = name
        elif name == "beam.smp" and _has_env(pid, f"RABBITMQ_NODENAME={nodename}"):
            found[pid] = name
    return found


def _alive(pid: int) -> bool:
    # a zombie has no cmdline left; it counts as gone
    return Path(f"/proc/{pid}").exists() and bool(_proc(pid, "cmdline"))


def _kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _wait_gone(pids, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    left = [p for p in pids if _alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [p for p in left if _alive(p)]
    return left


def _stop(proc: subprocess.Popen, nodename: str, epmd_port: int) -> None:
    """Kills the start script, then beam.smp and epmd, each by pid; SIGKILL whatever is left."""
    others = _broker_processes(proc.pid, nodename, epmd_port)  # collect before the tree breaks up
    _kill(proc.pid, signal.SIGTERM)
    beams = [p for p, n in others.items() if n == "beam.smp"]
    for pid in beams:
        _kill(pid, signal.SIGTERM)  # the Erlang VM stops RabbitMQ gracefully on SIGTERM
    for pid in _wait_gone(beams, STOP_TIMEOUT):
        _kill(pid, signal.SIGKILL)
    epmds = [p for p, n in others.items() if n == "epmd"]
    for pid in epmds:
        _kill(pid, signal.SIGTERM)
    rest = [p for p in others if p not in beams]
    for pid in _wait_gone(rest, 5):
        _kill(pid, signal.SIGKILL)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    left = _wait_gone(others, 5)
    assert not left, f"RabbitMQ processes still running: {left}"


@contextlib.contextmanager
def rabbitmq():
    """Starts RabbitMQ with Web-STOMP at ws://127.0.0.1:PORT/ws; yields a Broker; stops it."""
    if not os.path.exists(START_SCRIPT):
        raise RuntimeError(f"{START_SCRIPT} is missing: run `bash tools/apt.sh rabbitmq-server`")
    amqp, stomp, ws, dist, epmd = free_ports(5)
    nodename = f"petreltest{ws}@localhost"
    directory = Path(tempfile.mkdtemp(prefix="petrel-rabbitmq-"))
    (directory / "mnesia").mkdir()
    (directory / "log").mkdir()
    (directory / "enabled_plugins").write_text("[rabbitmq_stomp,rabbitmq_web_stomp].\n")
    (directory / "rabbitmq.conf").write_text(
        f"listeners.tcp.default = 127.0.0.1:{amqp}\n"
        f"stomp.listeners.tcp.1 = 127.0.0.1:{stomp}\n"
        f"web_stomp.tcp.port = {ws}\n"
        "web_stomp.tcp.ip = 127.0.0.1\n"
        "loopback_users = none\n")
    shutil.chown(directory, "rabbitmq", "rabbitmq")
    for path in directory.rglob("*"):
        shutil.chown(path, "rabbitmq", "rabbitmq")
    env = dict(os.environ,
               RABBITMQ_CONFIG_FILE=str(directory / "rabbitmq"),
               RABBITMQ_ENABLED_PLUGINS_FILE=str(directory / "enabled_plugins"),
               RABBITMQ_MNESIA_BASE=str(directory / "mnesia"),
               RABBITMQ_LOG_BASE=str(directory / "log"),
               RABBITMQ_FEATURE_FLAGS_FILE=str(directory / "ff"),
               RABBITMQ_NODENAME=nodename,
               RABBITMQ_DIST_PORT=str(dist),
               ERL_EPMD_PORT=str(epmd))
    broker = Broker("127.0.0.1", ws, "/ws", stomp, amqp, directory)
    with open(directory / "startup.log", "wb") as out:
        proc = subprocess.Popen([START_SCRIPT], env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, cwd=directory)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not stomp_connect_works(broker.url):
            if proc.poll() is not None:
                raise RuntimeError(f"RabbitMQ exited with {proc.returncode} while starting:\n"
                                   + broker_log(directory))
            if time.monotonic() > deadline:
                raise RuntimeError(f"RabbitMQ's Web-STOMP did not answer a CONNECT at {broker.url} "
                                   f"within {START_TIMEOUT:.0f} s:\n" + broker_log(directory))
            time.sleep(0.5)
        yield broker
    finally:
        try:
            _stop(proc, nodename, epmd)
        finally:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    started = time.monotonic()
    with rabbitmq() as b:
        print(f"RabbitMQ Web-STOMP at {b.url} after {time.monotonic() - started:.1f} s")
        print({pid: name for pid, name in _broker_processes(os.getpid(), "", 0).items()})
    print("stopped")
