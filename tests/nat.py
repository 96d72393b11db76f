"""A UDP NAT on loopback, for network-change tests.

    clients  ->  front (one port)  ->  one upstream socket per client  ->  server

Each client address gets its own upstream socket, so the server sees one
source address per client, as behind a NAT; replies to an upstream socket go
back to its client through the front port. :meth:`UdpNat.rebind` closes
every upstream socket: the next datagram of each client leaves from a new
port, so the server sees its clients' addresses change mid-session (a NAT
rebinding, or a client that moved to another network), while the clients
see nothing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Optional


@dataclass
class UdpNat:
    server: tuple[str, int]
    port: int = 0
    #: datagrams passed each way, and how many mappings were made
    to_server: int = 0
    to_clients: int = 0
    mappings: int = 0
    _up: dict[tuple[str, int], asyncio.DatagramTransport] = field(default_factory=dict)
    _front: Optional[asyncio.DatagramTransport] = None
    _pending: dict[tuple[str, int], list[bytes]] = field(default_factory=dict)

    async def start(self) -> "UdpNat":
        nat = self

        class Front(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                nat._from_client(data, addr)

        loop = asyncio.get_running_loop()
        self._front, _ = await loop.create_datagram_endpoint(Front, local_addr=("127.0.0.1", self.port))
        self.port = self._front.get_extra_info("sockname")[1]
        return self

    def _from_client(self, data: bytes, client: tuple[str, int]) -> None:
        up = self._up.get(client)
        if up is not None:
            self.to_server += 1
            up.sendto(data, self.server)
            return
        queued = self._pending.get(client)
        if queued is not None:  # its upstream socket is being opened
            queued.append(data)
            return
        self._pending[client] = [data]
        asyncio.ensure_future(self._open(client))

    async def _open(self, client: tuple[str, int]) -> None:
        nat = self

        class Up(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                if nat._front is not None and not nat._front.is_closing():
                    nat.to_clients += 1
                    nat._front.sendto(data, client)

        loop = asyncio.get_running_loop()
        up, _ = await loop.create_datagram_endpoint(Up, local_addr=("127.0.0.1", 0))
        self._up[client] = up
        self.mappings += 1
        for data in self._pending.pop(client, []):
            self.to_server += 1
            up.sendto(data, self.server)

    def rebind(self) -> int:
        """Closes every mapping (the next datagrams leave from new ports);
        returns how many there were."""
        n = len(self._up)
        for up in self._up.values():
            up.close()
        self._up.clear()
        return n

    def close(self) -> None:
        self.rebind()
        if self._front is not None:
            self._front.close()
