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
import concurrent.futures
from typing import Any, Awaitable, Callable, Generator, Iterable, Optional, Union

from .. import _lib
from .. import _status as S
from .._lib import lib
from ..client import Message, _ClientConfig
from ..exceptions import ConnectionClosed, ConnectionClosedError, ConnectionClosedOK, check
from ..server import Data, Server as _SyncServer, _payload

log = logging.getLogger("petrel")


class _Closed:
    def __init__(self, code: int, reason: str) -> None:
        self.code, self.reason = code, reason


class WebSocket:
    """An open client connection. recv() awaits the next message; iterating ends at close."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[Union[Message, _Closed]] = asyncio.Queue()
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

    def _closed_error(self) -> ConnectionClosed:
        assert self._closed is not None
        kind = ConnectionClosedOK if self._closed.code in (1000, 1001, 1005) else ConnectionClosedError
        return kind(S.E_CLOSED, self._closed.code, self._closed.reason)

    async def recv(self) -> Message:
        """The next message (str or bytes). Once closed: ConnectionClosedOK after a normal close
        (1000, 1001, or 1005: no code), ConnectionClosedError after any other (with code and reason)."""
        if self._closed:
            raise self._closed_error()
        item = await self._queue.get()
        if isinstance(item, _Closed):
            self._closed = item
            raise self._closed_error()
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
        """Ends after a normal close; raises ConnectionClosedError after any other."""
        try:
            return await self.recv()
        except ConnectionClosedOK:
            raise StopAsyncIteration from None

    def _destroy(self) -> None:
        if self._handle:
            lib.petrel_client_destroy(self._handle)
            self._handle = ctypes.c_void_p()


class connect:
    """`ws = await connect(url, **options)` or `async with connect(url, **options) as ws:`.

    The options are petrel.connect's: compression, max_message_size, subprotocols, origin,
    open_timeout, tls_ca_file, tls_server_name, tls_cert_file, tls_key_file,
    tls_insecure_skip_verify, proxy, proxy_from_environment. The handshake (DNS, TCP, proxy,
    TLS) runs in the default executor. Cancelled while it runs, it leaves nothing open: the
    connection it makes is released as soon as it is made."""

    def __init__(self, url: str, *, compression: bool = True, max_message_size: int = 16 * 1024 * 1024,
                 subprotocols: Optional[Iterable[str]] = None, origin: Optional[str] = None,
                 open_timeout: float = 10.0, tls_ca_file: Optional[str] = None, tls_server_name: Optional[str] = None,
                 tls_cert_file: Optional[str] = None, tls_key_file: Optional[str] = None,
                 tls_insecure_skip_verify: bool = False, proxy: Optional[str] = None,
                 proxy_from_environment: bool = False) -> None:
        self._config = _ClientConfig(
            url, compression=compression, max_message_size=max_message_size, subprotocols=subprotocols,
            origin=origin, open_timeout=open_timeout, tls_ca_file=tls_ca_file, tls_server_name=tls_server_name,
            tls_cert_file=tls_cert_file, tls_key_file=tls_key_file, tls_insecure_skip_verify=tls_insecure_skip_verify,
            proxy=proxy, proxy_from_environment=proxy_from_environment)
        self._ws: Optional[WebSocket] = None

    async def _open(self) -> WebSocket:
        loop = asyncio.get_running_loop()
        ws = WebSocket(loop)
        made = loop.run_in_executor(None, self._config.connect, ws._callbacks)
        try:
            ws._handle = await asyncio.shield(made)
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
    """A Petrel server whose handlers may be coroutines: they run on the event loop that called
    start() or serve_forever(), never on Petrel's threads, so they can await freely. (Plain
    functions run on the dispatcher thread, as with petrel.Server.)"""

    def start(self) -> "Server":
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

    def _invoke(self, handler: Callable[..., object], *args: Any) -> None:
        result = handler(*args)
        if asyncio.iscoroutine(result):
            future = asyncio.run_coroutine_threadsafe(result, self._event_loop)
            future.add_done_callback(_log_failure)


def _log_failure(future: "concurrent.futures.Future[Any]") -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("petrel: exception in a coroutine handler", exc_info=future.exception())


from ._serve import ServerConnection, WebSocketServer, serve  # noqa: E402

__all__ = ["connect", "WebSocket", "Server", "serve", "ServerConnection", "WebSocketServer"]
