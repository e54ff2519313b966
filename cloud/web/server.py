"""The dashboard on uvicorn, in a thread of `litefleet serve`, with a clean stop."""

from __future__ import annotations

import logging
import threading
import time

import uvicorn
from fastapi import FastAPI

from shared.errors import Unavailable

__all__ = ["WebServer"]

log = logging.getLogger(__name__)


class WebServer:
    """`start()` returns once the port is bound (port 0 picks a free one: see `.port`)."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        self.host = host
        self.port = port
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            proxy_headers=False,
            server_header=False,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="web", daemon=True)

    def start(self, timeout: float = 15.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise Unavailable(
                    f"the dashboard could not listen on {self.host}:{self.port} "
                    "(in use? see [web] listen)"
                )
            if time.monotonic() > deadline:
                raise Unavailable(f"the dashboard did not start on {self.host}:{self.port}")
            time.sleep(0.02)
        sockets = [s for server in self._server.servers for s in server.sockets]
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        log.info("dashboard on http://%s:%s/", self.host, self.port)

    @property
    def serving(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
