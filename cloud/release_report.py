"""The compression report a release was made from, cut to what the Releases page shows.

`litefleet release --from-report report.json` signs the chosen candidate's provenance; the
report's figures for every candidate (size, zstd size, accuracy or agreement, latency, which
was chosen and why, what was skipped) are worth keeping beside the release too, so that the
dashboard can show the choice again. The report is the operator's file, so what is stored is a
summary with every field checked and bounded:

    at most MAX_CANDIDATES measured models (the original first) and MAX_SKIPPED skipped ones
    numbers finite and non-negative; accuracy and agreement within 0..1
    text without control characters, each cut to its own length (methods, notes, the reason)

A report with more candidates than that, or a summary still larger than MAX_SUMMARY_BYTES, is
refused in one sentence (`PayloadTooLarge`); a field of the wrong type is `MalformedDocument`
naming it. Missing figures are kept as null (older or hand-written reports).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from shared.errors import MalformedDocument, PayloadTooLarge
from shared.jsonload import load_json

__all__ = [
    "MAX_CANDIDATES",
    "MAX_REPORT_BYTES",
    "MAX_SKIPPED",
    "MAX_SUMMARY_BYTES",
    "SCHEMA",
    "read_report",
    "stored_summary",
    "summarize",
]

SCHEMA = "litefleet.release-report/1"
MAX_REPORT_BYTES = 16 * 1024 * 1024  # the report.json file read by `release --from-report`
MAX_CANDIDATES = 32  # measured models kept, the original included
MAX_SKIPPED = 32
MAX_SUMMARY_BYTES = 32 * 1024  # the stored JSON text (a real report's is 1-3 KiB)
MAX_NUMBER = 1e15  # sizes in bytes, latencies in ms: anything larger is not a measurement
_METHOD_CHARS = 64
_NOTE_CHARS = 200
_REASON_CHARS = 1000
_NAME_CHARS = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def read_report(path: Path) -> dict[str, Any]:
    """report.json as a dict, read within MAX_REPORT_BYTES."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_REPORT_BYTES + 1)  # never more than one byte past the bound
    except OSError as e:
        raise MalformedDocument(f"cannot read {path}: {e.strerror}", "report") from e
    if len(data) > MAX_REPORT_BYTES:
        raise PayloadTooLarge(
            f"{path} is larger than {MAX_REPORT_BYTES >> 20} MiB: not a compression report"
        )
    report = load_json(data, MAX_REPORT_BYTES)
    if not isinstance(report, dict):
        raise MalformedDocument("a report is a JSON object", "report")
    return report


def _text(value: Any, limit: int, where: str) -> str:
    if not isinstance(value, str):
        raise MalformedDocument("expected text", where)
    clean = _CONTROL.sub(" ", value).strip()
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"


def _optional_text(value: Any, limit: int, where: str) -> str:
    return "" if value is None else _text(value, limit, where)


def _number(value: Any, where: str, top: float = MAX_NUMBER) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MalformedDocument("expected a number", where)
    if not math.isfinite(value) or not 0 <= value <= top:
        raise MalformedDocument(f"expected a number within 0..{top:g}", where)
    return value


def _count(value: Any, where: str) -> int | None:
    n = _number(value, where)
    if n is None:
        return None
    if n != int(n):
        raise MalformedDocument("expected a whole number", where)
    return int(n)


def _share(value: Any, where: str) -> float | None:
    n = _number(value, where, 1.0)
    return None if n is None else round(n, 6)


def _ms(value: Any, where: str) -> float | None:
    n = _number(value, where)
    return None if n is None else round(n, 4)


def _row(entry: Any, where: str, chosen: str | None, *, baseline: bool) -> dict[str, Any]:
    """One measured model; the original (`baseline`) is named so whatever its method, and is
    the chosen one when the report kept it (as `Report.is_chosen`)."""
    if not isinstance(entry, dict):
        raise MalformedDocument("expected an object", where)
    if baseline:
        method = "original"
        is_chosen = chosen is not None and chosen in ("original", entry.get("method"))
    else:
        method = _text(entry.get("method"), _METHOD_CHARS, f"{where}.method")
        is_chosen = method == chosen
    accuracy = _share(entry.get("accuracy"), f"{where}.accuracy")
    agreement = _share(entry.get("agreement"), f"{where}.agreement")
    misses = entry.get("misses") or []
    if not isinstance(misses, list):
        raise MalformedDocument("expected a list", f"{where}.misses")
    note = _optional_text(entry.get("no_effect"), _NOTE_CHARS, f"{where}.no_effect")
    note = note or _optional_text(entry.get("io_change"), _NOTE_CHARS, f"{where}.io_change")
    if not note and entry.get("fits_budget") is False:
        missed = "; ".join(
            _text(m, _NOTE_CHARS, f"{where}.misses[{k}]") for k, m in enumerate(misses[:8])
        )
        note = _text("over the profile's budget: " + (missed or "?"), _NOTE_CHARS, where)
    return {
        "method": method,
        "bytes": _count(entry.get("bytes"), f"{where}.bytes"),
        "zstd_bytes": _count(entry.get("zstd_bytes"), f"{where}.zstd_bytes"),
        "accuracy": accuracy,
        "agreement": agreement,
        "quality": accuracy if accuracy is not None else agreement,
        "latency_p50_ms": _ms(entry.get("latency_p50_ms"), f"{where}.latency_p50_ms"),
        "latency_p95_ms": _ms(entry.get("latency_p95_ms"), f"{where}.latency_p95_ms"),
        "drop_pts": None,  # quality points below the original's, filled in by `summarize`
        "baseline": baseline,
        "chosen": is_chosen,
        "note": note,
    }


