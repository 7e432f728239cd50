"""`serve(handler, host, port)`: a server in the style of the `websockets` library, one coroutine
per connection.

    async def echo(ws):
        async for message in ws:
            await ws.send(message)

    async with petrel.asyncio.serve(echo, "127.0.0.1", 0) as server:
        print(server.port)
        await server.serve_forever()

Petrel's loop threads do the I/O. Its dispatcher thread takes their events in batches and hands
each batch to the event loop with one `call_soon_threadsafe`, so a connection's messages reach
its coroutine in order. Nothing here blocks the event loop: starting (binding, TLS files, the
Redis engine) and stopping run in the default executor.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import threading
from typing import Any, Awaitable, Callable, Deque, Dict, List, Optional, Set, Tuple, Union

from .. import _lib
from .. import _status as S
from .._lib import lib
from ..exceptions import Backpressure, ConnectionClosed, ConnectionClosedError, ConnectionClosedOK, PetrelError
from ..server import _RECORD, Connection, Data, Server as _SyncServer, _event_batches

log = logging.getLogger("petrel")

Message = Union[str, bytes]
Handler = Callable[["ServerConnection"], Awaitable[None]]
# Normal closes, as `websockets` counts them: 1000, 1001, and a close frame without a code (1005).
_NORMAL = (1000, 1001, 1005)
_BATCHES_IN_FLIGHT = 4


def _gone(error: PetrelError) -> bool:
    """The connection has ended (its close event may still be on its way)."""
    return isinstance(error, ConnectionClosed) or error.status == S.E_UNKNOWN_CONNECTION


def _close_quietly(conn: Connection, code: int, reason: str) -> None:
    try:
        conn.close(code, reason)
    except PetrelError as e:
        if not _gone(e):
            raise


class _Messages:
    """What both ends' connections share: the queue recv() waits on, and `async for message in
    ws`, which ends after a normal close (recv raises ConnectionClosedOK) and raises
    ConnectionClosedError after any other."""

    recv: Callable[[], Awaitable[Message]]  # each connection's own
    _loop: asyncio.AbstractEventLoop
    _waiter: Optional["asyncio.Future[None]"]

    async def _wait(self) -> None:
        """Until _wake(): a message was queued, or the connection ended."""
        if self._waiter is not None:
            raise RuntimeError("another coroutine is already waiting in recv() on this connection")
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def __aiter__(self) -> "_Messages":
        return self

    async def __anext__(self) -> Message:
        try:
            return await self.recv()
        except ConnectionClosedOK:
            raise StopAsyncIteration from None


class ServerConnection(_Messages):
    """One client, as the handler sees it: `async for message in ws`, `await ws.recv()`,
    `await ws.send(message)`. Methods are for the event loop's thread."""

    def __init__(self, conn: Connection, loop: asyncio.AbstractEventLoop, max_queue: Optional[int]) -> None:
        self._conn = conn
        self._loop = loop
        self._messages: Deque[Message] = collections.deque()
        # Receive flow control, all on the event loop: past `_high` waiting messages the
        # dispatch pauses reading; recv resumes it at `_low`. (At most 4 batches are on their
        # way to the event loop, so counting here rather than on the dispatcher thread adds
        # little to what may arrive past the bound, and nothing to each message's cost.)
        self._high = max_queue if max_queue is not None else 1 << 62
        self._low = (max_queue or 0) // 4
        self._paused = False
        self._closing = False  # we began the close: no new pause (the close reply must be read)
        self._waiter: Optional[asyncio.Future[None]] = None
        self._writable = asyncio.Event()
        self._writable.set()
        self._closed_event = asyncio.Event()
        self.close_code: Optional[int] = None
        self.close_reason: str = ""

    # -- what the request said

    @property
    def id(self) -> int:
        return self._conn.id

    @property
    def path(self) -> Optional[str]:
        return self._conn.path

    @property
    def query(self) -> Optional[str]:
        return self._conn.query

    def header(self, name: str) -> Optional[str]:
        return self._conn.header(name)

    def query_param(self, name: str) -> Optional[str]:
        return self._conn.query_param(name)

    @property
    def remote_address(self) -> Optional[str]:
        return self._conn.peer_address

    @property
    def last_event_id(self) -> Optional[int]:
        return self._conn.last_event_id

    @property
    def subprotocol(self) -> Optional[str]:
        """The subprotocol the handshake chose, or None."""
        return self._conn.subprotocol

    @property
    def round_trip_time(self) -> Optional[float]:
        """Seconds between the server's last ping to this client (ping(), or ping_interval's)
        and its pong; None until a pong has come. Raises InvalidState once the connection is gone."""
        return self._conn.round_trip_time

    # -- messages

    async def recv(self) -> Message:
        """The next message: str for text, bytes for binary. Raises ConnectionClosedOK after a
        normal close (1000, 1001, or 1005: no code), ConnectionClosedError after any other."""
        while not self._messages:
            if self.close_code is not None:
                raise self._closed()
            await self._wait()
        message = self._messages.popleft()
        if self._paused and len(self._messages) <= self._low:
            self._pause_reading(False)
        return message

    def _pause_reading(self, paused: bool) -> None:
        self._paused = paused
        rc = lib.petrel_conn_pause_reading(self._conn.server._handle, self._conn.id, 1 if paused else 0)
        if rc and rc != S.E_UNKNOWN_CONNECTION:  # gone: its close event is on its way
            log.error("petrel: petrel_conn_pause_reading returned %d", rc)

    async def send(self, message: Data) -> None:
        """Queues a message. When the connection's send buffer is over its limit
        (`max_backpressure`), waits until it has been written out: a slow reader slows the
        sender down instead of growing memory."""
        while True:
            if self.close_code is not None:
                raise self._closed()
            try:
                self._conn.send(message)
                return
            except Backpressure:
                # A drain event comes once the buffer, over its limit now, is written out (or the
                # connection closes). Tried again each second all the same.
                self._writable.clear()
                try:
                    await asyncio.wait_for(self._writable.wait(), 1.0)
                except asyncio.TimeoutError:
                    pass
            except PetrelError as e:
                if not _gone(e):
                    raise
                await self._closed_event.wait()
                raise self._closed() from None

    async def ping(self, data: Data = b"") -> None:
        """Sends a ping with up to 125 bytes of payload (str as UTF-8) and returns at once (it
        does not wait for the pong, which sets round_trip_time). Raises InvalidArgument (a
        ValueError) over 125 bytes or on an event stream; ConnectionClosedOK or
        ConnectionClosedError once the connection has ended."""
        if self.close_code is not None:
            raise self._closed()
        try:
            self._conn.ping(data)
        except PetrelError as e:
            if not _gone(e):
                raise
            await self._closed_event.wait()
            raise self._closed() from None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Starts the closing handshake and waits for the connection to end."""
        if self.close_code is None:
            self._closing = True
            _close_quietly(self._conn, code, reason)
        await self._closed_event.wait()

    async def wait_closed(self) -> None:
        await self._closed_event.wait()

    # -- pub/sub and event streams (non-blocking calls into the library)

    def subscribe(self, topic: str) -> None:
        self._conn.subscribe(topic)

    def unsubscribe(self, topic: str) -> None:
        self._conn.unsubscribe(topic)

    async def subscribe_after(self, topic: str, event_id: int) -> bool:
        """As petrel.Connection.subscribe_after, awaited: with the Redis engine it reads the
        topic's history from Redis, in the executor."""
        if not self._conn.server._has_engine:
            return self._conn.subscribe_after(topic, event_id)
        return await self._loop.run_in_executor(None, self._conn.subscribe_after, topic, event_id)

    def send_event(self, text: str, event_id: int = 0) -> None:
        self._conn.send_event(text, event_id)

    # -- from the dispatcher, on the event loop

    def _closed(self) -> ConnectionClosed:
        kind = ConnectionClosedOK if self.close_code in _NORMAL else ConnectionClosedError
        return kind(code=self.close_code, reason=self.close_reason)

    def _end(self, code: int, reason: str) -> None:
        self.close_code, self.close_reason = code, reason
        self._writable.set()
        self._closed_event.set()
        self._wake()

    def __repr__(self) -> str:
        return f"<petrel.asyncio.ServerConnection {self.id}>"


class _Bridge(_SyncServer):
    """The sync server, with a dispatcher that hands whole batches to the event loop."""

    _loop: asyncio.AbstractEventLoop
    _sink: Callable[[List[Tuple[int, int, int, Any]], Callable[[], None]], None]

    def _pump_events(self) -> None:
        unpack, loop, sink = _RECORD.unpack_from, self._loop, self._sink
        message_type, open_type, close_type = _lib.QUEUED_MESSAGE, _lib.QUEUED_OPEN, _lib.QUEUED_CLOSE
        gate = _Gate(_BATCHES_IN_FLIGHT)
        for view, end in _event_batches(self._handle):
            batch: List[Tuple[int, int, int, Any]] = []
            off = 0
            while off < end:
                conn_id, length, code, kind_type, kind = unpack(view, off)
                off += 16
                payload = view[off:off + length]
                off += (length + 7) & ~7
                if kind_type == message_type:
                    batch.append((kind_type, conn_id, 0, str(payload, "utf-8") if kind == 1 else payload.tobytes()))
                elif kind_type == open_type or kind_type == close_type:
                    batch.append((kind_type, conn_id, code, str(payload, "utf-8", "replace")))
                else:
                    batch.append((kind_type, conn_id, 0, None))
            gate.enter(loop)
            try:
                loop.call_soon_threadsafe(sink, batch, gate.leave)
            except RuntimeError:  # the event loop is closed: nobody is left to tell
                gate.leave()


class _Gate:
    """At most `limit` batches handed to the event loop and not yet taken: when it falls
    behind, the dispatcher waits, the library's event queue fills, the loop threads wait and TCP
    pushes back on the clients, instead of batches piling up in memory. Two counters with one
    writer each, and an Event only for the wait (a Semaphore per batch cost 10% of an echo)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.handed = 0  # the dispatcher
        self.taken = 0  # the event loop
        self.waiting = False
        self.room = threading.Event()

    def enter(self, loop: asyncio.AbstractEventLoop) -> None:
        """The dispatcher, before handing a batch over."""
        while self.handed - self.taken >= self.limit and not loop.is_closed():
            self.room.clear()
            self.waiting = True
            if self.handed - self.taken >= self.limit:  # taken since: no set() is coming
                self.room.wait(0.5)
            self.waiting = False
        self.handed += 1

    def leave(self) -> None:
        """The event loop, as it takes a batch."""
        self.taken += 1
        if self.waiting:
            self.room.set()


class WebSocketServer:
    """What `serve` gives: the port, publishing, and a way to stop."""

    def __init__(self, handler: Handler, host: str, port: int, options: Dict[str, Any]) -> None:
        if not callable(handler):
            raise TypeError("the handler is a coroutine function taking the connection")
        for name in ("on_open", "on_message", "on_close", "on_drain"):
            if name in options:
                raise TypeError(f"serve() takes a handler per connection, not {name}")
        max_queue = options.pop("max_queue", 16)
        if max_queue is not None and (not isinstance(max_queue, int) or max_queue <= 0):
            raise ValueError("max_queue must be a positive int or None")
        self._handler = handler
        self._max_queue: Optional[int] = max_queue
        self._server = _Bridge(host, port, **options)
        self._connections: Dict[int, ServerConnection] = {}
        self._tasks: Set[asyncio.Task[None]] = set()
        self._stopped: Optional[asyncio.Event] = None  # made in start(), on the running loop
        self._closing: Optional[asyncio.Task[None]] = None

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def connections(self) -> List[ServerConnection]:
        return list(self._connections.values())

    async def publish(self, topic: str, data: Data, key: Optional[str] = None, stamp_id: bool = False) -> int:
        """As petrel.Server.publish, awaited: with the Redis engine it waits for Redis in the
        executor; in-process it returns at once. Returns the event id."""
        server = self._server
        if not server._has_engine:
            return server.publish(topic, data, key=key, stamp_id=stamp_id)
        return await asyncio.get_running_loop().run_in_executor(
            None, lambda: server.publish(topic, data, key=key, stamp_id=stamp_id))

    async def start(self) -> "WebSocketServer":
        loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        self._server._loop = loop
        self._server._sink = self._dispatch
        await loop.run_in_executor(None, self._server.start)
        return self

    async def close(self, grace: float = 5.0) -> None:
        """Sends 1001 to every client, waits up to `grace` seconds for them and their handlers
        (then cancels what is left), and releases the server. Calling it again waits for the
        first call."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close(grace))
        await asyncio.shield(self._closing)

    async def _close(self, grace: float) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._server.stop, grace)
        # What the dispatcher handed over last (the closes) runs before this.
        await asyncio.sleep(0)
        for ws in list(self._connections.values()):
            ws._end(1001, "server stopped")
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace + 1)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks))
        # Released on the event loop, not in the executor: no coroutine can call into the
        # library with the handle while it is freed. (Stopped already, so this does not wait.)
        self._server.close()
        if self._stopped is not None:
            self._stopped.set()

    async def wait_closed(self) -> None:
        if self._stopped is not None:
            await self._stopped.wait()

    async def serve_forever(self) -> None:
        """Until the task is cancelled or close() is called."""
        if self._stopped is not None:
            await self._stopped.wait()

    def _dispatch(self, batch: List[Tuple[int, int, int, Any]], done: Callable[[], None]) -> None:
        done()  # the dispatcher may hand over another batch
        connections = self._connections
        for kind_type, conn_id, code, value in batch:
            if kind_type == _lib.QUEUED_MESSAGE:
                ws = connections.get(conn_id)
                if ws is not None:
                    messages = ws._messages
                    messages.append(value)
                    if ws._waiter is not None:
                        ws._wake()
                    if len(messages) > ws._high and not ws._paused and not ws._closing:
                        ws._pause_reading(True)  # the handler has fallen behind
            elif kind_type == _lib.QUEUED_OPEN:
                conn = self._server._conn(conn_id)
                conn._target = value
                ws = ServerConnection(conn, self._server._loop, self._max_queue)
                connections[conn_id] = ws
                task = self._server._loop.create_task(self._run(ws))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            elif kind_type == _lib.QUEUED_CLOSE:
                ws = connections.pop(conn_id, None)
                with self._server._lock:
                    self._server._connections.pop(conn_id, None)
                    self._server._user_data.pop(conn_id, None)
                if ws is not None:
                    ws._end(code, value)
            elif kind_type == _lib.QUEUED_DRAIN:
                ws = connections.get(conn_id)
                if ws is not None:
                    ws._writable.set()

    async def _run(self, ws: ServerConnection) -> None:
        try:
            await self._handler(ws)
        except ConnectionClosed:
            pass
        except asyncio.CancelledError:
            raise
        except Exception as e:
            if not (isinstance(e, PetrelError) and _gone(e)):
                log.exception("petrel: exception in the connection handler")
                if ws.close_code is None:
                    ws._closing = True
                    _close_quietly(ws._conn, 1011, "internal error")
        finally:
            # The handler is done with the connection: close it, as `websockets` does.
            if ws.close_code is None:
                ws._closing = True
                _close_quietly(ws._conn, 1000, "")


class serve:
    """`async with serve(handler, host, port, **options) as server:` or `server = await serve(...)`.
    Options are petrel.Server's (threads, compression, max_message_size, max_backpressure, origins,
    subprotocols, TLS, topics, the engine, static files, event streams, on_http, on_upgrade...),
    except the per-event callbacks: the handler replaces them; and max_queue (16 messages; None:
    unbounded): once more than that wait for a connection's recv, Petrel stops reading that
    client (TCP slows it down) until no more than a quarter of it wait. Port 0 picks a free port
    (`server.port`)."""

    def __init__(self, handler: Handler, host: str = "127.0.0.1", port: int = 8080, **options: Any) -> None:
        self._server = WebSocketServer(handler, host, port, options)

    def __await__(self) -> Any:
        return self._server.start().__await__()

    async def __aenter__(self) -> WebSocketServer:
        return await self._server.start()

    async def __aexit__(self, *exc: object) -> None:
        await self._server.close()


__all__ = ["serve", "ServerConnection", "WebSocketServer"]
