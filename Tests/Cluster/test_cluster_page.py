"""The stock page in headless Chromium behind nginx on the three-server cluster: the server the
page is connected to is SIGKILLed, the page reconnects through nginx to another and resumes, and
its own gap counter stays at zero."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "Tests" / "Browser"))
from test_cluster import cluster, wait  # noqa: E402,F401  (fixture, helper)
from test_stock_page import OUT, browser, wait_for  # noqa: E402,F401  (fixture, helpers)

from cluster import FEED, NODES  # noqa: E402


def serving(cluster):  # noqa: F811
    """The one server that has the page's WebSocket, once the servers have one between them (a
    socket of an earlier page load may take a moment to go)."""
    def counts():
        return {n: cluster.health(n)["connections"]["websocket"] for n in cluster.processes if n in NODES}
    found = wait(lambda: (lambda c: sum(c.values()) == 1 and c)(counts()), timeout=10.0, what="one WebSocket in the cluster")
    return [n for n, k in found.items() if k == 1]


def test_the_page_survives_the_loss_of_its_server(browser, cluster):  # noqa: F811
    # Round-robin: load the page until it is on a server that does not run the feed (killing the
    # feed would stop the ticks, and prove nothing).
    for _ in range(6):
        browser.get(cluster.url)
        wait_for(browser, "window.petrel.transport === 'websocket' && window.petrel.ticks >= 2", what="live ticks")
        on = serving(cluster)
        if on and on[0] != FEED:
            break
        browser.get("about:blank")
    assert on and on[0] != FEED, f"the page stayed on the feed's server ({on})"
    before = browser.execute_script("window.__socketBefore = window.petrel.ws; return window.petrel.lastId")
    cluster.kill(on[0])
    wait_for(browser, f"window.petrel.lastId >= {before} + 10", timeout=30, what="ticks after the server died")
    wait_for(browser, "document.getElementById('status').textContent === 'connected via WebSocket'")
    assert browser.execute_script("return window.petrel.ws !== window.__socketBefore"), "the page reconnected"
    state = browser.execute_script("return window.petrel")
    assert state["gaps"] == 0, state["gapList"]
    assert state["snapshots"] == 1, "the page resumed from its last id on another server, no new snapshot"
    now = serving(cluster)
    assert len(now) == 1 and now[0] != on[0]
    OUT.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(OUT / "stock-cluster-after-kill.png"))
