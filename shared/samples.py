"""Captured samples on the wire: file names, store keys, and the device's upload request.

A sample is `<id>.<jpg|npy>` (the input) and `<id>.json` (outputs, model, trigger, time), with
`<id>` = `YYYYmmddTHHMMSS-<8 hex>` (UTC). In the artifact store they live at
`samples/<device id>/<file>`. A device asks for upload URLs with a `litefleet.capture/1`
message on `devices/{id}/capture`; `parse_capture_request` bounds it before anyone acts on it.
"""

from __future__ import annotations

import re

from shared.documents import load_json
from shared.errors import MalformedDocument
from shared.messages import CaptureRequest, decode_message
from shared.topics import validate_device_id

__all__ = [
    "MAX_FILES_PER_REQUEST",
    "MAX_REQUEST_BYTES",
    "MAX_SAMPLE_FILE_BYTES",
    "SAMPLE_FILE",
    "parse_capture_request",
    "sample_key",
]

SAMPLE_FILE = re.compile(r"^\d{8}T\d{6}-[0-9a-f]{8}\.(jpg|npy|json)$")
MAX_FILES_PER_REQUEST = 16
MAX_SAMPLE_FILE_BYTES = 8 * 1024 * 1024
MAX_REQUEST_BYTES = 8 * 1024


def sample_key(device_id: str, name: str) -> str:
    if not SAMPLE_FILE.match(name):
        raise MalformedDocument(f"{name!r} is not a sample file name", "file")
    return f"samples/{validate_device_id(device_id)}/{name}"


def parse_capture_request(payload: bytes, device_id: str) -> CaptureRequest:
    """The request in `payload`, from `device_id` (the topic's); MalformedDocument (or
    PayloadTooLarge, UnknownSchema) when it is not a bounded, well-formed request."""
    load_json(payload, MAX_REQUEST_BYTES)  # the size cap before the schema is even looked at
    message = decode_message(payload, MAX_REQUEST_BYTES)
    if not isinstance(message, CaptureRequest):
        raise MalformedDocument(
            f"expected a capture request, got {type(message).__name__}", "schema"
        )
    if message.device_id != device_id:
        raise MalformedDocument(f"sent on {device_id}'s topic for {message.device_id}", "device_id")
    if not message.files or len(message.files) > MAX_FILES_PER_REQUEST:
        raise MalformedDocument(f"1 to {MAX_FILES_PER_REQUEST} files", "files")
    for name, size in message.files.items():
        if not SAMPLE_FILE.match(name):
            raise MalformedDocument("not a sample file name", f"files.{name[:80]}")
        if (
            isinstance(size, bool)
            or not isinstance(size, int)
            or not (0 < size <= MAX_SAMPLE_FILE_BYTES)
        ):
            raise MalformedDocument(
                f"a size of 1 to {MAX_SAMPLE_FILE_BYTES} bytes", f"files.{name}"
            )
    return message
