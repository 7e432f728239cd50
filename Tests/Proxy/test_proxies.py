"""The Petrel client through real proxies: tinyproxy (HTTP CONNECT, with and without Basic auth,
and behind a socat TLS front as an https:// proxy) and dante (SOCKS5), to plain and TLS Petrel
servers; and every refusal reported with its status. A small SOCKS5 server in this file covers
username/password authentication (dante checks system accounts).

Run by tools/test.sh (which installs tinyproxy, dante-server and socat); uses the Python bindings.
"""
from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

import petrel

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen, what: str) -> None:
    for _ in range(100):
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{what} did not listen on {port}")


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = Path(os.environ.get("PETREL_TEST_CERTS") or tmp_path_factory.mktemp("certs"))
    subprocess.run(["bash", str(ROOT / "Tests/TLS/make-certs.sh"), str(d)], check=True)
    return d


@pytest.fixture(scope="module")
def targets(certs):
    """A plain and a TLS echo server: (ws port, wss port)."""
    plain = petrel.Server("127.0.0.1", 0, threads=1, on_message=lambda c, m: c.send(m)).start()
    secure = petrel.Server("127.0.0.1", 0, threads=1, on_message=lambda c, m: c.send(m),
                           tls_cert=str(certs / "server.pem"), tls_key=str(certs / "server.key")).start()
    yield plain.port, secure.port
    plain.close()
    secure.close()


@pytest.fixture(scope="module")
def procs():
    started = []
    yield started
    for p in started:
        p.terminate()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()


