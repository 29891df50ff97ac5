"""Fixtures of the browser tests: Debian's Chromium driven by Playwright, never a downloaded
browser. A missing browser or Playwright is a failure, not a skip: CI must not go green
without having looked at the admin."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connections

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Where screenshots go (ignored by git); good ones are copied to docs/_static/admin/ by hand.
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"


@pytest.fixture
def chromium() -> Iterator[Any]:
    """A headless Chromium from the ``chromium`` package, launched through Playwright.

    Playwright's sync API keeps an event loop running in the test's thread, which makes
    Django refuse ORM calls there; they are plain synchronous calls, so the test allows them
    while the browser is open (and only then).
    """
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(
            "Playwright is not installed: pip install -e '.[browser]' (and never run "
            "'playwright install': the tests use Debian's chromium)",
            pytrace=False,
        )
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium", pytrace=False)
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
            # While Playwright's loop runs, Django keeps this thread's connections apart from
            # the ones it uses outside it (asgiref's Local): close them here, or PostgreSQL
            # refuses to drop the test database that one of them still uses.
            connections.close_all()


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    """A fresh browser context (no cookies) at a desktop size, light colour scheme."""
    context = chromium.new_context(
        viewport={"width": 1366, "height": 900},
        color_scheme="light",
        locale="en-US",
        timezone_id="Europe/Paris",
    )
    context.set_default_timeout(15_000)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
