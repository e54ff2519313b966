"""Named crash points for crash-safety tests.

`crashpoint("links.between_swaps")` does nothing unless the environment variable
`LITEFLEET_CRASH_AT` names that point, in which case the process kills itself with SIGKILL on
the spot: no cleanup, no flush, exactly what a power cut or an OOM kill leaves behind. The
crash-safety tests run an update in a subprocess once per point and recover in a fresh one.
"""

from __future__ import annotations

import os
import signal

__all__ = ["CRASH_ENV", "crashpoint"]

CRASH_ENV = "LITEFLEET_CRASH_AT"


def crashpoint(name: str) -> None:
    """Die here, now, if the test hook names this point."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
