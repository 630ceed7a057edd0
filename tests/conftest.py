"""Shared pytest configuration: hypothesis profiles and the oracle policy."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

pytest_plugins = ("tests.oracle.fixtures", "tests.oracle.kexec_fixtures")

# "ci" keeps .ci/run within its time budget; "dev" is the default locally; "fuzz" is for long runs.
settings.register_profile(
    "ci", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.register_profile("dev", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("fuzz", max_examples=5000, deadline=None, suppress_health_check=list(HealthCheck))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))
