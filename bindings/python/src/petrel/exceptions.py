"""Exceptions, one per band of petrel.h's status codes (numbers by name from ._status)::

    PetrelError                      every error; .status is the C status, str() its message
    ├── Backpressure                 E_BACKPRESSURE: not queued, the send buffer is full (wait for drain)
    ├── Timeout (also TimeoutError)  E_TIMEOUT
    ├── Reconnecting                 E_RECONNECTING: not sent, the client is between connections
    ├── ConnectionClosed             E_CLOSED, E_SENDING_CLOSED: .code and .reason once known
    ├── ProtocolError                -2xx: the peer broke RFC 6455 / RFC 7692
    │   └── InvalidHandshake         E_HS_*, E_HANDSHAKE: the opening handshake failed
    │       └── InvalidStatus        E_HANDSHAKE: the server answered another status than 101:
    │                                .status_code (401, 403, 503...) and .body (bytes)
    ├── InvalidArgument (also ValueError)   E_NULL, E_INVALID_ARGUMENT, E_BUFFER_TOO_SMALL, ...
    ├── InvalidState                 the rest of -3xx: unknown connection, stopped, wrong thread
    └── ConnectFailed (also OSError) -6xx: resolve, bind, connect, URL
"""
from __future__ import annotations

from typing import Optional

from . import _status as S
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


class Reconnecting(PetrelError):
    """Not sent: the client is between connections and reconnecting (Reconnect(queue_sends=True)
    queues instead)."""


class ConnectionClosed(PetrelError):
    """The connection is closed; `code` and `reason` say how, when known."""

    def __init__(self, status: int = S.E_CLOSED, code: Optional[int] = None, reason: str = "") -> None:
        super().__init__(status, f"connection closed (code {code}{': ' + reason if reason else ''})" if code else None)
        self.code = code
        self.reason = reason


class ConnectionClosedOK(ConnectionClosed):
    """The connection ended with a normal close: 1000, 1001, or 1005 (a close frame without a code)."""


class ConnectionClosedError(ConnectionClosed):
    """The connection ended any other way: another close code, or none (1006)."""


class ProtocolError(PetrelError):
    """The peer broke the protocol."""


class InvalidHandshake(ProtocolError):
    """The opening handshake failed."""


class InvalidStatus(InvalidHandshake):
    """The server refused the opening handshake with an HTTP status other than 101:
    `status_code` is that status (401, 403, 404, 503...), `body` the response's body (bytes, at
    most 16 KiB; b"" when it sent none). `status` is the C status, as for every PetrelError."""

    def __init__(self, status: int, status_code: int, body: bytes, message: Optional[str] = None) -> None:
        super().__init__(status, message)
        self.status_code = status_code
        self.body = body


class InvalidArgument(PetrelError, ValueError):
    """An argument was rejected by the library."""


class InvalidState(PetrelError):
    """Not possible now: unknown connection, server stopped, or the wrong thread."""


class ConnectFailed(PetrelError, OSError):
    """A name could not be resolved, an address bound, or a connection made."""


class EngineUnavailable(PetrelError, OSError):
    """The pub/sub engine (Redis) could not be reached, refused or timed out (docs/cluster.md, Failures)."""


def _band(status: int, hundreds: int) -> bool:
    """Whether `status` is in petrel.h's band -<hundreds>xx (wslay's grouping)."""
    return -hundreds * 100 - 99 <= status <= -hundreds * 100


_CLOSED = (S.E_CLOSED, S.E_SENDING_CLOSED)
_BAD_ARGUMENT = (S.E_NULL, S.E_INVALID_ARGUMENT, S.E_BUFFER_TOO_SMALL, S.E_CONFIG_SIZE, S.E_CONTROL_PAYLOAD,
                 S.E_BAD_CLOSE_CODE, S.E_CLOSE_REASON_LONG, S.E_BAD_OPCODE, S.E_NO_MESSAGE, S.E_MESSAGE_IN_PROGRESS)
# The opening handshake's statuses: the server's refusals (PETREL_E_HS_MALFORMED...) and the
# client's (PETREL_E_HS_BAD_RESPONSE...), and the runtime's PETREL_E_HANDSHAKE.
_HANDSHAKE = tuple(v for k, v in vars(S).items() if k.startswith("E_HS_")) + (S.E_HANDSHAKE,)


def error_for(status: int) -> PetrelError:
    """The exception for a (negative) status code."""
    if status == S.E_BACKPRESSURE:
        return Backpressure(status)
    if status == S.E_TIMEOUT:
        return Timeout(status)
    if status == S.E_RECONNECTING:
        return Reconnecting(status)
    if status in _CLOSED:
        return ConnectionClosed(status)
    if status in _HANDSHAKE:
        return InvalidHandshake(status)
    if _band(status, 2):
        return ProtocolError(status)
    if status in _BAD_ARGUMENT:
        return InvalidArgument(status)
    if _band(status, 3):
        return InvalidState(status)
    if status == S.E_ENGINE:
        return EngineUnavailable(status)
    if _band(status, 6):
        return ConnectFailed(status)
    return PetrelError(status)


def check(status: int) -> None:
    """Raises the matching exception for a negative status."""
    if status < 0:
        raise error_for(status)
