"""The stock page in a real browser (headless Chromium through selenium), against each of the
three stock servers: the table fills, prices move, both transports work, and a WebSocket killed
mid-stream reconnects and resumes without skipping a tick. The page's STOMP mode
(?transport=stomp) is tested against the Swift server, the only one that speaks STOMP.

Run by tools/test.sh after it has built the servers; screenshots go to .build/test-output/browser.
"""
from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / ".build" / "test-output" / "browser"
STOCKS = sum(1 for _ in csv.DictReader(open(ROOT / "examples" / "data" / "stocks.csv")))
SERVERS = {
    "swift": [str(ROOT / "examples/stock-swift/.build/release/stock-server")],
    "c": [str(ROOT / "examples/stock-c/stock-server")],
    "python": [os.environ.get("PETREL_PYTHON", "python3"), str(ROOT / "examples/stock-python/stock_server.py")],
}


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1100,1400"):
        options.add_argument(flag)
    options.binary_location = "/usr/bin/chromium"
    options.set_capability("acceptInsecureCerts", True)  # the https test's certificate is from a test CA
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    yield driver
    driver.quit()


def certificates():
    """The test certificates (tools/test.sh makes them; made here when run alone)."""
    d = Path(os.environ.get("PETREL_TEST_CERTS") or ROOT / ".build" / "test-certs")
    subprocess.run(["bash", str(ROOT / "Tests/TLS/make-certs.sh"), str(d)], check=True)
    return d


@pytest.fixture(scope="module", params=list(SERVERS))
def server(request):
    """A stock server on a free port with quick ticks; yields (name, base URL)."""
    with start(request.param) as running:
        yield running


@contextlib.contextmanager
def start(name, extra=()):
    command = SERVERS[name]
    assert Path(command[-1]).exists(), f"{command[-1]} is not built (tools/test.sh builds it)"
    proc = subprocess.Popen(command + ["--port", "0", "--tick-min", "0.05", "--tick-max", "0.25", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = None
        deadline = time.time() + 20
        lines = []
        while time.time() < deadline and url is None:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            m = re.search(r"open (https?://\S+/)", line)
            url = m.group(1) if m else None
        assert url, f"{name} server did not start:\n{''.join(lines)}"
        yield name, url
    except BaseException:
        # A failed test (or start) must not leave the server running: stopped here, its exit
        # status is not checked (the failure is what the run reports).
        proc.kill()
        proc.wait(10)
        raise
    proc.terminate()
    try:
        assert proc.wait(10) == 0, f"{name} server did not stop cleanly"
    finally:
        proc.kill()


def wait_for(driver, script, timeout=10.0, what=""):
    """Polls a JavaScript expression until it is truthy; returns its value."""
    deadline = time.time() + timeout
    value = None
    while time.time() < deadline:
        value = driver.execute_script("return " + script)
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or script} (last value {value!r})")


def health(url):
    with urllib.request.urlopen(url + "health", timeout=5) as r:
        assert r.headers["Content-Type"] == "application/json"
        return json.load(r)


# STOMP tests run against each of the three servers (indirect parametrization, as the others).
STOMP_SERVERS = list(SERVERS)
stomp_servers = pytest.mark.parametrize("server", STOMP_SERVERS, indirect=True)

PRICES = "Array.from(document.querySelectorAll('#stocks tbody tr')).map(r => r.querySelector('.price').textContent)"


LABELS = {"websocket": "connected via WebSocket", "sse": "connected via SSE", "stomp": "connected via STOMP"}


@pytest.mark.parametrize("transport", ["websocket", "sse"])
def test_table_fills_and_prices_move(browser, server, transport):
    table_fills_and_prices_move(browser, server, transport)


@stomp_servers
def test_stomp_table_fills_and_prices_move(browser, server):
    table_fills_and_prices_move(browser, server, "stomp")


def table_fills_and_prices_move(browser, server, transport):
    name, url = server
    browser.get(url + ("" if transport == "websocket" else f"?transport={transport}"))
    wait_for(browser, f"document.querySelectorAll('#stocks tbody tr').length === {STOCKS}", what="every stock in the table")
    label = LABELS[transport]
    wait_for(browser, f"document.getElementById('status').textContent === '{label}'", what=label)
    first = browser.execute_script("return " + PRICES)
    assert all(re.fullmatch(r"\d+\.\d\d", p) for p in first), first
    wait_for(browser, f"JSON.stringify({PRICES}) !== {json.dumps(json.dumps(first))}", timeout=5, what="a price change")
    ticks = wait_for(browser, "window.petrel.ticks >= 3 && window.petrel.ticks", what="three ticks")
    assert browser.find_element("id", "ticks").text.isdigit()
    state = browser.execute_script("return window.petrel")
    assert state["transport"] == transport and state["gaps"] == 0 and state["snapshots"] == 1, state
    if transport == "stomp":  # ticks are counted once: none arrived twice
        assert state["repeats"] == 0, state
    # The page's acknowledgements reach the server: its lag for this transport stays small.
    time.sleep(0.6)
    h = health(url)
    assert h["connections"][transport] == 1 and h["lag"][transport]["events"] <= 20, h
    OUT.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(OUT / f"stock-{name}-{transport}.png"))
    assert ticks >= 3


