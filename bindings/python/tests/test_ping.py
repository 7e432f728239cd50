"""Pings from Python: Connection.ping and round_trip_time on the server, ping and round_trip_time
on both clients (sync and asyncio). The payload goes out as given (str as UTF-8), at most 125
bytes; round_trip_time is None until a pong has come, then seconds; an event stream has no
pings."""
import asyncio
import base64
import hashlib
import os
import socket
import threading
import time

import pytest
import websockets

import petrel
import petrel.asyncio

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def wait_for(read, timeout=5.0):
    """The first value of read() that is not None, polled until `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = read()
        if value is not None:
            return value
        time.sleep(0.01)
    raise AssertionError("timed out")


def exactly(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, "the connection ended"
        data += chunk
    return data


def read_head(sock):
    """The HTTP head, a byte at a time: nothing after it is taken."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += exactly(sock, 1)
    return head


def read_frame(sock):
    """(opcode, payload) of one frame, masked or not."""
    b0, b1 = exactly(sock, 2)
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(exactly(sock, 2), "big")
    elif n == 127:
        n = int.from_bytes(exactly(sock, 8), "big")
    mask = exactly(sock, 4) if b1 & 0x80 else None
    payload = exactly(sock, n)
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return b0 & 0x0F, payload


def write_frame(sock, opcode, payload, masked):
    if masked:
        mask = os.urandom(4)
        sock.sendall(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask
                     + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    else:
        sock.sendall(bytes([0x80 | opcode, len(payload)]) + payload)


def raw_client(port, path=b"/"):
    """A WebSocket client by hand (no extensions), past the 101."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    key = base64.b64encode(os.urandom(16))
    sock.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
    assert read_head(sock).startswith(b"HTTP/1.1 101")
    return sock


def test_the_server_pings_with_a_payload_and_learns_the_round_trip_time():
    opened = []
    ready = threading.Event()
    server = petrel.Server("127.0.0.1", 0, threads=1, on_open=lambda conn: (opened.append(conn), ready.set()))
    with server:
        sock = raw_client(server.port)
        assert ready.wait(5)
        conn = opened[0]
        assert conn.round_trip_time is None  # no pong yet
        conn.ping(b"\x00probe")
        assert read_frame(sock) == (0x9, b"\x00probe")
        write_frame(sock, 0xA, b"\x00probe", masked=True)
        rtt = wait_for(lambda: conn.round_trip_time)
        assert isinstance(rtt, float) and 0 <= rtt < 5
        conn.ping("é")
        assert read_frame(sock) == (0x9, "é".encode())
        conn.ping()
        assert read_frame(sock) == (0x9, b"")
        conn.ping(bytearray(b"x" * 125))
        assert read_frame(sock) == (0x9, b"x" * 125)
        with pytest.raises(petrel.InvalidArgument):
            conn.ping(b"x" * 126)
        with pytest.raises(TypeError):
            conn.ping(125)  # type: ignore[arg-type]
        sock.close()


def test_ping_interval_pings_set_the_round_trip_time_too():
    opened = []
    server = petrel.Server("127.0.0.1", 0, threads=1, ping_interval=0.1, on_open=opened.append)
    with server:
        async def run():
            async with websockets.connect(f"ws://127.0.0.1:{server.port}/"):  # answers pings itself
                deadline = time.monotonic() + 5
                while not opened or opened[0].round_trip_time is None:
                    assert time.monotonic() < deadline, "no round-trip time within 5 s"
                    await asyncio.sleep(0.02)
                assert 0 <= opened[0].round_trip_time < 5
        asyncio.run(run())


def test_an_event_stream_has_no_pings():
    opened = []
    ready = threading.Event()
    server = petrel.Server("127.0.0.1", 0, threads=1, event_stream_paths=["/events"],
                           on_open=lambda conn: (opened.append(conn), ready.set()))
    with server:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        sock.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"text/event-stream" in read_head(sock)
        assert ready.wait(5)
        with pytest.raises(petrel.InvalidArgument):
            opened[0].ping()
        assert opened[0].round_trip_time is None
        sock.close()


class PongServer:
    """A WebSocket server by hand: answers the handshake, records each ping's payload and
    answers it with a pong, until the client closes."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.pings = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        sock, _ = self.listener.accept()
        with sock:
            head = read_head(sock)
            key = [line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:")][0]
            accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
            sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            while True:
                opcode, payload = read_frame(sock)
                if opcode == 0x9:
                    self.pings.append(payload)
                    write_frame(sock, 0xA, payload, masked=False)
                elif opcode == 0x8:
                    write_frame(sock, 0x8, payload[:2], masked=False)
                    return

    def close(self):
        self.thread.join(5)
        self.listener.close()


def test_the_sync_client_pings_and_learns_the_round_trip_time():
    peer = PongServer()
    try:
        with petrel.connect(f"ws://127.0.0.1:{peer.port}/", compression=False) as ws:
            assert ws.round_trip_time is None
            ws.ping(b"one")
            rtt = wait_for(lambda: ws.round_trip_time)  # no recv() needed: the client's loop reads the pong
            assert isinstance(rtt, float) and 0 <= rtt < 5
            ws.ping("twö")
            ws.ping()
            with pytest.raises(petrel.InvalidArgument):
                ws.ping(b"x" * 126)
            ws.ping(b"x" * 125)
            wait_for(lambda: True if len(peer.pings) == 4 else None)
            ws.close()
            with pytest.raises(petrel.ConnectionClosed):
                ws.recv(timeout=5)
            with pytest.raises(petrel.ConnectionClosed):
                ws.ping()
    finally:
        peer.close()
    assert peer.pings == [b"one", "twö".encode(), b"", b"x" * 125]


def test_asyncio_both_ends_ping():
    seen = []  # what the handler saw (an exception in it would only be logged)

    async def handler(ws):
        seen.append(ws.round_trip_time)
        await ws.ping(b"from the server")
        while ws.round_trip_time is None:
            await asyncio.sleep(0.01)
        seen.append(ws.round_trip_time)
        try:
            await ws.ping(b"x" * 126)
        except petrel.PetrelError as e:
            seen.append(type(e))
        await ws.send("measured")
        await ws.wait_closed()
        try:
            await ws.ping()
        except petrel.PetrelError as e:
            seen.append(type(e))

    async def main():
        async with petrel.asyncio.serve(handler, "127.0.0.1", 0, threads=1) as server:
            async with petrel.asyncio.connect(f"ws://127.0.0.1:{server.port}/") as ws:
                assert ws.round_trip_time is None
                await ws.ping("from the client")
                while ws.round_trip_time is None:
                    await asyncio.sleep(0.01)
                rtt = ws.round_trip_time
                assert 0 <= rtt < 5
                assert await ws.recv() == "measured"
            # Released once closed; the last value stays readable, and ping raises the close.
            assert ws.round_trip_time == rtt
            with pytest.raises(petrel.ConnectionClosedOK):
                await ws.ping()
            await asyncio.sleep(0.1)

    asyncio.run(main())
    assert seen[0] is None and 0 <= seen[1] < 5
    assert seen[2:] == [petrel.InvalidArgument, petrel.ConnectionClosedOK]  # over 125 bytes; once closed
