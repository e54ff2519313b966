"""zstd artifacts and deltas with hard output caps.

`decompress` never allocates more than it has verified it may: a frame that declares a
content size over the cap is refused from its header, and a frame that does not declare one is
streamed in small chunks and refused the moment the output passes the cap.

A delta is a zstd frame compressed with the base model as a raw-content dictionary (the
`--patch-from` technique), behind a 36-byte header: `LFD1` and the base's sha256. Decoding
against any other base is refused before zstd runs.
"""

from __future__ import annotations

import hashlib
import io

import zstandard

from shared.errors import CorruptArtifact, DeltaBaseMismatch, SizeExceeded

__all__ = [
    "DELTA_MAGIC",
    "compress",
    "decompress",
    "delta_base_sha256",
    "delta_decode",
    "delta_encode",
]

DELTA_MAGIC = b"LFD1"
_HEADER = len(DELTA_MAGIC) + 32
_CHUNK = 1 << 16
_MAX_WINDOW_LOG = 27  # 128 MiB: far above any edge model, and a bound on decoder memory


def _window_log(*sizes: int) -> int:
    need = max(max(sizes, default=1), 1 << 20)
    return min(_MAX_WINDOW_LOG, max(20, (need - 1).bit_length() + 1))


def compress(data: bytes, level: int = 19) -> bytes:
    params = zstandard.ZstdCompressionParameters.from_level(
        level, source_size=len(data), write_checksum=1, write_content_size=1
    )
    return zstandard.ZstdCompressor(compression_params=params).compress(data)


def _stream_out(reader: zstandard.ZstdDecompressionReader, max_size: int) -> bytes:
    out = bytearray()
    while True:
        try:
            chunk = reader.read(_CHUNK)
        except zstandard.ZstdError as e:
            raise CorruptArtifact(f"not a valid zstd stream: {e}") from e
        if not chunk:
            return bytes(out)
        out += chunk
        if len(out) > max_size:
            raise SizeExceeded(f"decompressed output exceeds the {max_size}-byte cap")


def _check_header(frame: bytes, max_size: int) -> int | None:
    """Refuse from the frame header alone; return the declared content size, if any."""
    try:
        params = zstandard.get_frame_parameters(frame)
    except zstandard.ZstdError as e:
        raise CorruptArtifact(f"not a zstd frame: {e}") from e
    declared = params.content_size
    if declared != zstandard.CONTENTSIZE_UNKNOWN and declared > max_size:
        raise SizeExceeded(f"frame declares {declared} bytes, over the {max_size}-byte cap")
    if params.window_size > (1 << _MAX_WINDOW_LOG):
        raise CorruptArtifact(f"frame window of {params.window_size} bytes is over the limit")
    return None if declared == zstandard.CONTENTSIZE_UNKNOWN else int(declared)


def _check_length(data: bytes, declared: int | None) -> bytes:
    # A frame cut short decodes to a prefix without complaint; the declared size catches it.
    # (Frames without a declared size rely on the caller's hash check, as artifacts always do.)
    if declared is not None and len(data) != declared:
        raise CorruptArtifact(f"frame is truncated: {len(data)} of {declared} bytes decoded")
    return data


def decompress(frame: bytes, max_size: int) -> bytes:
    """Decompress one zstd frame, refusing output larger than `max_size` bytes."""
    declared = _check_header(frame, max_size)
    dctx = zstandard.ZstdDecompressor(max_window_size=1 << _MAX_WINDOW_LOG)
    with dctx.stream_reader(io.BytesIO(frame), read_size=_CHUNK) as reader:
        return _check_length(_stream_out(reader, max_size), declared)


def delta_encode(base: bytes, target: bytes, level: int = 19) -> bytes:
    """A delta that rebuilds `target` from `base`."""
    wlog = _window_log(len(base), len(target))
    dictionary = zstandard.ZstdCompressionDict(base, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    params = zstandard.ZstdCompressionParameters.from_level(
        level,
        source_size=len(target),
        window_log=wlog,
        enable_ldm=1,
        write_checksum=1,
        write_content_size=1,
    )
    cctx = zstandard.ZstdCompressor(dict_data=dictionary, compression_params=params)
    return DELTA_MAGIC + hashlib.sha256(base).digest() + cctx.compress(target)


def delta_base_sha256(delta: bytes) -> str:
    if len(delta) < _HEADER or not delta.startswith(DELTA_MAGIC):
        raise CorruptArtifact("not a LiteFleet delta (bad header)")
    return delta[len(DELTA_MAGIC) : _HEADER].hex()


def delta_decode(base: bytes, delta: bytes, max_size: int) -> bytes:
    """Rebuild the target from `base`; refuse a delta made from another base."""
    expected = delta_base_sha256(delta)
    actual = hashlib.sha256(base).hexdigest()
    if actual != expected:
        raise DeltaBaseMismatch(f"delta was made from base {expected[:12]}, not {actual[:12]}")
    frame = delta[_HEADER:]
    declared = _check_header(frame, max_size)
    dictionary = zstandard.ZstdCompressionDict(base, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    dctx = zstandard.ZstdDecompressor(dict_data=dictionary, max_window_size=1 << _MAX_WINDOW_LOG)
    with dctx.stream_reader(io.BytesIO(frame), read_size=_CHUNK) as reader:
        return _check_length(_stream_out(reader, max_size), declared)
