"""asyncio flavour: a client whose messages arrive through the event loop, and a server whose
handlers may be coroutines. Nothing here blocks the event loop: messages cross from Petrel's loop
thread with call_soon_threadsafe; only the connect handshake runs in an executor.

    async with petrel.asyncio.connect("ws://127.0.0.1:8080/") as ws:
        await ws.send("hello")
        print(await ws.recv())
"""
from __future__ import annotations

import asyncio
import collections
import ctypes
import logging
from typing import Any, Awaitable, Callable, Deque, Dict, Generator, Iterable, Optional, Tuple, Union

from .. import _lib
from .. import _status as S
from .._lib import lib
from ..client import STATES, Headers, Message, Reconnect, StateCallback, _client_rtt, _client_subprotocol, _ClientConfig
from ..exceptions import ConnectionClosed, ConnectionClosedError, ConnectionClosedOK, check
from ..server import Data, Server as _SyncServer, _payload, _ping_payload
from ._flow import ReadFlow
from ._serve import _Messages

log = logging.getLogger("petrel")


class _Closed:
    def __init__(self, code: int, reason: str) -> None:
        self.code, self.reason = code, reason


class WebSocket(_Messages):
    """An open client connection. recv() awaits the next message; iterating ends at a normal close.

    Flow control both ways: `send` waits while more than `max_backpressure` bytes are queued
    for the server, and once more than `max_queue` messages wait for `recv`, reading stops (TCP
    then slows the server down) until they are down to a quarter of `max_queue`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, max_queue: Optional[int] = 16,
                 on_state: Optional[StateCallback] = None) -> None:
        self._loop = loop
        self._on_state = on_state
        self._state: Tuple[str, int] = ("connecting", 0)
        self._messages: Deque[Message] = collections.deque()
        self._waiter: Optional[asyncio.Future[None]] = None
        self._writable = asyncio.Event()
        self._writable.set()
        self._handle = ctypes.c_void_p()
        # Paused from the client loop thread, inside on_message: in force before the next frame.
        # Through the pointer the callback was given: the first messages may come before the
        # connect's executor has handed `_handle` over.
        self._client: Optional[int] = None
        self._released = False  # petrel_client_destroy has been called: no pointer is valid
        self._closing = False
        self._flow = ReadFlow(max_queue, self._pause_reading)
        self._closed: Optional[_Closed] = None  # as recv() has seen it: after every message
        self._ended: Optional[_Closed] = None  # as the library told it
        self._ended_event = asyncio.Event()
        self.subprotocol: Optional[str] = None  # the one the server chose: set once connected
        self._rtt: Optional[float] = None  # the last round-trip time read, kept past the release
        self._last_event_id: Optional[int] = None
        # Kept for the life of the connection: ctypes does not keep callbacks alive.
        self._callbacks = _lib.ClientCallbacks()
        lib.petrel_client_callbacks_init(ctypes.byref(self._callbacks))
        self._callbacks.on_message = _lib.ClientOnMessage(self._c_message)
        self._callbacks.on_close = _lib.ClientOnClose(self._c_close)
        self._callbacks.on_drain = _lib.ClientOnDrain(self._c_drain)
        self._callbacks.on_state = _lib.ClientOnState(self._c_state)

    # -- on the client loop thread

    def _c_message(self, _ud, client, kind, data, length):  # type: ignore[no-untyped-def]
        if not self._released:
            self._client = client
        raw = ctypes.string_at(data, length) if length else b""
        message = raw.decode("utf-8") if kind == _lib.TEXT else raw
        self._flow.arrived()
        self._loop.call_soon_threadsafe(self._deliver, message)

    def _c_close(self, _ud, _client, code, reason, length):  # type: ignore[no-untyped-def]
        text = ctypes.string_at(reason, length).decode("utf-8", "replace") if length else ""
        self._loop.call_soon_threadsafe(self._end, _Closed(code, text))

    def _c_drain(self, _ud, _client):  # type: ignore[no-untyped-def]
        self._loop.call_soon_threadsafe(self._writable.set)

    def _c_state(self, _ud, _client, value, attempt, delay_ms, reason, length):  # type: ignore[no-untyped-def]
        text = ctypes.string_at(reason, length).decode("utf-8", "replace") if length else ""
        self._loop.call_soon_threadsafe(self._state_changed, STATES.get(value, str(value)), attempt, delay_ms / 1000, text)

    def _state_changed(self, state: str, attempt: int, delay: float, reason: str) -> None:
        self._state = (state, attempt)
        if self._on_state is not None:
            try:
                self._on_state(state, attempt, delay, reason)
            except Exception:
                log.exception("petrel: exception in on_state")

    # -- on the event loop

    def _deliver(self, message: Message) -> None:
        self._messages.append(message)
        self._wake()

    def _end(self, closed: _Closed) -> None:
        self._ended = closed
        self._ended_event.set()
        self._writable.set()
        self._wake()
        # Nothing more will come: the client is released now, whether or not anyone calls
        # close() (the messages already queued stay readable).
        self._destroy()

    def _pause_reading(self, paused: int) -> bool:
        if self._released or (paused and self._closing):
            return False  # freed; or closing, when the close reply must be read
        handle = self._handle or self._client
        return bool(handle) and lib.petrel_client_pause_reading(handle, paused) == 0

    def _closed_error(self, closed: Optional[_Closed] = None) -> ConnectionClosed:
        closed = closed or self._closed
        assert closed is not None
        kind = ConnectionClosedOK if closed.code in (1000, 1001, 1005) else ConnectionClosedError
        return kind(S.E_CLOSED, closed.code, closed.reason)

    async def recv(self) -> Message:
        """The next message (str or bytes). Once closed: ConnectionClosedOK after a normal close
        (1000, 1001, or 1005: no code), ConnectionClosedError after any other (with code and reason)."""
        if self._closed is not None:
            raise self._closed_error()
        while not self._messages:
            if self._ended is not None:
                self._closed = self._ended
                raise self._closed_error()
            await self._wait()
        message = self._messages.popleft()
        self._flow.took()
        return message

    async def send(self, data: Data) -> None:
        """Queues a message; while more than `max_backpressure` bytes wait to be written, waits
        for them to go out (a slow server slows the sender down). Raises ConnectionClosedOK or
        ConnectionClosedError once the connection has ended."""
        kind, raw = _payload(data)
        while True:
            if self._ended is not None:
                raise self._closed_error(self._ended)
            rc = lib.petrel_client_send(self._handle, kind, raw, len(raw))
            if rc == 0:
                return
            if rc == S.E_BACKPRESSURE:
                # on_drain comes once the buffer is written out (or the connection ends); tried
                # again each second all the same.
                self._writable.clear()
                try:
                    await asyncio.wait_for(self._writable.wait(), 1.0)
                except asyncio.TimeoutError:
                    pass
            elif rc == S.E_CLOSED:
                await self._ended_event.wait()  # then raises, above
            else:
                check(rc)

    async def ping(self, data: Data = b"") -> None:
        """Sends a ping with up to 125 bytes of payload (str as UTF-8) and returns at once (it
        does not wait for the pong, which sets round_trip_time). Raises InvalidArgument (a
        ValueError) over 125 bytes; ConnectionClosedOK or ConnectionClosedError once ended."""
        raw = _ping_payload(data)
        if self._ended is not None:
            raise self._closed_error(self._ended)
        rc = lib.petrel_client_ping(self._handle, raw, len(raw))
        if rc == S.E_CLOSED:
            await self._ended_event.wait()
            raise self._closed_error(self._ended)
        check(rc)

    @property
    def round_trip_time(self) -> Optional[float]:
        """Seconds between the last ping() and its pong, to the millisecond; None until a pong
        has come. Still readable once the connection has ended."""
        if self._handle and not self._released:
            rtt = _client_rtt(self._handle)
            if rtt is not None:
                self._rtt = rtt
        return self._rtt

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Closes and waits for the closing handshake to finish."""
        if self._ended is None:
            self._closing = True
            rc = lib.petrel_client_close(self._handle, code, reason.encode())
            if rc != S.E_CLOSED:
                check(rc)
            await self._ended_event.wait()
        self._closed = self._ended

    @property
    def state(self) -> Tuple[str, int]:
        """(state, attempt) as on_state last reported it: ("open", 0) once connected; with
        reconnect, ("reconnecting", n), ("connecting", n), ("open", n); ("closed", 0) at the end."""
        return self._state

    @property
    def last_event_id(self) -> Optional[int]:
        """The last event id named: the next reconnect resumes after it (None until set)."""
        return self._last_event_id

    @last_event_id.setter
    def last_event_id(self, value: int) -> None:
        if not isinstance(value, int) or not 0 <= value < 1 << 64:
            raise ValueError("last_event_id is an int from 0 to 2**64 - 1")
        self._last_event_id = value
        if self._handle and not self._released:
            check(lib.petrel_client_set_last_event_id(self._handle, value))

    @property
    def close_code(self) -> Optional[int]:
        return self._ended.code if self._ended else None

    @property
    def close_reason(self) -> Optional[str]:
        return self._ended.reason if self._ended else None

    def _destroy(self) -> None:
        if self._handle:
            self._released = True
            handle, self._handle, self._client = self._handle, ctypes.c_void_p(), None
            lib.petrel_client_destroy(handle)


