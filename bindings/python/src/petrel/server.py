"""A Petrel server with Python callbacks.

on_open, on_message, on_close and on_drain run on one dispatcher thread of the server's own
("petrel-dispatch"), in order for each connection: the loop threads queue those events
(`queue_events` in petrel.h) and the dispatcher takes them in batches, one C call per batch
rather than one callback per message, and the loop threads never wait for the GIL. on_http and
on_upgrade must answer at once, so they run on the loop threads. An exception in a callback is
logged (logger "petrel") and never reaches the library. Payloads are copied before the callback
sees them.
"""
from __future__ import annotations

import ctypes
import logging
import os
import struct
import threading
import time
from typing import Any, Callable, Dict, Iterable, Iterator, List, NamedTuple, Optional, Tuple, Union, overload

from . import _lib
from . import _status as S
from ._lib import lib
from .exceptions import InvalidState, check

log = logging.getLogger("petrel")
Data = Union[str, bytes, bytearray, memoryview]
_POLICIES = {"close": 0, "drop_oldest": 1, "drop_newest": 2, "coalesce": 3}


_RECORD = struct.Struct("<QIHBB")  # petrel_event_record: conn, len, code, type, kind
_loop_thread = threading.local()  # .active: a handler is running on one of Petrel's loop threads


def _payload(data: Data) -> tuple[int, bytes]:
    if isinstance(data, str):
        return _lib.TEXT, data.encode("utf-8")
    if isinstance(data, bytes):
        return _lib.BINARY, data
    if isinstance(data, (bytearray, memoryview)):
        return _lib.BINARY, bytes(data)
    raise TypeError(f"a message is str or bytes, not {type(data).__name__}")


def _ping_payload(data: Data) -> bytes:
    """A ping's payload: str as UTF-8, bytes-like as is (the library checks the 125 bytes)."""
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"a ping's payload is str or bytes, not {type(data).__name__}")


def _event_batches(handle: ctypes.c_void_p) -> Iterator[Tuple[memoryview, int]]:
    """The dispatcher's batches of queued events (petrel_server_next_events): the buffer and
    how many bytes of it are records, until the server has stopped. The view is valid until
    the next batch is asked for."""
    cap = 1 << 20
    buf = ctypes.create_string_buffer(cap)
    view = memoryview(buf)
    n = ctypes.c_size_t()
    while True:
        rc = lib.petrel_server_next_events(handle, 200, buf, cap, ctypes.byref(n))
        if rc == 0:
            yield view, n.value
        elif rc == S.E_TIMEOUT:
            continue
        elif rc == S.E_STOPPED:  # everything has been handed out
            return
        elif rc == S.E_BUFFER_TOO_SMALL:  # a message bigger than the buffer
            cap = max(cap * 2, n.value)
            buf = ctypes.create_string_buffer(cap)
            view = memoryview(buf)
        else:
            log.error("petrel: petrel_server_next_events returned %d; retrying", rc)
            time.sleep(0.1)


