import hashlib
import os
import stat

import pytest

from localio.keyfiles import load_signing_key, save_signing_key
from shared.keys import KeyFileError, PublicKey, SigningKey


def test_keyid_is_sha256_of_raw_public_key():
    key = SigningKey.generate()
    assert key.keyid == hashlib.sha256(key.public.raw).hexdigest()
    assert PublicKey.from_hex(key.public.hex) == key.public


def test_saved_key_is_owner_only_and_loads_back(tmp_path):
    key = SigningKey.generate()
    path = tmp_path / "release.key"
    save_signing_key(key, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = load_signing_key(path)
    assert loaded.public == key.public
    assert key.public.verify(loaded.sign(b"m"), b"m")


def test_save_refuses_to_overwrite(tmp_path):
    path = tmp_path / "release.key"
    save_signing_key(SigningKey.generate(), path)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        save_signing_key(SigningKey.generate(), path)
    assert path.read_bytes() == before


def test_load_refuses_group_or_world_readable_key(tmp_path):
    path = tmp_path / "release.key"
    save_signing_key(SigningKey.generate(), path)
    os.chmod(path, 0o640)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_signing_key(path)


def test_load_refuses_garbage(tmp_path):
    path = tmp_path / "release.key"
    path.write_bytes(b"not a key")
    os.chmod(path, 0o600)
    with pytest.raises(KeyFileError):
        load_signing_key(path)


def test_a_signer_counts_as_verify_envelope_does():
    """`reached_by` is the count `verify_envelope` makes: what a signer checks before signing."""
    from shared.envelope import sign_envelope, verify_envelope
    from shared.errors import BadSignature
    from shared.keys import Keyring, RevokedKey

    a, b, c = (SigningKey.generate() for _ in range(3))
    ring = Keyring((a.public, b.public), 2, (RevokedKey(c.public, 3),))
    assert ring.trusted_among([a.keyid, c.keyid, a.keyid, b.keyid]) == (a.keyid, b.keyid)
    for signers in ([a], [a, a], [a, c]):  # one key twice counts once; a revoked key never
        assert not ring.reached_by(k.keyid for k in signers)
        with pytest.raises(BadSignature):
            verify_envelope(sign_envelope({"x": 1}, signers), ring)
    assert ring.reached_by([b.keyid, a.keyid])
    assert verify_envelope(sign_envelope({"x": 1}, [b, a]), ring) == {"x": 1}
