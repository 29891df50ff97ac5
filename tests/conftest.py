"""Shared fixtures: the test handlers, the testing helpers' fixtures, a clean registry."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from django_alarms.handlers import registry
from tests import handlers

pytest_plugins = ["django_alarms.testing"]


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