def test_killed_websocket_reconnects_without_skipping(browser, server):
    name, url = server
    browser.get(url)
    wait_for(browser, "window.petrel.transport === 'websocket' && window.petrel.ticks >= 3", what="live ticks")
    for _ in range(3):
        before = browser.execute_script("const p = window.petrel; const ws = p.ws; ws.close(); return p.lastId")
        wait_for(browser, f"window.petrel.lastId >= {before} + 5", what="ticks after the reconnect")
        wait_for(browser, "document.getElementById('status').textContent === 'connected via WebSocket'")
    state = browser.execute_script("return window.petrel")
    assert state["gaps"] == 0, state["gapList"]
    assert state["snapshots"] == 1, "a resume replays what was missed instead of a new snapshot"
    assert health(url)["connections"]["websocket"] == 1


@stomp_servers
def test_killed_stomp_reconnects_without_skipping(browser, server):
    """The STOMP connection ends mid-stream, closed by the page or by the server (an ERROR, for a
    frame it does not know): the page subscribes again with last-event-id and goes on from the
    next tick, none skipped, none twice, without a new snapshot."""
    name, url = server
    browser.get(url + "?transport=stomp")
    wait_for(browser, "window.petrel.transport === 'stomp' && window.petrel.ticks >= 3", what="live ticks over STOMP")
    wait_for(browser, f"document.getElementById('status').textContent === '{LABELS['stomp']}'")
    kills = ["const ws = p.ws; ws.close();", "p.ws.send('BOGUS\\n\\n\\0');"] * 2
    for kill in kills:
        before = browser.execute_script(f"const p = window.petrel; {kill} return p.lastId")
        wait_for(browser, f"window.petrel.lastId >= {before} + 5", what="ticks after the reconnect")
        wait_for(browser, f"document.getElementById('status').textContent === '{LABELS['stomp']}'")
    state = browser.execute_script("return window.petrel")
    assert state["gaps"] == 0, state["gapList"]
    assert state["repeats"] == 0, state
    assert state["snapshots"] == 1, "a resume replays what was missed instead of a new snapshot"
    resumes = state["resumes"]
    assert len(resumes) == 1 + len(kills), resumes
    # Each subscription went on from the tick after the last one shown: the first from the
    # snapshot's id, the others from where the killed connection stopped ...
    assert all(r["first"] == r["after"] + 1 for r in resumes), resumes
    # ... and the server replayed ticks published while the page was away (published before
    # the SUBSCRIBE was sent: both clocks are this machine's).
    assert any(r["time"] < r["at"] for r in resumes[1:]), resumes
    h = health(url)
    assert h["connections"]["stomp"] == 1 and h["lag"]["stomp"]["events"] <= 20, h


@stomp_servers
def test_stomp_resume_the_server_cannot_serve_gets_a_snapshot(browser, server):
    """A last-event-id the server never gave out (a previous run): it starts the subscription
    live; the page sees the first tick does not follow and starts again from a new snapshot."""
    name, url = server
    browser.get(url + "?transport=stomp")
    wait_for(browser, "window.petrel.transport === 'stomp' && window.petrel.ticks >= 1", what="live ticks over STOMP")
    browser.execute_script("const p = window.petrel; p.lastId = 999999999; p.ws.close();")
    wait_for(browser, "window.petrel.snapshots === 2 && window.petrel.lastId < 999999999", what="a new snapshot")
    before = browser.execute_script("return window.petrel.lastId")
    wait_for(browser, f"window.petrel.lastId >= {before} + 3", what="ticks after the new snapshot")
    wait_for(browser, f"document.getElementById('status').textContent === '{LABELS['stomp']}'")
    state = browser.execute_script("return window.petrel")
    assert state["gaps"] == 0 and state["repeats"] == 0, state
    assert health(url)["connections"]["stomp"] == 1


def test_old_id_gets_a_snapshot_and_sse_resumes(browser, server):
    """An id the server never gave out (a previous run) gets a fresh snapshot; an SSE stream that
    the server ends resumes through the browser's own Last-Event-ID."""
    name, url = server
    browser.get(url + "?transport=sse")
    wait_for(browser, "window.petrel.ticks >= 3", what="live ticks over SSE")
    # Close the EventSource and let the page re-create it from its last id.
    before = browser.execute_script("const p = window.petrel; p.es.close(); p.es.onerror && p.es.onerror(); return p.lastId")
    wait_for(browser, f"window.petrel.lastId >= {before} + 5", timeout=15, what="ticks after the SSE reconnect")
    state = browser.execute_script("return window.petrel")
    assert state["gaps"] == 0, state["gapList"]
    # A WebSocket that claims an id from the future is given a snapshot.
    browser.get(url)
    wait_for(browser, "window.petrel.ticks >= 1")
    out = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const ws = new WebSocket(location.origin.replace('http', 'ws') + '/stream?last_event_id=999999999');
        ws.onmessage = (e) => { ws.close(); done(JSON.parse(e.data).type); };
        ws.onerror = () => done('error');
    """)
    assert out == "snapshot"


@pytest.mark.parametrize("name", list(SERVERS))
def test_page_and_stream_over_https_and_wss(browser, name):
    d = certificates()
    with start(name, ["--tls-cert", str(d / "server.pem"), "--tls-key", str(d / "server.key")]) as (_, url):
        assert url.startswith("https://")
        for query, label in (("", "connected via WebSocket"), ("?transport=sse", "connected via SSE")):
            browser.get(url + query)
            wait_for(browser, f"document.getElementById('status').textContent === '{label}'", what=label)
            wait_for(browser, f"document.querySelectorAll('#stocks tbody tr').length === {STOCKS} && window.petrel.ticks >= 3",
                     what="the table and live ticks over TLS")
            assert browser.execute_script("return location.protocol") == "https:"
            if not query:
                assert browser.execute_script("return window.petrel.ws.url").startswith("wss://")
        OUT.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(OUT / f"stock-{name}-https.png"))
        browser.get("about:blank")
