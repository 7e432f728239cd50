"""additional_headers: extra request headers reach the server (sync and asyncio clients); a value
that would add a line, and the names the handshake writes itself, are refused."""
import asyncio
import threading

import pytest
import websockets

import petrel
import petrel.asyncio


def test_the_headers_reach_a_websockets_server_from_both_clients():
    seen = []

    async def handler(ws):
        seen.append((ws.request.headers.get_all("X-Token"), ws.request.headers.get("Authorization")))
        await ws.send("ok")

    async def main():
        async with websockets.serve(handler, "127.0.0.1", 0) as server:
            url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
            async with petrel.asyncio.connect(url, additional_headers={"Authorization": "Bearer t0k"}) as ws:
                assert await ws.recv() == "ok"
            # The sync client, from another thread (it blocks).
            done = threading.Event()

            def sync_client():
                with petrel.connect(url, additional_headers=[("X-Token", "a"), ("X-Token", "b c")]) as c:
                    assert c.recv(timeout=5) == "ok"
                done.set()
            await asyncio.get_running_loop().run_in_executor(None, sync_client)
            assert done.is_set()

    asyncio.run(main())
    assert seen == [([], "Bearer t0k"), (["a", "b c"], None)]


@pytest.mark.parametrize("headers, error", [
    ({"X-A": "1\r\nX-B: 2"}, ValueError),           # a second line, smuggled in a value
    ({"X-A\n": "1"}, ValueError),
    ({"X:A": "1"}, ValueError),
    ({"Host": "evil.example"}, petrel.PetrelError),  # written by the handshake
    ({"Sec-WebSocket-Key": "x"}, petrel.PetrelError),
    ({"Bad Name": "1"}, petrel.PetrelError),          # not a token
    ({"X-A": "\x01"}, petrel.PetrelError),            # a control character
])
def test_bad_headers_are_refused_before_connecting(headers, error, echo_server):
    with pytest.raises(error) as caught:
        petrel.connect(f"ws://127.0.0.1:{echo_server.port}/", additional_headers=headers)
    if error is petrel.PetrelError:
        assert "header" in str(caught.value)