class Connection:
    """One client of a server, named by an id that is never reused. Safe from any thread."""

    def __init__(self, server: "Server", conn_id: int) -> None:
        self.server = server
        self.id = conn_id
        self._cid = ctypes.c_uint64(conn_id)
        self._target: Optional[str] = None  # "/path?query", from the open event
        self._subprotocol: Optional[str] = None
        self._subprotocol_read = False

    def send(self, data: Data) -> None:
        """Queues a message: str as text, bytes as binary. Raises Backpressure or ConnectionClosed."""
        if type(data) is str:
            kind, raw = _lib.TEXT, data.encode("utf-8")
        elif type(data) is bytes:
            kind, raw = _lib.BINARY, data
        else:
            kind, raw = _payload(data)
        n = len(raw)
        if n < 0x7FFFFFFF:
            rc = _lib.send_unchecked(self.server._handle, self._cid, kind, raw, n)
        else:
            rc = lib.petrel_conn_send(self.server._handle, self.id, kind, raw, n)
        if rc:
            check(rc)

    def close(self, code: int = 1000, reason: str = "") -> None:
        check(lib.petrel_conn_close(self.server._handle, self.id, code, reason.encode()))

    def subscribe(self, topic: str) -> None:
        check(lib.petrel_conn_subscribe(self.server._handle, self.id, topic.encode()))

    def unsubscribe(self, topic: str) -> None:
        check(lib.petrel_conn_unsubscribe(self.server._handle, self.id, topic.encode()))

    def pause_reading(self) -> None:
        """Stops reading from this client until resume_reading() (TCP then slows it down):
        flow control for a consumer that has fallen behind. Messages already read still arrive;
        closing ends the pause; while paused the client's pings go unanswered."""
        check(lib.petrel_conn_pause_reading(self.server._handle, self.id, 1))

    def resume_reading(self) -> None:
        check(lib.petrel_conn_pause_reading(self.server._handle, self.id, 0))

    @property
    def user_data(self) -> object:
        """What the on_upgrade handler attached with Accept(user_data=...), or None."""
        return self.server._user_data.get(self.id)

    @property
    def buffered_amount(self) -> int:
        n = ctypes.c_uint64()
        check(lib.petrel_conn_buffered_amount(self.server._handle, self.id, ctypes.byref(n)))
        return n.value

    def ping(self, data: Data = b"") -> None:
        """Sends a ping with up to 125 bytes of payload (str as UTF-8). Its pong sets
        round_trip_time, like those of ping_interval's pings. Raises InvalidArgument (a
        ValueError) over 125 bytes or on an event stream, which has no pings."""
        raw = _ping_payload(data)
        check(lib.petrel_conn_ping(self.server._handle, self.id, raw, len(raw)))

    @property
    def round_trip_time(self) -> Optional[float]:
        """Seconds between the server's last ping to this client (ping(), or ping_interval's)
        and its pong, to the millisecond; None until a pong has come."""
        ms = ctypes.c_uint32()
        rc = lib.petrel_conn_rtt(self.server._handle, self.id, ctypes.byref(ms))
        if rc == S.E_AGAIN:
            return None
        check(rc)
        return ms.value / 1000

    @property
    def subprotocol(self) -> Optional[str]:
        """The subprotocol the handshake chose (Sec-WebSocket-Protocol), or None (none, or an
        event stream)."""
        if not self._subprotocol_read:  # fixed by the handshake: kept once read
            self._subprotocol = self._text(lib.petrel_conn_subprotocol)
            self._subprotocol_read = True
        return self._subprotocol

    def _text(self, getter: Callable[..., int], *args: bytes) -> Optional[str]:
        size = ctypes.c_size_t()
        buf = ctypes.create_string_buffer(256)
        rc = getter(self.server._handle, self.id, *args, buf, len(buf), ctypes.byref(size))
        if rc == S.E_BUFFER_TOO_SMALL:  # too small: retry with the size needed
            buf = ctypes.create_string_buffer(size.value + 1)
            rc = getter(self.server._handle, self.id, *args, buf, len(buf), ctypes.byref(size))
        if rc == S.E_AGAIN:
            return None
        check(rc)
        return buf.raw[: size.value].decode("utf-8", "replace")

    @property
    def path(self) -> Optional[str]:
        if self._target is not None:  # known even if the connection has closed since
            return self._target.split("?", 1)[0]
        return self._text(lib.petrel_conn_path)

    @property
    def query(self) -> Optional[str]:
        if self._target is not None:
            return self._target.split("?", 1)[1] if "?" in self._target else None
        return self._text(lib.petrel_conn_query)

    def header(self, name: str) -> Optional[str]:
        """The first request header `name` (case-insensitive), or None."""
        return self._text(lib.petrel_conn_header, name.encode())

    @property
    def peer_address(self) -> Optional[str]:
        return self._text(lib.petrel_conn_peer_address)

    @property
    def client_address(self) -> Optional[str]:
        """The client's address: the peer's, or what a PROXY protocol header or a trusted proxy's
        Forwarded / X-Forwarded-For header gave (Server(proxy_protocol=..., trusted_proxies=...))."""
        return self._text(lib.petrel_conn_client_address)

    def query_param(self, name: str) -> Optional[str]:
        """A query parameter of the request, decoded (%XX and '+'), or None."""
        return self._text(lib.petrel_conn_query_param, name.encode())

    @property
    def last_event_id(self) -> Optional[int]:
        """The event id a reconnecting client saw last (Last-Event-ID, or ?last_event_id=), or None."""
        n = ctypes.c_uint64()
        rc = lib.petrel_conn_last_event_id(self.server._handle, self.id, ctypes.byref(n))
        if rc == S.E_AGAIN:
            return None
        check(rc)
        return n.value

    def send_event(self, text: str, event_id: int = 0) -> None:
        """Sends text; on an event stream (SSE) it carries `id: event_id`, which the browser sends
        back as Last-Event-ID when it reconnects."""
        raw = text.encode("utf-8")
        check(lib.petrel_conn_send_event(self.server._handle, self.id, event_id, raw, len(raw)))

    def subscribe_after(self, topic: str, event_id: int) -> bool:
        """Subscribes so that every message after `event_id` arrives once, in order: replayed from
        the topic's ring, then live. False (nothing subscribed) when the ring no longer has them:
        send a snapshot, then subscribe after the snapshot's id."""
        rc = lib.petrel_conn_subscribe_after(self.server._handle, self.id, topic.encode(), event_id)
        if rc == S.E_REPLAY_GONE:
            return False
        check(rc)
        return True

    @property
    def is_stomp(self) -> bool:
        """True for a connection that speaks STOMP (stomp_paths, or a STOMP subprotocol): its frames
        go to the on_stomp_* hooks, and topics reach it as MESSAGE frames of its subscriptions."""
        n = ctypes.c_int32()
        check(lib.petrel_conn_is_stomp(self.server._handle, self.id, ctypes.byref(n)))
        return n.value == 1

    def __repr__(self) -> str:
        return f"<petrel.Connection {self.id}>"


