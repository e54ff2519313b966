import hashlib
import os
import resource
import time

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.codec import compress, decompress, delta_base_sha256, delta_decode, delta_encode
from shared.errors import CorruptArtifact, DeltaBaseMismatch, SizeExceeded


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@given(st.binary(max_size=4096))
def test_compress_round_trip(data):
    assert decompress(compress(data, level=3), max_size=len(data)) == data


def test_declared_bomb_is_refused_from_the_header_fast_and_small():
    bomb = zstandard.ZstdCompressor(level=3).compress(b"\0" * (32 * 2**20))
    assert len(bomb) <= 2048
    rss_before = _rss_mb()
    start = time.perf_counter()
    with pytest.raises(SizeExceeded):
        decompress(bomb, max_size=10 * 2**20)
    assert time.perf_counter() - start < 1.0
    assert _rss_mb() - rss_before < 50


def test_1kib_frame_without_declared_size_is_refused_when_output_passes_the_cap():
    cctx = zstandard.ZstdCompressor(level=3, write_content_size=False)
    frame = cctx.compress(b"\0" * (32 * 2**20))
    assert len(frame) <= 2048
    rss_before = _rss_mb()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with pytest.raises((SizeExceeded, CorruptArtifact)):
        decompress(frame, max_size=4 * 2**20)
    assert time.perf_counter() - start < 1.0
    assert _rss_mb() - rss_before < 50
    peak_growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert peak_growth_mb < 50


def test_exceeding_the_cap_by_one_byte_is_refused():
    data = os.urandom(10_000)
    with pytest.raises(SizeExceeded):
        decompress(compress(data), max_size=9_999)
    assert decompress(compress(data), max_size=10_000) == data


def test_truncated_frame_is_refused():
    frame = compress(os.urandom(200_000))
    with pytest.raises(CorruptArtifact):
        decompress(frame[:-50], max_size=1_000_000)


def test_garbage_is_refused():
    with pytest.raises(CorruptArtifact):
        decompress(b"definitely not zstd", max_size=1000)


@settings(max_examples=25, deadline=None)
@given(st.binary(min_size=1, max_size=20_000), st.binary(max_size=2_000), st.integers(0, 19_999))
def test_delta_round_trip_is_byte_identical(base, patch, offset):
    offset = min(offset, len(base))
    target = base[:offset] + patch + base[offset + len(patch) :]
    delta = delta_encode(base, target, level=3)
    assert delta_base_sha256(delta) == hashlib.sha256(base).hexdigest()
    assert delta_decode(base, delta, max_size=len(target)) == target


def test_delta_of_a_small_change_is_small():
    base = os.urandom(2_000_000)
    target = base[:-20_000] + os.urandom(20_000)
    delta = delta_encode(base, target)
    assert len(delta) < 0.05 * len(compress(target))
    assert delta_decode(base, delta, max_size=len(target)) == target


def test_delta_against_the_wrong_base_is_refused():
    base = os.urandom(50_000)
    target = base + b"tail"
    delta = delta_encode(base, target)
    other = bytearray(base)
    other[0] ^= 1
    with pytest.raises(DeltaBaseMismatch):
        delta_decode(bytes(other), delta, max_size=len(target))


def test_delta_output_cap_holds():
    base = os.urandom(10_000)
    target = base * 10
    delta = delta_encode(base, target)
    with pytest.raises(SizeExceeded):
        delta_decode(base, delta, max_size=len(target) - 1)


def test_not_a_delta_is_refused():
    with pytest.raises(CorruptArtifact):
        delta_decode(b"base", b"LFD0" + bytes(40), max_size=100)
