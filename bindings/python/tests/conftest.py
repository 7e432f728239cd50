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
