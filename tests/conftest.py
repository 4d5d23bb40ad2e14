"""Test-suite configuration shared by every package's tests."""

import os

from hypothesis import settings

# CI runs the property tests derandomized (the same examples every run, so a red CI is
# reproducible); locally they explore new examples each time.
settings.register_profile("ci", derandomize=True, deadline=None)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")
