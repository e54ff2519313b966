"""Typed release and deployment documents, parsed from untrusted bytes.

Parsing is strict: a missing field, an unknown field or a value of the wrong type raises
`MalformedDocument` naming the field by its JSON path (`signed.target.sha256`). Parsing does
not check signatures; `shared.verify` does that, and then calls these parsers.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared.errors import MalformedDocument
from shared.jsonload import DEFAULT_MAX_DOCUMENT_BYTES, INT64_MAX, INT64_MIN, load_json
from shared.reference import ReferenceProfile
from shared.variants import VariantSet

__all__ = [
    "DEFAULT_MAX_DOCUMENT_BYTES",
    "Artifact",
    "Delta",
    "Deployment",
    "IOSignature",
    "ProbationPolicy",
    "Provenance",
    "Release",
    "Target",
    "TensorSpec",
    "format_time",
    "load_json",
    "parse_time",
]

SPEC_VERSION = 1
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_DEVICE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
_MAX_TEXT = 8192  # characters in one string (URLs included: presigned ones run to ~2 KiB)
# control characters and lone surrogates: no field of a signed document needs them, and a lone
# surrogate has no UTF-8 form, so it could not even be hashed for the signature check
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
_DTYPES = {"float32", "float16", "int8", "uint8", "int16", "int32", "int64", "bool"}


def format_time(moment: datetime) -> str:
    """RFC 3339 UTC with second precision: the only time format signed documents use."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str, path: str = "time") -> datetime:
    if not _TIME.match(text):
        raise MalformedDocument("expected a UTC time like 2026-01-31T12:00:00Z", path)
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError as e:
        raise MalformedDocument(f"not a valid time: {e}", path) from e