def _list(report: dict[str, Any], key: str, noun: str, limit: int, source: Path) -> list[Any]:
    value = report.get(key) or []
    if not isinstance(value, list):
        raise MalformedDocument("expected a list", f"report.{key}")
    if len(value) > limit:
        raise PayloadTooLarge(
            f"{source} lists {len(value)} {noun}; a release keeps the figures of at most "
            f"{limit}: release from a report with fewer, or without --from-report"
        )
    return value


def summarize(report: dict[str, Any], source: Path, released: str | None = None) -> str:
    """The stored summary of `report` (read from `source`), as compact JSON text. `released`
    names the candidate this release is when it is not the chosen one (`--candidate`)."""
    baseline = report.get("baseline")
    if not isinstance(baseline, dict):
        raise MalformedDocument(
            "a compression report has the original model's figures", "report.baseline"
        )
    entries = _list(report, "candidates", "candidates", MAX_CANDIDATES - 1, source)
    skipped = _list(report, "skipped", "skipped methods", MAX_SKIPPED, source)
    chosen = report.get("chosen")
    chosen = None if chosen is None else _text(chosen, _METHOD_CHARS, "report.chosen")
    released = chosen if released is None else _text(released, _METHOD_CHARS, "--candidate")
    rows = [_row(baseline, "report.baseline", chosen, baseline=True)]
    rows += [
        _row(c, f"report.candidates[{k}]", chosen, baseline=False) for k, c in enumerate(entries)
    ]
    top = rows[0]["quality"]
    for row in rows:
        row["released"] = row["chosen"] if released == chosen else row["method"] == released
        if top is not None and row["quality"] is not None:
            row["drop_pts"] = round((top - row["quality"]) * 100, 2)
    found = report.get("eval")
    eval_: dict[str, Any] = found if isinstance(found, dict) else {}
    labelled = bool(eval_.get("labelled", baseline.get("accuracy") is not None))
    model = report.get("model")
    summary = {
        "schema": SCHEMA,
        "model": Path(_text(model, _NAME_CHARS, "report.model")).name if model else "",
        "profile": _optional_text(report.get("profile"), _METHOD_CHARS, "report.profile"),
        "quality": "accuracy" if labelled else "agreement",
        "eval_samples": _count(eval_.get("samples"), "report.eval.samples"),
        "generated": eval_.get("generated") is True,
        "chosen": chosen,
        "released": released,
        "reason": _optional_text(report.get("reason"), _REASON_CHARS, "report.reason"),
        "candidates": rows,
        "skipped": [_skipped(s, f"report.skipped[{k}]") for k, s in enumerate(skipped)],
    }
    text = json.dumps(summary, separators=(",", ":"), ensure_ascii=False)
    if len(text.encode("utf-8")) > MAX_SUMMARY_BYTES:
        raise PayloadTooLarge(
            f"the figures kept from {source} come to {len(text.encode('utf-8'))} bytes, more "
            f"than the {MAX_SUMMARY_BYTES} a release stores: release without --from-report"
        )
    return text


def _skipped(entry: Any, where: str) -> dict[str, str]:
    if not isinstance(entry, dict):
        raise MalformedDocument("expected an object", where)
    return {
        "method": _text(entry.get("method"), _METHOD_CHARS, f"{where}.method"),
        "reason": _optional_text(entry.get("reason"), _NOTE_CHARS, f"{where}.reason"),
    }


def stored_summary(text: str | None) -> dict[str, Any] | None:
    """A release row's stored summary, for the dashboard; None when the release was made from
    a file (no report) or the text is not one of ours."""
    if not text or len(text) > 2 * MAX_SUMMARY_BYTES:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, dict) or value.get("schema") != SCHEMA:
        return None
    if not isinstance(value.get("candidates"), list):
        return None
    return value
