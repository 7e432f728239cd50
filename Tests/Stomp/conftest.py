"""Fixtures for the STOMP 1.2 client tests: the `target` server (RabbitMQ's Web-STOMP, the
reference broker, and Petrel's stock server), connections made with stomp.py's WSConnection, and
a listener that records every frame they receive.

Each target yields a `Target`: `connect(**kw)` returns a connected `stomp.WSConnection` whose
`recorder` attribute holds its `Recorder`; `destination` is the topic that carries stock ticks;
`start_ticks()` makes ticks flow there (RabbitMQ: a publisher thread; Petrel: its own feed).

Run with: .venv/bin/python -m pytest Tests/Stomp -q -p no:cacheprovider [-k rabbitmq|petrel]
"""
from __future__ import annotations

import contextlib
import itertools
import json
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest
import stomp

from services import rabbitmq

ROOT = Path(__file__).resolve().parents[2]
import os

# Petrel's three stock servers (tools/test.sh builds them; the C one needs libpetrel.so installed).
PETREL_STOCK_SERVERS = {
    "petrel-swift": [str(ROOT / "examples/stock-swift/.build/release/stock-server")],
    "petrel-c": [str(ROOT / "examples/stock-c/stock-server")],
    "petrel-python": [os.environ.get("PETREL_PYTHON", str(ROOT / ".venv/bin/python")), str(ROOT / "examples/stock-python/stock_server.py")],
}
DESTINATION = "/topic/stock"
CONNECT_TIMEOUT = 10.0

# What Debian's RabbitMQ 3.10 Web-STOMP does against STOMP 1.2 (seen on this machine).
RABBITMQ_DEVIATIONS = {
    "disconnect-receipt": "RabbitMQ 3.10 Web-STOMP closes the WebSocket on DISCONNECT (code 1000 'STOMP died') "
                          "without sending the requested RECEIPT (its plain-TCP STOMP listener does send it)",
    "close-after-error": "RabbitMQ 3.10 keeps the connection open after an ERROR frame "
                         "(rabbitmq-server issue 2410), where STOMP 1.2 says the server MUST close it",
}


class Received:
    """One thing the connection got: a frame (CONNECTED, MESSAGE, RECEIPT, ERROR), a HEARTBEAT,
    or DISCONNECTED; with the monotonic time it arrived."""
    __slots__ = ("kind", "frame", "at")

    def __init__(self, kind, frame=None):
        self.kind, self.frame, self.at = kind, frame, time.monotonic()

    @property
    def headers(self) -> dict:
        return self.frame.headers if self.frame is not None else {}

    def __repr__(self):
        return f"{self.kind}{self.headers or ''}"


