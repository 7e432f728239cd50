#!/usr/bin/env python3
"""picows server for Petrel's side-by-side benchmarks (contract: ../PROTOCOL.md).

    python picows_echo.py --port N [--deflate]

Best configuration as picows documents it: the Core API (`ws_create_server`, a `WSListener`
subclass, the non-async `on_ws_frame` data path, zero-copy payload memoryviews) on uvloop, one
event loop thread. picows uses its dependency aiofastnet for the TCP transport by default
("excellent TCP performance regardless of the event loop used", README); we keep that default.

Fragmentation: the Core API hands over frames, not messages ("it is up to the user to decide
the most effective strategy for concatenating them", README). A single-frame message, the
common case, is sent straight from the frame's memoryview; a fragmented one is assembled in a
bytearray and sent as one message (examples/echo_client_fragmented_msg.py).

permessage-deflate: the Core API has none ("The Core API doesn't offer high-level features like
permessage-deflate", README). picows 2.3 ships a websockets-compatible layer,
`picows.websockets`, that does negotiate permessage-deflate, so `--deflate` runs that layer
(same routes, compression="deflate"). With `--core-only --deflate` the script instead exits 3
("n/a").

Paths: `/sub` subscribers, `/pub` sends each message to all subscribers with the same opcode
(nothing echoed to the publisher), anything else echoes.
"""

import argparse
import sys

import uvloop
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

MAX_MESSAGE = 16 << 20
DEFLATE_SLACK = 1 << 20  # see websockets_echo.py: the limit also applies to deflated frames

CONTINUATION = WSMsgType.CONTINUATION
CLOSE = WSMsgType.CLOSE
TEXT = WSMsgType.TEXT
BINARY = WSMsgType.BINARY

# Transports of the open /sub connections. Only touched from the single event loop.
subscribers: set[WSTransport] = set()


class Listener(WSListener):
    """Reassembles fragmented messages and hands each whole message to `deliver`."""

    __slots__ = ("msg_type", "parts")

    def __init__(self) -> None:
        self.msg_type = None
        self.parts = None  # bytearray while a fragmented message is being assembled

    def deliver(self, transport: WSTransport, msg_type: WSMsgType, payload) -> None:
        raise NotImplementedError

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        msg_type = frame.msg_type
        if msg_type == CONTINUATION:
            parts = self.parts
            if parts is None:
                transport.send_close(WSCloseCode.PROTOCOL_ERROR)
                transport.disconnect()
                return
            parts += frame.get_payload_as_memoryview()
            if len(parts) > MAX_MESSAGE:
                transport.send_close(WSCloseCode.MESSAGE_TOO_BIG)
                transport.disconnect()
                return
            if frame.fin:
                self.parts = None
                self.deliver(transport, self.msg_type, parts)
        elif msg_type == TEXT or msg_type == BINARY:
            if frame.fin:
                # Whole message in one frame: no copy.
                self.deliver(transport, msg_type, frame.get_payload_as_memoryview())
            else:
                self.msg_type = msg_type
                self.parts = bytearray(frame.get_payload_as_memoryview())
        elif msg_type == CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
        # PING is answered by picows itself (enable_auto_pong=True); PONG is ignored.

    # The transport's write buffer crossed its high/low watermark. Nothing to do: echo
    # clients bound their own window, and fan-out must not drop, so the buffer just grows.
    # Defining these also stops picows from logging a warning each time (it does when the
    # listener leaves them unimplemented).
    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass


class EchoListener(Listener):
    __slots__ = ()

    def deliver(self, transport: WSTransport, msg_type: WSMsgType, payload) -> None:
        transport.send(msg_type, payload)


class PublisherListener(Listener):
    __slots__ = ()

    def deliver(self, transport: WSTransport, msg_type: WSMsgType, payload) -> None:
        # send() frames the message into the subscriber's transport buffer right away: no
        # message is dropped, however slow the subscriber (the buffer just grows).
        for subscriber in subscribers:
            subscriber.send(msg_type, payload)


class SubscriberListener(Listener):
    __slots__ = ()

    def on_ws_connected(self, transport: WSTransport) -> None:
        subscribers.add(transport)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        subscribers.discard(transport)

    def deliver(self, transport: WSTransport, msg_type: WSMsgType, payload) -> None:
        pass  # subscribers only listen


def listener_factory(request: WSUpgradeRequest) -> WSListener:
    path = request.path.split(b"?", 1)[0]
    if path == b"/sub":
        return SubscriberListener()
    if path == b"/pub":
        return PublisherListener()
    return EchoListener()


async def main_core(port: int) -> None:
    server = await ws_create_server(
        listener_factory,
        "127.0.0.1",
        port,
        max_frame_size=MAX_MESSAGE,
        websocket_handshake_timeout=60,
        backlog=4096,  # passed on to create_server (asyncio's default is 100)
    )
    print(f"picows listening on 127.0.0.1:{port}", flush=True)
    await server.serve_forever()


async def main_deflate(port: int) -> None:
    # picows' websockets-compatible layer: the only picows API with permessage-deflate.
    from picows.websockets.asyncio.server import broadcast, serve
    from picows.websockets.exceptions import ConnectionClosedError

    compat_subscribers = set()

    async def handler(ws) -> None:
        try:
            await route(ws)
        except ConnectionClosedError:
            pass  # a client that resets (the load generator at the end of a run)

    async def route(ws) -> None:
        path = ws.request.path.split("?", 1)[0]
        if path == "/sub":
            compat_subscribers.add(ws)
            try:
                async for _ in ws:
                    pass
            finally:
                compat_subscribers.discard(ws)
        elif path == "/pub":
            async for message in ws:
                # Writes to every open subscriber without backpressure (like websockets'
                # broadcast, see websockets_echo.py); skips only connections in the middle of
                # a fragmented send, which never happens here.
                broadcast(compat_subscribers, message)
        else:
            async for message in ws:
                await ws.send(message)

    server = await serve(
        handler,
        "127.0.0.1",
        port,
        compression="deflate",
        max_size=MAX_MESSAGE + DEFLATE_SLACK,
        ping_interval=None,
        backlog=4096,
    )
    print(f"picows (picows.websockets, permessage-deflate) listening on 127.0.0.1:{port}", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument("--deflate", action="store_true")
    parser.add_argument(
        "--core-only",
        action="store_true",
        help="never leave the Core API: with --deflate, exit 3 instead",
    )
    args = parser.parse_args()
    if args.deflate and args.core_only:
        print("picows: the Core API has no permessage-deflate (RFC 7692) support", file=sys.stderr)
        sys.exit(3)
    try:
        uvloop.run(main_deflate(args.port) if args.deflate else main_core(args.port))
    except KeyboardInterrupt:
        sys.exit(0)
