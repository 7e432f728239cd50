import os
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

import petrel


@pytest.fixture
def echo_server():
    server = petrel.Server("127.0.0.1", 0, threads=2, max_message_size=32 << 20, max_backpressure=64 << 20)

    @server.on_message
    def echo(conn, message):
        if message == "close-me":
            conn.close(4002, "requested")
        else:
            conn.send(message)

    server.start()
    yield server
    server.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Redis:
    def __init__(self):
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (make test installs Debian's redis-server)")
        self.port = free_port()
        self.folder = tempfile.mkdtemp(prefix="petrel-redis-")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.folder, "--logfile", os.path.join(self.folder, "redis.log")])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not answer within 10 s")

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}"

    def stop(self):
        self.process.kill()
        self.process.wait(10)
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def redis():
    r = Redis()
    yield r
    r.stop()
