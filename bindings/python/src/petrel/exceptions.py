"""Exceptions, one per band of petrel.h's status codes::

    PetrelError                      every error; .status is the C status, str() its message
    ├── Backpressure                 -102: not queued, the send buffer is full (wait for drain)
    ├── Timeout (also TimeoutError)  -103
    ├── ConnectionClosed             -306, -320: .code and .reason once known
    ├── ProtocolError                -2xx: the peer broke RFC 6455 / RFC 7692
    │   └── InvalidHandshake         -24x, -26x, -608: the opening handshake failed
    ├── InvalidArgument (also ValueError)   -301, -302, -308, -309, -321...-323
    ├── InvalidState                 -303, -304, -305, -307: unknown connection, stopped, wrong thread
    └── ConnectFailed (also OSError) -6xx: resolve, bind, connect, URL
"""
from __future__ import annotations

from typing import Optional

from ._lib import lib


class PetrelError(Exception):
    """An error from the library: `status` is the C status code, the message its description."""

    def __init__(self, status: int, message: Optional[str] = None) -> None:
        self.status = status
        super().__init__(message or lib.petrel_strerror(status).decode())


class Backpressure(PetrelError):
    """The connection's send buffer is over its limit: the message was not queued."""


class Timeout(PetrelError, TimeoutError):
    """A blocking call's timeout expired."""


class ConnectionClosed(PetrelError):
    """The connection is closed; `code` and `reason` say how, when known."""

    def __init__(self, status: int = -306, code: Optional[int] = None, reason: str = "") -> None:
        super().__init__(status, f"connection closed (code {code}{': ' + reason if reason else ''})" if code else None)
        self.code = code
        self.reason = reason


class ProtocolError(PetrelError):
    """The peer broke the protocol."""


class InvalidHandshake(ProtocolError):
    """The opening handshake failed."""


class InvalidArgument(PetrelError, ValueError):
    """An argument was rejected by the library."""


class InvalidState(PetrelError):
    """Not possible now: unknown connection, server stopped, or the wrong thread."""


class ConnectFailed(PetrelError, OSError):
    """A name could not be resolved, an address bound, or a connection made."""


def error_for(status: int) -> PetrelError:
    """The exception for a (negative) status code."""
    if status == -102:
        return Backpressure(status)
    if status == -103:
        return Timeout(status)
    if status in (-306, -320):
        return ConnectionClosed(status)
    if -269 <= status <= -240 or status == -608:
        return InvalidHandshake(status)
    if -299 <= status <= -200:
        return ProtocolError(status)
    if status in (-301, -302, -308, -309) or -329 <= status <= -321:
        return InvalidArgument(status)
    if -399 <= status <= -300:
        return InvalidState(status)
    if -699 <= status <= -600:
        return ConnectFailed(status)
    return PetrelError(status)


def check(status: int) -> None:
    """Raises the matching exception for a negative status."""
    if status < 0:
        raise error_for(status)
