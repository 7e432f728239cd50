"""Petrel for Python: a fast WebSocket server and client over libpetrel.so (ctypes).

    import petrel
    server = petrel.Server("127.0.0.1", 8080, on_message=lambda conn, m: conn.send(m))
    server.serve_forever()
"""
from ._lib import lib as _lib_handle
from .client import ClientConnection, Reconnect, connect
from .exceptions import (Backpressure, ConnectFailed, ConnectionClosed, ConnectionClosedError, ConnectionClosedOK,
                         EngineUnavailable, InvalidArgument, InvalidHandshake, InvalidState, InvalidStatus, PetrelError,
                         ProtocolError, Reconnecting, Timeout)
from .server import AccessLogEntry, Accept, Connection, HTTPRequest, Server, StompFrame, StompRefuse

__version__ = _lib_handle.petrel_version().decode()

__all__ = [
    "Server", "Connection", "HTTPRequest", "Accept", "AccessLogEntry", "StompFrame", "StompRefuse", "connect", "ClientConnection", "Reconnect", "Reconnecting", "PetrelError", "Backpressure", "Timeout",
    "ConnectionClosed", "ConnectionClosedOK", "ConnectionClosedError", "ProtocolError", "InvalidHandshake", "InvalidStatus", "InvalidArgument", "InvalidState", "ConnectFailed",
    "EngineUnavailable",
]
