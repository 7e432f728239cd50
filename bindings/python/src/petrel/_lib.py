"""Finds and loads libpetrel.so, and declares every C signature in one table.

Search order: the PETREL_LIBRARY environment variable; the copy inside this package (pip puts
it there: setup.py); then the system's library path (`ctypes.util.find_library`, then
libpetrel.so and its soname libpetrel.so.0, e.g. after `make install`, which installs
libpetrel.so.X.Y.Z with those two as symlinks). A failure says every place that was tried. The
library must have the ABI these bindings declare: petrel.h 0.2 or a later 0.x (the ABI of
libpetrel.so.0 is kept from 0.2 on). An older one would hand the callbacks shifted arguments,
so it is refused, with its version.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
from ctypes import (CFUNCTYPE, POINTER, Structure, c_char, c_char_p, c_int32, c_size_t, c_uint16, c_uint32,
                    c_uint64, c_void_p)
from pathlib import Path

LIBRARY_NAME = "libpetrel.so"
SONAME = "libpetrel.so.0"
# The (major, minor) of petrel.h these declarations follow: a library of that major and at
# least that minor has them (0.2 added conn_data to the connection callbacks; 0.1 is refused).
ABI = (0, 2)


def _load() -> ctypes.CDLL:
    tried: list[str] = []
    env = os.environ.get("PETREL_LIBRARY")
    if env:
        if Path(env).is_file():  # a file, or a symlink to one (libpetrel.so -> libpetrel.so.0.2.0)
            return ctypes.CDLL(env)
        tried.append(f"PETREL_LIBRARY={env} (no such file)")
    bundled = Path(__file__).resolve().parent / LIBRARY_NAME
    if bundled.is_file():
        return ctypes.CDLL(str(bundled))
    tried.append(f"{bundled} (the package's copy)")
    found = ctypes.util.find_library("petrel")
    for name in dict.fromkeys(([found] if found else []) + [LIBRARY_NAME, SONAME]):
        try:
            return ctypes.CDLL(name)
        except OSError as e:
            tried.append(f"{name} from the system's library path ({e})")
    raise OSError(
        "petrel: cannot find libpetrel.so; tried:\n  " + "\n  ".join(tried)
        + "\nInstall with `pip install ./bindings/python` from the Petrel repository (it bundles the library),"
        + " or set PETREL_LIBRARY to a libpetrel.so (`make lib` builds one)."
    )


def _checked(library: ctypes.CDLL) -> ctypes.CDLL:
    """The library, if its ABI is ABI's or a later minor of its major; else OSError with its version."""
    need = (f"these bindings need libpetrel {ABI[0]}.{ABI[1]} or a later {ABI[0]}.x "
            "(rebuild it with `make lib`, or set PETREL_LIBRARY to one)")
    try:
        number = library.petrel_version_number
    except AttributeError:
        raise OSError(f"petrel: {library._name} is not a libpetrel (no petrel_version_number); {need}") from None
    number.restype, number.argtypes = c_uint32, []
    found = divmod(int(number()) // 100, 100)
    if found[0] != ABI[0] or found < ABI:
        raise OSError(f"petrel: {library._name} is libpetrel {found[0]}.{found[1]}; {need}")
    return library


lib = _checked(_load())

# ---- structs of petrel.h (field order and types as in the header) ----


class ServerConfig(Structure):
    _fields_ = [
        ("size", c_size_t), ("host", c_char_p), ("port", c_uint16), ("threads", c_uint32),
        ("max_connections", c_uint32), ("max_message_size", c_uint64), ("max_frame_size", c_uint64),
        ("max_backpressure", c_uint64), ("handshake_timeout_ms", c_uint32), ("idle_timeout_ms", c_uint32),
        ("ping_interval_ms", c_uint32), ("pong_timeout_ms", c_uint32), ("close_timeout_ms", c_uint32),
        ("compression", c_int32), ("close_on_backpressure", c_int32), ("subprotocols", c_char_p),
        ("allowed_origins", c_char_p), ("topic_slow_consumer", c_int32), ("topic_max_queued", c_uint32),
        ("topic_replay", c_uint32), ("static_root", c_char_p), ("event_stream_paths", c_char_p),
        ("max_request_body", c_uint64), ("tls_cert_file", c_char_p), ("tls_key_file", c_char_p),
        ("tls_client_ca_file", c_char_p), ("tls_sni_certificates", c_char_p),
        ("queue_events", c_int32), ("event_queue_bytes", c_uint64),
        ("engine_url", c_char_p), ("engine_timeout_ms", c_uint32), ("topic_stream_capacity", c_uint64),
        ("stomp_paths", c_char_p), ("stomp_heart_beat_ms", c_uint32), ("stomp_max_unacked", c_uint32),
        ("stomp_max_body", c_uint64), ("keep_alive_timeout_ms", c_uint32), ("cors_origins", c_char_p),
        ("cors_credentials", c_int32), ("sse_retry_ms", c_uint32), ("sse_padding", c_uint32),
        ("access_log_file", c_char_p), ("proxy_protocol", c_int32), ("trusted_proxies", c_char_p),
        ("trusted_proxy_header", c_int32), ("heartbeat_messages", c_int32),
    ]


class AccessLogEntry(Structure):
    _fields_ = [
        ("event", c_char_p), ("time_ms", c_uint64), ("peer", c_char_p), ("conn", c_uint64), ("method", c_char_p),
        ("path", c_char_p), ("status", c_int32), ("transport", c_char_p), ("bytes_in", c_uint64),
        ("bytes_out", c_uint64), ("duration_ms", c_uint64), ("line", c_char_p),
    ]


class HTTPRequest(Structure):
    _fields_ = [
        ("method", c_char_p), ("path", c_char_p), ("query", c_char_p), ("body", POINTER(c_char)),
        ("body_len", c_size_t), ("peer", c_char_p), ("conn", c_uint64), ("internal_", c_void_p), ("client", c_char_p),
    ]


class StompFrame(Structure):
    _fields_ = [
        ("command", c_char_p), ("destination", c_char_p), ("subscription", c_char_p), ("ack", c_char_p),
        ("login", c_char_p), ("passcode", c_char_p), ("host", c_char_p), ("body", POINTER(c_char)),
        ("body_len", c_size_t), ("internal_", c_void_p),
    ]


# Every callback of a connection gets its `void *conn_data` right after the id (always NULL
# here: the Python server keeps its per-connection data in a dict of its own). The server
# installs only on_stomp and on_stomp_ack of these: open, message, close and drain come in
# batches (queue_events). A wrong argument list shifts every argument after it without any
# error: keep these exactly as in petrel.h.
OnOpen = CFUNCTYPE(None, c_void_p, c_void_p, c_uint64, POINTER(c_void_p))
OnMessage = CFUNCTYPE(None, c_void_p, c_void_p, c_uint64, c_void_p, c_int32, POINTER(c_char), c_size_t)
OnClose = CFUNCTYPE(None, c_void_p, c_void_p, c_uint64, c_void_p, c_uint16, POINTER(c_char), c_size_t)
OnDrain = CFUNCTYPE(None, c_void_p, c_void_p, c_uint64, c_void_p)
OnHTTP = CFUNCTYPE(None, c_void_p, c_void_p, POINTER(HTTPRequest))
TopicObserver = CFUNCTYPE(None, c_void_p, c_void_p, c_char_p, c_uint64, c_int32, POINTER(c_char), c_size_t, c_char_p)
OnStomp = CFUNCTYPE(None, c_void_p, c_void_p, c_uint64, c_void_p, POINTER(StompFrame))
OnStompAck = CFUNCTYPE(None, c_void_p, c_void_p, c_uint64, c_void_p, c_char_p, POINTER(c_uint64), c_size_t, c_int32,
                       c_uint64)
OnAccessLog = CFUNCTYPE(None, c_void_p, c_void_p, POINTER(AccessLogEntry))
STAMP_ID = 0x100  # PETREL_STAMP_ID


class ServerCallbacks(Structure):
    _fields_ = [
        ("size", c_size_t), ("userdata", c_void_p), ("on_open", OnOpen), ("on_message", OnMessage),
        ("on_close", OnClose), ("on_drain", OnDrain), ("on_http", OnHTTP), ("on_upgrade", OnHTTP),
        ("on_stomp", OnStomp), ("on_stomp_ack", OnStompAck), ("on_access_log", OnAccessLog),
    ]


class ClientConfig(Structure):
    _fields_ = [
        ("size", c_size_t), ("connect_timeout_ms", c_uint32), ("handshake_timeout_ms", c_uint32),
        ("max_message_size", c_uint64), ("compression", c_int32), ("subprotocols", c_char_p), ("origin", c_char_p),
        ("tls_ca_file", c_char_p), ("tls_server_name", c_char_p), ("tls_cert_file", c_char_p), ("tls_key_file", c_char_p),
        ("tls_insecure_skip_verify", c_int32), ("proxy", c_char_p), ("proxy_from_environment", c_int32),
        ("headers", c_char_p), ("max_backpressure", c_uint64), ("ping_interval_ms", c_uint32), ("pong_timeout_ms", c_uint32),
        ("reconnect", c_int32), ("reconnect_initial_delay_ms", c_uint32), ("reconnect_max_delay_ms", c_uint32),
        ("reconnect_jitter_percent", c_uint32), ("reconnect_max_attempts", c_uint32), ("queue_while_reconnecting", c_int32),
    ]


ClientOnMessage = CFUNCTYPE(None, c_void_p, c_void_p, c_int32, POINTER(c_char), c_size_t)
ClientOnClose = CFUNCTYPE(None, c_void_p, c_void_p, c_uint16, POINTER(c_char), c_size_t)
ClientOnDrain = CFUNCTYPE(None, c_void_p, c_void_p)
ClientOnState = CFUNCTYPE(None, c_void_p, c_void_p, c_int32, c_uint32, c_uint32, POINTER(c_char), c_size_t)


class ClientCallbacks(Structure):
    _fields_ = [("size", c_size_t), ("userdata", c_void_p), ("on_message", ClientOnMessage), ("on_close", ClientOnClose),
                ("on_drain", ClientOnDrain), ("on_state", ClientOnState)]


# ---- every function: (name, restype, argtypes) ----
status = c_int32
_SIGNATURES = [
    ("petrel_version", c_char_p, []),
    ("petrel_version_number", c_uint32, []),
    ("petrel_strerror", c_char_p, [c_int32]),
    ("petrel_server_config_init", None, [POINTER(ServerConfig)]),
    ("petrel_server_callbacks_init", None, [POINTER(ServerCallbacks)]),
    ("petrel_server_create", status, [POINTER(ServerConfig), POINTER(ServerCallbacks), POINTER(c_void_p)]),
    ("petrel_server_start", status, [c_void_p]),
    ("petrel_server_run", status, [c_void_p]),
    ("petrel_server_stop", status, [c_void_p, c_uint32]),
    ("petrel_server_destroy", status, [c_void_p]),
    ("petrel_server_port", status, [c_void_p, POINTER(c_uint16)]),
    ("petrel_server_reload_tls", status, [c_void_p]),
    ("petrel_last_error", c_char_p, []),
    ("petrel_server_connection_count", status, [c_void_p, POINTER(c_uint64)]),
    ("petrel_server_next_events", status, [c_void_p, c_int32, c_void_p, c_size_t, POINTER(c_size_t)]),
    ("petrel_server_publish", status, [c_void_p, c_char_p, c_int32, c_void_p, c_size_t, c_char_p, POINTER(c_uint64)]),
    ("petrel_server_observe", status, [c_void_p, c_char_p, TopicObserver, c_void_p]),
    ("petrel_conn_send", status, [c_void_p, c_uint64, c_int32, c_void_p, c_size_t]),
    ("petrel_conn_close", status, [c_void_p, c_uint64, c_uint16, c_char_p]),
    ("petrel_conn_subscribe", status, [c_void_p, c_uint64, c_char_p]),
    ("petrel_conn_unsubscribe", status, [c_void_p, c_uint64, c_char_p]),
    ("petrel_conn_buffered_amount", status, [c_void_p, c_uint64, POINTER(c_uint64)]),
    ("petrel_conn_path", status, [c_void_p, c_uint64, c_char_p, c_size_t, POINTER(c_size_t)]),
    ("petrel_conn_query", status, [c_void_p, c_uint64, c_char_p, c_size_t, POINTER(c_size_t)]),
    ("petrel_conn_header", status, [c_void_p, c_uint64, c_char_p, c_char_p, c_size_t, POINTER(c_size_t)]),
    ("petrel_conn_peer_address", status, [c_void_p, c_uint64, c_char_p, c_size_t, POINTER(c_size_t)]),
    ("petrel_conn_client_address", status, [c_void_p, c_uint64, c_char_p, c_size_t, POINTER(c_size_t)]),
    ("petrel_conn_query_param", status, [c_void_p, c_uint64, c_char_p, c_char_p, c_size_t, POINTER(c_size_t)]),
    ("petrel_conn_send_event", status, [c_void_p, c_uint64, c_uint64, c_void_p, c_size_t]),
    ("petrel_conn_last_event_id", status, [c_void_p, c_uint64, POINTER(c_uint64)]),
    ("petrel_conn_subscribe_after", status, [c_void_p, c_uint64, c_char_p, c_uint64]),
    ("petrel_conn_pause_reading", status, [c_void_p, c_uint64, c_int32]),
    ("petrel_upgrade_accept", status, [POINTER(HTTPRequest), c_char_p, c_void_p]),
    ("petrel_conn_ping", status, [c_void_p, c_uint64, c_void_p, c_size_t]),
    ("petrel_conn_rtt", status, [c_void_p, c_uint64, POINTER(c_uint32)]),
    ("petrel_conn_subprotocol", status, [c_void_p, c_uint64, c_char_p, c_size_t, POINTER(c_size_t)]),
    ("petrel_http_respond", status, [POINTER(HTTPRequest), c_uint16, c_char_p, c_void_p, c_size_t]),
    ("petrel_http_header", status, [POINTER(HTTPRequest), c_char_p, c_char_p, c_size_t, POINTER(c_size_t)]),
    ("petrel_stomp_allow", status, [POINTER(StompFrame), c_char_p]),
    ("petrel_stomp_refuse", status, [POINTER(StompFrame), c_char_p]),
    ("petrel_stomp_header", status, [POINTER(StompFrame), c_char_p, c_char_p, c_size_t, POINTER(c_size_t)]),
    ("petrel_conn_is_stomp", status, [c_void_p, c_uint64, POINTER(c_int32)]),
    ("petrel_http_query_param", status, [POINTER(HTTPRequest), c_char_p, c_char_p, c_size_t, POINTER(c_size_t)]),
    ("petrel_client_config_init", None, [POINTER(ClientConfig)]),
    ("petrel_client_callbacks_init", None, [POINTER(ClientCallbacks)]),
    ("petrel_client_connect", status, [c_char_p, POINTER(ClientConfig), c_void_p, POINTER(c_void_p)]),
    ("petrel_client_send", status, [c_void_p, c_int32, c_void_p, c_size_t]),
    ("petrel_client_receive", status, [c_void_p, c_int32, POINTER(c_int32), c_void_p, c_size_t, POINTER(c_size_t)]),
    ("petrel_client_close", status, [c_void_p, c_uint16, c_char_p]),
    ("petrel_client_close_status", status, [c_void_p, POINTER(c_uint16), c_char_p, c_size_t, POINTER(c_size_t)]),
    ("petrel_client_pause_reading", status, [c_void_p, c_int32]),
    ("petrel_client_ping", status, [c_void_p, c_void_p, c_size_t]),
    ("petrel_client_rtt", status, [c_void_p, POINTER(c_uint32)]),
    ("petrel_client_subprotocol", status, [c_void_p, c_char_p, c_size_t, POINTER(c_size_t)]),
    ("petrel_client_set_last_event_id", status, [c_void_p, c_uint64]),
    ("petrel_client_last_event_id", status, [c_void_p, POINTER(c_uint64)]),
    ("petrel_client_state", status, [c_void_p, POINTER(c_int32), POINTER(c_uint32)]),
    ("petrel_last_refusal", status, [POINTER(c_uint16), c_char_p, c_size_t, POINTER(c_size_t)]),
    ("petrel_client_destroy", None, [c_void_p]),
]

for _name, _res, _args in _SIGNATURES:
    _f = getattr(lib, _name)
    _f.restype = _res
    _f.argtypes = _args

# The per-message send, called the cheap way: through PyDLL (it never blocks and never calls back
# into Python, so it may keep the GIL: releasing and taking it again cost as much as the call)
# and without argtypes (the caller passes a c_void_p handle, a c_uint64 id, and ints and bytes
# that C's default conversions carry exactly). Half the time of the checked call per message.
send_unchecked = ctypes.PyDLL(lib._name).petrel_conn_send
send_unchecked.restype = c_int32

TEXT = 1
BINARY = 2
# petrel_event_record types (queue_events)
QUEUED_OPEN, QUEUED_MESSAGE, QUEUED_CLOSE, QUEUED_DRAIN = 1, 2, 3, 4
