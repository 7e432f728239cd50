"""STOMP 1.2 over WebSocket, as a real client (stomp.py's WSConnection) sees it, against each
target in conftest.py: RabbitMQ's Web-STOMP (the reference broker) and Petrel's stock server.

Checks what the STOMP 1.2 specification requires of a server (https://stomp.github.io/
stomp-specification-1.2.html), not implementation details: version negotiation, MESSAGE headers
in each ack mode, ACK, RECEIPT, UNSUBSCRIBE, several subscriptions on one connection,
heart-beats, and ERROR followed by a closed connection. Ticks on /topic/stock drive the MESSAGEs.

Run alone: .venv/bin/python -m pytest Tests/Stomp -q -p no:cacheprovider [-k rabbitmq|petrel]
"""
from __future__ import annotations

import json
import time

import pytest


def known_deviation(target, key: str, what: str):
    """Called when a check failed: an expected failure (xfail) where `target` is known to depart
    from the spec there (conftest.RABBITMQ_DEVIATIONS), else a plain failure."""
    if key in target.deviations:
        pytest.xfail(target.deviations[key])
    raise AssertionError(what)


def heart_beat(headers) -> tuple[int, int]:
    """The two numbers of a heart-beat header ("0,0" when it is missing, as the spec says)."""
    sx, sy = headers.get("heart-beat", "0,0").replace(" ", "").split(",")
    return int(sx), int(sy)


@pytest.mark.parametrize("accept_version", ["1.2", "1.1,1.2"])
@pytest.mark.parametrize("command", ["STOMP", "CONNECT"])
def test_connect_negotiates_1_2(target, command, accept_version):
    """CONNECT and STOMP both open a session; with 1.2 among the accepted versions the server
    answers version:1.2 (the highest both sides support) and states its heart-beat."""
    conn = target.connect(heartbeats=(10000, 10000), accept_version=accept_version,
                          with_connect_command=(command == "CONNECT"))
    sent = conn.recorder.sent[0]
    assert sent.cmd == command and sent.headers["accept-version"] == accept_version, (sent.cmd, sent.headers)
    connected = conn.recorder.all("CONNECTED")[0]
    assert connected.headers.get("version") == "1.2", connected.headers
    assert "heart-beat" in connected.headers, f"CONNECTED has no heart-beat header: {connected.headers}"
    assert all(n >= 0 for n in heart_beat(connected.headers))


@pytest.mark.parametrize("ack", ["auto", "client", "client-individual"])
def test_subscribe_receive_ack_disconnect(target, ack):
    conn = target.connect()
    rec = conn.recorder
    conn.subscribe(target.destination, id="sub-0", ack=ack)
    messages = rec.wait_messages(5, "sub-0", timeout=5)[:5]
    for m in messages:
        h = m.headers
        assert h.get("subscription") == "sub-0", h
        assert h.get("destination") == target.destination, h
        assert h.get("message-id"), h
        if ack != "auto":
            assert h.get("ack"), f"a MESSAGE in {ack} mode must carry an ack header: {h}"
        json.loads(m.frame.body)
    # Acknowledge with the ack header's value (opaque to the client), with a receipt on the last ACK
    # so a refused ACK (an ERROR) would show before the DISCONNECT.
    if ack == "client":
        conn.ack(messages[-1].headers["ack"], receipt="ack-last")  # cumulative: all up to this one
        rec.wait_receipt("ack-last")
    elif ack == "client-individual":
        for i, m in enumerate(messages):
            conn.ack(m.headers["ack"], receipt="ack-last" if i == len(messages) - 1 else None)
        rec.wait_receipt("ack-last")
    assert not rec.all("ERROR"), rec.all("ERROR")[0].frame.body
    conn.disconnect()  # stomp.py adds a receipt header of its own making
    sent = conn.recorder.sent[-1]
    assert sent.cmd == "DISCONNECT" and sent.headers.get("receipt"), sent.headers
    receipt_id = sent.headers["receipt"]
    # stomp.py closes its socket as soon as the DISCONNECT's RECEIPT arrives, and tells its
    # listeners of the close before the receipt: wait for the RECEIPT itself.
    try:
        rec.wait_receipt(receipt_id, timeout=5)
    except AssertionError:
        known_deviation(target, "disconnect-receipt", "the server closed the connection without the DISCONNECT's RECEIPT")
    assert not rec.all("ERROR"), rec.all("ERROR")[0].frame.body
    rec.wait_kind("DISCONNECTED")


