"""Plain HTTP from Python: keep-alive (one connection, several requests), CORS for other origins'
pages, and how an event stream opens (retry, padding); checks of the arguments."""
import http.client
import socket
import time

import petrel
import pytest


def _route(request):
    return (200, "text/plain", "ok " + request.body.decode()) if request.path == "/ack" else None


def test_keep_alive_serves_several_requests_on_one_connection():
    with petrel.Server("127.0.0.1", 0, threads=1, on_http=_route) as server:
        c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        for i in range(3):
            c.request("POST", "/ack", body=str(i).encode())
            r = c.getresponse()
            assert (r.status, r.read(), r.getheader("Connection")) == (200, f"ok {i}".encode(), None)
        sock = c.sock
        c.request("POST", "/ack", body=b"last", headers={"Connection": "close"})
        r = c.getresponse()
        assert r.read() == b"ok last" and r.getheader("Connection") == "close"
        assert sock is not None  # http.client kept one socket for all four
    with petrel.Server("127.0.0.1", 0, threads=1, on_http=_route, keep_alive_timeout=0) as server:
        c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        c.request("POST", "/ack", body=b"x")
        assert c.getresponse().getheader("Connection") == "close"


def test_cors_allows_listed_origins_answers_preflights_and_refuses_others():
    server = petrel.Server("127.0.0.1", 0, threads=1, on_http=_route, event_stream_paths=["/events"],
                           cors_origins=["http://app.example"], cors_credentials=True, sse_retry=2.5, sse_padding=32)
    with server:
        c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        c.request("OPTIONS", "/ack", headers={"Origin": "http://app.example", "Access-Control-Request-Method": "POST"})
        r = c.getresponse()
        r.read()
        assert r.status == 204 and r.getheader("Access-Control-Allow-Origin") == "http://app.example"
        assert r.getheader("Access-Control-Allow-Credentials") == "true"
        c.request("POST", "/ack", body=b"1", headers={"Origin": "http://app.example"})
        r = c.getresponse()
        assert r.read() == b"ok 1" and r.getheader("Access-Control-Allow-Origin") == "http://app.example"
        c.request("POST", "/ack", body=b"2", headers={"Origin": "http://evil.example"})
        r = c.getresponse()
        assert r.status == 403 and b"not allowed" in r.read()
        s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        s.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\nOrigin: http://app.example\r\n\r\n")
        got = b""
        while b"\n\n:" not in got or not got.endswith(b"\n\n"):
            got += s.recv(4096)
        s.close()
        assert b"Access-Control-Allow-Origin: http://app.example\r\n" in got
        assert got.endswith(b"\r\n\r\nretry: 2500\n\n:" + b" " * 32 + b"\n\n")


@pytest.mark.parametrize("kwargs, message", [
    ({"keep_alive_timeout": -1}, "keep_alive_timeout"),
    ({"cors_origins": []}, "cors_origins"),
    ({"cors_credentials": True}, "cors_credentials"),
    ({"sse_padding": 70000}, "sse_padding"),
    ({"sse_retry": -1}, "sse_retry"),
])
def test_bad_arguments_are_refused_with_their_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        petrel.Server("127.0.0.1", 0, **kwargs)


def test_access_log_to_a_function_and_to_a_file(tmp_path):
    entries = []
    with petrel.Server("127.0.0.1", 0, threads=1, on_http=_route, access_log=entries.append) as server:
        c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        c.request("POST", "/ack", body=b"x")
        assert c.getresponse().read() == b"ok x"
        deadline = time.time() + 3
        while not entries and time.time() < deadline:
            time.sleep(0.01)
    e = entries[0]
    assert (e.event, e.method, e.path, e.status, e.transport) == ("request", "POST", "/ack", 200, "http")
    assert e.peer.startswith("127.0.0.1:") and e.bytes_in > 0 and e.bytes_out > 0 and abs(e.time - time.time()) < 10
    assert " request POST /ack 200 http in=" in e.line and isinstance(e, petrel.AccessLogEntry)
    log_file = tmp_path / "access.log"
    with petrel.Server("127.0.0.1", 0, threads=1, on_http=_route, access_log=log_file) as server:
        c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        c.request("GET", "/ack")
        c.getresponse().read()
    lines = log_file.read_text().splitlines()
    assert len(lines) == 1 and " request GET /ack 200 http " in lines[0]
    with pytest.raises(TypeError, match="access_log"):
        petrel.Server("127.0.0.1", 0, access_log=42)  # type: ignore[arg-type]


def test_the_real_client_from_a_proxy_protocol_header_and_a_trusted_proxy():
    import asyncio
    import websockets

    seen = []

    def route(request):
        return 200, "text/plain", request.client

    def hook(request):
        seen.append(("hook", request.client))
        return petrel.Accept()

    opened = []
    with petrel.Server("127.0.0.1", 0, threads=1, on_http=route, trusted_proxies=["127.0.0.1"],
                       forwarded_header="forwarded") as server:
        c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        c.request("GET", "/who", headers={"Forwarded": 'for="[2001:db8::17]:4711"', "X-Forwarded-For": "192.0.2.99"})
        assert c.getresponse().read() == b"[2001:db8::17]:4711"
    with petrel.Server("127.0.0.1", 0, threads=1, on_http=route, on_upgrade=hook, trusted_proxies=["127.0.0.1"],
                       on_open=lambda conn: opened.append(conn.client_address)) as server:
        c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        c.request("GET", "/who", headers={"Forwarded": 'for="[2001:db8::17]:4711"', "X-Forwarded-For": "192.0.2.99"})
        assert c.getresponse().read() == b"192.0.2.99"

        async def run():
            async with websockets.connect(f"ws://127.0.0.1:{server.port}/",
                                          additional_headers={"X-Forwarded-For": "198.51.100.20"}) as ws:
                await asyncio.sleep(0.2)
        asyncio.run(run())
    assert seen == [("hook", "198.51.100.20")] and opened == ["198.51.100.20"]
    with petrel.Server("127.0.0.1", 0, threads=1, on_http=route, proxy_protocol=True) as server:
        s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        s.sendall(b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 443\r\nGET /who HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        got = b""
        while chunk := s.recv(4096):
            got += chunk
        assert got.endswith(b"\r\n\r\n203.0.113.7:56324")


def test_heartbeat_messages_reach_a_silent_client():
    import asyncio
    import websockets

    with petrel.Server("127.0.0.1", 0, threads=1, ping_interval=0.3, heartbeat_messages=True) as server:
        async def run():
            async with websockets.connect(f"ws://127.0.0.1:{server.port}/") as ws:
                return await asyncio.wait_for(ws.recv(), 3)
        assert asyncio.run(run()) == ""
