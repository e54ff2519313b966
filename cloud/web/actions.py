"""What an operator may change from the dashboard, each recorded in the audit trail.

The same functions as the `litefleet` commands: `cloud.rollout`'s pause, resume and abort and
`create_rollout`, and `litefleet command`'s signed commands; the actor in the audit trail is
the dashboard user. A deployment made here is recorded and left to `serve`'s controller, which
publishes its first wave at the next tick (as it does for a rollout recorded while the broker
was away).
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from cloud import audit
from cloud.commands.command import ACTIONS, build_command
from cloud.config import CloudConfig, CloudRole
from cloud.deploy import TargetError, resolve_targets
from cloud.mqtt import CloudLink
from cloud.release import load_releases
from cloud.rollout import (
    Publish,
    abort_rollout,
    create_rollout,
    parse_waves,
    pause_rollout,
    resume_rollout,
)
from cloud.roots import current_root
from cloud.signers import UntrustedSigner, check_releases, check_signers
from cloud.store import Store
from cloud.store import dashboard as queries
from localio.keyfiles import load_signing_key
from shared.envelope import sign_envelope
from shared.errors import Unavailable
from shared.keys import KeyFileError, SigningKey
from shared.topics import Channel, topic

__all__ = ["ROLLOUT_ACTIONS", "ActionRefused", "deploy", "rollout_action", "send_command"]

log = logging.getLogger(__name__)

ROLLOUT_ACTIONS = ("pause", "resume", "abort")
COMMAND_LIFETIME_S = 300


class ActionRefused(Exception):
    """The action cannot be done as asked; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


@contextmanager
def operator_link(config: CloudConfig) -> Iterator[CloudLink]:
    """A short-lived MQTT connection as the operator role (desired and cmd topics)."""
    cfg = config.mqtt
    link = CloudLink(cfg, f"{cfg.client_id}-web-{secrets.token_hex(3)}", role=CloudRole.OPERATOR)
    try:
        link.start(timeout=5.0)
        yield link
    finally:
        link.stop()


def rollout_action(db: Store, config: CloudConfig, rollout_id: str, action: str, actor: str) -> str:
    """Pause, resume or abort; returns the sentence to show."""
    if action not in ROLLOUT_ACTIONS:
        raise ActionRefused(f"unknown action {action!r}", 404)
    found = queries.rollout(db, rollout_id)
    if found is None:
        raise ActionRefused(f"no rollout {rollout_id!r}", 404)
    if action == "abort" and found["state"] in ("completed", "aborted"):  # before connecting
        raise ActionRefused(f"rollout {rollout_id} is already {found['state']}")
    try:
        if action == "pause":
            pause_rollout(db, rollout_id)
        elif action == "resume":
            resume_rollout(db, rollout_id)
        else:
            _abort(db, config, rollout_id)
    except KeyError as e:
        raise ActionRefused(str(e.args[0]), 404) from e
    except ValueError as e:
        raise ActionRefused(str(e)) from e
    audit.record(db, audit.Action(f"rollout.{action}"), rollout_id, actor=actor)
    log.info("%s: rollout %s %s", actor, rollout_id, action)
    return f"rollout {rollout_id}: {'aborted' if action == 'abort' else action + 'd'}"


def _abort(db: Store, config: CloudConfig, rollout_id: str) -> None:
    try:
        with operator_link(config) as link:
            publish: Publish = lambda d, p: link.publish(  # noqa: E731
                topic(d, Channel.DESIRED, config.mqtt.topic_prefix), p, retain=True
            )
            abort_rollout(db, rollout_id, publish)
    except Unavailable as e:
        log.warning("abort %s: %s; the retained deployments of pending devices stay", rollout_id, e)
        abort_rollout(db, rollout_id, None)


def _signing_key(db: Store, config: CloudConfig) -> SigningKey:
    """The `[signing] key`, once the current root accepts it (`cloud.signers`)."""
    if config.signing.key is None:
        raise ActionRefused("no [signing] key in the config: this server cannot sign", 503)
    try:
        key = load_signing_key(config.signing.key)
    except KeyFileError as e:
        raise ActionRefused(str(e), 503) from e
    try:
        check_signers(db, [key], datetime.now(UTC))
    except UntrustedSigner as e:
        raise ActionRefused(str(e), 409) from e
    return key


def send_command(db: Store, config: CloudConfig, device_id: str, action: str, actor: str) -> str:
    """Sign and publish one command for one device (valid 5 minutes, fresh nonce)."""
    if action not in ACTIONS:
        raise ActionRefused(f"unknown command {action!r} ({', '.join(ACTIONS)})", 422)
    signed = build_command(device_id, action, datetime.now(UTC), COMMAND_LIFETIME_S)
    envelope = sign_envelope(signed, [_signing_key(db, config)])
    try:
        with operator_link(config) as link:
            link.publish(
                topic(device_id, Channel.CMD, config.mqtt.topic_prefix),
                json.dumps(envelope).encode("utf-8"),
            )
    except Unavailable as e:
        raise ActionRefused(f"not sent: {e}", 503) from e
    audit.record(db, audit.Action.COMMAND, device_id, signed=envelope, detail=action, actor=actor)
    log.info("%s: sent %s to %s", actor, action, device_id)
    return f"sent {action} to {device_id}"


def deploy(
    db: Store, config: CloudConfig, name: str, version: int, group: str, waves_text: str, actor: str
) -> str:
    """Record a rollout of name@version to a group; returns its id."""
    try:
        waves = parse_waves(waves_text)
    except ValueError as e:
        raise ActionRefused(str(e), 422) from e
    stored = load_releases(db, name, version)
    if not stored:
        raise ActionRefused(f"no release {name}@{version}", 404)
    now = datetime.now(UTC)
    live = {p: b for p, b in stored.items() if b.release.expires_at > now}
    if not live:
        raise ActionRefused(
            f"release {name}@{version} expired: release it again under a new version"
        )
    try:
        targets = resolve_targets(db, name, set(live), group=group)
    except TargetError as e:
        raise ActionRefused(str(e), 422) from e
    used = {targets[d] for d in targets}
    key = _signing_key(db, config)
    try:
        check_releases(
            current_root(db, key).root, f"{name}@{version}", {p: live[p].envelope for p in used}
        )
    except UntrustedSigner as e:
        raise ActionRefused(str(e), 409) from e
    plan = create_rollout(
        db,
        {p: (live[p].release, live[p].envelope) for p in used},
        targets,
        waves,
        key,
        now,
        lifetime_s=config.rollout.deployment_lifetime_s,
    )
    for device_id, envelope in plan.deployments.items():
        audit.record(
            db,
            audit.Action.DEPLOY,
            f"{plan.rollout_id}/{device_id}",
            signed=envelope,
            detail=f"{name}@{version}",
            actor=actor,
        )
    log.info(
        "%s: rollout %s of %s@%s to group %s (%s devices)",
        actor,
        plan.rollout_id,
        name,
        version,
        group,
        len(targets),
    )
    return plan.rollout_id
