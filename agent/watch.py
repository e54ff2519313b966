"""After release: drift measurement and sample capture for the model being served.

`ModelWatch` composes the parts (reference profiles by model, the drift monitor, the sample
recorder, its store and the uploader), registers them on the loop, and offers the daemon the
figures for telemetry and the handlers for the `capture` and `upload` commands.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from agent.capture.recorder import CAPTURE_STATE_FILE, MAX_COMMAND_COUNT, SampleRecorder
from agent.capture.store import SampleStore
from agent.capture.uploader import SampleUploader
from agent.config import AgentConfig
from agent.drift import DriftMonitor, DriftOptions
from agent.references import MAX_REFERENCE_BYTES, ReferenceBook
from agent.update.modelstore import file_sha256
from shared.documents import IOSignature, Release, load_json
from shared.errors import MalformedDocument, Rejected
from shared.messages import Command, DriftSummary, ModelIdentity
from shared.reference import ReferenceProfile

__all__ = ["ModelWatch"]

log = logging.getLogger(__name__)


class ModelWatch:
    def __init__(
        self,
        config: AgentConfig,
        loop: Any,
        stop: threading.Event,
        identity: Callable[[], ModelIdentity | None],
        publish_capture: Callable[[bytes], Any],
        on_event: Callable[[str, dict[str, Any]], None],
    ) -> None:
        self._loop = loop
        self._on_event = on_event
        self.references = ReferenceBook(config.state_dir)
        if config.drift.reference is not None:
            try:
                initial = ReferenceProfile.parse(
                    load_json(config.drift.reference.read_bytes(), MAX_REFERENCE_BYTES),
                    "drift.reference",
                )
                self.references.remember(file_sha256(config.model.initial), initial)
            except (OSError, Rejected) as e:
                log.error(
                    "[drift] reference %s is unusable (%s): the initial model's drift is "
                    "not measured",
                    config.drift.reference,
                    e,
                )
        d = config.drift
        self.drift = DriftMonitor(
            self.references,
            self._signature_of,
            stop,
            DriftOptions(enabled=d.enabled, window=d.window, sample_hz=d.sample_hz),
            on_drift=self._drifted,
        )
        c = config.capture
        self.samples = SampleStore(config.state_dir / "samples", int(c.max_disk_mb * 1024 * 1024))
        self.recorder = SampleRecorder(
            c,
            self.samples,
            config.state_dir / CAPTURE_STATE_FILE,
            self.references,
            self._signature_of,
            identity,
            stop,
            drifting=self._drifting,
        )
        self.uploader = SampleUploader(self.samples, config.device_id, publish_capture, stop)

    def _signature_of(self, sha256: str) -> IOSignature | None:
        model = self._loop.model
        if model.sha256 != sha256:
            return None
        signature: IOSignature = model.signature
        return signature

    def _drifting(self) -> bool:
        summary = self.drift.summary
        return summary is not None and summary.score > summary.threshold

    def _drifted(self, detail: dict[str, Any]) -> None:
        self._on_event("drift", detail)

    def remember_release(self, release: Release) -> None:
        """The updater's hand-off: a verified release's reference profile, by its model."""
        self.references.remember(release.target.sha256, release.reference)

    def start(self) -> None:
        self._loop.add_listener(self._observe)
        self.drift.start()
        self.recorder.start()
        self.uploader.start()

    def _observe(self, result: Any) -> None:
        self.drift.observe(result)
        self.recorder.observe(result)

    def stop(self) -> None:
        self.drift.join()
        self.recorder.join()
        self.uploader.join()

    def summary(self) -> DriftSummary | None:
        return self.drift.summary

    # -- signed commands ---------------------------------------------------------------------

    def capture_command(self, command: Command) -> None:
        """`capture` with `{"count": N}` (keep the next N frames) or `{"enabled": bool}`."""
        args = command.args
        count, enabled = args.get("count"), args.get("enabled")
        if set(args) - {"count", "enabled"} or (count is None and enabled is None):
            raise MalformedDocument("capture takes count and/or enabled", "signed.args")
        if enabled is not None:
            if not isinstance(enabled, bool):
                raise MalformedDocument("expected a boolean", "signed.args.enabled")
            self.recorder.set_enabled(enabled)
        if count is not None:
            if (
                isinstance(count, bool)
                or not isinstance(count, int)
                or not (0 < count <= MAX_COMMAND_COUNT)
            ):
                raise MalformedDocument(f"expected 1 to {MAX_COMMAND_COUNT}", "signed.args.count")
            self.recorder.request(count)

    def upload_command(self, command: Command) -> None:
        self.uploader.grant(command)
