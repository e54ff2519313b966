"""`litefleet keys generate|show|rotate`: the release signing key, and rotating the keys that
devices trust (a signed root, see `cloud.roots` and docs/security.md)."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cloud import audit
from cloud.context import CommandFailed, Context, add_config_argument, run_command
from cloud.durations import parse_duration
from cloud.roots import RootChange, current_root, rotate, stored_roots
from localio.cli import EXIT_INVALID
from localio.keyfiles import load_signing_key, save_signing_key
from shared.errors import MalformedDocument
from shared.keys import HEX64, KeyFileError, PublicKey, SigningKey
from shared.root import describe

PRIVATE_NAME = "release.key"
PUBLIC_NAME = "release.pub"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = subparsers.add_parser(
        "keys",
        help="generate or show a signing key; rotate the keys devices trust",
        description="Manage the Ed25519 key that signs releases and deployments. Devices trust "
        "its public key (the 64 hex characters in release.pub) in their [trust] keys, and "
        "`keys rotate` changes the keys they trust over the air (docs/security.md).",
    )
    sub = keys.add_subparsers(title="actions", metavar="ACTION")
    gen = sub.add_parser(
        "generate",
        help="write DIR/release.key (mode 0600) and DIR/release.pub",
        description="Generate a new signing key. Refuses to overwrite an existing key.",
    )
    gen.add_argument("--dir", required=True, type=Path, help="folder for the key files")
    gen.add_argument("--json", action="store_true", help="print keyid and public key as JSON")
    gen.set_defaults(func=_generate)
    show = sub.add_parser("show", help="print the key id and public key")
    show.add_argument("--dir", required=True, type=Path, help="folder holding release.pub")
    show.add_argument("--json", action="store_true", help="print as JSON")
    show.set_defaults(func=_show)
    _register_rotate(sub)

    def usage(_args: argparse.Namespace) -> int:
        keys.print_help()
        return EXIT_INVALID

    keys.set_defaults(func=usage)


def _print(public: PublicKey, path: Path, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"keyid": public.keyid, "public_key": public.hex, "path": str(path)}))
    else:
        print(f"keyid       {public.keyid}\npublic key  {public.hex}\nfile        {path}")


def _generate(args: argparse.Namespace) -> int:
    folder: Path = args.dir
    private, public = folder / PRIVATE_NAME, folder / PUBLIC_NAME
    for path in (private, public):
        if path.exists():
            print(f"error: {path} exists; refusing to overwrite a key", file=sys.stderr)
            return EXIT_INVALID
    folder.mkdir(parents=True, exist_ok=True)
    key = SigningKey.generate()
    save_signing_key(key, private)
    public.write_text(key.public.hex + "\n")
    _print(key.public, public, args.json)
    if not args.json:
        print(
            f"private key {private} (mode 0600): keep it off devices and out of backups you share"
        )
    return 0


def _show(args: argparse.Namespace) -> int:
    path: Path = args.dir / PUBLIC_NAME
    try:
        public = PublicKey.from_hex(path.read_text())
    except OSError as e:
        print(f"error: {path}: {e.strerror}", file=sys.stderr)
        return EXIT_INVALID
    except Exception as e:  # a malformed key file: say which and why
        print(f"error: {path}: {e}", file=sys.stderr)
        return EXIT_INVALID
    _print(public, path, args.json)
    return 0


def _register_rotate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rot = sub.add_parser(
        "rotate",
        help="write the next root: add or remove (revoke) release and root keys",
        description="Write root version N+1 into the store: the current root's release keys "
        "with --add/--remove applied (and root keys with --add-root/--remove-root), signed by "
        "every --sign key file. Devices accept it only when it is signed by a threshold of the "
        "current root keys and of its own root keys, so --sign both the old and the new root "
        "keys (a root key kept offline is read from its medium here). `litefleet trust "
        "publish` sends it; releases signed by a removed key are then refused.",
    )
    rot.add_argument("--add", nargs="+", default=[], metavar="KEY.pub", help="release keys to add")
    rot.add_argument(
        "--remove", nargs="+", default=[], metavar="KEY.pub", help="release keys to remove (revoke)"
    )
    rot.add_argument(
        "--threshold",
        type=int,
        default=None,
        help="release signatures required (default: as now, at most the keys left)",
    )
    rot.add_argument(
        "--add-root", nargs="+", default=[], metavar="KEY.pub", help="root keys to add"
    )
    rot.add_argument(
        "--remove-root", nargs="+", default=[], metavar="KEY.pub", help="root keys to remove"
    )
    rot.add_argument(
        "--root-threshold",
        type=int,
        default=None,
        help="root signatures required (default: as now, at most the keys left)",
    )
    rot.add_argument(
        "--sign",
        nargs="+",
        action="extend",
        required=True,
        type=Path,
        metavar="KEY",
        help="private key files that sign the new root (several)",
    )
    rot.add_argument(
        "--expires",
        default="365d",
        metavar="DURATION",
        help="root lifetime: 365d, 52w... (default 365d)",
    )
    rot.add_argument("--json", action="store_true", help="print the new root as JSON")
    add_config_argument(rot)
    rot.set_defaults(func=lambda args: run_command(args, lambda ctx: _rotate(ctx, args)))


def _public(text: str) -> PublicKey:
    """A public key given as 64 hex characters or as a `.pub` file holding them."""
    try:
        return PublicKey.from_hex(text if HEX64.match(text) else Path(text).read_text())
    except OSError as e:
        raise CommandFailed(f"{text}: {e.strerror}", EXIT_INVALID) from e
    except MalformedDocument as e:
        raise CommandFailed(f"{text}: {e}", EXIT_INVALID) from e


def _configured_key(ctx: Context) -> SigningKey | None:
    """The `[signing] key`: it stands for root version 1 until a root is stored, and is only
    checked against the new root afterwards (an unreadable one is then no reason to stop)."""
    if ctx.config.signing.key is None:
        return None
    try:
        return ctx.signing_key()
    except CommandFailed:
        if not stored_roots(ctx.db):
            raise
        return None


def _change_detail(change: RootChange) -> str:
    def ids(keys: tuple[PublicKey, ...]) -> str:
        return ",".join(k.keyid[:16] for k in keys) or "-"

    return (
        f"release keys +{ids(change.add)} -{ids(change.remove)}; root keys "
        f"+{ids(change.add_root)} -{ids(change.remove_root)}"
    )


def _rotate(ctx: Context, args: argparse.Namespace) -> int:
    try:
        lifetime = parse_duration(args.expires)
        signers = [load_signing_key(path) for path in args.sign]
    except (ValueError, KeyFileError) as e:
        raise CommandFailed(str(e), EXIT_INVALID) from e
    change = RootChange(
        add=tuple(_public(k) for k in args.add),
        remove=tuple(_public(k) for k in args.remove),
        threshold=args.threshold,
        add_root=tuple(_public(k) for k in args.add_root),
        remove_root=tuple(_public(k) for k in args.remove_root),
        root_threshold=args.root_threshold,
        lifetime=timedelta(seconds=lifetime),
    )
    signing = _configured_key(ctx)
    try:
        current = current_root(ctx.db, signing)
        trusted = rotate(ctx.db, current, change, signers, datetime.now(UTC))
    except ValueError as e:
        raise CommandFailed(str(e), EXIT_INVALID) from e
    assert trusted.envelope is not None
    audit.record(
        ctx.db,
        audit.Action.KEYS_ROTATE,
        f"root v{trusted.version}",
        signed=trusted.envelope,
        detail=_change_detail(change),
    )
    out = ctx.config.store.db.parent / "roots" / f"{trusted.version}.root.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(trusted.envelope, indent=2, sort_keys=True) + "\n")
    if args.json:
        print(
            json.dumps({**trusted.envelope["signed"], "sha256": trusted.sha256, "file": str(out)})
        )
        return 0
    print(f"wrote       {describe(trusted.root)}")
    print(f"sha256      {trusted.sha256}")
    print(f"file        {out}")
    print("next        litefleet trust publish; then sign releases with a current release key")
    if signing is not None and signing.public not in trusted.root.release_keys:
        print(
            f"warning: [signing] key {ctx.config.signing.key} is not a release key of root "
            f"v{trusted.version}: point it at one after `litefleet trust publish`",
            file=sys.stderr,
        )
    return 0


__all__ = ["KeyFileError", "register"]