class HTTPRequest:
    """A plain HTTP request (not a WebSocket upgrade), as an on_http handler sees it. Valid only
    during the handler."""

    def __init__(self, raw: "ctypes._Pointer[_lib.HTTPRequest]") -> None:
        r = raw.contents
        self._raw = raw
        self.method: str = r.method.decode()
        self.path: str = r.path.decode("utf-8", "replace")
        self.query: str = r.query.decode("utf-8", "replace")
        self.body: bytes = ctypes.string_at(r.body, r.body_len) if r.body_len else b""
        self.peer: str = r.peer.decode()
        # The client's address: the peer, or what a PROXY header or a trusted proxy said.
        self.client: str = r.client.decode() if r.client else self.peer
        self.conn: int = r.conn  # the connection's id (for an upgrade: the id it will have)

    def _text(self, getter: Callable[..., int], name: str) -> Optional[str]:
        size = ctypes.c_size_t()
        buf = ctypes.create_string_buffer(256)
        rc = getter(self._raw, name.encode(), buf, len(buf), ctypes.byref(size))
        if rc == S.E_BUFFER_TOO_SMALL:
            buf = ctypes.create_string_buffer(size.value + 1)
            rc = getter(self._raw, name.encode(), buf, len(buf), ctypes.byref(size))
        if rc == S.E_AGAIN:
            return None
        check(rc)
        return buf.raw[: size.value].decode("utf-8", "replace")

    def header(self, name: str) -> Optional[str]:
        return self._text(lib.petrel_http_header, name)

    def query_param(self, name: str) -> Optional[str]:
        return self._text(lib.petrel_http_query_param, name)

    def __repr__(self) -> str:
        return f"<petrel.HTTPRequest {self.method} {self.path}>"


class StompFrame:
    """A STOMP CONNECT, SUBSCRIBE or SEND, as an on_stomp_* hook sees it (valid only during the
    hook). `command` is "CONNECT" (also for STOMP), "SUBSCRIBE" or "SEND"; absent fields are ""."""

    def __init__(self, conn: Connection, raw: "ctypes._Pointer[_lib.StompFrame]") -> None:
        f = raw.contents
        self._raw: "Optional[ctypes._Pointer[_lib.StompFrame]]" = raw
        self.conn = conn
        self.command: str = f.command.decode()
        self.destination: str = f.destination.decode("utf-8", "replace")
        self.subscription: str = f.subscription.decode("utf-8", "replace")
        self.ack: str = f.ack.decode()
        self.login: str = f.login.decode("utf-8", "replace")
        self.passcode: str = f.passcode.decode("utf-8", "replace")
        self.host: str = f.host.decode("utf-8", "replace")
        self.body: bytes = ctypes.string_at(f.body, f.body_len) if f.body_len else b""

    def header(self, name: str) -> Optional[str]:
        """The first header `name` (case-sensitive, unescaped), or None. Only during the hook."""
        if self._raw is None:
            raise InvalidState(S.E_STATE, "a StompFrame's headers can be read only during its hook")
        size = ctypes.c_size_t()
        buf = ctypes.create_string_buffer(256)
        rc = lib.petrel_stomp_header(self._raw, name.encode(), buf, len(buf), ctypes.byref(size))
        if rc == S.E_BUFFER_TOO_SMALL:
            buf = ctypes.create_string_buffer(size.value + 1)
            rc = lib.petrel_stomp_header(self._raw, name.encode(), buf, len(buf), ctypes.byref(size))
        if rc == S.E_AGAIN:
            return None
        check(rc)
        return buf.raw[: size.value].decode("utf-8", "replace")

    def __repr__(self) -> str:
        return f"<petrel.StompFrame {self.command} {self.destination}>"


class StompRefuse:
    """What an on_stomp_* hook returns to refuse: an ERROR frame with `message`, then a close."""

    def __init__(self, message: str) -> None:
        self.message = message


# An observer of a topic (Server.observe): (event id, message: str for text, bytes for binary, key).
Observer = Callable[[int, Union[str, bytes], Optional[str]], None]

# What an on_http handler returns: None (not handled), or (status, content_type, body).
HTTPResponse = Optional[Tuple[Any, ...]]


def _respond(raw: Any, answer: Tuple[Any, ...]) -> None:
    """Answers the request behind `raw` with (status, content_type, body: str or bytes)."""
    status, content_type, body = answer
    if isinstance(body, str):
        body = body.encode("utf-8")
    check(lib.petrel_http_respond(raw, int(status), content_type.encode(), bytes(body), len(body)))


class AccessLogEntry(NamedTuple):
    """One line of the access log (Server(access_log=callable)): a plain request answered
    ("request"), an upgrade ("upgrade": a WebSocket's 101 or an event stream opening) or the end
    of an upgraded connection ("close", status: the WebSocket close code, 0 for an event stream)."""
    event: str
    time: float  # seconds since 1970 (UTC)
    peer: str
    conn: int
    method: str
    path: str
    status: int
    transport: str  # "http", "websocket", "stomp" or "sse"
    bytes_in: int
    bytes_out: int
    duration: float  # seconds
    line: str  # as the file form writes it, without the newline


class Accept:
    """What an on_upgrade handler returns to accept with a chosen subprotocol (one the client
    offered) and data for the connection (`Connection.user_data`)."""

    def __init__(self, subprotocol: Optional[str] = None, user_data: object = None) -> None:
        self.subprotocol = subprotocol
        self.user_data = user_data


