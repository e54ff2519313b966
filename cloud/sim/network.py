"""Many paho clients on one asyncio event loop (paho's external-loop interface).

paho's `loop_start` costs a thread per client; a simulated fleet of thousands needs one thread
for all of them. Each client tells us about its socket through paho's socket callbacks:

    on_socket_open             the loop watches the socket for reads (`loop_read`)
    on_socket_register_write   ... and for writes while paho has bytes queued (`loop_write`)
    on_socket_unregister_write ... and stops watching for writes
    on_socket_close            the loop forgets the socket

and one task calls `loop_misc` on every connected client once a second (keepalive pings, and
noticing a broker that stopped answering). Everything runs on the loop's thread: clients are
only ever touched from it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import paho.mqtt.client as paho

__all__ = ["Reactor"]

log = logging.getLogger(__name__)

MISC_EVERY_S = 1.0


class Reactor:
    """Attaches paho clients to `loop`; `run_misc` is the keepalive task for all of them."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._clients: set[paho.Client] = set()

    def attach(self, client: paho.Client) -> None:
        client.on_socket_open = self._opened
        client.on_socket_close = self._closed
        client.on_socket_register_write = self._want_write
        client.on_socket_unregister_write = self._done_writing

    def _opened(self, client: paho.Client, _userdata: Any, sock: Any) -> None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 16)
        self.loop.add_reader(sock, client.loop_read)
        self._clients.add(client)

    def _closed(self, client: paho.Client, _userdata: Any, sock: Any) -> None:
        self.loop.remove_reader(sock)
        self.loop.remove_writer(sock)
        self._clients.discard(client)

    def _want_write(self, client: paho.Client, _userdata: Any, sock: Any) -> None:
        self.loop.add_writer(sock, client.loop_write)

    def _done_writing(self, _client: paho.Client, _userdata: Any, sock: Any) -> None:
        self.loop.remove_writer(sock)

    @property
    def open_sockets(self) -> int:
        return len(self._clients)

    async def run_misc(self) -> None:
        while True:
            await asyncio.sleep(MISC_EVERY_S)
            for client in list(self._clients):
                client.loop_misc()
