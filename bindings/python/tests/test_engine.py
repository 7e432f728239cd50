"""The Redis Streams engine from Python: two servers share a topic through a real redis-server
(Debian's package, which `make test` installs), started here on a free port and stopped at the end."""
import time

import pytest

import petrel
from conftest import free_port


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
