"""A small TCP fault proxy for the suite: sits between the service and Redis (or Genesys).

Faults: ``drop_reply_to(pattern)`` forwards the next request containing ``pattern`` but
swallows the server's reply and cuts the connection, so the client cannot know whether its
command ran; ``delay_s`` delays every forwarded chunk; ``blackhole`` accepts and reads but
never answers; ``reset_all`` cuts every open connection.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from typing import Final

_BUF: Final = 65536


class FaultProxy:
    """Loopback proxy from a free port to ``target_port``; start() it, close() it."""

    def __init__(self, target_port: int) -> None:
        self._target = ("127.0.0.1", target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._drop_pattern: bytes | None = None
        self.dropped = 0
        self.delay_s = 0.0
        self.blackhole = False
        self._sockets: list[socket.socket] = []
        self._closed = threading.Event()

    def start(self) -> FaultProxy:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def drop_reply_to(self, pattern: bytes) -> None:
        """Arm: the next request containing ``pattern`` runs, but its reply never arrives."""
        with self._lock:
            self._drop_pattern = pattern

    def reset_all(self) -> None:
        """Cut every open connection."""
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()
            self._sockets.clear()

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        self.reset_all()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._sockets += [client, server]
            doomed = threading.Event()
            threading.Thread(target=self._upstream, args=(client, server, doomed),
                             daemon=True).start()
            threading.Thread(target=self._downstream, args=(server, client, doomed),
                             daemon=True).start()

    def _upstream(self, client: socket.socket, server: socket.socket,
                  doomed: threading.Event) -> None:
        def forward(data: bytes) -> bool:
            if self.blackhole:
                return False
            with self._lock:
                if self._drop_pattern is not None and self._drop_pattern in data:
                    self._drop_pattern = None
                    self.dropped += 1
                    doomed.set()
            return True

        self._pump(client, server, forward)

    def _downstream(self, server: socket.socket, client: socket.socket,
                    doomed: threading.Event) -> None:
        def forward(data: bytes) -> bool:
            if doomed.is_set():
                # The command ran on the server; its reply is lost on the way back.
                raise OSError("reply dropped")
            return True

        self._pump(server, client, forward)

    def _pump(self, source: socket.socket, sink: socket.socket,
              forward: Callable[[bytes], bool]) -> None:
        """Copy ``source`` to ``sink`` (delayed if asked) while ``forward`` lets each chunk
        through; close both ends when either side stops."""
        try:
            while data := source.recv(_BUF):
                if not forward(data):
                    continue
                if self.delay_s:
                    threading.Event().wait(self.delay_s)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.close()
