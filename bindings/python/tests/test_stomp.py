"""STOMP from Python: stomp_paths, the on_stomp_* hooks (a CONNECT refused by login, a SUBSCRIBE
allowed onto a topic or refused, a SEND published), on_stomp_ack, Connection.is_stomp. The client
is `websockets` sending STOMP frames by hand."""
import threading

import pytest
from websockets.sync.client import connect

import petrel


def frames(ws, timeout=3.0):
    """The next STOMP frame (heart-beats skipped), as (command, headers, body)."""
    while True:
        m = ws.recv(timeout=timeout)
        if m != "\n":
            break
    head, _, rest = m.partition("\n\n")
    lines = head.split("\n")
    headers = dict(line.split(":", 1) for line in reversed(lines[1:]))  # the first of a repeated header wins
    return lines[0], headers, rest[:-1]


@pytest.fixture
def stomp_server():
    acks = []
    opened = []
    def on_connect(frame):
        return petrel.StompRefuse("unknown login") if frame.login == "mallory" else None

    def on_subscribe(frame):
        if frame.destination == "/prices" and frame.header("x-mine") == "a:b":
            assert frame.subscription == "sub-0" and frame.ack == "client" and frame.conn.is_stomp
            return "prices"
        return petrel.StompRefuse("no such destination")

    def on_send(frame):
        return "prices" if frame.destination == "/prices" else None

    server = petrel.Server(
        "127.0.0.1", 0, threads=1, stomp_paths=["/stomp"], replay=10, on_stomp_connect=on_connect,
        on_stomp_subscribe=on_subscribe, on_stomp_send=on_send,
        on_stomp_ack=lambda conn, sub, ids, negative, position: acks.append((sub, ids, negative, position)))
    server.on_open(lambda conn: opened.append(conn.is_stomp))
    server.start()
    server.acks, server.opened = acks, opened
    yield server
    server.close()


def test_subscribe_send_ack(stomp_server):
    url = f"ws://127.0.0.1:{stomp_server.port}/stomp"
    with connect(url, compression=None) as ws:
        ws.send("CONNECT\naccept-version:1.2\nlogin:alice\n\n\0")
        command, headers, _ = frames(ws)
        assert command == "CONNECTED" and headers["version"] == "1.2"
        ws.send("SUBSCRIBE\nid:sub-0\ndestination:/prices\nack:client\nx-mine:a\\cb\nreceipt:s\n\n\0")
        assert frames(ws)[:2] == ("RECEIPT", {"receipt-id": "s"})
        stomp_server.publish("prices", '{"p":1}')
        command, headers, body = frames(ws)
        assert (command, headers["message-id"], headers["ack"], body) == ("MESSAGE", "1", "1@sub-0", '{"p":1}')
        ws.send("SEND\ndestination:/prices\nreceipt:r\n\nfrom python\0")
        got = [frames(ws), frames(ws)]
        assert {g[0] for g in got} == {"RECEIPT", "MESSAGE"}
        assert next(g for g in got if g[0] == "MESSAGE")[2] == "from python"
        ws.send("ACK\nid:2@sub-0\nreceipt:a\n\n\0")
        assert frames(ws)[0] == "RECEIPT"
        assert stomp_server.acks == [("sub-0", [1, 2], False, 2)]
        ws.send("SUBSCRIBE\nid:sub-1\ndestination:/secret\n\n\0")
        command, headers, _ = frames(ws)
        assert command == "ERROR" and headers["message"] == "no such destination"
    assert stomp_server.opened == [True]


def test_refused_login_and_plain_paths(stomp_server):
    with connect(f"ws://127.0.0.1:{stomp_server.port}/stomp", compression=None) as ws:
        ws.send("CONNECT\naccept-version:1.2\nlogin:mallory\n\n\0")
        command, headers, _ = frames(ws)
        assert command == "ERROR" and headers["message"] == "unknown login"
    with connect(f"ws://127.0.0.1:{stomp_server.port}/other", compression=None):
        pass
    assert stomp_server.opened[-1] is False


def test_bad_arguments():
    with pytest.raises(ValueError):
        petrel.Server("127.0.0.1", 0, stomp_heart_beat=-1)
    with pytest.raises(petrel.InvalidArgument):
        petrel.Server("127.0.0.1", 0, stomp_paths=["no-slash"])
