"""Property tests of every input surface (issue 13): the public API, the admin's query
parameters and reschedule form, and ``run_alarms``'s options.

Each call either succeeds, and then the row reads back exactly as given, or raises
:class:`InvalidAlarm` naming a field that was given a bad value, and then no row changed and
the caller's transaction still works. An oracle written from the documented limits (not from
the code) says which inputs are bad, so an input wrongly refused fails too.

The budget is Hypothesis's profile (``tests/conftest.py``): small by default, ``long`` with
``HYPOTHESIS_PROFILE=long``.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.core.management import CommandError
from django.db import transaction
from django.urls import reverse
from django.utils.dateparse import parse_datetime
from hypothesis import assume, given
from hypothesis import strategies as st

from django_alarms import alarms, clock, recurrence
from django_alarms.management.commands.run_alarms import Command
from django_alarms.models import Alarm, Attempt
from django_alarms.validation import EARLIEST, LATEST, MAX_INT, MAX_PAYLOAD_DEPTH

pytestmark = pytest.mark.django_db

UTC = timezone.utc
T0 = datetime(2031, 3, 3, 9, 0, tzinfo=UTC)
THIRTY_DAYS = timedelta(days=30)

ZONES = [
    UTC,
    timezone(timedelta(hours=5)),
    timezone(-timedelta(hours=5)),
    timezone(timedelta(hours=23, minutes=58)),
    timezone(-timedelta(hours=23, minutes=59)),
    ZoneInfo("America/New_York"),
    ZoneInfo("Asia/Kolkata"),
    ZoneInfo("Europe/Paris"),
]
#: Characters that test the text rules: NUL, lone surrogates, and text that is fine.
AWKWARD = ["a", " ", "\x00", "\ud800", "\udfff", "é", "\U0001f600", "\\", '"', "[", "{"]

# -- strategies ------------------------------------------------------------------------------

instants = st.datetimes(
    min_value=datetime(1, 1, 1),
    max_value=datetime(9999, 12, 31, 23, 59, 59, 999999),
    timezones=st.sampled_from(ZONES),
)
near_the_ends = st.one_of(
    st.builds(lambda delta: EARLIEST + delta, st.timedeltas(timedelta(days=-1), timedelta(days=2))),
    st.builds(lambda delta: LATEST + delta, st.timedeltas(timedelta(days=-2), timedelta(days=1))),
).flatmap(lambda moment: st.sampled_from(ZONES).map(lambda zone: _shown_in(moment, zone)))


def _shown_in(moment: datetime, zone: Any) -> datetime:
    try:
        return moment.astimezone(zone)
    except (OverflowError, ValueError):
        return moment


texts = st.one_of(
    st.text(max_size=210),
    st.text(alphabet=st.sampled_from(AWKWARD), max_size=6),
    st.text(min_size=195, max_size=205, alphabet="xyz"),
)
json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    # PostgreSQL stores JSON numbers as decimals: a float of 1e16 or more may come back as an
    # int of the decimal it was written as (see docs/reference/api.md).
    st.floats(min_value=-1e15, max_value=1e15, allow_nan=False),
    texts,
)
json_values = st.recursive(
    json_leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(texts, children, max_size=3)
    ),
    max_leaves=12,
)


def _nested(depth: int, leaf: Any) -> Any:
    for index in range(depth):
        leaf = [leaf] if index % 2 else {"k": leaf}
    return leaf


payloads = st.one_of(
    json_values,
    st.builds(_nested, st.integers(MAX_PAYLOAD_DEPTH - 3, MAX_PAYLOAD_DEPTH + 3), json_leaves),
    st.sampled_from([math.nan, math.inf, {"a": {1, 2}}, 10**400, [-(10**4000)]]),
)
delays = st.one_of(
    st.timedeltas(),
    st.integers(min_value=-(10**6), max_value=10**12),
    st.integers(min_value=10**300, max_value=10**400),
    st.floats(),
    st.builds(
        lambda delta: LATEST - T0 + delta, st.timedeltas(-timedelta(days=1), timedelta(days=1))
    ),
)
attempt_counts = st.one_of(
    st.integers(min_value=-3, max_value=10),
    st.integers(min_value=MAX_INT - 2, max_value=MAX_INT + 2),
    st.sampled_from([2**63, 2**64, 10**400, True]),
)
timeouts = st.one_of(
    st.floats(),
    st.integers(min_value=-10, max_value=4_000_000),
    st.sampled_from([10**400, -(10**400)]),
    st.timedeltas(),
)


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


# -- the oracle: the documented limits -------------------------------------------------------


def _storable_text(value: str) -> bool:
    return "\x00" not in value and not any(0xD800 <= ord(char) <= 0xDFFF for char in value)


def _payload_ok(value: Any, depth: int = 0) -> bool:
    if isinstance(value, (list, dict)):
        if depth + 1 > MAX_PAYLOAD_DEPTH:
            return False
        items = value.items() if isinstance(value, dict) else enumerate(value)
        return all(
            (not isinstance(key, str) or _storable_text(key)) and _payload_ok(item, depth + 1)
            for key, item in items
        )
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, int):
        return abs(value) < 10**4300  # the most digits int() writes
    if isinstance(value, str):
        return _storable_text(value)
    return value is None


def _instant_ok(moment: datetime) -> bool:
    try:
        return EARLIEST <= moment.astimezone(UTC) <= LATEST
    except (OverflowError, ValueError):
        return False


def _as_timedelta(value: Any) -> timedelta | None:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    try:
        return timedelta(seconds=value)
    except OverflowError:
        return None


def _due(at: Any, delay: Any) -> datetime | None:
    """The due time the documented rules give, or None if they refuse at/delay."""
    if at is not None and delay is not None:
        return None
    if at is not None:
        return at.astimezone(UTC) if _instant_ok(at) else None
    if delay is not None:
        span = _as_timedelta(delay)
        if span is None or span < timedelta(0):
            return None
        try:
            due = T0 + span
        except OverflowError:
            return None
        return due if due <= LATEST else None
    return T0


def bad_fields(arguments: dict[str, Any]) -> set[str]:
    """The arguments whose value the documentation says is refused."""
    bad = set()
    if _due(arguments["at"], arguments["delay"]) is None:
        bad.update(name for name in ("at", "delay") if arguments[name] is not None)
    for name in ("key", "name"):
        if len(arguments[name]) > 200 or not _storable_text(arguments[name]):
            bad.add(name)
    if not _payload_ok(arguments["payload"]):
        bad.add("payload")
    attempts = arguments["max_attempts"]
    if attempts is not None and (
        isinstance(attempts, bool) or not isinstance(attempts, int) or not 1 <= attempts <= MAX_INT
    ):
        bad.add("max_attempts")
    timeout = arguments["timeout"]
    if timeout is not None:
        span = _as_timedelta(timeout)
        if span is None or not timedelta(0) < span <= THIRTY_DAYS:
            bad.add("timeout")
    return bad


def _rows() -> list[tuple[Any, ...]]:
    return list(Alarm.objects.order_by("pk").values_list("pk", "due_at", "payload", "state"))


def check(call: Any, bad: set[str], maybe: frozenset[str] = frozenset()) -> None:
    """Run ``call`` in a transaction rolled back afterwards (each example starts from the same
    rows). It must raise InvalidAlarm naming a field of ``bad`` when ``bad`` is not empty, and
    succeed otherwise; ``maybe`` are fields the oracle cannot judge, which may be named too."""
    with transaction.atomic():
        before = _rows()
        refused: alarms.InvalidAlarm | None = None
        try:
            call()
        except alarms.InvalidAlarm as error:
            refused = error
        if refused is None:
            assert not bad, f"accepted although {bad} are out of bounds"
        else:
            allowed = bad | maybe
            assert allowed, f"refused although every argument is within the limits: {refused}"
            assert refused.field in allowed, f"{refused.field!r} is not among {allowed}: {refused}"
            assert f"{refused.field}=" in str(refused)
            assert _rows() == before  # nothing written, and the transaction still works
        transaction.set_rollback(True)


# -- the public API --------------------------------------------------------------------------


@given(
    at=optional(st.one_of(instants, near_the_ends)),
    delay=optional(delays),
    key=texts,
    name=texts,
    payload=payloads,
    max_attempts=optional(attempt_counts),
    timeout=optional(timeouts),
)
def test_schedule_stores_exactly_what_it_accepts(
    at, delay, key, name, payload, max_attempts, timeout
):
    arguments = {
        "at": at,
        "delay": delay,
        "key": key,
        "name": name,
        "payload": payload,
        "max_attempts": max_attempts,
        "timeout": timeout,
    }
    bad = bad_fields(arguments)

    def call() -> None:
        alarm = alarms.schedule("tests.ok", **arguments)
        stored = Alarm.objects.get(pk=alarm.pk)
        assert stored.due_at == _due(at, delay)
        assert (stored.key, stored.name, stored.handler) == (key, name, "tests.ok")
        assert stored.payload == payload
        assert stored.max_attempts == (5 if max_attempts is None else max_attempts)
        span = _as_timedelta(timeout)
        assert stored.timeout == (None if span is None else pytest.approx(span.total_seconds()))

    with clock.frozen(T0):
        check(call, bad)


@given(
    specs=st.lists(
        st.fixed_dictionaries(
            {
                "at": optional(near_the_ends),
                "key": texts,
                "payload": payloads,
                "max_attempts": optional(attempt_counts),
            }
        ),
        min_size=1,
        max_size=4,
    )
)
def test_schedule_many_stores_all_or_none(specs):
    bad: set[str] = set()
    for spec in specs:
        bad |= bad_fields({"delay": None, "name": "", "timeout": None, **spec})

    def call() -> None:
        made = alarms.schedule_many([alarms.Spec("tests.ok", **spec) for spec in specs])
        stored = {alarm.pk: alarm for alarm in Alarm.objects.filter(pk__in=[a.pk for a in made])}
        for alarm, spec in zip(made, specs, strict=True):
            row = stored[alarm.pk]
            assert (row.key, row.payload) == (spec["key"], spec["payload"])
            assert row.due_at == _due(spec["at"], None)

    with clock.frozen(T0):
        check(call, bad)


@given(at=optional(st.one_of(instants, near_the_ends)), delay=optional(delays))
def test_reschedule_moves_exactly_or_changes_nothing(at, delay):
    assume(at is not None or delay is not None)
    bad = bad_fields(
        {"at": at, "delay": delay, "key": "", "name": "", "payload": None}
        | {"max_attempts": None, "timeout": None}
    )

    with clock.frozen(T0), transaction.atomic():
        alarm = alarms.schedule("tests.ok", key="k")

        def call() -> None:
            alarms.reschedule(alarm, at=at, delay=delay)
            assert Alarm.objects.get(pk=alarm.pk).due_at == _due(at, delay)

        check(call, bad)
        transaction.set_rollback(True)


UNITS = {
    alarms.Minutes: timedelta(minutes=1),
    alarms.Hours: timedelta(hours=1),
    alarms.Days: timedelta(days=1),
}
counted_rates = st.tuples(
    st.sampled_from(list(UNITS)),
    st.one_of(st.integers(1, 1000), st.integers(10**6, 10**11), st.sampled_from([0, -1, 10**30])),
)
timed_rates = st.tuples(
    st.sampled_from([alarms.Daily, alarms.Weekdays, alarms.WeekdaysAndSaturday]),
    st.integers(-1, 24),
    st.integers(-1, 60),
)
GOOD_ZONES = ["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata", "Etc/GMT+5"]
BAD_ZONES = ["Europe", "__pycache__", "", "Europe/Paris\x00", "\ud800", "x" * 5000, "../etc"]
BAD_ZONES += ["zone.tab", "tzdata.zi", "Europe/"]


def _rate(spec: tuple[Any, ...]) -> tuple[Any, bool]:
    """Build a rate from (type, numbers...); return it (or the error) and whether the
    documented limits allow it."""
    kind, *numbers = spec
    if kind in UNITS:
        ok = 1 <= numbers[0] <= recurrence.MAX_INTERVAL // UNITS[kind]
    else:
        ok = 0 <= numbers[0] <= 23 and 0 <= numbers[1] <= 59
    refused: alarms.InvalidAlarm | None = None
    try:
        return kind(*numbers), ok
    except alarms.InvalidAlarm as error:
        refused = error
    assert not ok, refused
    assert refused.field == "rate"
    return None, ok


@given(
    every=st.one_of(st.timedeltas(), st.integers(-5, 10**15), st.floats()),
    rate=st.one_of(counted_rates, timed_rates),
    use_rate=st.booleans(),
    zone=st.sampled_from(GOOD_ZONES + BAD_ZONES),
    start_at=optional(st.one_of(instants, near_the_ends)),
)
def test_schedule_recurring_stores_exactly_what_it_accepts(every, rate, use_rate, zone, start_at):
    bad: set[str] = set()
    maybe: set[str] = set()
    if use_rate:
        built, ok = _rate(rate)
        if not ok:
            return  # the rate itself was refused, with field "rate" (checked by _rate)
        arguments: dict[str, Any] = {"rate": built}
    else:
        arguments = {"every": every}
        span = _as_timedelta(every)
        if span is None or not timedelta(0) < span <= recurrence.MAX_INTERVAL:
            bad.add("every")
    if zone not in GOOD_ZONES:
        bad.add("timezone")
    if start_at is not None and not _instant_ok(start_at):
        bad.add("start_at")
    if start_at is not None and start_at.astimezone(UTC) > LATEST - timedelta(days=4000):
        maybe.add("start_at")  # whether an occurrence comes before the horizon: not judged

    def call() -> None:
        alarm = alarms.schedule_recurring("tests.ok", timezone=zone, start_at=start_at, **arguments)
        stored = Alarm.objects.get(pk=alarm.pk)
        assert stored.recurrence == alarm.recurrence
        rule = stored.get_recurrence()
        assert rule is not None
        assert rule.to_json() == alarm.recurrence
        if "every" in arguments:
            assert rule.every == _as_timedelta(every)
        assert stored.due_at == rule.first()
        assert rule.describe()

    with clock.frozen(T0):
        check(call, bad, frozenset(maybe))


@given(now=st.one_of(instants, near_the_ends, st.text(max_size=5), st.integers()))
def test_run_due_takes_any_storable_now(now):
    from django_alarms.testing import run_due

    lease = timedelta(minutes=5, seconds=30)  # TIMEOUT + LEASE_GRACE
    ok = isinstance(now, datetime) and _instant_ok(now)
    maybe = frozenset()
    if ok and now.astimezone(UTC) > LATEST - lease - timedelta(seconds=1):
        ok, maybe = False, frozenset({"now"})
    check(lambda: run_due(now=now), set() if ok else {"now"}, maybe)


# -- the admin -------------------------------------------------------------------------------

PARAMETERS = [
    "due_at__gte",
    "due_at__lt",
    "due_at__year",
    "due_at__month",
    "due_at__day",
    "handler",
    "state__exact",
    "due",
    "kind",
    "q",
    "o",
    "p",
    "payload__password__startswith",
]
admin_values = st.one_of(
    texts,
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
    st.one_of(instants, near_the_ends).map(lambda moment: moment.isoformat(sep=" ")),
)


ATTEMPT_PARAMETERS = [
    "started_at__gte",
    "started_at__lt",
    "started_at__year",
    "started_at__month",
    "handler",
    "outcome__exact",
    "q",
    "o",
    "p",
    "alarm__payload__token",
]
PAGES = {
    "admin:django_alarms_alarm_changelist": PARAMETERS,
    "admin:django_alarms_attempt_changelist": ATTEMPT_PARAMETERS,
}
queries = st.sampled_from(list(PAGES)).flatmap(
    lambda page: st.tuples(
        st.just(page), st.dictionaries(st.sampled_from(PAGES[page]), admin_values, max_size=3)
    )
)


def _quoted(text: str) -> str:
    from urllib.parse import quote

    # Lone surrogates as the bytes a browser could send: not UTF-8.
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


@given(page_and_query=queries)
def test_no_admin_parameter_answers_500(admin_client, page_and_query):
    page, query = page_and_query
    url = (
        reverse(page) + "?" + "&".join(f"{name}={_quoted(value)}" for name, value in query.items())
    )
    with transaction.atomic():
        alarm = alarms.schedule("tests.ok", {"password": "hunter2", "token": "t0k3n"}, at=T0)
        Attempt.objects.create(
            alarm=alarm, number=1, outcome="error", started_at=T0, finished_at=T0, worker="w"
        )
        response = admin_client.get(url)
        assert response.status_code in (200, 302, 400), url
        if response.status_code == 200:
            assert "hunter2" not in response.content.decode()
            assert "t0k3n" not in response.content.decode()
        transaction.set_rollback(True)


form_times = st.one_of(
    st.one_of(instants, near_the_ends).map(lambda moment: moment.isoformat(sep=" ")),
    texts,
)


@given(at=form_times)
def test_the_reschedule_form_moves_exactly_or_changes_nothing(admin_client, at):
    text = at.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    try:
        parsed = parse_datetime(text.strip())
    except ValueError:
        parsed = None
    # The documented rule: a date and time with its UTC offset that an alarm can hold.
    ok = (
        len(text.strip()) <= 64
        and "\x00" not in text
        and parsed is not None
        and parsed.utcoffset() is not None
        and _instant_ok(parsed)
    )
    with transaction.atomic():
        alarm = alarms.schedule("tests.ok", at=T0)
        response = admin_client.post(
            reverse("admin:django_alarms_alarm_changelist"),
            {
                "action": "reschedule_alarms",
                "_selected_action": [str(alarm.pk)],
                "index": 0,
                "apply": "yes",
                "at": text,
            },
        )
        due = Alarm.objects.get(pk=alarm.pk).due_at
        if ok:
            assert response.status_code == 302
            assert parsed is not None
            assert due == parsed.astimezone(UTC)
        else:
            assert response.status_code == 200
            assert response.context["form"].errors["at"]
            assert due == T0
        transaction.set_rollback(True)


# -- run_alarms ------------------------------------------------------------------------------

option_values = st.one_of(
    st.floats().map(repr),
    st.integers(min_value=-(10**25), max_value=10**25).map(str),
    st.text(max_size=8),
    st.sampled_from(["1e308", "nan", "inf", "-inf", "0", "1e-300", "315360000", "315360001"]),
)


@given(
    option=st.sampled_from(["--load-interval", "--shutdown-timeout", "--concurrency"]),
    value=option_values,
)
def test_run_alarms_options_parse_or_name_the_option(option, value):
    assume("\x00" not in value)
    parser = Command().create_parser("manage.py", "run_alarms")
    try:
        parsed = parser.parse_args([option, value])
    except CommandError as error:
        refused = str(error)
    else:
        refused = ""
    if refused:
        assert option in refused
        return
    number = vars(parsed)[option[2:].replace("-", "_")]
    if option == "--concurrency":
        assert 1 <= number <= 10_000
    else:
        assert 0 < number <= timedelta(days=3650).total_seconds()
        timedelta(seconds=number)
