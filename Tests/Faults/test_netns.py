"""A partition made by the kernel, not by the proxy: the server in one network namespace, a
reconnecting client in another, joined by a veth pair; iptables in the client's namespace
then drops every packet between them (no reset, no FIN: a cable cut). Both ends find the dead
peer by its missing pong within the ping interval plus the pong timeout; once the rules are
gone the client connects again by itself and its messages are echoed.

Needs root (CAP_NET_ADMIN), `ip` and `iptables` (the test command installs it); skipped with the
reason where the kernel or the container does not allow network namespaces. Run by tools/test.sh.
"""
from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
import time
from typing import IO, Iterator

import pytest

INTERVAL, TIMEOUT = 0.4, 0.4
BOUND = INTERVAL + TIMEOUT + 1.0
TAG = f"pt{os.getpid() % 100000}"
NS_SERVER, NS_CLIENT = f"{TAG}s", f"{TAG}c"
SERVER_IP, CLIENT_IP, PORT = "10.77.0.1", "10.77.0.2", 8765

SERVER = f"""
import os, sys, time, petrel
say = lambda *a: os.write(1, (" ".join(map(str, a)) + "\\n").encode())  # one write a line: two threads say things
s = petrel.Server("{SERVER_IP}", {PORT}, threads=1, ping_interval={INTERVAL}, ping_timeout={TIMEOUT},
                  on_open=lambda c: say("opened", time.monotonic()),
                  on_message=lambda c, m: c.send(m),
                  on_close=lambda c, code, reason: say("closed", time.monotonic(), code, reason))
s.start()
say("ready")
sys.stdin.read()
s.close()
"""

CLIENT = f"""
import os, sys, time, petrel
say = lambda *a: os.write(1, (" ".join(map(str, a)) + "\\n").encode())  # one write a line: two threads say things
c = petrel.connect("ws://{SERVER_IP}:{PORT}/", ping_interval={INTERVAL}, ping_timeout={TIMEOUT}, open_timeout=1.0,
                   reconnect=petrel.Reconnect(initial_delay=0.1, max_delay=0.4),
                   on_state=lambda state, attempt, delay, reason: say("state", time.monotonic(), state, reason))
say("open")
for line in sys.stdin:
    if line.strip() == "echo":
        c.send("back")
        say("echo", c.recv(timeout=5))
c.close()
c.destroy()
"""


def sh(*args: str) -> None:
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=20)


def namespaces_allowed() -> str | None:
    """Why network namespaces cannot be used here, or None."""
    if os.geteuid() != 0:
        return "not root"
    if not shutil.which("ip") or not shutil.which("iptables"):
        return "ip or iptables missing"
    probe = f"{TAG}p"
    try:
        sh("ip", "netns", "add", probe)
        sh("ip", "netns", "exec", probe, "iptables", "-L", "-n")
    except (subprocess.CalledProcessError, OSError) as e:
        return f"network namespaces not allowed: {getattr(e, 'stderr', b'') or e}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], stderr=subprocess.DEVNULL)
    return None


@pytest.fixture
def network() -> Iterator[None]:
    why = namespaces_allowed()
    if why:
        pytest.skip(why)
    try:
        sh("ip", "netns", "add", NS_SERVER)
        sh("ip", "netns", "add", NS_CLIENT)
        sh("ip", "link", "add", f"{TAG}a", "type", "veth", "peer", "name", f"{TAG}b")
        sh("ip", "link", "set", f"{TAG}a", "netns", NS_SERVER)
        sh("ip", "link", "set", f"{TAG}b", "netns", NS_CLIENT)
        for ns, dev, ip in ((NS_SERVER, f"{TAG}a", SERVER_IP), (NS_CLIENT, f"{TAG}b", CLIENT_IP)):
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        yield
    finally:
        for ns in (NS_SERVER, NS_CLIENT):
            subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)


def spawn(ns: str, script: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", script], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, bufsize=0, env=os.environ.copy())


_pending: dict[int, bytes] = {}


def expect(stream: IO[bytes], word: str, seconds: float, lines: list[str]) -> list[str]:
    """The next line that starts with `word` (split), reading for at most `seconds`: from the
    pipe's descriptor, whole lines kept here, so that nothing waits in a buffer select cannot see."""
    fd = stream.fileno()
    deadline = time.monotonic() + seconds
    while True:
        while b"\n" in _pending.get(fd, b""):
            raw, _, rest = _pending[fd].partition(b"\n")
            _pending[fd] = rest
            line = raw.decode().strip()
            lines.append(line)
            if line.split() and line.split()[0] == word:
                return line.split()
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        _pending[fd] = _pending.get(fd, b"") + chunk
    raise AssertionError(f"no {word!r} within {seconds} s: {lines}")


def partition(on: bool) -> None:
    flag = "-A" if on else "-D"
    sh("ip", "netns", "exec", NS_CLIENT, "iptables", flag, "INPUT", "-s", SERVER_IP, "-j", "DROP")
    sh("ip", "netns", "exec", NS_CLIENT, "iptables", flag, "OUTPUT", "-d", SERVER_IP, "-j", "DROP")


def test_a_kernel_partition_is_found_by_both_ends_and_healed(network: None) -> None:
    server = spawn(NS_SERVER, SERVER)
    client = None
    seen: list[str] = []
    try:
        assert server.stdout and server.stdin
        expect(server.stdout, "ready", 10, seen)
        client = spawn(NS_CLIENT, CLIENT)
        assert client.stdout and client.stdin
        expect(client.stdout, "open", 10, seen)
        expect(server.stdout, "opened", 5, seen)
        time.sleep(0.3)
        partition(True)
        start = time.monotonic()
        lost = expect(client.stdout, "state", 10, seen)
        assert lost[2] == "reconnecting" and "no pong" in " ".join(lost[3:]), lost
        assert float(lost[1]) - start <= BOUND, f"the client took {float(lost[1]) - start:.2f} s"
        closed = expect(server.stdout, "closed", 10, seen)
        assert closed[2] == "1011" and "no pong" in " ".join(closed[3:]), closed
        assert float(closed[1]) - start <= BOUND, f"the server took {float(closed[1]) - start:.2f} s"
        time.sleep(1.0)  # attempts time out meanwhile (open_timeout 1 s) and are tried again
        partition(False)
        deadline = time.monotonic() + 10
        while True:
            state = expect(client.stdout, "state", max(0.1, deadline - time.monotonic()), seen)
            if state[2] == "open":
                break
        client.stdin.write(b"echo\n")
        assert expect(client.stdout, "echo", 10, seen) == ["echo", "back"]
    finally:
        for p in (client, server):
            if p is None:
                continue
            try:
                p.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
