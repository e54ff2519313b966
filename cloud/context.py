"""What every `litefleet` command starts from: the config, and on demand the store, the
artifact store and the signing key (checked against the current root before anything is
signed with it, see `cloud.signers`). Problems become one-line errors and an exit code."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cloud.artifacts import ArtifactStore, open_artifact_store
from cloud.config import CloudConfig, CloudConfigInvalid, default_config_path, load_cloud_config
from cloud.store import Store, open_store
from localio.keyfiles import load_signing_key
from shared.errors import Rejected, Unavailable
from shared.keys import KeyFileError, SigningKey

__all__ = ["CommandFailed", "Context", "add_config_argument", "open_context", "run_command"]


class CommandFailed(Exception):
    """A command cannot go on; `code` is the exit code and the message is printed."""

    def __init__(self, message: str, code: int) -> None:
        self.code = code
        super().__init__(message)


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="cloud config (default: $LITEFLEET_CONFIG or ./cloud.toml)",
    )


@dataclass
class Context:
    config: CloudConfig
    _db: Store | None = field(default=None, repr=False)

    @property
    def db(self) -> Store:
        """The store, opened on first use."""
        if self._db is None:
            self._db = open_store(self.config.store)
        return self._db

    def default_public_url(self) -> str:
        h = self.config.http
        host = "127.0.0.1" if h.host in ("0.0.0.0", "::", "") else h.host
        return f"http://{host}:{h.port}/artifacts"

    def artifacts(self) -> ArtifactStore:
        return open_artifact_store(self.config.store, self.default_public_url())

    def signing_key(self) -> SigningKey:
        from localio.cli import EXIT_INVALID

        path = self.config.signing.key
        if path is None:
            raise CommandFailed(
                "no [signing] key in the config: run `litefleet keys generate "
                '--dir keys/` and set key = "keys/release.key"',
                EXIT_INVALID,
            )
        try:
            return load_signing_key(path)
        except KeyFileError as e:
            raise CommandFailed(str(e), EXIT_INVALID) from e

    def release_signer(self) -> SigningKey:
        """The `[signing] key`, once the current root is known to accept what it signs: what
        every command that signs for devices uses, before it writes or publishes anything."""
        from cloud.signers import UntrustedSigner, check_signers
        from localio.cli import EXIT_INVALID

        key = self.signing_key()
        try:
            check_signers(self.db, [key], datetime.now(UTC))
        except UntrustedSigner as e:
            raise CommandFailed(str(e), EXIT_INVALID) from e
        return key

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def open_context(args: argparse.Namespace) -> Context:
    from localio.cli import EXIT_INVALID

    path: Path = getattr(args, "config", None) or default_config_path()
    try:
        return Context(load_cloud_config(path))
    except CloudConfigInvalid as e:
        raise CommandFailed("\n".join(e.problems), EXIT_INVALID) from e


def run_command(args: argparse.Namespace, body: Callable[[Context], int]) -> int:
    """Open the context, run `body`, and turn every expected failure into a line and a code."""
    from sqlalchemy.exc import SQLAlchemyError

    from cloud.artifacts import StoreError
    from cloud.store import StoreRefused, describe_error
    from localio.cli import EXIT_INVALID, EXIT_REJECTED, EXIT_UNAVAILABLE

    try:
        ctx = open_context(args)
    except CommandFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return e.code
    try:
        return body(ctx)
    except CommandFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return e.code
    except Rejected as e:
        print(f"error: {e} ({e.reason})", file=sys.stderr)
        return EXIT_REJECTED
    except BrokenPipeError:
        raise  # the reader went away: `litefleet.cli` ends quietly
    except StoreRefused as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INVALID
    except (Unavailable, StoreError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except SQLAlchemyError as e:  # the store did not answer (down, unreachable, refused login)
        print(f"error: the store: {describe_error(e)}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INVALID
    finally:
        ctx.close()
