"""A machine's forwarded ports for a normal user (who can't install nftables rules): one
process per machine listens on the host ports and relays each TCP connection and each UDP
client to the machine. Started by `up` in a session of its own (it outlives `tapers`),
stopped by `halt` and `destroy` (see backend/liblxc/user_ports.py).

    python -m tapers.forwarder CONTAINER   < [[host_ip, host, protocol, guest_ip, guest], ...]

Prints `ready` once every port listens, or one line saying why one can't.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys

UDP_IDLE_SECONDS = 120  # a UDP client silent this long is forgotten
UDP_CLIENTS = 256  # at most this many at once (one socket each): a new one pushes out the oldest
BUFFER = 1 << 16


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(BUFFER):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()  # the other side is gone: so is this one


def _tcp_handler(guest_ip: str, guest: int):  # type: ignore[no-untyped-def]
    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            guest_reader, guest_writer = await asyncio.open_connection(guest_ip, guest)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(_pipe(client_reader, guest_writer), _pipe(guest_reader, client_writer))
        for writer in (client_writer, guest_writer):
            writer.close()

    return handle


class _UdpListener(asyncio.DatagramProtocol):
    """The host port: each client gets a socket of its own towards the machine, so replies
    find their way back to it."""

    def __init__(self, guest: tuple[str, int]) -> None:
        self.guest = guest
        self.clients: dict[tuple, _UdpClient] = {}
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        client = self.clients.get(addr)
        if client is None:
            if len(self.clients) >= UDP_CLIENTS:  # spoofed sources must not exhaust our files
                self.clients[next(iter(self.clients))]._forget()
            client = _UdpClient(self, addr)
            self.clients[addr] = client
            asyncio.ensure_future(client.connect())
        client.send(data)


class _UdpClient(asyncio.DatagramProtocol):
    def __init__(self, listener: _UdpListener, addr: tuple) -> None:
        self.listener, self.addr = listener, addr
        self.transport: asyncio.DatagramTransport | None = None
        self.waiting: list[bytes] = []
        self.idle: asyncio.TimerHandle | None = None

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.create_datagram_endpoint(lambda: self, remote_addr=self.listener.guest)
        except OSError:
            self.listener.clients.pop(self.addr, None)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        for data in self.waiting:
            self.transport.sendto(data)
        self.waiting.clear()

    def send(self, data: bytes) -> None:
        self._touch()
        if self.transport is None:
            self.waiting.append(data)
        else:
            self.transport.sendto(data)

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self._touch()
        if self.listener.transport is not None:
            self.listener.transport.sendto(data, self.addr)

    def _touch(self) -> None:
        if self.idle is not None:
            self.idle.cancel()
        self.idle = asyncio.get_running_loop().call_later(UDP_IDLE_SECONDS, self._forget)

    def _forget(self) -> None:
        self.listener.clients.pop(self.addr, None)
        if self.transport is not None:
            self.transport.close()


async def serve(forwards: list[list]) -> None:
    loop = asyncio.get_running_loop()
    for host_ip, host, protocol, guest_ip, guest in forwards:
        try:
            if protocol == "tcp":
                await asyncio.start_server(_tcp_handler(guest_ip, int(guest)), host_ip, int(host), reuse_address=True)
            else:
                await loop.create_datagram_endpoint(lambda g=(guest_ip, int(guest)): _UdpListener(g),
                                                    local_addr=(host_ip, int(host)))
        except OSError as exc:
            print(f"cannot listen on {host_ip}:{host}/{protocol}: {exc.strerror}", flush=True)
            return
    print("ready", flush=True)
    sys.stdout.close()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()


def main() -> None:
    forwards = json.loads(sys.stdin.read())
    asyncio.run(serve(forwards))


if __name__ == "__main__":
    main()
