"""Shared fixtures: the test handlers, the testing helpers' fixtures, a clean registry."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from django_alarms.handlers import registry
from tests import handlers

pytest_plugins = ["django_alarms.testing"]

# Hypothesis: a small budget by default (CI, every run), a long one on demand:
# HYPOTHESIS_PROFILE=long pytest tests/test_properties.py (docs/howto/testing.md).
settings.register_profile(
    "ci",
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "long",
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _restore_registry() -> Iterator[None]:
    """Undo what a test registers or unregisters, so that tests cannot leak handlers."""
    before = {name: registry.get(name) for name in registry.names()}
    yield
    for name in registry.names():
        if name not in before:
            registry.unregister(name)
    for name, spec in before.items():
        if spec is not None and registry.get(name) is not spec:
            registry.unregister(name)
            registry.register(spec)


@pytest.fixture
def delivered() -> Iterator[list]:
    """The contexts the handlers of ``tests/handlers.py`` receive during the test, in order."""
    handlers.calls.clear()
    yield handlers.calls
    handlers.calls.clear()
