"""A blocking WebSocket client over Petrel's C client. recv() releases the GIL while it waits."""
from __future__ import annotations

import contextlib
import ctypes
import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Tuple, Union

from . import _lib
from . import _status as S
from ._lib import lib
from .exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, check, error_for
from .server import Data, _payload, _ping_payload

Message = Union[str, bytes]
# Extra request headers: a mapping, or (name, value) pairs (a name may repeat).
Headers = Union[Mapping[str, str], Iterable[Tuple[str, str]]]

log = logging.getLogger("petrel")
# Set on a library thread while it runs an on_state callback.
_in_callback = threading.local()

# The client's states, as on_state and ClientConnection.state name them (PETREL_CLIENT_*).
STATES = {1: "connecting", 2: "open", 3: "reconnecting", 4: "closed"}
# on_state(state, attempt, delay in seconds, reason): called on a library thread.
StateCallback = Callable[[str, int, float, str], None]


@dataclass(frozen=True)
class Reconnect:
    """A reconnecting client's policy (docs/python.md, Reconnecting).

    After a loss (the transport ended, no pong within ping_timeout, or a close with 1001, 1011,
    1012, 1013 or 1014), attempt n waits initial_delay * 2**(n-1) seconds, at most max_delay,
    less up to `jitter` of it at random. Failures of the network's kind (refused, reset,
    timeout, 408, 429, 5xx) are tried again; another refusal (401, 403, ...), max_attempts
    failures in a row (0: never give up) or another close code end the client. queue_sends:
    what send() does between connections: False raises Reconnecting, True queues (up to
    max_backpressure bytes), sent first on the next open."""

    initial_delay: float = 0.25
    max_delay: float = 30.0
    jitter: float = 0.5
    max_attempts: int = 0
    queue_sends: bool = False


def _header_lines(headers: Headers) -> bytes:
    """"Name: value" lines joined by CRLF. CR, LF and NUL are refused here, so that no value can
    add a line of its own; the library checks the rest (a token name, no reserved name)."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    lines = []
    for name, value in pairs:
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError("header names and values are str")
        if not name or ":" in name or any(c in name + value for c in "\r\n\0"):
            raise ValueError(f"header {name!r}: a name without ':', and no CR, LF or NUL anywhere")
        lines.append(f"{name}: {value}")
    return "\r\n".join(lines).encode("utf-8")


def _last_refusal() -> Optional[Tuple[int, bytes]]:
    """(HTTP status, body) when the last petrel_client_connect on this thread was refused with a
    status other than 101, else None. Thread-local in the library: read on the connecting thread,
    before it connects again."""
    status = ctypes.c_uint16()
    size = ctypes.c_size_t()
    buf = ctypes.create_string_buffer(1024)
    rc = lib.petrel_last_refusal(ctypes.byref(status), buf, len(buf), ctypes.byref(size))
    if rc == S.E_BUFFER_TOO_SMALL:
        buf = ctypes.create_string_buffer(size.value + 1)
        rc = lib.petrel_last_refusal(ctypes.byref(status), buf, len(buf), ctypes.byref(size))
    if rc != 0:  # E_AGAIN: not refused with a status
        return None
    return status.value, buf.raw[: size.value]


def _client_subprotocol(handle: ctypes.c_void_p) -> Optional[str]:
    """The subprotocol the server chose, or None."""
    size = ctypes.c_size_t()
    buf = ctypes.create_string_buffer(128)
    rc = lib.petrel_client_subprotocol(handle, buf, len(buf), ctypes.byref(size))
    if rc == S.E_BUFFER_TOO_SMALL:
        buf = ctypes.create_string_buffer(size.value + 1)
        rc = lib.petrel_client_subprotocol(handle, buf, len(buf), ctypes.byref(size))
    if rc == S.E_AGAIN:
        return None
    check(rc)
    return buf.raw[: size.value].decode("utf-8", "replace")


def _client_rtt(handle: ctypes.c_void_p) -> Optional[float]:
    """Seconds between the client's last ping and its pong, or None before the first pong."""
    ms = ctypes.c_uint32()
    rc = lib.petrel_client_rtt(handle, ctypes.byref(ms))
    if rc == S.E_AGAIN:
        return None
    check(rc)
    return ms.value / 1000


