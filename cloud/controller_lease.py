"""Exactly one active controller: a lease in the store, kept by a thread of its own.

Every `serve` that runs the controller (`--role all` or `--role controller`) holds or waits for
the lease `controller`. The holder renews it every third of `[rollout] lease_s`; a standby
tries as often, and takes it once the holder has not renewed it for `lease_s` (killed, frozen,
cut off from the store). The holder acts only while its last renewal is younger than
`lease_s`, so a holder cut off from the store stops before a standby can start. A clean stop
gives the lease up at once.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError

from cloud.store import StoreRefused, describe_error, open_store
from cloud.store.leases import hold, release

__all__ = ["ControllerLease"]

log = logging.getLogger(__name__)
NAME = "controller"


class ControllerLease:
    def __init__(
        self, store: object, ttl_s: float, on_acquired: Callable[[], None] | None = None
    ) -> None:
        self.store_target = store  # what `open_store` takes
        self.ttl_s = ttl_s
        self.me = f"{socket.gethostname()}:{os.getpid()}"
        self._on_acquired = on_acquired
        self._valid_until = 0.0  # monotonic
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="controller-lease", daemon=True)

    @property
    def held(self) -> bool:
        return time.monotonic() < self._valid_until

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._renew()  # the first answer before serve says it is serving
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        if self._valid_until:
            try:
                store = open_store(self.store_target)
                try:
                    release(store, NAME, self.me)
                finally:
                    store.close()
            except (SQLAlchemyError, StoreRefused) as e:
                log.warning("could not give the controller lease up: %s", describe_error(e))
        self._valid_until = 0.0

    def _renew(self) -> None:
        was = self.held
        started = time.monotonic()
        try:
            store = open_store(self.store_target)
            try:
                mine = hold(store, NAME, self.me, self.ttl_s, time.time())
            finally:
                store.close()
        except (SQLAlchemyError, StoreRefused) as e:
            log.warning("controller lease: the store did not answer: %s", describe_error(e))
            return  # what is held stays held until it expires: then this one stops acting
        if mine:
            self._valid_until = started + self.ttl_s
            if not was:
                log.info("controller lease taken (%s): this process runs the controller", self.me)
                if self._on_acquired is not None:
                    self._on_acquired()
        elif was:
            self._valid_until = 0.0
            log.warning("controller lease lost: another process runs the controller")

    def _run(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            self._renew()
