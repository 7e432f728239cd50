"""A TCP proxy that makes the network hostile, for the fault tests (Debian has no toxiproxy).

One listening socket on 127.0.0.1; each accepted connection is forwarded to the target through
two pumps (upstream, downstream), each a reader thread and a writer thread with a queue between
them, so that what a fault holds back never stops the other direction. The faults, settable at
any moment and applied to bytes not yet forwarded:

- ``latency``: seconds added to every byte's trip (each chunk leaves ``latency`` after it came);
- ``bandwidth``: bytes per second per direction and connection (None: no cap); with a cap the
  proxy's socket to the target has a fixed 64 KiB receive buffer;
- ``chunking``: ``None`` (as read), ``"one"`` (one byte per send, TCP_NODELAY on) or ``"random"``
  (sends of 1 to 64 bytes);
- ``stall(seconds)``: nothing is forwarded either way for that long, then all of it is;
- ``reset_after(n)``: once ``n`` more bytes have gone downstream (to the client) on a connection,
  both of its sockets are closed with a reset: the cut lands inside whatever frame was passing;
- ``black_hole``: new connections are accepted and then never forwarded nor answered; set on
  ``partition()`` for the open ones too (the peer sees silence, not a close);
- ``cut()``: resets every open connection now.

``FaultProxy(target_port)`` starts at once; ``.port`` is where to connect; ``.close()`` stops
it and resets what is open. Run as a script for a manual test:
``python faultproxy.py TARGET_PORT [--latency 0.05] [--chunking one]``.
"""
from __future__ import annotations

import argparse
import collections
import random
import select
import socket
import threading
import time


def _reset(sock: socket.socket) -> None:
    """Closes with a reset (SO_LINGER 0), whatever is unread or unsent."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class _Link:
    """One proxied connection: the client's socket and the target's."""

    def __init__(self, proxy: FaultProxy, client: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.server: socket.socket | None = None
        self.lock = threading.Condition()
        self.closed = False
        self.silent = proxy.black_hole
        self.reset_budget: int | None = None
        self.downstream_bytes = 0

    def start(self) -> None:
        threading.Thread(target=self._run, name="fault-link", daemon=True).start()

    def _run(self) -> None:
        if self.silent:
            # Accepted, then silence: what comes is read and dropped, nothing is answered.
            self._drain(self.client)
            return
        try:
            self.server = socket.socket()
            if self.proxy.bandwidth is not None:
                # A fixed receive buffer (no autotuning, which could let the kernel take megabytes
                # on the proxy's behalf): the target feels the cap as a slow reader would make it.
                self.server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            self.server.settimeout(5)
            self.server.connect(("127.0.0.1", self.proxy.target_port))
            self.server.settimeout(None)
        except OSError:
            self.kill()
            return
        for s in (self.client, self.server):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        up = _Pump(self, self.client, self.server, downstream=False)
        down = _Pump(self, self.server, self.client, downstream=True)
        up.start()
        down.start()

    def _drain(self, sock: socket.socket) -> None:
        try:
            while not self.closed:
                if select.select([sock], [], [], 0.05)[0] and not sock.recv(65536):
                    return
        except (OSError, ValueError):
            pass

    def kill(self) -> None:
        """Resets both sockets (once)."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            self.lock.notify_all()
        _reset(self.client)
        if self.server is not None:
            _reset(self.server)
        self.proxy._forget(self)

    def finish(self, sock: socket.socket) -> None:
        """The reader of `sock`'s peer saw an orderly end: pass it on as a FIN."""
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass


class _Pump:
    """One direction of a link: a reader that queues what it reads, stamped with when it may
    leave, and a writer that sends it as the faults allow."""

    # Bytes read and not yet forwarded, at most: beyond it the reader waits (backpressure).
    QUEUE_LIMIT = 256 * 1024

    def __init__(self, link: _Link, source: socket.socket, sink: socket.socket, downstream: bool) -> None:
        self.link = link
        self.source = source
        self.sink = sink
        self.downstream = downstream
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self.queued = 0
        self.ended = False

    def start(self) -> None:
        threading.Thread(target=self._read, name="fault-read", daemon=True).start()
        threading.Thread(target=self._write, name="fault-write", daemon=True).start()

    def _read(self) -> None:
        proxy = self.link.proxy
        while True:
            # Held (silent, stalled) or full: read no more, so that the sender's TCP window fills
            # as it would behind a real hole or a slow link.
            with self.link.lock:
                while not self.link.closed and (self.link.silent or proxy._stalled_until > time.monotonic()
                                                or self.queued >= _Pump.QUEUE_LIMIT):
                    self.link.lock.wait(0.05)
                if self.link.closed:
                    return
            # Waits of at most 50 ms, never a blocking recv: a thread inside recv holds the socket,
            # and a close from another thread would send its reset only when the recv returned.
            try:
                if not select.select([self.source], [], [], 0.05)[0]:
                    continue
                data = self.source.recv(65536)
            except (OSError, ValueError):
                data = b""
            with self.link.lock:
                if self.link.closed:
                    return
                if not data:
                    self.ended = True
                else:
                    self.queue.append((time.monotonic() + self.link.proxy.latency, data))
                    self.queued += len(data)
                self.link.lock.notify_all()
            if not data:
                return

    def _next_piece(self) -> bytes | None:
        """Waits for bytes that may leave now; None when the link closed or the source ended
        with everything sent."""
        proxy = self.link.proxy
        with self.link.lock:
            while True:
                if self.link.closed:
                    return None
                now = time.monotonic()
                held = self.link.silent or proxy._stalled_until > now
                if self.queue and not held and self.queue[0][0] <= now:
                    due, data = self.queue.popleft()
                    size = self._piece_size(len(data))
                    if size < len(data):
                        self.queue.appendleft((due, data[size:]))
                    self.queued -= size
                    self.link.lock.notify_all()
                    return data[:size]
                if not self.queue and self.ended and not held:
                    return None
                wait = 0.05
                if self.queue and not held:
                    wait = max(0.0, min(wait, self.queue[0][0] - now))
                self.link.lock.wait(wait)

    def _piece_size(self, available: int) -> int:
        proxy = self.link.proxy
        size = available
        if proxy.bandwidth is not None:
            size = min(size, max(1, int(proxy.bandwidth / 50)))
        if self.downstream and self.link.reset_budget is not None:
            size = min(size, max(1, self.link.reset_budget - self.link.downstream_bytes))
        return min(size, available)

    def _send(self, piece: bytes) -> bool:
        """Sends all of `piece` in waits of at most 50 ms (see `_read`); False if the link closed
        or the socket failed."""
        view = memoryview(piece)
        chunking = self.link.proxy.chunking
        while view:
            if self.link.closed:
                return False
            # One send per byte, or per 1 to 64 bytes: with TCP_NODELAY on, each its own segment.
            size = 1 if chunking == "one" else random.randint(1, 64) if chunking == "random" else len(view)
            try:
                view = view[self.sink.send(view[:size], socket.MSG_DONTWAIT):]
            except BlockingIOError:
                try:
                    select.select([], [self.sink], [], 0.05)
                except (OSError, ValueError):
                    return False
                continue
            except (OSError, ValueError):
                return False
        return True

    def _write(self) -> None:
        while True:
            piece = self._next_piece()
            if piece is None:
                if not self.link.closed:
                    self.link.finish(self.sink)
                return
            if not self._send(piece):
                self.link.kill()
                return
            proxy = self.link.proxy
            if self.downstream:
                with self.link.lock:
                    self.link.downstream_bytes += len(piece)
                    cut = self.link.reset_budget is not None and self.link.downstream_bytes >= self.link.reset_budget
                if cut:
                    self.link.kill()
                    return
            if proxy.bandwidth is not None:
                time.sleep(len(piece) / proxy.bandwidth)


class FaultProxy:
    """See the module's text."""

    def __init__(self, target_port: int, *, latency: float = 0.0, bandwidth: float | None = None,
                 chunking: str | None = None) -> None:
        self.target_port = target_port
        self.latency = latency
        self.bandwidth = bandwidth
        self.chunking = chunking
        self.black_hole = False
        self._stalled_until = 0.0
        self._links: set[_Link] = set()
        self._links_lock = threading.Lock()
        self.accepted = 0
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(1024)
        self.port: int = self._listener.getsockname()[1]
        self._open = True
        threading.Thread(target=self._accept, name="fault-accept", daemon=True).start()

    def _accept(self) -> None:
        while self._open:
            try:
                if not select.select([self._listener], [], [], 0.05)[0]:
                    continue
                client, _ = self._listener.accept()
            except (OSError, ValueError):
                return
            link = _Link(self, client)
            with self._links_lock:
                if not self._open:
                    _reset(client)
                    return
                self._links.add(link)
                self.accepted += 1
            link.start()

    def _forget(self, link: _Link) -> None:
        with self._links_lock:
            self._links.discard(link)

    def _each(self) -> list[_Link]:
        with self._links_lock:
            return list(self._links)

    @property
    def open_links(self) -> int:
        return len(self._each())

    def stall(self, seconds: float) -> None:
        """Nothing is forwarded, either way, for `seconds`; then everything held is."""
        self._stalled_until = time.monotonic() + seconds
        for link in self._each():
            with link.lock:
                link.lock.notify_all()

    def reset_after(self, n: int) -> None:
        """Each open connection is reset once `n` more bytes have gone to its client."""
        for link in self._each():
            with link.lock:
                link.reset_budget = link.downstream_bytes + n

    def partition(self) -> None:
        """From now on nothing is forwarded on the open connections, and new ones are held
        silent too (`black_hole`): no byte, no close, no reset."""
        self.black_hole = True
        for link in self._each():
            with link.lock:
                link.silent = True
                link.lock.notify_all()

    def heal(self) -> None:
        """Ends a partition for new connections (open ones stay silent: TCP state is lost)."""
        self.black_hole = False

    def cut(self) -> None:
        """Resets every open connection now."""
        for link in self._each():
            link.kill()

    def close(self) -> None:
        self._open = False
        try:
            self._listener.close()
        except OSError:
            pass
        self.cut()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="A TCP proxy that delays, throttles, chunks and cuts.")
    parser.add_argument("target_port", type=int)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to each byte's trip")
    parser.add_argument("--bandwidth", type=float, default=None, help="bytes per second per direction")
    parser.add_argument("--chunking", choices=["one", "random"], default=None)
    args = parser.parse_args()
    proxy = FaultProxy(args.target_port, latency=args.latency, bandwidth=args.bandwidth, chunking=args.chunking)
    print(f"127.0.0.1:{proxy.port} -> 127.0.0.1:{args.target_port}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        proxy.close()


if __name__ == "__main__":
    main()