class connect:
    """`ws = await connect(url, **options)` or `async with connect(url, **options) as ws:`.

    The options are petrel.connect's: compression, max_message_size, subprotocols, origin,
    open_timeout, tls_ca_file, tls_server_name, tls_cert_file, tls_key_file,
    tls_insecure_skip_verify, proxy, proxy_from_environment, additional_headers,
    max_backpressure (over it, send waits), ping_interval, ping_timeout and reconnect; and
    max_queue (16 messages; None: unbounded): once more than that wait for recv, reading
    pauses. With reconnect, the same WebSocket goes on across connections (recv ends only when
    the client ends), resuming after `ws.last_event_id`; on_state(state, attempt, delay, reason)
    runs on the event loop. Its messages come through callbacks: each connection's are all
    delivered before its loss is handled, so nothing comes twice after an id named in order. The handshake (DNS, TCP, proxy, TLS, certificate
    files) runs in the default executor. Cancelled while it runs, it leaves nothing open: the
    connection it makes is released as soon as it is made."""

    def __init__(self, url: str, *, compression: bool = True, max_message_size: int = 16 * 1024 * 1024,
                 subprotocols: Optional[Iterable[str]] = None, origin: Optional[str] = None,
                 open_timeout: float = 10.0, tls_ca_file: Optional[str] = None, tls_server_name: Optional[str] = None,
                 tls_cert_file: Optional[str] = None, tls_key_file: Optional[str] = None,
                 tls_insecure_skip_verify: bool = False, proxy: Optional[str] = None,
                 proxy_from_environment: bool = False, additional_headers: Optional[Headers] = None,
                 max_backpressure: int = 1024 * 1024, max_queue: Optional[int] = 16,
                 ping_interval: Optional[float] = None, ping_timeout: float = 10.0,
                 reconnect: Union[None, bool, Reconnect] = None, on_state: Optional[StateCallback] = None) -> None:
        if max_queue is not None and (not isinstance(max_queue, int) or max_queue <= 0):
            raise ValueError("max_queue must be a positive int or None")
        self._config = _ClientConfig(
            url, compression=compression, max_message_size=max_message_size, subprotocols=subprotocols,
            origin=origin, open_timeout=open_timeout, tls_ca_file=tls_ca_file, tls_server_name=tls_server_name,
            tls_cert_file=tls_cert_file, tls_key_file=tls_key_file, tls_insecure_skip_verify=tls_insecure_skip_verify,
            proxy=proxy, proxy_from_environment=proxy_from_environment, additional_headers=additional_headers,
            max_backpressure=max_backpressure, ping_interval=ping_interval, ping_timeout=ping_timeout, reconnect=reconnect)
        self._max_queue = max_queue
        self._on_state = on_state
        self._ws: Optional[WebSocket] = None

    async def _open(self) -> WebSocket:
        loop = asyncio.get_running_loop()
        ws = WebSocket(loop, self._max_queue, self._on_state)
        made = loop.run_in_executor(None, self._config.connect, ws._callbacks)
        try:
            ws._handle = await asyncio.shield(made)
            ws.subprotocol = _client_subprotocol(ws._handle)
            if ws._last_event_id is not None:  # named from on_state before the handle came
                lib.petrel_client_set_last_event_id(ws._handle, ws._last_event_id)
            if ws._ended is not None:  # it ended before the handle was handed over
                ws._destroy()
        except asyncio.CancelledError:
            def release(f: "asyncio.Future[ctypes.c_void_p]") -> None:
                # Through `ws`, which this closure keeps alive with its callbacks until the
                # connection is released.
                if not f.cancelled() and f.exception() is None:
                    ws._handle = f.result()
                    ws._destroy()
            made.add_done_callback(release)
            raise
        return ws

    def __await__(self) -> Generator[Any, None, WebSocket]:
        return self._open().__await__()

    async def __aenter__(self) -> WebSocket:
        self._ws = await self._open()
        return self._ws

    async def __aexit__(self, *exc: object) -> None:
        if self._ws:
            try:
                await self._ws.close()
            finally:
                self._ws._destroy()