class _Obj:
    """Reads the fields of one JSON object, naming each field by its path in errors."""

    def __init__(self, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise MalformedDocument("expected an object", path)
        self.value: dict[str, Any] = value
        self.path = path
        self.seen: set[str] = set()

    def _get(self, key: str, optional: bool = False) -> Any:
        self.seen.add(key)
        if key not in self.value:
            if optional:
                return None
            raise MalformedDocument("missing", f"{self.path}.{key}")
        return self.value[key]

    def sub(self, key: str) -> str:
        return f"{self.path}.{key}"

    def text(self, key: str, pattern: re.Pattern[str] | None = None, optional: bool = False) -> Any:
        v = self._get(key, optional)
        if v is None and optional:
            return None
        if not isinstance(v, str):
            raise MalformedDocument("expected a string", self.sub(key))
        if len(v) > _MAX_TEXT or _UNPRINTABLE.search(v):
            raise MalformedDocument(
                f"longer than {_MAX_TEXT} characters or has control characters", self.sub(key)
            )
        if pattern is not None and not pattern.match(v):
            raise MalformedDocument(f"{v!r} is not of the form {pattern.pattern}", self.sub(key))
        return v

    def integer(self, key: str, minimum: int | None = 0, optional: bool = False) -> Any:
        v = self._get(key, optional)
        if v is None and optional:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            raise MalformedDocument("expected an integer", self.sub(key))
        if minimum is not None and v < minimum:
            raise MalformedDocument(f"must be >= {minimum}", self.sub(key))
        if not INT64_MIN <= v <= INT64_MAX:
            raise MalformedDocument("out of the 64-bit integer range", self.sub(key))
        return v

    def list(self, key: str) -> list[Any]:
        v = self._get(key)
        if not isinstance(v, list):
            raise MalformedDocument("expected a list", self.sub(key))
        return v

    def obj(self, key: str) -> _Obj:
        return _Obj(self._get(key), self.sub(key))

    def const(self, key: str, expected: Any) -> None:
        v = self._get(key)
        if v != expected:
            raise MalformedDocument(f"expected {expected!r}", self.sub(key))

    def done(self) -> None:
        extra = sorted(set(self.value) - self.seen)
        if extra:
            raise MalformedDocument("unknown field", self.sub(extra[0]))


@dataclass(frozen=True)
class TensorSpec:
    """One input or output tensor: what the application and the model must agree on."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: str | None = None  # quantization scale as a decimal string (no floats when signed)
    zero_point: int | None = None

    @property
    def quantized(self) -> bool:
        return self.scale is not None

    def to_dict(self) -> dict[str, Any]:
        q = None if self.scale is None else {"scale": self.scale, "zero_point": self.zero_point}
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "quantization": q,
        }

    @classmethod
    def parse(cls, value: Any, path: str) -> TensorSpec:
        o = _Obj(value, path)
        name = o.text("name")
        shape = o.list("shape")
        for i, dim in enumerate(shape):
            if isinstance(dim, bool) or not isinstance(dim, int) or not -1 <= dim <= INT64_MAX:
                raise MalformedDocument("expected a 64-bit integer >= -1", f"{o.sub('shape')}[{i}]")
        dtype = o.text("dtype")
        if dtype not in _DTYPES:
            raise MalformedDocument(f"unknown dtype {dtype!r}", o.sub("dtype"))
        q = o._get("quantization")
        scale, zero_point = None, None
        if q is not None:
            qo = o.obj("quantization")
            scale = qo.text("scale")
            try:
                finite = math.isfinite(float(scale))
            except ValueError as e:
                raise MalformedDocument("scale is not a decimal", qo.sub("scale")) from e
            if not finite:
                raise MalformedDocument("scale is not a finite decimal", qo.sub("scale"))
            zero_point = qo.integer("zero_point", minimum=None)
            qo.done()
        o.done()
        return cls(name, tuple(shape), dtype, scale, zero_point)

    def fits(self, other: TensorSpec) -> bool:
        """Same dtype and shape (-1 matches any size); names may differ between converters."""
        if self.dtype != other.dtype or len(self.shape) != len(other.shape):
            return False
        return all(a == b or -1 in (a, b) for a, b in zip(self.shape, other.shape, strict=True))


@dataclass(frozen=True)
class IOSignature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
        }

    @classmethod
    def parse(cls, value: Any, path: str) -> IOSignature:
        o = _Obj(value, path)
        inputs = tuple(
            TensorSpec.parse(v, f"{o.sub('inputs')}[{i}]") for i, v in enumerate(o.list("inputs"))
        )
        outputs = tuple(
            TensorSpec.parse(v, f"{o.sub('outputs')}[{i}]") for i, v in enumerate(o.list("outputs"))
        )
        o.done()
        if not inputs or not outputs:
            raise MalformedDocument("a model has at least one input and one output", path)
        return cls(inputs, outputs)

    def fits(self, other: IOSignature) -> bool:
        return (
            len(self.inputs) == len(other.inputs)
            and len(self.outputs) == len(other.outputs)
            and all(a.fits(b) for a, b in zip(self.inputs, other.inputs, strict=True))
            and all(a.fits(b) for a, b in zip(self.outputs, other.outputs, strict=True))
        )


@dataclass(frozen=True)
class Target:
    """The decompressed `.tflite`: what ends up installed."""

    sha256: str
    size: int


@dataclass(frozen=True)
class Artifact:
    """The zstd-compressed full model."""

    url: str
    sha256: str
    size: int
    codec: str = "zstd"


@dataclass(frozen=True)
class Delta:
    """A zstd delta that rebuilds the target from the model whose sha256 is `base_sha256`."""

    base_sha256: str
    url: str
    sha256: str
    size: int
    codec: str = "zstd-delta"


@dataclass(frozen=True)
class Provenance:
    parent_sha256: str | None = None
    recipe: str = "none"
    metrics: dict[str, str | int] = field(default_factory=dict)


@dataclass(frozen=True)
class ProbationPolicy:
    """How a new model proves itself before it is committed. Integers only (signed)."""

    min_inferences: int = 50
    max_error_rate_pct: int = 5
    max_latency_ratio_pct: int = 200  # p95 at most this percent of the previous model's p95
    min_agreement_pct: int = 0  # top-1 agreement with the previous model on shadow frames; 0 = off
    max_duration_s: int = 600  # undecided after this long: roll back


def _probation(o: _Obj) -> ProbationPolicy:
    p = ProbationPolicy(
        min_inferences=o.integer("min_inferences"),
        max_error_rate_pct=o.integer("max_error_rate_pct"),
        max_latency_ratio_pct=o.integer("max_latency_ratio_pct"),
        min_agreement_pct=o.integer("min_agreement_pct"),
        max_duration_s=o.integer("max_duration_s", minimum=1),
    )
    o.done()
    return p


@dataclass(frozen=True)
class Release:
    name: str
    version: int
    profile: str
    created: str
    expires: str
    target: Target
    artifact: Artifact
    deltas: tuple[Delta, ...]
    io: IOSignature
    provenance: Provenance
    probation: ProbationPolicy
    # the evaluation set's input and output statistics (signed with the model; optional)
    reference: ReferenceProfile | None = None
    # the same model compressed other ways: each device activates the fastest within budget
    variants: VariantSet | None = None

    @property
    def expires_at(self) -> datetime:
        return parse_time(self.expires)

    def delta_for(self, base_sha256: str) -> Delta | None:
        return next((d for d in self.deltas if d.base_sha256 == base_sha256), None)

    def to_signed(self) -> dict[str, Any]:
        """The `signed` part of the release envelope."""
        signed: dict[str, Any] = {
            "_type": "release",
            "spec_version": SPEC_VERSION,
            "name": self.name,
            "version": self.version,
            "profile": self.profile,
            "created": self.created,
            "expires": self.expires,
            "target": asdict(self.target),
            "artifact": asdict(self.artifact),
            "deltas": [asdict(d) for d in self.deltas],
            "io": self.io.to_dict(),
            "provenance": {
                "parent_sha256": self.provenance.parent_sha256,
                "recipe": self.provenance.recipe,
                "metrics": dict(self.provenance.metrics),
            },
            "probation": asdict(self.probation),
        }
        if self.reference is not None:  # absent, not null: older releases sign the same bytes
            signed["reference"] = self.reference.to_dict()
        if self.variants is not None:
            signed["variants"] = self.variants.to_dict()
        return signed

    @classmethod
    def parse_signed(cls, value: Any, path: str = "signed") -> Release:
        o = _Obj(value, path)
        o.const("_type", "release")
        o.const("spec_version", SPEC_VERSION)
        name = o.text("name", _NAME)
        version = o.integer("version")
        profile = o.text("profile", _NAME)
        created = o.text("created")
        parse_time(created, o.sub("created"))
        expires = o.text("expires")
        parse_time(expires, o.sub("expires"))
        t = o.obj("target")
        target = Target(t.text("sha256", _SHA256), t.integer("size", minimum=1))
        t.done()
        a = o.obj("artifact")
        artifact = Artifact(
            a.text("url"), a.text("sha256", _SHA256), a.integer("size", minimum=1), a.text("codec")
        )
        a.done()
        if artifact.codec != "zstd":
            raise MalformedDocument(f"unknown codec {artifact.codec!r}", a.sub("codec"))
        deltas = []
        for i, raw in enumerate(o.list("deltas")):
            d = _Obj(raw, f"{o.sub('deltas')}[{i}]")
            delta = Delta(
                d.text("base_sha256", _SHA256),
                d.text("url"),
                d.text("sha256", _SHA256),
                d.integer("size", minimum=1),
                d.text("codec"),
            )
            d.done()
            if delta.codec != "zstd-delta":
                raise MalformedDocument(f"unknown codec {delta.codec!r}", d.sub("codec"))
            deltas.append(delta)
        io = IOSignature.parse(o._get("io"), o.sub("io"))
        p = o.obj("provenance")
        parent = p.text("parent_sha256", _SHA256, optional=True)
        recipe = p.text("recipe")
        m = p.obj("metrics")
        metrics: dict[str, str | int] = {}
        for key, mv in m.value.items():
            if isinstance(mv, bool) or not isinstance(mv, (str, int)):
                raise MalformedDocument("expected a string or an integer", m.sub(key))
            if isinstance(mv, int) and not INT64_MIN <= mv <= INT64_MAX:
                raise MalformedDocument("out of the 64-bit integer range", m.sub(key))
            if isinstance(mv, str) and (len(mv) > _MAX_TEXT or _UNPRINTABLE.search(mv)):
                raise MalformedDocument("too long or has control characters", m.sub(key))
            metrics[key] = mv
        p.done()
        probation = _probation(o.obj("probation"))
        raw_reference = o._get("reference", optional=True)
        reference = (
            None
            if raw_reference is None
            else ReferenceProfile.parse(raw_reference, o.sub("reference"))
        )
        raw_variants = o._get("variants", optional=True)
        variants = (
            None if raw_variants is None else VariantSet.parse(raw_variants, o.sub("variants"))
        )
        if variants is not None and variants.by_sha256(target.sha256) is None:
            raise MalformedDocument(
                "the release's target is not among its candidates", o.sub("variants")
            )
        o.done()
        return cls(
            name,
            version,
            profile,
            created,
            expires,
            target,
            artifact,
            tuple(deltas),
            io,
            Provenance(parent, recipe, metrics),
            probation,
            reference,
            variants,
        )


@dataclass(frozen=True)
class Deployment:
    """One release bound to one device, within one rollout."""

    rollout_id: str
    device_id: str
    issued: str
    expires: str
    release: dict[str, Any]  # the release's own signed envelope, verified separately

    @property
    def expires_at(self) -> datetime:
        return parse_time(self.expires)

    def to_signed(self) -> dict[str, Any]:
        return {
            "_type": "deployment",
            "spec_version": SPEC_VERSION,
            "rollout_id": self.rollout_id,
            "device_id": self.device_id,
            "issued": self.issued,
            "expires": self.expires,
            "release": self.release,
        }

    @classmethod
    def parse_signed(cls, value: Any, path: str = "signed") -> Deployment:
        o = _Obj(value, path)
        o.const("_type", "deployment")
        o.const("spec_version", SPEC_VERSION)
        rollout_id = o.text("rollout_id", _NAME)
        device_id = o.text("device_id", _DEVICE_ID)
        issued = o.text("issued")
        parse_time(issued, o.sub("issued"))
        expires = o.text("expires")
        parse_time(expires, o.sub("expires"))
        release = o._get("release")
        if not isinstance(release, dict):
            raise MalformedDocument("expected a signed release envelope", o.sub("release"))
        o.done()
        return cls(rollout_id, device_id, issued, expires, release)
