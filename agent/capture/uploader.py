"""Uploading captured samples: ask the cloud for upload URLs, PUT each file, delete it.

The device holds no cloud credential. For the files waiting in the `SampleStore` it publishes
a `litefleet.capture/1` request on `devices/{id}/capture` (at most `BATCH` files); the cloud
answers with a signed `upload` command on `cmd` whose `args.urls` maps each file name to a URL
it may PUT to until the command expires (an S3 presigned PUT URL, or a grant `serve` checks
for a file store). A file is deleted once the store answered 2xx; a failed PUT keeps the file
and its URL is forgotten, so the next request asks again (every `retry_s` while files wait).
Nothing is published while no sample waits: with capture off nothing leaves the device.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from agent.capture.store import SampleStore
from shared.errors import MalformedDocument
from shared.messages import CaptureRequest, Command, encode_message
from shared.samples import SAMPLE_FILE

__all__ = ["BATCH", "SampleUploader", "upload_urls"]

log = logging.getLogger(__name__)

BATCH = 16  # files named in one request
MAX_URL_CHARS = 4096
_URL = re.compile(r"^https?://[\x21-\x7e]+$")


def upload_urls(command: Command) -> dict[str, str]:
    """The verified `upload` command's URLs, bounded; MalformedDocument when they are not."""
    urls = command.args.get("urls")
    if not isinstance(urls, dict) or len(urls) > BATCH:
        raise MalformedDocument(f"expected at most {BATCH} file -> URL entries", "signed.args.urls")
    out = {}
    for name, url in urls.items():
        if not isinstance(name, str) or not SAMPLE_FILE.match(name):
            raise MalformedDocument("not a sample file name", f"signed.args.urls.{name}")
        if not isinstance(url, str) or len(url) > MAX_URL_CHARS or not _URL.match(url):
            raise MalformedDocument("not an http(s) URL", f"signed.args.urls.{name}")
        out[name] = url
    return out


class SampleUploader:
    def __init__(
        self,
        store: SampleStore,
        device_id: str,
        publish: Callable[[bytes], Any],
        stop: threading.Event,
        retry_s: float = 30.0,
        timeout_s: float = 30.0,
    ) -> None:
        self.store = store
        self.device_id = device_id
        self._publish = publish
        self._stop = stop
        self.retry_s = retry_s
        self.timeout_s = timeout_s
        self._urls: dict[str, str] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._asked = float("-inf")
        self.uploaded = 0
        self.failed = 0
        self.requests = 0
        self._thread = threading.Thread(target=self._run, name="sample-upload", daemon=True)

    def grant(self, command: Command) -> None:
        """An `upload` command (verified by the command gate): remember its URLs."""
        urls = upload_urls(command)
        with self._lock:
            self._urls.update(urls)
        self._wake.set()

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float = 5.0) -> None:
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:
                log.exception("sample upload step failed")
            self._wake.wait(min(self.retry_s, 5.0))
            self._wake.clear()

    def step(self) -> int:
        """Upload what has a URL; ask for URLs for the rest (at most every `retry_s`)."""
        waiting = self.store.waiting()
        done = 0
        missing = []
        for path in waiting:
            with self._lock:
                url = self._urls.pop(path.name, None)
            if url is None:
                missing.append(path)
                continue
            if self._put(path.name, path.read_bytes(), url):
                self.store.remove(path.name)
                done += 1
            else:
                missing.append(path)
        now = time.monotonic()
        # right away while grants are being used up; else every retry_s (a lost answer)
        if missing and (done or now - self._asked >= self.retry_s):
            self._asked = now
            files = {p.name: p.stat().st_size for p in missing[:BATCH]}
            self._publish(encode_message(CaptureRequest(self.device_id, time.time(), files)))
            self.requests += 1
            log.info("asked for upload URLs for %s sample file(s)", len(files))
        return done

    def _put(self, name: str, data: bytes, url: str) -> bool:
        # an explicit type: urllib would call the body a form, and some servers parse it so
        request = urllib.request.Request(
            url,
            data=data,
            method="PUT",
            headers={"Content-Length": str(len(data)), "Content-Type": "application/octet-stream"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                ok = 200 <= int(response.status) < 300
        except (urllib.error.URLError, OSError, ValueError) as e:
            ok = False
            log.warning("upload of %s failed: %s (retried with a new URL)", name, e)
        if ok:
            self.uploaded += 1
        else:
            self.failed += 1
        return ok
