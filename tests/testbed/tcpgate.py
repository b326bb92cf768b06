"""A TCP gate in front of a real service (PostgreSQL, Redis): pass, down or blackholed.

Tests of "the guard's own parts fail" put a gate between the client and the real server:

    gate = TcpGate("127.0.0.1", 6379)
    gate.start()                 # listens on a free loopback port, passes traffic through
    gate.down()                  # new connections are refused, open ones are closed
    gate.blackhole()             # connections are accepted, nothing is ever answered
    gate.open()                  # back to passing traffic
    gate.stop()

``gate.port`` is the port to give the client. Only loopback addresses are used.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading

PASS, DOWN, BLACKHOLE = "pass", "down", "blackhole"


class TcpGate:
    def __init__(self, target_host: str, target_port: int, *, host: str = "127.0.0.1"):
        self.target = (target_host, target_port)
        self.host = host
        self.port = 0
        self.mode = PASS
        self.connections = 0
        self._listener: socket.socket | None = None
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> TcpGate:
        self._listen()
        self._thread = threading.Thread(target=self._accept_loop, name="tcpgate", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._close_listener()
        self._close_all()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> TcpGate:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ----------------------------------------------------------------- modes
    def open(self) -> None:
        self.mode = PASS
        if self._listener is None:
            self._listen()

    def down(self) -> None:
        """Refuse new connections (nothing listens on the port) and close the open ones."""
        self.mode = DOWN
        self._close_listener()
        self._close_all()

    def blackhole(self) -> None:
        """Accept connections and never answer; open connections stop passing data."""
        self.mode = BLACKHOLE
        if self._listener is None:
            self._listen()

    # ----------------------------------------------------------------- internals
    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(128)
        listener.settimeout(0.2)
        self.port = listener.getsockname()[1]
        self._listener = listener

    def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.close()

    def _close_all(self) -> None:
        with self._lock:
            sockets, self._open = list(self._open), set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def _track(self, *sockets: socket.socket) -> None:
        with self._lock:
            self._open.update(sockets)

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            listener = self._listener
            if listener is None:
                self._stopping.wait(0.05)
                continue
            try:
                client, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            self._track(client)
            if self.mode == BLACKHOLE:
                continue  # accepted, kept open, never answered
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            with contextlib.suppress(OSError):
                client.close()
            return
        self._track(upstream)
        selector = selectors.DefaultSelector()
        selector.register(client, selectors.EVENT_READ, upstream)
        selector.register(upstream, selectors.EVENT_READ, client)
        try:
            while not self._stopping.is_set():
                for key, _ in selector.select(timeout=0.2):
                    data = key.fileobj.recv(65536)
                    if not data:
                        return
                    if self.mode == PASS:  # blackholed mid-connection: swallowed, no answer
                        key.data.sendall(data)
        except OSError:
            return
        finally:
            selector.close()
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.close()
