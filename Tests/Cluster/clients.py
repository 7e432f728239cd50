"""Stock clients that resume, for the cluster tests: WebSocket (websockets) and Server-Sent Events
(raw asyncio streams), each reconnecting with its last id after the connection drops and checking
every tick it gets: the first message is a snapshot, then each id follows the one before, with
no gap and no repeat, across reconnects; a reconnect must resume (no second snapshot)."""
from __future__ import annotations

import asyncio
import json
import random

import websockets

SEQUENCE = 1 << 40  # ids are epoch * 2^40 + sequence with the Redis engine


class Client:
    def __init__(self, name: str) -> None:
        self.name = name
        self.last: int | None = None  # the id of the last message shown
        self.messages = 0
        self.reconnects = 0
        self.errors: list[str] = []

    def take(self, text: str) -> None:
        m = json.loads(text)
        event_id = m["id"]
        if m["type"] == "snapshot":
            if self.last is not None:
                self.errors.append(f"a snapshot at {event_id} after {self.last}: the resume failed")
        elif self.last is None:
            self.errors.append(f"tick {event_id} before any snapshot")
        elif not (event_id == self.last + 1 or (self.last == 0 and event_id % SEQUENCE == 1)):
            kind = "repeat" if event_id <= self.last else "gap"
            self.errors.append(f"{kind}: {self.last} then {event_id}")
        self.last = event_id
        self.messages += 1


class WebSocketClient(Client):
    async def run(self, base: str, stop: asyncio.Event) -> None:
        while not stop.is_set():
            url = base.replace("http", "ws", 1) + "stream" + (f"?last_event_id={self.last}" if self.last is not None else "")
            try:
                async with websockets.connect(url, open_timeout=20, ping_interval=None, max_size=None,
                                              compression=None) as ws:
                    while not stop.is_set():
                        try:
                            text = await asyncio.wait_for(ws.recv(), 0.5)
                        except asyncio.TimeoutError:
                            continue
                        self.take(text)
            except (OSError, websockets.exceptions.WebSocketException, asyncio.TimeoutError):
                pass
            if not stop.is_set():
                self.reconnects += 1
                await asyncio.sleep(random.uniform(0.05, 0.3))


class EventStreamClient(Client):
    async def run(self, host: str, port: int, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 20)
                last = f"Last-Event-ID: {self.last}\r\n" if self.last is not None else ""
                # HTTP/1.0: the stream comes as it is, not chunked, and ends with the connection.
                writer.write(f"GET /events?client={self.name} HTTP/1.0\r\nHost: {host}:{port}\r\n"
                             f"Accept: text/event-stream\r\n{last}\r\n".encode())
                status = await asyncio.wait_for(reader.readline(), 20)
                if b" 200 " not in status:
                    raise OSError(f"status {status!r}")
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
                data: list[str] = []
                while not stop.is_set():
                    try:
                        line = await asyncio.wait_for(reader.readline(), 0.5)
                    except asyncio.TimeoutError:
                        continue
                    if not line:
                        break
                    line = line.decode().rstrip("\r\n")
                    if line.startswith("data:"):
                        data.append(line[5:].lstrip(" "))
                    elif line == "" and data:
                        self.take("\n".join(data))
                        data = []
                writer.close()
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
                pass
            if not stop.is_set():
                self.reconnects += 1
                await asyncio.sleep(random.uniform(0.05, 0.3))
