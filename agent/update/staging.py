"""Staging: obtain the release's model (store, local folder, delta or full download), install
it in the model store, load and smoke-test it off the hot path. Ends in `staged` with the model
loaded, or raises.

    downloading -> verifying -> validating -> staged
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.update.context import UpdateContext
from agent.update.crash import crashpoint
from agent.update.journal import JournalEntry
from agent.update.retrieval import Retrieval, TargetRetriever
from agent.update.validation import check_model
from shared.documents import Release
from shared.messages import ModelIdentity
from shared.phases import UpdatePhase
from shared.vocabulary import Via

if TYPE_CHECKING:
    from agent.runtime.protocol import Model

__all__ = ["stage"]


def stage(
    ctx: UpdateContext,
    entry: JournalEntry,
    release: Release,
    active: ModelIdentity,
    retriever: TargetRetriever,
    signers: tuple[str, ...],
) -> tuple[JournalEntry, Model]:
    """The release's model installed, validated and loaded; the journal at `staged`.

    `signers` (the key ids whose signatures on the release verified) are recorded with the
    model, so a later root that drops them can tell the release is no longer trusted.

    Raises:
        Rejected: the bytes or the model are bad (hash, size, delta, signature, smoke test).
        Unavailable: the transport failed (`FetchFailed`, `SlowRetrieval`) or a newer
            deployment took over (`Superseded`).
        OSError: the store could not be written (the caller maps a full disk to `DiskFull`).
    """
    retrieval = _obtain(ctx, release, active, retriever)
    entry = ctx.steps.advance(entry, UpdatePhase.VALIDATING, via=retrieval.via)
    model = validate(ctx, release)
    ctx.journal.remember_model(release.target.sha256, release.name, release.version, signers)
    if ctx.on_release is not None:
        ctx.on_release(release)
    entry = ctx.steps.advance(entry, UpdatePhase.STAGED, detail=retrieval.delta_error)
    return entry, model


def _obtain(
    ctx: UpdateContext, release: Release, active: ModelIdentity, retriever: TargetRetriever
) -> Retrieval:
    target = release.target
    if ctx.store.verified_path(target.sha256) is not None:
        return Retrieval(b"", Via.LOCAL)
    base_path = ctx.store.verified_path(active.sha256)
    base = (active.sha256, base_path) if base_path is not None else None
    retrieval = retriever.obtain(release, base)
    crashpoint("retrieval.done")
    ctx.store.install(retrieval.data, target.sha256)
    retriever.discard(release)
    return retrieval


def validate(ctx: UpdateContext, release: Release) -> Model:
    """Load and smoke-test off the hot path; the model must fit the release and the app."""
    model = ctx.load(ctx.store.path_of(release.target.sha256))
    try:
        recent = ctx.loop.recent_inputs() if ctx.loop is not None else []
        check_model(model, release, ctx.active_io(ctx.active().sha256), recent)
    except BaseException:
        model.close()
        raise
    return model
