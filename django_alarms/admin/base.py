"""The pieces every admin of the app shares: the capped paginator, the checked change list,
the read-only base class and the checks of query parameters.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from typing import TYPE_CHECKING, Any, Literal, cast

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.filters import FieldListFilter
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.utils import get_fields_from_path
from django.contrib.admin.views.main import ORDER_VAR, ChangeList
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import (
    HttpRequest,
    HttpResponseRedirect,
    QueryDict,
)
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.http import urlencode
from django.utils.text import smart_split
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from django_alarms import selectors, validation

if TYPE_CHECKING:
    pass


#: The most alarms one action changes; select fewer (filter the list) to act on more.
MAX_ACTION_ROWS = 1000
#: Attempts shown on an alarm's page; the rest are one click away in the attempt list.
LATEST_ATTEMPTS = 20
#: The most words a search looks for (each word is a condition on every searched column).
MAX_SEARCH_TERMS = 20
#: Parameters of a list that are not filters (search, ordering, page, show all, facets); an
#: alarm's page keeps them, with the list's filters, in its links back to the list.
LIST_PARAMS = frozenset({"q", "o", "p", "all", "_facets"})

ADMIN_CSS = {"all": ["django_alarms/admin.css"]}
#: An occurrence with its day of the week, in the schedule's own time zone.
WEEKDAY = "%a %Y-%m-%d %H:%M:%S %Z"
MISFIRE = {
    "once": _("one catch-up delivery for the missed occurrences (misfire=once)"),
    "skip": _("missed occurrences are skipped (misfire=skip)"),
    "all": _("each missed occurrence is delivered (misfire=all)"),
}


# -- the paginator ---------------------------------------------------------------------------


class CappedPaginator(Paginator):
    """A paginator that never counts a whole big table.

    Filtered lists are counted up to :attr:`cap` rows (``capped`` tells when there are more);
    on PostgreSQL the unfiltered list shows the planner's estimate of the table's size
    (``estimate``). Either way pages stop at the cap: narrow the list with filters to go
    further, which is also what keeps deep ``OFFSET`` scans away.
    """

    cap = 10_000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.capped = False
        self.estimate: int | None = None

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if not isinstance(queryset, QuerySet):
            return len(queryset)
        counted = selectors.capped_count(queryset, self.cap)
        self.capped = counted.capped
        if counted.capped and not queryset.query.where:
            estimate = selectors.estimated_row_count(queryset.model, using=queryset.db)
            if estimate is not None and estimate > self.cap:
                self.estimate = estimate
        return counted.value


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value.strip())
    except (ValueError, AttributeError):
        return None


def _hierarchy_params(field: str) -> tuple[str, str, str]:
    return f"{field}__year", f"{field}__month", f"{field}__day"


def _instant(field: Any, value: str) -> str:
    """A filter's instant, checked (:func:`validation.storable`) and written in UTC, so that no
    database sees an offset it refuses (PostgreSQL stops at 15:59) or a year past 9999."""
    try:
        moment = field.to_python(value)
        if moment is None:
            raise IncorrectLookupParameters(f"no time in {field.name}")
        if timezone.is_naive(moment):
            moment = timezone.make_aware(moment)
        validation.storable(field.name, moment)
    except (ValueError, OverflowError, ValidationError) as error:
        raise IncorrectLookupParameters(error) from error
    return str(moment.astimezone(dt_timezone.utc).isoformat())


def _check_hierarchy(field: str, params: dict[str, list[str]]) -> None:
    """Refuse a date hierarchy step (year, month, day) whose period Django cannot compute or
    an alarm cannot fall in, before Django builds it (it computes the period's end unguarded)."""
    year_param, month_param, day_param = _hierarchy_params(field)
    if year_param not in params:
        if month_param in params or day_param in params:
            raise IncorrectLookupParameters("a month or day without a year")
        return
    try:
        year = int(params[year_param][-1])
        month = int(params[month_param][-1]) if month_param in params else None
        day = int(params[day_param][-1]) if day_param in params else None
        start = datetime(year, month or 1, day or 1)
        if day is not None:
            end = start + timedelta(days=1)
        elif month is not None:
            end = (start + timedelta(days=32)).replace(day=1)
        else:
            end = start.replace(year=year + 1)
        for moment in (start, end):
            validation.storable(
                field, timezone.make_aware(moment) if timezone.is_naive(moment) else moment
            )
    except (ValueError, OverflowError) as error:
        raise IncorrectLookupParameters(error) from error


# -- read-only admins ------------------------------------------------------------------------


class CheckedChangeList(ChangeList):
    """A list whose filter values are checked before any reaches the database: a value no
    row can hold (a NUL character, a time outside what an alarm can carry, a date hierarchy
    year like 10000) is reported as a wrong filter (Django's ``?e=1``), never a server error."""

    def __init__(self, request: HttpRequest, *args: Any, **kwargs: Any) -> None:
        self.request = request
        super().__init__(request, *args, **kwargs)

    def get_ordering_field_columns(self) -> dict[int, Literal["desc", "asc"]]:
        """The columns the list is sorted by, for the arrows of their headers. Django reads
        the admin's ``ordering`` attribute here, not :meth:`ModelAdmin.get_ordering`, so an
        ordering that depends on the request (the alarm list's) showed the wrong arrow."""
        if ORDER_VAR in self.params:
            return super().get_ordering_field_columns()
        columns: dict[int, Literal["desc", "asc"]] = {}
        for field in self.model_admin.get_ordering(self.request) or ():
            if not isinstance(field, str):
                continue
            name = field.removeprefix("-")
            for index, attr in enumerate(self.list_display):
                if self.get_ordering_field(attr) == name:
                    columns.setdefault(index, "desc" if field.startswith("-") else "asc")
                    break
        return columns

    def get_filters_params(self, params: Any = None) -> Any:
        lookup_params = super().get_filters_params(params)
        # ReadOnlyAdmin.get_changelist is the one user of this class.
        model_admin = cast("ReadOnlyAdmin", self.model_admin)
        return model_admin.checked_lookup_params(lookup_params)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Look, never touch: no add, no edit, no delete (changes go through the actions).

    A list answers only the query parameters its own filters, date hierarchy and links use
    (:meth:`allowed_lookups`): any other lookup, such as ``?payload__password__startswith=h``
    on the alarms, is refused (400) whatever its value, so that nothing masked on a page can be
    learnt by asking the list yes-or-no questions.
    """

    show_facets = admin.ShowFacets.NEVER
    show_full_result_count = False
    paginator = CappedPaginator
    #: Lookups that are not a filter of the sidebar but that the app's own links use.
    link_lookups: tuple[str, ...] = ()
    #: Lookups whose values are instants (checked, and sent to the database in UTC).
    datetime_lookups: tuple[str, ...] = ()

    class Media:
        css = ADMIN_CSS

    # -- what a list may be asked -----------------------------------------------------------

    def allowed_lookups(self, request: HttpRequest | None) -> set[str]:
        """The query parameters of the list's filters, date hierarchy and links."""
        names = set(self.link_lookups)
        if self.date_hierarchy:
            names.update(_hierarchy_params(self.date_hierarchy))
        list_filter: Any = (
            self.get_list_filter(request) if request is not None else self.list_filter
        )
        item: Any
        field_path: Any
        filter_class: Any
        for item in list_filter:
            if isinstance(item, type) and issubclass(item, admin.SimpleListFilter):
                names.add(str(item.parameter_name))
                continue
            if isinstance(item, (list, tuple)):
                field_path, filter_class = item
            else:
                field_path, filter_class = item, FieldListFilter.create
            field = get_fields_from_path(self.model, field_path)[-1]
            spec = filter_class(field, request, {}, self.model, self, field_path=field_path)
            names.update(spec.expected_parameters())
        return names

    # Django 5.2 passes ``request`` as an optional third argument, Django 6 always passes it.
    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        return lookup in self.allowed_lookups(request)

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return CheckedChangeList

    def checked_lookup_params(self, params: dict[str, list[str]]) -> dict[str, list[str]]:
        """``params`` with instants in UTC; :class:`IncorrectLookupParameters` for a value no
        row can match and the database may refuse to compare."""
        for values in params.values():
            if any("\x00" in value for value in values):  # PostgreSQL refuses NUL in text
                raise IncorrectLookupParameters("a NUL character in a filter")
        for lookup in self.datetime_lookups:
            if lookup in params:
                field = get_fields_from_path(self.model, lookup.split("__")[0])[-1]
                params[lookup] = [_instant(field, value) for value in params[lookup]]
        if self.date_hierarchy:
            _check_hierarchy(self.date_hierarchy, params)
        return params

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        if len(list(smart_split(search_term))) > MAX_SEARCH_TERMS:
            # Each word is a condition per column: thousands of them overflow SQLite's parser.
            raise IncorrectLookupParameters("too many words in the search")
        return super().get_search_results(request, queryset, search_term)

    def get_preserved_filters(self, request: HttpRequest) -> str:
        """The list's parameters kept in the links of an alarm's page, without the ones the
        list would refuse (they are not echoed back, whatever they ask)."""
        preserved = super().get_preserved_filters(request)
        if not preserved:
            return preserved
        filters = QueryDict(QueryDict(preserved).get("_changelist_filters", ""), mutable=True)
        allowed = self.allowed_lookups(request) | LIST_PARAMS
        for key in list(filters):
            if key not in allowed:
                del filters[key]
        return urlencode({"_changelist_filters": filters.urlencode()}) if filters else ""

    # Django 6.1 passes ``action_location`` too (5.2 does not): whatever it passes is passed on.
    def response_action(  # type: ignore[override]
        self, request: HttpRequest, queryset: QuerySet[Any], **kwargs: Any
    ) -> Any:
        """Run the action chosen on the list, once the selected ids are ids: a value that is
        not (typed or forged, such as ``not-a-uuid``) is reported, and nothing is done."""
        if not request.POST.get("select_across"):
            field = self.model._meta.pk
            try:
                for value in request.POST.getlist(helpers.ACTION_CHECKBOX_NAME):
                    if "\x00" in value:
                        raise ValidationError("a NUL character")
                    field.to_python(value)
            except ValidationError:
                self.message_user(
                    request,
                    gettext("The selection holds a value that is not an id: nothing was done."),
                    messages.ERROR,
                )
                return HttpResponseRedirect(request.get_full_path())
        return super().response_action(request, queryset, **kwargs)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
