"""The stock-ticker push server on Petrel's Python bindings; same flags and behaviour as
examples/stock-swift and examples/stock-c (see examples/README.md).

    pip install ./bindings/python
    python examples/stock-python/stock_server.py --port 8080
"""
from __future__ import annotations

import argparse
import csv
import json
import random
import signal
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Tuple, Union
from pathlib import Path

import petrel

Stock = Dict[str, Any]  # ticker, company, open (cents), cents
EXAMPLES = Path(__file__).resolve().parent.parent
TOPIC = "ticks"
RING = 4096


def fields(s: Stock) -> Dict[str, Any]:
    change = s["cents"] - s["open"]
    return {"ticker": s["ticker"], "company": s["company"], "price": round(s["cents"] / 100, 2),
            "change": round(change / 100, 2), "changePercent": round(change / s["open"] * 100, 2)}


class Feed:
    """The feed's own prices, moved by a random walk and published as ticks whose id the engine
    writes over {{id}}. Only the server that runs the feed has one (--no-feed servers serve the
    ticks another server publishes). One thread calls tick()."""

    def __init__(self, stocks: List[Stock], server: petrel.Server) -> None:
        self.stocks = [dict(s) for s in stocks]
        self.server = server

    def tick(self) -> None:
        s = random.choice(self.stocks)
        step = max(1, round(s["cents"] * random.uniform(0, 0.005)))
        cents = max(1, s["cents"] + random.choice((step, -step)))
        body = json.dumps({**fields({**s, "cents": cents}), "time": int(time.time() * 1000)}, separators=(",", ":"))
        self.server.publish(TOPIC, '{"type":"tick","id":{{id}},' + body[1:], key=s["ticker"], stamp_id=True)
        s["cents"] = cents


class Market:
    """The market as every server sees it: prices from the topic's ticks (observed in order,
    whoever published them), snapshots and acknowledgements. One lock orders a tick's arrival
    and a new client's snapshot and subscription: each client sees every tick once, in order."""

    def __init__(self, stocks: List[Stock]) -> None:
        self.stocks = stocks
        self.by_ticker = {s["ticker"]: s for s in stocks}
        self.lock = threading.Lock()
        self.last_id = 0
        self.published = 0
        self.times = [0] * RING
        self.clients: Dict[int, List[Any]] = {}  # conn id -> [transport, acked]
        self.streams: dict[str, int] = {}  # the page's client id -> SSE conn id

    def observe(self, event_id: int, message: Union[str, bytes], key: Optional[str]) -> None:
        """A tick of the topic (the observer's call): its ticker is its key."""
        tick = json.loads(message)
        with self.lock:
            s = self.by_ticker.get(key)
            if s is not None:
                s["cents"] = round(tick["price"] * 100)
            self.last_id, self.published = event_id, self.published + 1
            self.times[event_id % RING] = tick["time"]

    def join(self, conn: petrel.Connection) -> None:
        stream = conn.path == "/events"
        with self.lock:
            last = conn.last_event_id
            if last is not None and conn.subscribe_after(TOPIC, last):
                start = last
            else:
                conn.send_event(self.snapshot_locked(), self.last_id)
                if not conn.subscribe_after(TOPIC, self.last_id):
                    # The history moved on (Redis lost it) before this server saw a tick of the
                    # new one: the client comes back in a moment for a newer snapshot.
                    conn.close(1013, "no snapshot yet: try again")
                    return
                start = self.last_id
            self.clients[conn.id] = ["sse" if stream else "websocket", start]
            client = conn.query_param("client") if stream else None
            if client:
                self.streams[client] = conn.id

    def snapshot_locked(self) -> str:
        snapshot = {"type": "snapshot", "id": self.last_id, "time": int(time.time() * 1000),
                    "stocks": [fields(s) for s in self.stocks]}
        return json.dumps(snapshot, separators=(",", ":"))

    def snapshot(self) -> str:
        """GET /snapshot: the prices and the id of the last tick in them, for a STOMP client that
        then subscribes with last-event-id set to that id."""
        with self.lock:
            return self.snapshot_locked()

    def join_stomp(self, conn: petrel.Connection) -> None:
        """A STOMP client: its SUBSCRIBE subscribes it; its ACKs say how far it is."""
        with self.lock:
            self.clients[conn.id] = ["stomp", self.last_id]

    def leave(self, conn: petrel.Connection) -> None:
        with self.lock:
            self.clients.pop(conn.id, None)
            for key, value in list(self.streams.items()):
                if value == conn.id:
                    del self.streams[key]

    def acknowledge(self, conn_id: int, event_id: int) -> bool:
        with self.lock:
            c = self.clients.get(conn_id)
            if c is None:
                return False
            if c[1] < event_id <= self.last_id:
                c[1] = event_id
            return True

    def health(self, uptime: float, sockets: int) -> Dict[str, Any]:
        with self.lock:
            now = int(time.time() * 1000)
            counts, lag = {}, {}
            for transport in ("websocket", "sse", "stomp"):
                acked = [c[1] for c in self.clients.values() if c[0] == transport]
                counts[transport] = len(acked)
                # A client may have come from a server that had read further than this one.
                behind = max(0, self.last_id - min(acked, default=self.last_id))
                ms = 0 if behind == 0 else (max(0, now - self.times[(self.last_id - behind + 1) % RING]) if behind < RING else -1)
                lag[transport] = {"events": behind, "ms": ms}
            return {"status": "ok", "uptimeSeconds": round(uptime, 1), "connections": {**counts, "sockets": sockets},
                    "published": self.published, "lastEventId": self.last_id, "stocks": len(self.stocks), "lag": lag}