class ClientConnection:
    """A connected client. Iterating yields messages until the connection closes.

    `subprotocol`: the one the server chose (from the subprotocols offered), or None.

    Safe to share between threads: a call in progress on one thread (a blocking recv) keeps the
    library's client alive while another thread destroys it; destroy then closes the connection
    (1001), which ends that recv, and the last call out releases the client."""

    def __init__(self, handle: ctypes.c_void_p, keep: Any = None) -> None:
        self._handle = handle
        self._keep = keep  # the callbacks the library calls (on_state): alive as long as the client
        self._buf = ctypes.create_string_buffer(64 * 1024)
        self._users = 0  # calls into the library in progress
        self._destroying = False
        self._lock = threading.Lock()
        self.subprotocol: Optional[str] = _client_subprotocol(handle)

    @contextlib.contextmanager
    def _using(self) -> Iterator[ctypes.c_void_p]:
        """The handle, kept valid until the block ends; ConnectionClosed once destroyed."""
        with self._lock:
            if not self._handle or self._destroying:
                raise ConnectionClosed(S.E_CLOSED, None, "the client was destroyed")
            self._users += 1
            handle = self._handle
        try:
            yield handle
        finally:
            with self._lock:
                self._users -= 1
                last = self._destroying and self._users == 0 and bool(self._handle)
                if last:
                    self._handle = ctypes.c_void_p()
            if last:
                lib.petrel_client_destroy(handle)

    @property
    def state(self) -> Tuple[str, int]:
        """(state, attempt): ("open", 0) once connected; with reconnect, ("reconnecting", n)
        while waiting for attempt n, ("connecting", n) during it; ("closed", 0) at the end."""
        state = ctypes.c_int32()
        attempt = ctypes.c_uint32()
        with self._using() as handle:
            check(lib.petrel_client_state(handle, ctypes.byref(state), ctypes.byref(attempt)))
        return STATES.get(state.value, str(state.value)), attempt.value

    @property
    def last_event_id(self) -> Optional[int]:
        """The last event id the application named: the next reconnect resumes after it (a
        Last-Event-ID header and last_event_id=N in the URL). None until set."""
        out = ctypes.c_uint64()
        with self._using() as handle:
            rc = lib.petrel_client_last_event_id(handle, ctypes.byref(out))
        if rc == S.E_AGAIN:
            return None
        check(rc)
        return out.value

    @last_event_id.setter
    def last_event_id(self, value: int) -> None:
        if not isinstance(value, int) or not 0 <= value < 1 << 64:
            raise ValueError("last_event_id is an int from 0 to 2**64 - 1")
        with self._using() as handle:
            check(lib.petrel_client_set_last_event_id(handle, value))

    def send(self, data: Data) -> None:
        """Queues a message: str as text, bytes as binary. Raises Backpressure over
        max_backpressure, ConnectionClosed once closed, and with reconnect, Reconnecting between
        connections (unless Reconnect(queue_sends=True))."""
        kind, raw = _payload(data)
        with self._using() as handle:
            check(lib.petrel_client_send(handle, kind, raw, len(raw)))

    def recv(self, timeout: Optional[float] = None) -> Message:
        """The next message (str or bytes). Raises Timeout, or ConnectionClosed with code and reason."""
        kind = ctypes.c_int32()
        size = ctypes.c_size_t()
        ms = -1 if timeout is None else max(0, int(timeout * 1000))
        with self._using() as handle:
            while True:
                rc = lib.petrel_client_receive(handle, ms, ctypes.byref(kind), self._buf, len(self._buf), ctypes.byref(size))
                if rc == S.E_BUFFER_TOO_SMALL:  # buffer too small: grow to what is needed and take it again
                    self._buf = ctypes.create_string_buffer(size.value)
                    continue
                if rc == S.E_CLOSED:
                    code, reason = self._close_status(handle)
                    raise ConnectionClosed(S.E_CLOSED, code, reason)
                check(rc)
                raw = self._buf.raw[: size.value]
                return raw.decode("utf-8") if kind.value == _lib.TEXT else raw

    def ping(self, data: Data = b"") -> None:
        """Sends a ping with up to 125 bytes of payload (str as UTF-8); its pong sets
        round_trip_time. Raises InvalidArgument (a ValueError) over 125 bytes, ConnectionClosed
        once closed."""
        raw = _ping_payload(data)
        with self._using() as handle:
            check(lib.petrel_client_ping(handle, raw, len(raw)))

    @property
    def round_trip_time(self) -> Optional[float]:
        """Seconds between the last ping() and its pong, to the millisecond; None until a pong
        has come."""
        with self._using() as handle:
            return _client_rtt(handle)

    def __iter__(self) -> Iterator[Message]:
        while True:
            try:
                yield self.recv()
            except ConnectionClosed:
                return

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Starts the closing handshake (no-op if already closed)."""
        try:
            with self._using() as handle:
                rc = lib.petrel_client_close(handle, code, reason.encode())
        except ConnectionClosed:
            return
        if rc != S.E_CLOSED:
            check(rc)

    def close_status(self) -> tuple[Optional[int], str]:
        """(code, reason) once closed, else (None, "")."""
        with self._using() as handle:
            return self._close_status(handle)

    @staticmethod
    def _close_status(handle: ctypes.c_void_p) -> tuple[Optional[int], str]:
        code = ctypes.c_uint16()
        size = ctypes.c_size_t()
        buf = ctypes.create_string_buffer(128)
        rc = lib.petrel_client_close_status(handle, ctypes.byref(code), buf, len(buf), ctypes.byref(size))
        if rc == S.E_AGAIN:
            return None, ""
        check(rc)
        return code.value, buf.raw[: size.value].decode("utf-8", "replace")

    def destroy(self) -> None:
        """Closes the connection (1001) and releases the client; a call in progress on another
        thread ends (recv raises ConnectionClosed) and the client is released after it."""
        with self._lock:
            handle = self._handle
            if not handle or self._destroying:
                return
            self._destroying = True
            now = self._users == 0
            if now:
                self._handle = ctypes.c_void_p()
        if now:
            lib.petrel_client_destroy(handle)
        else:
            lib.petrel_client_close(handle, 1001, b"client destroyed")

    def __enter__(self) -> "ClientConnection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    def __del__(self) -> None:
        try:
            if getattr(_in_callback, "active", False):
                # Collected inside a library callback (on_state): destroying there would wait for
                # that very callback. A thread of its own does it.
                threading.Thread(target=self.destroy, daemon=True).start()
                return
            self.destroy()
        except Exception:
            pass


class _ClientConfig:
    """A petrel_client_config from the keyword options, and the strings it points to (kept
    alive as long as this object)."""

    def __init__(self, url: str, *, compression: bool = True, max_message_size: int = 16 * 1024 * 1024,
                 subprotocols: Optional[Iterable[str]] = None, origin: Optional[str] = None,
                 open_timeout: float = 10.0, tls_ca_file: Optional[str] = None, tls_server_name: Optional[str] = None,
                 tls_cert_file: Optional[str] = None, tls_key_file: Optional[str] = None,
                 tls_insecure_skip_verify: bool = False, proxy: Optional[str] = None,
                 proxy_from_environment: bool = False, additional_headers: Optional[Headers] = None,
                 max_backpressure: int = 1024 * 1024, ping_interval: Optional[float] = None, ping_timeout: float = 10.0,
                 reconnect: Union[None, bool, Reconnect] = None) -> None:
        if not isinstance(url, str):
            raise TypeError("url must be a str")
        if not isinstance(max_message_size, int) or max_message_size <= 0:
            raise ValueError("max_message_size must be a positive int")
        if not 0 < open_timeout <= 3600:
            raise ValueError("open_timeout must be a number of seconds in (0, 3600]")
        self.url = url.encode()
        cfg = self.config = _lib.ClientConfig()
        lib.petrel_client_config_init(ctypes.byref(cfg))
        cfg.compression = 1 if compression else 0
        cfg.max_message_size = max_message_size
        cfg.connect_timeout_ms = cfg.handshake_timeout_ms = int(open_timeout * 1000)
        keep = [",".join(subprotocols).encode() if subprotocols else None, origin.encode() if origin else None]
        cfg.subprotocols, cfg.origin = keep[0], keep[1]
        keep += [str(v).encode() if v else None for v in (tls_ca_file, tls_server_name, tls_cert_file, tls_key_file)]
        cfg.tls_ca_file, cfg.tls_server_name, cfg.tls_cert_file, cfg.tls_key_file = keep[2:6]
        cfg.tls_insecure_skip_verify = 1 if tls_insecure_skip_verify else 0
        keep.append(proxy.encode() if proxy else None)
        cfg.proxy = keep[6]
        cfg.proxy_from_environment = 1 if proxy_from_environment else 0
        if not isinstance(max_backpressure, int) or max_backpressure <= 0:
            raise ValueError("max_backpressure must be a positive int")
        cfg.max_backpressure = max_backpressure
        keep.append(_header_lines(additional_headers) if additional_headers else None)
        cfg.headers = keep[7]
        self._keep = keep
        if ping_interval is not None:
            if not 0 < ping_interval <= 3600 or not 0 < ping_timeout <= 3600:
                raise ValueError("ping_interval and ping_timeout are seconds in (0, 3600]")
            cfg.ping_interval_ms = max(1, int(ping_interval * 1000))
            cfg.pong_timeout_ms = max(1, int(ping_timeout * 1000))
        policy = Reconnect() if reconnect is True else (reconnect or None)
        if policy is not None:
            if not isinstance(policy, Reconnect):
                raise TypeError("reconnect is True, False, None or a petrel.Reconnect")
            if not 0.001 <= policy.initial_delay <= policy.max_delay <= 3600 or not 0 <= policy.jitter <= 1 or policy.max_attempts < 0:
                raise ValueError("Reconnect: 0.001 <= initial_delay <= max_delay <= 3600 s, jitter in [0, 1], max_attempts >= 0")
            cfg.reconnect = 1
            cfg.reconnect_initial_delay_ms = int(policy.initial_delay * 1000)
            cfg.reconnect_max_delay_ms = int(policy.max_delay * 1000)
            cfg.reconnect_jitter_percent = int(round(policy.jitter * 100))
            cfg.reconnect_max_attempts = policy.max_attempts
            cfg.queue_while_reconnecting = 1 if policy.queue_sends else 0

    def connect(self, callbacks: Optional[object] = None) -> ctypes.c_void_p:
        """petrel_client_connect (blocking); raises with the library's reason on failure."""
        handle = ctypes.c_void_p()
        rc = lib.petrel_client_connect(self.url, ctypes.byref(self.config),
                                       ctypes.byref(callbacks) if callbacks is not None else None,  # type: ignore[arg-type]
                                       ctypes.byref(handle))
        if rc < 0:
            error = error_for(rc)
            # Refused with an HTTP status: read now, on the thread that connected (the library
            # keeps it per thread), before anything else connects from it.
            refusal = _last_refusal() if isinstance(error, InvalidHandshake) else None
            if refusal is not None:
                error = InvalidStatus(rc, refusal[0], refusal[1])
            detail = lib.petrel_last_error().decode("utf-8", "replace")
            if detail:
                error.args = (f"{error.args[0]}: {detail}",)
            raise error
        return handle


