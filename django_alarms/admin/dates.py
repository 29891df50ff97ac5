"""The date hierarchy of the alarm list: the years, months and days offered above the list,
found with index probes (see :func:`hierarchy`)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any

from django.conf import settings
from django.contrib.admin.views.main import ChangeList
from django.utils import formats, timezone
from django.utils.text import capfirst
from django.utils.translation import gettext as _

from django_alarms import selectors
from django_alarms.types import State

#: How many years the date hierarchy of the alarm list lists at most.
MAX_HIERARCHY_YEARS = 30


def _start_of(day: date) -> datetime:
    """Midnight at the start of ``day`` in the current time zone, as Django's date hierarchy
    filters it."""
    naive = datetime.combine(day, time())
    return timezone.make_aware(naive) if settings.USE_TZ else naive


def _month_after(day: date) -> date:
    return date(day.year + 1, 1, 1) if day.month == 12 else date(day.year, day.month + 1, 1)


def hierarchy(cl: ChangeList) -> dict[str, Any]:
    """Django's date hierarchy on ``due_at`` (the context of ``admin/date_hierarchy.html``),
    computed with index probes instead of scans.

    Django asks for MIN/MAX and the DISTINCT years, months or days of the whole filtered list:
    full scans on millions of rows. Here each level is a few probes of the (state, due_at)
    index (see :mod:`django_alarms.selectors`), over the alarms in the state the list is
    filtered by (all states when it is not). Other filters and the search narrow the list, not
    the dates offered: a date may then lead to an empty page. Same links, same template.
    """
    field = cl.date_hierarchy
    year_field, month_field, day_field = f"{field}__year", f"{field}__month", f"{field}__day"
    try:
        year = int(cl.params[year_field]) if cl.params.get(year_field) else None
        month = int(cl.params[month_field]) if cl.params.get(month_field) else None
        day = int(cl.params[day_field]) if cl.params.get(day_field) else None
    except ValueError:
        return {"show": False}
    queryset = cl.root_queryset
    state = cl.params.get("state__exact")
    if state in State.values:
        states: list[str] = [state]
    elif cl.params.get("due"):  # the due windows list scheduled alarms
        states = [State.SCHEDULED]
    else:
        states = list(State.values)

    def link(filters: dict[str, Any]) -> str:
        return cl.get_query_string(filters, [f"{field}__"])

    if year is None:
        first, last = selectors.due_range(queryset, states)
        if first is None or last is None:
            return {"show": False}
        first, last = timezone.localtime(first), timezone.localtime(last)
        if first.year != last.year:
            return {
                "show": True,
                "back": None,
                "choices": [
                    {"link": link({year_field: str(number)}), "title": str(number)}
                    for number in _years(queryset, states, first.year, last.year)
                ],
            }
        year = first.year
        if first.month == last.month:
            month = first.month
    try:
        if month is not None and day is not None:
            chosen = date(year, month, day)
            return {
                "show": True,
                "back": {
                    "link": link({year_field: year, month_field: month}),
                    "title": capfirst(formats.date_format(chosen, "YEAR_MONTH_FORMAT")),
                },
                "choices": [{"title": capfirst(formats.date_format(chosen, "MONTH_DAY_FORMAT"))}],
            }
        if month is not None:
            first_day = date(year, month, 1)
            days = [
                first_day + timedelta(days=offset)
                for offset in range((_month_after(first_day) - first_day).days)
            ]
            periods = [(_start_of(one), _start_of(one + timedelta(days=1))) for one in days]
            found = selectors.periods_with_alarms(queryset, periods, states)
            return {
                "show": True,
                "back": {"link": link({year_field: year}), "title": str(year)},
                "choices": [
                    {
                        "link": link({year_field: year, month_field: month, day_field: one.day}),
                        "title": capfirst(formats.date_format(one, "MONTH_DAY_FORMAT")),
                    }
                    for one, has in zip(days, found, strict=True)
                    if has
                ],
            }
        months = [date(year, number, 1) for number in range(1, 13)]
    except ValueError:  # a day or month that does not exist, typed into the URL
        return {"show": False}
    periods = [(_start_of(one), _start_of(_month_after(one))) for one in months]
    found = selectors.periods_with_alarms(queryset, periods, states)
    return {
        "show": True,
        "back": {"link": link({}), "title": _("All dates")},
        "choices": [
            {
                "link": link({year_field: year, month_field: one.month}),
                "title": capfirst(formats.date_format(one, "YEAR_MONTH_FORMAT")),
            }
            for one, has in zip(months, found, strict=True)
            if has
        ],
    }


def _years(queryset: Any, states: list[str], first: int, last: int) -> list[int]:
    """The years in which ``queryset`` has alarms due, found by seeking from each to the next
    (one query of index probes per year listed, at most :data:`MAX_HIERARCHY_YEARS`)."""
    years = [first]
    while years[-1] < last and len(years) < MAX_HIERARCHY_YEARS:
        after = selectors.first_due(queryset, _start_of(date(years[-1] + 1, 1, 1)), states)
        if after is None:
            break
        years.append(timezone.localtime(after).year)
    return years