class Server:
    """A WebSocket server.

    >>> server = Server("127.0.0.1", 8080)
    >>> @server.on_message
    ... def echo(conn, message):
    ...     conn.send(message)
    >>> server.serve_forever()
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int = 8080, *, threads: int = 0, compression: Union[bool, str] = True,
        max_message_size: int = 16 * 1024 * 1024, max_backpressure: int = 1024 * 1024,
        origins: Optional[Iterable[str]] = None, subprotocols: Optional[Iterable[str]] = None,
        slow_consumer: str = "close", max_queued: int = 1024, replay: int = 0,
        engine: Optional[str] = None, stream_capacity: int = 10_000, engine_timeout: float = 2.0,
        ping_interval: float = 0.0, ping_timeout: float = 10.0, idle_timeout: float = 0.0, heartbeat_messages: bool = False,
        on_open: Optional[Callable[[Connection], None]] = None,
        on_message: Optional[Callable[[Connection, Union[str, bytes]], None]] = None,
        on_close: Optional[Callable[[Connection, int, str], None]] = None,
        on_drain: Optional[Callable[[Connection], None]] = None,
        static_root: Optional[str] = None, event_stream_paths: Optional[Iterable[str]] = None,
        max_request_body: int = 65536, event_queue_bytes: int = 16 * 1024 * 1024,
        tls_cert: Optional[str] = None, tls_key: Optional[str] = None, tls_client_ca: Optional[str] = None,
        tls_sni: Optional[Dict[str, Tuple[str, str]]] = None,
        on_http: Optional[Callable[[HTTPRequest], HTTPResponse]] = None,
        on_upgrade: Optional[Callable[[HTTPRequest], object]] = None,
        stomp_paths: Optional[Iterable[str]] = None, stomp_heart_beat: float = 10.0, stomp_max_unacked: int = 0,
        stomp_max_body: int = 1 << 20,
        access_log: Union[str, "os.PathLike[str]", Callable[[AccessLogEntry], None], None] = None,
        proxy_protocol: bool = False, trusted_proxies: Optional[Iterable[str]] = None,
        forwarded_header: str = "x-forwarded-for",
        keep_alive_timeout: float = 5.0, cors_origins: Optional[Iterable[str]] = None,
        cors_credentials: bool = False, sse_retry: float = 1.0, sse_padding: int = 0,
        on_stomp_connect: Optional[Callable[[StompFrame], object]] = None,
        on_stomp_subscribe: Optional[Callable[[StompFrame], object]] = None,
        on_stomp_send: Optional[Callable[[StompFrame], object]] = None,
        on_stomp_ack: Optional[Callable[[Connection, str, List[int], bool, int], None]] = None,
    ) -> None:
        if not isinstance(host, str):
            raise TypeError("host must be a str")
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an int in 0..65535, not {port!r}")
        if not isinstance(threads, int) or not 0 <= threads <= 255:
            raise ValueError("threads must be an int in 0..255 (0: one per core)")
        if not isinstance(max_message_size, int) or max_message_size <= 0:
            raise ValueError("max_message_size must be a positive int")
        if engine is not None and not isinstance(engine, str):
            raise TypeError('engine must be a str: "redis://host:port" or a Unix socket path')
        if not isinstance(stream_capacity, int) or not 1 <= stream_capacity <= 1 << 40:
            raise ValueError("stream_capacity must be an int in 1..2**40")
        if not 0 < engine_timeout <= 3600:
            raise ValueError("engine_timeout must be a number of seconds in (0, 3600]")
        if slow_consumer not in _POLICIES:
            raise ValueError(f"slow_consumer must be one of {sorted(_POLICIES)}")
        self._on_open, self._on_message, self._on_close, self._on_drain = on_open, on_message, on_close, on_drain
        self._on_http = on_http
        self._on_upgrade = on_upgrade
        self._on_stomp_connect, self._on_stomp_subscribe = on_stomp_connect, on_stomp_subscribe
        self._on_stomp_send, self._on_stomp_ack = on_stomp_send, on_stomp_ack
        if not 0 <= stomp_heart_beat <= 3600:
            raise ValueError("stomp_heart_beat must be a number of seconds in [0, 3600]")
        self._has_engine = engine is not None  # publish and subscribe_after then wait for Redis
        self._user_data: Dict[int, object] = {}
        self._connections: Dict[int, Connection] = {}
        self._lock = threading.Lock()
        # Strings handed to C must outlive the create call.
        self._keep: List[Any] = [host.encode(), ",".join(subprotocols).encode() if subprotocols else None,
                      ",".join(origins).encode() if origins is not None else None,
                      str(static_root).encode() if static_root is not None else None,
                      ",".join(event_stream_paths).encode() if event_stream_paths else None,
                      str(tls_cert).encode() if tls_cert else None, str(tls_key).encode() if tls_key else None,
                      str(tls_client_ca).encode() if tls_client_ca else None,
                      ";".join(f"{name},{chain},{key}" for name, (chain, key) in tls_sni.items()).encode()
                      if tls_sni else None, engine.encode() if engine else None,
                      ",".join(stomp_paths).encode() if stomp_paths is not None else None,
                      ",".join(cors_origins).encode() if cors_origins is not None else None,
                      os.fsencode(access_log) if isinstance(access_log, (str, os.PathLike)) else None,
                      ",".join(trusted_proxies).encode() if trusted_proxies is not None else None]
        if access_log is not None and not callable(access_log) and self._keep[12] is None:
            raise TypeError("access_log must be a file path or a callable taking an AccessLogEntry")
        self._on_access_log = access_log if callable(access_log) else None
        cfg = _lib.ServerConfig()
        lib.petrel_server_config_init(ctypes.byref(cfg))
        cfg.host, cfg.port, cfg.threads = self._keep[0], port, threads
        cfg.max_message_size = cfg.max_frame_size = max_message_size
        cfg.max_backpressure = max_backpressure
        # True: permessage-deflate without keeping the context between messages; "takeover": keep it.
        if compression not in (True, False, "takeover"):
            raise ValueError('compression must be True, False or "takeover"')
        cfg.compression = 2 if compression == "takeover" else 1 if compression else 0
        cfg.subprotocols, cfg.allowed_origins = self._keep[1], self._keep[2]
        cfg.topic_slow_consumer = _POLICIES[slow_consumer]
        cfg.topic_max_queued, cfg.topic_replay = max_queued, replay
        cfg.ping_interval_ms, cfg.idle_timeout_ms = int(ping_interval * 1000), int(idle_timeout * 1000)
        if not 0 < ping_timeout <= 3600:
            raise ValueError("ping_timeout must be a number of seconds in (0, 3600]")
        cfg.pong_timeout_ms = max(1, int(ping_timeout * 1000))
        cfg.static_root, cfg.event_stream_paths = self._keep[3], self._keep[4]
        cfg.max_request_body = max_request_body
        cfg.tls_cert_file, cfg.tls_key_file, cfg.tls_client_ca_file = self._keep[5], self._keep[6], self._keep[7]
        cfg.tls_sni_certificates = self._keep[8]
        # Event ids and history: in this process (None), or Redis Streams shared by every server
        # on that Redis (docs/cluster.md).
        cfg.engine_url = self._keep[9]
        cfg.engine_timeout_ms = max(1, int(engine_timeout * 1000))
        cfg.topic_stream_capacity = stream_capacity
        # STOMP (docs/stomp.md): on these upgrade paths, and for clients that offer a STOMP subprotocol.
        cfg.stomp_paths = self._keep[10]
        cfg.stomp_heart_beat_ms = int(stomp_heart_beat * 1000)
        cfg.stomp_max_unacked, cfg.stomp_max_body = stomp_max_unacked, stomp_max_body
        # Plain HTTP: keep-alive, CORS for pages of other origins, and how event streams open.
        if not 0 <= keep_alive_timeout <= 3600:
            raise ValueError("keep_alive_timeout must be a number of seconds in [0, 3600] (0: close after each response)")
        if cors_origins is not None and not self._keep[11]:
            raise ValueError('cors_origins must name at least one origin (or "*")')
        if cors_credentials and cors_origins is None:
            raise ValueError("cors_credentials needs cors_origins")
        if not 0 <= sse_retry <= 3600:
            raise ValueError("sse_retry must be a number of seconds in [0, 3600]")
        if not isinstance(sse_padding, int) or not 0 <= sse_padding <= 65536:
            raise ValueError("sse_padding must be an int in 0..65536")
        cfg.keep_alive_timeout_ms = int(keep_alive_timeout * 1000)
        cfg.cors_origins, cfg.cors_credentials = self._keep[11], 1 if cors_credentials else 0
        cfg.sse_retry_ms, cfg.sse_padding = int(sse_retry * 1000), sse_padding
        cfg.access_log_file = self._keep[12]
        # The real client behind load balancers (PROXY protocol) and proxies (Forwarded headers).
        cfg.proxy_protocol = 1 if proxy_protocol else 0
        # With ping_interval: an empty message (an empty SSE event) with each ping, for scripts.
        cfg.heartbeat_messages = 1 if heartbeat_messages else 0
        cfg.trusted_proxies = self._keep[13]
        # The one header the trusted proxies write (the other is the client's to forge).
        headers = {"x-forwarded-for": 0, "forwarded": 1}
        if forwarded_header not in headers:
            raise ValueError('forwarded_header must be "x-forwarded-for" or "forwarded"')
        cfg.trusted_proxy_header = headers[forwarded_header]
        cfg.queue_events = 1
        # Events read but not yet taken by the dispatcher: when full, the loop threads wait (and
        # TCP pushes back). Also what a connection may have read past a pause_reading().
        if not isinstance(event_queue_bytes, int) or event_queue_bytes < 64 * 1024:
            raise ValueError("event_queue_bytes must be an int of at least 65536")
        cfg.event_queue_bytes = event_queue_bytes
        # The CFUNCTYPE objects are kept on the server for its whole life: ctypes does not.
        self._callbacks = _lib.ServerCallbacks()
        lib.petrel_server_callbacks_init(ctypes.byref(self._callbacks))
        # on_open, on_message, on_close and on_drain arrive through the event queue (_dispatch).
        self._callbacks.on_http = _lib.OnHTTP(self._c_http)
        self._callbacks.on_upgrade = _lib.OnHTTP(self._c_upgrade)
        self._callbacks.on_stomp = _lib.OnStomp(self._c_stomp)
        self._callbacks.on_stomp_ack = _lib.OnStompAck(self._c_stomp_ack)
        if self._on_access_log is not None:
            self._callbacks.on_access_log = _lib.OnAccessLog(self._c_access_log)
        handle = ctypes.c_void_p()
        check(lib.petrel_server_create(ctypes.byref(cfg), ctypes.byref(self._callbacks), ctypes.byref(handle)))
        self._handle = handle
        self._started = False
        self._dispatcher: Optional[threading.Thread] = None

    # -- decorators --
    def on_open(self, f: Callable[[Connection], None]) -> Callable[[Connection], None]:
        self._on_open = f
        return f

    def on_message(self, f: Callable[[Connection, Union[str, bytes]], None]) -> Callable[[Connection, Union[str, bytes]], None]:
        self._on_message = f
        return f

    def on_close(self, f: Callable[[Connection, int, str], None]) -> Callable[[Connection, int, str], None]:
        self._on_close = f
        return f

    def on_drain(self, f: Callable[[Connection], None]) -> Callable[[Connection], None]:
        self._on_drain = f
        return f

    def on_http(self, f: Callable[[HTTPRequest], HTTPResponse]) -> Callable[[HTTPRequest], HTTPResponse]:
        """Handles plain HTTP requests: return (status, content_type, body) to answer, or None to
        let the server go on (event-stream paths, static files, then 404/426)."""
        self._on_http = f
        return f

    # -- C callbacks (loop threads; ctypes takes the GIL) --
    def _conn(self, conn_id: int) -> Connection:
        c = self._connections.get(conn_id)
        if c is None:
            with self._lock:
                c = self._connections.get(conn_id)
                if c is None:
                    c = self._connections[conn_id] = Connection(self, conn_id)
        return c

    def _invoke(self, handler: Callable[..., object], *args: object) -> None:
        """Runs a handler on the dispatcher thread (petrel.asyncio hands coroutines to its loop)."""
        handler(*args)

    def _pump_events(self) -> None:
        """The dispatcher thread: takes batches of queued events until the server has stopped."""
        unpack = _RECORD.unpack_from
        conn_of = self._conn
        # Handlers are called directly unless a subclass (petrel.asyncio) wraps them.
        invoke = None if type(self)._invoke is Server._invoke else self._invoke
        for view, end in _event_batches(self._handle):
            off = 0
            on_message = self._on_message
            while off < end:
                conn_id, length, code, kind_type, kind = unpack(view, off)
                off += 16
                payload = view[off:off + length]
                off += (length + 7) & ~7
                try:
                    if kind_type == _lib.QUEUED_MESSAGE:
                        if on_message:
                            message = str(payload, "utf-8") if kind == 1 else payload.tobytes()
                            if invoke is None:
                                on_message(conn_of(conn_id), message)
                            else:
                                invoke(on_message, conn_of(conn_id), message)
                    elif kind_type == _lib.QUEUED_OPEN:
                        conn = conn_of(conn_id)
                        conn._target = str(payload, "utf-8", "replace")
                        if self._on_open:
                            self._invoke(self._on_open, conn)
                    elif kind_type == _lib.QUEUED_CLOSE:
                        conn = conn_of(conn_id)
                        with self._lock:
                            self._connections.pop(conn_id, None)
                            self._user_data.pop(conn_id, None)
                        if self._on_close:
                            self._invoke(self._on_close, conn, code, str(payload, "utf-8", "replace"))
                    elif kind_type == _lib.QUEUED_DRAIN:
                        if self._on_drain:
                            self._invoke(self._on_drain, conn_of(conn_id))
                except Exception:
                    name = {1: "on_open", 2: "on_message", 3: "on_close", 4: "on_drain"}.get(kind_type, "a handler")
                    log.exception("petrel: exception in %s", name)

    def _c_http(self, _ud, _srv, raw):  # type: ignore[no-untyped-def]
        _loop_thread.active = True
        try:
            if not self._on_http:
                return
            answer = self._on_http(HTTPRequest(raw))
            if answer is not None:
                _respond(raw, answer)
        except Exception:
            log.exception("petrel: exception in on_http")
            lib.petrel_http_respond(raw, 500, b"text/plain", b"internal error\n", 15)
        finally:
            _loop_thread.active = False

    def on_stomp_connect(self, f: Callable[[StompFrame], object]) -> Callable[[StompFrame], object]:
        """STOMP CONNECT (a loop thread): return None or True to accept, a str or StompRefuse to
        refuse (an ERROR frame with that message, then a close)."""
        self._on_stomp_connect = f
        return f

    def on_stomp_subscribe(self, f: Callable[[StompFrame], object]) -> Callable[[StompFrame], object]:
        """STOMP SUBSCRIBE (a loop thread): return the topic it reads, None for the default
        (/topic/NAME is topic NAME, other destinations are refused), or StompRefuse."""
        self._on_stomp_subscribe = f
        return f

    def on_stomp_send(self, f: Callable[[StompFrame], object]) -> Callable[[StompFrame], object]:
        """STOMP SEND (a loop thread): return a topic to publish the body to, True when you took
        it, None or StompRefuse to refuse (the default without a hook)."""
        self._on_stomp_send = f
        return f

    def on_stomp_ack(self, f: Callable[[Connection, str, List[int], bool, int], None]) -> Callable[[Connection, str, List[int], bool, int], None]:
        """STOMP ACK or NACK (a loop thread): f(conn, subscription id, event ids settled, negative,
        position: every message up to this id is acknowledged)."""
        self._on_stomp_ack = f
        return f

    def _c_stomp(self, _ud, _srv, conn_id, _conn_data, raw):  # type: ignore[no-untyped-def]
        """on_stomp (a loop thread): CONNECT -> on_stomp_connect (None/True accept, a str or
        StompRefuse refuses); SUBSCRIBE -> on_stomp_subscribe (a topic name allows, None takes
        /topic/NAME, StompRefuse refuses); SEND -> on_stomp_send (a topic name publishes, True
        means taken, None or StompRefuse refuses)."""
        _loop_thread.active = True
        frame = None
        try:
            frame = StompFrame(self._conn(conn_id), raw)
            hook = {"CONNECT": self._on_stomp_connect, "SUBSCRIBE": self._on_stomp_subscribe,
                    "SEND": self._on_stomp_send}.get(frame.command)
            if hook is None:
                return
            answer = hook(frame)
            if isinstance(answer, StompRefuse) or (frame.command == "CONNECT" and isinstance(answer, str)):
                message = answer.message if isinstance(answer, StompRefuse) else str(answer)
                check(lib.petrel_stomp_refuse(raw, message.replace("\r", " ").replace("\n", " ").encode()))
            elif frame.command == "CONNECT" and answer is not None and answer is not True:
                # Anything but None or True refuses (an `async def` hook's coroutine included:
                # the answer is needed now, and an authentication hook must not fail open).
                if not isinstance(answer, bool):
                    log.error("petrel: on_stomp_connect returned %r: refused (return None/True, a str or StompRefuse)", answer)
                check(lib.petrel_stomp_refuse(raw, b"refused"))
            elif isinstance(answer, str):
                check(lib.petrel_stomp_allow(raw, answer.encode()))
            elif frame.command == "SEND" and answer is True:
                check(lib.petrel_stomp_allow(raw, None))
        except Exception:
            log.exception("petrel: exception in a STOMP hook (the frame is refused)")
            lib.petrel_stomp_refuse(raw, b"internal error")
        finally:
            if frame is not None:
                frame._raw = None  # the C frame is gone once this returns
            _loop_thread.active = False

    def _c_access_log(self, _ud, _srv, entry):  # type: ignore[no-untyped-def]
        e = entry.contents

        def text(b: Optional[bytes]) -> str:
            return b.decode("utf-8", "replace") if b is not None else ""

        try:
            assert self._on_access_log is not None
            self._on_access_log(AccessLogEntry(
                text(e.event), e.time_ms / 1000, text(e.peer), e.conn, text(e.method), text(e.path), e.status,
                text(e.transport), e.bytes_in, e.bytes_out, e.duration_ms / 1000, text(e.line)))
        except Exception:
            log.exception("petrel: exception in the access_log function")

    def _c_stomp_ack(self, _ud, _srv, conn_id, _conn_data, subscription, ids, count, negative,  # type: ignore[no-untyped-def]
                     position):
        if not self._on_stomp_ack:
            return
        _loop_thread.active = True
        try:
            self._on_stomp_ack(self._conn(conn_id), subscription.decode("utf-8", "replace"),
                               [ids[i] for i in range(count)], bool(negative), position)
        except Exception:
            log.exception("petrel: exception in on_stomp_ack")
        finally:
            _loop_thread.active = False

    def on_upgrade(self, f: Callable[[HTTPRequest], object]) -> Callable[[HTTPRequest], object]:
        """The accept hook, before a WebSocket upgrade is answered: return None or True to accept,
        Accept(subprotocol=..., user_data=...) to accept with choices, False to refuse with 403, or
        (status, content_type, body) to refuse with that response."""
        self._on_upgrade = f
        return f

    def _c_upgrade(self, _ud, _srv, raw):  # type: ignore[no-untyped-def]
        _loop_thread.active = True
        try:
            if not self._on_upgrade:
                return
            answer = self._on_upgrade(HTTPRequest(raw))
            if answer is None or answer is True:
                return
            if answer is False:
                answer = (403, "text/plain", "forbidden\n")
            if isinstance(answer, Accept):
                sub = answer.subprotocol.encode() if answer.subprotocol else None
                # No conn_data: user_data stays in Python, in a dict by connection id.
                check(lib.petrel_upgrade_accept(raw, sub, None))
                if answer.user_data is not None:
                    with self._lock:
                        self._user_data[raw.contents.conn] = answer.user_data
                return
            if not isinstance(answer, tuple):
                raise TypeError("on_upgrade returns None/True (accept), False (403), Accept(...) or (status, type, body)")
            _respond(raw, answer)
        except Exception:
            log.exception("petrel: exception in on_upgrade (the upgrade is refused)")
            lib.petrel_http_respond(raw, 500, b"text/plain", b"internal error\n", 15)
        finally:
            _loop_thread.active = False

    # -- lifecycle --
    def start(self) -> "Server":
        """Binds and serves on background threads; returns at once."""
        check(lib.petrel_server_start(self._handle))
        self._started = True
        self._dispatcher = threading.Thread(target=self._pump_events, name="petrel-dispatch", daemon=True)
        self._dispatcher.start()
        return self

    def serve_forever(self) -> None:
        """Binds and serves on background threads until stop() is called (or KeyboardInterrupt)."""
        if not self._started:
            self.start()
        self._stopped = threading.Event()
        try:
            while not self._stopped.wait(0.2):
                pass
        except KeyboardInterrupt:
            self.stop()

    def stop(self, grace: float = 5.0) -> None:
        """Sends close 1001 to every client and waits up to `grace` seconds for them."""
        rc = lib.petrel_server_stop(self._handle, int(grace * 1000))
        if rc != S.E_STOPPED:
            check(rc)
        self._join_dispatcher()
        if getattr(self, "_stopped", None) is not None:
            self._stopped.set()

    def _join_dispatcher(self) -> None:
        # The dispatcher hands out what is left, sees the queue closed and ends. Not waited for
        # from itself, nor from a loop thread (on_http, on_upgrade): the stop only begins there.
        d = self._dispatcher
        if d is not None and d is not threading.current_thread() and not getattr(_loop_thread, "active", False):
            d.join()

    def close(self) -> None:
        """Stops the server if needed and releases it."""
        if self._handle:
            d = self._dispatcher
            if d is not None and d.is_alive():
                if d is threading.current_thread():
                    raise RuntimeError("close() from a handler: call stop() there, close() elsewhere")
                lib.petrel_server_stop(self._handle, 1000)
                d.join()
            handle, self._handle = self._handle, ctypes.c_void_p()  # no call sees it freed
            check(lib.petrel_server_destroy(handle))

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if self._handle:
                lib.petrel_server_destroy(self._handle)
        except Exception:
            pass

    @property
    def port(self) -> int:
        p = ctypes.c_uint16()
        check(lib.petrel_server_port(self._handle, ctypes.byref(p)))
        return p.value

    def reload_tls(self) -> None:
        """Loads the TLS certificate and key files again, for connections accepted from now on."""
        check(lib.petrel_server_reload_tls(self._handle))

    @property
    def connection_count(self) -> int:
        n = ctypes.c_uint64()
        check(lib.petrel_server_connection_count(self._handle, ctypes.byref(n)))
        return n.value

    def publish(self, topic: str, data: Data, key: Optional[str] = None, stamp_id: bool = False) -> int:
        """Publishes to every subscriber of `topic`; safe from any thread. Returns the event id.

        With `engine="redis://..."` the message goes to Redis (this call waits for its answer) and
        reaches the subscribers of every server on that Redis; raises EngineUnavailable when Redis
        cannot be reached or refuses (the message was not published) or times out (Redis may still add it).

        `stamp_id=True`: the message carries ``{{id}}`` where its own event id goes, and the
        engine writes the id there (first occurrence) before anyone sees it, as in
        ``'{"id":{{id}},"price":12.5}'``. With several servers on one Redis only Redis knows the
        next id. ValueError if the message has no ``{{id}}``."""
        if not isinstance(topic, str):
            raise TypeError("topic must be a str")
        kind, raw = _payload(data)
        if stamp_id:
            if b"{{id}}" not in raw:
                raise ValueError("stamp_id=True needs {{id}} in the message")
            kind |= _lib.STAMP_ID
        event_id = ctypes.c_uint64()
        check(lib.petrel_server_publish(self._handle, topic.encode(), kind, raw, len(raw),
                                        key.encode() if key is not None else None, ctypes.byref(event_id)))
        return event_id.value

    @overload
    def observe(self, topic: str) -> Callable[[Observer], Observer]: ...

    @overload
    def observe(self, topic: str, handler: Observer) -> Observer: ...

    def observe(self, topic: str, handler: Optional[Observer] = None) -> Union[Observer, Callable[[Observer], Observer]]:
        """Calls ``handler(event_id, message, key)`` with every message of `topic`, in id order,
        whoever published it (message: str for text, bytes for binary). With the Redis engine
        that starts with the topic's recent history during start(), then every message this
        server reads from Redis, on the engine's thread (after Redis lost its history the newest
        messages come again, and may repeat ids); in-process, on the publishing thread before
        publish returns (in order when one thread at a time publishes to the topic). Call it
        before start(); usable as a decorator. The handler must not wait for a lock held across
        an in-process publish() to that topic, or across stop()."""
        if not isinstance(topic, str):
            raise TypeError("topic must be a str")

        def register(f: Observer) -> Observer:
            def called(_ud: Any, _srv: Any, _topic: Any, event_id: int, kind: int, data: Any, length: int,
                       key: Optional[bytes]) -> None:
                try:
                    raw = ctypes.string_at(data, length) if length else b""
                    f(event_id, raw.decode() if kind == 1 else raw, key.decode() if key is not None else None)
                except Exception:
                    log.exception("petrel: exception in an observer of %s", topic)
            c_observer = _lib.TopicObserver(called)
            check(lib.petrel_server_observe(self._handle, topic.encode(), c_observer, None))
            self._keep.append(c_observer)
            return f

        return register(handler) if handler is not None else register

    def connection(self, conn_id: int) -> Connection:
        if not isinstance(conn_id, int):
            raise TypeError("a connection id is an int")
        return self._conn(conn_id)
