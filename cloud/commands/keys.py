"""`litefleet keys generate|show`: the release signing key."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from shared.cli_support import EXIT_INVALID
from shared.keys import KeyFileError, PublicKey, SigningKey, save_signing_key

PRIVATE_NAME = "release.key"
PUBLIC_NAME = "release.pub"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = subparsers.add_parser(
        "keys",
        help="generate or show the Ed25519 release signing key",
        description="Manage the Ed25519 key that signs releases and deployments. Devices trust "
        "its public key (the 64 hex characters in release.pub) in their [trust] keys.",
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
        print(f"private key {private} (mode 0600): keep it off devices and out of backups you share")
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


__all__ = ["KeyFileError", "register"]
