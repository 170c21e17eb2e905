"""Bounded HTTP serving for the panel: how many connections at once, how long a request
may take to arrive, and internal errors reported without letting request data drive the
terminal. The routes are server.py's."""

from __future__ import annotations

import io
import socket
import sys
import threading
import time
import traceback
from http.server import ThreadingHTTPServer
from typing import Any

REQUEST_TIMEOUT = 10.0  # seconds a whole request (line, headers, body) may take to arrive
MAX_CONNECTIONS = 64  # connections served at once; more are answered 503 and closed
MAX_BODY = 64 * 1024  # bytes in a POST body
BUSY = b"the panel is busy (too many connections): try again\n"
NOT_YOURS = b"this panel answers only the user who started it (and, under sudo, the user who ran sudo)\n"


class BoundedServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: Any, request_timeout: float, max_connections: int,
                 owners: frozenset[int] | None = None) -> None:
        self.request_timeout = request_timeout
        self.owners = owners  # the users whose connections are served (None: anyone's)
        self.errors: list[str] = []  # internal errors, as reported on stderr
        self._slots = threading.BoundedSemaphore(max_connections)
        self._open = 0
        self._open_lock = threading.Lock()
        super().__init__(address, handler)

    # -- connections: a bounded number at once ------------------------------------------------

    @property
    def open_connections(self) -> int:
        return self._open

    def process_request(self, request: Any, client_address: Any) -> None:
        if self.owners is not None and peer_uid(request) not in self.owners:
            return self._refuse(request, "403 Forbidden", NOT_YOURS)
        if not self._slots.acquire(blocking=False):
            return self._refuse(request, "503 Service Unavailable", BUSY)
        self._count(+1)
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._count(-1)
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._count(-1)
            self._slots.release()

    def _count(self, change: int) -> None:
        with self._open_lock:
            self._open += change

    def _refuse(self, request: socket.socket, status: str, body: bytes) -> None:
        """An answer and the connection closed, written without waiting (this is the thread
        that accepts connections)."""
        head = (f"HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n")
        try:
            request.setblocking(False)
            request.send(head.encode() + body)
            request.recv(MAX_BODY)  # what already came: unread, closing would reset the connection
        except OSError:
            pass
        self.shutdown_request(request)

    # -- errors -------------------------------------------------------------------------------

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return  # the client went away or was too slow: nothing to tell
        self.report("a connection", traceback.format_exc())

    def report(self, what: str, details: str) -> None:
        """An internal error, on the terminal running `tapers ui` (request data in it is
        escaped: it must not drive the terminal)."""
        text = f"tapers ui: internal error while answering {what}:\n{details}"
        text = "".join(c if c.isprintable() or c == "\n" else repr(c)[1:-1] for c in text)
        self.errors.append(text)
        print(text, file=sys.stderr, flush=True)


def peer_uid(connection: socket.socket) -> int | None:
    """The user whose socket is the other end of a TCP connection over this host's loopback,
    as /proc/net/tcp lists it; None when it isn't there (closed meanwhile)."""
    import struct

    def key(address: tuple[str, int]) -> str:  # as the kernel prints it: the address as a native int
        return f"{struct.unpack('=I', socket.inet_aton(address[0]))[0]:08X}:{address[1]:04X}"

    try:
        theirs, ours = key(connection.getpeername()), key(connection.getsockname())
        with open("/proc/net/tcp") as table:
            next(table)
            for line in table:
                fields = line.split()
                if fields[1] == theirs and fields[2] == ours:
                    return int(fields[7])
    except (OSError, ValueError, IndexError):
        pass
    return None


class Arrival(io.RawIOBase):
    """The connection as the handler reads it: each request must have arrived whole within
    `limit` seconds of `restart`, however slowly its bytes trickle in."""

    def __init__(self, connection: socket.socket, limit: float) -> None:
        super().__init__()
        self.connection = connection
        self.limit = limit
        self.deadline = time.monotonic() + limit

    def restart(self) -> None:
        self.deadline = time.monotonic() + self.limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"a request must arrive within {self.limit:g} s")
        self.connection.settimeout(left)
        try:
            return self.connection.recv_into(buffer)
        finally:
            self.connection.settimeout(self.limit)  # writing the answer has its own time