def test_receipt_for_subscribe(target):
    conn = target.connect()
    conn.subscribe(target.destination, id="sub-0", receipt="subscribed-1")
    receipt = conn.recorder.wait_receipt("subscribed-1")
    assert receipt.frame.cmd == "RECEIPT"


def test_unsubscribe_stops_messages(target):
    """After the RECEIPT for an UNSUBSCRIBE no MESSAGE for that id follows, while a second
    subscription on the same connection keeps receiving (so ticks are still flowing)."""
    conn = target.connect()
    rec = conn.recorder
    conn.subscribe(target.destination, id="sub-0")
    conn.subscribe(target.destination, id="sub-1")
    rec.wait_messages(2, "sub-0")
    conn.unsubscribe("sub-0", receipt="unsubscribed")
    receipt = rec.wait_receipt("unsubscribed")
    after = rec.index_of(receipt) + 1
    # at least 0.5 s, and until sub-1 got three more ticks
    rec.wait_messages(3, "sub-1", after=after)
    left = 0.5 - (time.monotonic() - receipt.at)
    if left > 0:
        time.sleep(left)
    assert rec.messages("sub-0", after=after) == [], "MESSAGE frames for sub-0 after its UNSUBSCRIBE's RECEIPT"
    assert not rec.all("ERROR")


def test_two_subscriptions_on_one_connection(target):
    conn = target.connect()
    rec = conn.recorder
    conn.subscribe(target.destination, id="sub-a")
    conn.subscribe(target.destination, id="sub-b", receipt="both")
    rec.wait_receipt("both")
    mark = rec.mark()
    a = rec.wait_messages(3, "sub-a", after=mark)
    b = rec.wait_messages(3, "sub-b", after=mark)
    assert {m.headers.get("subscription") for m in rec.messages()} <= {"sub-a", "sub-b"}
    # Each subscription gets its own copy of a tick: once both exist, a tick goes to both.
    both = rec.wait_for(lambda: {m.frame.body for m in rec.messages("sub-a", mark)}
                        & {m.frame.body for m in rec.messages("sub-b", mark)}, 5, "a tick on both subscriptions")
    assert both and a and b


def test_server_heart_beats_while_idle(target):
    """The client asks for a server heart-beat every second (heart-beat:0,1000). The server
    must offer one (sx > 0 in CONNECTED: Petrel's requirement; the spec lets a server offer 0)
    and, as the spec requires once it does, send one at least every max(sx, 1000) ms, here
    on a connection with no subscription and so no other traffic."""
    conn = target.connect(heartbeats=(0, 1000))
    rec = conn.recorder
    connected = rec.all("CONNECTED")[0]
    sx, _sy = heart_beat(connected.headers)
    assert sx > 0, f"the server offers no heart-beats: {connected.headers}"
    period = max(sx, 1000) / 1000
    beats = rec.wait_for(lambda: (lambda h: h if len(h) >= 2 else None)(rec.all("HEARTBEAT")),
                         2.5 * period + 1, "two heart-beats")
    times = [connected.at] + [b.at for b in beats]
    gaps = [b - a for a, b in zip(times, times[1:])]
    # the spec's timing is approximate; allow half a period of slack
    assert max(gaps) <= 1.5 * period, f"heart-beat gaps {gaps} for a period of {period} s"
    assert rec.heartbeat_timeouts == 0
    assert not rec.all("MESSAGE") and not rec.all("ERROR")


def test_protocol_error_gets_error_and_close(target):
    """A SUBSCRIBE without the required destination header gets an ERROR, then the server closes
    the connection."""
    conn = target.connect()
    rec = conn.recorder
    conn.send_frame("SUBSCRIBE", {"id": "sub-bad", "ack": "auto"})
    error = rec.wait_kind("ERROR")
    assert error.frame.cmd == "ERROR"
    assert error.headers.get("message") or error.frame.body, "an ERROR should say what went wrong"
    try:
        rec.wait_kind("DISCONNECTED", timeout=3)
    except AssertionError:
        known_deviation(target, "close-after-error", "the connection stayed open after the ERROR")
