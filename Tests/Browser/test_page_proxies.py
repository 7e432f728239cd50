"""The stock page (on petrel.js) in headless Chromium behind real proxies, one test per behaviour:

- behind nginx with WebSocket enabled, the page uses a WebSocket through nginx (the browser's
  own network log says so) and shows live ticks;
- behind nginx that strips the upgrade, it falls back to Server-Sent Events by itself, shows
  live ticks, and its acknowledgements (POST /ack) reach the server;
- behind nginx that buffers responses (the WebSocket's frames held after a 101 that gets
  through), it leaves the mute WebSocket after petrel.js's firstMessageTimeout (5 s) and shows
  the ticks that reach it over the buffered event stream;
- with TLS terminated at nginx (https:// and wss:// to nginx, plain to Petrel) it works over a
  WebSocket;
- when the server is killed and restarted on the same port (behind nginx, and direct), it
  reconnects by itself on each transport and takes the new server's snapshot (in-process
  event ids start again), with no gap, no repeat, and acknowledgements that reach the new
  server;
- a page of another origin reads /events cross-origin when the server allows that origin
  (--cors-origins), and is refused (403, no events) when it does not;
- behind a corporate forward proxy (Debian's tinyproxy, the browser's --proxy-server) that
  forwards plain HTTP but refuses CONNECT to the server's port, the browser's WebSockets never
  open (Chromium sends ws:// through an HTTP proxy as a CONNECT): the page falls back to SSE
  through the proxy by itself, shows live ticks, and its acknowledgements reach the server.

Every nginx and tinyproxy is a child process with its own config (nginx's from the templates
in nginx/, placeholders filled in) in a temporary folder on a free loopback port; they and every
stock server are stopped by process id when the test ends, passed or failed (and the forward
proxy test's own Chromium is quit).

Run by tools/test.sh with the other browser tests (pytest Tests/Browser).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from test_stock_page import OUT, SERVERS, STOCKS, certificates, wait_for

HERE = Path(__file__).resolve().parent
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
TICKS = ["--tick-min", "0.05", "--tick-max", "0.25"]
FIRST_MESSAGE_TIMEOUT = 5.0  # petrel.js's firstMessageTimeout (the stock page keeps the default)
LABELS = {"websocket": "connected via WebSocket", "sse": "connected via SSE"}
STATUS = "document.getElementById('status').textContent"


# ---------------------------------------------------------------- processes

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, proc, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.02)
    raise AssertionError(f"{what} did not listen on {port} within {timeout} s")


def eventually(condition, timeout=10.0, what="a condition"):
    """Polls condition() until it returns something truthy, which it returns."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return value


def tail(path: Path, n=3000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else "(no file)"


class StockServer:
    """A stock server as a child process; its output and access log in the test's folder.
    start() again after kill() brings it back on the same port."""

    def __init__(self, name, folder: Path, extra=()):
        self.name, self.extra = name, list(extra)
        self.log = folder / f"{name}-server.log"
        self.access_log = folder / f"{name}-access.log"
        self.port = 0
        self.url = ""
        self.proc = None

    def start(self):
        command = SERVERS[self.name]
        assert Path(command[-1]).exists(), f"{command[-1]} is not built (tools/test.sh builds it)"
        offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                command + ["--port", str(self.port), *TICKS, "--access-log", str(self.access_log), *self.extra],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with open(self.log, "rb") as f:
                f.seek(offset)
                m = re.search(r"open (https?://\S+:(\d+)/)", f.read().decode(errors="replace"))
            if m:
                self.url, self.port = m.group(1), int(m.group(2))
                self.ready_at = time.time()  # it prints the line once it listens
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.005)
        raise AssertionError(f"the {self.name} server did not start:\n{tail(self.log)}")

    def kill(self):
        """SIGKILL: no close frames, no goodbye, as a crash."""
        self.proc.kill()
        self.proc.wait(10)

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def health(self, base=None):
        with urllib.request.urlopen((base or self.url) + "health", timeout=5) as r:
            return json.load(r)

    def accesses(self, pattern):
        """Lines of the server's access log that match a regular expression."""
        text = self.access_log.read_text(errors="replace") if self.access_log.exists() else ""
        return [line for line in text.splitlines() if re.search(pattern, line)]


