"""TLS from Python: a Petrel server over wss:// and https:// with the websockets library and
urllib as clients, and the Petrel client against it; certificate errors say why."""
import asyncio
import ssl
import subprocess
import urllib.request
from pathlib import Path

import pytest
import websockets

import petrel

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("certs")
    subprocess.run(["bash", str(ROOT / "Tests/TLS/make-certs.sh"), str(d)], check=True)
    return d


def test_wss_and_https_with_real_peers(certs, tmp_path):
    (tmp_path / "index.html").write_text("<p>secure</p>")
    server = petrel.Server("127.0.0.1", 0, threads=1, tls_cert=str(certs / "server.pem"), tls_key=str(certs / "server.key"),
                           tls_sni={"other.test": (str(certs / "sni.pem"), str(certs / "sni.key"))},
                           static_root=str(tmp_path), on_message=lambda conn, m: conn.send(m))
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    with server:
        async def run():
            async with websockets.connect(f"wss://localhost:{server.port}/", ssl=context) as ws:
                for message in ("hello", b"\x00" * 70000, "é" * 1000):
                    await ws.send(message)
                    assert await ws.recv() == message
        asyncio.run(run())
        with urllib.request.urlopen(f"https://localhost:{server.port}/", context=context) as r:
            assert r.read() == b"<p>secure</p>"
        with petrel.connect(f"wss://127.0.0.1:{server.port}/", tls_ca_file=str(certs / "ca.pem")) as ws:
            ws.send("over TLS")
            assert ws.recv(timeout=5) == "over TLS"
        with pytest.raises(petrel.ConnectFailed, match="hostname mismatch"):
            petrel.connect(f"wss://127.0.0.1:{server.port}/", tls_ca_file=str(certs / "ca.pem"), tls_server_name="wrong.test")
        with pytest.raises(petrel.ConnectFailed, match="certificate verify failed"):
            petrel.connect(f"wss://localhost:{server.port}/", tls_ca_file=str(certs / "ca2.pem"))
        with petrel.connect(f"wss://localhost:{server.port}/", tls_insecure_skip_verify=True) as ws:
            ws.send("unchecked")
            assert ws.recv(timeout=5) == "unchecked"
        with petrel.connect(f"wss://127.0.0.1:{server.port}/", tls_ca_file=str(certs / "ca2.pem"),
                            tls_server_name="other.test") as ws:  # SNI picks the second certificate
            ws.send("by name")
            assert ws.recv(timeout=5) == "by name"
        server.reload_tls()


def test_websockets_server_over_tls_with_the_petrel_client(certs):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(certs / "server.pem"), str(certs / "server.key"))

    async def echo(ws):
        async for m in ws:
            await ws.send(m)

    async def run():
        async with websockets.serve(echo, "127.0.0.1", 0, ssl=context) as srv:
            port = srv.sockets[0].getsockname()[1]
            loop = asyncio.get_running_loop()

            def client():
                with petrel.connect(f"wss://localhost:{port}/", tls_ca_file=str(certs / "ca.pem")) as ws:
                    ws.send("to websockets")
                    return ws.recv(timeout=5)
            assert await loop.run_in_executor(None, client) == "to websockets"
    asyncio.run(run())


def test_bad_tls_files_are_refused(certs):
    with pytest.raises(petrel.PetrelError):
        petrel.Server("127.0.0.1", 0, tls_cert=str(certs / "server.pem"), tls_key=str(certs / "missing.key")).start()


def test_a_tls_subscriber_that_stops_reading_meets_the_topic_policy(certs):
    """Encrypted output counts against the buffer limit: a wss:// subscriber that reads nothing
    is closed by the slow-consumer policy instead of growing the server's memory."""
    import socket
    import time
    server = petrel.Server("127.0.0.1", 0, threads=1, tls_cert=str(certs / "server.pem"), tls_key=str(certs / "server.key"),
                           max_backpressure=64 * 1024, slow_consumer="close", max_queued=16,
                           on_open=lambda conn: conn.subscribe("firehose"))
    with server:
        context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        raw = socket.create_connection(("127.0.0.1", server.port))
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s = context.wrap_socket(raw, server_hostname="localhost")
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        assert b"101" in s.recv(4096)
        deadline = time.time() + 10
        while server.connection_count and time.time() < deadline:
            for _ in range(50):
                server.publish("firehose", b"x" * 16384)
            time.sleep(0.01)
        assert server.connection_count == 0, "the non-reading subscriber was never closed"
        s.close()
