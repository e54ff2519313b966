"""The systemd files the installer writes: the unit (with its venv prefix), the sysusers.d and
tmpfiles.d snippets, and the drop-in that carries the device profile's limits.

The templates are the files in the project's `systemd/` folder: found next to the source tree
(a checkout or an editable install) or under `<venv>/share/litefleet/systemd` (a wheel install).
"""

from __future__ import annotations

import sys
from pathlib import Path, PurePosixPath

import agent
from device_profiles.profile import DeviceProfile

__all__ = [
    "DEFAULT_PREFIX",
    "UNIT_NAME",
    "UnitTemplates",
    "check_prefix",
    "find_templates",
    "render_profile_dropin",
    "render_unit",
]

UNIT_NAME = "litefleet-agent.service"
DEFAULT_PREFIX = "/opt/litefleet"
# ProtectHome= hides these from the service, so a venv there could not even be executed.
_HIDDEN_BY_PROTECT_HOME = ("/home", "/root", "/run/user")
EDGETPU_HINT = "edgetpu"


class UnitTemplates:
    """The texts of the unit and snippets as shipped in `systemd/`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.unit = (folder / UNIT_NAME).read_text(encoding="utf-8")
        self.sysusers = (folder / "litefleet.sysusers").read_text(encoding="utf-8")
        self.tmpfiles = (folder / "litefleet.tmpfiles").read_text(encoding="utf-8")


def find_templates() -> UnitTemplates:
    candidates = [
        Path(agent.__file__).resolve().parent.parent / "systemd",
        Path(sys.prefix) / "share" / "litefleet" / "systemd",
    ]
    for folder in candidates:
        if (folder / UNIT_NAME).is_file():
            return UnitTemplates(folder)
    raise FileNotFoundError(f"no {UNIT_NAME} template in {' or '.join(str(c) for c in candidates)}")


def check_prefix(prefix: str) -> str | None:
    """A problem with an installation prefix, or None when it can serve as one."""
    p = PurePosixPath(prefix)
    if not p.is_absolute():
        return f"--prefix {prefix!r} must be an absolute path"
    if any(c.isspace() or c in "\"'\\%$;" for c in prefix):
        return f"--prefix {prefix!r}: no spaces, quotes or % in a path systemd has to run"
    if any(p == PurePosixPath(h) or PurePosixPath(h) in p.parents for h in _HIDDEN_BY_PROTECT_HOME):
        return f"--prefix {prefix!r} lies where ProtectHome= hides it from the service"
    return None


def render_unit(template: str, prefix: str) -> str:
    """The unit with its ExecStart pointing into `<prefix>/venv`."""
    normalized = str(PurePosixPath(prefix))
    old = f"{DEFAULT_PREFIX}/venv/"
    if old not in template:
        raise ValueError(f"the unit template has no {old} path to relocate")
    return template.replace(old, f"{normalized}/venv/")


def render_profile_dropin(profile: DeviceProfile) -> str:
    """`litefleet-agent.service.d/50-profile.conf`: the profile's memory budget and devices."""
    mb = profile.budget.memory_mb
    lines = [
        f"# Written by `litefleet-agent install` from the device profile {profile.name!r};",
        "# installing again rewrites it. Put your own overrides in another drop-in (60-*.conf).",
        "[Service]",
        f"MemoryMax={mb}M",
        # Reclaim pressure before the hard limit: the kernel trims caches instead of killing.
        f"MemoryHigh={mb * 9 // 10}M",
    ]
    if any(EDGETPU_HINT in d for d in profile.runtime.delegates):
        lines += [
            "# Edge TPU over USB: libedgetpu opens /dev/bus/usb through libusb, whose hotplug",
            "# monitor needs a netlink socket; the Coral udev rule gives plugdev the device.",
            "SupplementaryGroups=plugdev",
            "DeviceAllow=char-usb_device rw",
            "RestrictAddressFamilies=AF_NETLINK",
        ]
    return "\n".join(lines) + "\n"