def _state_callbacks(on_state: StateCallback) -> "_lib.ClientCallbacks":
    """Callbacks with on_state only: messages still come through recv()."""
    callbacks = _lib.ClientCallbacks()
    lib.petrel_client_callbacks_init(ctypes.byref(callbacks))

    def state(_ud, _client, value, attempt, delay_ms, reason, length):  # type: ignore[no-untyped-def]
        _in_callback.active = True
        try:
            on_state(STATES.get(value, str(value)), attempt, delay_ms / 1000,
                     ctypes.string_at(reason, length).decode("utf-8", "replace") if length else "")
        except Exception:
            log.exception("petrel: exception in on_state")
        finally:
            _in_callback.active = False
    callbacks.on_state = _lib.ClientOnState(state)
    return callbacks


def connect(url: str, *, compression: bool = True, max_message_size: int = 16 * 1024 * 1024,
            subprotocols: Optional[Iterable[str]] = None, origin: Optional[str] = None,
            open_timeout: float = 10.0, tls_ca_file: Optional[str] = None, tls_server_name: Optional[str] = None,
            tls_cert_file: Optional[str] = None, tls_key_file: Optional[str] = None,
            tls_insecure_skip_verify: bool = False, proxy: Optional[str] = None,
            proxy_from_environment: bool = False, additional_headers: Optional[Headers] = None,
            max_backpressure: int = 1024 * 1024, ping_interval: Optional[float] = None, ping_timeout: float = 10.0,
            reconnect: Union[None, bool, Reconnect] = None, on_state: Optional[StateCallback] = None) -> ClientConnection:
    """Connects to a ws:// or wss:// URL and completes the handshake (blocking).

    Options: compression (True), max_message_size (16 MiB), subprotocols, origin, open_timeout
    (10 s), and for wss:// tls_ca_file (default: the system store), tls_server_name (default:
    the URL's host), tls_cert_file and tls_key_file (a client certificate),
    tls_insecure_skip_verify (turns every check off: tests only); proxy (http://, https:// or
    socks5:// URL with optional user:pass@), or proxy_from_environment (wss_proxy, ws_proxy,
    HTTPS_PROXY, HTTP_PROXY and NO_PROXY); additional_headers (a mapping or (name, value)
    pairs: Authorization, Cookie...; the handshake's own headers are refused); max_backpressure
    (1 MiB: over it, send raises Backpressure); ping_interval (None: no pings; seconds of
    silence before a ping) and ping_timeout (10 s: no pong by then fails the connection, 1011).

    reconnect (True, or a Reconnect policy): after a loss the client connects again by itself
    and resumes after `last_event_id`; recv() and iteration go on across connections and end
    only when the client ends. on_state(state, attempt, delay, reason) reports each change
    ("connecting", "open", "reconnecting", "closed") on a library thread. The first connect is
    not retried: its failure raises here.

    A server that answers the handshake with another status than 101 raises InvalidStatus, with
    its `status_code` and `body`."""
    callbacks = _state_callbacks(on_state) if on_state is not None else None
    handle = _ClientConfig(
        url, compression=compression, max_message_size=max_message_size, subprotocols=subprotocols, origin=origin,
        open_timeout=open_timeout, tls_ca_file=tls_ca_file, tls_server_name=tls_server_name, tls_cert_file=tls_cert_file,
        tls_key_file=tls_key_file, tls_insecure_skip_verify=tls_insecure_skip_verify, proxy=proxy,
        proxy_from_environment=proxy_from_environment, additional_headers=additional_headers,
        max_backpressure=max_backpressure, ping_interval=ping_interval, ping_timeout=ping_timeout,
        reconnect=reconnect).connect(callbacks)
    return ClientConnection(handle, callbacks)
