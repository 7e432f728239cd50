"""Plain HTTP on the server's port from Python: on_http routes, static files, event streams."""
import http.client
import socket
import time

import petrel
import pytest


def _request(port, method, target, body=None, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request(method, target, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, r.getheader("Content-Type"), data


def _events(sock, count, buf=b""):
    """Reads SSE events from a raw socket until `count` have arrived: [(id, data)]."""
    deadline = time.time() + 5
    while time.time() < deadline:
        head, _, rest = buf.partition(b"\r\n\r\n")
        # Blocks with no data (the stream's opening retry: field, comments) are not events.
        blocks = [b for b in rest.split(b"\n\n")[:-1] if b"data:" in b]
        if len(blocks) >= count:
            out = []
            for b in blocks:
                lines = b.decode().split("\n")
                ids = [int(line[4:]) for line in lines if line.startswith("id: ")]
                data = "\n".join(line[6:] for line in lines if line.startswith("data: "))
                out.append((ids[0] if ids else 0, data))
            return head, out, buf
        buf += sock.recv(65536)
    raise AssertionError(f"timed out with {buf!r}")


def test_routes_static_files_and_streams(tmp_path):
    (tmp_path / "index.html").write_text("<p>page</p>")
    seen = []

    def route(request):
        if request.path != "/ack":
            return None
        seen.append((request.method, request.query_param("client"), request.header("X-Test"), request.body))
        return 200, "application/json", '{"ok": true}'

    opened = []

    def on_open(conn):
        if conn.path != "/events":
            return
        opened.append((conn.last_event_id, conn.query_param("client")))
        with pytest_lock:
            last = server.publish_count
            if conn.last_event_id is None or not conn.subscribe_after("prices", conn.last_event_id):
                conn.send_event("snapshot", last)
                assert conn.subscribe_after("prices", last)

    import threading
    pytest_lock = threading.Lock()
    server = petrel.Server("127.0.0.1", 0, threads=1, static_root=str(tmp_path), event_stream_paths=["/events"],
                           replay=3, on_http=route, on_open=on_open)
    server.publish_count = 0
    with server:
        assert _request(server.port, "GET", "/") == (200, "text/html; charset=utf-8", b"<p>page</p>")
        assert _request(server.port, "GET", "/nothing")[0] == 404
        status, ctype, body = _request(server.port, "POST", "/ack?client=a+b", body=b"17", headers={"X-Test": "1"})
        assert (status, ctype, body) == (200, "application/json", b'{"ok": true}')
        assert seen == [("POST", "a b", "1", b"17")]

        for _ in range(5):
            with pytest_lock:
                server.publish_count = server.publish("prices", "tick")
        s = socket.create_connection(("127.0.0.1", server.port))
        s.sendall(b"GET /events?client=me HTTP/1.1\r\nHost: x\r\n\r\n")
        head, events, buf = _events(s, 1)
        assert b"text/event-stream" in head and events == [(5, "snapshot")]
        server.publish("prices", "six")
        _, events, buf = _events(s, 2, buf)
        assert events[1] == (6, "six")
        s.close()
        # Resume after 4: 5 and 6 come from the replay ring (it holds 3).
        s = socket.create_connection(("127.0.0.1", server.port))
        s.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 4\r\n\r\n")
        _, events, _ = _events(s, 2)
        assert [e[0] for e in events] == [5, 6]
        s.close()
        assert opened == [(None, "me"), (4, None)]


def test_accept_hook_authenticates_before_the_upgrade():
    import asyncio
    import websockets

    seen = []

    def hook(request):
        seen.append((request.path, request.header("Origin"), request.conn > 0))
        if request.header("Authorization") != "Bearer secret" and request.query_param("token") != "secret":
            return 401, "text/plain", "who are you?\n"
        if request.path == "/forbidden":
            return False
        return petrel.Accept(subprotocol="chat.v2", user_data={"user": "ada"})

    opened = []
    server = petrel.Server("127.0.0.1", 0, threads=1, on_upgrade=hook,
                           on_open=lambda conn: opened.append(conn.user_data),
                           on_message=lambda conn, m: conn.send(f"{conn.user_data['user']}: {m}"))
    with server:
        url = f"ws://127.0.0.1:{server.port}"

        async def run():
            with pytest.raises(websockets.InvalidStatus) as refused:
                await websockets.connect(url + "/chat")
            assert refused.value.response.status_code == 401 and b"who are you" in refused.value.response.body
            with pytest.raises(websockets.InvalidStatus) as forbidden:
                await websockets.connect(url + "/forbidden?token=secret")
            assert forbidden.value.response.status_code == 403
            async with websockets.connect(url + "/chat", additional_headers={"Authorization": "Bearer secret"},
                                          subprotocols=["chat.v1", "chat.v2"], origin="https://example.com") as ws:
                assert ws.subprotocol == "chat.v2"
                await ws.send("hi")
                assert await ws.recv() == "ada: hi"

        asyncio.run(run())
    assert opened == [{"user": "ada"}]
    assert seen[-1] == ("/chat", "https://example.com", True)
