"""The compression worker: turn a trained model into measured candidates for a device profile.

    from cloud.compress import compress
    report = compress("model.keras", profile, "train.npz", "eval.npz", None, "out/")
    report.chosen, report.reason, report.provenance

`litefleet compress` (see `cloud.compress.cli`) is the command-line face of `compress`.
"""

from cloud.compress.data import Dataset, load_dataset
from cloud.compress.errors import CompressError, InputRejected, MethodUnavailable
from cloud.compress.measure import Measurement
from cloud.compress.options import CompressOptions
from cloud.compress.report import Report, Skipped
from cloud.compress.worker import DEFAULT_METHODS, METHODS, compress

__all__ = [
    "DEFAULT_METHODS",
    "METHODS",
    "CompressError",
    "CompressOptions",
    "Dataset",
    "InputRejected",
    "Measurement",
    "MethodUnavailable",
    "Report",
    "Skipped",
    "compress",
    "load_dataset",
]
