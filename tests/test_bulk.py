"""Writing many alarms at once: what schedule_many stores is exactly what was given."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from django_alarms import alarms
from django_alarms.models import Alarm

pytestmark = pytest.mark.django_db

AWKWARD = ["100%", "%s", "tab\there", "new\nline", "back\\slash", "cr\rhere", "{}", "é ☃"]


def test_values_shared_by_every_row_and_values_that_vary_round_trip():
    due = timezone.now() + timedelta(hours=1)
    shared = alarms.schedule_many(
        [alarms.Spec("probe", {"text": text}, key="100% {shared}\t", at=due) for text in AWKWARD]
    )
    varying = alarms.schedule_many(
        [
            alarms.Spec(
                "probe",
                {"text": text, "n": n},
                key=text,
                name=f"n{n}",
                at=due + timedelta(seconds=n),
                timeout=n + 1,
                max_attempts=n + 1,
            )
            for n, text in enumerate(AWKWARD)
        ]
    )
    for made in shared + varying:
        stored = Alarm.objects.get(pk=made.pk)
        assert (stored.key, stored.name, stored.payload) == (made.key, made.name, made.payload)
        assert (stored.due_at, stored.timeout, stored.max_attempts) == (
            made.due_at,
            made.timeout,
            made.max_attempts,
        )
        assert stored.state == "scheduled"
        assert stored.attempts == 0
    assert [a.key for a in varying] == AWKWARD
    assert {a.key for a in shared} == {"100% {shared}\t"}


def test_one_alarm_alone_is_written_too():
    (made,) = alarms.schedule_many([alarms.Spec("probe", {"only": True}, key="50%")])
    assert Alarm.objects.get(pk=made.pk).key == "50%"


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        pytest.param(alarms.Spec("nope"), alarms.UnknownHandler, id="unknown-handler"),
        pytest.param(alarms.Spec("probe", {"x": object()}), alarms.InvalidAlarm, id="payload"),
        pytest.param(
            alarms.Spec("probe", at=timezone.now().replace(tzinfo=None)),
            alarms.InvalidAlarm,
            id="naive-at",
        ),
    ],
)
def test_a_bad_spec_after_thousands_of_good_ones_writes_nothing(bad, error):
    """On PostgreSQL the good rows are already streaming to the server when the bad spec is
    reached: the COPY is aborted and the savepoint rolled back; the caller's transaction goes
    on."""
    from django.db import transaction

    good = [alarms.Spec("probe", {"n": n}, delay=60) for n in range(5000)]
    with transaction.atomic():
        kept = alarms.schedule("probe", {"kept": True})
        with pytest.raises(error) as raised:
            alarms.schedule_many([*good, bad])
        assert str(raised.value).startswith("specs[5000]")
        assert list(Alarm.objects.values_list("pk", flat=True)) == [kept.pk]
    assert Alarm.objects.count() == 1


def test_an_empty_list_writes_nothing():
    assert alarms.schedule_many([]) == []
    assert Alarm.objects.count() == 0


def test_payloads_are_encoded_as_djangos_json_encoder_does():
    import json
    from decimal import Decimal

    from django.core.serializers.json import DjangoJSONEncoder

    payload = {
        "when": timezone.now(),
        "amount": Decimal("12.50"),
        "id": uuid.uuid4(),
        "nested": [1, "two", {"3": None}],
        7: "int key",
    }
    expected = json.loads(json.dumps(payload, cls=DjangoJSONEncoder))
    one = alarms.schedule("probe", payload)
    (many,) = alarms.schedule_many([alarms.Spec("probe", payload)])
    assert Alarm.objects.get(pk=one.pk).payload == expected
    assert Alarm.objects.get(pk=many.pk).payload == expected


def test_a_validate_hook_may_query_the_database():
    """Specs whose handler has a validate() hook are all validated before the COPY starts
    (on PostgreSQL a connection in the middle of a COPY cannot run a query)."""
    from django_alarms.handlers import registry

    @alarms.handler("tests.checked", validate=lambda payload: Alarm.objects.exists())
    def checked(alarm):
        return None

    try:
        made = alarms.schedule_many([alarms.Spec("tests.checked", {"n": n}) for n in range(3)])
    finally:
        registry.unregister("tests.checked")
    assert Alarm.objects.filter(pk__in=[a.pk for a in made]).count() == 3


def test_arguments_that_specs_share_are_still_checked_and_kept_as_each_spec_gives_them():
    """schedule_many validates what specs share once; it recognises shared arguments by
    identity, so values that are equal but not the same are each checked and stored as given."""
    from zoneinfo import ZoneInfo

    due = timezone.now() + timedelta(hours=1)
    with pytest.raises(alarms.InvalidAlarm) as raised:
        alarms.schedule_many(
            [
                alarms.Spec("probe", at=due, max_attempts=1),
                alarms.Spec("probe", at=due, max_attempts=True),
            ]
        )
    assert str(raised.value).startswith("specs[1]: max_attempts=True")
    assert Alarm.objects.count() == 0

    with pytest.raises(alarms.InvalidAlarm) as raised:
        alarms.schedule_many(
            [alarms.Spec("probe", at=due), alarms.Spec("probe", at=due, name=None)]
        )
    assert str(raised.value).startswith("specs[1]: name=None")
    assert Alarm.objects.count() == 0

    paris = due.astimezone(ZoneInfo("Europe/Paris"))
    assert paris == due
    made = alarms.schedule_many(
        [alarms.Spec("probe", {"n": 0}, at=due), alarms.Spec("probe", {"n": 1}, at=paris)]
    )
    # Each is stored as its instant, in UTC (PostgreSQL refuses some offsets Python allows).
    assert [alarm.due_at for alarm in made] == [due, paris]
    assert [alarm.due_at.utcoffset() for alarm in made] == [timedelta(0), timedelta(0)]
    assert [alarm.payload for alarm in made] == [{"n": 0}, {"n": 1}]


def test_a_bad_payload_among_specs_that_share_everything_else_is_reported_by_its_index():
    due = timezone.now() + timedelta(hours=1)
    specs = [alarms.Spec("probe", {"n": n}, at=due, key="k", timeout=5) for n in range(3)]
    specs[1] = alarms.Spec("probe", {"n": {1, 2}}, at=due, key="k", timeout=5)
    with pytest.raises(alarms.InvalidAlarm) as raised:
        alarms.schedule_many(specs)
    assert str(raised.value).startswith("specs[1]: payload=")
    assert Alarm.objects.count() == 0


def test_a_validate_hook_sees_every_payload_even_when_the_rest_is_shared():
    from django_alarms.handlers import registry

    seen = []

    @alarms.handler("tests.counted", validate=seen.append)
    def counted(alarm):
        return None

    due = timezone.now() + timedelta(hours=1)
    try:
        alarms.schedule_many([alarms.Spec("tests.counted", {"n": n}, at=due) for n in range(4)])
    finally:
        registry.unregister("tests.counted")
    assert seen == [{"n": n} for n in range(4)]


@pytest.mark.parametrize("returning", [True, False], ids=["one-statement", "select-update"])
def test_both_claim_paths_read_back_the_same_alarm(monkeypatch, returning):
    """PostgreSQL and SQLite 3.35+ claim with UPDATE ... RETURNING; older SQLite, MySQL and
    MariaDB select, then update. Either way the claim carries the alarm as it was stored."""
    from django.db import connection

    from tests.factories import claim

    if not returning:
        monkeypatch.setattr(connection, "vendor", "other")  # neither PostgreSQL nor SQLite
    due = timezone.now() - timedelta(seconds=1)
    alarm = alarms.schedule(
        "probe", {"text": "tab\there", "n": 1}, at=due, key="k", name="n", timeout=7
    )
    now = timezone.now()
    worker = uuid.uuid4()
    (held,) = claim(db="default", worker_id=worker, now=now, lease_until=now, ids=[alarm.id])
    assert (held.alarm_id, held.handler, held.key, held.name) == (alarm.id, "probe", "k", "n")
    assert held.payload == {"text": "tab\there", "n": 1}
    assert held.due_at == alarm.due_at
    assert held.created_at == alarm.created_at
    assert (held.number, held.budget_start, held.timeout) == (1, 0, 7.0)
    assert held.worker_id == worker
    stored = Alarm.objects.get(pk=alarm.pk)
    assert (stored.state, stored.claimed_by, stored.attempts) == ("running", worker, 1)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('{"n": 1, "nested": [1, 2.5, null, true]}', {"n": 1, "nested": [1, 2.5, None, True]}),
        ('"\\u00e9t\\u00e9"', "été"),
        (' {"padded": 1} ', {"padded": 1}),
        ("null", None),
    ],
)
def test_stored_json_reads_what_json_loads_reads(text, value):
    from django_alarms.claims import _stored_json

    assert _stored_json(text) == value


@pytest.mark.parametrize("text", ['{"n": 1} junk', "{", ""])
def test_stored_json_rejects_what_json_loads_rejects(text):
    import json

    from django_alarms.claims import _stored_json

    with pytest.raises(json.JSONDecodeError):
        _stored_json(text)


def test_claims_of_alarms_due_together_are_decoded_with_their_own_values():
    from tests.factories import claim

    due = timezone.now() - timedelta(seconds=1)
    specs = [alarms.Spec("probe", {"n": i}, at=due) for i in range(20)]
    specs.append(alarms.Spec("probe", {"n": 20}, at=due - timedelta(seconds=1)))
    written = alarms.schedule_many(specs)
    now = timezone.now()
    held = claim(
        db="default",
        worker_id=uuid.uuid4(),
        now=now,
        lease_until=now,
        ids=[alarm.id for alarm in written],
    )
    assert held[0].payload["n"] == 20, "earliest first"
    assert sorted(c.payload["n"] for c in held) == list(range(21))
    by_id = {alarm.id: alarm for alarm in written}
    assert all(c.due_at == by_id[c.alarm_id].due_at for c in held)
    held[1].payload["changed"] = True
    assert "changed" not in held[2].payload, "payloads are not shared"


@pytest.mark.skipif(
    not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"),
    reason="a PostgreSQL plan",
)
@pytest.mark.django_db(transaction=True)
def test_a_postgresql_claim_reads_the_rows_it_claims_through_indexes_not_the_whole_table():
    """Written ``id IN (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED)``, the claim was planned as a
    hash join over a sequential scan of the table: every claim read every row."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tests.factories import claim

    due = timezone.now() - timedelta(seconds=1)
    for _ in range(5):
        alarms.schedule_many([alarms.Spec("probe", {}, at=due) for _ in range(10_000)])
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE django_alarms_alarm")
    now = timezone.now()
    with CaptureQueriesContext(connection) as queries, transaction.atomic():
        held = claim(db="default", worker_id=uuid.uuid4(), now=now, lease_until=now, limit=500)
        (statement,) = [q["sql"] for q in queries if q["sql"].startswith("UPDATE")]
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN " + statement)
            plan = "\n".join(row[0] for row in cursor.fetchall())
    assert len(held) == 500
    assert "Seq Scan" not in plan, plan


def test_a_payload_of_none_is_stored_as_sql_null_by_every_path():
    single = alarms.schedule("probe")
    many = alarms.schedule_many([alarms.Spec("probe"), alarms.Spec("probe", {"a": 1})])
    with_id = alarms.schedule_many([alarms.Spec("probe", id="payload-none")])
    nulls = set(Alarm.objects.filter(payload__isnull=True).values_list("id", flat=True))
    assert nulls == {single.id, many[0].id, with_id[0].id}
    assert Alarm.objects.get(pk=many[1].id).payload == {"a": 1}
