"""Bad input is :class:`InvalidAlarm` naming the field and the value, nothing is written, and the
caller's transaction stays usable (issue 13), on every database: instants outside the times an
alarm can hold, integers out of their column's range, payloads nested too deeply, text no
database stores, absurd time zone names, schedules that could never repeat, and ``run_alarms``
options."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction
from django.test import override_settings
from django.urls import reverse

from django_alarms import alarms, conf, recurrence, validation
from django_alarms.exceptions import MAX_SHOWN
from django_alarms.handlers import registry
from django_alarms.models import Alarm
from django_alarms.testing import run_due

pytestmark = pytest.mark.django_db

UTC = timezone.utc
PLUS_5 = timezone(timedelta(hours=5))
PLUS_23_58 = timezone(timedelta(hours=23, minutes=58))
NEW_YORK = ZoneInfo("America/New_York")
#: The instants of issue 13: stored on PostgreSQL as a date before the Common Era (no worker
#: could load it), and as year 10000 (the admin list answered 500).
YEAR_ONE_PLUS_5 = datetime(1, 1, 1, tzinfo=PLUS_5)
YEAR_9999_NEW_YORK = datetime(9999, 12, 31, 20, tzinfo=NEW_YORK)
#: More days than any alarm can be away.
FAR = timedelta(days=3_700_000)


def nested(depth: int) -> Any:
    """A payload ``depth`` lists deep (``nested(1) == [0]``)."""
    payload: Any = 0
    for _ in range(depth):
        payload = [payload]
    return payload


def _rows() -> list[tuple[Any, ...]]:
    return list(
        Alarm.objects.order_by("pk").values_list(
            "pk", "state", "due_at", "payload", "key", "name", "cancel_reason", "updated_at"
        )
    )


def assert_rejected(call: Callable[[], object], field: str) -> alarms.InvalidAlarm:
    """``call()`` raises InvalidAlarm naming ``field``, writes nothing, and the caller's
    transaction is still usable: a query and a later schedule() work in it."""
    before = _rows()
    with transaction.atomic():
        with pytest.raises(alarms.InvalidAlarm) as caught:
            call()
        assert _rows() == before
        later = alarms.schedule("tests.ok", {"after": "the error"}, key="later")
    assert Alarm.objects.get(pk=later.pk).payload == {"after": "the error"}
    error = caught.value
    assert error.field == field, str(error)
    message = str(error)
    assert f"{field}=" in message
    assert len(message) < MAX_SHOWN + 500
    return error


def schedule(**kwargs: Any) -> Callable[[], object]:
    return lambda: alarms.schedule("tests.ok", **kwargs)


def recurring(**kwargs: Any) -> Callable[[], object]:
    kwargs.setdefault("every", 60)
    return lambda: alarms.schedule_recurring("tests.ok", **kwargs)


def many(**kwargs: Any) -> Callable[[], object]:
    return lambda: alarms.schedule_many(
        [alarms.Spec("tests.ok"), alarms.Spec("tests.ok", **kwargs)]
    )


def _handler(**kwargs: Any) -> Callable[[], object]:
    name = kwargs.pop("name", "tests.bad_input")
    return lambda: alarms.handler(name, **kwargs)(lambda alarm: None)


CASES: list[Any] = [
    # -- instants ----------------------------------------------------------------------------
    pytest.param(schedule(at=YEAR_ONE_PLUS_5), "at", id="at-year-1-plus-5"),
    pytest.param(schedule(at=YEAR_9999_NEW_YORK), "at", id="at-9999-new-york"),
    pytest.param(schedule(at=datetime(1, 1, 2, 1, tzinfo=PLUS_23_58)), "at", id="at-plus-23:58"),
    pytest.param(schedule(at=datetime.max.replace(tzinfo=UTC)), "at", id="at-max"),
    pytest.param(schedule(at=datetime.min.replace(tzinfo=UTC)), "at", id="at-min"),
    pytest.param(
        schedule(at=validation.LATEST + timedelta(microseconds=1)), "at", id="at-past-latest"
    ),
    pytest.param(schedule(delay=FAR), "delay", id="delay-far"),
    pytest.param(schedule(delay=timedelta.max), "delay", id="delay-max"),
    pytest.param(schedule(delay=FAR.total_seconds()), "delay", id="delay-seconds-far"),
    pytest.param(schedule(delay=10**400), "delay", id="delay-10**400"),
    pytest.param(
        lambda: alarms.schedule(
            "tests.ok",
            delay=validation.LATEST - datetime.now(UTC) + timedelta(days=1),
        ),
        "delay",
        id="delay-just-past-latest",
    ),
    pytest.param(recurring(start_at=YEAR_ONE_PLUS_5), "start_at", id="start_at-year-1"),
    pytest.param(recurring(start_at=YEAR_9999_NEW_YORK), "start_at", id="start_at-9999"),
    pytest.param(recurring(end_at=YEAR_9999_NEW_YORK), "end_at", id="end_at-9999"),
    pytest.param(
        recurring(every=None, cron="0 9 * * *", end_at=datetime.max.replace(tzinfo=UTC)),
        "end_at",
        id="end_at-max",
    ),
    pytest.param(many(at=YEAR_9999_NEW_YORK), "at", id="many-at-9999"),
    pytest.param(many(at=YEAR_ONE_PLUS_5), "at", id="many-at-year-1"),
    pytest.param(many(delay=FAR), "delay", id="many-delay-far"),
    # -- integers ----------------------------------------------------------------------------
    pytest.param(schedule(max_attempts=2**31), "max_attempts", id="max_attempts-2**31"),
    pytest.param(schedule(max_attempts=2**63), "max_attempts", id="max_attempts-2**63"),
    pytest.param(schedule(max_attempts=10**5000), "max_attempts", id="max_attempts-5000-digits"),
    pytest.param(many(max_attempts=2**64), "max_attempts", id="many-max_attempts-2**64"),
    pytest.param(schedule(timeout=10**400), "timeout", id="timeout-10**400"),
    pytest.param(schedule(timeout=-(10**400)), "timeout", id="timeout-minus-10**400"),
    pytest.param(schedule(timeout=10**5000), "timeout", id="timeout-5000-digits"),
    pytest.param(schedule(timeout=timedelta.max), "timeout", id="timeout-max"),
    pytest.param(
        recurring(every=None, rate=None, cron="* * * * *", max_attempts=2**31),
        "max_attempts",
        id="recurring-max_attempts-2**31",
    ),
    pytest.param(_handler(max_attempts=2**64), "max_attempts", id="handler-max_attempts-2**64"),
    pytest.param(_handler(max_attempts=2**31), "max_attempts", id="handler-max_attempts-2**31"),
    pytest.param(_handler(timeout=10**400), "timeout", id="handler-timeout-10**400"),
    pytest.param(_handler(backoff={"base": 10**400}), "backoff.base", id="handler-backoff-base"),
    pytest.param(lambda: alarms.Minutes(10**30), "rate", id="minutes-10**30"),
    pytest.param(lambda: alarms.Hours(10**30), "rate", id="hours-10**30"),
    pytest.param(lambda: alarms.Days(10**9), "rate", id="days-10**9"),
    pytest.param(lambda: alarms.Days(10**5000), "rate", id="days-5000-digits"),
    pytest.param(lambda: alarms.Backoff(base=10**400), "backoff.base", id="backoff-base-10**400"),
    pytest.param(lambda: alarms.Backoff(max=1e300), "backoff.max", id="backoff-max-1e300"),
    pytest.param(
        lambda: alarms.Backoff(max=timedelta.max), "backoff.max", id="backoff-max-timedelta"
    ),
    pytest.param(
        lambda: alarms.Backoff(factor=10**400), "backoff.factor", id="backoff-factor-10**400"
    ),
    pytest.param(
        lambda: alarms.Backoff.coerce({"base": 1, 3: 4, "x": 5}),
        "backoff",
        id="backoff-dict-mixed-keys",
    ),
    # -- payloads ----------------------------------------------------------------------------
    pytest.param(
        schedule(payload=nested(validation.MAX_PAYLOAD_DEPTH + 1)), "payload", id="payload-31-deep"
    ),
    pytest.param(schedule(payload=nested(900)), "payload", id="payload-900-deep"),
    pytest.param(
        schedule(payload={"a": [{"b": nested(validation.MAX_PAYLOAD_DEPTH - 1)}]}),
        "payload",
        id="payload-31-deep-mixed",
    ),
    pytest.param(many(payload=nested(900)), "payload", id="many-payload-900-deep"),
    pytest.param(schedule(payload={"a": "x\x00y"}), "payload", id="payload-nul-value"),
    pytest.param(schedule(payload={"a\x00": 1}), "payload", id="payload-nul-key"),
    pytest.param(schedule(payload=["\ud800"]), "payload", id="payload-surrogate-value"),
    pytest.param(schedule(payload={"\udfff": 1}), "payload", id="payload-surrogate-key"),
    pytest.param(schedule(payload="\ud83d\ude00"), "payload", id="payload-surrogate-pair-as-two"),
    pytest.param(many(payload={"a": "\x00"}), "payload", id="many-payload-nul"),
    # -- text --------------------------------------------------------------------------------
    pytest.param(schedule(key="a\x00b"), "key", id="key-nul"),
    pytest.param(schedule(key="k", name="a\x00b"), "name", id="name-nul"),
    pytest.param(schedule(key="a\ud800"), "key", id="key-surrogate"),
    pytest.param(schedule(key="k", name="\udc00"), "name", id="name-surrogate"),
    pytest.param(schedule(id="order-\ud800"), "id", id="id-surrogate"),
    pytest.param(many(key="\x00"), "key", id="many-key-nul"),
    pytest.param(many(name="\ud800"), "name", id="many-name-surrogate"),
    pytest.param(recurring(key="k\x00"), "key", id="recurring-key-nul"),
    pytest.param(lambda: alarms.cancel(key="\ud800"), "key", id="cancel-key-surrogate"),
    pytest.param(lambda: alarms.cancel(key="k", name="\x00"), "name", id="cancel-name-nul"),
    pytest.param(lambda: alarms.cancel(key=7), "key", id="cancel-key-int"),
    pytest.param(_handler(name="h\ud800"), "name", id="handler-name-surrogate"),
    pytest.param(_handler(name="h\x00"), "name", id="handler-name-nul"),
    # -- time zones --------------------------------------------------------------------------
    pytest.param(
        recurring(every=None, cron="0 9 * * *", timezone="Europe"), "timezone", id="tz-Europe"
    ),
    pytest.param(
        recurring(every=None, cron="0 9 * * *", timezone="__pycache__"),
        "timezone",
        id="tz-__pycache__",
    ),
    pytest.param(
        recurring(every=None, rate=alarms.Daily(9), timezone="A" * 5000),
        "timezone",
        id="tz-5000-characters",
    ),
    pytest.param(
        recurring(every=None, rate=alarms.Daily(9), timezone="Europe/" + "x" * 300),
        "timezone",
        id="tz-long-path",
    ),
    pytest.param(
        recurring(every=None, cron="0 9 * * *", timezone="Europe/Paris\x00"),
        "timezone",
        id="tz-nul",
    ),
    # -- schedules that could never repeat --------------------------------------------------
    pytest.param(recurring(every=timedelta.max), "every", id="every-timedelta-max"),
    pytest.param(
        recurring(every=recurrence.MAX_INTERVAL + timedelta(microseconds=1)),
        "every",
        id="every-past-max-interval",
    ),
    pytest.param(recurring(every=1e300), "every", id="every-1e300"),
    pytest.param(recurring(every=10**400), "every", id="every-10**400"),
    # -- other entry points ------------------------------------------------------------------
    pytest.param(lambda: alarms.schedule_many(None), "specs", id="schedule_many-None"),  # type: ignore[arg-type]
    pytest.param(
        lambda: alarms.schedule_many(alarms.Spec("tests.ok")),  # type: ignore[arg-type]
        "specs",
        id="schedule_many-one-spec",
    ),
    pytest.param(lambda: run_due(now="2031"), "now", id="run_due-now-string"),  # type: ignore[arg-type]
    pytest.param(
        lambda: run_due(now=datetime(9999, 12, 31, tzinfo=UTC)), "now", id="run_due-now-9999"
    ),
    pytest.param(lambda: run_due(now=YEAR_ONE_PLUS_5), "now", id="run_due-now-year-1"),
    pytest.param(
        # No room for a lease (TIMEOUT + LEASE_GRACE) before the latest storable time.
        lambda: run_due(now=validation.LATEST - timedelta(minutes=1)),
        "now",
        id="run_due-now-no-room-for-a-lease",
    ),
]


@pytest.mark.parametrize(("call", "field"), CASES)
def test_bad_input_is_invalid_alarm_and_writes_nothing(call, field):
    seed = alarms.schedule("tests.ok", {"seed": 1}, key="seed", name="seed")
    assert_rejected(call, field)
    assert Alarm.objects.get(pk=seed.pk).payload == {"seed": 1}
    assert "tests.bad_input" not in registry  # a handler refused is not registered


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        pytest.param({"at": YEAR_ONE_PLUS_5}, "at", id="at-year-1"),
        pytest.param({"at": YEAR_9999_NEW_YORK}, "at", id="at-9999-new-york"),
        pytest.param({"delay": FAR}, "delay", id="delay-far"),
        pytest.param({"delay": 10**400}, "delay", id="delay-10**400"),
    ],
)
@pytest.mark.parametrize("state", ["scheduled", "cancelled"])
def test_reschedule_refuses_an_instant_no_alarm_can_hold(changes, field, state):
    alarm = alarms.schedule("tests.ok", key="k")
    if state == "cancelled":
        alarms.cancel(alarm)
    assert_rejected(lambda: alarms.reschedule(alarm, **changes), field)
    assert Alarm.objects.get(pk=alarm.pk).state == state


@pytest.mark.parametrize(
    "reason", [pytest.param("\ud800", id="surrogate"), pytest.param("a\x00", id="nul")]
)
def test_cancel_refuses_a_reason_no_database_stores(reason):
    alarm = alarms.schedule("tests.ok")
    assert_rejected(lambda: alarms.cancel(alarm, reason=reason), "reason")
    assert Alarm.objects.get(pk=alarm.pk).state == "scheduled"


# -- the limits themselves are accepted and round-trip ---------------------------------------


def test_the_extreme_instants_are_stored_and_read_back():
    early = alarms.schedule("tests.ok", at=validation.EARLIEST.astimezone(PLUS_23_58))
    late = alarms.schedule("tests.ok", at=validation.LATEST.astimezone(NEW_YORK))
    assert Alarm.objects.get(pk=early.pk).due_at == validation.EARLIEST
    assert Alarm.objects.get(pk=late.pk).due_at == validation.LATEST
    assert list(Alarm.objects.filter(pk__in=[early.pk, late.pk]).order_by("due_at")) == [
        early,
        late,
    ]


def test_the_largest_counts_are_stored_and_read_back():
    alarm = alarms.schedule("tests.ok", max_attempts=validation.MAX_INT, timeout=10**6)
    stored = Alarm.objects.get(pk=alarm.pk)
    assert (stored.max_attempts, stored.timeout) == (validation.MAX_INT, 1e6)
    alarms.handler("tests.bad_input", max_attempts=validation.MAX_INT)(lambda alarm: None)


def test_a_payload_at_the_depth_limit_is_stored_and_shown_by_the_admin(admin_client):
    payload = {"password": "hunter2", "deep": nested(validation.MAX_PAYLOAD_DEPTH - 1)}
    alarm = alarms.schedule("tests.ok", payload)
    assert Alarm.objects.get(pk=alarm.pk).payload == payload
    response = admin_client.get(reverse("admin:django_alarms_alarm_change", args=[alarm.pk]))
    assert response.status_code == 200
    assert "hunter2" not in response.content.decode()


def test_payload_text_that_only_looks_like_an_escape_is_accepted():
    payload = {"path": "C:\\u0000\\ud800", "emoji": "\U0001f600", "deep": "[[[[" * 20}
    alarm = alarms.schedule("tests.ok", payload)
    assert Alarm.objects.get(pk=alarm.pk).payload == payload
    [bulk] = alarms.schedule_many([alarms.Spec("tests.ok", payload)])
    assert Alarm.objects.get(pk=bulk.pk).payload == payload


def test_every_is_stored_to_the_microsecond():
    # A float of seconds cannot hold this interval: it came back a microsecond short.
    interval = timedelta(days=2_000_000, microseconds=1)
    start = datetime(2031, 3, 3, 9, tzinfo=UTC)
    alarm = alarms.schedule_recurring("tests.ok", every=interval, start_at=start)
    stored = Alarm.objects.get(pk=alarm.pk).get_recurrence()
    assert stored is not None
    assert stored.every == interval
    assert stored.next_after(start) == start + interval


def test_the_longest_rates_are_accepted_and_described():
    longest = recurrence.MAX_INTERVAL // timedelta(minutes=1)
    rec = recurrence.build(rate=alarms.Minutes(longest), now=datetime(2031, 3, 3, tzinfo=UTC))
    assert rec.describe().startswith("Every ")
    assert recurrence.Recurrence.from_json(rec.to_json()) == rec
    rec = recurrence.build(
        rate=alarms.Days(recurrence.MAX_INTERVAL.days), now=datetime(2031, 3, 3, tzinfo=UTC)
    )
    assert rec.describe().startswith("Every ")


def test_a_stored_rate_this_release_refuses_is_invalid_alarm_not_overflow():
    data = recurrence.build(rate=alarms.Minutes(5), now=datetime(2031, 3, 3, tzinfo=UTC)).to_json()
    data["rate"]["n"] = 10**30
    with pytest.raises(alarms.InvalidAlarm):
        recurrence.Recurrence.from_json(data)


# -- settings --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("MAX_ATTEMPTS", 2**64),
        ("MAX_ATTEMPTS", 2**31),
        ("CONCURRENCY", 10**20),
        ("TIMEOUT", 10**400),
        ("LOAD_INTERVAL", -(10**400)),
        ("BACKOFF", {"base": 10**400}),
        ("BACKOFF", {"base": 1, 3: 4, "x": 5}),
    ],
)
def test_a_setting_out_of_range_is_a_check_error_naming_it(key, value):
    with override_settings(ALARMS={key: value}):
        problems = conf.validate()
    assert [problem_key for problem_key, _ in problems] == [key]
    assert len(problems[0][1]) < MAX_SHOWN + 500


# -- run_alarms options ----------------------------------------------------------------------

OPTIONS = [
    ("--load-interval", "1e308"),
    ("--load-interval", "nan"),
    ("--load-interval", "inf"),
    ("--load-interval", "-1"),
    ("--load-interval", "0"),
    ("--shutdown-timeout", "1e308"),
    ("--shutdown-timeout", "nan"),
    ("--shutdown-timeout", "-inf"),
    ("--shutdown-timeout", "-5"),
    ("--concurrency", "99999999999999999999"),
    ("--concurrency", "0"),
    ("--concurrency", "-3"),
    ("--concurrency", "9" * 5000),
]


@pytest.mark.parametrize(("option", "value"), OPTIONS)
def test_run_alarms_refuses_an_option_out_of_range(option, value):
    with pytest.raises(CommandError) as caught:
        call_command("run_alarms", "--once", option, value)
    message = str(caught.value)
    assert option in message
    assert len(message) < MAX_SHOWN + 500


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--load-interval", "1e308"),
        ("--shutdown-timeout", "1e308"),
        ("--concurrency", "99999999999999999999"),
    ],
)
def test_run_alarms_from_the_shell_exits_non_zero_with_no_traceback(option, value, tmp_path):
    root = Path(__file__).resolve().parent.parent
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PYTHONPATH": str(root),
        # Never the project's database: the options are refused before any query.
        "DATABASE_URL": f"sqlite:///{tmp_path / 'unused.sqlite3'}",
    }
    done = subprocess.run(
        [sys.executable, "-m", "django", "run_alarms", "--once", option, value],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert option in done.stderr


def test_offsets_postgresql_refuses_are_stored_as_their_instant():
    # Python allows offsets up to 23:59; PostgreSQL refuses those past 15:59 (DataError, and
    # the caller's transaction was lost).
    at = datetime(2031, 3, 3, 9, tzinfo=PLUS_23_58)
    one = alarms.schedule("tests.ok", at=at)
    [bulk] = alarms.schedule_many([alarms.Spec("tests.ok", at=at)])
    moved = alarms.reschedule(alarms.schedule("tests.ok"), at=at + timedelta(hours=1))
    for alarm, expected in ((one, at), (bulk, at), (moved, at + timedelta(hours=1))):
        assert Alarm.objects.get(pk=alarm.pk).due_at == expected
    assert run_due(now=at.astimezone(timezone(-timedelta(hours=23, minutes=59)))) == 2


def test_a_schedule_with_no_occurrence_before_the_horizon_names_start_at():
    error = assert_rejected(
        recurring(every=None, rate=alarms.Daily(9), start_at=validation.LATEST), "start_at"
    )
    assert "the latest time an alarm can hold" in str(error)
