"""docs/quickstart.md, followed literally in a brand-new project: every file it shows is
written, every command it shows is run (the installation aside: this test runs in an
environment that has the package, pytest and pytest-django), the worker delivers the alarm
and the page's own test passes. A change that makes the page wrong fails here."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "quickstart.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)
FILE = re.compile(r"^# (?P<path>[\w./]+)(?P<append> \(add at the end\))?$")

pytestmark = pytest.mark.subprocess


def steps() -> list[tuple[str, str, str]]:
    """The page's steps in order: ("file", path, text), ("append", path, text) or
    ("command", line, "")."""
    found: list[tuple[str, str, str]] = []
    for language, body in FENCE.findall(PAGE.read_text()):
        if language == "console":
            found += [
                ("command", line[2:], "") for line in body.splitlines() if line.startswith("$ ")
            ]
            continue
        first = body.partition("\n")[0]
        named = FILE.match(first)
        if named and language in ("python", "toml"):
            found.append(("append" if named["append"] else "file", named["path"], body))
    return found


def environment() -> dict[str, str]:
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "ALARMS"))
    }
    env.pop("DATABASE_URL", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def argv(line: str) -> list[str]:
    words = shlex.split(line)
    if words[0] == ".venv/bin/python":
        return [sys.executable, *words[1:]]
    if words[0] == ".venv/bin/django-admin":
        return [sys.executable, "-m", "django", *words[1:]]
    raise AssertionError(
        f"the quickstart runs {words[0]!r}: only .venv/bin/python and django-admin"
    )


def run(line: str, cwd: Path) -> str:
    done = subprocess.run(
        argv(line), cwd=cwd, env=environment(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"$ {line}\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def worker_until_delivered(line: str, cwd: Path) -> str:
    """``run_alarms`` runs until stopped: run it until the reminder is delivered, then Ctrl-C."""
    log = cwd / "worker.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            argv(line), cwd=cwd, env=environment(), stdout=out, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 90
    try:
        while "send_reminder attempt 1/5: ok" not in log.read_text():
            assert process.poll() is None, f"the worker exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"nothing delivered:\n{log.read_text()}"
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 0, log.read_text()
    return log.read_text()


def test_the_quickstart_works_as_written(tmp_path):
    seen = {kind for kind, _, _ in steps()}
    assert seen == {"command", "file", "append"}, "the page's steps were not recognised"
    output = ""
    for kind, what, text in steps():
        if kind == "command":
            if "pip install" in what or "-m venv" in what:
                continue  # this environment has the package, pytest and pytest-django
            if what.endswith("manage.py run_alarms"):
                output = worker_until_delivered(what, tmp_path)
                continue
            result = run(what, tmp_path)
            if "manage.py migrate" in what:
                assert "django_alarms" in result
            if "pytest" in what:
                assert "1 passed" in result, result
        elif kind == "file":
            (tmp_path / what).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / what).write_text(text)
        else:
            with (tmp_path / what).open("a") as target:
                target.write("\n" + text)
    # The worker printed the reminder (console mail backend) and logged the attempt.
    assert "Subject: Your trial ends soon" in output
    assert "To: ada@example.com" in output
    assert re.search(
        r"Z INFO +django_alarms.worker: alarm \S+ send_reminder attempt 1/5: ok", output
    )
    # The project passes the system checks with no warning (the SQLite options are set).
    assert "no issues" in run(".venv/bin/python manage.py check --fail-level WARNING", tmp_path)
