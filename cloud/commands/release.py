"""`litefleet release MODEL.tflite --name N --version V --profile P`: package, sign, upload."""

from __future__ import annotations

import argparse
import hashlib
import io
import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from cloud import audit
from cloud.compress.reference import FILE_NAME, read_reference
from cloud.context import CommandFailed, Context, add_config_argument, run_command
from cloud.durations import parse_duration, parse_share_pct
from cloud.release import (
    ReleaseRefused,
    ReleaseRequest,
    provenance_from_report,
    publish_release,
)
from cloud.release_report import read_report, summarize
from cloud.variants import VariantRequest
from device_profiles import load_profile
from device_profiles.profile import DeviceProfile, ProfileInvalid
from localio.cli import EXIT_INVALID
from shared.documents import ProbationPolicy, Provenance
from shared.keys import SigningKey
from shared.reference import ReferenceProfile
from shared.variants import MAX_BENCH_MS

__all__ = ["register"]


def _ratio_pct(text: str) -> int:
    """`2`, `2.0` or `200%`: how many percent of the previous model's p95 latency is allowed."""
    t = text.strip()
    try:
        value = float(t[:-1]) if t.endswith("%") else float(t) * 100
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r} is not a ratio like 1.5 or 150%") from e
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return round(value)


def _share(text: str) -> int:
    try:
        return parse_share_pct(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def _duration(text: str) -> int:
    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    d = ProbationPolicy()
    p = subparsers.add_parser(
        "release",
        help="package, sign and upload a model as a new release",
        description="Write the zstd full artifact and a delta against each of the last few "
        "releases of the same model and profile, upload them to the artifact store, sign the "
        "release with the configured key and record it. Versions must increase per model. "
        "Refused, with nothing written, when the current root does not accept the key.",
    )
    p.add_argument("model", type=Path, metavar="MODEL.tflite")
    p.add_argument("--name", required=True, help="model name (what devices run, [model] name)")
    p.add_argument("--version", required=True, type=int, help="integer, greater than the last")
    p.add_argument("--profile", required=True, help="device profile name or file")
    p.add_argument(
        "--from-report",
        type=Path,
        default=None,
        metavar="REPORT.json",
        help="take provenance from a `litefleet compress` report; MODEL must be "
        "its chosen candidate's file (or --candidate's)",
    )
    p.add_argument(
        "--candidate",
        default=None,
        metavar="METHOD",
        help="with --from-report: the report's candidate MODEL is, when not the chosen one",
    )
    p.add_argument(
        "--reference",
        type=Path,
        default=None,
        metavar="REFERENCE.json",
        help="the reference profile to sign with the model (default with "
        "--from-report: the reference.json next to the report)",
    )
    p.add_argument(
        "--drift-threshold",
        type=float,
        default=None,
        metavar="PSI",
        help="drift score above which devices raise a drift event (default: the reference's, 0.25)",
    )
    p.add_argument(
        "--capture-confidence",
        type=_share,
        default=None,
        metavar="PCT",
        help="devices capturing samples keep frames whose top score is below this "
        "(default: the reference's, 50%%)",
    )
    p.add_argument(
        "--samples",
        type=Path,
        default=None,
        metavar="DATASET.npz",
        help="name in the provenance the dataset of captured samples this model was "
        "trained on (a `litefleet samples pull` dataset: its sha256 and size)",
    )
    v = p.add_argument_group("variants (each device activates the fastest it measures)")
    v.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=FILE[@QUALITY]",
        help="another compression of MODEL with the same I/O (repeatable); QUALITY "
        "its accuracy or agreement in %% (else from --from-report's candidate NAME)",
    )
    v.add_argument(
        "--quality",
        type=float,
        default=None,
        metavar="PCT",
        help="MODEL's own quality in %% (else from --from-report)",
    )
    v.add_argument(
        "--min-quality",
        type=float,
        default=0.0,
        metavar="PCT",
        help="devices consider only variants of at least this quality (default 0)",
    )
    v.add_argument(
        "--bench-budget",
        type=_duration,
        default=20,
        metavar="DURATION",
        help="time a device may spend measuring the variants (default 20s)",
    )
    p.add_argument(
        "--new-io",
        action="store_true",
        help="the application changes with this model: allow inputs or outputs "
        "that differ from the previous release's",
    )
    p.add_argument(
        "--expires",
        type=_duration,
        default=90 * 86400,
        metavar="DURATION",
        help="release lifetime: seconds or 30d / 12h / 10m (default 90d)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="FILE",
        help="also write the signed release here (default: next to the store db)",
    )
    g = p.add_argument_group("probation (how the new model proves itself on each device)")
    g.add_argument(
        "--min-inferences",
        type=int,
        default=d.min_inferences,
        help=f"inferences before a decision (default {d.min_inferences})",
    )
    g.add_argument(
        "--max-error-rate",
        type=_share,
        default=d.max_error_rate_pct,
        help=f"largest share of failed inferences (default {d.max_error_rate_pct}%%)",
    )
    g.add_argument(
        "--max-latency-ratio",
        type=_ratio_pct,
        default=d.max_latency_ratio_pct,
        help="p95 latency at most this multiple of the previous model's "
        f"(default {d.max_latency_ratio_pct / 100:g})",
    )
    g.add_argument(
        "--min-agreement",
        type=_share,
        default=d.min_agreement_pct,
        help="top-1 agreement with the previous model on the same frames (default 0: off)",
    )
    g.add_argument(
        "--max-probation",
        type=_duration,
        default=d.max_duration_s,
        metavar="DURATION",
        help="undecided after this long: roll back (default 10m)",
    )
    p.add_argument("--json", action="store_true", help="print the release as JSON")
    add_config_argument(p)
    p.set_defaults(func=lambda args: run_command(args, lambda ctx: _release(ctx, args)))


