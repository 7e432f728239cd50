"""Measures the stock page (on petrel.js) in headless Chromium against a stock server, for the
WebSocket and for SSE (?transport=sse): not a test, run on demand (docs/petrel-js.md, Measured).

- first tick: from the start of the navigation to the first tick on screen (and to the
  snapshot's table), a fresh page load each try, the browser's cache warm after the first;
- recovery: the server SIGKILLed and started again on the same port (in-process ids start
  again; the page takes the new server's snapshot), from the moment the new server prints that
  it listens to the first tick on screen after that; the same page throughout.

The times come from the page itself: a script Chromium runs before the page's own (CDP
Page.addScriptToEvaluateOnNewDocument) watches the tick counter (#ticks) and the table.

    .venv/bin/python Tests/Browser/measure_page.py [--tries 10] [--server swift]

(PETREL_LIBRARY and PETREL_PYTHON as for the tests when --server python.)
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402

from test_proxies import SERVERS, StockServer  # noqa: E402
from test_stock_page import STOCKS, wait_for  # noqa: E402

# Before the page's module runs (it runs after the document is parsed, when readyState is
# already 'interactive'): every change of the tick counter is a tick shown.
OBSERVER = """
(() => {
  const m = window.__m = {ticks: [], rows: null};
  document.addEventListener('readystatechange', () => {
    if (document.readyState !== 'interactive') return;
    const ticks = document.getElementById('ticks'), body = document.querySelector('#stocks tbody');
    if (!ticks || !body) return;
    new MutationObserver(() => m.ticks.push([Date.now(), performance.now()]))
      .observe(ticks, {childList: true, characterData: true, subtree: true});
    new MutationObserver(() => { if (m.rows === null && body.children.length) m.rows = performance.now(); })
      .observe(body, {childList: true});
  });
})();
"""


def chromium():
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1100,1400"):
        options.add_argument(flag)
    options.binary_location = "/usr/bin/chromium"
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": OBSERVER})
    return driver


def first_tick(driver, url, transport, tries):
    """[(ms to the table, ms to the first tick)] per fresh page load."""
    out = []
    for _ in range(tries):
        driver.get("about:blank")
        time.sleep(0.3)  # the previous page's connection gone from the server
        driver.get(url + ("?transport=sse" if transport == "sse" else ""))
        wait_for(driver, "window.__m.ticks.length > 0", timeout=20, what="the first tick")
        assert driver.execute_script("return window.petrel.transport") == transport
        rows, tick = driver.execute_script("return [window.__m.rows, window.__m.ticks[0][1]]")
        out.append((rows, tick))
    return out


def recovery(driver, server, transport, tries):
    """[ms from the server back to the first tick after it] per restart."""
    driver.get("about:blank")
    driver.get(server.url + ("?transport=sse" if transport == "sse" else ""))
    wait_for(driver, f"document.querySelectorAll('#stocks tbody tr').length === {STOCKS} && window.petrel.ticks >= 3",
             timeout=20, what="live ticks")
    out = []
    for _ in range(tries):
        # Far enough into the run that the new server's ids cannot catch up with the page's
        # before it is back (then it would resume instead of sending a snapshot).
        wait_for(driver, "window.petrel.lastId >= 30", timeout=20, what="id 30")
        snapshots = driver.execute_script("return window.petrel.snapshots")
        server.kill()
        server.start()
        back = server.ready_at * 1000
        wait_for(driver, f"window.__m.ticks.some((t) => t[0] > {back}) && window.petrel.snapshots === {snapshots + 1}",
                 timeout=30, what="a tick from the new server")
        first = driver.execute_script(f"return window.__m.ticks.find((t) => t[0] > {back})[0]")
        out.append(first - back)
        assert driver.execute_script("return window.petrel.transport") == transport
    gaps = driver.execute_script("return window.petrel.gaps")
    assert gaps == 0, f"{gaps} gaps"
    return out


def summary(values):
    return f"p50 {statistics.median(values):.0f} ms (min {min(values):.0f}, max {max(values):.0f})"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tries", type=int, default=10)
    p.add_argument("--server", choices=list(SERVERS), default="swift")
    args = p.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="petrel-measure-"))
    server = StockServer(args.server, folder).start()
    driver = chromium()
    try:
        print(f"{args.server} stock server (--tick-min 0.05 --tick-max 0.25), Chromium "
              f"{driver.capabilities.get('browserVersion')}, {platform.machine()} with {len(os.sched_getaffinity(0))} CPUs, "
              f"{args.tries} tries each; logs in {folder}")
        for transport in ("websocket", "sse"):
            loads = first_tick(driver, server.url, transport, args.tries)
            print(f"{transport:9}  load -> table       {summary([r for r, _ in loads])}")
            print(f"{transport:9}  load -> first tick  {summary([t for _, t in loads])}")
            print(f"{transport:9}  back -> first tick  {summary(recovery(driver, server, transport, args.tries))}")
    finally:
        driver.quit()
        server.stop()


if __name__ == "__main__":
    main()
