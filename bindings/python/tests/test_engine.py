"""The Redis Streams engine from Python: two servers share a topic through a real redis-server
(Debian's package, which `make test` installs), started here on a free port and stopped at the end."""
import os
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

import petrel


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


def node(url, **kw):
    server = petrel.Server("127.0.0.1", 0, threads=1, engine=url, replay=100, **kw)
    server.on_open(lambda conn: conn.subscribe("t"))
    return server


def test_a_message_published_on_one_server_reaches_the_subscribers_of_the_other(redis):
    with node(redis.url) as a, node(redis.url) as b:
        on_a = petrel.connect(f"ws://127.0.0.1:{a.port}/", compression=False)
        on_b = petrel.connect(f"ws://127.0.0.1:{b.port}/", compression=False)
        time.sleep(0.2)  # both subscriptions are made on the loops
        ids = [(a if i % 2 else b).publish("t", f"m{i}") for i in range(100)]
        # One history: contiguous sequences under one epoch (bits 40 and up).
        assert [i - ids[0] for i in ids] == list(range(100))
        assert ids[0] >> 40 >= 1 and ids[0] & ((1 << 40) - 1) == 1
        assert ids[-1] < 1 << 53, "ids stay exact in JavaScript"
        for client in (on_a, on_b):
            assert [client.recv(timeout=10) for _ in range(100)] == [f"m{i}" for i in range(100)]
            client.destroy()


def test_a_publish_while_redis_is_down_raises_engine_unavailable(redis):
    with node(redis.url) as a:
        a.publish("t", "before")
        redis.stop()
        with pytest.raises(petrel.EngineUnavailable):
            a.publish("t", "lost")


def test_a_server_whose_redis_cannot_be_reached_does_not_start():
    server = node(f"redis://127.0.0.1:{free_port()}")
    with pytest.raises(petrel.EngineUnavailable):
        server.start()
    server.close()


def test_bad_engine_urls_are_refused():
    for bad in ("http://x", "redis://h:0", "relative/path"):
        with pytest.raises(petrel.PetrelError):
            petrel.Server("127.0.0.1", 0, engine=bad)
    with pytest.raises(TypeError):
        petrel.Server("127.0.0.1", 0, engine=6379)