def _release(ctx: Context, args: argparse.Namespace) -> int:
    try:
        profile = load_profile(args.profile, Path.cwd())
    except ProfileInvalid as e:
        raise CommandFailed("\n".join(e.problems), EXIT_INVALID) from e
    if args.min_inferences < 1:
        raise CommandFailed("--min-inferences must be at least 1", EXIT_INVALID)
    if args.candidate and not args.from_report:
        raise CommandFailed("--candidate needs --from-report", EXIT_INVALID)
    key = ctx.release_signer()  # before anything is uploaded: devices must accept its signature
    try:
        provenance = Provenance()
        summary = ""  # the report's figures, stored with the release for the dashboard
        if args.from_report:
            try:
                sha = hashlib.sha256(args.model.read_bytes()).hexdigest()
            except OSError as e:
                raise CommandFailed(f"cannot read {args.model}: {e.strerror}", EXIT_INVALID) from e
            report = read_report(args.from_report)
            provenance = provenance_from_report(args.from_report, sha, args.candidate, report)
            summary = summarize(report, args.from_report, args.candidate)
        if args.samples is not None:
            provenance = _with_samples(provenance, args.samples)
        return _publish(
            ctx,
            key,
            args,
            profile,
            provenance,
            _reference(args),
            _variants(args, provenance),
            summary,
        )
    except ReleaseRefused as e:
        raise CommandFailed(str(e), EXIT_INVALID) from e


def _with_samples(provenance: Provenance, dataset: Path) -> Provenance:
    try:
        data = dataset.read_bytes()
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            count = len(npz["x"])
    except (OSError, ValueError, KeyError) as e:
        raise CommandFailed(
            f"--samples: {dataset} is not a samples dataset: {e}", EXIT_INVALID
        ) from e
    metrics = {
        **provenance.metrics,
        "samples_sha256": hashlib.sha256(data).hexdigest(),
        "samples": count,
    }
    return replace(provenance, metrics=metrics)


def _reference(args: argparse.Namespace) -> ReferenceProfile | None:
    path: Path | None = args.reference
    if path is None and args.from_report is not None:
        beside = args.from_report.parent / FILE_NAME
        path = beside if beside.exists() else None
    if path is None:
        if args.drift_threshold is not None or args.capture_confidence is not None:
            raise CommandFailed(
                "--drift-threshold and --capture-confidence need a reference "
                "profile (--reference or --from-report)",
                EXIT_INVALID,
            )
        return None
    reference = read_reference(path)
    if args.drift_threshold is not None:
        if not 0 < args.drift_threshold <= 1000:
            raise CommandFailed("--drift-threshold must be within (0, 1000]", EXIT_INVALID)
        reference = replace(
            reference, drift_threshold_milli=max(1, round(args.drift_threshold * 1000))
        )
    if args.capture_confidence is not None:
        reference = replace(reference, confidence_threshold_pct=args.capture_confidence)
    return reference


def _ppm(pct: float, what: str) -> int:
    if not 0 <= pct <= 100:
        raise CommandFailed(f"{what}: a quality is a percentage (0-100)", EXIT_INVALID)
    return round(pct * 10_000)


