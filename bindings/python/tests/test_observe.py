"""Server.observe and publish(stamp_id=True): every server keeps state from a topic, and a message
carries the id the engine gave it; in-process and through a real redis-server."""
import json
import threading
import time

import pytest

import petrel


class Seen:
    def __init__(self):
        self.lock = threading.Lock()
        self.items = []

    def __call__(self, event_id, message, key):
        with self.lock:
            self.items.append((event_id, message, key))

    def wait(self, n, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.items) >= n:
                    return list(self.items)
            time.sleep(0.01)
        with self.lock:
            return list(self.items)


def test_in_process_the_observer_sees_each_stamped_publish_in_order():
    seen = Seen()
    server = petrel.Server("127.0.0.1", 0, threads=1, replay=10)
    server.observe("t", seen)
    with server:
        ids = [server.publish("t", '{"id":{{id}},"n":%d}' % n, key="k", stamp_id=True) for n in range(5)]
        assert ids == [1, 2, 3, 4, 5]
        assert seen.wait(5) == [(i, '{"id":%d,"n":%d}' % (i, i - 1), "k") for i in ids]
        with pytest.raises(ValueError):
            server.publish("t", '{"id":0}', stamp_id=True)
        with pytest.raises(petrel.PetrelError):
            server.observe("u", seen)  # after start


def test_a_server_started_later_gets_the_history_then_every_message(redis):  # noqa: F811
    a = petrel.Server("127.0.0.1", 0, threads=1, engine=redis.url, replay=100)
    with a:
        first = [a.publish("ticks", '{"id":{{id}}}', stamp_id=True) for _ in range(20)]
        seen = Seen()
        b = petrel.Server("127.0.0.1", 0, threads=1, engine=redis.url, replay=8)

        @b.observe("ticks")
        def on_tick(event_id, message, key):
            seen(event_id, message, key)

        with b:
            # The last 8 (b's replay ring) arrived during start.
            assert [e for e, _, _ in seen.wait(8, timeout=0)] == first[12:]
            later = [a.publish("ticks", '{"id":{{id}}}', stamp_id=True) for _ in range(10)]
            got = seen.wait(18)
            assert [e for e, _, _ in got] == first[12:] + later
            assert all(json.loads(m)["id"] == e for e, m, _ in got)
