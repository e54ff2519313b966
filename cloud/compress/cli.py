"""`litefleet compress`: the compression worker on the command line.

`register(subparsers)` (also exported as `add_compress_command`) adds the subcommand;
`run_compress(args)` runs it and returns the exit code: 0 when a candidate was chosen,
3 when nothing fits the profile's budget, 2 for unusable input.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from localio.cli import EXIT_INVALID, EXIT_REJECTED

__all__ = ["add_compress_command", "main", "register", "run_compress"]

METHOD_NAMES = "float16, weight_only_int8, dynamic_int8, int8, prune, distill, qat"

DESCRIPTION = f"""\
Build compressed candidates of a trained model, measure each (size, zstd size, accuracy or
agreement with the original, LiteRT latency with the profile's threads, parameters), and choose
the best one within the device profile's budget.

MODEL is a float .tflite (no TensorFlow needed), a .keras/.h5 file or a SavedModel folder
(TensorFlow needed: the [train] extra). --data and --eval take an .npz with x (and y) or a
folder of images with one sub-folder per class; for a model with several inputs, an .npz with
x0, x1, ... in the order the interpreter lists the inputs. Without labels, quality is agreement with the
original model, output by output (top-1 for class scores, box IoU >= 0.5 for boxes, mask IoU for
masks); without any data, candidates are compared on generated inputs and the report says so.

Candidates keep the application's I/O signature: the original model's, or --io (int8 for int8
inputs and outputs, or the .tflite whose signature the devices expect). A candidate that would
change it, or that compressed nothing ("no effect"), is never chosen; when nothing compresses
the model, the original is kept (chosen: original).

Methods: {METHOD_NAMES}. Default: all the input supports but qat.
Writes float32.tflite, <method>.tflite, report.json, report.md and report.png into --out.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "compress",
        help="compress a model for a device profile and pick the best candidate",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", type=Path, help=".tflite, .keras/.h5, or SavedModel folder")
    parser.add_argument(
        "--profile", required=True, help="device profile: a bundled name or a .toml path"
    )
    parser.add_argument("--data", type=Path, help="training and calibration data")
    parser.add_argument("--eval", type=Path, help="held-out evaluation data")
    parser.add_argument("--out", type=Path, default=Path("compress-out"), help="output folder")
    parser.add_argument("--methods", help=f"comma-separated subset of: {METHOD_NAMES}")
    parser.add_argument(
        "--io",
        help="I/O signature to keep: int8, float32 or a .tflite path (default: the model's own)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for sampling and training")
    parser.add_argument("--json", action="store_true", help="print report.json to stdout")
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="cloud config, accepted like every litefleet command's; "
        "compress reads nothing from it",
    )
    parser.set_defaults(func=run_compress)


add_compress_command = register


def _progress_bar() -> Any:
    """A rich progress bar on stderr when it is a terminal, else None."""
    if not sys.stderr.isatty():
        return None
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]{task.description:<32}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=False,
    )


def run_compress(args: argparse.Namespace) -> int:
    from cloud.compress import CompressError, CompressOptions, compress
    from device_profiles import load_profile
    from device_profiles.profile import ProfileInvalid

    try:
        profile = load_profile(args.profile)
    except ProfileInvalid as e:
        for problem in e.problems:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_INVALID
    methods = args.methods.split(",") if args.methods else None
    bar = _progress_bar()
    try:
        options = CompressOptions(seed=args.seed)
        if bar is None:
            report = compress(
                args.model,
                profile,
                args.data,
                args.eval,
                methods,
                args.out,
                options=options,
                io=args.io,
            )
        else:
            with bar:
                task = bar.add_task("starting", total=None)

                def progress(done: int, total: int, what: str) -> None:
                    bar.update(task, completed=done, total=total, description=what)

                report = compress(
                    args.model,
                    profile,
                    args.data,
                    args.eval,
                    methods,
                    args.out,
                    options=options,
                    progress=progress,
                    io=args.io,
                )
    except (CompressError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INVALID

    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.table())
        if report.generated_inputs:
            print("the figures come from generated inputs (no --data or --eval given)")
        for c in report.candidates:
            for why in (c.no_effect, c.io_change):
                if why is not None:
                    print(f"{c.method}: {why}")
        for s in report.skipped:
            print(f"skipped {s.method}: {s.reason}")
        print(f"chosen: {report.chosen or 'none'}  {report.chosen_path or ''}")
        print(report.reason)
        print(f"report: {Path(args.out) / 'report.md'}  ({report.seconds:.1f} s)")
    return 0 if report.chosen is not None else EXIT_REJECTED


def main(argv: list[str] | None = None) -> int:
    """Run `compress` alone (as `python -m cloud.compress.cli`)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="litefleet")
    register(parser.add_subparsers(title="commands", metavar="COMMAND"))
    args = parser.parse_args(["compress", *(sys.argv[1:] if argv is None else argv)])
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
