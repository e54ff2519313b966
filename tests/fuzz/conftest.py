"""Hypothesis profiles for the fuzz tests in this folder.

    suite   (default)              what `make test` runs: a modest number of examples per test,
                                   all of tests/fuzz well under a minute on a busy 2-core box
    fuzz    HYPOTHESIS_PROFILE=fuzz   `make fuzz`: fifty times as many

The tests take their settings from `FUZZ` (cheap parsers) or `FUZZ_STORE` (examples that write
to SQLite), so the other hypothesis tests of the suite keep their own settings.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
settings.register_profile("suite", max_examples=60, deadline=None, suppress_health_check=_SLOW_OK)
settings.register_profile("fuzz", max_examples=3000, deadline=None, suppress_health_check=_SLOW_OK)

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "suite")
if PROFILE not in ("suite", "fuzz"):
    raise RuntimeError(f"HYPOTHESIS_PROFILE={PROFILE!r}: expected 'suite' or 'fuzz'")
FUZZ = settings(settings.get_profile(PROFILE))
FUZZ_STORE = settings(FUZZ, max_examples=max(10, FUZZ.max_examples // 2))
