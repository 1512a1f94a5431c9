"""A TCP proxy in front of PostgreSQL that can be paused: connections stay open and accepted, nothing moves either
way - what a client sees of a server stopped with SIGSTOP (the kernel still accepts and acknowledges), without
stopping a server other tests share. Resumed, it forwards what was sent meanwhile, as the woken server would read it.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from typing import TYPE_CHECKING

from psycopg.conninfo import conninfo_to_dict, make_conninfo

if TYPE_CHECKING:
    from collections.abc import Iterator


class PausableProxy:
    def __init__(self, upstream_url: str) -> None:
        params = conninfo_to_dict(upstream_url)
        host, port = str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432)
        # a host that is a directory is a Unix socket's (embedded PostgreSQL listens on one only)
        self._upstream: str | tuple[str, int] = f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = make_conninfo(upstream_url, host="127.0.0.1", port=str(self._listener.getsockname()[1]))
        self._running = threading.Event()
        self._running.set()
        self._closed = False
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        self.pause()
        try:
            yield
        finally:
            self.resume()

    def close(self) -> None:
        self._closed = True
        self._running.set()
        self._listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = self._connect_upstream()
            self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), name="proxy-pump", daemon=True).start()

    def _connect_upstream(self) -> socket.socket:
        if isinstance(self._upstream, tuple):
            return socket.create_connection(self._upstream)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(self._upstream)
        return sock

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        peer = {client: upstream, upstream: client}
        with selectors.DefaultSelector() as sel:
            sel.register(client, selectors.EVENT_READ)
            sel.register(upstream, selectors.EVENT_READ)
            while not self._closed:
                self._running.wait()
                for key, _ in sel.select(timeout=0.05):
                    if not self._running.is_set():
                        break  # paused between the select and the read: the bytes wait in the kernel
                    sock: socket.socket = key.fileobj  # type: ignore[assignment]
                    try:
                        data = sock.recv(65536)
                    except OSError:
                        data = b""
                    if not data:
                        for s in (client, upstream):
                            with contextlib.suppress(OSError):
                                s.close()
                        return
                    try:
                        peer[sock].sendall(data)
                    except OSError:
                        return