Handler = Callable[..., Optional[Awaitable[None]]]


class Server(_SyncServer):
    """petrel.Server's per-event handlers (on_open, on_message, on_close, on_drain), where a
    handler may be a coroutine: it runs on the event loop that started the server, so it can
    await freely, and one connection's coroutine handlers run one after another, in the order
    of its events. (A plain function runs on the dispatcher thread at once, as with
    petrel.Server: give a connection coroutine handlers only, or plain ones only.)

    Starting, stopping and closing are awaited and run in the default executor, so the event
    loop never waits: `await server.start()`, `await server.stop()`, `await server.close()`, or
    `async with petrel.asyncio.Server(...) as server:`. For one coroutine per connection in
    the style of `websockets`, see serve()."""

    _done: Optional[asyncio.Event] = None

    async def start(self) -> "Server":  # type: ignore[override]
        """Binds (and loads TLS files, connects to the engine) in the executor; returns once serving."""
        self._event_loop = asyncio.get_running_loop()
        self._chains: Dict[int, "asyncio.Task[None]"] = {}
        await self._event_loop.run_in_executor(None, super().start)
        return self

    async def serve_forever(self) -> None:  # type: ignore[override]
        """Serves until stop() is called or the task is cancelled; then releases the server."""
        if not self._started:
            await self.start()
        self._done = asyncio.Event()
        try:
            await self._done.wait()
        finally:
            await self.close()

    async def stop(self, grace: float = 5.0) -> None:  # type: ignore[override]
        """Sends 1001 to every client and waits up to `grace` seconds for them (in the executor)."""
        await asyncio.get_running_loop().run_in_executor(None, _SyncServer.stop, self, grace)
        if self._done is not None:
            self._done.set()

    async def close(self) -> None:  # type: ignore[override]
        """Stops if needed (in the executor), lets the coroutine handlers finish (then cancels
        what is left), and releases the server on the event loop: no handler can call into the
        library with the handle while it is freed."""
        if self._handle and self._started:
            await asyncio.get_running_loop().run_in_executor(None, _SyncServer.stop, self, 1.0)
        chains = list(getattr(self, "_chains", {}).values())
        if chains:
            await asyncio.wait(chains, timeout=1.0)
            for task in chains:
                task.cancel()
            await asyncio.wait(chains)
        _SyncServer.close(self)

    async def __aenter__(self) -> "Server":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __enter__(self) -> "Server":
        raise TypeError("petrel.asyncio.Server is used with `async with`")

    async def publish_async(self, topic: str, data: Data, key: Optional[str] = None, stamp_id: bool = False) -> int:
        """publish(), awaited: with the Redis engine it waits for Redis in the executor."""
        if not self._has_engine:
            return self.publish(topic, data, key=key, stamp_id=stamp_id)
        return await asyncio.get_running_loop().run_in_executor(
            None, lambda: self.publish(topic, data, key=key, stamp_id=stamp_id))

    def _invoke(self, handler: Callable[..., object], *args: Any) -> None:
        result = handler(*args)
        if asyncio.iscoroutine(result):
            conn_id = args[0].id
            try:
                self._event_loop.call_soon_threadsafe(self._chain, conn_id, result)
            except RuntimeError:  # the event loop is closed
                result.close()

    def _chain(self, conn_id: int, coroutine: Awaitable[None]) -> None:
        """On the event loop: runs `coroutine` after the connection's previous one."""
        previous = self._chains.get(conn_id)

        async def after() -> None:
            if previous is not None and not previous.done():
                await asyncio.wait([previous])
            await coroutine
        task = self._event_loop.create_task(after())
        self._chains[conn_id] = task

        def finished(t: "asyncio.Task[None]") -> None:
            if self._chains.get(conn_id) is t:
                del self._chains[conn_id]
            if not t.cancelled() and t.exception() is not None:
                log.error("petrel: exception in a coroutine handler", exc_info=t.exception())
        task.add_done_callback(finished)


from ._serve import ServerConnection, WebSocketServer, serve  # noqa: E402

__all__ = ["connect", "WebSocket", "Server", "serve", "ServerConnection", "WebSocketServer"]
