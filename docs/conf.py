"""Sphinx configuration of the django-alarms documentation.

Build (warnings are errors, as in CI)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

The reference pages use autodoc, so Django is set up with the example project's settings.
The settings reference is generated from ``django_alarms.conf.OPTIONS`` by the small
``alarms-settings`` directive defined at the end of this file, so it cannot drift from the code.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")

import django  # noqa: E402

django.setup()

from django_alarms import __version__  # noqa: E402

# -- Project -------------------------------------------------------------------------------------

project = "django-alarms"
author = "django-alarms developers"
copyright = "2026, django-alarms developers"
release = __version__
version = ".".join(__version__.split(".")[:2])

# -- General -------------------------------------------------------------------------------------

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

myst_enable_extensions = ["colon_fence", "deflist"]
# Setting values and code-like words keep their straight quotes.
smartquotes = False
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autodoc_default_options: dict[str, Any] = {}

# -- HTML ----------------------------------------------------------------------------------------

try:
    import furo  # noqa: F401
except ImportError:  # pragma: no cover - the docs extra installs furo
    html_theme = "alabaster"
else:
    html_theme = "furo"
html_title = f"django-alarms {release}"
html_static_path: list[str] = []

# -- The settings reference: generated from django_alarms.conf.OPTIONS ---------------------------

from docutils import nodes  # noqa: E402
from sphinx.application import Sphinx  # noqa: E402
from sphinx.errors import ExtensionError  # noqa: E402
from sphinx.util.docutils import SphinxDirective  # noqa: E402


def _setting_type(convert: Any) -> str:
    """The type of a setting, in words, from the converter that ``conf.py`` applies to it."""
    from django_alarms import conf

    types = {
        conf._duration: "duration: a timedelta, or a number of seconds; > 0, at most ten years",
        conf._positive_int: f"int, 1 to {conf.MAX_INT:,}",
        conf._concurrency: f"int, 1 to {conf.MAX_CONCURRENCY:,}",
        conf._executor: " or ".join(repr(name) for name in conf.EXECUTORS),
        conf._backoff: "Backoff, or a dict of base / factor / max / jitter",
        conf._words: "list or tuple of non-empty strings (case is ignored)",
        conf._bool: "bool",
        conf._alias: "str: an alias from settings.DATABASES",
        conf._address: 'None, a port (int), or "host:port"',
        conf._token: 'str: "" or at least 16 characters',
        conf._optional_bool: "None, True or False",
        conf._celery: 'dict with "APP", "QUEUE", "QUEUE_WAIT"',
    }
    try:
        return types[convert]
    except KeyError:
        raise ExtensionError(
            f"docs/conf.py does not know the type of settings converted by {convert!r}: add it "
            "to _setting_type()"
        ) from None


def _setting_default(value: object) -> str:
    """A default value as a reader would write it."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
        for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
            if seconds >= size and seconds % size == 0:
                count = int(seconds // size)
                return f"{count} {unit}{'s' if count != 1 else ''}"
        return f"{seconds:g} seconds"
    if isinstance(value, tuple):
        return ", ".join(repr(item) for item in value)
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}".replace(",", " ")
    from django_alarms.conf import CeleryOptions

    if isinstance(value, CeleryOptions):
        wait = _setting_default(value.queue_wait)
        return f'{{"APP": "{value.app}", "QUEUE": "{value.queue}", "QUEUE_WAIT": {wait}}}'
    return repr(value)


class AlarmsSettings(SphinxDirective):
    """``alarms-settings``: a table of every key of ``ALARMS`` (key, type, default, meaning).

    Each key is a target of the ``setting`` role: ``{setting}`LOAD_INTERVAL```.
    """

    has_content = False

    def run(self) -> list[nodes.Node]:
        from django_alarms.conf import OPTIONS

        std = self.env.get_domain("std")
        table = nodes.table(classes=["alarms-settings"])
        group = nodes.tgroup(cols=4)
        table += group
        for width in (22, 26, 18, 34):
            group += nodes.colspec(colwidth=width)
        head = nodes.thead()
        group += head
        head += self._row([nodes.Text(label) for label in ("Key", "Type", "Default", "Meaning")])
        body = nodes.tbody()
        group += body
        for key, option in OPTIONS.items():
            node_id = f"setting-{key}"
            target = nodes.target("", "", ids=[node_id])
            self.set_source_info(target)
            std.note_object("setting", key, node_id, location=target)
            key_cell = nodes.inline()
            key_cell += target
            key_cell += nodes.literal(key, key)
            default = _setting_default(option.default)
            body += self._row(
                [
                    key_cell,
                    nodes.Text(_setting_type(option.convert)),
                    nodes.literal(default, default),
                    nodes.Text(option.doc),
                ]
            )
        return [table]

    @staticmethod
    def _row(cells: list[nodes.Node]) -> nodes.row:
        row = nodes.row()
        for content in cells:
            entry = nodes.entry()
            paragraph = nodes.paragraph()
            paragraph += content
            entry += paragraph
            row += entry
        return row


# -- Every public name of django_alarms.alarms is documented -------------------------------------


def _check_public_api(app: Sphinx, env: Any) -> None:
    """Warn (an error under -W) about names of ``alarms.__all__`` that no page documents."""
    from sphinx.util import logging

    from django_alarms import alarms

    documented = {name for name, *_ in env.get_domain("py").get_objects()}
    missing = [
        name
        for name in alarms.__all__
        if f"django_alarms.alarms.{name}" not in documented
        and f"django_alarms.models.{name}" not in documented
    ]
    if missing:
        logging.getLogger(__name__).warning(
            "django_alarms.alarms.__all__ names not documented in docs/reference/: %s",
            ", ".join(missing),
        )


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_crossref_type("setting", "setting", indextemplate="pair: %s; setting")
    app.add_directive("alarms-settings", AlarmsSettings)
    app.connect("env-check-consistency", _check_public_api)
    return {"parallel_read_safe": True}
