"""Test-suite configuration.

Hypothesis runs derandomized (the examples are a fixed function of each test), so that CI is
reproducible: a property that fails does so on every run, and a known defect is pinned by an
explicit ``xfail(strict=True)`` test rather than showing up as a flaky failure.  Set
``HYPOTHESIS_PROFILE=explore`` to draw fresh random examples (what a bug hunt wants).
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