def _report_quality(args: argparse.Namespace, name: str) -> int:
    """Candidate `name`'s quality in ppm from the --from-report file (0 when unknown)."""
    if args.from_report is None:
        return 0
    try:
        report = json.loads(args.from_report.read_text())
    except (OSError, ValueError):
        return 0
    rows = [report.get("baseline"), *report.get("candidates", [])]
    for row in rows:
        if isinstance(row, dict) and row.get("method") == name:
            quality = row.get("accuracy")
            if quality is None:
                quality = row.get("agreement")
            if isinstance(quality, (int, float)) and 0 <= quality <= 1:
                return round(quality * 1_000_000)
    return 0


def _variants(args: argparse.Namespace, provenance: Provenance) -> VariantRequest | None:
    if not args.variant:
        return None
    others = []
    for text in args.variant:
        name, sep, rest = text.partition("=")
        path_text, at, quality = rest.rpartition("@") if "@" in rest else (rest, "", "")
        if not sep or not name or not path_text:
            raise CommandFailed(f"--variant {text!r}: expected NAME=FILE[@QUALITY]", EXIT_INVALID)
        path = Path(path_text)
        if not path.is_file():
            raise CommandFailed(f"--variant {name}: {path} is not a file", EXIT_INVALID)
        try:
            ppm = _ppm(float(quality), f"--variant {name}") if at else _report_quality(args, name)
        except ValueError as e:
            raise CommandFailed(
                f"--variant {name}: {quality!r} is not a percentage", EXIT_INVALID
            ) from e
        others.append((name, path, ppm))
    if not 0 < args.bench_budget <= MAX_BENCH_MS // 1000:
        raise CommandFailed(
            f"--bench-budget must be at most {MAX_BENCH_MS // 1000} s", EXIT_INVALID
        )
    primary = str(provenance.metrics.get("chosen") or "release")
    quality_ppm = (
        _ppm(args.quality, "--quality")
        if args.quality is not None
        else _report_quality(args, primary)
    )
    return VariantRequest(
        primary,
        quality_ppm,
        tuple(others),
        _ppm(args.min_quality, "--min-quality"),
        args.bench_budget * 1000,
    )


def _publish(
    ctx: Context,
    key: SigningKey,
    args: argparse.Namespace,
    profile: DeviceProfile,
    provenance: Provenance,
    reference: ReferenceProfile | None,
    variants: VariantRequest | None,
    report: str,
) -> int:
    request = ReleaseRequest(
        model=args.model,
        name=args.name,
        version=args.version,
        profile=profile.name,
        lifetime_s=args.expires,
        provenance=provenance,
        probation=ProbationPolicy(
            min_inferences=args.min_inferences,
            max_error_rate_pct=args.max_error_rate,
            max_latency_ratio_pct=args.max_latency_ratio,
            min_agreement_pct=args.min_agreement,
            max_duration_s=args.max_probation,
        ),
        max_model_bytes=profile.budget.max_model_bytes,
        new_io=args.new_io,
        reference=reference,
        variants=variants,
        report=report,
    )
    published = publish_release(
        ctx.db,
        ctx.artifacts(),
        key,
        request,
        datetime.now(UTC),
        ctx.config.rollout.release_history,
    )
    audit.record(
        ctx.db,
        audit.Action.RELEASE,
        f"{request.name}@{request.version}/{profile.name}",
        signed=published.envelope,
    )
    out: Path = args.out or (
        ctx.config.store.db.parent / "releases" / f"{request.name}-{request.version}.release.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(published.envelope, indent=2, sort_keys=True) + "\n")
    r = published.release
    if args.json:
        print(
            json.dumps(
                {
                    **r.to_signed(),
                    "envelope": published.envelope,
                    "file": str(out),
                    "artifact_key": published.artifact_key,
                    "delta_keys": list(published.delta_keys),
                }
            )
        )
        return 0
    print(f"released    {r.name}@{r.version} for profile {r.profile}")
    print(f"target      {r.target.sha256}  {r.target.size} bytes")
    print(f"artifact    {r.artifact.size} bytes zstd  {r.artifact.url}")
    for delta in r.deltas:
        print(f"delta       from {delta.base_sha256[:16]}  {delta.size} bytes  {delta.url}")
    for variant in r.variants.candidates if r.variants is not None else ():
        print(
            f"variant     {variant.name}  {variant.size} bytes  quality "
            f"{variant.quality_ppm / 10_000:g} %"
        )
    print(f"expires     {r.expires}")
    print(f"file        {out}")
    return 0
