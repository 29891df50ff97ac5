"""The admin against hostile query parameters (issue 13): no lookup learns a masked value, and
no parameter a user can type makes a page answer 500, on every database."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
from django.urls import reverse
from django.utils import timezone

from django_alarms.models import Worker
from tests.factories import AlarmFactory, AttemptFactory
from tests.test_admin import (
    ATTEMPTS,
    CHANGELIST,
    OVERVIEW,
    VIEW_ALL,
    WORKERS,
    act,
    change_url,
    client_for,
    reload,
    staff,
)

pytestmark = pytest.mark.django_db

SECRET = "hunter2"


@pytest.fixture
def viewer(django_user_model: Any) -> Any:
    """A staff user with only the view permissions."""
    return client_for(staff(django_user_model, "viewer", *VIEW_ALL))


#: Lookups that would answer yes or no about a masked value, had the list accepted them.
GUESSES = [
    ("payload__password__startswith", "h", "x"),
    ("payload__password", SECRET, "wrong"),
    ("payload__PASSWORD__startswith", "h", "x"),
    ("payload__user__api_key__startswith", "s", "x"),
    ("payload__items__0__token__startswith", "t", "x"),
    ("payload__icontains", SECRET, "wrong"),
    ("payload__has_key", "password", "nothing"),
]


@pytest.fixture
def secret_alarm() -> Any:
    alarm = AlarmFactory(
        key="k",
        payload={
            "password": SECRET,
            "PASSWORD": SECRET,
            "user": {"api_key": "s3cr3t"},
            "items": [{"token": "tok"}],
        },
    )
    AttemptFactory(alarm=alarm, number=1, outcome="error")
    return alarm


def _rows(response: Any) -> str:
    return response.content.decode() if response.status_code == 200 else ""


@pytest.mark.parametrize(("lookup", "right", "wrong"), GUESSES, ids=[g[0] for g in GUESSES])
@pytest.mark.parametrize("page", [CHANGELIST, ATTEMPTS], ids=["alarms", "attempts"])
def test_no_payload_lookup_tells_a_right_guess_from_a_wrong_one(
    viewer,
    secret_alarm,
    lookup,
    right,
    wrong,
    page,
):
    if page == ATTEMPTS:
        lookup = f"alarm__{lookup}"
    base = reverse(page)
    good = viewer.get(f"{base}?{lookup}={quote(right)}")
    bad = viewer.get(f"{base}?{lookup}={quote(wrong)}")
    assert good.status_code == bad.status_code
    assert good.status_code in (302, 400), "a payload lookup is refused, whatever its value"
    assert _rows(good) == _rows(bad)


@pytest.mark.parametrize(("lookup", "right", "wrong"), GUESSES[:2], ids=[g[0] for g in GUESSES[:2]])
def test_preserved_filters_carry_no_payload_lookup(viewer, secret_alarm, lookup, right, wrong):
    for guess in (right, wrong):
        filters = quote(f"{lookup}={guess}")
        response = viewer.get(f"{change_url(secret_alarm)}?_changelist_filters={filters}")
        assert response.status_code == 200
        assert "payload__" not in response.content.decode()


LIST_QUERIES = [
    "due_at__year=10000",
    "due_at__year=0",
    "due_at__year=-1",
    "due_at__year=99999999999",
    "due_at__year=9999&due_at__month=12&due_at__day=31",
    "due_at__year=1&due_at__month=1&due_at__day=1",
    "due_at__year=2031&due_at__month=13",
    "due_at__year=2031&due_at__month=1&due_at__day=32",
    "due_at__month=13",
    "due_at__year=%00",
    "due_at__gte=9999-12-31+23:59:59-05:00",
    "due_at__lt=9999-12-31+23:59:59-05:00",
    "due_at__gte=0001-01-01+00:00:00%2B05:00",
    "due_at__gte=2031-01-01+00:00%2B23:58",
    "due_at__gte=garbage",
    "handler=%00",
    "state__exact=%00",
    "q=%00",
    "q=%ED%A0%80",
    "q=" + "a+" * 3000,
    "o=%00",
    "o=99999999999999999999999",
    "o=1.-2.abc",
    "o=" + "1." * 5000,
    "p=99999999999999999999",
    "p=-1",
    "due=%00",
    "kind=%00",
    "_changelist_filters=payload__password%3Dh",
]
ATTEMPT_QUERIES = [
    "started_at__gte=9999-12-31+23:59:59-05:00",
    "started_at__gte=0001-01-01+00:00:00%2B05:00",
    "started_at__gte=2031-01-01+00:00%2B23:58",
    "handler=%00",
    "outcome__exact=%00",
    "q=%00",
    "q=" + "a+" * 3000,
]
WORKER_QUERIES = ["alive=%00", "stopping__exact=%00", "q=%00", "q=" + "a+" * 3000]
CASES = (
    [(CHANGELIST, q) for q in LIST_QUERIES]
    + [(ATTEMPTS, q) for q in ATTEMPT_QUERIES]
    + [(WORKERS, q) for q in WORKER_QUERIES]
    + [(OVERVIEW, "x=%00")]
)


@pytest.mark.parametrize(
    ("page", "query"), CASES, ids=[f"{p.split('_')[-2]}:{q[:50]}" for p, q in CASES]
)
def test_no_query_parameter_makes_a_page_answer_500(admin_client, secret_alarm, page, query):
    Worker.objects.create(
        name="w",
        hostname="h",
        pid=1,
        executor="inline",
        started_at=timezone.now(),
        heartbeat_at=timezone.now(),
    )
    response = admin_client.get(f"{reverse(page)}?{query}")
    assert response.status_code in (200, 302, 400)


def test_reschedule_refuses_a_time_no_alarm_can_hold(admin_client):
    waiting = AlarmFactory()
    response = act(
        admin_client, "reschedule_alarms", [waiting], apply="yes", at="9999-12-31 23:59:59-05:00"
    )
    assert response.status_code == 200
    assert response.context["form"].errors["at"]
    assert reload(waiting).due_at == waiting.due_at


@pytest.mark.parametrize("value", ["not-a-uuid", "%00", "1" * 10_000, ""])
@pytest.mark.parametrize("action", ["retry_now", "run_now", "cancel_alarms", "reschedule_alarms"])
def test_an_action_on_a_selection_that_is_not_ids_does_nothing_and_says_so(
    admin_client, action, value
):
    waiting = AlarmFactory()
    before = reload(waiting)
    response = admin_client.post(
        reverse(CHANGELIST),
        {"action": action, "_selected_action": [str(waiting.pk), value.replace("%00", "\x00")]},
        follow=True,
    )
    assert response.status_code == 200
    assert "not an id: nothing was done" in response.content.decode()
    after = reload(waiting)
    assert (after.state, after.due_at, after.updated_at) == (
        before.state,
        before.due_at,
        before.updated_at,
    )