class Recorder(stomp.ConnectionListener):
    """Records what a connection receives (in order) and sends; waits on it with timeouts."""

    def __init__(self):
        self.condition = threading.Condition()
        self.received: list[Received] = []
        self.sent = []  # stomp.utils.Frame objects, as handed to the transport
        self.heartbeat_timeouts = 0

    def _add(self, kind, frame=None):
        with self.condition:
            self.received.append(Received(kind, frame))
            self.condition.notify_all()

    def on_connected(self, frame): self._add("CONNECTED", frame)
    def on_message(self, frame): self._add("MESSAGE", frame)
    def on_receipt(self, frame): self._add("RECEIPT", frame)
    def on_error(self, frame): self._add("ERROR", frame)
    def on_heartbeat(self): self._add("HEARTBEAT")
    def on_disconnected(self): self._add("DISCONNECTED")

    def on_heartbeat_timeout(self):
        self.heartbeat_timeouts += 1

    def on_send(self, frame):
        with self.condition:
            self.sent.append(frame)

    # --- queries (each takes a snapshot under the lock) ---

    def all(self, kind=None, after: int = 0) -> list[Received]:
        with self.condition:
            return [r for r in self.received[after:] if kind is None or r.kind == kind]

    def messages(self, subscription=None, after: int = 0) -> list[Received]:
        return [r for r in self.all("MESSAGE", after)
                if subscription is None or r.headers.get("subscription") == subscription]

    def mark(self) -> int:
        """A position in the record; pass it as `after` to look only at what came later."""
        with self.condition:
            return len(self.received)

    def index_of(self, received: Received) -> int:
        with self.condition:
            return next(i for i, r in enumerate(self.received) if r is received)

    # --- waits (AssertionError with what was received when they time out) ---

    def wait_for(self, found, timeout: float, what: str):
        """Waits until `found()` returns something truthy; returns it."""
        with self.condition:
            result = found()
            deadline = time.monotonic() + timeout
            while not result:
                left = deadline - time.monotonic()
                if left <= 0:
                    tail = self.received[-8:]
                    raise AssertionError(f"timed out after {timeout} s waiting for {what}; "
                                         f"{len(self.received)} received, last: {tail}")
                self.condition.wait(left)
                result = found()
            return result

    def wait_messages(self, count: int, subscription=None, timeout: float = 5.0, after: int = 0):
        return self.wait_for(lambda: (lambda m: m if len(m) >= count else None)(
            self.messages(subscription, after)), timeout,
            f"{count} MESSAGE frames" + (f" for {subscription}" if subscription else ""))

    def wait_kind(self, kind: str, timeout: float = 5.0, after: int = 0) -> Received:
        return self.wait_for(lambda: next(iter(self.all(kind, after)), None), timeout, kind)

    def wait_receipt(self, receipt_id: str, timeout: float = 5.0) -> Received:
        return self.wait_for(
            lambda: next((r for r in self.all("RECEIPT") if r.headers.get("receipt-id") == receipt_id), None),
            timeout, f"RECEIPT with receipt-id:{receipt_id}")


class Target:
    """A STOMP-over-WebSocket server under test and how to talk to it."""

    def __init__(self, name, host, port, ws_path, login=None, vhost=None, destination=DESTINATION,
                 deviations=None):
        self.name, self.host, self.port, self.ws_path = name, host, port, ws_path
        self.login = login  # (login, passcode) or None to send neither header
        self.vhost = vhost  # the CONNECT `host` header; None lets stomp.py send the host name
        self.destination = destination
        # Known departures from the spec, by key, with the reason shown when a test hits one:
        # that check becomes an expected failure (xfail) for this target only.
        self.deviations: dict[str, str] = deviations or {}
        self.connections: list[stomp.WSConnection] = []
        self._ticker: threading.Thread | None = None
        self._stop_ticks = threading.Event()
        self.ticks_sent = 0
        self.ticker_error: BaseException | None = None

    def __repr__(self):
        return f"Target({self.name} ws://{self.host}:{self.port}{self.ws_path})"

    def connect(self, heartbeats=(0, 0), accept_version=None, with_connect_command=False,
                headers=None, expect_error=False) -> stomp.WSConnection:
        """A stomp.WSConnection that has received CONNECTED (or ERROR, with expect_error)."""
        conn = stomp.WSConnection([(self.host, self.port)], ws_path=self.ws_path, vhost=self.vhost,
                                  heartbeats=heartbeats, reconnect_attempts_max=1)
        if accept_version is not None:
            conn.version = accept_version  # stomp.py puts its `version` in accept-version as is
        recorder = Recorder()
        conn.recorder = recorder
        conn.set_listener("recorder", recorder)
        self.connections.append(conn)
        login, passcode = self.login or (None, None)
        conn.connect(login, passcode, wait=False, headers=headers, with_connect_command=with_connect_command)
        first = recorder.wait_for(lambda: next(iter(r for r in recorder.all() if r.kind != "HEARTBEAT"), None),
                                  CONNECT_TIMEOUT, f"CONNECTED from {self}")
        if not expect_error:
            assert first.kind == "CONNECTED", f"{self} answered the CONNECT with {first}: {first.frame and first.frame.body}"
        return conn

    def close_all(self):
        """Disconnects whatever the test left open (without waiting long for receipts)."""
        while self.connections:
            conn = self.connections.pop()
            with contextlib.suppress(Exception):
                if conn.is_connected():
                    mark = conn.recorder.mark()
                    conn.disconnect()  # no receipt argument: stomp.py does not block on it
                    conn.recorder.wait_kind("DISCONNECTED", timeout=2, after=mark)
            with contextlib.suppress(Exception):
                conn.transport.disconnect_socket()

    # --- ticks ---

    def start_ticks(self):
        """Makes ticks flow on `destination` (idempotent)."""
        if self.name != "rabbitmq" or self._ticker is not None:
            return  # Petrel's stock server publishes its own feed
        publisher = self.connect()
        self.connections.remove(publisher)  # the ticker closes it itself
        self._ticker = threading.Thread(target=self._tick, args=(publisher,), name="stomp-ticker", daemon=True)
        self._ticker.start()

    def _tick(self, conn):
        try:
            for seq in itertools.count(1):
                if self._stop_ticks.wait(0.02):
                    break
                price = f"{12 + (seq % 100) / 100:.2f}"
                conn.send(self.destination, json.dumps({"ticker": "ACME", "price": price, "seq": seq}),
                          content_type="application/json")
                self.ticks_sent = seq
        except BaseException as e:  # noqa: BLE001 - reported by the fixture
            self.ticker_error = e
        finally:
            with contextlib.suppress(Exception):
                conn.disconnect()
            with contextlib.suppress(Exception):
                conn.transport.disconnect_socket()

    def stop_ticks(self):
        self._stop_ticks.set()
        if self._ticker is not None:
            self._ticker.join(5)
        assert self.ticker_error is None, f"the tick publisher failed: {self.ticker_error!r}"


