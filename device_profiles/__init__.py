"""Device profiles shipped with LiteFleet: one TOML file per hardware class.

`load_profile(name_or_path)` resolves a bundled name (`rpi4`) or a path to a TOML file.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from device_profiles.profile import DeviceProfile, ProfileInvalid, parse_profile

__all__ = ["bundled_profiles", "load_profile"]


def bundled_profiles() -> list[str]:
    return sorted(
        p.name.removesuffix(".toml")
        for p in resources.files(__name__).iterdir()
        if p.name.endswith(".toml")
    )


def load_profile(name_or_path: str, base_dir: Path | None = None) -> DeviceProfile:
    """Load a bundled profile by name, or a profile file by path (relative to `base_dir`)."""
    if "/" in name_or_path or name_or_path.endswith(".toml"):
        path = Path(name_or_path)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ProfileInvalid([f"profile: cannot read {path}: {e.strerror}"]) from e
        return parse_profile(text, str(path))
    resource = resources.files(__name__) / f"{name_or_path}.toml"
    if not resource.is_file():
        known = ", ".join(bundled_profiles())
        raise ProfileInvalid([f"profile: no bundled profile {name_or_path!r} (known: {known})"])
    return parse_profile(resource.read_text(encoding="utf-8"), f"{name_or_path}.toml")