def load_stocks(path: str) -> List[Stock]:
    stocks = []
    with open(path, newline="", encoding="utf-8") as f:
        for n, row in enumerate(csv.DictReader(f), start=2):
            try:
                cents = round(float(row["price"]) * 100)
                if not row["ticker"] or cents <= 0:
                    raise ValueError
            except (KeyError, TypeError, ValueError):
                raise SystemExit(f"stock_server: {path}:{n}: expected ticker,company,price") from None
            stocks.append({"ticker": row["ticker"], "company": row["company"], "open": cents, "cents": cents})
    if not stocks:
        raise SystemExit(f"stock_server: {path}: no stocks")
    return stocks


def main() -> None:
    p = argparse.ArgumentParser(description="Petrel stock-ticker push server (Python bindings)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=8080, help="port (0 picks one)")
    p.add_argument("--data", default=str(EXAMPLES / "data" / "stocks.csv"), help="ticker,company,price CSV")
    p.add_argument("--web", default=str(EXAMPLES / "web"), help="folder served as the page")
    p.add_argument("--tick-min", type=float, default=0.05, help="shortest time between ticks (s)")
    p.add_argument("--tick-max", type=float, default=2.0, help="longest time between ticks (s)")
    p.add_argument("--threads", type=int, default=0, help="loop threads (0: one per core)")
    p.add_argument("--tls-cert", help="PEM certificate chain: serve https:// and wss://")
    p.add_argument("--tls-key", help="PEM private key of --tls-cert")
    p.add_argument("--engine", help="topics through Redis Streams (redis://host:port or a Unix socket path), shared "
                                    "with every server on that Redis (default: in this process)")
    p.add_argument("--no-feed", action="store_true", help="publish nothing: serve the ticks another server publishes")
    p.add_argument("--access-log", help="append a line per request, upgrade and close to this file")
    p.add_argument("--cors-origins", help='comma-separated origins ("*" for any) whose pages may read /events, /snapshot '
                                         "and /health and POST /ack (others get 403)")
    p.add_argument("--trusted-proxies", help="comma-separated addresses and CIDR blocks whose X-Forwarded-For names the client")
    args = p.parse_args()
    if not 0 < args.tick_min <= args.tick_max:
        p.error("need 0 < --tick-min <= --tick-max")
    if bool(args.tls_cert) != bool(args.tls_key):
        p.error("--tls-cert and --tls-key go together")
    stocks = load_stocks(args.data)

    server = petrel.Server(args.host, args.port, threads=args.threads, static_root=args.web,
                           event_stream_paths=["/events"], slow_consumer="coalesce", max_queued=RING, replay=RING,
                           ping_interval=15.0, tls_cert=args.tls_cert, tls_key=args.tls_key, engine=args.engine,
                           # STOMP at /stomp, and on /stream for clients that offer v12.stomp:
                           # destination /topic/stock.
                           stomp_paths=["/stomp"], access_log=args.access_log,
                           cors_origins=[o.strip() for o in args.cors_origins.split(",")] if args.cors_origins else None,
                           trusted_proxies=[t.strip() for t in args.trusted_proxies.split(",")] if args.trusted_proxies else None)
    market = Market(stocks)

    @server.on_stomp_subscribe
    def on_subscribe(frame: petrel.StompFrame) -> object:
        return TOPIC if frame.destination == "/topic/stock" else petrel.StompRefuse(f"unknown destination {frame.destination}")

    @server.on_stomp_ack
    def on_ack(conn: petrel.Connection, subscription: str, ids: List[int], negative: bool, position: int) -> None:
        market.acknowledge(conn.id, position)
    # Prices come from the topic itself, whoever publishes: with an engine, the history read at
    # start, then every tick.
    server.observe(TOPIC, market.observe)
    feed = None
    started = time.monotonic()

    @server.on_open
    def on_open(conn: petrel.Connection) -> None:
        if conn.is_stomp:
            market.join_stomp(conn)
            return
        if conn.path not in ("/stream", "/events"):
            conn.close(1008, "the stream is at /stream")
            return
        market.join(conn)

    @server.on_message
    def on_message(conn: petrel.Connection, message: Union[str, bytes]) -> None:
        try:
            event_id = json.loads(message)["ack"] if isinstance(message, str) else None
        except (ValueError, KeyError, TypeError):
            return
        if isinstance(event_id, int):
            market.acknowledge(conn.id, event_id)

    server.on_close(lambda conn, code, reason: market.leave(conn))

    @server.on_http
    def on_http(request: petrel.HTTPRequest) -> Optional[Tuple[int, str, Union[str, bytes]]]:
        if request.method == "GET" and request.path == "/snapshot":
            return 200, "application/json", market.snapshot()
        if request.method == "GET" and request.path == "/health":
            body = market.health(time.monotonic() - started, server.connection_count)
            return 200, "application/json", json.dumps(body)
        if request.method == "POST" and request.path == "/ack":
            conn_id = market.streams.get(request.query_param("client") or "")
            try:
                known = conn_id is not None and market.acknowledge(conn_id, int(request.body.strip()))
            except ValueError:
                return 400, "text/plain", "the body is an event id\n"
            return (204 if known else 404), "text/plain", b""
        return None  # /events, then the page's files

    server.start()
    if not args.no_feed:
        with market.lock:  # the feed goes on from the prices the topic has (a restart in a cluster)
            feed = Feed(market.stocks, server)
    shown = "localhost" if args.host in ("0.0.0.0", "::") else args.host
    ticks = f"a tick every {args.tick_min}-{args.tick_max} s" if feed else "no feed (ticks from the engine)"
    print(f"Petrel stock ticker (Python): {len(stocks)} stocks, {ticks}"
          + (f", topics through {args.engine}" if args.engine else ""))
    scheme = "https" if args.tls_cert else "http"
    print(f"open {scheme}://{shown}:{server.port}/   (WebSocket /stream, STOMP /stomp, SSE /events, /health)", flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    next_tick = time.monotonic()
    failing = False
    while not stop.is_set():
        if feed:
            try:
                feed.tick()
                if failing:
                    print("stock_server: publishing again", flush=True)
                failing = False
            except petrel.EngineUnavailable as e:
                if not failing:
                    print(f"stock_server: a tick was not published: {e}", flush=True)
                failing = True
        next_tick += random.uniform(args.tick_min, args.tick_max)
        wait = next_tick - time.monotonic()
        if wait < -1:
            next_tick = time.monotonic()
        stop.wait(max(0.0, wait))
    server.stop(1.0)
    server.close()
    print("stopped")


if __name__ == "__main__":
    main()