def tinyproxy(tmp: Path, procs, extra: str = "") -> int:
    port = free_port()
    conf = tmp / f"tinyproxy-{port}.conf"
    conf.write_text(f"Port {port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 50\nAllow 127.0.0.1\n"
                    f"DisableViaHeader Yes\nLogLevel Info\nLogFile \"{tmp}/tinyproxy-{port}.log\"\n"
                    f"PidFile \"{tmp}/tinyproxy-{port}.pid\"\n{extra}")
    p = subprocess.Popen(["tinyproxy", "-d", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(p)
    wait_listening(port, p, "tinyproxy")
    return port


@pytest.fixture(scope="module")
def proxies(tmp_path_factory, procs, certs):
    tmp = tmp_path_factory.mktemp("proxies")
    open_proxy = tinyproxy(tmp, procs)
    auth_proxy = tinyproxy(tmp, procs, "BasicAuth ada s3cret\n")
    port_443_only = tinyproxy(tmp, procs, "ConnectPort 443\n")
    # An https:// proxy: socat terminates TLS (the test CA's certificate for localhost) in front
    # of the open tinyproxy.
    https_port = free_port()
    p = subprocess.Popen(["socat", f"OPENSSL-LISTEN:{https_port},bind=127.0.0.1,reuseaddr,fork,verify=0,"
                          f"cert={certs / 'server.pem'},key={certs / 'server.key'}", f"TCP:127.0.0.1:{open_proxy}"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(p)
    wait_listening(https_port, p, "socat TLS front")
    socks_port = free_port()
    conf = tmp / "danted.conf"
    conf.write_text(f"logoutput: {tmp}/danted.log\ninternal: 127.0.0.1 port = {socks_port}\nexternal: 127.0.0.1\n"
                    "clientmethod: none\nsocksmethod: none\nuser.privileged: root\nuser.unprivileged: nobody\n"
                    "client pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }\n"
                    "socks pass { from: 127.0.0.0/8 to: 0.0.0.0/0 command: connect }\n")
    p = subprocess.Popen(["danted", "-f", str(conf), "-N", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(p)
    wait_listening(socks_port, p, "danted")
    return {"http": open_proxy, "auth": auth_proxy, "443": port_443_only, "https": https_port, "socks": socks_port}


def echo(url: str, **kw) -> str:
    with petrel.connect(url, **kw) as ws:
        ws.send("through the proxy")
        return ws.recv(timeout=5)


def test_http_connect_proxy(targets, proxies, certs):
    ws_port, wss_port = targets
    proxy = f"http://127.0.0.1:{proxies['http']}"
    assert echo(f"ws://127.0.0.1:{ws_port}/", proxy=proxy) == "through the proxy"
    assert echo(f"wss://localhost:{wss_port}/", proxy=proxy, tls_ca_file=str(certs / "ca.pem")) == "through the proxy"


def test_http_connect_proxy_with_basic_auth(targets, proxies, certs):
    _, wss_port = targets
    url = f"wss://localhost:{wss_port}/"
    ok = f"http://ada:s3cret@127.0.0.1:{proxies['auth']}"
    assert echo(url, proxy=ok, tls_ca_file=str(certs / "ca.pem")) == "through the proxy"
    with pytest.raises(petrel.ConnectFailed, match="CONNECT refused: 407"):
        echo(url, proxy=f"http://127.0.0.1:{proxies['auth']}", tls_ca_file=str(certs / "ca.pem"))
    # tinyproxy answers wrong credentials with 401 (and missing ones with 407): the status is passed on.
    with pytest.raises(petrel.ConnectFailed, match="CONNECT refused: 40[17]"):
        echo(url, proxy=f"http://ada:wrong@127.0.0.1:{proxies['auth']}", tls_ca_file=str(certs / "ca.pem"))


def test_http_proxy_refusals_carry_the_status(targets, proxies):
    ws_port, _ = targets
    with pytest.raises(petrel.ConnectFailed, match="CONNECT refused: 403"):
        echo(f"ws://127.0.0.1:{ws_port}/", proxy=f"http://127.0.0.1:{proxies['443']}")
    closed = free_port()
    with pytest.raises(petrel.ConnectFailed, match=r"CONNECT refused: 5\d\d"):
        echo(f"ws://127.0.0.1:{closed}/", proxy=f"http://127.0.0.1:{proxies['http']}")


def test_https_proxy_then_tls_inside_the_tunnel(targets, proxies, certs):
    ws_port, wss_port = targets
    proxy = f"https://localhost:{proxies['https']}"
    ca = str(certs / "ca.pem")
    assert echo(f"wss://localhost:{wss_port}/", proxy=proxy, tls_ca_file=ca) == "through the proxy"
    assert echo(f"ws://127.0.0.1:{ws_port}/", proxy=proxy, tls_ca_file=ca) == "through the proxy"
    # The proxy's certificate is checked too.
    with pytest.raises(petrel.ConnectFailed, match="certificate verify failed"):
        echo(f"ws://127.0.0.1:{ws_port}/", proxy=proxy, tls_ca_file=str(certs / "ca2.pem"))


def test_socks5_proxy_resolves_names_remotely(targets, proxies, certs):
    ws_port, wss_port = targets
    proxy = f"socks5://127.0.0.1:{proxies['socks']}"
    assert echo(f"ws://localhost:{ws_port}/", proxy=proxy) == "through the proxy"
    assert echo(f"wss://localhost:{wss_port}/", proxy=proxy, tls_ca_file=str(certs / "ca.pem")) == "through the proxy"
    with pytest.raises(petrel.ConnectFailed, match="SOCKS5 CONNECT refused"):
        echo(f"ws://127.0.0.1:{free_port()}/", proxy=proxy)


class FakeSocks5:
    """A SOCKS5 server that requires ada/s3cret (RFC 1929) and then relays, on its own thread."""

    def __init__(self) -> None:
        self.port = free_port()
        self.seen_names: list[str] = []
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        ready.wait(5)

    def _run(self, ready):
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", self.port))
        ready.set()
        self.loop.run_forever()
        server.close()

    async def _client(self, r, w):
        try:
            head = await r.readexactly(2)
            methods = await r.readexactly(head[1])
            if 2 not in methods:
                w.write(b"\x05\xff")
                return
            w.write(b"\x05\x02")
            await r.readexactly(1)
            user = await r.readexactly((await r.readexactly(1))[0])
            password = await r.readexactly((await r.readexactly(1))[0])
            if (user, password) != (b"ada", b"s3cret"):
                w.write(b"\x01\x01")
                return
            w.write(b"\x01\x00")
            ver, cmd, _, atyp = await r.readexactly(4)
            assert (ver, cmd, atyp) == (5, 1, 3), "CONNECT by name"
            name = (await r.readexactly((await r.readexactly(1))[0])).decode()
            port = int.from_bytes(await r.readexactly(2), "big")
            self.seen_names.append(name)
            ur, uw = await asyncio.open_connection(name, port)
            w.write(b"\x05\x00\x00\x01\x7f\x00\x00\x01" + port.to_bytes(2, "big"))

            async def pipe(a, b):
                while data := await a.read(65536):
                    b.write(data)
                    await b.drain()
                b.close()
            await asyncio.gather(pipe(r, uw), pipe(ur, w))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            w.close()


def test_socks5_username_and_password(targets):
    ws_port, _ = targets
    fake = FakeSocks5()
    assert echo(f"ws://localhost:{ws_port}/", proxy=f"socks5://ada:s3cret@127.0.0.1:{fake.port}") == "through the proxy"
    assert fake.seen_names == ["localhost"]
    with pytest.raises(petrel.ConnectFailed, match="SOCKS5 authentication failed"):
        echo(f"ws://localhost:{ws_port}/", proxy=f"socks5://ada:wrong@127.0.0.1:{fake.port}")
    with pytest.raises(petrel.ConnectFailed, match="accepts none of our authentication methods"):
        echo(f"ws://localhost:{ws_port}/", proxy=f"socks5://127.0.0.1:{fake.port}")


def test_proxy_from_the_environment_and_no_proxy(targets, proxies, monkeypatch):
    ws_port, _ = targets
    # The auth-requiring proxy proves the proxy was used: without credentials it answers 407.
    monkeypatch.setenv("ws_proxy", f"http://127.0.0.1:{proxies['auth']}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with pytest.raises(petrel.ConnectFailed, match="407"):
        echo(f"ws://127.0.0.1:{ws_port}/", proxy_from_environment=True)
    assert echo(f"ws://127.0.0.1:{ws_port}/") == "through the proxy"  # not asked: direct
    monkeypatch.setenv("NO_PROXY", "example.com, 127.0.0.1")
    assert echo(f"ws://127.0.0.1:{ws_port}/", proxy_from_environment=True) == "through the proxy"


def test_bad_proxy_urls_are_refused(targets):
    ws_port, _ = targets
    for bad in ("ftp://x:1", "http://", "socks5://host:notaport", "http://host:1/path"):
        with pytest.raises(petrel.PetrelError):
            echo(f"ws://127.0.0.1:{ws_port}/", proxy=bad)
