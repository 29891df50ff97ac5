"""What a new user meets first: the commands' version and help, clear errors for a missing
executor or a wrong setting, the SQLite warning, the log line of an alarm due before start."""

from __future__ import annotations

import importlib.util
import logging
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

from django_alarms import __version__, alarms, checks, clock
from django_alarms.conf import validate
from django_alarms.management.commands.run_alarms import Command as RunAlarms
from django_alarms.worker.runner import Options, Runner


def test_version_is_django_alarms_own(capsys):
    parser = RunAlarms().create_parser("manage.py", "run_alarms")
    with pytest.raises(SystemExit):
        parser.parse_args(["--version"])
    assert capsys.readouterr().out.strip() == f"django-alarms {__version__}"


@override_settings(ALARMS={"CONCURRENCY": 12})
def test_help_shows_the_values_in_force():
    text = RunAlarms().create_parser("manage.py", "run_alarms").format_help()
    assert "(default: 12, from" in " ".join(text.split())
    assert "(default: inline, from" in " ".join(text.split())


def test_an_executor_whose_package_is_missing_is_a_command_error(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "django_q" else real(name, *a)
    )
    with pytest.raises(CommandError, match=r"needs django-q2.*django-alarms\[django-q\]"):
        call_command("run_alarms", "--once", "--executor", "django_q")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("abc", "is 'abc': a duration is a timedelta or a number (a number means seconds)"),
        (0, "is 0: must be positive"),
    ],
)
def test_a_wrong_duration_reads_as_a_sentence(value, problem):
    with override_settings(ALARMS={"LOAD_INTERVAL": value}):
        assert validate() == [("LOAD_INTERVAL", problem)]
        (message,) = checks.check_settings(None)
    assert message.msg == f'ALARMS["LOAD_INTERVAL"] {problem}.'


@pytest.mark.parametrize(
    ("options", "warned"),
    [
        ({}, True),
        ({"timeout": 30, "transaction_mode": "IMMEDIATE"}, True),
        (checks.SQLITE_OPTIONS, False),
    ],
    ids=["none", "no-wal", "all"],
)
def test_sqlite_without_its_options_is_a_warning(monkeypatch, options, warned):
    databases = {
        "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "/tmp/x.db", "OPTIONS": options}
    }
    monkeypatch.setattr(checks, "settings", SimpleNamespace(DATABASES=databases))
    found = checks._check_sqlite()
    assert [message.id for message in found] == (["django_alarms.W001"] if warned else [])
    if warned:
        assert "database is locked" in found[0].msg
        assert "journal_mode=WAL" in found[0].msg


def test_an_in_memory_sqlite_database_is_not_warned_about(monkeypatch):
    databases = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
    monkeypatch.setattr(checks, "settings", SimpleNamespace(DATABASES=databases))
    assert checks._check_sqlite() == []


@pytest.mark.django_db(transaction=True)
def test_an_alarm_due_before_the_worker_started_says_so(caplog):
    early = alarms.schedule("tests.ok", {}, at=clock.now() - timedelta(seconds=2))
    caplog.set_level(logging.INFO, logger="django_alarms")
    Runner(Options.from_settings(once=True)).run()
    (line,) = [r.getMessage() for r in caplog.records if str(early.id) in r.getMessage()]
    assert "ms late: due before this worker started)" in line
