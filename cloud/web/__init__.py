"""The web dashboard and its JSON API, served by `litefleet serve` at `[web] listen`.

`create_app(config)` is the ASGI app (`cloud.web.app`); `WebServer` runs it on uvicorn in a
thread of `serve`. Every SQL statement the dashboard makes is in `cloud.store.dashboard`.
"""

from cloud.web.app import create_app
from cloud.web.server import WebServer

__all__ = ["WebServer", "create_app"]