class Nginx:
    """nginx with nginx/base.conf around one case's server blocks (nginx/CASE.conf), @NAME@
    placeholders filled in, in its own folder. It runs in a session of its own: at the end
    the master is asked to stop (SIGTERM), and the whole group is killed if it does not."""

    def __init__(self, case, folder: Path, **values):
        self.dir = folder / f"nginx-{case}"
        (self.dir / "temp").mkdir(parents=True)
        values = {k: str(v) for k, v in values.items()}
        while (port := free_port()) in {int(v) for v in values.values() if v.isdigit()}:
            pass
        self.port = port
        values.update(DIR=str(self.dir), PORT=str(port))

        def fill(text):
            return re.sub(r"@([A-Z]+)@", lambda m: values[m.group(1)], text)

        (self.dir / "nginx.conf").write_text(fill((HERE / "nginx" / "base.conf").read_text()))
        (self.dir / "site.conf").write_text(fill((HERE / "nginx" / f"{case}.conf").read_text()))
        self.proc = None

    def start(self, scheme="http"):
        self.url = f"{scheme}://127.0.0.1:{self.port}/"
        with open(self.dir / "stderr.log", "ab") as out:
            self.proc = subprocess.Popen([NGINX, "-e", str(self.dir / "error.log"), "-p", str(self.dir),
                                          "-c", str(self.dir / "nginx.conf")],
                                         stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        try:
            wait_listening(self.port, self.proc, "nginx")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{tail(self.dir / 'error.log')}\n{tail(self.dir / 'stderr.log')}") from None
        return self

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()  # fast shutdown: open connections are closed
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its own group: the master and its worker
            self.proc.wait(10)


class Tinyproxy:
    """Debian's tinyproxy as a forward proxy (the kind a browser is told of with --proxy-server)
    in its own folder: plain HTTP requests (absolute URIs) are forwarded to any port; CONNECT
    only to connect_ports (tinyproxy's ConnectPort lines; none at all lets it through to any
    port). Its log (LogLevel Info) has a line per request and per refusal."""

    def __init__(self, folder: Path, connect_ports=(443,)):
        self.dir = folder / "tinyproxy"
        self.dir.mkdir()
        self.port = free_port()
        self.log = self.dir / "tinyproxy.log"
        self.conf = self.dir / "tinyproxy.conf"
        self.conf.write_text(
            f"Port {self.port}\nListen 127.0.0.1\nTimeout 60\nMaxClients 50\nAllow 127.0.0.1\n"
            f"LogLevel Info\nLogFile \"{self.log}\"\nPidFile \"{self.dir}/tinyproxy.pid\"\n"
            + "".join(f"ConnectPort {p}\n" for p in connect_ports))
        self.proc = None

    def start(self):
        with open(self.dir / "stderr.log", "ab") as out:
            self.proc = subprocess.Popen(["tinyproxy", "-d", "-c", str(self.conf)], stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            wait_listening(self.port, self.proc, "tinyproxy")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{tail(self.log)}\n{tail(self.dir / 'stderr.log')}") from None
        return self

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def lines(self, pattern):
        """Lines of tinyproxy's log that match a regular expression."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return [line for line in text.splitlines() if re.search(pattern, line)]


@pytest.fixture
def children(tmp_path):
    """Starts stock servers, nginx and tinyproxy for one test; stops them all at its end, whatever
    happened, and prints their logs (shown when the test failed)."""
    started = []

    class Children:
        folder = tmp_path

        @staticmethod
        def server(name="swift", extra=()):
            s = StockServer(name, tmp_path, extra)
            started.append(s)
            return s.start()

        @staticmethod
        def nginx(case, scheme="http", **values):
            n = Nginx(case, tmp_path, **values)
            started.append(n)
            return n.start(scheme)

        @staticmethod
        def tinyproxy(connect_ports=(443,)):
            t = Tinyproxy(tmp_path, connect_ports)
            started.append(t)
            return t.start()

    yield Children()
    errors = []
    for p in reversed(started):
        try:
            p.stop()
        except Exception as e:  # the others are stopped all the same
            errors.append(e)
    for f in sorted(tmp_path.rglob("*.log")):
        print(f"--- {f.relative_to(tmp_path)}\n{tail(f)}")
    assert not errors, errors


# ---------------------------------------------------------------- the browser

def chromium(*flags):
    """Headless Chromium with its performance log: the Network events say what the browser itself
    did (a WebSocket created, its handshake and frames, an event stream's response)."""
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1100,1400", *flags):
        options.add_argument(flag)
    options.binary_location = "/usr/bin/chromium"
    options.set_capability("acceptInsecureCerts", True)  # the TLS test's certificate is from a test CA
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


@pytest.fixture(scope="module")
def browser():
    """Chromium (see chromium()) for the module, with no proxy of its own."""
    driver = chromium()
    yield driver
    driver.quit()


@pytest.fixture
def browser_via():
    """browser_via(port): a Chromium of the test's own whose every request goes through the HTTP
    proxy at 127.0.0.1:port, loopback included (Chromium bypasses proxies for loopback unless
    told `<-loopback>`); quit at the test's end, passed or failed."""
    drivers = []

    def start(port):
        drivers.append(chromium(f"--proxy-server=http://127.0.0.1:{port}", "--proxy-bypass-list=<-loopback>"))
        return drivers[-1]

    yield start
    for driver in drivers:
        driver.quit()


@pytest.fixture
def page(browser):
    """The browser, its network log emptied; left on about:blank afterwards (no page of this test
    keeps reconnecting into the next)."""
    browser.get("about:blank")
    network(browser)
    yield browser
    browser.get("about:blank")


class Events(list):
    """Network events of the performance log as (method, params)."""

    def of(self, method, **match):
        return [p for m, p in self if m == method and all(p.get(k) == v for k, v in match.items())]

    def websockets_to(self, prefix):
        """requestIds of the WebSockets the browser created to URLs that start with prefix."""
        return [p["requestId"] for p in self.of("Network.webSocketCreated") if p["url"].startswith(prefix)]

    def frames(self, request_id):
        return self.of("Network.webSocketFrameReceived", requestId=request_id)

    def handshake(self, request_id):
        got = self.of("Network.webSocketHandshakeResponseReceived", requestId=request_id)
        return got[0] if got else None

    def responses(self, url_prefix):
        return [p for p in self.of("Network.responseReceived") if p["response"]["url"].startswith(url_prefix)]


def network(driver, into: Events | None = None) -> Events:
    """Drains the performance log; the Network events are appended to `into` (or a new list)."""
    out = Events() if into is None else into
    for entry in driver.get_log("performance"):
        m = json.loads(entry["message"])["message"]
        if m["method"].startswith("Network."):
            out.append((m["method"], m["params"]))
    return out


# What the page did, from petrel.js's own events (window.petrel.client is the PetrelClient).
WATCH = """
const p = window.petrel;
if (!p) return false;
if (!window.__watch) {
  const w = window.__watch = {states: [], messages: []};
  p.client.on('state', (d) => w.states.push({...d, at: performance.now()}));
  p.client.on('message', (d) => w.messages.push({id: d.id, type: d.value && d.value.type, first: d.first, transport: d.transport}));
}
return true;
"""


def watch(driver):
    wait_for(driver, f"(() => {{ {WATCH} }})()", what="the page's window.petrel")


def live(driver, transport, ticks=3, timeout=15.0):
    """Waits for the page to show the whole table, `ticks` ticks, and its status on `transport`."""
    wait_for(driver, f"document.querySelectorAll('#stocks tbody tr').length === {STOCKS}", timeout=timeout,
             what="every stock in the table")
    wait_for(driver, f"window.petrel.transport === '{transport}' && window.petrel.ticks >= {ticks}", timeout=timeout,
             what=f"{ticks} ticks over {transport}")
    wait_for(driver, f"{STATUS} === '{LABELS[transport]}'", what=LABELS[transport])
    return driver.execute_script("return window.petrel")


def screenshot(driver, name):
    OUT.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(OUT / f"proxy-{name}.png"))


def acknowledged(driver, server, transport, base=None, timeout=15.0):
    """The page's acknowledgements reach the server: once the server has published 16 events
    past what the page shows now, /health counts one client on `transport`, no more than 10
    events behind. The page acknowledges every 250 ms and ticks come at most every 50 ms; a page
    whose acknowledgements did not arrive would be 16 or more behind."""
    since = driver.execute_script("return window.petrel.lastId")
    deadline = time.monotonic() + timeout
    while (h := server.health(base))["lastEventId"] < since + 16:
        assert time.monotonic() < deadline, f"the server did not publish 16 events past {since}: {h}"
        time.sleep(0.1)
    assert h["connections"][transport] == 1 and h["lag"][transport]["events"] <= 10, \
        f"acknowledgements over {transport} did not reach the server (the page was at {since}): {h}"
    return h


# ---------------------------------------------------------------- 1. nginx with WebSocket enabled

@pytest.mark.parametrize("name", list(SERVERS))
def test_behind_nginx_the_page_uses_a_websocket(page, children, name):
    server = children.server(name)
    proxy = children.nginx("websocket", UPSTREAM=server.port)
    page.get(proxy.url)
    state = live(page, "websocket")
    assert state["gaps"] == 0 and state["snapshots"] == 1, state
    log = network(page)
    # The browser's own record: a WebSocket to nginx's port, its 101, frames on it; nothing to
    # the server's port, no event stream.
    ws = log.websockets_to(f"ws://127.0.0.1:{proxy.port}/stream?")
    assert len(ws) == 1, log.of("Network.webSocketCreated")
    assert log.handshake(ws[0])["response"]["status"] == 101
    assert len(log.frames(ws[0])) >= 3
    assert not log.websockets_to(f"ws://127.0.0.1:{server.port}/")
    assert not [r for r in log.of("Network.responseReceived") if "event-stream" in r["response"]["mimeType"]]
    assert page.execute_script("return location.port") == str(proxy.port)
    # nginx relayed the upgrade (nginx logs it only once it closes; the server at once); the
    # server has one WebSocket, and the page's acknowledgements came through nginx.
    assert server.accesses(r" upgrade GET /stream 101 websocket ")
    acknowledged(page, server, "websocket")
    screenshot(page, f"nginx-websocket-{name}")


# ---------------------------------------------------------------- 2. a proxy that strips Upgrade

@pytest.mark.parametrize("name", list(SERVERS))
def test_behind_a_proxy_that_strips_upgrade_the_page_falls_back_to_sse(page, children, name):
    server = children.server(name)
    proxy = children.nginx("strip-upgrade", UPSTREAM=server.port)
    page.get(proxy.url)
    state = live(page, "sse")
    assert state["gaps"] == 0 and state["snapshots"] == 1, state
    log = network(page)
    # The browser tried WebSockets through nginx (petrel.js's fallbackAfter: 2), none opened or
    # delivered a frame, then read an event stream through nginx.
    tried = log.websockets_to(f"ws://127.0.0.1:{proxy.port}/stream?")
    assert len(tried) >= 2, log.of("Network.webSocketCreated")
    for ws in tried:
        assert not log.frames(ws)
        shake = log.handshake(ws)
        assert shake is None or shake["response"]["status"] != 101, shake
    streams = [r for r in log.responses(f"http://127.0.0.1:{proxy.port}/events?") if r["response"]["status"] == 200]
    assert streams and "text/event-stream" in streams[0]["response"]["mimeType"], log.responses(f"http://127.0.0.1:{proxy.port}/events")
    # What the server saw: plain GETs of /stream (the upgrade stripped; Petrel answers them 404,
    # as it does for any path it has no file for once a static root is set).
    stripped = server.accesses(r" request GET /stream 4\d\d ")
    assert len(stripped) >= 2 and not server.accesses(r" upgrade GET /stream "), stripped
    # The acknowledgements (POST /ack through nginx) reach the server: /health through the proxy
    # says one SSE client that is not falling behind, and the server logged the POSTs.
    acknowledged(page, server, "sse", base=proxy.url)
    assert server.accesses(r" request POST /ack 204 ")
    acks = network(page, log).responses(f"http://127.0.0.1:{proxy.port}/ack?")
    assert acks and all(r["response"]["status"] == 204 for r in acks), acks
    screenshot(page, f"strip-upgrade-{name}")


# ---------------------------------------------------------------- 3. a proxy that buffers

def test_behind_a_buffering_proxy_the_page_leaves_the_mute_websocket(page, children):
    server = children.server("swift")
    proxy = children.nginx("buffering", UPSTREAM=server.port, INNER=free_port())
    page.get(proxy.url)
    watch(page)
    # The WebSocket opens (its 101 gets through) and then hears nothing: petrel.js gives up on it
    # after firstMessageTimeout and falls back to SSE.
    wait_for(page, "window.__watch.states.some((s) => s.state === 'fallback')", timeout=FIRST_MESSAGE_TIMEOUT + 5,
             what="the fallback from the mute WebSocket")
    fallback = page.execute_script("return window.__watch.states.find((s) => s.state === 'fallback')")
    assert fallback["reason"] == "no message after open", fallback
    state = live(page, "sse", timeout=25)
    assert state["gaps"] == 0 and state["snapshots"] == 1, state
    log = network(page)
    ws = log.websockets_to(f"ws://127.0.0.1:{proxy.port}/stream?")
    assert len(ws) == 1, log.of("Network.webSocketCreated")
    shake = log.handshake(ws[0])
    assert shake and shake["response"]["status"] == 101, shake
    assert not log.frames(ws[0]), "the proxy let a frame through"
    # From the 101 to the event stream's request, by the browser's clock: the stated 5 s (the
    # watchdog looks once a second) and no more.
    sse = [p for p in log.of("Network.requestWillBeSent") if p["request"]["url"].startswith(f"http://127.0.0.1:{proxy.port}/events?")]
    assert sse, "no event stream was requested"
    waited = sse[0]["timestamp"] - shake["timestamp"]
    assert FIRST_MESSAGE_TIMEOUT - 0.1 <= waited <= FIRST_MESSAGE_TIMEOUT + 0.75, f"left the mute WebSocket after {waited:.2f} s"
    # Its acknowledgements get through (a POST's answer is short and complete; the page's ids
    # trail the server's by up to a proxy buffer of ticks, so /health's lag says little here).
    eventually(lambda: server.accesses(r" request POST /ack 204 "), what="an acknowledgement at the server")
    screenshot(page, "buffering")
    # The server did write to that WebSocket (the snapshot and ticks): the proxy held it all.
    # The socket lives on (the page's close frame is held too, and Chromium waits for the
    # answer) until the proxy goes; then the server's access log says what it wrote.
    page.get("about:blank")
    proxy.stop()
    closed = eventually(lambda: server.accesses(r" close GET /stream \d+ websocket "), what="the WebSocket's close")
    sent = [int(re.search(r" out=(\d+)", line).group(1)) for line in closed]
    assert sent and sent[0] > 4000, closed


# ---------------------------------------------------------------- 4. TLS terminated at nginx

def test_tls_terminated_at_nginx(page, children):
    d = certificates()
    server = children.server("swift")
    assert server.url.startswith("http://")
    proxy = children.nginx("tls", scheme="https", UPSTREAM=server.port, CERT=d / "server.pem", KEY=d / "server.key")
    page.get(proxy.url)
    state = live(page, "websocket")
    assert state["gaps"] == 0, state
    assert page.execute_script("return location.protocol") == "https:"
    assert page.execute_script("return window.petrel.ws.url").startswith(f"wss://127.0.0.1:{proxy.port}/stream?")
    log = network(page)
    ws = log.websockets_to(f"wss://127.0.0.1:{proxy.port}/stream?")
    assert len(ws) == 1 and log.handshake(ws[0])["response"]["status"] == 101
    assert len(log.frames(ws[0])) >= 3
    assert not log.websockets_to("ws://"), "no plain WebSocket from the https page"
    documents = log.responses(proxy.url)
    assert documents and documents[0]["response"]["protocol"] == "h2", documents[:1]  # the page over HTTP/2
    acknowledged(page, server, "websocket")
    screenshot(page, "tls-at-nginx")


# ---------------------------------------------------------------- 5. the server restarted

@pytest.mark.parametrize("via", ["nginx", "direct"])
@pytest.mark.parametrize("transport", ["websocket", "sse"])
def test_the_page_survives_a_server_restart(page, children, transport, via):
    """SIGKILL, then the server again on the same port (behind nginx, which answers 502 while it
    is down, or direct, where connections are refused meanwhile). The new process's event ids
    start again (the in-process engine keeps no history), so the page's last id means nothing
    to it: it answers the resume with a snapshot, whose id is lower than the page's last. The
    page shows it (petrel.js takes a snapshot as the new start, not as a repeat or a gap) and
    goes on from there."""
    server = children.server("swift")
    base = children.nginx("websocket", UPSTREAM=server.port).url if via == "nginx" else server.url
    page.get(base + ("?transport=sse" if transport == "sse" else ""))
    watch(page)
    live(page, transport)
    # Far enough ahead that the new server cannot reach this id before the page is back.
    wait_for(page, "window.petrel.lastId >= 50", timeout=20, what="id 50")
    port = server.port
    before = page.execute_script("return [window.petrel.lastId, window.petrel.ticks]")
    server.kill()
    server.start()
    assert server.port == port
    wait_for(page, f"window.petrel.snapshots === 2 && window.petrel.ticks >= {before[1]} + 5", timeout=20,
             what="the new server's snapshot and ticks after it")
    wait_for(page, f"{STATUS} === '{LABELS[transport]}'", what=LABELS[transport])
    state = page.execute_script("return window.petrel")
    assert state["transport"] == transport
    assert state["gaps"] == 0, state["gapList"]
    assert state["repeats"] == 0, state
    # The messages the page took, in order: consecutive ids, except once, at the new server's
    # snapshot (the first message of a new connection), where they go back.
    seen = page.execute_script("return window.__watch.messages")
    back = [i for i in range(1, len(seen)) if seen[i]["id"] <= seen[i - 1]["id"]]
    assert len(back) == 1, seen
    restart = seen[back[0]]
    assert restart["type"] == "snapshot" and restart["first"] and restart["id"] < before[0], restart
    for a, b in zip(seen, seen[1:]):
        if b is not restart:
            assert b["id"] == a["id"] + 1, (a, b)
    assert state["lastId"] > restart["id"]
    # The page reconnected by itself (the only reconnections are petrel.js's) ...
    states = page.execute_script("return window.__watch.states")
    assert any(s["state"] == "reconnecting" for s in states), states
    assert not any(s["state"] == "fallback" for s in states), states
    # ... and its acknowledgements reach the new server (what it acknowledged of the old
    # sequence does not hold the new one back).
    acknowledged(page, server, transport, base=base)


# ---------------------------------------------------------------- 6. CORS

CORS_PAGE = """<!DOCTYPE html>
<meta charset="utf-8"><title>cross-origin reader</title>
<script>
// Reads the event stream of the server named by ?events= (another origin), and acknowledges
// what it read with a POST /ack, as petrel.js does on SSE.
const base = new URLSearchParams(location.search).get('events');
const client = 'cors' + Math.random().toString(36).slice(2);
window.got = []; window.errors = 0; window.ack = null; window.streamClosed = false;
const es = new EventSource(base + 'events?client=' + client);
es.onmessage = (e) => {
  window.got.push(JSON.parse(e.data).type);
  if (window.got.length === 3) {
    fetch(base + 'ack?client=' + client, {method: 'POST', body: e.lastEventId, headers: {'Content-Type': 'text/plain'}})
      .then((r) => { window.ack = r.status; }, (err) => { window.ack = 'refused: ' + err.message; });
  }
};
es.onerror = () => { window.errors++; if (es.readyState === EventSource.CLOSED) window.streamClosed = true; };
// The refused case: a POST from this origin is refused too.
if (new URLSearchParams(location.search).has('post')) {
  fetch(base + 'ack?client=' + client, {method: 'POST', body: '1', headers: {'Content-Type': 'text/plain'}})
    .then((r) => { window.ack = r.status; }, (err) => { window.ack = 'refused: ' + err.message; });
}
</script>
"""


@pytest.mark.parametrize("allowed", [True, False], ids=["allowed", "refused"])
@pytest.mark.parametrize("name", list(SERVERS))
def test_cors_event_stream_from_another_origin(page, children, name, allowed):
    web = children.folder / "other-origin"
    web.mkdir()
    (web / "index.html").write_text(CORS_PAGE)
    # The page's server: another port, so another origin.
    other = children.server("swift", ["--web", str(web)])
    origin = f"http://127.0.0.1:{other.port}"
    server = children.server(name, ["--cors-origins", origin if allowed else "http://127.0.0.1:1"])
    assert server.port != other.port
    page.get(f"{other.url}?events={server.url}" + ("" if allowed else "&post"))
    assert page.execute_script("return location.origin") == origin
    if allowed:
        wait_for(page, "window.got.length >= 3 && window.ack !== null", what="three events and the ack's answer")
        got = page.execute_script("return window.got")
        assert got[0] == "snapshot" and set(got[1:]) == {"tick"}, got
        assert page.execute_script("return window.ack") == 204  # the POST /ack was allowed, and its answer readable
        log = network(page)
        stream = [r for r in log.responses(server.url + "events?") if r["response"]["status"] == 200]
        headers = {k.lower(): v for k, v in stream[0]["response"]["headers"].items()} if stream else {}
        assert headers.get("access-control-allow-origin") == origin, stream
        assert server.accesses(r" upgrade GET /events 200 sse ")
    else:
        wait_for(page, "window.streamClosed === true && window.ack !== null", what="the event stream refused and the POST answered")
        time.sleep(1.0)  # events, had any got through, would be here by now
        assert page.execute_script("return window.got") == []
        assert str(page.execute_script("return window.ack")).startswith("refused"), "the POST's answer was readable"
        # The browser's record: the request went out, the answer was 403 (Chromium reports a
        # response it does not hand to the page in responseReceivedExtraInfo), and it failed
        # for CORS.
        log = network(page)
        sent = [p["requestId"] for p in log.of("Network.requestWillBeSent") if p["request"]["url"].startswith(server.url + "events?")]
        assert sent, "no request for the event stream"
        answers = [p["statusCode"] for p in log.of("Network.responseReceivedExtraInfo") if p["requestId"] in sent]
        assert answers and set(answers) == {403}, answers
        failed = [p for p in log.of("Network.loadingFailed") if p["requestId"] in sent]
        assert failed and all(p.get("corsErrorStatus") for p in failed), failed
        assert server.accesses(r" request GET /events 403 ") and not server.accesses(r" upgrade GET /events ")
        assert server.accesses(r" request POST /ack 403 ")
        # Without an Origin (not a browser page), or from the server's own pages, nothing changes.
        with urllib.request.urlopen(server.url + "health", timeout=5) as r:
            assert r.status == 200
        req = urllib.request.Request(server.url + "health", headers={"Origin": origin})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=5)
        assert refused.value.code == 403


# ---------------------------------------------------------------- 7. a forward proxy without WebSockets

def test_behind_a_forward_proxy_that_refuses_connect_the_page_falls_back_to_sse(children, browser_via):
    """A corporate forward proxy from Debian (tinyproxy, ConnectPort 443 only) that the browser
    is told to use for everything: the page, the event stream and the POSTs are plain HTTP
    requests it forwards; a ws:// WebSocket is a CONNECT to the server's port, which it refuses
    (403). The page falls back to SSE through the proxy by itself."""
    server = children.server("swift")
    proxy = children.tinyproxy(connect_ports=(443,))
    driver = browser_via(proxy.port)
    driver.get(server.url)
    state = live(driver, "sse")
    assert state["gaps"] == 0 and state["snapshots"] == 1, state
    log = network(driver)
    # The browser's record: the page and its event stream came from tinyproxy's port (Chromium
    # reports the proxy as the remote end); the WebSockets it tried (petrel.js's fallbackAfter:
    # 2) never got a handshake, let alone a frame.
    documents = log.responses(server.url)
    assert documents and documents[0]["response"]["remotePort"] == proxy.port, documents[:1]
    tried = log.websockets_to(f"ws://127.0.0.1:{server.port}/stream?")
    assert len(tried) >= 2, log.of("Network.webSocketCreated")
    for ws in tried:
        assert log.handshake(ws) is None and not log.frames(ws), log.handshake(ws)
    streams = [r for r in log.responses(f"{server.url}events?") if r["response"]["status"] == 200]
    assert streams and "text/event-stream" in streams[0]["response"]["mimeType"], log.responses(f"{server.url}events")
    assert all(r["response"]["remotePort"] == proxy.port for r in streams), streams
    # Why they failed, in Chromium's words (what its console says too): the proxy refused the tunnel.
    for ws in tried:
        errors = [e["errorMessage"] for e in log.of("Network.webSocketFrameError", requestId=ws)]
        assert errors == ["Establishing a tunnel via proxy server failed."], errors
    # tinyproxy's own log: a CONNECT refused for each WebSocket, the page and the event stream
    # forwarded to the server.
    refused = proxy.lines(rf"Refused CONNECT method on port {server.port}$")
    assert len(refused) >= len(tried), tail(proxy.log)
    assert proxy.lines(rf"Request \(file descriptor \d+\): GET http://127\.0\.0\.1:{server.port}/events\?")
    # The server never saw a WebSocket (nor a GET of /stream): only the event stream, through the proxy.
    assert not server.accesses(r" (upgrade|request) GET /stream ")
    assert server.accesses(r" upgrade GET /events 200 sse ")
    # The stream is not held back: the page's latency (the tick's time to screen, p50) is what
    # an unbuffered path gives, not the seconds a proxy that waits for a buffer to fill adds.
    wait_for(driver, "window.petrel.latencyP50 !== null", what="the page's latency")  # 0 ms is a latency too
    latency = driver.execute_script("return window.petrel.latencyP50")
    assert latency < 1000, f"ticks reached the page {latency} ms late: the proxy holds the stream"
    # The acknowledgements (POST /ack, through the proxy) reach the server.
    acknowledged(driver, server, "sse")
    assert server.accesses(r" request POST /ack 204 ")
    assert proxy.lines(rf"Request \(file descriptor \d+\): POST http://127\.0\.0\.1:{server.port}/ack\?")
    acks = network(driver, log).responses(f"{server.url}ack?")
    assert acks and all(r["response"]["status"] == 204 and r["response"]["remotePort"] == proxy.port for r in acks), acks
    screenshot(driver, "forward-proxy-no-connect")
