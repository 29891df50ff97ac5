"""The metrics view that :mod:`django_alarms.urls` serves: the database's state for Prometheus.

A scraper sends ``Authorization: Bearer <ALARMS["METRICS_TOKEN"]>``; a signed-in user needs
the ``django_alarms.view_alarm`` permission. The token is only ever read from that header,
never from the query string (which ends up in access logs).
"""

from __future__ import annotations

import hmac

from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from django_alarms import metrics
from django_alarms.conf import alarm_settings

#: The permission a signed-in user needs to read the metrics.
PERMISSION = "django_alarms.view_alarm"


def _token_given(request: HttpRequest) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def allowed(request: HttpRequest) -> bool:
    """Whether ``request`` may read the metrics: the configured token, or the permission."""
    expected = alarm_settings.METRICS_TOKEN
    given = _token_given(request)
    if given is not None:
        return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_authenticated and user.has_perm(PERMISSION))


@never_cache
@require_GET
def database_metrics(request: HttpRequest) -> HttpResponse:
    """The database collector's metrics in Prometheus's text format (403 when not allowed,
    501 when prometheus-client is not installed)."""
    if not allowed(request):
        response = HttpResponse(
            "Forbidden: send Authorization: Bearer <ALARMS['METRICS_TOKEN']>, or sign in as "
            f"a user with the {PERMISSION} permission.\n",
            status=403,
            content_type="text/plain; charset=utf-8",
        )
        if alarm_settings.METRICS_TOKEN:
            response["WWW-Authenticate"] = 'Bearer realm="django-alarms metrics"'
        return response
    if not metrics.available():
        return HttpResponse(
            f'Metrics need {metrics.DISTRIBUTION}: pip install "django-alarms[{metrics.EXTRA}]"\n',
            status=501,
            content_type="text/plain; charset=utf-8",
        )
    body, content_type = metrics.database_exposition()
    return HttpResponse(body, content_type=content_type)
