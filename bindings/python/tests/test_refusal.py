"""A handshake the server refuses with an HTTP status: both clients raise petrel.InvalidStatus
(an InvalidHandshake) with the server's `status_code` and response `body` (read on the thread
that connected: for the asyncio client, the executor's). A connect that succeeds, or fails
another way, afterwards carries no status from before."""
import asyncio
import base64
import hashlib
import socket
import threading

import pytest

import petrel
import petrel.asyncio
from petrel import _status as S


def token_server():
    """A Python server whose accept hook wants ?token=ok, and refuses with 401 otherwise."""
    def hook(request):
        if request.query_param("token") != "ok":
            return 401, "text/plain", "token expired"
        return None
    server = petrel.Server("127.0.0.1", 0, threads=1, on_upgrade=hook, on_message=lambda conn, m: conn.send(m))
    return server


def test_the_sync_client_raises_the_status_and_body():
    with token_server() as server:
        url = f"ws://127.0.0.1:{server.port}/"
        with pytest.raises(petrel.InvalidStatus) as refused:
            petrel.connect(url + "?token=stale")
        assert isinstance(refused.value, petrel.InvalidHandshake) and refused.value.status == S.E_HANDSHAKE
        assert refused.value.status_code == 401
        assert "401" in str(refused.value)
        with petrel.connect(url + "?token=ok") as ws:  # nothing raised now
            ws.send("hi")
            assert ws.recv(timeout=5) == "hi"
        # The body as the hook gave it.
        assert refused.value.body == b"token expired"


def test_the_asyncio_client_raises_the_status_and_body():
    async def main(port):
        url = f"ws://127.0.0.1:{port}/"
        with pytest.raises(petrel.InvalidStatus) as refused:
            await petrel.asyncio.connect(url)
        assert refused.value.status_code == 401
        async with petrel.asyncio.connect(url + "?token=ok") as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
        assert refused.value.body == b"token expired"

    with token_server() as server:
        asyncio.run(main(server.port))


class OneShotServer:
    """Answers each connection with `response` (bytes, or a function of the request head)."""

    def __init__(self, response):
        self.response = response
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            with sock:
                head = b""
                while b"\r\n\r\n" not in head:
                    head += sock.recv(4096)
                sock.sendall(self.response(head) if callable(self.response) else self.response)
                try:
                    sock.recv(1)  # until the client goes
                except OSError:
                    pass

    def close(self):
        self.listener.close()


def test_a_long_binary_body_arrives_whole():
    body = bytes(range(256)) * 12  # 3 KiB, more than the first buffer
    peer = OneShotServer(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/octet-stream\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(body) + body)
    try:
        with pytest.raises(petrel.InvalidStatus) as refused:
            petrel.connect(f"ws://127.0.0.1:{peer.port}/")
        assert (refused.value.status_code, refused.value.body) == (503, body)
    finally:
        peer.close()


def test_a_refusal_without_a_body():
    peer = OneShotServer(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    try:
        with pytest.raises(petrel.InvalidStatus) as refused:
            petrel.connect(f"ws://127.0.0.1:{peer.port}/")
        assert (refused.value.status_code, refused.value.body) == (404, b"")
    finally:
        peer.close()


def test_another_handshake_failure_after_a_refusal_carries_no_status():
    def wrong_accept(head):
        return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: " + base64.b64encode(hashlib.sha1(b"wrong").digest()) + b"\r\n\r\n")
    bad = OneShotServer(wrong_accept)
    try:
        with token_server() as server:
            with pytest.raises(petrel.InvalidStatus):
                petrel.connect(f"ws://127.0.0.1:{server.port}/")
            # The same thread: this failure is not a refusal, and the 401 before is forgotten.
            with pytest.raises(petrel.InvalidHandshake) as failed:
                petrel.connect(f"ws://127.0.0.1:{bad.port}/")
            assert not isinstance(failed.value, petrel.InvalidStatus)
            with pytest.raises(petrel.ConnectFailed):
                petrel.connect(f"ws://127.0.0.1:{bad.port}/", proxy="http://127.0.0.1:1")
    finally:
        bad.close()
