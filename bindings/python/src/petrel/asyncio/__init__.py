"""asyncio flavour: a client whose messages arrive through the event loop, and a server whose
handlers may be coroutines. Nothing here blocks the event loop: messages cross from Petrel's loop
thread with call_soon_threadsafe; only the connect handshake runs in an executor.

    async with petrel.asyncio.connect("ws://127.0.0.1:8080/") as ws:
        await ws.send("hello")
        print(await ws.recv())
"""
from __future__ import annotations

import asyncio
import ctypes
import logging
from typing import Any, Awaitable, Callable, Optional

from .. import _lib
from .. import _status as S
from .._lib import lib
from ..client import Message
from ..exceptions import ConnectionClosed, check
from ..server import Data, Server as _SyncServer, _payload

log = logging.getLogger("petrel")


class _Closed:
    def __init__(self, code: int, reason: str) -> None:
        self.code, self.reason = code, reason


class WebSocket:
    """An open client connection. recv() awaits the next message; iterating ends at close."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._handle = ctypes.c_void_p()
        self._closed: Optional[_Closed] = None
        # Kept for the life of the connection: ctypes does not keep callbacks alive.
        self._callbacks = _lib.ClientCallbacks()
        lib.petrel_client_callbacks_init(ctypes.byref(self._callbacks))
        self._callbacks.on_message = _lib.ClientOnMessage(self._c_message)
        self._callbacks.on_close = _lib.ClientOnClose(self._c_close)

    def _c_message(self, _ud, _client, kind, data, length):  # type: ignore[no-untyped-def]
        raw = ctypes.string_at(data, length) if length else b""
        message = raw.decode("utf-8") if kind == _lib.TEXT else raw
        self._loop.call_soon_threadsafe(self._queue.put_nowait, message)

    def _c_close(self, _ud, _client, code, reason, length):  # type: ignore[no-untyped-def]
        text = ctypes.string_at(reason, length).decode("utf-8", "replace") if length else ""
        self._loop.call_soon_threadsafe(self._queue.put_nowait, _Closed(code, text))

    async def recv(self) -> Message:
        """The next message; raises ConnectionClosed (with code and reason) once closed."""
        if self._closed:
            raise ConnectionClosed(S.E_CLOSED, self._closed.code, self._closed.reason)
        item = await self._queue.get()
        if isinstance(item, _Closed):
            self._closed = item
            raise ConnectionClosed(S.E_CLOSED, item.code, item.reason)
        return item

    async def send(self, data: Data) -> None:
        """Queues a message (never blocks: Petrel copies it and writes it from its loop)."""
        kind, raw = _payload(data)
        check(lib.petrel_client_send(self._handle, kind, raw, len(raw)))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Closes and waits for the closing handshake to finish."""
        if self._closed is None:
            rc = lib.petrel_client_close(self._handle, code, reason.encode())
            if rc != S.E_CLOSED:
                check(rc)
            while self._closed is None:
                item = await self._queue.get()
                if isinstance(item, _Closed):
                    self._closed = item

    @property
    def close_code(self) -> Optional[int]:
        return self._closed.code if self._closed else None

    def __aiter__(self) -> "WebSocket":
        return self

    async def __anext__(self) -> Message:
        try:
            return await self.recv()
        except ConnectionClosed:
            raise StopAsyncIteration

    def _destroy(self) -> None:
        if self._handle:
            lib.petrel_client_destroy(self._handle)
            self._handle = ctypes.c_void_p()


class connect:
    """`await connect(url)` or `async with connect(url) as ws:`."""

    def __init__(self, url: str, *, compression: bool = True, max_message_size: int = 16 * 1024 * 1024,
                 open_timeout: float = 10.0) -> None:
        if not isinstance(url, str):
            raise TypeError("url must be a str")
        self._url, self._compression, self._max, self._timeout = url, compression, max_message_size, open_timeout
        self._ws: Optional[WebSocket] = None

    async def _open(self) -> WebSocket:
        loop = asyncio.get_running_loop()
        ws = WebSocket(loop)
        cfg = _lib.ClientConfig()
        lib.petrel_client_config_init(ctypes.byref(cfg))
        cfg.compression = 1 if self._compression else 0
        cfg.max_message_size = self._max
        cfg.connect_timeout_ms = cfg.handshake_timeout_ms = int(self._timeout * 1000)
        url = self._url.encode()

        def blocking_connect() -> int:
            return lib.petrel_client_connect(url, ctypes.byref(cfg), ctypes.byref(ws._callbacks), ctypes.byref(ws._handle))

        check(await loop.run_in_executor(None, blocking_connect))
        return ws

    def __await__(self):  # type: ignore[no-untyped-def]
        return self._open().__await__()

    async def __aenter__(self) -> WebSocket:
        self._ws = await self._open()
        return self._ws

    async def __aexit__(self, *exc: object) -> None:
        if self._ws:
            await self._ws.close()
            self._ws._destroy()


Handler = Callable[..., Optional[Awaitable[None]]]


class Server(_SyncServer):
    """A Petrel server whose handlers may be coroutines: they run on the event loop that called
    start() or serve_forever(), never on Petrel's threads, so they can await freely. (Plain
    functions run on the dispatcher thread, as with petrel.Server.)"""

    def start(self) -> "Server":  # type: ignore[override]
        self._event_loop = asyncio.get_running_loop()
        super().start()
        return self

    async def serve_forever(self) -> None:  # type: ignore[override]
        """Serves until stop() is called or the task is cancelled."""
        self.start()
        self._done = asyncio.Event()
        try:
            await self._done.wait()
        finally:
            self.close()

    def stop(self, grace: float = 5.0) -> None:
        super().stop(grace)
        done = getattr(self, "_done", None)
        if done is not None:
            self._event_loop.call_soon_threadsafe(done.set)

    def _invoke(self, handler: Handler, *args: Any) -> None:
        result = handler(*args)
        if asyncio.iscoroutine(result):
            future = asyncio.run_coroutine_threadsafe(result, self._event_loop)
            future.add_done_callback(_log_failure)


def _log_failure(future: "asyncio.Future[Any]") -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("petrel: exception in a coroutine handler", exc_info=future.exception())


from ._serve import ServerConnection, WebSocketServer, serve  # noqa: E402

__all__ = ["connect", "WebSocket", "Server", "serve", "ServerConnection", "WebSocketServer"]