@contextlib.contextmanager
def petrel_stock_server(command):
    """A Petrel stock server on a free port with quick ticks; yields its port. Its output is kept
    (and shown if it does not start) and drained so it never blocks on a full pipe."""
    proc = subprocess.Popen(command + ["--port", "0", "--tick-min", "0.01", "--tick-max", "0.05"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    lines: list[str] = []
    port = None
    deadline = time.time() + 20
    while time.time() < deadline and port is None:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r"open https?://[^/\s]+:(\d+)/", line)
        port = int(m.group(1)) if m else None
    if port is None:
        proc.kill()
        proc.wait()
        raise RuntimeError("the Petrel stock server did not start:\n" + "".join(lines))
    drain = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    drain.start()
    try:
        yield port
    finally:
        proc.terminate()
        try:
            code = proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        drain.join(5)
        assert code == 0, f"the Petrel stock server exited with {code}:\n" + "".join(lines[-40:])


@pytest.fixture(scope="module", params=["rabbitmq", *PETREL_STOCK_SERVERS])
def target(request):
    if request.param == "rabbitmq":
        with rabbitmq() as broker:
            # RabbitMQ takes a login (guest without one), and needs `host:/` (else it takes the host
            # name for a vhost name and refuses the CONNECT)
            t = Target("rabbitmq", broker.host, broker.port, broker.ws_path, login=("guest", "guest"), vhost="/",
                       deviations=RABBITMQ_DEVIATIONS)
            t.start_ticks()
            try:
                yield t
            finally:
                t.close_all()
                t.stop_ticks()
    else:
        command = PETREL_STOCK_SERVERS[request.param]
        if not Path(command[-1]).exists():
            pytest.skip(f"{command[-1]} is not built (tools/test.sh builds it)")
        with petrel_stock_server(command) as port:
            # Petrel's stock servers need no login; STOMP is at /stomp, ticks from their own feed
            t = Target(request.param, "127.0.0.1", port, "/stomp")
            t.start_ticks()
            try:
                yield t
            finally:
                t.close_all()


@pytest.fixture(autouse=True)
def _close_connections(request):
    """Closes the connections each test made, so one test's failure does not leak into the next."""
    yield
    if "target" in request.fixturenames:
        request.getfixturevalue("target").close_all()
